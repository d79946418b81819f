"""Results of one invocation as plain, JSON-able data.

dbt's ``dbtRunnerResult`` has three outcomes that must stay apart:

* ``success=True``: every node ran and passed;
* ``exception`` set: dbt could not run (compile error, no connection, ...);
* ``result`` set but ``success=False``: dbt ran, some nodes failed.

:func:`build_attempt` turns one of those into an :class:`Attempt`;
:class:`RunResult` merges the attempts of an invocation (retries re-run only
what failed) into the final picture.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._exceptions import DbtInvocationError, DbtRunFailed, DbtTestsFailed, ErrorKind

__all__ = ["Attempt", "ErrorInfo", "NodeResult", "Phase", "RunResult"]

#: node statuses that mean "this node did not do its job"
FAILED_STATUSES = frozenset({"error", "fail", "runtime error", "skipped", "partial success"})
#: failed statuses that carry an error of their own (a skip only follows one)
ERROR_STATUSES = FAILED_STATUSES - {"skipped"}
TEST_TYPES = frozenset({"test", "unit_test"})


@dataclass(frozen=True)
class ErrorInfo:
    """Why something failed: a classified ``kind`` and dbt's own message."""

    kind: ErrorKind
    message: str

    def to_dict(self) -> dict[str, str]:
        """Plain JSON form."""
        return {"kind": self.kind.value, "message": self.message}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorInfo:
        """The inverse of :meth:`to_dict`."""
        return cls(kind=ErrorKind(data["kind"]), message=str(data["message"]))


@dataclass(frozen=True)
class NodeResult:
    """What happened to one dbt node (model, test, seed, ...) in one attempt.

    ``error`` is set for failed nodes (``status`` error/fail/skipped) and
    classifies the node's message.

    ``rows_affected`` counts rows a model, seed or snapshot wrote (None for tests:
    their count is ``failures``, the number of failing rows). ``relation_name`` is
    the warehouse relation (as in the manifest), ``adapter_response`` dbt's
    adapter response as JSON, ``invocation_id`` the dbt invocation that ran the
    node, ``compiled_path`` the absolute path of its compiled SQL under the
    target path (None when dbt compiled nothing, e.g. seeds).
    """

    unique_id: str
    name: str
    resource_type: str
    status: str
    started_at: str | None
    completed_at: str | None
    elapsed_s: float
    thread: str | None
    rows_affected: int | None
    message: str | None
    attempt: int = 1
    error: ErrorInfo | None = None
    failures: int | None = None
    relation_name: str | None = None
    adapter_response: dict[str, Any] = field(default_factory=dict, hash=False)
    invocation_id: str | None = None
    compiled_path: str | None = None

    @property
    def failed(self) -> bool:
        """True when the node errored, failed, or was skipped."""
        return self.status in FAILED_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        data = asdict(self)
        data["error"] = self.error.to_dict() if self.error else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeResult:
        """The inverse of :meth:`to_dict` (unknown keys are ignored, missing ones default)."""
        error = data.get("error")
        rows = data.get("rows_affected")
        failures = data.get("failures")
        return cls(
            unique_id=str(data["unique_id"]),
            name=str(data["name"]),
            resource_type=str(data["resource_type"]),
            status=str(data["status"]),
            started_at=data.get("started_at"),
            completed_at=data.get("completed_at"),
            elapsed_s=float(data.get("elapsed_s") or 0.0),
            thread=data.get("thread"),
            rows_affected=None if rows is None else int(rows),
            message=data.get("message"),
            attempt=int(data.get("attempt") or 1),
            error=ErrorInfo.from_dict(error) if error else None,
            failures=None if failures is None else int(failures),
            relation_name=data.get("relation_name"),
            adapter_response=dict(data.get("adapter_response") or {}),
            invocation_id=data.get("invocation_id"),
            compiled_path=data.get("compiled_path"),
        )


@dataclass(frozen=True)
class Phase:
    """A stretch of a command's time that is not a node: what the time before the first
    node went to.

    ``name`` is one of

    * ``open``: the session opening (profile, SSH tunnel, ``dbt deps`` when due); on the
      first result of a session only;
    * ``lock``: waiting for and taking the target's writer lock (writers only);
    * ``import``: Python importing dbt (the first command of a process only);
    * ``parse``: dbt parsing the project (only when it did: a reused manifest is no parse);
    * ``connect``: dbt's own start, from the call until its first node starts (adapter,
      connections, relation cache, ``on-run-start`` hooks) — until dbt returned when no
      node ran.

    ``attempt`` is the attempt it belongs to (None: before the first one). Times are
    measured, never estimated: ``started_at`` is ISO 8601 UTC, ``elapsed_s`` to the ms.

    >>> Phase("parse", "2026-01-01T00:00:00.250+00:00", 1.5, attempt=1).to_dict()["name"]
    'parse'
    """

    name: str
    started_at: str
    elapsed_s: float
    attempt: int | None = None

    @classmethod
    def until_now(cls, name: str, started_at: str, t0: float, attempt: int | None = None) -> Phase:
        """The phase ``name`` from ``started_at`` (``t0``: its monotonic time) until now."""
        return cls(name, started_at, round(time.monotonic() - t0, 3), attempt)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Phase:
        """The inverse of :meth:`to_dict`."""
        attempt = data.get("attempt")
        return cls(
            name=str(data["name"]),
            started_at=str(data["started_at"]),
            elapsed_s=float(data.get("elapsed_s") or 0.0),
            attempt=None if attempt is None else int(attempt),
        )


@dataclass(frozen=True)
class Attempt:
    """One try of an invocation (the first, or a retry of what failed)."""

    number: int
    args: tuple[str, ...]
    threads: int | None
    started_at: str
    elapsed_s: float
    success: bool
    nodes: tuple[NodeResult, ...]
    error: ErrorInfo | None = None
    #: dbt's invocation id of this try (None when dbt did not start)
    invocation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "number": self.number,
            "invocation_id": self.invocation_id,
            "args": list(self.args),
            "threads": self.threads,
            "started_at": self.started_at,
            "elapsed_s": self.elapsed_s,
            "success": self.success,
            "nodes": [n.unique_id for n in self.nodes],
            "error": self.error.to_dict() if self.error else None,
        }


@dataclass(frozen=True)
class RunResult:
    """The outcome of one invocation (all its attempts merged).

    >>> r = RunResult(command="run", success=True, started_at="2026-01-01T00:00:00+00:00",
    ...               elapsed_s=1.5, threads=3, attempts=1, nodes=())
    >>> r.raise_for_status() is r
    True
    >>> r.to_dict()["command"]
    'run'
    """

    command: str
    success: bool
    started_at: str
    elapsed_s: float
    threads: int | None
    attempts: int
    nodes: tuple[NodeResult, ...]
    error: ErrorInfo | None = None
    attempt_log: tuple[Attempt, ...] = field(default=(), repr=False)
    degraded_threads: int | None = None
    #: the command's own value (ls lines, show rows, compiled SQL, ...): see :mod:`._outputs`
    output: Any = field(default=None, hash=False, repr=False)
    #: dbt's invocation id of the last attempt
    invocation_id: str | None = None
    #: where the time that is not a node's went, in order (:class:`Phase`)
    phases: tuple[Phase, ...] = ()

    @property
    def failed_nodes(self) -> tuple[NodeResult, ...]:
        """Nodes that errored, failed or were skipped (in their final attempt)."""
        return tuple(n for n in self.nodes if n.failed)

    @property
    def exit_code(self) -> int:
        """0 when successful, else the exit code of the error's kind (1, 2 or 3).

        >>> RunResult(command="run", success=True, started_at="", elapsed_s=0.0,
        ...           threads=1, attempts=1, nodes=()).exit_code
        0
        """
        if self.success:
            return 0
        kind = self.error.kind if self.error else ErrorKind.MODEL_FAILURE
        return kind.exit_code

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (safe for an Airflow XCom)."""
        return {
            "command": self.command,
            "success": self.success,
            "started_at": self.started_at,
            "elapsed_s": self.elapsed_s,
            "threads": self.threads,
            "attempts": self.attempts,
            "degraded_threads": self.degraded_threads,
            "nodes": [n.to_dict() for n in self.nodes],
            "error": self.error.to_dict() if self.error else None,
            "attempt_log": [a.to_dict() for a in self.attempt_log],
            # results that a later attempt replaced (retried nodes): keeps the timeline whole
            "superseded_nodes": [n.to_dict() for n in self.superseded_nodes],
            "invocation_id": self.invocation_id,
            "output": self.output,
            "phases": [p.to_dict() for p in self.phases],
        }

    @property
    def superseded_nodes(self) -> tuple[NodeResult, ...]:
        """Node results of earlier attempts that a retry replaced (oldest first)."""
        final = {(n.unique_id, n.attempt) for n in self.nodes}
        return tuple(
            n for a in self.attempt_log for n in a.nodes if (n.unique_id, n.attempt) not in final
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """Load what :meth:`to_dict` (or ``dbt-runner ... --json``) produced.

        >>> r = RunResult(command="run", success=True, started_at="2026-01-01T00:00:00+00:00",
        ...               elapsed_s=1.5, threads=3, attempts=1, nodes=())
        >>> RunResult.from_dict(r.to_dict()) == r
        True
        """
        nodes = tuple(NodeResult.from_dict(n) for n in data.get("nodes") or ())
        earlier = [NodeResult.from_dict(n) for n in data.get("superseded_nodes") or ()]
        by_try = {(n.unique_id, n.attempt): n for n in (*earlier, *nodes)}
        attempt_log = tuple(
            Attempt(
                number=int(a["number"]),
                args=tuple(a.get("args") or ()),
                threads=a.get("threads"),
                started_at=str(a["started_at"]),
                elapsed_s=float(a.get("elapsed_s") or 0.0),
                success=bool(a["success"]),
                nodes=tuple(
                    by_try[(uid, int(a["number"]))]
                    for uid in a.get("nodes") or ()
                    if (uid, int(a["number"])) in by_try
                ),
                error=ErrorInfo.from_dict(a["error"]) if a.get("error") else None,
                invocation_id=a.get("invocation_id"),
            )
            for a in data.get("attempt_log") or ()
        )
        error = data.get("error")
        return cls(
            command=str(data["command"]),
            success=bool(data["success"]),
            started_at=str(data["started_at"]),
            elapsed_s=float(data["elapsed_s"]),
            threads=data.get("threads"),
            attempts=int(data.get("attempts") or len(attempt_log) or 1),
            nodes=nodes,
            error=ErrorInfo.from_dict(error) if error else None,
            attempt_log=attempt_log,
            degraded_threads=data.get("degraded_threads"),
            output=data.get("output"),
            invocation_id=data.get("invocation_id"),
            phases=tuple(Phase.from_dict(p) for p in data.get("phases") or ()),
        )

    def to_timeline(
        self, *, title: str | None = None, also: Mapping[str, RunResult] | None = None
    ) -> Any:
        """A Gantt chart of this result's nodes per thread over time (a plotly ``Figure``).

        Needs ``pip install 'dbt-runner[timeline]'``. In a notebook the figure shows
        inline; retried attempts are hatched and each attempt's start is marked.
        ``also``: later results drawn on the same axis (``{"tests": tests}``).

        >>> staging.to_timeline()                          # doctest: +SKIP
        >>> staging.to_timeline(also={"tests": tests})     # doctest: +SKIP
        """
        from ._timeline import timeline_figure

        if not also:
            return timeline_figure(self, title=title)
        return timeline_figure({self.command: self, **also}, title=title)

    def timeline_html(self, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
        """Write :meth:`to_timeline` as a self-contained HTML file (opens offline).

        >>> staging.timeline_html("timeline.html")    # doctest: +SKIP
        PosixPath('timeline.html')
        """
        from ._timeline import write_timeline_html

        return write_timeline_html(self, path, title=title)

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> str:
        """One line per failed node (or a single OK line)."""
        state = "OK" if self.success else "FAILED"
        if self.success and self.error is not None:  # it did not run: LOCK__ON_BUSY=skip
            return f"dbt {self.command}: SKIPPED [{self.error.kind.value}] {self.error.message}"
        head = (
            f"dbt {self.command}: {state} "
            f"({len(self.nodes)} nodes, {self.elapsed_s:.1f}s, {self.attempts} attempt(s))"
        )
        lines = [head]
        if self.error and not self.failed_nodes:
            lines.append(f"  [{self.error.kind.value}] {self.error.message}")
        for node in self.failed_nodes:
            kind = node.error.kind.value if node.error else node.status
            lines.append(f"  {node.name}: {node.status} [{kind}] {node.message or ''}".rstrip())
        return "\n".join(lines)

    def raise_for_status(self) -> RunResult:
        """Return ``self`` when successful, else raise the matching exception.

        ``DbtInvocationError`` when dbt could not run (its ``kind`` says why),
        ``DbtTestsFailed`` / ``DbtRunFailed`` when nodes failed (``DbtRunFailed`` with kind
        ``stale_source`` when ``dbt source freshness`` found stale sources).
        """
        if self.success:
            return self
        failed = self.failed_nodes
        if self.error is not None and self.error.kind is ErrorKind.STALE_SOURCE:
            raise DbtRunFailed(self.summary(), self, ErrorKind.STALE_SOURCE)
        if self.error is not None and self.error.kind not in (
            ErrorKind.MODEL_FAILURE,
            ErrorKind.TEST_FAILURE,
        ):
            raise DbtInvocationError(self.summary(), self.error.kind, self)
        # a test skipped because its model failed is not a test failure (dbt build)
        if any(n.resource_type in TEST_TYPES and n.status != "skipped" for n in failed):
            raise DbtTestsFailed(self.summary(), self)
        if failed or self.error is not None:
            raise DbtRunFailed(self.summary(), self)
        raise DbtInvocationError(self.summary(), ErrorKind.MODEL_FAILURE, self)

    @classmethod
    def not_run(
        cls,
        command: str,
        error: ErrorInfo,
        *,
        threads: int | None = None,
        phases: Sequence[Phase] = (),
    ) -> RunResult:
        """The result of a command that never started: failed, no attempt, no nodes.

        >>> RunResult.not_run("run", ErrorInfo(ErrorKind.CANCELLED, "stopped")).exit_code
        130
        """
        return cls(
            command=command,
            success=False,
            started_at=utc_now_iso(),
            elapsed_s=0.0,
            threads=threads,
            attempts=0,
            nodes=(),
            error=error,
            phases=tuple(phases),
        )

    @classmethod
    def merge(
        cls,
        command: str,
        attempts: Sequence[Attempt],
        *,
        started_at: str,
        elapsed_s: float,
        degraded_threads: int | None = None,
        output: Any = None,
        phases: Sequence[Phase] = (),
    ) -> RunResult:
        """Merge attempts: a node's latest result wins; the last attempt's error stands.

        ``output`` is the last attempt's command value (a retry re-runs what failed);
        ``phases`` the invocation's :class:`Phase` s.
        """
        latest: dict[str, NodeResult] = {}
        for attempt in attempts:
            for node in attempt.nodes:
                latest[node.unique_id] = node
        last = attempts[-1]
        nodes = tuple(latest.values())
        success = last.success and not any(n.failed for n in nodes)
        return cls(
            command=command,
            success=success,
            started_at=started_at,
            elapsed_s=round(elapsed_s, 3),
            threads=attempts[0].threads,
            attempts=len(attempts),
            nodes=nodes,
            error=None if success else last.error,
            attempt_log=tuple(attempts),
            degraded_threads=degraded_threads,
            output=output,
            invocation_id=last.invocation_id,
            phases=tuple(phases),
        )


def utc_now_iso() -> str:
    """The current time as ISO 8601 with a UTC offset."""
    return datetime.now(timezone.utc).isoformat()


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return str(value.isoformat())
    return str(value)


def _span(pairs: Iterable[tuple[Any, Any]]) -> tuple[str | None, str | None]:
    """First start and last end over dbt's timing steps (compile + execute)."""
    starts, ends = [], []
    for start, end in pairs:
        if start is not None:
            starts.append(_iso(start) or "")
        if end is not None:
            ends.append(_iso(end) or "")
    return (min(starts) if starts else None, max(ends) if ends else None)


def _count(value: Any) -> int | None:
    """A non-negative count, else None (dbt reports -1 for "unknown")."""
    return (
        int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0
        else None
    )


def _json_response(response: Any) -> dict[str, Any]:
    """dbt's adapter response (a dict, sometimes with non-JSON values) as plain JSON."""
    from ._dbt.outputs import json_value

    if not isinstance(response, Mapping):
        to_dict = getattr(response, "to_dict", None)
        response = to_dict() if callable(to_dict) else {}
    return {str(k): json_value(v) for k, v in response.items()}


def name_from_unique_id(unique_id: str) -> str:
    """A node's name from its unique_id: ``test.pkg.not_null_x_id.1114211131`` -> the name.

    >>> name_from_unique_id("test.shop.not_null_orders_id.1114211131")
    'not_null_orders_id'
    >>> name_from_unique_id("unit_test.shop.orders.test_amounts")
    'test_amounts'
    """
    parts = unique_id.split(".")
    if parts[0] == "unit_test" and len(parts) >= 4:
        return parts[3]
    return parts[2] if len(parts) >= 3 else unique_id


def node_from_entry(
    data: Mapping[str, Any],
    attempt: int,
    error: ErrorInfo | None = None,
    *,
    names: Mapping[str, str] | None = None,
    invocation_id: str | None = None,
) -> NodeResult:
    """A node's result entry (run_results.json's shape, see :mod:`._dbt.results`).

    ``names`` (unique_id -> name, from the manifest) gives an artifact entry its
    real name when the entry has none; else the name is read from the unique_id.
    """
    unique_id = str(data["unique_id"])
    resource_type = str(data.get("resource_type") or unique_id.split(".", 1)[0])
    is_test = resource_type in TEST_TYPES
    timings: Iterable[Mapping[str, Any]] = data.get("timing") or ()
    started, completed = _span((t.get("started_at"), t.get("completed_at")) for t in timings)
    response = _json_response(data.get("adapter_response") or {})
    name = data.get("name") or (names or {}).get(unique_id) or name_from_unique_id(unique_id)
    return NodeResult(
        unique_id=unique_id,
        name=str(name),
        resource_type=resource_type,
        status=str(data.get("status")),
        started_at=started,
        completed_at=completed,
        elapsed_s=round(float(data.get("execution_time") or 0.0), 3),
        thread=data.get("thread_id"),
        rows_affected=None if is_test else _count(response.get("rows_affected")),
        message=data.get("message"),
        attempt=attempt,
        error=error,
        failures=_count(data.get("failures")) if is_test else None,
        relation_name=data.get("relation_name") or None,
        adapter_response=response,
        invocation_id=invocation_id,
        compiled_path=data.get("compiled_path") or None,
    )


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time as aware UTC (None when absent or unreadable; naive means UTC).

    >>> parse_time("2026-01-01T00:00:01.5Z").isoformat()
    '2026-01-01T00:00:01.500000+00:00'
    """
    if not value:
        return None
    if value.endswith("Z"):  # run_results.json; Python 3.10 cannot parse "Z"
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)
