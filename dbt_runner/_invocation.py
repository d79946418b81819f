"""One invocation of a :class:`~dbt_runner.DbtSession`: attempts → an outcome → a RunResult.

:class:`Invocation` is created by ``DbtSession.invoke`` for one dbt command and
lives as long as it: its attempts (the command, then dbt's own ``retry`` of
what failed, under the session's retry policy), each attempt's watchdog, and
its cancel state.

**dbt runs in a thread of its own** (``dbt_runner-dbt``); the calling thread
waits for it. That wait is where an orchestrator's control arrives: a
``KeyboardInterrupt``, a ``SystemExit`` or an orchestrator's termination
exception raised by a signal handler in the calling thread. Every way of
stopping takes the **one cancel path**, :meth:`Invocation.cancel`:

1. the invocation is marked cancelled (kind ``cancelled``, or ``timeout`` from
   the watchdog) and dbt is told to hand out no further node
   (:class:`~dbt_runner._dbt.Cancellation`);
2. a canceller thread runs dbt's own server-side cancel
   (:func:`~dbt_runner._dbt.cancel_on_server`), through the tunnel while it is
   still open; the running statements end and dbt leaves through its own
   Ctrl-C path, writing what ended;
3. the waiting thread gives dbt ``CANCEL_GRACE_S`` to stop; if it has not (a
   stalled network), it closes the tunnel, which cuts every forwarded
   connection, and waits once more, bounded by the connect timeout;
4. the connections dbt still holds are closed, and the outcome tells the
   truth: nodes that ended are reported as they ended, interrupted ones carry
   the cancel's kind, the rest are ``skipped``.

A foreign ``BaseException`` (anything that is not an ``Exception``) caught in
the wait triggers the same path and is re-raised unchanged by
:meth:`DbtSession.invoke` once the session's state is clean: it is never
turned into a result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _dbt, _signals
from ._classify import classify_message, diagnose, text_of
from ._events import RelaySnapshot
from ._exceptions import CredentialsError, ErrorKind, TunnelError
from ._results import (
    ERROR_STATUSES,
    TEST_TYPES,
    Attempt,
    ErrorInfo,
    NodeResult,
    Phase,
    RunResult,
    node_from_entry,
    parse_time,
    utc_now_iso,
)
from ._retry import TransientFailure, build_retrying, is_retryable
from ._watchdog import Watchdog

if TYPE_CHECKING:
    from ._session import DbtSession

__all__ = ["CANCEL_GRACE_S", "Invocation", "Outcome"]

log = logging.getLogger("dbt_runner.session")

#: commands dbt's own ``retry`` can re-run (what failed, with the original selection)
_DBT_RETRY_COMMANDS = frozenset(
    {"run", "test", "build", "seed", "snapshot", "compile", "clone", "run-operation"}
)
#: commands that need no parsed manifest first (``retry`` parses itself)
NO_PREPARSE = frozenset({"deps", "debug", "clean", "init", "parse", "retry"})
_RUN_RESULTS = "run_results.json"
#: how long dbt gets to stop after a cancel before the tunnel is closed under it
CANCEL_GRACE_S = 3.0


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: its nodes, its error (None: success) and its output."""

    nodes: tuple[NodeResult, ...]
    error: ErrorInfo | None
    output: Any = None
    invocation_id: str | None = None


class _DbtCall:
    """``fn`` running in the ``dbt_runner-dbt`` thread; ``done`` is set when it returns."""

    def __init__(self, fn: Callable[[], _dbt.DbtReturn], wake: threading.Event) -> None:
        self._fn = fn
        self._wake = wake
        self.done = threading.Event()
        self.value: _dbt.DbtReturn | None = None
        self.error: BaseException | None = None
        self._after: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="dbt_runner-dbt", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self.value = self._fn()
        except BaseException as exc:  # dbtRunner catches everything; a fake or our code may not
            self.error = exc
        finally:
            with self._lock:
                self.done.set()
                after, self._after = self._after, []
            self._wake.set()
            for callback in after:
                callback()

    def after(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the call has ended (now, if it has)."""
        with self._lock:
            if not self.done.is_set():
                self._after.append(callback)
                return
        callback()

    def result(self) -> _dbt.DbtReturn:
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


class Invocation:
    """One ``invoke()``: its attempts, its cancel state, its result (see the module doc)."""

    def __init__(
        self,
        session: DbtSession,
        args: list[str],
        threads: int | None,
        timeout_s: float | None,
    ) -> None:
        self._session = session
        self.args = args
        self.threads = threads
        self.timeout_s = timeout_s
        # re-entrant: cancel() may run in a signal handler of the thread that holds it
        self._lock = threading.RLock()
        self._cancel: tuple[ErrorKind, str] | None = None
        self._cancellation: _dbt.Cancellation | None = None
        self._wake = threading.Event()  # set when a dbt call ends or a cancel arrives
        self._canceller: threading.Thread | None = None
        self._running: _DbtCall | None = None
        #: the caller's BaseException that stopped this invocation, re-raised by invoke()
        self.interrupted: BaseException | None = None
        self._output: Any = None
        self._phases: list[Phase] = []  # this invocation's parse/connect phases
        self._attempt_number: int | None = None  # the attempt running now
        #: the current attempt's deprecation counts (its parse and its command)
        self._deprecations = _dbt.CommandDeprecations()
        #: a previous run's run_results.json: the first attempt is dbt's ``retry`` of it
        #: (``invoke(resume=True)``, from the artifact cache)
        self.resume_from: bytes | None = None
        #: run_results.json of the latest attempt in which nodes ran (after :meth:`run`)
        self.last_results: bytes | None = None

    # ------------------------------------------------------------------ the cancel path
    @property
    def cancel_kind(self) -> ErrorKind | None:
        """``cancelled`` or ``timeout`` once a cancel was requested, else None."""
        return self._cancel[0] if self._cancel else None

    def cancel(self, kind: ErrorKind = ErrorKind.CANCELLED, why: str = "cancelled") -> bool:
        """Stop this invocation (any thread, a signal handler too); True the first time.

        Returns at once: the server-side cancel runs in a thread of its own, and the
        thread waiting in :meth:`run` escalates if dbt does not stop.
        """
        with self._lock:
            if self._cancel is not None:
                return False
            self._cancel = (kind, why)
            cancellation = self._cancellation
        log.warning("cancelling dbt %s: %s", self.args[0], why)
        if cancellation is not None:
            self._cancel_running(cancellation, why)
        self._wake.set()
        return True

    def _cancel_running(self, cancellation: _dbt.Cancellation, why: str) -> None:
        if not cancellation.request(why):
            return
        pool = self._session._pool

        def cancel_on_server() -> None:
            if pool is not None:  # idle kept connections close now; none is reused
                pool.suspend()
            _dbt.cancel_on_server(skip=set(cancellation.committed))

        canceller = threading.Thread(target=cancel_on_server, name="dbt_runner-cancel", daemon=True)
        self._canceller = canceller
        canceller.start()

    def _call(self, fn: Callable[[], _dbt.DbtReturn]) -> _dbt.DbtReturn | None:
        """Run ``fn`` (one dbt call) in the dbt thread and wait; None when cancelled first.

        A BaseException in the wait (a signal's) cancels, is kept in
        :attr:`interrupted` and ends the wait once dbt stopped (or was given up on).
        """
        if self._cancel is not None:
            return None
        wake = self._wake
        call = _DbtCall(fn, wake)
        self._running = call
        try:
            try:
                call.start()  # inside: an interrupt that arrives from now on cancels it
                while not call.done.is_set() and self._cancel is None:
                    _signals.wait(wake)
                    if not call.done.is_set() and self._cancel is None:
                        wake.clear()  # a spurious wake-up; re-check before sleeping again
            except BaseException as exc:  # the caller's interrupt: a signal handler raised
                self.interrupted = exc
                self.cancel(ErrorKind.CANCELLED, f"interrupted ({type(exc).__name__})")
            if call.thread.ident is None:  # interrupted before dbt started
                return None
            if not call.done.is_set():
                self._escalate(call)
            if not call.done.is_set():
                return None
            return call.result()
        finally:
            started = call.thread.ident is not None
            self._running = None if call.done.is_set() or not started else call
            self._join_canceller()

    def _escalate(self, call: _DbtCall) -> None:
        """dbt was cancelled and has not stopped: grace, then cut the tunnel, then give up."""
        if _signals.wait(call.done, CANCEL_GRACE_S):
            return
        tunnel = self._session.tunnel
        if tunnel is not None:
            log.warning(
                "dbt has not stopped %gs after the cancel: closing the tunnel under it",
                CANCEL_GRACE_S,
            )
            tunnel.close()
            wait = self._session.settings.warehouse.connect_timeout_s + CANCEL_GRACE_S
            if _signals.wait(call.done, wait):
                return
        log.error(
            "dbt did not stop after the cancel; it goes on in the background and this "
            "process runs no other dbt command until it has ended"
        )

    def _join_canceller(self) -> None:
        canceller = self._canceller
        if canceller is not None:
            wait = self._session.settings.warehouse.connect_timeout_s + CANCEL_GRACE_S
            _signals.join(canceller, wait)

    def after_dbt(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once no dbt call of this invocation is running (now if none)."""
        running = self._running
        if running is None:
            callback()
        else:
            running.after(callback)

    # ------------------------------------------------------------------ attempts
    def run(self) -> RunResult:
        """The attempts of the invocation: the command, then dbt's own ``retry`` of it.

        A retry re-runs exactly what failed with dbt's ``retry`` command on the previous
        attempt's ``run_results.json`` (it keeps the selection, selectors, excludes and
        state of the original). Only when no node has run yet (the warehouse refused the
        first connection) is the whole original command run again. A cancelled or
        interrupted attempt is never retried.
        """
        lineage = self._session._lineage
        if lineage is None:
            return self._run()
        lineage.start(self.args[0])
        try:
            result = self._run()
        except BaseException as exc:
            lineage.end(None, f"{type(exc).__name__}: {exc}")
            raise
        lineage.end(result)
        return result

    def _run(self) -> RunResult:
        session = self._session
        command = self.args[0]
        policy = session.settings.retry
        started_at = utc_now_iso()
        t0 = time.monotonic()
        earlier = session._take_phases()  # open, import, writer lock: those not told yet
        attempts: list[Attempt] = []
        degraded: int | None = None
        # run_results.json of the latest attempt in which nodes ran
        ran: bytes | None = self.resume_from
        target_dir = session._target_dir(self.args)
        try:
            for retry_state in build_retrying(policy, sleep=self._sleep):
                with retry_state:
                    if ran is not None and command in _DBT_RETRY_COMMANDS:
                        # dbt's retry reads the previous results from the target path
                        (target_dir / _RUN_RESULTS).write_bytes(ran)
                        attempt_args = ["retry", "--target-path", str(target_dir)]
                        attempt_threads = degraded or (
                            attempts[-1].threads if attempts else self.threads
                        )
                    elif degraded is not None:
                        attempt_args, attempt_threads = _set_threads(self.args, degraded), degraded
                    else:
                        attempt_args, attempt_threads = self.args, self.threads
                    attempt = self._attempt(len(attempts) + 1, attempt_args, attempt_threads)
                    attempts.append(attempt)
                    if attempt.nodes:
                        ran = _fresh_bytes(target_dir / _RUN_RESULTS, attempt.elapsed_s) or ran
                    if attempt.success or attempt.error is None or self._cancel is not None:
                        break
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
        self.last_results = ran
        return RunResult.merge(
            command,
            attempts,
            started_at=started_at,
            elapsed_s=time.monotonic() - t0,
            degraded_threads=degraded,
            output=self._output,
            phases=[*earlier, *self._phases],
        )

    def record_phase(self, name: str, started_at: str, t0: float) -> None:
        """A :class:`Phase` of the running attempt, from ``started_at`` (``t0``: its
        monotonic time) until now."""
        self._phases.append(Phase.until_now(name, started_at, t0, self._attempt_number))

    def _time_out(self) -> None:
        self.cancel(
            ErrorKind.TIMEOUT, f"timed out after {self.timeout_s:g}s (DBT_RUNNER_TIMEOUT_S)"
        )

    def _sleep(self, seconds: float) -> None:
        """The back-off between attempts; a cancel ends it at once."""
        _signals.wait(self._wake, seconds)

    def _attempt(self, number: int, args: list[str], threads: int | None) -> Attempt:
        started_at = utc_now_iso()
        t0 = time.monotonic()
        session = self._session
        self._attempt_number = number
        full_args = session._effective_args(args, threads)
        with self._lock:
            self._cancellation = _dbt.Cancellation()
            if self._cancel is not None:  # cancelled before this attempt began
                self._cancellation.request(self._cancel[1])
        watchdog = Watchdog(self.timeout_s, self._time_out)
        session._relay.begin()
        # the attempt's parse and command count dbt's deprecations as one command
        self._deprecations = _dbt.CommandDeprecations()
        with watchdog:
            outcome = self._run_attempt(number, args, full_args, t0)
        self._output = outcome.output
        return Attempt(
            number=number,
            args=tuple(full_args),
            threads=session._threads_used(full_args),
            started_at=started_at,
            elapsed_s=round(time.monotonic() - t0, 3),
            success=outcome.error is None,
            nodes=outcome.nodes,
            error=outcome.error,
            invocation_id=outcome.invocation_id,
        )

    def _run_attempt(
        self, number: int, args: list[str], full_args: list[str], t0: float
    ) -> Outcome:
        """Tunnel check, parse (once per target and vars), then dbt."""
        session = self._session
        try:
            session._ensure_tunnel()  # and a fresh Redshift IAM login
        except (TunnelError, CredentialsError) as exc:
            return Outcome((), ErrorInfo(exc.kind, str(exc)))
        lost = session._ensure_writer_lock()
        if lost is not None:  # a retry may not write without the lock
            return Outcome((), lost)
        manifest = None
        if args[0] not in NO_PREPARSE:
            manifest, error = session._manifest_for(args, self)
            if error is not None:
                return Outcome((), error)
            if session._lineage is not None:
                session._lineage.use_manifest(manifest)
        cancellation = self._cancellation
        assert cancellation is not None
        # what a fresh dbt process would start from: no connection an earlier invocation
        # left behind, the manifest as parse left it (dbt compiles nodes in place), empty
        # relation caches; kept connections are reset before each reuse (_dbt.reuse)
        _dbt.drop_connections()
        _dbt.reset_compile_state(manifest)
        _dbt.clear_relation_caches()
        pool = session._pool
        if pool is not None:
            pool.resume()
        macro_return = None

        def run() -> _dbt.DbtReturn:
            nonlocal macro_return
            with (
                _dbt.active(cancellation),
                _dbt.pooled(pool),
                _dbt.capture_macro_return() as macro_return,
            ):
                return _dbt.invoke(
                    full_args, manifest, session._relay, deprecations=self._deprecations
                )

        dbt_started, dbt_t0 = utc_now_iso(), time.monotonic()
        res = self._call(run)
        self.after_dbt(_dbt.drop_connections)  # the cancelled ones too: no backend is left
        if pool is not None:  # the command's kept connections close (after a cancel: now)
            self.after_dbt(lambda: pool.suspend() if self._cancel is not None else pool.park())
        if res is None:  # cancelled before dbt started, or dbt never stopped
            return self._cancelled_outcome(number, (), manifest)
        nodes = self._nodes(res, t0, manifest, number, session._target_dir(args))
        self._record_connect(dbt_started, dbt_t0, nodes, failed=not res.success)
        output = _dbt.command_output(
            full_args, res.value, target_dir=session._target_dir(args), macro_return=macro_return
        )
        invocation_id = _dbt.invocation_id()
        foreign = res.exception
        if foreign is not None and not isinstance(foreign, Exception | _dbt.Stop):
            # a foreign BaseException raised inside dbt's thread: the caller gets it back
            if self.interrupted is None:
                self.interrupted = foreign
            self.cancel(ErrorKind.CANCELLED, f"interrupted ({type(foreign).__name__})")
        if self._cancel is not None:
            return replace(
                self._cancelled_outcome(number, nodes, manifest),
                output=output,
                invocation_id=invocation_id,
            )
        nodes, error = _outcome(res, nodes, session.settings.retry)
        return Outcome(nodes, error, output, invocation_id)

    def _record_connect(
        self, started_at: str, t0: float, nodes: Sequence[NodeResult], *, failed: bool
    ) -> None:
        """The ``connect`` phase: dbt's start, from the call to its first node (to its end
        when no node ran and it failed; a command without nodes that succeeded, ``ls`` or
        ``deps``, is all dbt's own work, no phase)."""
        starts = [t for t in (parse_time(n.started_at) for n in nodes) if t is not None]
        began = parse_time(started_at)
        if starts and began is not None:
            elapsed = round(max((min(starts) - began).total_seconds(), 0.0), 3)
            self._phases.append(Phase("connect", started_at, elapsed, self._attempt_number))
        elif not nodes and failed:
            self.record_phase("connect", started_at, t0)

    def _nodes(
        self, res: _dbt.DbtReturn, t0: float, manifest: Any, number: int, target_dir: Path
    ) -> tuple[NodeResult, ...]:
        """Per-node results: from dbt's return value, else from a fresh run_results.json."""
        raw = _dbt.entries(res.value, base_dir=self._session.project_dir)
        if not raw:
            raw = _dbt.read_run_results(target_dir / _RUN_RESULTS, time.monotonic() - t0)
        names = _dbt.node_names(manifest)
        invocation_id = _dbt.invocation_id()
        return tuple(
            node_from_entry(entry, number, names=names, invocation_id=invocation_id)
            for entry in raw
        )

    def _dbt_parse(self, args: list[str]) -> _dbt.DbtReturn | None:
        """``dbt parse`` in the dbt thread (None when cancelled)."""
        return self._call(
            lambda: _dbt.invoke(
                args, None, self._session._relay, deprecations=self._deprecations, parse=True
            )
        )

    def _cancelled_outcome(
        self, number: int, nodes: tuple[NodeResult, ...], manifest: Any
    ) -> Outcome:
        """The truth after a cancel: what ended as it ended, the interrupted as the cancel's
        kind, the selected nodes that never started as skipped."""
        assert self._cancel is not None
        kind, why = self._cancel
        cancellation = self._cancellation
        if kind is ErrorKind.TIMEOUT:
            message = (
                f"invocation timed out after {self.timeout_s:g}s (dbt_runner watchdog, "
                "DBT_RUNNER_TIMEOUT_S); its statements were cancelled on the server"
            )
        else:
            message = f"{why}: the running statements were cancelled on the server"
        nodes = interrupted_nodes(
            nodes,
            self._session._relay.snapshot(),
            cancellation.selected if cancellation is not None else [],
            cancellation.requested_at if cancellation is not None else None,
            kind,
            number,
            names=_dbt.node_names(manifest),
        )
        return Outcome(nodes, ErrorInfo(kind, message))


# ---------------------------------------------------------------------- outcomes
def _outcome(
    res: _dbt.DbtReturn, nodes: tuple[NodeResult, ...], retry: Any
) -> tuple[tuple[NodeResult, ...], ErrorInfo | None]:
    """dbt's three outcomes (success, exception, failed nodes) as nodes + error."""
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
    if not res.success and isinstance(res.value, bool):
        # dbt debug: no nodes, no exception, just "a check failed" (dbt printed which)
        message = "dbt debug: a check failed (profile, project, dependencies or connection)"
        return nodes, ErrorInfo(ErrorKind.CONFIGURATION, message)
    if not res.success:
        errors = [n.error for n in nodes if n.error is not None]
        fallback = ErrorInfo(ErrorKind.MODEL_FAILURE, "dbt reported failure")
        return nodes, (transient or errors or [fallback])[0]
    return nodes, None


def interrupted_nodes(
    nodes: Sequence[NodeResult],
    seen: RelaySnapshot,
    selected: Sequence[tuple[str, str, str]],
    cancelled_at: float | None,
    kind: ErrorKind,
    attempt: int,
    *,
    names: dict[str, str] | None = None,
) -> tuple[NodeResult, ...]:
    """Every node of an interrupted attempt, each as it ended.

    ``nodes``: what dbt reported; ``seen``: the node events of the attempt (nodes
    that ended after dbt wrote its results are only there); ``selected``: the
    nodes dbt was to run. A failed node that ended before the cancel keeps its
    own error; one that ended after it, or never ended, carries ``kind``; a
    selected node that never started is ``skipped`` with ``kind``.
    """
    by_id: dict[str, NodeResult] = {n.unique_id: n for n in nodes}
    for uid, finish in seen.finished.items():
        if uid not in by_id:
            by_id[uid] = _node_from_event(finish, seen, attempt)
    for uid, start in seen.started.items():
        if uid not in by_id:
            by_id[uid] = NodeResult(
                unique_id=uid,
                name=start.node.name,
                resource_type=start.node.resource_type,
                status="error",
                started_at=start.timestamp,
                completed_at=None,
                elapsed_s=0.0,
                thread=start.thread,
                rows_affected=None,
                message="interrupted: still running when the invocation stopped",
                attempt=attempt,
            )
    for uid, name, resource_type in selected:
        if uid not in by_id:
            by_id[uid] = NodeResult(
                unique_id=uid,
                name=(names or {}).get(uid, name),
                resource_type=resource_type,
                status="skipped",
                started_at=None,
                completed_at=None,
                elapsed_s=0.0,
                thread=None,
                rows_affected=None,
                message="not started: the invocation was cancelled",
                attempt=attempt,
            )
    out = []
    for node in by_id.values():
        ended = seen.finished.get(node.unique_id)
        ended_before = (
            ended is not None and cancelled_at is not None and ended.monotonic < cancelled_at
        )
        if node.failed and not ended_before:
            out.append(replace(node, error=ErrorInfo(kind, node.message or kind.value)))
        else:
            out.append(_with_error(node, _node_kind(node)))
    return tuple(out)


def _node_from_event(finish: Any, seen: RelaySnapshot, attempt: int) -> NodeResult:
    event = finish.event
    node = event.node
    start = seen.started.get(node.unique_id)
    rows = finish.rows if node.resource_type not in TEST_TYPES else None
    return NodeResult(
        unique_id=node.unique_id,
        name=node.name,
        resource_type=node.resource_type,
        status=event.status or "error",
        started_at=start.timestamp if start is not None else None,
        completed_at=finish.timestamp,
        elapsed_s=round(event.execution_time or 0.0, 3),
        thread=finish.thread,
        rows_affected=rows,
        message=event.message,
        attempt=attempt,
    )


def _message(exc: BaseException) -> str:
    text = text_of(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def parse_error(cause: BaseException | None) -> ErrorInfo:
    """Why a project did not parse (a compile error unless the evidence says otherwise)."""
    if cause is None:
        return ErrorInfo(ErrorKind.COMPILATION, "dbt could not parse the project")
    verdict = diagnose(cause, default=ErrorKind.COMPILATION)
    text = _message(cause)
    if verdict.hint:
        text = f"{text}\nfix: {verdict.hint}"
    return ErrorInfo(verdict.kind, text)


def _node_kind(node: NodeResult) -> ErrorKind:
    """The kind of a node's own failure: a failed test is a test failure, a source past its
    freshness ``error_after`` is stale (dbt's ERROR STALE), else its message decides."""
    if node.resource_type == "source" and node.status == "error":
        return ErrorKind.STALE_SOURCE  # a freshness query that failed is a "runtime error"
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
    if node.status not in statuses or node.error is not None:
        return node
    return replace(node, error=ErrorInfo(kind, node.message or default_message))


def _set_threads(args: Sequence[str], threads: int) -> list[str]:
    """``args`` with its ``--threads`` replaced by ``threads``."""
    return [*without_threads(args), "--threads", str(threads)]


def without_threads(args: Sequence[str]) -> list[str]:
    """``args`` without its ``--threads`` (``--threads N`` or ``--threads=N``)."""
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
    return out


def _fresh_bytes(path: Path, age_s: float) -> bytes | None:
    """The file's bytes when it was written within the last ``age_s`` seconds."""
    try:
        if path.stat().st_mtime < time.time() - age_s - 1.0:
            return None
        return path.read_bytes()
    except OSError:
        return None
