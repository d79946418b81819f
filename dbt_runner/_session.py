"""``DbtSession``: one dbt runner, one parse, one SSH tunnel, many invocations.

Lifecycle: UNOPENED → OPEN → CLOSED. ``open()`` (or ``with``) checks the
settings, opens the tunnel when a bastion is configured and writes a private
profile. The first command installs the project's packages when they are
missing (``DBT_RUNNER_INSTALL_DEPS``; a first ``deps`` does it itself) and
parses the project once; every invocation then reuses that manifest and that
tunnel. ``close()`` tears everything down and is safe to call twice; a closed
session cannot be reopened.

dbt-core keeps process-wide state, so invocations are serialised: calls on
one session from several threads wait their turn, and a second session that
tries to run dbt while another session of the same process is running it gets
a :class:`~dbt_runner.SessionStateError` at once (it does not wait).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import _dbt, _signals
from ._artifacts import SessionArtifacts
from ._events import EventRelay, NodeCallback
from ._exceptions import (
    ConfigurationError,
    CredentialsError,
    ErrorKind,
    SessionStateError,
    TunnelError,
)
from ._invocation import NO_PREPARSE, Invocation, parse_error
from ._lock import WriterLock
from ._manifests import ManifestCache
from ._profile import GeneratedProfile, ProfileTarget, project_profile_name, tunnel_target
from ._results import ErrorInfo, Phase, RunResult, utc_now_iso
from ._retry import build_retrying, is_retryable
from ._settings import Settings, flags_of, setting_name
from .logging import event_extra

if TYPE_CHECKING:
    from ._aws import Login
    from ._openlineage import Lineage
    from ._ssh import Tunnel
    from ._steps import Step

__all__ = ["DbtSession", "SessionState"]

log = logging.getLogger("dbt_runner.session")

_TARGET_FLAGS = ("--target", "-t")

#: run_tests(scope=...) -> the tag it leaves out (the bundled project's test variants)
_TEST_SCOPE_EXCLUDES = {"recent": "tag:full", "full": "tag:recent", "all": ""}

#: commands that need no installed packages: the session installs none before them
_NEEDS_NO_PACKAGES = frozenset({"deps", "clean"})

#: held while dbt runs in this process (dbt-core cannot run two invocations at once)
_PROCESS_LOCK = threading.Lock()


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
        self,
        settings: Settings | None = None,
        *,
        callbacks: Sequence[NodeCallback] = (),
        manifests: ManifestCache | None = None,
    ) -> None:
        """``manifests``: parsed manifests to start from (the warm worker's child gets its
        parent's, see :meth:`open_for_parsing`)."""
        self.settings = settings if settings is not None else Settings()
        self._state = SessionState.UNOPENED
        self._lock = threading.Lock()
        self.project_dir = self.settings.resolved_project_dir
        #: OpenLineage events of each invocation (DBT_RUNNER_OPENLINEAGE__ENABLED), else None
        self._lineage: Lineage | None = None
        if self.settings.openlineage.enabled:
            from ._openlineage import Lineage  # the client is imported only when it is on

            self._lineage = Lineage(self.settings, self.project_dir)
            callbacks = (*callbacks, self._lineage.on_node)
        #: held while the packages are checked (and installed) before a first command
        self._deps_lock = threading.RLock()
        self._deps_checked = False
        self._relay = EventRelay(callbacks)
        self._tunnel: Tunnel | None = None
        self._profile: GeneratedProfile | None = None
        self._own_target: ProfileTarget | None = None  # the user's target, with the tunnel
        #: while the tunnel is open: dbt's (and our) connections to the warehouse's
        #: host:port go to the tunnel's local end (dbt_runner._dbt.routes)
        self._route: _dbt.Route | None = None
        #: the generated Redshift profile's connect timeout bounds connecting only
        self._connect_only: _dbt.Registration | None = None
        self._profiles_dir: Path | None = None
        #: Redshift IAM (METHOD=iam, generated profile): the temporary login from AWS that
        #: dbt (through the profile's secret variable) and our own connections use
        self._login: Login | None = None
        #: the invocation running now (what cancel() stops); re-entrant: cancel() may run
        #: in a signal handler of the thread that holds it
        self._current: Invocation | None = None
        self._last: Invocation | None = None  # dbt may still be stopping after a cancel
        self._current_lock = threading.RLock()
        self._writer: WriterLock | None = None  # the writer lock, while this session holds it
        self._lock_abort: threading.Event | None = None  # set by cancel() during a lock wait
        #: the open, import and writer-lock phases the next result carries (RunResult.phases)
        self._phases: list[Phase] = []
        own_profiles = self.settings.profiles_dir
        self.manifests = manifests or ManifestCache(
            self.project_dir,
            own_profiles.resolve() / "profiles.yml" if own_profiles is not None else None,
        )
        self.state_dir = _state_dir(self.settings, self.project_dir)
        #: DBT_RUNNER_ARTIFACT_CACHE, once open (:mod:`dbt_runner._artifacts`)
        self._artifacts: SessionArtifacts | None = None
        #: dbt's PostgreSQL connections kept for the next node (CONNECTIONS__REUSE)
        reuse = self.settings.connections
        self._pool = (
            _dbt.ConnectionPool(reuse.reuse, reuse.idle_s) if reuse.reuse != "off" else None
        )

    # ------------------------------------------------------------------ lifecycle
    @property
    def state(self) -> SessionState:
        """UNOPENED, OPEN or CLOSED."""
        return self._state

    @property
    def parse_count(self) -> int:
        """How many times dbt parsed the project in this session (from dbt's own events).

        A manifest taken from the artifact cache (``DBT_RUNNER_ARTIFACT_CACHE``) is not a
        parse: a session whose first command hit the cache reports 0.
        """
        return self._relay.parse_events

    @property
    def tunnel(self) -> Tunnel | None:
        """The session's SSH tunnel (:class:`~dbt_runner.Tunnel`), when a bastion is configured.

        ``tunnel.local_host``/``tunnel.local_port`` is where the warehouse answers for
        your own connections in this session; the session opens and closes it. dbt
        itself connects by the warehouse's name (its certificate's), routed there: for
        ``sslmode=verify-full`` of your own libpq connection, give ``host`` = the
        warehouse's name and ``hostaddr``/``port`` = the tunnel's local end.
        """
        return self._tunnel

    def __repr__(self) -> str:
        wh = self.settings.warehouse
        where = str(wh.path) if wh.type == "duckdb" else f"{wh.host}:{wh.effective_port}"
        where = f"{wh.type} {where}"
        if self.settings.profiles_dir is not None:  # the warehouse is the user's profile's
            where = f"profiles {self.settings.profiles_dir}"
            if self._own_target is not None:
                t = self._own_target
                where += f" target {t.target} {t.type} {t.host}:{t.port}"
        via = f" via {self.settings.ssh.host}" if self.settings.ssh.enabled else ""
        return f"<DbtSession {self._state.value} {where}{via}>"

    def open(self) -> DbtSession:
        """Open the tunnel (if configured) and write the profile. Idempotent while open."""
        if self._state is SessionState.OPEN:
            return self
        if self._state is SessionState.CLOSED:
            raise SessionStateError("this DbtSession is closed; create a new one")
        started_at, t0 = utc_now_iso(), time.monotonic()
        try:
            self._open()
        except BaseException:
            self._teardown()
            self._state = SessionState.CLOSED
            raise
        self._phases.append(Phase.until_now("open", started_at, t0))
        self._state = SessionState.OPEN
        log.info("session open: %r", self)
        return self

    def _open(self) -> None:
        s = self.settings
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if s.profiles_dir is None and s.warehouse.is_iam:
            # once per session (and again before a command when half its life is gone, or
            # after the tunnel re-opened): every connection of the session uses it
            self._login = self._retried(self._fetch_login)
        self._open_artifacts()
        if s.profiles_dir is not None:
            if not s.ssh.enabled:
                self._profiles_dir = s.profiles_dir.resolve()
                return
            # the user's profiles.yml as it is: its target's host:port go through the tunnel
            target = tunnel_target(
                s.profiles_dir.resolve(), self.project_dir, s.chosen_target, flags_of(s)
            )
            self._own_target = target
            self._tunnel_to(target.host, target.port, target.type)
            self._profiles_dir = s.profiles_dir.resolve()
            return
        name = project_profile_name(self.project_dir)
        self._profile = GeneratedProfile(self._logged_in(s), name)
        wh = s.warehouse
        if wh.type == "redshift":  # CONNECT_TIMEOUT_S bounds the connect, not each read
            assert wh.host is not None and wh.effective_port is not None
            self._connect_only = _dbt.connect_only(wh.host, wh.effective_port)
        if s.ssh.enabled:
            assert wh.host is not None and wh.effective_port is not None
            self._tunnel_to(wh.host, wh.effective_port, wh.type)
        self._profiles_dir = self._profile.write()

    def _tunnel_to(self, host: str, port: int, kind: str) -> None:
        """Open the tunnel to the warehouse ``host:port`` (the bastion connects to
        ``SSH__REMOTE_HOST`` instead when set) and route that address through it."""
        from ._ssh import Tunnel

        if kind not in ("postgres", "redshift"):  # the settings/profile checks prevent it
            raise ConfigurationError(f"a {kind} target cannot be tunnelled")
        self._tunnel = Tunnel(self.settings.ssh, *self.settings.ssh.remote_end(host, port))
        self._open_tunnel(self._tunnel)
        self._route = _dbt.add_route(
            host, port, self._tunnel, driver="postgres" if kind == "postgres" else "redshift"
        )

    def _open_tunnel(self, tunnel: Tunnel) -> None:
        """Open the tunnel under the session's retry policy (transient failures only).

        A host-key or SSH-auth failure (``auth``) is raised at once; an unreachable
        bastion is tried ``RETRY__ATTEMPTS`` times in all before its error is raised.
        """
        self._retried(tunnel.open)

    def _retried(self, call: Callable[[], _T]) -> _T:
        """``call()`` under the session's retry policy: a transient :class:`TunnelError` or
        :class:`CredentialsError` is tried ``RETRY__ATTEMPTS`` times in all before it is
        raised; any other failure (``auth``) at once."""
        policy = self.settings.retry
        try:
            for retry_state in build_retrying(policy, retry_on=_TunnelRetry):
                with retry_state:
                    try:
                        result = call()
                    except (TunnelError, CredentialsError) as exc:
                        if not is_retryable(exc.kind, policy):
                            raise
                        raise _TunnelRetry(exc) from exc
        except _TunnelRetry as last:
            raise last.error  # noqa: B904 - the tunnel's own error, with its cause
        return result

    # ------------------------------------------------------------------ Redshift IAM
    def _fetch_login(self) -> Login:
        """A temporary login from AWS for the warehouse (``METHOD=iam``)."""
        from ._warehouse import fetch_login

        login = fetch_login(self.settings)
        log.info(
            "Redshift IAM: temporary login for %s until %s",
            login.user,
            login.expiration.isoformat(timespec="seconds"),
            extra=event_extra("iam_login", db_user=login.user),
        )
        return login

    def _logged_in(self, settings: Settings) -> Settings:
        """``settings`` with the session's temporary login, when it has one (IAM)."""
        if self._login is None or not settings.warehouse.is_iam:
            return settings
        from ._warehouse import with_login

        return with_login(settings, self._login)

    def _ensure_login(self, reopened: bool) -> None:
        """Before a command: a new login when the tunnel was re-opened or less than half the
        login's life is left (raises :class:`CredentialsError`: the attempt's outcome)."""
        if self._login is None or not (reopened or self._login.needs_refresh()):
            return
        self._login = self._fetch_login()
        if self._profile is not None and self._profile.relogin(self._logged_in(self.settings)):
            self._profile.write()  # another user (it does not change for one identity)

    def close(self) -> None:
        """Close the tunnel and remove the generated profile. Safe to call twice."""
        with self._lock:
            if self._state is SessionState.CLOSED:
                return
            self._teardown()
            self._state = SessionState.CLOSED
            log.info("session closed")

    def _teardown(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self.manifests.clear()
        if self._pool is not None:  # before the tunnel: their ends reach the server
            self._pool.close()
        if self.settings.warehouse.type == "duckdb":
            _dbt.release_duckdb()
        if self._route is not None:
            self._route.remove()
            self._route = None
        if self._connect_only is not None:
            self._connect_only.remove()
            self._connect_only = None
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None
        if self._profile is not None:
            self._profile.close()
            self._profile = None
        self._own_target = None

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
        resume: str | None = None,
    ) -> RunResult:
        """``dbt run`` of the staging models with ``threads`` threads.

        ``select`` defaults to ``DBT_RUNNER_STAGING_SELECT`` (``tag:staging``);
        ``exclude`` is dbt's ``--exclude``. A selection that matches no model is a
        failed result (kind ``configuration``), not an empty success.
        ``resume``: the orchestrator's run id (see :meth:`invoke`): a retry of the same
        run re-runs only what failed in its previous try (``DBT_RUNNER_ARTIFACT_CACHE``).
        """
        with self._writer_lock("run") as busy:
            if busy is not None:
                return busy
            return self._building_block(
                "run",
                select,
                "staging_select",
                exclude=exclude,
                threads=threads,
                vars=vars,
                extra=["--full-refresh"] if full_refresh else [],
                resume=resume,
            )

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
            select,
            "tests_select",
            exclude=exclude,
            threads=threads,
            vars=vars,
            scope=scope,
            resume=resume,
        )

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
        with self._writer_lock("build") as busy:
            if busy is not None:
                return busy
            return self._building_block(
                "build",
                select,
                "staging_select",
                exclude=exclude,
                threads=threads,
                vars=vars,
                scope=scope,
                resume=resume,
            )

    def _building_block(
        self,
        command: str,
        select: str | None,
        setting: str,
        *,
        exclude: str | None,
        threads: int | None,
        vars: dict[str, Any] | None,
        scope: str | None = None,
        extra: Sequence[str] = (),
        resume: str | None = None,
    ) -> RunResult:
        """``dbt <command> --select <select>`` for a building block (``select`` None: the
        setting ``setting``'s): ``scope``'s tag and ``exclude`` in one ``--exclude``, then
        ``extra``, then ``vars``; a selection that matches nothing is a failed result naming
        where the selection came from."""
        selection = select or getattr(self.settings, setting)
        excludes = [exclude or ""]
        if scope is not None:
            if scope not in _TEST_SCOPE_EXCLUDES:
                raise ConfigurationError(
                    f"scope must be one of {sorted(_TEST_SCOPE_EXCLUDES)}, got {scope!r}"
                )
            excludes.insert(0, _TEST_SCOPE_EXCLUDES[scope])
        args = [command, "--select", selection]
        joined = " ".join(e for e in excludes if e)
        if joined:
            args += ["--exclude", joined]
        args += extra
        if vars:
            args += ["--vars", json.dumps(vars, sort_keys=True)]
        result = self.invoke(args, threads=threads, resume=resume)
        return _selected_something(result, selection, None if select else setting_name(setting))

    def invoke(
        self,
        args: Sequence[str],
        *,
        threads: int | None = None,
        timeout_s: float | None = None,
        writer_lock: bool = False,
        resume: str | None = None,
    ) -> RunResult:
        """Run any dbt command (``["build", "--select", "tag:staging"]``) with retries.

        The caller's flags win: the session adds only what ``args`` lacks and the
        command accepts. ``threads`` (if given) beats the profile's ``threads``;
        ``timeout_s`` (if given) is this invocation's watchdog deadline instead of
        ``DBT_RUNNER_TIMEOUT_S``. ``writer_lock=True``: hold the target's writer lock
        for the command, as ``run_staging`` does (for your own commands that write the
        staging tables). Returns a :class:`RunResult` whenever dbt ran or tried to;
        raises only for misuse (:class:`SessionStateError`) or bad configuration. A
        ``KeyboardInterrupt``, ``SystemExit`` or other ``BaseException`` arriving while
        dbt runs (an orchestrator's timeout from a signal handler) cancels on the
        server, cleans up and is re-raised unchanged; the session stays usable.

        ``resume`` (needs ``DBT_RUNNER_ARTIFACT_CACHE``): the orchestrator's id of this run,
        the same for each of its tries (Airflow: ``context["run_id"]``). The command's
        results are kept in the artifact cache under it; when the previous try of the same
        run, command and selection on this target did not succeed, only what did not is
        re-run (dbt's ``retry`` on that try's results, in a new container too). Any other
        case runs the whole command: a first try, another run's results, a try that
        succeeded or left no results.

        >>> session.invoke(["seed", "--target", "ci"]).raise_for_status()   # doctest: +SKIP
        """
        args = [str(a) for a in args]
        if not args or args[0].startswith("-"):
            raise ConfigurationError(f"invoke() needs a dbt command first, got {args!r}")
        if self._state is SessionState.OPEN:
            self._import_dbt()  # before anything below reads dbt's flags
        self._check_tunnel_args(args)
        args = _with_vars(args, self.settings.dbt_vars)
        if threads is not None and threads < 1:
            raise ConfigurationError(f"threads must be >= 1, got {threads}")
        if timeout_s is not None and timeout_s <= 0:
            raise ConfigurationError(f"timeout_s must be > 0, got {timeout_s}")
        if resume is not None and self.settings.artifact_cache is None:
            raise ConfigurationError(
                "resume re-runs what failed in a previous try of the run, whose results live "
                "in the artifact cache: set DBT_RUNNER_ARTIFACT_CACHE"
            )
        self._install_deps(args[0])
        if writer_lock:
            with self._writer_lock(args[0]) as busy:
                if busy is not None:
                    return busy
                return self.invoke(args, threads=threads, timeout_s=timeout_s, resume=resume)
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
            deadline = timeout_s if timeout_s is not None else self.settings.timeout_s
            invocation = Invocation(self, args, threads, deadline)
            with self._current_lock:
                self._current = self._last = invocation
            try:
                artifact_target = self._before_command(invocation, resume)
                result = invocation.run()
                if artifact_target is not None and invocation.interrupted is None:
                    assert self._artifacts is not None
                    self._artifacts.after_command(
                        args,
                        artifact_target,
                        self._target_dir(args),
                        invocation.last_results,
                        resume,
                    )
            finally:
                with self._current_lock:
                    self._current = None
                # dbt may still be stopping (given up on after a cancel): the next
                # invocation waits for it, not for this one
                invocation.after_dbt(_PROCESS_LOCK.release)
        if invocation.interrupted is not None:
            raise invocation.interrupted  # the caller's own exception, unchanged
        if args[0] == "deps" and result.success:
            # installed as plain `dbt deps` does (the next session's check trusts them)
            self._deps_checked = True
        return result

    def run_steps(self, steps: Sequence[Step]) -> dict[str, RunResult]:
        """Run :class:`~dbt_runner.Step` s in this session, stopping after a failed one.

        >>> session.run_steps(dbt_runner.cycle_steps())     # doctest: +SKIP
        {'staging': RunResult(...), 'tests': RunResult(...)}
        """
        from ._steps import run_steps

        return run_steps(self, steps)

    def cancel(self) -> bool:
        """Cancel the invocation running now, from any thread; True if one was running.

        Thread-safe and safe in a signal handler: it returns at once. The running
        statements are cancelled on the server (through the tunnel while it is
        open), no further node starts, and the call that is running returns a
        :class:`RunResult` with ``error.kind == "cancelled"``: nodes that ended are
        reported as they ended, interrupted ones as ``cancelled``, the rest
        ``skipped``. The session stays open and can run the next command. For
        Prefect or Dagster cancellation, a notebook's stop button, Airflow's ``on_kill``.

        >>> threading.Timer(60, session.cancel).start()      # doctest: +SKIP
        >>> session.run_staging().error.kind                 # doctest: +SKIP
        <ErrorKind.CANCELLED: 'cancelled'>
        """
        with self._current_lock:
            invocation, lock_wait = self._current, self._lock_abort
        if lock_wait is not None:  # waiting for the writer lock: stop waiting
            lock_wait.set()
            return True
        if invocation is None:
            return False
        return invocation.cancel(ErrorKind.CANCELLED, "cancelled by DbtSession.cancel()")

    @contextlib.contextmanager
    def _writer_lock(self, command: str) -> Iterator[RunResult | None]:
        """Hold the target's writer lock for the block (:mod:`dbt_runner._lock`).

        Yields None while held (re-entrant: a block inside one of this session's is
        already covered), else the result to return instead: failed with kind
        ``locked`` (or the lock connection's own failure), or with
        ``LOCK__ON_BUSY=skip`` a success that says it skipped.
        """
        if self._writer is not None:
            yield None
            return
        if self._state is not SessionState.OPEN:
            raise SessionStateError(
                f"session is {self._state.value}: use it inside 'with DbtSession(...)' "
                "or call open() first"
            )
        lock = self._new_writer_lock()
        if lock is None:
            yield None
            return
        started_at, t0 = utc_now_iso(), time.monotonic()
        error = self._take_writer_lock(lock)
        self._phases.append(Phase.until_now("lock", started_at, t0))
        if error is not None:
            yield self._not_run(command, error)
            return
        self._writer = lock
        try:
            yield None
        finally:
            self._writer = None
            # released once dbt has stopped: a run given up on after a cancel still writes
            self._after_dbt(lock.release)

    def _take_writer_lock(self, lock: WriterLock) -> ErrorInfo | None:
        """Acquire ``lock`` through the (re-opened) tunnel; a transient failure of its
        connection is retried under the retry policy, a busy lock is not."""
        abort = threading.Event()
        with self._current_lock:
            self._lock_abort = abort
        policy = self.settings.retry
        error: ErrorInfo | None = None
        try:
            for number in range(1, policy.attempts + 1):
                try:
                    self._ensure_tunnel()
                except (TunnelError, CredentialsError) as exc:
                    error = ErrorInfo(exc.kind, str(exc))
                else:
                    lock.relogin(self._logged_in(lock.settings))  # IAM: the newest login
                    error = lock.acquire(self.settings.lock_timeout_s, abort)
                if error is None or not is_retryable(error.kind, policy):
                    return error
                if number < policy.attempts:
                    wait = min(policy.max_wait_s, policy.initial_wait_s * 2 ** (number - 1))
                    log.warning(
                        "writer lock: attempt %d failed [%s]: retrying in %.1fs",
                        number,
                        error.kind.value,
                        wait,
                    )
                    if _signals.wait(abort, wait):
                        return ErrorInfo(ErrorKind.CANCELLED, "cancelled while waiting")
            return error
        finally:
            with self._current_lock:
                self._lock_abort = None

    def _ensure_writer_lock(self) -> ErrorInfo | None:
        """Before an attempt: the writer lock this session holds is still held (a tunnel
        that dropped took its connection, and the server released it): else take it again."""
        lock = self._writer
        if lock is None:
            return None
        if lock.fresh:  # taken just before this first attempt, through the same tunnel
            lock.fresh = False
            return None
        if lock.alive():
            return None
        log.warning(
            "the writer lock's connection was lost (%s): taking the lock again", lock.describe
        )
        lock.release()
        error = self._take_writer_lock(lock)
        lock.fresh = False  # the next attempt checks it again
        return error

    def _new_writer_lock(self) -> WriterLock | None:
        from ._warehouse import as_warehouse

        target, other = as_warehouse(self.settings)
        if other is not None:
            log.info("no writer lock for %s: dbt_runner knows no lock of that type", other)
            return None
        # through the tunnel, by the session's route; IAM: the session's temporary login
        return WriterLock(self._logged_in(target))

    def _not_run(self, command: str, error: ErrorInfo) -> RunResult:
        """The result of a command the writer lock kept from running."""
        if error.kind is not ErrorKind.LOCKED or self.settings.lock.on_busy != "skip":
            log.error("dbt %s did not run: %s", command, error.message)
            return RunResult.not_run(command, error, phases=self._take_phases())
        log.warning(
            "skipped dbt %s: %s (DBT_RUNNER_LOCK__ON_BUSY=skip)",
            command,
            error.message.split(";")[0],
        )
        skipped = RunResult.not_run(command, error, phases=self._take_phases())
        return replace(skipped, success=True)

    def _take_phases(self) -> list[Phase]:
        """The open, import and writer-lock phases not yet in a result: the next result's."""
        phases, self._phases = self._phases, []
        return phases

    def _after_dbt(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once no dbt of this session runs any more (now, usually)."""
        last = self._last
        if last is None:
            callback()
        else:
            last.after_dbt(callback)

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
        own = self._own_target
        if own is None:
            return
        target = _option_value(args, _TARGET_FLAGS) or _short_target(args)
        if target is not None and target != own.target:
            raise ConfigurationError(
                f"--target {target}: this session tunnels target {own.target!r} of "
                f"profile {own.profile!r} only (DBT_RUNNER_SSH__HOST); open a session "
                f"with DBT_RUNNER_TARGET={target} to run it through the tunnel"
            )
        profile = _option_value(args, ("--profile",))
        if profile is not None and profile != own.profile:
            raise ConfigurationError(
                f"--profile {profile}: this session tunnels profile {own.profile!r} "
                "only (DBT_RUNNER_SSH__HOST); set DBT_PROFILE for the session instead"
            )

    def _install_deps(self, command: str) -> None:
        """``dbt deps`` before the session's first command that needs the packages, as
        ``DBT_RUNNER_INSTALL_DEPS`` says (see :mod:`._deps`); raises when it fails.

        A first command that is ``deps`` installs them itself (once, as plain dbt), and
        ``clean`` needs none: the check waits for the next command.
        """
        from ._deps import deps_reason, record_installed

        with self._deps_lock:
            if (
                self._deps_checked
                or command in _NEEDS_NO_PACKAGES
                or self._state is not SessionState.OPEN  # invoke() says why
            ):
                return
            self._deps_checked = True
            reason = deps_reason(self.project_dir, self.settings.install_deps)
            if reason is None:
                return
            log.info("installing the project's packages (dbt deps): %s", reason)
            try:
                self.invoke(["deps"]).raise_for_status()
            except BaseException:
                self._deps_checked = False  # the next command tries again
                raise
            record_installed(self.project_dir)

    def _target_dir(self, args: Sequence[str]) -> Path:
        """Where dbt writes this command's artifacts: the caller's ``--target-path`` or ours."""
        value = _option_value(args, ("--target-path",))
        if value is None:
            return self.state_dir / "target"
        path = Path(value)
        return path if path.is_absolute() else self.project_dir / path

    def open_for_parsing(self) -> DbtSession:
        """Open without a tunnel, only to parse (the warm worker's parent, before it forks).

        The generated profile is the one a tunnelled session writes (the warehouse's
        own host/port: the tunnel is a route, not a profile change), so dbt's
        partial-parse state stays valid for the forked children that open the real
        tunnel. No connection is opened, and no thread
        outlives a call: a manifest parsed here (:meth:`prepare`, :attr:`manifests`)
        is safe to inherit across ``fork``.
        """
        if self._state is not SessionState.UNOPENED:
            raise SessionStateError("open_for_parsing() needs an unopened session")
        s = self.settings
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._open_artifacts()
        if s.profiles_dir is not None:
            self._profiles_dir = s.profiles_dir.resolve()
        else:
            if s.warehouse.is_iam:  # the profile's user (part of dbt's parse state) is AWS's
                self._login = self._retried(self._fetch_login)
            name = project_profile_name(self.project_dir)
            self._profile = GeneratedProfile(self._logged_in(s), name)
            self._profiles_dir = self._profile.write()
        self._state = SessionState.OPEN
        return self

    def prepare(self, args: Sequence[str]) -> ErrorInfo | None:
        """Parse now, in this thread, what ``invoke(args)`` would use, unless it is
        parsed and fresh; the parse error, if any (for :meth:`open_for_parsing`)."""
        args = _with_vars([str(a) for a in args], self.settings.dbt_vars)
        if args[0] in NO_PREPARSE:
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

    def _manifest_for(
        self, args: Sequence[str], invocation: Invocation | None = None
    ) -> tuple[Any, ErrorInfo | None]:
        """The parsed manifest for ``args``' target and vars: cached while the project's
        files are unchanged (:class:`~dbt_runner._manifests.ManifestCache`), else parsed
        by dbt's ``parse`` (partial: only changed files are read again), in the
        invocation's dbt thread (in this thread without one). ``(None, None)`` when the
        invocation was cancelled meanwhile."""
        key = _manifest_key(args)
        files = self.manifests.snapshot()  # before parsing: a change during it shows next time
        manifest = self.manifests.get(key, files)
        if manifest is not None:
            return manifest, None
        full = self._effective_args(_parse_args(key), None)
        cached = self._cached_parse(full)
        if cached is not None and cached.manifest is not None:
            self.manifests.put(key, cached.manifest, files)
            return cached.manifest, None
        if invocation is None:
            parsed: _dbt.DbtReturn | None = _dbt.invoke(full, None, self._relay)
        else:
            started_at, t0 = utc_now_iso(), time.monotonic()
            parsed = invocation._dbt_parse(full)
            invocation.record_phase("parse", started_at, t0)
        if parsed is None:
            return None, None
        if not parsed.success or parsed.value is None:
            return None, parse_error(parsed.exception)
        self.manifests.put(key, parsed.value, files)
        if cached is not None:
            assert self._artifacts is not None and self._profiles_dir is not None
            self._artifacts.save_parse(
                cached,
                self._profiles_dir,
                *_parse_identity(full),
                self._target_dir(full),
                parsed.value,
            )
        return parsed.value, None

    # ------------------------------------------------------------------ artifact cache
    def _open_artifacts(self) -> None:
        """Open ``DBT_RUNNER_ARTIFACT_CACHE`` (a missing boto3 is a configuration error)."""
        location = self.settings.artifact_cache
        if location is None or self._artifacts is not None:
            return
        from ._artifacts import ArtifactCache, open_store

        self._artifacts = SessionArtifacts(
            ArtifactCache(open_store(location)), self.project_dir, self.state_dir
        )

    def _cached_parse(self, full: Sequence[str]) -> Any:
        """The artifact cache's lookup for the parse ``full`` would do (None: no cache)."""
        if self._artifacts is None:
            return None
        assert self._profiles_dir is not None
        return self._artifacts.lookup_parse(
            self._profiles_dir, *_parse_identity(full), self._target_dir(full)
        )

    def _before_command(self, invocation: Invocation, resume: str | None) -> str | None:
        """The artifact cache's part before a command: the previous results ``dbt retry``
        or ``resume`` start from, and the partial parse dbt's retry parses from. Returns
        the target's key (None: no cache)."""
        args = invocation.args
        if self._artifacts is None or not self._artifacts.keeps_results(args):
            return None
        target = self._artifact_target(args)
        if target is None:
            return None
        invocation.resume_from, repeated = self._artifacts.before_command(
            args, target, self._target_dir(args), resume=resume
        )
        if repeated:
            # dbt's retry parses by itself (the repeated command's target and vars): from
            # the cached partial parse, not from nothing
            full = self._effective_args(_parse_args(_manifest_key(repeated)), None)
            assert self._profiles_dir is not None
            self._artifacts.lookup_parse(
                self._profiles_dir, *_parse_identity(full), self._target_dir(full), decode=False
            )
        return target

    def _artifact_target(self, args: Sequence[str]) -> str | None:
        """The artifact cache's key for the warehouse target ``args`` run on (None: no
        cache, or a project dbt cannot load: dbt's own error follows)."""
        if self._artifacts is None:
            return None
        assert self._profiles_dir is not None
        inputs, _ = self._artifacts.inputs(
            self._profiles_dir, *_parse_identity(self._effective_args(args, None))
        )
        if inputs is None:
            return None
        remote: tuple[str, int] | None = None
        if self._own_target is not None:
            remote = (self._own_target.host, self._own_target.port)
        elif self.settings.ssh.enabled:
            wh = self.settings.warehouse
            assert wh.host is not None and wh.effective_port is not None
            remote = (wh.host, wh.effective_port)
        return self._artifacts.target_key(inputs, remote)

    def _effective_args(self, args: Sequence[str], threads: int | None) -> list[str]:
        """``args`` plus what the session must add: the caller's flags always win."""
        assert self._profiles_dir is not None
        defaults: list[tuple[str, str | None]] = [
            ("--project-dir", str(self.project_dir)),
            ("--profiles-dir", str(self._profiles_dir)),
        ]
        # a generated profile has exactly the target of the settings; a user's own
        # profiles.yml keeps its default target unless DBT_RUNNER_TARGET is set
        if self._own_target is not None:  # the one target the tunnel serves
            defaults.append(("--target", self._own_target.target))
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
        if not _dbt.given(args, "--log-level"):
            # our --log-level quiets dbt's console only: dbt would lower its file log to it
            defaults.append(("--log-level-file", _file_log_level()))
        return _dbt.with_defaults(args, defaults)

    def _import_dbt(self) -> None:
        """dbt's import, in the first command of the process, before anything of the
        command needs dbt (its flags, the artifact cache's lookups): the ``import`` phase
        of that command's result."""
        if _dbt.imported():
            return
        started_at, t0 = utc_now_iso(), time.monotonic()
        _dbt.import_dbt(self._adapter_type(), freeze=self.settings.gc_freeze)
        self._phases.append(Phase.until_now("import", started_at, t0))

    def _adapter_type(self) -> str | None:
        """The adapter dbt will load: the tunnelled profile target's, the generated
        profile's; None for a user's profile without a tunnel (dbt reads it later)."""
        if self._own_target is not None:
            return self._own_target.type
        if self._profile is not None:
            return self.settings.warehouse.type
        return None

    def _threads_used(self, full_args: Sequence[str]) -> int | None:
        """The threads dbt ran with: the command line's, else the profile's (as dbt read it)."""
        if not _dbt.accepts(full_args, "--threads"):
            return None
        value = _option_value(full_args, ("--threads",))
        if value is not None and value.isdigit():
            return int(value)
        return _dbt.adapter_threads(self.project_dir) or (
            self.settings.threads if self._profile else None
        )

    def _ensure_tunnel(self) -> None:
        """Before a command: the tunnel is open (re-opened if it died: the route follows its
        new local port), and a Redshift IAM login is fresh (:meth:`_ensure_login`)."""
        reopened = self._tunnel.ensure_open() if self._tunnel is not None else False
        if reopened:
            if self._pool is not None:  # the connections it carried went with the old tunnel
                self._pool.clear()
            if self._writer is not None:  # so did the writer lock's: check it before use
                self._writer.fresh = False
        self._ensure_login(reopened)


_T = TypeVar("_T")


class _TunnelRetry(Exception):
    """Carries a transient TunnelError (or CredentialsError) through tenacity."""

    def __init__(self, error: TunnelError | CredentialsError) -> None:
        super().__init__(str(error))
        self.error = error


# ---------------------------------------------------------------------- helpers
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


def _file_log_level() -> str:
    """The level of dbt's ``logs/dbt.log`` in plain dbt without ``--log-level``: the
    environment's file (else general) level, else dbt's default ``debug``."""
    for name in (
        "DBT_ENGINE_LOG_LEVEL_FILE",
        "DBT_LOG_LEVEL_FILE",
        "DBT_ENGINE_LOG_LEVEL",
        "DBT_LOG_LEVEL",
    ):
        value = os.environ.get(name)
        if value:
            return value
    return "debug"


def _selected_something(result: RunResult, select: str, setting: str | None) -> RunResult:
    """A building block's result; an empty selection is a failure, not ``OK (0 nodes)``.

    ``setting``: the setting the selection came from (None: the caller gave it). Plain
    ``invoke()`` keeps dbt's own semantics (dbt says "Nothing to do" and succeeds).
    """
    if not result.success or result.nodes:
        return result
    message = f"the selection {select!r} matched no node of this project"
    if setting is not None:  # the caller gave none: name the setting it came from
        message = (
            f"the selection {select!r} of {setting} matched no node of this project: set "
            f"{setting} (or give a selection) to the models/tests of your project"
        )
    return replace(result, success=False, error=ErrorInfo(ErrorKind.CONFIGURATION, message))


def _manifest_key(args: Sequence[str]) -> tuple[str, str]:
    """What a parsed manifest depends on besides the files: ``(--target, --vars)``."""
    return (_option_value(args, _TARGET_FLAGS) or "", _option_value(args, ("--vars",)) or "")


def _parse_args(key: tuple[str, str]) -> list[str]:
    """The ``dbt parse`` of a manifest key ``(--target, --vars)``."""
    args = ["parse"]
    if key[0]:
        args += ["--target", key[0]]
    if key[1]:
        args += ["--vars", key[1]]
    return args


def _parse_identity(args: Sequence[str]) -> tuple[str | None, str | None, str | None]:
    """``(--profile, --target, --vars)`` of a command line: what a parse depends on
    besides the files."""
    return (
        _option_value(args, ("--profile",)),
        _option_value(args, _TARGET_FLAGS) or _short_target(args),
        _option_value(args, ("--vars",)),
    )


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


def _with_vars(args: list[str], settings_vars: dict[str, Any]) -> list[str]:
    """``args`` with the settings' dbt vars merged under the caller's own ``--vars``.

    dbt semantics: what the caller passes wins, key by key; the settings only
    add what is missing, and only to commands that accept ``--vars``. A
    ``--vars`` value that is not a YAML mapping is left for dbt to reject.
    """
    if not settings_vars or not _dbt.accepts(args, "--vars"):
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
