"""A warm worker: pay dbt's start-up once, run each cycle in a forked child.

``dbt-runner serve`` starts a long-lived parent that imports dbt, its
adapter and our package once (about half of a fresh cycle's CPU), parses the
project, freezes that heap out of the garbage collector's way (``gc.freeze``),
and listens on a Unix socket (mode 0600: only its owner may connect; no TCP).
Before each fork the parent checks the project's files (and a user's own
profiles.yml) with the session's own check (:mod:`dbt_runner._manifests`) and
re-parses — dbt's partial parse — when they, or the request's vars, changed;
children inherit the parsed manifest and do not parse. Each request is
run in a **forked child**:

- isolation: a crash, a leak or dbt's process-wide state in one cycle cannot
  reach the next; the child exits with ``os._exit`` once its result is sent
  (no interpreter teardown to pay);
- fork safety: the parent never starts a thread (it checks before each fork)
  and never opens a tunnel or a warehouse connection: each child opens its own
  :class:`~dbt_runner.DbtSession` (tunnel included) and closes it before
  replying. The parent parses without a tunnel, with a profile pointing at the
  tunnel's derived local port, so dbt's partial-parse state (in the state dir)
  stays valid for both; parsing starts no thread and opens no connection.

Requests are served one at a time (dbt state dirs and DuckDB files are not
meant for concurrent runs). :class:`WorkerClient` sends ``run_staging``,
``run_tests``, ``cycle`` or ``invoke`` and gets the same
:class:`~dbt_runner.RunResult` back; the child's log records (node events,
retries, tunnel events) are re-emitted on the client's loggers. With no worker
listening, the client runs the request in-process and says so in one log line.

The worker serves the settings it was started with; a client whose settings
differ (compared by a fingerprint that hashes secrets, never sends them) is
refused and falls back to running in-process.

>>> from dbt_runner import WorkerClient
>>> client = WorkerClient("/run/dbt-runner/worker.sock")      # doctest: +SKIP
>>> staging, tests = client.cycle()                            # doctest: +SKIP
>>> client.steps([("run_staging", [], {"threads": 3}),         # doctest: +SKIP
...               ("run_tests", [], {"select": "tag:audit"})])
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import json
import logging
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ._exceptions import ConfigurationError, ErrorKind
from ._exit import exit_now
from ._manifests import ManifestCache
from ._results import ErrorInfo, RunResult, utc_now_iso
from ._session import DbtSession, _release_duckdb
from ._settings import Settings

__all__ = [
    "Worker",
    "WorkerClient",
    "default_socket_path",
    "run_steps",
    "settings_fingerprint",
]

log = logging.getLogger("dbt_runner.worker")

#: The operations a worker runs, and their session methods.
OPERATIONS = ("run_staging", "run_tests", "build_staging", "invoke")
_ADAPTER_MODULES = {
    "postgres": "dbt.adapters.postgres",
    "redshift": "dbt.adapters.redshift",
    "duckdb": "dbt.adapters.duckdb",
}
_WARM_MODULES = (
    "dbt.cli.main",
    "dbt.task.run",
    "dbt.task.test",
    "dbt.task.build",
    "dbt.parser.manifest",
    "dbt_runner._session",
    "dbt_runner._tunnel",
)
_MAX_LINE = 64 * 1024 * 1024


def default_socket_path(settings: Settings) -> Path:
    """``<state dir>/worker.sock`` (the session's state dir for this project)."""
    from ._session import _state_dir

    return _state_dir(settings, settings.resolved_project_dir) / "worker.sock"


def settings_fingerprint(settings: Settings) -> str:
    """A hash of every setting; secrets enter only as hashes of their own."""

    def walk(value: Any) -> Any:
        if hasattr(value, "get_secret_value"):
            return hashlib.sha256(value.get_secret_value().encode()).hexdigest()
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in sorted(value.items())}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    dumped = walk(settings.model_dump())
    text = json.dumps(dumped, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------ wire
def _send(sock: socket.socket, message: Mapping[str, Any]) -> None:
    sock.sendall(json.dumps(message, default=str).encode() + b"\n")


def _messages(sock: socket.socket) -> Iterator[dict[str, Any]]:
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk
        if len(buffer) > _MAX_LINE:
            raise ValueError("worker message too long")
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line:
                yield json.loads(line)


class _SocketLogHandler(logging.Handler):
    """In the child: every log record at or above INFO goes to the client as a message."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(logging.INFO)
        self._sock = sock

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = getattr(record, "event", None)
            _send(
                self._sock,
                {
                    "type": "log",
                    "name": record.name,
                    "level": record.levelno,
                    "msg": record.getMessage(),
                    "event": event,
                },
            )
        except OSError:
            pass  # the client went away; the result will not reach it either


# ---------------------------------------------------------------------- server
class Worker:
    """``dbt-runner serve``: a warm parent forking one child per request (see module doc).

    >>> Worker(Settings(), Path("/tmp/w.sock")).serve_forever()    # doctest: +SKIP
    """

    def __init__(self, settings: Settings, socket_path: Path | None = None) -> None:
        self.settings = settings
        self.socket_path = Path(socket_path or default_socket_path(settings))
        self.fingerprint = settings_fingerprint(settings)
        self.served = 0
        self._listener: socket.socket | None = None
        #: parses the project in this (parent) process; its manifests are inherited by
        #: every child, and re-parsed here when project files or vars change
        self._parser: DbtSession | None = None

    @property
    def parse_count(self) -> int:
        """How many times the parent parsed the project (dbt's own events)."""
        return self._parser.parse_count if self._parser is not None else 0

    def warm_up(self) -> float:
        """Import dbt and the adapter once, parse the project, freeze that heap out of
        the GC. Seconds taken."""
        started = time.monotonic()
        gc.disable()
        try:
            for name in (*_WARM_MODULES, _ADAPTER_MODULES[self.settings.warehouse.type]):
                importlib.import_module(name)
        finally:
            gc.enable()
        self._parser = DbtSession(self.settings)._open_for_parsing()
        self.prepare([("run_staging", [], {})])
        gc.collect()
        gc.freeze()  # children inherit it untouched: no copy-on-write from GC passes
        return time.monotonic() - started

    def prepare(self, steps: Sequence[Step]) -> None:
        """Parse (again) in the parent what ``steps`` need, when project files, the
        user's profiles.yml or the vars changed since the last parse (the session's
        own check, :mod:`dbt_runner._manifests`). A parse error is left for the
        child, which parses itself and reports it as a result."""
        if self._parser is None:
            return
        before = self._parser.parse_count
        for op, args, kwargs in steps:
            error = self._parser._prepare(_step_args(op, args, kwargs))
            if error is not None:
                log.warning("the worker could not parse the project: %s", error.message)
                break
        if self.settings.warehouse.type == "duckdb":
            _release_duckdb()  # no database handle may cross the fork
        if self._parser.parse_count != before:
            log.info("worker parsed the project (parse %d)", self._parser.parse_count)

    def bind(self) -> None:
        """Listen on the socket path (0600); a stale file left by a dead worker is replaced."""
        path = self.socket_path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ConfigurationError(f"{path} exists and is not a socket: refusing to replace")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                log.info("removing the stale worker socket %s", path)
                path.unlink(missing_ok=True)
            else:
                raise ConfigurationError(f"another dbt-runner worker is listening on {path}")
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file is born 0600
        try:
            listener.bind(str(path))
        finally:
            os.umask(old_umask)
        path.chmod(0o600)
        listener.listen(8)
        self._listener = listener

    def serve_forever(self, max_requests: int | None = None) -> None:
        """Warm up, bind, then serve requests one at a time (until SIGTERM/SIGINT)."""
        took = self.warm_up()
        self.bind()
        # SIGTERM (systemd, kill) ends the loop like Ctrl-C: the socket file is removed
        signal.signal(signal.SIGTERM, _raise_system_exit)
        assert self._listener is not None
        log.info(
            "dbt-runner worker ready on %s (warm-up %.1fs, pid %d)",
            self.socket_path,
            took,
            os.getpid(),
        )
        try:
            while max_requests is None or self.served < max_requests:
                try:
                    conn, _ = self._listener.accept()
                except InterruptedError:
                    continue
                with conn:
                    self._serve_one(conn)
                self.served += 1
        finally:
            self.close()

    def close(self) -> None:
        """Stop listening, remove the socket file and the parent's generated profile."""
        if self._parser is not None:
            self._parser.close()
            self._parser = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()

    def _serve_one(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            request = next(_messages(conn))
        except (StopIteration, ValueError, OSError) as exc:
            log.warning("bad worker request: %s", exc)
            return
        fingerprint = request.get("fingerprint")
        if fingerprint is not None and fingerprint != self.fingerprint:
            _send(conn, {"type": "refused", "reason": "the client's settings differ"})
            return
        try:
            steps = _steps_of(request)
        except (ValueError, TypeError) as exc:
            _send(conn, {"type": "refused", "reason": str(exc)})
            return
        conn.settimeout(None)
        started = utc_now_iso()
        t0 = time.monotonic()
        self.prepare(steps)
        # fork safety: no other thread may hold a lock the child would inherit
        others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
        if others:
            raise RuntimeError(f"worker has threads {others}: refusing to fork")
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                self._listener.close() if self._listener else None
                manifests = self._parser._manifests if self._parser is not None else None
                code = _run_child(conn, self.settings, request, manifests)
            finally:
                exit_now(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0:
            how = (
                f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
                if os.WIFSIGNALED(status)
                else f"exit {os.WEXITSTATUS(status)}"
            )
            message = f"the worker's child process died ({how}) before sending its result"
            log.error("%s", message)
            result = RunResult(
                command=steps[0][0],
                success=False,
                started_at=started,
                elapsed_s=round(time.monotonic() - t0, 3),
                threads=self.settings.threads,
                attempts=1,
                nodes=(),
                error=ErrorInfo(ErrorKind.CONNECTION, message),
            )
            with contextlib.suppress(OSError):
                _send(conn, {"type": "died", "results": [result.to_dict()]})


def _raise_system_exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _run_child(
    conn: socket.socket,
    settings: Settings,
    request: Mapping[str, Any],
    manifests: ManifestCache | None = None,
) -> int:
    """Run the request in a session of its own (with the parent's parsed manifests);
    send the results; the exit code."""
    root = logging.getLogger()
    handler = _SocketLogHandler(conn)
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    session = DbtSession(settings)
    if manifests is not None:
        session._manifests = manifests  # this child's copy of the parent's (fork)
    with session:
        results = run_steps(session, _steps_of(request))
    root.removeHandler(handler)
    _send(conn, {"type": "result", "results": [r.to_dict() for r in results]})
    return 0


#: One step of a request: (operation, dbt args for ``invoke``, keyword arguments).
Step = tuple[str, Sequence[str], Mapping[str, Any]]


def run_steps(session: DbtSession, steps: Sequence[Step]) -> list[RunResult]:
    """Run ``steps`` in one open session, stopping after a failed one (the worker's child
    and the in-process fallback alike)."""
    results: list[RunResult] = []
    for op, args, kwargs in steps:
        if op == "invoke":
            result = session.invoke(list(args), **kwargs)
        elif op in ("run_staging", "run_tests", "build_staging"):
            result = getattr(session, op)(**kwargs)
        else:
            raise ConfigurationError(f"unknown worker operation {op!r}; one of {OPERATIONS}")
        results.append(result)
        if not result.success:
            break
    return results


def _step_args(op: str, args: Sequence[str], kwargs: Mapping[str, Any]) -> list[str]:
    """The dbt args (command, target, vars) a step's session call parses for."""
    if op == "invoke":
        return list(args)
    command = {"run_staging": ["run"], "run_tests": ["test"]}.get(op, ["build"])
    variables = kwargs.get("vars")
    if variables:
        command += ["--vars", json.dumps(variables, sort_keys=True)]
    return command


def _given(**values: Any) -> dict[str, Any]:
    """The keyword arguments the caller set (None = the session's default)."""
    return {k: v for k, v in values.items() if v is not None}


def _steps_of(request: Mapping[str, Any]) -> list[Step]:
    steps = request.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ValueError("a request needs a non-empty list of steps")
    parsed: list[Step] = []
    for step in steps:
        op, args, kwargs = step
        if op not in OPERATIONS or not isinstance(args, list) or not isinstance(kwargs, dict):
            raise ValueError(f"bad step {step!r}")
        parsed.append((str(op), [str(a) for a in args], kwargs))
    return parsed


# ---------------------------------------------------------------------- client
class WorkerClient:
    """Sends requests to a ``dbt-runner serve`` worker; runs in-process when none listens.

    With ``settings``, the worker must have been started with equal settings (else the
    request runs in-process). With ``settings=None`` the worker's own configuration is
    used, and ``fallback`` (a context manager factory giving an open session) is what runs
    when no worker answers: e.g. ``lambda: dbt_runner.airflow.dbt_session(...)``.

    >>> client = WorkerClient(settings=Settings())                 # doctest: +SKIP
    >>> client.run_staging().raise_for_status()                    # doctest: +SKIP
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        settings: Settings | None = None,
        fallback: Callable[[], AbstractContextManager[DbtSession]] | None = None,
    ) -> None:
        if socket_path is None and settings is None:
            raise ConfigurationError("WorkerClient needs a socket path or the settings")
        self.settings = settings
        self.socket_path = Path(socket_path or default_socket_path(settings or Settings()))
        self._fallback = fallback
        #: True when the last request ran in the worker, False when in-process.
        self.last_ran_in_worker = False

    def run_staging(
        self,
        *,
        select: str | None = None,
        exclude: str | None = None,
        threads: int | None = None,
        vars: dict[str, Any] | None = None,
        full_refresh: bool = False,
    ) -> RunResult:
        """Like :meth:`DbtSession.run_staging`, in the worker."""
        kwargs = _given(select=select, exclude=exclude, threads=threads, vars=vars)
        if full_refresh:
            kwargs["full_refresh"] = True
        return self.steps([("run_staging", [], kwargs)])[0]

    def run_tests(
        self,
        *,
        select: str | None = None,
        exclude: str | None = None,
        threads: int | None = None,
        vars: dict[str, Any] | None = None,
        scope: str = "recent",
    ) -> RunResult:
        """Like :meth:`DbtSession.run_tests`, in the worker."""
        kwargs = _given(select=select, exclude=exclude, threads=threads, vars=vars)
        kwargs["scope"] = scope
        return self.steps([("run_tests", [], kwargs)])[0]

    def invoke(
        self, args: Sequence[str], *, threads: int | None = None, timeout_s: float | None = None
    ) -> RunResult:
        """Like :meth:`DbtSession.invoke`, in the worker."""
        kwargs = _given(threads=threads, timeout_s=timeout_s)
        return self.steps([("invoke", list(args), kwargs)])[0]

    def cycle(
        self, *, threads: int | None = None, select: str | None = None, build: bool = False
    ) -> list[RunResult]:
        """Staging, then its tests when staging succeeded, in one child (one tunnel);
        ``build=True``: one ``dbt build`` instead (:meth:`DbtSession.build_staging`)."""
        kwargs = _given(threads=threads, select=select)
        if build:
            return self.steps([("build_staging", [], kwargs)])
        return self.steps([("run_staging", [], kwargs), ("run_tests", [], kwargs)])

    def steps(self, steps: Sequence[Step]) -> list[RunResult]:
        """Run ``(operation, dbt args, kwargs)`` steps in one session (one child, one
        tunnel), stopping after a failed one; one result per step that ran."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                sock.connect(str(self.socket_path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                why = f"no worker at {self.socket_path} ({type(exc).__name__})"
                return self._in_process(steps, why)
            request = {
                "steps": [[op, list(args), dict(kwargs)] for op, args, kwargs in steps],
                "fingerprint": settings_fingerprint(self.settings) if self.settings else None,
            }
            _send(sock, request)
            for message in _messages(sock):
                kind = message.get("type")
                if kind == "log":
                    logging.getLogger(str(message["name"])).log(
                        int(message["level"]),
                        "%s",
                        message["msg"],
                        extra={"event": message["event"]} if message.get("event") else None,
                    )
                elif kind in ("result", "died"):
                    self.last_ran_in_worker = True
                    return [RunResult.from_dict(r) for r in message["results"]]
                elif kind == "refused":
                    return self._in_process(steps, str(message.get("reason")))
        finally:
            sock.close()
        return self._in_process(steps, "the worker closed the connection")

    def _in_process(self, steps: Sequence[Step], why: str) -> list[RunResult]:
        log.info("%s: running %s in-process", why, ", ".join(op for op, _, _ in steps))
        self.last_ran_in_worker = False
        session_cm: AbstractContextManager[DbtSession] = (
            self._fallback() if self._fallback is not None else DbtSession(self.settings)
        )
        with session_cm as session:
            return run_steps(session, steps)
