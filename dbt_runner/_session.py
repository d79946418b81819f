"""``DbtSession``: one dbt runner, one parse, one SSH tunnel, many invocations.

Lifecycle: UNOPENED → OPEN → CLOSED. ``open()`` (or ``with``) checks the
settings, opens the tunnel when a bastion is configured, writes a private
profile and parses the project once; every invocation then reuses that
manifest and that tunnel. ``close()`` tears everything down and is safe to call
twice; a closed session cannot be reopened.

dbt-core keeps process-wide state, so invocations are serialised: calls on
one session from several threads wait their turn, and a second session that
tries to run dbt while another session of the same process is running it gets
a :class:`~dbt_runner.SessionStateError` at once (it does not wait).
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._classify import classify_exception, classify_message
from ._events import EventRelay, NodeCallback
from ._exceptions import (
    ConfigurationError,
    ErrorKind,
    HostKeyError,
    SessionStateError,
    SSHAuthError,
    TunnelError,
)
from ._profile import GeneratedProfile, project_profile_name
from ._results import (
    ERROR_STATUSES,
    FAILED_STATUSES,
    TEST_TYPES,
    Attempt,
    ErrorInfo,
    NodeResult,
    RunResult,
    node_from_dbt,
    utc_now_iso,
)
from ._retry import TransientFailure, build_retrying, is_retryable
from ._settings import Settings

if TYPE_CHECKING:
    from ._tunnel import Tunnel

__all__ = ["DbtSession", "SessionState"]

log = logging.getLogger("dbt_runner.session")

#: dbt commands that take ``--threads``
_THREADED = frozenset({"run", "test", "build", "seed", "snapshot", "compile", "retry"})
_SELECT_FLAGS = frozenset({"--select", "-s", "--models", "-m"})

#: run_tests(scope=...) -> the tag it leaves out (the bundled project's test variants)
_TEST_SCOPE_EXCLUDES = {"recent": "tag:full", "full": "tag:recent", "all": ""}

_PROCESS_LOCK = threading.Lock()
#: how long the watchdog lets the server-side cancel run before it cuts the tunnel
_CANCEL_GRACE_S = 3.0


class SessionState(enum.Enum):
    """Where a :class:`DbtSession` is in its life."""

    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class DbtSession:
    """Runs dbt in-process for as many invocations as you like.

    >>> from dbt_runner import DbtSession, Settings
    >>> with DbtSession(Settings()) as session:          # doctest: +SKIP
    ...     staging = session.run_staging(threads=3)
    ...     tests = session.run_tests()
    >>> staging.raise_for_status()                       # doctest: +SKIP
    """

    def __init__(
        self, settings: Settings | None = None, *, callbacks: Sequence[NodeCallback] = ()
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self._state = SessionState.UNOPENED
        self._lock = threading.Lock()
        self._relay = EventRelay(callbacks)
        self._tunnel: Tunnel | None = None
        self._profile: GeneratedProfile | None = None
        self._profiles_dir: Path | None = None
        self._manifests: dict[str, Any] = {}
        self._watchdog_fired = threading.Event()
        self.project_dir = self.settings.resolved_project_dir
        self.state_dir = _state_dir(self.settings, self.project_dir)

    # ------------------------------------------------------------------ lifecycle
    @property
    def state(self) -> SessionState:
        """UNOPENED, OPEN or CLOSED."""
        return self._state

    @property
    def parse_count(self) -> int:
        """How many times dbt parsed the project in this session (from dbt's own events)."""
        return self._relay.parse_events

    @property
    def tunnel(self) -> Tunnel | None:
        """The session's SSH tunnel, when a bastion is configured."""
        return self._tunnel

    def __repr__(self) -> str:
        wh = self.settings.warehouse
        where = str(wh.path) if wh.type == "duckdb" else f"{wh.host}:{wh.effective_port}"
        via = f" via {self.settings.ssh.host}" if self.settings.ssh.enabled else ""
        return f"<DbtSession {self._state.value} {wh.type} {where}{via}>"

    def open(self) -> DbtSession:
        """Open the tunnel (if configured) and write the profile. Idempotent while open."""
        if self._state is SessionState.OPEN:
            return self
        if self._state is SessionState.CLOSED:
            raise SessionStateError("this DbtSession is closed; create a new one")
        try:
            self._open()
        except BaseException:
            self._teardown()
            self._state = SessionState.CLOSED
            raise
        self._state = SessionState.OPEN
        log.info("session open: %r", self)
        return self

    def _open(self) -> None:
        s = self.settings
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if s.profiles_dir is not None:
            if s.ssh.enabled:
                raise ConfigurationError(
                    "DBT_RUNNER_SSH__HOST needs a generated profile: unset "
                    "DBT_RUNNER_PROFILES_DIR (the tunnel's local port is written into it)"
                )
            self._profiles_dir = s.profiles_dir.resolve()
            return
        self._profile = GeneratedProfile(s, project_profile_name(self.project_dir))
        if s.ssh.enabled:
            from ._tunnel import Tunnel

            assert s.warehouse.host is not None and s.warehouse.effective_port is not None
            self._tunnel = Tunnel(s.ssh, s.warehouse.host, s.warehouse.effective_port)
            self._tunnel.open()
            self._profiles_dir = self._profile.write(
                self._tunnel.local_host, self._tunnel.local_port
            )
        else:
            self._profiles_dir = self._profile.write()

    def close(self) -> None:
        """Close the tunnel and remove the generated profile. Safe to call twice."""
        with self._lock:
            if self._state is SessionState.CLOSED:
                return
            self._teardown()
            self._state = SessionState.CLOSED
            log.info("session closed")

    def _teardown(self) -> None:
        self._manifests.clear()
        if self.settings.warehouse.type == "duckdb":
            _release_duckdb()
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None
        if self._profile is not None:
            self._profile.close()
            self._profile = None

    def __enter__(self) -> DbtSession:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ building blocks
    def run_staging(
        self,
        threads: int | None = None,
        select: str = "tag:staging",
        *,
        full_refresh: bool = False,
        vars: dict[str, Any] | None = None,
    ) -> RunResult:
        """``dbt run`` of the staging models (``tag:staging``) with ``threads`` threads."""
        args = ["run", "--select", select]
        if full_refresh:
            args.append("--full-refresh")
        if vars:
            args += ["--vars", json.dumps(vars, sort_keys=True)]
        return self.invoke(args, threads=threads)

    def run_tests(
        self,
        select: str = "tag:staging",
        *,
        threads: int | None = None,
        vars: dict[str, Any] | None = None,
        scope: str = "recent",
    ) -> RunResult:
        """``dbt test`` of the staging models' data tests, in this session's tunnel.

        ``scope`` picks the bundled project's test variants by tag: ``"recent"``
        (default) leaves out tests tagged ``full`` — the hourly tests, whose
        cost follows the batch —, ``"full"`` leaves out those tagged
        ``recent`` (whole-table tests, for a daily run), ``"all"`` runs
        everything ``select`` reaches. A project without these tags runs the
        same tests in every scope. See docs/models.md.
        """
        if scope not in _TEST_SCOPE_EXCLUDES:
            raise ConfigurationError(
                f"scope must be one of {sorted(_TEST_SCOPE_EXCLUDES)}, got {scope!r}"
            )
        args = ["test", "--select", select]
        exclude = _TEST_SCOPE_EXCLUDES[scope]
        if exclude:
            args += ["--exclude", exclude]
        if vars:
            args += ["--vars", json.dumps(vars, sort_keys=True)]
        return self.invoke(args, threads=threads)

    def invoke(self, args: Sequence[str], *, threads: int | None = None) -> RunResult:
        """Run any dbt command (``["build", "--select", "tag:staging"]``) with retries.

        Returns a :class:`RunResult` whenever dbt ran or tried to; raises only
        for misuse (:class:`SessionStateError`) or bad configuration.
        """
        args = [str(a) for a in args]
        if not args or args[0].startswith("-"):
            raise ConfigurationError(f"invoke() needs a dbt command first, got {args!r}")
        args = _with_vars(args, self.settings.dbt_vars)
        if threads is not None and threads < 1:
            raise ConfigurationError(f"threads must be >= 1, got {threads}")
        with self._lock:
            if self._state is not SessionState.OPEN:
                raise SessionStateError(
                    f"session is {self._state.value}: use it inside 'with DbtSession(...)' "
                    "or call open() first"
                )
            if not _PROCESS_LOCK.acquire(blocking=False):
                raise SessionStateError(
                    "another DbtSession in this process is running dbt right now; dbt-core "
                    "cannot run two invocations at once in one process"
                )
            try:
                return self._invoke_with_retries(args, threads)
            finally:
                _PROCESS_LOCK.release()

    # ------------------------------------------------------------------ internals
    def _invoke_with_retries(self, args: list[str], threads: int | None) -> RunResult:
        command = args[0]
        policy = self.settings.retry
        if threads is None and command in _THREADED:
            threads = self.settings.threads
        started_at = utc_now_iso()
        t0 = time.monotonic()
        attempts: list[Attempt] = []
        degraded: int | None = None
        next_args, next_threads = args, threads
        try:
            for retry_state in build_retrying(policy):
                with retry_state:
                    attempt = self._attempt(len(attempts) + 1, next_args, next_threads)
                    attempts.append(attempt)
                    if not attempt.success and attempt.error is not None:
                        kind = attempt.error.kind
                        if is_retryable(kind, policy) and len(attempts) < policy.attempts:
                            if any(n.failed for n in attempt.nodes):
                                next_args = _retry_args(args, attempt)
                            # else no node ran (e.g. the server was still down): retry
                            # this attempt's selection, never widen back to the original
                            if kind in (ErrorKind.TOO_MANY_CONNECTIONS, ErrorKind.CONFLICT) and (
                                policy.degrade_threads is not None
                                and next_threads is not None
                                and policy.degrade_threads < next_threads
                            ):
                                next_threads = degraded = policy.degrade_threads
                                log.warning(
                                    "retrying %s with %d threads after %s", command, degraded, kind
                                )
                            raise TransientFailure(attempt)
        except TransientFailure:  # pragma: no cover - reraise=True only after the last attempt
            pass
        return RunResult.merge(
            command,
            attempts,
            started_at=started_at,
            elapsed_s=time.monotonic() - t0,
            degraded_threads=degraded,
        )

    def _attempt(self, number: int, args: list[str], threads: int | None) -> Attempt:
        started_at = utc_now_iso()
        t0 = time.monotonic()
        nodes, error = self._run_attempt(number, args, threads, t0)
        return Attempt(
            number=number,
            args=tuple(args),
            threads=threads,
            started_at=started_at,
            elapsed_s=round(time.monotonic() - t0, 3),
            success=error is None,
            nodes=nodes,
            error=error,
        )

    def _run_attempt(
        self, number: int, args: list[str], threads: int | None, t0: float
    ) -> tuple[tuple[NodeResult, ...], ErrorInfo | None]:
        """Tunnel check, parse (once per vars), then dbt: the nodes and the error, if any."""
        try:
            self._ensure_tunnel()
        except (HostKeyError, SSHAuthError) as exc:
            # not transient: the classification keeps it from being retried
            return (), ErrorInfo(ErrorKind.AUTH, str(exc))
        except TunnelError as exc:
            return (), ErrorInfo(ErrorKind.TUNNEL, str(exc))

        vars_key = _vars_of(args)
        manifest = self._manifests.get(vars_key)
        if manifest is None:
            parsed = self._run_dbt(["parse", *([] if not vars_key else ["--vars", vars_key])])
            if not parsed.success or parsed.result is None:
                cause = parsed.exception
                kind = classify_exception(cause) if cause else ErrorKind.COMPILATION
                if kind is ErrorKind.MODEL_FAILURE:
                    kind = ErrorKind.COMPILATION
                text = _message(cause) if cause else "dbt could not parse the project"
                return (), ErrorInfo(kind, text)
            manifest = self._manifests[vars_key] = parsed.result

        full_args = list(args)
        if threads is not None and args[0] in _THREADED and "--threads" not in args:
            full_args += ["--threads", str(threads)]
        self._watchdog_fired.clear()
        timer = self._start_watchdog()
        try:
            res = self._run_dbt(full_args, manifest)
        finally:
            if timer is not None:
                timer.cancel()
                timer.join()
        return self._outcome(number, res, t0)

    def _outcome(
        self, number: int, res: Any, t0: float
    ) -> tuple[tuple[NodeResult, ...], ErrorInfo | None]:
        """dbt's three outcomes (success, exception, failed nodes) as nodes + error."""
        timed_out = self._watchdog_fired.is_set()
        raw_results = _node_results(res, self.state_dir / "target", t0)
        nodes = tuple(node_from_dbt(r, number) for r in raw_results)
        retry = self.settings.retry
        if timed_out:
            message = (
                f"invocation timed out after {self.settings.timeout_s:g}s "
                "(dbt_runner watchdog, DBT_RUNNER_TIMEOUT_S); its connections were cancelled"
            )
            # every node that did not finish (skipped ones too) was cut by the watchdog
            nodes = tuple(
                _with_error(n, ErrorKind.TIMEOUT, FAILED_STATUSES, "timed out") for n in nodes
            )
            return nodes, ErrorInfo(ErrorKind.TIMEOUT, message)
        nodes = tuple(_with_error(n, _node_kind(n)) for n in nodes)
        transient = [e for n in nodes if (e := n.error) is not None and is_retryable(e.kind, retry)]
        if res.exception is not None:
            kind = classify_exception(res.exception)
            message = _message(res.exception)
            # dbt reports only its last error; a node that failed transiently on
            # the way (e.g. refused by a connection limit) says what really happened
            if transient and not is_retryable(kind, retry):
                kind = transient[0].kind
                message = f"{message}\n(first transient node failure) {transient[0].message}"
            return nodes, ErrorInfo(kind, message)
        if not res.success:
            errors = [n.error for n in nodes if n.error is not None]
            fallback = ErrorInfo(ErrorKind.MODEL_FAILURE, "dbt reported failure")
            return nodes, (transient or errors or [fallback])[0]
        return nodes, None

    def _run_dbt(self, args: list[str], manifest: Any = None) -> Any:
        assert self._profiles_dir is not None
        full = [
            *args,
            "--project-dir",
            str(self.project_dir),
            "--profiles-dir",
            str(self._profiles_dir),
            "--target",
            self.settings.target,
            "--target-path",
            str(self.state_dir / "target"),
            "--log-path",
            str(self.state_dir / "logs"),
            "--log-level",
            "warn",
            "--no-send-anonymous-usage-stats",
            "--no-version-check",
            "--no-use-colors",
        ]
        log.debug("dbt %s", " ".join(args))
        return _make_runner(manifest, [self._relay]).invoke(full)

    def _ensure_tunnel(self) -> None:
        if self._tunnel is None:
            return
        port_before = self._tunnel.local_port
        if self._tunnel.ensure_open() and self._tunnel.local_port != port_before:
            assert self._profile is not None
            self._profile.write(self._tunnel.local_host, self._tunnel.local_port)

    def _start_watchdog(self) -> threading.Timer | None:
        timeout = self.settings.timeout_s
        if timeout is None:
            return None
        timer = threading.Timer(timeout, self._on_timeout)
        timer.name = "dbt_runner-watchdog"
        timer.daemon = True
        timer.start()
        return timer

    def _on_timeout(self) -> None:
        self._watchdog_fired.set()
        log.error(
            "invocation exceeded DBT_RUNNER_TIMEOUT_S=%s; cancelling", self.settings.timeout_s
        )
        # Ask the server to cancel the running statements first (this needs the
        # tunnel); if the network is stalled that cannot finish, so after a short
        # grace the tunnel is closed, which cuts every forwarded connection and
        # ends the cancel attempt too. No thread outlives this method.
        canceller = threading.Thread(
            target=_cancel_open_connections, name="dbt_runner-cancel", daemon=True
        )
        canceller.start()
        canceller.join(_CANCEL_GRACE_S)
        if self._tunnel is not None:
            self._tunnel.close()
        canceller.join(self.settings.warehouse.connect_timeout_s + _CANCEL_GRACE_S)


# ---------------------------------------------------------------------- helpers
def _make_runner(manifest: Any, callbacks: list[Any]) -> Any:
    """A ``dbtRunner`` (the seam unit tests replace with a fake)."""
    from dbt.cli.main import dbtRunner

    return dbtRunner(manifest=manifest, callbacks=callbacks)


def _state_dir(settings: Settings, project_dir: Path) -> Path:
    """Where target/ and logs/ go: the setting, a user's own project, else a cache dir.

    The bundled project lives inside the installed package, which may be
    read-only and is no place for run artifacts.
    """
    if settings.state_dir is not None:
        return settings.state_dir.resolve()
    if settings.project_dir is not None and os.access(project_dir, os.W_OK):
        return project_dir
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(str(project_dir).encode()).hexdigest()[:12]
    return cache / "dbt_runner" / digest


def _vars_of(args: Sequence[str]) -> str:
    for i, arg in enumerate(args):
        if arg == "--vars" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--vars="):
            return arg.split("=", 1)[1]
    return ""


def _with_vars(args: list[str], settings_vars: dict[str, Any]) -> list[str]:
    """``args`` with the settings' dbt vars merged under the caller's own ``--vars``.

    dbt semantics: what the caller passes wins, key by key; the settings only
    add what is missing, and only to commands that accept ``--vars``. A
    ``--vars`` value that is not a YAML mapping is left for dbt to reject.
    """
    if not settings_vars or not _accepts_vars(args):
        return args
    for i, arg in enumerate(args):
        if arg == "--vars" and i + 1 < len(args):
            start, end, text = i, i + 2, args[i + 1]
            break
        if arg.startswith("--vars="):
            start, end, text = i, i + 1, arg.split("=", 1)[1]
            break
    else:
        return [*args, "--vars", json.dumps(settings_vars, sort_keys=True)]
    import yaml

    try:
        given = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError:
        return args
    if not isinstance(given, dict):
        return args
    merged = json.dumps({**settings_vars, **given}, sort_keys=True, default=str)
    return [*args[:start], "--vars", merged, *args[end:]]


def _accepts_vars(args: Sequence[str]) -> bool:
    """Whether the dbt (sub)command that ``args`` names takes a ``--vars`` option."""
    import click
    from dbt.cli.main import cli

    command: click.Command = cli
    for word in args:
        if word.startswith("-") or not isinstance(command, click.Group):
            break
        sub = command.commands.get(word)
        if sub is None:
            break
        command = sub
    return command is not cli and any(p.name == "vars" for p in command.params)


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _node_kind(node: NodeResult) -> ErrorKind:
    """The kind of a node's own failure: a failed test is a test failure, else its message."""
    if node.resource_type in TEST_TYPES:
        if node.status == "fail":
            return ErrorKind.TEST_FAILURE
        return classify_message(node.message or "", ErrorKind.TEST_FAILURE)
    return classify_message(node.message or "", ErrorKind.MODEL_FAILURE)


def _with_error(
    node: NodeResult,
    kind: ErrorKind,
    statuses: frozenset[str] = ERROR_STATUSES,
    default_message: str = "",
) -> NodeResult:
    """``node`` with an error of ``kind`` when its status is one of ``statuses``."""
    if node.status not in statuses:
        return node
    return replace(node, error=ErrorInfo(kind, node.message or default_message))


def _node_results(res: Any, target: Path, t0: float) -> list[Any]:
    """Per-node results: from dbt's return value, else from a fresh run_results.json."""
    results = getattr(res.result, "results", None)
    if results:
        return list(results)
    path = target / "run_results.json"
    try:
        if path.stat().st_mtime < time.time() - (time.monotonic() - t0):
            return []
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [r for r in data.get("results", []) if isinstance(r, dict) and "unique_id" in r]


def _retry_args(original: list[str], attempt: Attempt) -> list[str]:
    """The original command with its selection narrowed to what failed or was skipped."""
    names = sorted({n.name for n in attempt.nodes if n.failed})
    if not names:
        return original
    kept: list[str] = []
    skipping = False
    for arg in original[1:]:
        if arg in _SELECT_FLAGS:
            skipping = True
            continue
        if skipping and not arg.startswith("-"):
            continue
        skipping = False
        if any(arg.startswith(flag + "=") for flag in _SELECT_FLAGS):
            continue
        kept.append(arg)
    return [original[0], *kept, "--select", *names]


def _release_duckdb() -> None:
    """Close dbt-duckdb's process-wide database handle so the file is free again.

    dbt-duckdb keeps the DuckDB database open for the life of the process; after
    the session the user (or the next batch load) must be able to open it.
    """
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # pragma: no cover - dbt-duckdb is a core dependency
        return
    with DuckDBConnectionManager._LOCK:
        env = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
        if env is not None:
            try:
                env.close()
            except Exception:
                log.debug("could not close the DuckDB environment", exc_info=True)


def _cancel_open_connections() -> None:
    try:
        from dbt.adapters.factory import FACTORY

        for adapter in list(FACTORY.adapters.values()):
            adapter.cancel_open_connections()  # type: ignore[attr-defined]
    except Exception:  # best effort: closing the tunnel cuts a tunnelled run anyway
        log.debug("could not cancel open connections", exc_info=True)
