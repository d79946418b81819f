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
  replying. The parent parses without a tunnel, with the profile a child writes
  (the warehouse's own host/port: a child's tunnel is a route, not a profile
  change), so dbt's partial-parse state (in the state dir) stays valid for both;
  parsing starts no thread and opens no connection.

Requests are served one at a time (dbt state dirs and DuckDB files are not
meant for concurrent runs). A request is a list of :class:`~dbt_runner.Step`
values; :class:`WorkerClient` sends ``run_staging``, ``run_tests``,
``build_staging``, ``cycle`` or ``invoke`` and gets the same
:class:`~dbt_runner.RunResult` back; the child's log records (node events,
retries, tunnel events) are re-emitted on the client's loggers. With no worker
listening, the client runs the request in-process and says so in one log line.

Interruptions: SIGTERM or SIGINT to the **parent** is passed on to the
running child, which is waited for (bounded); then the socket file and the
parent's profile are removed and the parent exits 143 / 130. The **child**
takes SIGTERM/SIGINT, a ``cancel`` message from the client and the client's
going away alike: it cancels its session's invocation on the server, sends
what ran (the interrupted step with kind ``cancelled``), closes its tunnel
and profile and exits 143 / 130 (0 for a client's cancel). A second signal
ends either process at once. A client interrupted while it waits (an
orchestrator's ``AirflowTaskTerminated``, ``KeyboardInterrupt``) sends
``cancel``, waits a bounded time for the child's last word and re-raises.

The worker serves the settings it was started with; a client whose settings
differ (compared by a fingerprint that hashes secrets, never sends them) is
refused and falls back to running in-process.

>>> from dbt_runner import WorkerClient
>>> client = WorkerClient("/run/dbt-runner/worker.sock")      # doctest: +SKIP
>>> staging, tests = client.cycle()                            # doctest: +SKIP
>>> client.run_steps([Step("run_staging", {"threads": 3}),     # doctest: +SKIP
...                   Step("run_tests", {"select": "tag:audit"}, label="audit")])
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
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

from . import _dbt
from ._exceptions import EXIT_INTERRUPTED, EXIT_TERMINATED, ConfigurationError, ErrorKind
from ._exit import exit_now
from ._manifests import ManifestCache
from ._results import ErrorInfo, RunResult
from ._session import DbtSession, _state_dir
from ._settings import Settings
from ._signals import handled_signals, signal_name
from ._steps import Step, cycle_steps, run_steps

__all__ = [
    "Worker",
    "WorkerClient",
    "default_socket_path",
    "settings_fingerprint",
]

log = logging.getLogger("dbt_runner.worker")

_MAX_LINE = 64 * 1024 * 1024
#: how long a parent waits for its child after passing a signal on, before SIGKILL
_CHILD_STOP_S = 20.0
#: how long an interrupted client waits for the child's last word after its cancel
_CLIENT_CANCEL_WAIT_S = 20.0


def default_socket_path(settings: Settings) -> Path:
    """``<state dir>/worker.sock`` (the session's state dir for this project)."""
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
        self._child: int | None = None

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
            _dbt.warm_up(self.settings.warehouse.type)
            if self.settings.ssh.enabled:
                from . import _ssh  # noqa: F401 - paramiko, for every child's tunnel
        finally:
            gc.enable()
        self._parser = DbtSession(self.settings).open_for_parsing()
        self.prepare(cycle_steps())
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
        for step in steps:
            error = self._parser.prepare(_step_args(step))
            if error is not None:
                log.warning("the worker could not parse the project: %s", error.message)
                break
        if self.settings.warehouse.type == "duckdb":
            _dbt.release_duckdb()  # no database handle may cross the fork
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
        """Warm up, bind, then serve requests one at a time (until SIGTERM/SIGINT).

        A signal is passed on to the running child, which is waited for; then the
        socket file is removed and the signal's exception (``KeyboardInterrupt`` or
        :class:`~dbt_runner._signals.Terminated`) propagates.
        """
        took = self.warm_up()
        self.bind()
        assert self._listener is not None
        log.info(
            "dbt-runner worker ready on %s (warm-up %.1fs, pid %d)",
            self.socket_path,
            took,
            os.getpid(),
        )
        try:
            with handled_signals():
                try:
                    while max_requests is None or self.served < max_requests:
                        try:
                            conn, _ = self._listener.accept()
                        except InterruptedError:
                            continue
                        with conn:
                            self._serve_one(conn)
                        self.served += 1
                except BaseException as exc:
                    if not isinstance(exc, Exception):
                        self._stop_child(exc)
                    raise
        finally:
            self.close()

    def _stop_child(self, exc: BaseException) -> None:
        """Pass the signal on to the running child and wait for it (then SIGKILL)."""
        pid = self._child
        if pid is None:
            return
        signum = getattr(exc, "signum", signal.SIGINT)
        log.warning("passing %s on to the running child %d", signal_name(signum), pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + _CHILD_STOP_S
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                self._child = None
                return
            time.sleep(0.05)
        log.error("the child %d did not stop within %gs: killing it", pid, _CHILD_STOP_S)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        self._child = None

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
        except (ValueError, TypeError, ConfigurationError) as exc:
            _send(conn, {"type": "refused", "reason": str(exc)})
            return
        conn.settimeout(None)
        self.prepare(steps)
        # fork safety: no other thread may hold a lock the child would inherit
        others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
        if others:
            raise RuntimeError(f"worker has threads {others}: refusing to fork")
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                self._listener.close() if self._listener else None
                manifests = self._parser.manifests if self._parser is not None else None
                code = _run_child(conn, self.settings, steps, manifests)
            finally:
                exit_now(code)
        self._child = pid
        _, status = os.waitpid(pid, 0)
        self._child = None
        if os.WIFSIGNALED(status) or os.WEXITSTATUS(status) not in (0, *_CHILD_STOPPED):
            signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            how = f"killed by {signal_name(signum)}" if signum else f"exit {os.WEXITSTATUS(status)}"
            message = f"the worker's child process died ({how}) before sending its result"
            log.error("%s", message)
            # SIGTERM/SIGINT end a child with its results sent: a death is a kill -9, the
            # OOM killer or a crash, infrastructure for the next cycle (a new child) to cure
            result = RunResult.not_run(
                steps[0].label,
                ErrorInfo(ErrorKind.CONNECTION, message),
                threads=self.settings.threads,
            )
            with contextlib.suppress(OSError):
                _send(conn, {"type": "died", "results": {steps[0].label: result.to_dict()}})


#: exit codes of a child that stopped on a signal after sending its result
_CHILD_STOPPED = (EXIT_INTERRUPTED, EXIT_TERMINATED)


class _ChildControl:
    """The child's stop requests: its own signals, the client's cancel or departure."""

    def __init__(self, session: DbtSession) -> None:
        self.session = session
        self.stopped = threading.Event()
        #: the steps are over: the client's hang-up after its result is no departure
        self.finished = threading.Event()

    def stop(self, why: str) -> bool:
        if self.finished.is_set():
            return True  # nothing left to cancel (a signal still sets the exit code)
        if not self.stopped.is_set():
            log.warning("worker child: %s: cancelling", why)
        self.stopped.set()
        self.session.cancel()
        return True  # a signal is handled: the steps stop, the results are sent

    def watch(self, conn: socket.socket) -> None:
        """A thread: a ``cancel`` message or the client's going away stops the child."""

        def read() -> None:
            try:
                for message in _messages(conn):
                    if message.get("type") == "cancel":
                        self.stop("the client cancelled")
                        return
            except (OSError, ValueError):
                pass
            self.stop("the client went away")

        threading.Thread(target=read, name="dbt_runner-worker-cancel", daemon=True).start()


def _run_child(
    conn: socket.socket,
    settings: Settings,
    steps: Sequence[Step],
    manifests: ManifestCache | None = None,
) -> int:
    """Run the steps in a session of its own (with the parent's parsed manifests);
    send the results; the exit code (128 + signal when a signal stopped it)."""
    root = logging.getLogger()
    handler = _SocketLogHandler(conn)
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    session = DbtSession(settings, manifests=manifests)
    control = _ChildControl(session)
    results: dict[str, RunResult] = {}
    with handled_signals(lambda signum: control.stop(signal_name(signum))) as received:
        with session:
            control.watch(conn)
            for step in steps:
                if control.stopped.is_set():
                    break
                results[step.label] = result = step.run(session)
                if not result.success:
                    break
            pending = [s for s in steps if s.label not in results]
            if control.stopped.is_set() and pending and all(r.success for r in results.values()):
                why = ErrorInfo(ErrorKind.CANCELLED, "cancelled before it started")
                results[pending[0].label] = RunResult.not_run(pending[0].label, why)
        control.finished.set()
        root.removeHandler(handler)
        with contextlib.suppress(OSError):
            _send(conn, {"type": "result", "results": {k: r.to_dict() for k, r in results.items()}})
        return 128 + received[0] if received else 0


def _step_args(step: Step) -> list[str]:
    """The dbt args (command, target, vars) a step's session call parses for."""
    if step.operation == "invoke":
        return list(step.args)
    command = {"run_staging": ["run"], "run_tests": ["test"]}.get(step.operation, ["build"])
    variables = step.kwargs.get("vars")
    if variables:
        command += ["--vars", json.dumps(variables, sort_keys=True)]
    return command


def _steps_of(request: Mapping[str, Any]) -> list[Step]:
    steps = request.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ValueError("a request needs a non-empty list of steps")
    return [Step.from_dict(step) for step in steps]


def _given(**values: Any) -> dict[str, Any]:
    """The keyword arguments the caller set (None = the session's default)."""
    return {k: v for k, v in values.items() if v is not None}


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
        self._sock: socket.socket | None = None  # the request in flight, for cancel()
        self._session: DbtSession | None = None  # the in-process fallback's, for cancel()

    def run_staging(
        self,
        *,
        select: str | None = None,
        exclude: str | None = None,
        threads: int | None = None,
        vars: dict[str, Any] | None = None,
        full_refresh: bool = False,
        resume: str | None = None,
    ) -> RunResult:
        """Like :meth:`DbtSession.run_staging`, in the worker."""
        kwargs = _given(select=select, exclude=exclude, threads=threads, vars=vars)
        if full_refresh:
            kwargs["full_refresh"] = True
        if resume is not None:
            kwargs["resume"] = resume
        return self._one(Step("run_staging", kwargs))

    def run_tests(
        self,
        *,
        select: str | None = None,
        exclude: str | None = None,
        threads: int | None = None,
        vars: dict[str, Any] | None = None,
        scope: str = "recent",
        resume: str | None = None,
    ) -> RunResult:
        """Like :meth:`DbtSession.run_tests`, in the worker."""
        kwargs = _given(select=select, exclude=exclude, threads=threads, vars=vars)
        kwargs["scope"] = scope
        if resume is not None:
            kwargs["resume"] = resume
        return self._one(Step("run_tests", kwargs))

    def build_staging(
        self,
        *,
        select: str | None = None,
        exclude: str | None = None,
        threads: int | None = None,
        vars: dict[str, Any] | None = None,
        scope: str = "recent",
        resume: str | None = None,
    ) -> RunResult:
        """Like :meth:`DbtSession.build_staging`, in the worker."""
        kwargs = _given(select=select, exclude=exclude, threads=threads, vars=vars)
        kwargs["scope"] = scope
        if resume is not None:
            kwargs["resume"] = resume
        return self._one(Step("build_staging", kwargs))

    def invoke(
        self,
        args: Sequence[str],
        *,
        threads: int | None = None,
        timeout_s: float | None = None,
        writer_lock: bool = False,
        resume: str | None = None,
    ) -> RunResult:
        """Like :meth:`DbtSession.invoke`, in the worker."""
        kwargs = _given(threads=threads, timeout_s=timeout_s)
        if writer_lock:
            kwargs["writer_lock"] = True
        if resume is not None:
            kwargs["resume"] = resume
        return self._one(Step("invoke", kwargs, tuple(args)))

    def cycle(
        self, *, threads: int | None = None, select: str | None = None, build: bool = False
    ) -> list[RunResult]:
        """Staging, then its tests when staging succeeded, in one child (one tunnel);
        ``build=True``: one ``dbt build`` instead (:func:`~dbt_runner.cycle_steps`)."""
        return list(
            self.run_steps(cycle_steps(threads=threads, select=select, build=build)).values()
        )

    def cancel(self) -> bool:
        """Cancel the request in flight (any thread, a signal handler too): the worker's
        child cancels on the server and answers with what ran; True if one was running."""
        sock, session = self._sock, self._session
        if session is not None:
            return session.cancel()
        if sock is None:
            return False
        try:
            _send(sock, {"type": "cancel"})
        except OSError:
            return False
        return True

    def _one(self, step: Step) -> RunResult:
        return next(iter(self.run_steps([step]).values()))

    def run_steps(self, steps: Sequence[Step]) -> dict[str, RunResult]:
        """Run :class:`~dbt_runner.Step` s in one session (one child, one tunnel),
        stopping after a failed one: label -> result, for each step that ran.

        Interrupted while it waits (a ``BaseException`` such as ``KeyboardInterrupt``
        or an orchestrator's termination), it tells the child to cancel, waits up to
        20 s for the child's last word and re-raises the exception unchanged.
        """
        steps = list(steps)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                sock.connect(str(self.socket_path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                why = f"no worker at {self.socket_path} ({type(exc).__name__})"
                return self._in_process(steps, why)
            request = {
                "steps": [step.to_dict() for step in steps],
                "fingerprint": settings_fingerprint(self.settings) if self.settings else None,
            }
            _send(sock, request)
            self._sock = sock
            try:
                outcome = self._receive(sock)
            except BaseException as exc:
                if isinstance(exc, Exception):
                    raise
                self._cancel_child(sock, exc)
                raise
            finally:
                self._sock = None
            if outcome is None:
                return self._in_process(steps, "the worker closed the connection")
            if isinstance(outcome, str):
                return self._in_process(steps, outcome)
            return outcome
        finally:
            sock.close()

    def _receive(self, sock: socket.socket) -> dict[str, RunResult] | str | None:
        """The results; a refusal's reason (str); None when the worker hung up first."""
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
                return {
                    str(label): RunResult.from_dict(r) for label, r in message["results"].items()
                }
            elif kind == "refused":
                return str(message.get("reason"))
        return None

    def _cancel_child(self, sock: socket.socket, exc: BaseException) -> None:
        log.warning("interrupted (%s): cancelling the worker's run", type(exc).__name__)
        with contextlib.suppress(OSError):
            _send(sock, {"type": "cancel"})
            sock.settimeout(_CLIENT_CANCEL_WAIT_S)
            with contextlib.suppress(OSError, ValueError):
                self._receive(sock)

    def _in_process(self, steps: Sequence[Step], why: str) -> dict[str, RunResult]:
        log.info("%s: running %s in-process", why, ", ".join(s.label for s in steps))
        self.last_ran_in_worker = False
        session_cm: AbstractContextManager[DbtSession] = (
            self._fallback() if self._fallback is not None else DbtSession(self.settings)
        )
        with session_cm as session:
            self._session = session
            try:
                return run_steps(session, steps)
            finally:
                self._session = None
