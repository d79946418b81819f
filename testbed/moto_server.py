"""A real AWS API on loopback for tests: moto in server mode, in a child process.

:class:`MotoServer` runs ``python -m testbed.moto_server`` (moto's own WSGI
application behind werkzeug's HTTP server, bound to ``127.0.0.1`` on a port the
OS picks) and waits until it answers. Clients reach it the way production code
reaches AWS: boto3 with ``AWS_ENDPOINT_URL`` (:meth:`MotoServer.env`), so
nothing in-process is patched.

Hooks: a test-bed module can watch the responses moto sends (for example, to
provision the warehouse role whose temporary password ``GetClusterCredentials``
just issued). A hook is ``module:function`` named on the child's command line
(:class:`MotoServer` ``hooks=``); the function is called once at start with its
argument string and returns a callable ``(action, request_body, status,
response_body) -> None`` run after every answered request. Hooks only observe:
the response goes to the client unchanged.

Extensions: a test-bed module can add an API moto lacks (``extensions=``
``"module:function"``: the function takes moto's WSGI application and returns the
one the child serves). :mod:`testbed.moto_serverless` adds Redshift Serverless.

IAM enforcement: moto checks signatures and IAM policies once more than
``INITIAL_NO_AUTH_ACTION_COUNT`` requests were answered (unset: never);
:meth:`MotoServer.enforce_iam` switches that at run time (moto's ``reset-auth`` API).

>>> server = MotoServer().start()                  # doctest: +SKIP
>>> boto3.client("s3", endpoint_url=server.endpoint_url)   # doctest: +SKIP
>>> server.close()                                 # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

__all__ = ["INSTALL_HINT", "MotoServer", "moto_available"]

INSTALL_HINT = "moto server not installed: pip install 'moto[server]'"

#: a hook: (action, request form fields or JSON body, HTTP status, response body)
Hook = Callable[[str, dict[str, Any], int, bytes], None]


def moto_available() -> bool:
    """True when ``moto[server]`` (moto and its werkzeug/flask server parts) is importable."""
    try:
        importlib.import_module("moto.moto_server.werkzeug_app")
    except ImportError:
        return False
    return True


class MotoServer:
    """moto's HTTP server in a child process on ``127.0.0.1``; :meth:`close` stops it."""

    def __init__(
        self,
        *,
        hooks: Iterable[tuple[str, str]] = (),
        extensions: Iterable[str] = (),
        env: dict[str, str] | None = None,
    ):
        """``hooks``: ``("module:function", argument)`` pairs; ``extensions``:
        ``"module:function"`` names (see the module docstring); ``env``: extra environment
        of the child (e.g. ``INITIAL_NO_AUTH_ACTION_COUNT`` to make moto enforce IAM)."""
        self._hooks = list(hooks)
        self._extensions = list(extensions)
        self._env = dict(env or {})
        self._dir = Path(tempfile.mkdtemp(prefix="dbr-moto-"))
        self.log_path = self._dir / "moto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT``: every service answers there."""
        return f"http://127.0.0.1:{self.port}"

    def env(self, region: str = "us-east-1") -> dict[str, str]:
        """Environment that sends boto3 (and anything built on botocore) to this server with
        moto's test credentials, and never to an instance-metadata service."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self, timeout: float = 60.0) -> MotoServer:
        """Start the child and wait (at most ``timeout`` s) until it announced its port."""
        port_file = self._dir / "port"
        cmd = [sys.executable, "-m", "testbed.moto_server", "--port-file", str(port_file)]
        for spec, arg in self._hooks:
            cmd += ["--hook", f"{spec}={arg}"]
        for spec in self._extensions:
            cmd += ["--extension", spec]
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, **self._env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"moto server did not start in {timeout} s")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self

    def reset(self) -> None:
        """Forget every resource (moto's own reset API)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def enforce_iam(self, after: float = 0) -> None:
        """Check signatures and IAM policies of every request after the next ``after``
        ones (moto's ``/moto-api/reset-auth``); ``float("inf")``: never again (the
        default)."""
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/reset-auth",
            data=str(after).encode(),
            headers={"Content-Type": "text/plain"},  # not a form: moto reads the raw body
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def close(self) -> None:
        """Stop the child (idempotent)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def record_to(path: str) -> Hook:
    """A hook (``testbed.moto_server:record_to=PATH``) appending one JSON line per answered
    request to ``PATH``: ``{"action": ..., "status": ...}`` (no parameters: they may hold
    secrets)."""

    def hook(action: str, params: dict[str, Any], status: int, body: bytes) -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps({"action": action, "status": status}) + "\n")

    return hook


# ------------------------------------------------------------------ the child process
def _action(environ: dict[str, Any], body: bytes) -> tuple[str, dict[str, Any]]:
    """The API action and its parameters, from a query-protocol form or a JSON target header."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:  # JSON protocol: "Service.Action"
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = {}
        return target.rsplit(".", 1)[-1], params if isinstance(params, dict) else {}
    form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    params = {**query, **form}
    return str(params.get("Action", "")), params


def _with_hooks(app: Any, hooks: list[Hook]) -> Any:
    """``app`` calling every hook after each answered request (the response unchanged)."""
    if not hooks:
        return app

    def wrapped(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        status: list[int] = []

        def capture(code: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(int(code.split()[0]))
            return start_response(code, headers, exc_info)

        chunks = list(app(environ, capture))
        action, params = _action(environ, body)
        payload = b"".join(chunks)
        for hook in hooks:
            hook(action, params, status[0] if status else 0, payload)
        return iter(chunks)

    return wrapped


def main(argv: list[str] | None = None) -> None:
    """``python -m testbed.moto_server --port-file F [--hook module:function=ARG ...]
    [--extension module:function ...]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", required=True, type=Path)
    parser.add_argument("--hook", action="append", default=[])
    parser.add_argument("--extension", action="append", default=[])
    args = parser.parse_args(argv)

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    hooks: list[Hook] = []
    for item in args.hook:
        spec, _, arg = item.partition("=")
        module, _, func = spec.partition(":")
        hooks.append(getattr(importlib.import_module(module), func)(arg))
    app: Any = DomainDispatcherApplication(create_backend_app)
    for spec in args.extension:
        module, _, func = spec.partition(":")
        app = getattr(importlib.import_module(module), func)(app)
    app = _with_hooks(app, hooks)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    tmp = args.port_file.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.replace(args.port_file)  # the port appears whole or not at all
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
