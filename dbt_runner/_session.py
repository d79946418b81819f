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

from ._classify import classify_message, diagnose
from ._dbtargs import accepts, with_defaults
from ._events import EventRelay, NodeCallback
from ._exceptions import (
    ConfigurationError,
    ErrorKind,
    SessionStateError,
    TunnelError,
)
from ._manifests import ManifestCache
from ._outputs import capture_macro_return, command_output
from ._profile import GeneratedProfile, TunnelledProfile, project_profile_name, tunnel_target
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

#: commands dbt's own ``retry`` can re-run (what failed, with the original selection)
_DBT_RETRY_COMMANDS = frozenset(
    {"run", "test", "build", "seed", "snapshot", "compile", "clone", "run-operation"}
)
#: commands that need no parsed manifest first (``retry`` parses itself)
_NO_PREPARSE = frozenset({"deps", "debug", "clean", "init", "parse", "retry"})
_TARGET_FLAGS = ("--target", "-t")
_RUN_RESULTS = "run_results.json"

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
        self._own_profile: TunnelledProfile | None = None  # the user's, with the tunnel
        self._profiles_dir: Path | None = None
        self._timeout_s = self.settings.timeout_s  # the running invocation's deadline
        #: the running attempt's command value and dbt invocation id (set by _run_attempt)
        self._dbt_output: tuple[Any, str | None] = (None, None)
        self.project_dir = self.settings.resolved_project_dir
        own_profiles = self.settings.profiles_dir
        self._manifests = ManifestCache(
            self.project_dir,
            own_profiles.resolve() / "profiles.yml" if own_profiles is not None else None,
        )
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
        """The session's SSH tunnel (:class:`~dbt_runner.Tunnel`), when a bastion is configured.

        ``tunnel.local_host``/``tunnel.local_port`` is where the warehouse answers for
        your own connections in this session; the session opens and closes it.
        """
        return self._tunnel

    def __repr__(self) -> str:
        wh = self.settings.warehouse
        where = str(wh.path) if wh.type == "duckdb" else f"{wh.host}:{wh.effective_port}"
        where = f"{wh.type} {where}"
        if self.settings.profiles_dir is not None:  # the warehouse is the user's profile's
            where = f"profiles {self.settings.profiles_dir}"
            if self._own_profile is not None:
                t = self._own_profile.target
                where += f" target {t.target} {t.type} {t.host}:{t.port}"
        via = f" via {self.settings.ssh.host}" if self.settings.ssh.enabled else ""
        return f"<DbtSession {self._state.value} {where}{via}>"

    def open(self) -> DbtSession:
        """Open the tunnel (if configured) and write the profile. Idempotent while open."""
        if self._state is SessionState.OPEN:
            return self
        if self._state is SessionState.CLOSED:
            raise SessionStateError("this DbtSession is closed; create a new one")
        try:
            self._open()
            self._state = SessionState.OPEN
            self._install_deps()
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
            if not s.ssh.enabled:
                self._profiles_dir = s.profiles_dir.resolve()
                return
            # the user's profiles.yml, copied with only the session's target tunnelled
            from ._tunnel import Tunnel

            target = tunnel_target(s.profiles_dir.resolve(), self.project_dir, s.chosen_target)
            self._own_profile = TunnelledProfile(target)
            self._tunnel = Tunnel(s.ssh, target.host, target.port)
            self._open_tunnel(self._tunnel)
            self._profiles_dir = self._own_profile.write(
                self._tunnel.local_host, self._tunnel.local_port
            )
            return
        self._profile = GeneratedProfile(s, project_profile_name(self.project_dir))
        if s.ssh.enabled:
            from ._tunnel import Tunnel

            assert s.warehouse.host is not None and s.warehouse.effective_port is not None
            self._tunnel = Tunnel(s.ssh, s.warehouse.host, s.warehouse.effective_port)
            self._open_tunnel(self._tunnel)
            self._profiles_dir = self._profile.write(
                self._tunnel.local_host, self._tunnel.local_port
            )
        else:
            self._profiles_dir = self._profile.write()

    def _open_tunnel(self, tunnel: Tunnel) -> None:
        """Open the tunnel under the session's retry policy (transient failures only).

        A host-key or SSH-auth failure (``auth``) is raised at once; an unreachable
        bastion is tried ``RETRY__ATTEMPTS`` times in all before its error is raised.
        """
        policy = self.settings.retry
        try:
            for retry_state in build_retrying(policy, retry_on=_TunnelRetry):
                with retry_state:
                    try:
                        tunnel.open()
                    except TunnelError as exc:
                        if not is_retryable(exc.kind, policy):
                            raise
                        raise _TunnelRetry(exc) from exc
        except _TunnelRetry as last:
            raise last.error  # noqa: B904 - the tunnel's own error, with its cause

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
        if self._own_profile is not None:
            self._own_profile.close()
            self._own_profile = None

    def __enter__(self) -> DbtSession:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ building blocks
    def run_staging(
        self,
        *,
        select: str | None = None,
        exclude: str | None = None,
        threads: int | None = None,
        vars: dict[str, Any] | None = None,
        full_refresh: bool = False,
    ) -> RunResult:
        """``dbt run`` of the staging models with ``threads`` threads.

        ``select`` defaults to ``DBT_RUNNER_STAGING_SELECT`` (``tag:staging``);
        ``exclude`` is dbt's ``--exclude``. A selection that matches no model is a
        failed result (kind ``configuration``), not an empty success.
        """
        return self._building_block(
            "run",
            select or self.settings.staging_select,
            "DBT_RUNNER_STAGING_SELECT",
            exclude=exclude,
            threads=threads,
            vars=vars,
            extra=["--full-refresh"] if full_refresh else [],
        )

    def run_tests(
        self,
        *,
        select: str | None = None,
        exclude: str | None = None,
        threads: int | None = None,
        vars: dict[str, Any] | None = None,
        scope: str = "recent",
    ) -> RunResult:
        """``dbt test`` of the staging models' data tests, in this session's tunnel.

        ``select`` defaults to ``DBT_RUNNER_TESTS_SELECT`` (``tag:staging``);
        ``exclude`` is dbt's ``--exclude``, on top of what ``scope`` leaves out. A
        selection that matches no test is a failed result (kind ``configuration``).

        ``scope`` picks the bundled project's test variants by tag: ``"recent"``
        (default) leaves out tests tagged ``full`` — the hourly tests, whose
        cost follows the batch —, ``"full"`` leaves out those tagged
        ``recent`` (whole-table tests, for a daily run), ``"all"`` runs
        everything ``select`` reaches. A project without these tags runs the
        same tests in every scope. See docs/models.md.
        """
        return self._building_block(
            "test",
            select or self.settings.tests_select,
            "DBT_RUNNER_TESTS_SELECT",
            exclude=exclude,
            threads=threads,
            vars=vars,
            scope=scope,
        )

    def build_staging(
        self,
        *,
        select: str | None = None,
        exclude: str | None = None,
        threads: int | None = None,
        vars: dict[str, Any] | None = None,
        scope: str = "recent",
    ) -> RunResult:
        """One ``dbt build`` of the staging models and their tests, instead of
        :meth:`run_staging` then :meth:`run_tests` (one invocation: fewer statements,
        one relation cache, one set of artifacts).

        ``select`` defaults to ``DBT_RUNNER_STAGING_SELECT``; ``exclude`` and ``scope``
        leave nodes out as in :meth:`run_tests`. dbt's build semantics differ from run + test:
        each model's tests run right after it, and a **failed test skips the
        models downstream of it** (run + test would have built them, then reported
        the test); a failed model does not stop the other models' tests. One
        :class:`RunResult` holds models and tests (``command == "build"``).

        >>> session.build_staging(threads=3).raise_for_status()      # doctest: +SKIP
        """
        return self._building_block(
            "build",
            select or self.settings.staging_select,
            "DBT_RUNNER_STAGING_SELECT",
            exclude=exclude,
            threads=threads,
            vars=vars,
            scope=scope,
        )

    def _building_block(
        self,
        command: str,
        select: str,
        setting: str,
        *,
        exclude: str | None,
        threads: int | None,
        vars: dict[str, Any] | None,
        scope: str | None = None,
        extra: Sequence[str] = (),
    ) -> RunResult:
        """``dbt <command> --select <select>`` for a building block: ``scope``'s tag and
        ``exclude`` in one ``--exclude``, then ``extra``, then ``vars``; a selection that
        matches nothing is a failed result naming ``setting``."""
        excludes = [exclude or ""]
        if scope is not None:
            if scope not in _TEST_SCOPE_EXCLUDES:
                raise ConfigurationError(
                    f"scope must be one of {sorted(_TEST_SCOPE_EXCLUDES)}, got {scope!r}"
                )
            excludes.insert(0, _TEST_SCOPE_EXCLUDES[scope])
        args = [command, "--select", select]
        joined = " ".join(e for e in excludes if e)
        if joined:
            args += ["--exclude", joined]
        args += extra
        if vars:
            args += ["--vars", json.dumps(vars, sort_keys=True)]
        return _selected_something(self.invoke(args, threads=threads), select, setting)

    def invoke(
        self,
        args: Sequence[str],
        *,
        threads: int | None = None,
        timeout_s: float | None = None,
    ) -> RunResult:
        """Run any dbt command (``["build", "--select", "tag:staging"]``) with retries.

        The caller's flags win: the session adds only what ``args`` lacks and the
        command accepts. ``threads`` (if given) beats the profile's ``threads``;
        ``timeout_s`` (if given) is this invocation's watchdog deadline instead of
        ``DBT_RUNNER_TIMEOUT_S``. Returns a :class:`RunResult` whenever dbt ran or
        tried to; raises only for misuse (:class:`SessionStateError`) or bad
        configuration.

        >>> session.invoke(["seed", "--target", "ci"]).raise_for_status()   # doctest: +SKIP
        """
        args = [str(a) for a in args]
        if not args or args[0].startswith("-"):
            raise ConfigurationError(f"invoke() needs a dbt command first, got {args!r}")
        self._check_tunnel_args(args)
        args = _with_vars(args, self.settings.dbt_vars)
        if threads is not None and threads < 1:
            raise ConfigurationError(f"threads must be >= 1, got {threads}")
        if timeout_s is not None and timeout_s <= 0:
            raise ConfigurationError(f"timeout_s must be > 0, got {timeout_s}")
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
            self._timeout_s = timeout_s if timeout_s is not None else self.settings.timeout_s
            try:
                return self._invoke_with_retries(args, threads)
            finally:
                _PROCESS_LOCK.release()

    # ------------------------------------------------------------------ internals
    def _check_tunnel_args(self, args: Sequence[str]) -> None:
        """With a tunnel, refuse flags that would make dbt connect around it.

        The session's profile points only the session's target at the tunnel: a
        different ``--target``/``--profile`` or another ``--profiles-dir`` would reach
        the warehouse directly (or not at all). That is a configuration error, not
        something to do silently.
        """
        if not self.settings.ssh.enabled:
            return
        if _option_value(args, ("--profiles-dir",)) is not None:
            raise ConfigurationError(
                "--profiles-dir cannot be given to a session with an SSH tunnel "
                "(DBT_RUNNER_SSH__HOST): the session's own profile points dbt at the tunnel; "
                "set DBT_RUNNER_PROFILES_DIR instead"
            )
        own = self._own_profile
        if own is None:
            return
        target = _option_value(args, _TARGET_FLAGS) or _short_target(args)
        if target is not None and target != own.target.target:
            raise ConfigurationError(
                f"--target {target}: this session tunnels target {own.target.target!r} of "
                f"profile {own.target.profile!r} only (DBT_RUNNER_SSH__HOST); open a session "
                f"with DBT_RUNNER_TARGET={target} to run it through the tunnel"
            )
        profile = _option_value(args, ("--profile",))
        if profile is not None and profile != own.target.profile:
            raise ConfigurationError(
                f"--profile {profile}: this session tunnels profile {own.target.profile!r} "
                "only (DBT_RUNNER_SSH__HOST); set DBT_PROFILE for the session instead"
            )

    def _install_deps(self) -> None:
        """``dbt deps`` at open, as ``DBT_RUNNER_INSTALL_DEPS`` says (see :mod:`._deps`)."""
        from ._deps import deps_reason, record_installed

        reason = deps_reason(self.project_dir, self.settings.install_deps)
        if reason is None:
            return
        log.info("installing the project's packages (dbt deps): %s", reason)
        self.invoke(["deps"]).raise_for_status()
        record_installed(self.project_dir)

    def _invoke_with_retries(self, args: list[str], threads: int | None) -> RunResult:
        """The attempts of one invocation: the command, then dbt's own ``retry`` of it.

        A retry re-runs exactly what failed with dbt's ``retry`` command on the previous
        attempt's ``run_results.json`` (it keeps the selection, selectors, excludes and
        state of the original). Only when no node has run yet (the warehouse refused the
        first connection) is the whole original command run again.
        """
        command = args[0]
        policy = self.settings.retry
        started_at = utc_now_iso()
        t0 = time.monotonic()
        attempts: list[Attempt] = []
        degraded: int | None = None
        ran: bytes | None = None  # run_results.json of the latest attempt in which nodes ran
        target_dir = self._target_dir(args)
        try:
            for retry_state in build_retrying(policy):
                with retry_state:
                    if ran is not None and command in _DBT_RETRY_COMMANDS:
                        # dbt's retry reads the previous results from the target path
                        (target_dir / _RUN_RESULTS).write_bytes(ran)
                        attempt_args = ["retry", "--target-path", str(target_dir)]
                        attempt_threads = degraded or attempts[-1].threads
                    elif degraded is not None:
                        attempt_args, attempt_threads = _set_threads(args, degraded), degraded
                    else:
                        attempt_args, attempt_threads = args, threads
                    attempt = self._attempt(len(attempts) + 1, attempt_args, attempt_threads)
                    attempts.append(attempt)
                    if attempt.nodes:
                        ran = _fresh_bytes(target_dir / _RUN_RESULTS, attempt.elapsed_s) or ran
                    if not attempt.success and attempt.error is not None:
                        kind = attempt.error.kind
                        if is_retryable(kind, policy) and len(attempts) < policy.attempts:
                            used = attempt.threads
                            if kind in (ErrorKind.TOO_MANY_CONNECTIONS, ErrorKind.CONFLICT) and (
                                policy.degrade_threads is not None
                                and used is not None
                                and policy.degrade_threads < used
                            ):
                                degraded = policy.degrade_threads
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
            output=self._dbt_output[0],
        )

    def _target_dir(self, args: Sequence[str]) -> Path:
        """Where dbt writes this command's artifacts: the caller's ``--target-path`` or ours."""
        value = _option_value(args, ("--target-path",))
        if value is None:
            return self.state_dir / "target"
        path = Path(value)
        return path if path.is_absolute() else self.project_dir / path

    def _attempt(self, number: int, args: list[str], threads: int | None) -> Attempt:
        started_at = utc_now_iso()
        t0 = time.monotonic()
        self._dbt_output = (None, None)
        full_args, nodes, error, used = self._run_attempt(number, args, threads, t0)
        return Attempt(
            number=number,
            args=tuple(full_args),
            threads=used,
            started_at=started_at,
            elapsed_s=round(time.monotonic() - t0, 3),
            success=error is None,
            nodes=nodes,
            error=error,
            invocation_id=self._dbt_output[1],
        )

    def _run_attempt(
        self, number: int, args: list[str], threads: int | None, t0: float
    ) -> tuple[list[str], tuple[NodeResult, ...], ErrorInfo | None, int | None]:
        """Tunnel check, parse (once per target and vars), then dbt.

        Returns the effective args, the nodes, the error (if any) and the threads used.
        """
        full_args = self._effective_args(args, threads)
        try:
            self._ensure_tunnel()
        except TunnelError as exc:
            return full_args, (), ErrorInfo(exc.kind, str(exc)), self._threads_used(full_args)

        manifest = None
        if args[0] not in _NO_PREPARSE:
            manifest, error = self._manifest_for(args)
            if error is not None:
                return full_args, (), error, self._threads_used(full_args)

        _drop_connections()  # never reuse a connection an earlier invocation left behind
        # what a fresh dbt process would start from: the manifest as parse left it
        # (dbt compiles nodes in place) and empty relation caches
        _reset_compile_state(manifest)
        _clear_relation_caches()
        watchdog = _Watchdog(self)
        with watchdog, capture_macro_return() as macro_return:
            res = self._run_dbt(full_args, manifest)
        if watchdog.fired:
            _drop_connections()  # the cancelled ones (their tunnel is gone)
        nodes, error = self._outcome(number, res, t0, watchdog.fired, manifest)
        output = command_output(
            full_args, res.result, target_dir=self._target_dir(args), macro_return=macro_return
        )
        self._dbt_output = (output, _dbt_invocation_id())
        return full_args, nodes, error, self._threads_used(full_args)

    def _open_for_parsing(self) -> DbtSession:
        """Open without a tunnel, only to parse (the warm worker's parent, before it forks).

        The generated profile points where this session's tunnel would listen (its
        derived local port), so dbt's partial-parse state stays valid for the forked
        children that open the real tunnel. No thread is started and no connection
        opened: a manifest parsed here is safe to inherit across ``fork``.
        """
        if self._state is not SessionState.UNOPENED:
            raise SessionStateError("_open_for_parsing() needs an unopened session")
        s = self.settings
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if s.profiles_dir is not None:
            self._profiles_dir = s.profiles_dir.resolve()
        else:
            self._profile = GeneratedProfile(s, project_profile_name(self.project_dir))
            if s.ssh.enabled:
                from ._forwarder import LOCAL_HOST
                from ._tunnel import derive_local_port

                wh = s.warehouse
                assert s.ssh.host is not None and wh.host is not None
                assert wh.effective_port is not None
                port = s.ssh.local_port or derive_local_port(
                    s.ssh.host, s.ssh.port, s.ssh.user or "", wh.host, wh.effective_port
                )
                self._profiles_dir = self._profile.write(LOCAL_HOST, port)
            else:
                self._profiles_dir = self._profile.write()
        self._state = SessionState.OPEN
        return self

    def _prepare(self, args: Sequence[str]) -> ErrorInfo | None:
        """Make sure the manifest ``invoke(args)`` would use is parsed and fresh."""
        args = _with_vars([str(a) for a in args], self.settings.dbt_vars)
        if args[0] in _NO_PREPARSE:
            return None
        with self._lock:
            if self._state is not SessionState.OPEN:
                raise SessionStateError(f"session is {self._state.value}")
            if not _PROCESS_LOCK.acquire(blocking=False):
                raise SessionStateError("another DbtSession in this process is running dbt")
            try:
                return self._manifest_for(args)[1]
            finally:
                _PROCESS_LOCK.release()

    def _manifest_for(self, args: Sequence[str]) -> tuple[Any, ErrorInfo | None]:
        """The parsed manifest for ``args``' target and vars: cached while the project's
        files are unchanged (:class:`~dbt_runner._manifests.ManifestCache`), else parsed
        by dbt's ``parse`` (partial: only changed files are read again)."""
        key = _manifest_key(args)
        files = self._manifests.snapshot()  # before parsing: a change during it shows next time
        manifest = self._manifests.get(key, files)
        if manifest is not None:
            return manifest, None
        parse_args = ["parse"]
        if key[0]:
            parse_args += ["--target", key[0]]
        if key[1]:
            parse_args += ["--vars", key[1]]
        parsed = self._run_dbt(self._effective_args(parse_args, None))
        if not parsed.success or parsed.result is None:
            cause = parsed.exception
            verdict = diagnose(cause) if cause else None
            kind = verdict.kind if verdict else ErrorKind.COMPILATION
            if kind is ErrorKind.MODEL_FAILURE:
                kind = ErrorKind.COMPILATION
            text = _message(cause) if cause else "dbt could not parse the project"
            if verdict is not None and verdict.hint:
                text = f"{text}\nfix: {verdict.hint}"
            return None, ErrorInfo(kind, text)
        self._manifests.put(key, parsed.result, files)
        return parsed.result, None

    def _effective_args(self, args: Sequence[str], threads: int | None) -> list[str]:
        """``args`` plus what the session must add: the caller's flags always win."""
        assert self._profiles_dir is not None
        defaults: list[tuple[str, str | None]] = [
            ("--project-dir", str(self.project_dir)),
            ("--profiles-dir", str(self._profiles_dir)),
        ]
        # a generated profile has exactly the target of the settings; a user's own
        # profiles.yml keeps its default target unless DBT_RUNNER_TARGET is set
        if self._own_profile is not None:  # the one target the tunnel serves
            defaults.append(("--target", self._own_profile.target.target))
        elif self._profile is not None or "target" in self.settings.model_fields_set:
            defaults.append(("--target", self.settings.target))
        if threads is not None:
            defaults.append(("--threads", str(threads)))
        defaults += [
            ("--target-path", str(self.state_dir / "target")),
            ("--log-path", str(self.state_dir / "logs")),
            ("--log-level", "warn"),
            ("--no-send-anonymous-usage-stats", None),
            ("--no-version-check", None),
            ("--no-use-colors", None),
        ]
        return with_defaults(args, defaults)

    def _threads_used(self, full_args: Sequence[str]) -> int | None:
        """The threads dbt ran with: the command line's, else the profile's (as dbt read it)."""
        if not accepts(full_args, "--threads"):
            return None
        value = _option_value(full_args, ("--threads",))
        if value is not None and value.isdigit():
            return int(value)
        return _adapter_threads(self.project_dir) or (
            self.settings.threads if self._profile else None
        )

    def _outcome(
        self, number: int, res: Any, t0: float, timed_out: bool, manifest: Any
    ) -> tuple[tuple[NodeResult, ...], ErrorInfo | None]:
        """dbt's three outcomes (success, exception, failed nodes) as nodes + error."""
        raw_results = _node_results(res, self.state_dir / "target", t0)
        names = _manifest_names(manifest)
        invocation_id = _dbt_invocation_id()
        nodes = tuple(
            node_from_dbt(
                r, number, names=names, invocation_id=invocation_id, base_dir=self.project_dir
            )
            for r in raw_results
        )
        retry = self.settings.retry
        if timed_out:
            message = (
                f"invocation timed out after {self._timeout_s:g}s "
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
            verdict = diagnose(res.exception)
            kind = verdict.kind
            message = _message(res.exception)
            if verdict.hint:
                message = f"{message}\nfix: {verdict.hint}"
            # dbt reports only its last error; a node that failed transiently on
            # the way (e.g. refused by a connection limit) says what really happened
            if transient and not is_retryable(kind, retry):
                kind = transient[0].kind
                message = f"{message}\n(first transient node failure) {transient[0].message}"
            return nodes, ErrorInfo(kind, message)
        if not res.success and isinstance(res.result, bool):
            # dbt debug: no nodes, no exception, just "a check failed" (dbt printed which)
            message = "dbt debug: a check failed (profile, project, dependencies or connection)"
            return nodes, ErrorInfo(ErrorKind.CONFIGURATION, message)
        if not res.success:
            errors = [n.error for n in nodes if n.error is not None]
            fallback = ErrorInfo(ErrorKind.MODEL_FAILURE, "dbt reported failure")
            return nodes, (transient or errors or [fallback])[0]
        return nodes, None

    def _run_dbt(self, full_args: list[str], manifest: Any = None) -> Any:
        log.debug("dbt %s", " ".join(full_args))
        return _make_runner(manifest, [self._relay]).invoke(full_args)

    def _ensure_tunnel(self) -> None:
        if self._tunnel is None:
            return
        port_before = self._tunnel.local_port
        if self._tunnel.ensure_open() and self._tunnel.local_port != port_before:
            profile = self._own_profile or self._profile
            assert profile is not None
            profile.write(self._tunnel.local_host, self._tunnel.local_port)


class _TunnelRetry(Exception):
    """Carries a transient TunnelError through tenacity."""

    def __init__(self, error: TunnelError) -> None:
        super().__init__(str(error))
        self.error = error


class _Watchdog:
    """One invocation's deadline (``DBT_RUNNER_TIMEOUT_S``); its state dies with it.

    When it fires it asks the server to cancel the running statements (this needs
    the tunnel); if the network is stalled that cannot finish, so after a short
    grace the tunnel is closed, which cuts every forwarded connection and ends
    the cancel attempt too. Leaving the ``with`` block waits for all of that: no
    thread of this watchdog outlives the invocation.
    """

    def __init__(self, session: DbtSession) -> None:
        self._session = session
        self._event = threading.Event()
        self._timer: threading.Timer | None = None

    @property
    def fired(self) -> bool:
        """True when the deadline passed during the invocation."""
        return self._event.is_set()

    def __enter__(self) -> _Watchdog:
        timeout = self._session._timeout_s
        if timeout is not None:
            self._timer = threading.Timer(timeout, self._fire)
            self._timer.name = "dbt_runner-watchdog"
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()

    def _fire(self) -> None:
        self._event.set()
        session = self._session
        log.error(
            "invocation exceeded its timeout of %ss (DBT_RUNNER_TIMEOUT_S); cancelling",
            session._timeout_s,
        )
        canceller = threading.Thread(
            target=_cancel_open_connections, name="dbt_runner-cancel", daemon=True
        )
        canceller.start()
        canceller.join(_CANCEL_GRACE_S)
        if session._tunnel is not None:
            session._tunnel.close()
        # with the tunnel closed, a cancel still connecting fails within the connect timeout
        canceller.join(session.settings.warehouse.connect_timeout_s + _CANCEL_GRACE_S)
        if canceller.is_alive():  # pragma: no cover - a driver ignoring its own timeout
            log.warning("the cancel of the timed-out statements is still running")


# ---------------------------------------------------------------------- helpers
def _reset_compile_state(manifest: Any) -> None:
    """Clear what an earlier invocation's compile wrote into the session's manifest.

    dbt compiles nodes in place on the manifest it is given. A child of an
    ephemeral model keeps ``extra_ctes_injected=True`` from its first compile;
    the next invocation renders its SQL afresh (with a ``__dbt__cte__...``
    reference) but skips the injection because of that flag, and the query
    fails with "__dbt__cte__<model> does not exist". Plain dbt never sees this:
    each process parses a new manifest. Resetting the compile fields (the
    parse-time defaults) gives every invocation that same starting point, at
    O(nodes) cost instead of a copy of the manifest.
    """
    for node in getattr(manifest, "nodes", {}).values():  # None: no manifest (deps, ...)
        fields = getattr(type(node), "__dataclass_fields__", {})
        if "extra_ctes_injected" not in fields:  # seeds: a read-only property, nothing compiled
            continue
        if node.compiled or node.extra_ctes_injected:
            node.compiled = False
            node.compiled_code = None
            node.compiled_path = None
            node.extra_ctes_injected = False
            node.extra_ctes = []
            node._pre_injected_sql = None


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


def _selected_something(result: RunResult, select: str, setting: str) -> RunResult:
    """A building block's result; an empty selection is a failure, not ``OK (0 nodes)``.

    Plain ``invoke()`` keeps dbt's own semantics (dbt says "Nothing to do" and succeeds).
    """
    if not result.success or result.nodes:
        return result
    message = (
        f"the selection {select!r} matched no node of this project: set {setting} (or pass "
        "select=...) to the models/tests of your project"
    )
    return replace(result, success=False, error=ErrorInfo(ErrorKind.CONFIGURATION, message))


def _manifest_key(args: Sequence[str]) -> tuple[str, str]:
    """What a parsed manifest depends on besides the files: ``(--target, --vars)``."""
    return (_option_value(args, _TARGET_FLAGS) or "", _option_value(args, ("--vars",)) or "")


def _option_value(args: Sequence[str], flags: Sequence[str]) -> str | None:
    """The value of the last of ``flags`` in ``args`` (``--x v`` or ``--x=v``), else None."""
    value = None
    for i, arg in enumerate(args):
        for flag in flags:
            if arg == flag and i + 1 < len(args):
                value = args[i + 1]
            elif flag.startswith("--") and arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
    return value


def _short_target(args: Sequence[str]) -> str | None:
    """The value of a glued short ``-tci`` (click's form of ``-t ci``), else None."""
    value = None
    for arg in args:
        if arg.startswith("-t") and not arg.startswith("--") and len(arg) > 2:
            value = arg[2:]
    return value


def _set_threads(args: Sequence[str], threads: int) -> list[str]:
    """``args`` with its ``--threads`` replaced by ``threads``."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--threads":
            skip = True
            continue
        if arg.startswith("--threads="):
            continue
        out.append(arg)
    return [*out, "--threads", str(threads)]


def _fresh_bytes(path: Path, age_s: float) -> bytes | None:
    """The file's bytes when it was written within the last ``age_s`` seconds."""
    try:
        if path.stat().st_mtime < time.time() - age_s - 1.0:
            return None
        return path.read_bytes()
    except OSError:
        return None


def _manifest_names(manifest: Any) -> dict[str, str]:
    """unique_id -> node name, from a parsed manifest (tests' ids end in a hash)."""
    names: dict[str, str] = {}
    for attr in ("nodes", "unit_tests", "sources", "exposures", "snapshots"):
        for uid, node in (getattr(manifest, attr, None) or {}).items():
            name = getattr(node, "name", None)
            if isinstance(name, str):
                names[uid] = name
    return names


def _adapter_threads(project_dir: Path) -> int | None:
    """The threads dbt's adapter for ``project_dir`` was last configured with (profile's)."""
    for adapter in _adapters():
        config = getattr(adapter, "config", None)
        if str(getattr(config, "project_root", "")) != str(project_dir):
            continue
        threads = getattr(config, "threads", None)
        if isinstance(threads, int):
            return threads
    return None


def _adapters() -> list[Any]:
    """The adapters dbt's factory holds in this process (none if dbt's internals moved)."""
    try:
        from dbt.adapters.factory import FACTORY

        return list(FACTORY.adapters.values())
    except Exception:  # pragma: no cover - dbt-core is a dependency; its internals may move
        log.debug("could not read dbt's adapters", exc_info=True)
        return []


def _clear_relation_caches() -> None:
    """Empty dbt's relation caches, as in a fresh process.

    dbt fills an adapter's relation cache at the start of a command and keeps it
    up to date while it runs; it clears it only when it populates it again. With
    ``--no-populate-cache`` an adapter that lives on in the session would start
    the next command with the last one's entries; an empty cache is what a fresh
    process starts from.
    """
    for adapter in _adapters():
        adapter.cache.clear()


def _drop_connections() -> None:
    """Close and forget every connection dbt's adapters still hold (cancelled ones too)."""
    for adapter in _adapters():
        try:
            adapter.cleanup_connections()
        except Exception:  # best effort: a dead handle must not fail the next invocation
            log.debug("could not clean up dbt's connections", exc_info=True)


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


def _dbt_invocation_id() -> str | None:
    """The id of dbt's latest invocation in this process (dbt resets it per command)."""
    try:
        from dbt_common.invocation import get_invocation_id

        return str(get_invocation_id())
    except Exception:  # pragma: no cover - dbt_common moved it
        return None


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
    """Ask the warehouse to end the running statements (as dbt does on Ctrl-C)."""
    for adapter in _adapters():
        try:
            adapter.cancel_open_connections()
        except Exception:  # best effort: closing the tunnel cuts a tunnelled run anyway
            log.debug("could not cancel open connections", exc_info=True)
