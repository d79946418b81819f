"""Plain ``dbt`` commands, each in a process of its own, without paying dbt's import each.

The differential tests run plain ``dbt`` ~80 times a suite. A ``dbt`` process spends
about 3 s of CPU importing ``dbt.cli.main`` (the first line of the ``dbt`` console
script) before it reads its arguments: about 4 minutes of CPU a suite, on 2 cores.

Here one server process per test worker imports ``dbt.cli.main`` and nothing else,
and forks one child per command. The child is a process that has run that import and
nothing more, as a ``dbt`` process has at that point; it then does what the console
script does (``sys.argv``, ``sys.exit(cli())``) in the command's working directory and
environment, with stdin on ``/dev/null`` and stdout/stderr into files, and leaves
through the interpreter's normal exit (atexit handlers, logging flushed) with dbt's
exit code. So the command runs dbt's own CLI code, in a fresh process, as a user's
``dbt`` does; ``tests/test_dbt_fork.py`` compares it with the ``dbt`` executable.

``run(args, cwd=..., env=...)`` returns a :class:`subprocess.CompletedProcess`, like
``subprocess.run(["dbt", *args], capture_output=True, text=True)``.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _console_script() -> str:
    found = shutil.which("dbt", path=str(Path(sys.executable).parent))
    if found is None:  # dbt-core is a dependency: a broken venv, said at collection
        raise RuntimeError(f"no dbt console script next to {sys.executable}")
    return found


#: the console script's path (argv[0] of a plain ``dbt`` process)
DBT = _console_script()
#: the server's import of dbt may take this long on a loaded 2-core machine
_START_TIMEOUT_S = 180


# ------------------------------------------------------------------ the server process
def _child(request: dict[str, Any], reply_fd: int) -> None:
    """In the forked child: become ``dbt <args>`` and exit as the console script does."""
    try:
        os.close(reply_fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, flags in (
            (0, os.devnull, os.O_RDONLY),
            (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        ):
            opened = os.open(path, flags, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        # what the console script's process has: its own directory first on sys.path, a
        # __main__ that is a script (click names the program after argv[0] then)
        sys.argv = [DBT, *request["args"]]
        sys.path[0] = os.path.dirname(DBT)
        main = sys.modules["__main__"]
        main.__package__, main.__spec__ = None, None
    except BaseException:  # nothing of dbt ran: say so with the exit code
        os._exit(127)
    from dbt.cli.main import cli

    sys.exit(cli())  # the console script's line: the interpreter's normal exit follows


def serve() -> None:
    """Read one JSON request a line on stdin; fork a ``dbt`` per request; reply on stdout."""
    import dbt.cli.main  # noqa: F401 - the console script's first import, done once

    reply_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nothing but replies on the reply pipe
    os.close(devnull)  # a child inherits no descriptor a dbt process would not have
    requests = sys.stdin.buffer

    def reply(**values: Any) -> None:
        os.write(reply_fd, (json.dumps(values) + "\n").encode())

    reply(ready=True)
    while line := requests.readline():
        request = json.loads(line)
        if threading.active_count() != 1:  # a fork is only safe from a single thread
            reply(error=f"{threading.active_count()} threads in the server")
            continue
        pid = os.fork()
        if pid == 0:
            _child(request, reply_fd)
        reply(pid=pid)
        _, status = os.waitpid(pid, 0)
        reply(code=os.waitstatus_to_exitcode(status))


# ------------------------------------------------------------------ the tests' side
class _Server:
    """The server of this test process, started on first use."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._lock = threading.Lock()

    def _line(self, deadline: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the dbt fork server exited ({self._proc.wait()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the dbt fork server refused: {reply['error']}")
        return reply

    def _start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._buffer = b""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests._dbt_fork"],
            cwd=Path(__file__).resolve().parent.parent,
            env=dict(os.environ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._line(time.monotonic() + _START_TIMEOUT_S)

    def run(
        self, args: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        with self._lock, tempfile.TemporaryDirectory(prefix="dbt-fork-") as tmp:
            self._start()
            assert self._proc is not None and self._proc.stdin is not None
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {
                "args": list(args),
                "cwd": str(cwd),
                "env": dict(env),
                "stdout": str(out),
                "stderr": str(err),
            }
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
            deadline = time.monotonic() + timeout
            pid = self._line(deadline)["pid"]
            try:
                code = self._line(deadline)["code"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._line(time.monotonic() + 30)
                raise subprocess.TimeoutExpired([DBT, *args], timeout) from None
            return subprocess.CompletedProcess(
                [DBT, *args],
                code,
                out.read_text(errors="replace"),
                err.read_text(errors="replace"),
            )

    def close(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


_SERVER = _Server()
atexit.register(_SERVER.close)


def run(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    """``dbt <args>`` in ``cwd`` with exactly ``env``: its exit code, stdout and stderr."""
    return _SERVER.run(args, cwd, env, timeout)


if __name__ == "__main__":
    serve()
