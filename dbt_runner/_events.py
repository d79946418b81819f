"""dbt's events (:class:`~dbt_runner._dbt.DbtEvent`) as :class:`NodeEvent` s, log records and
callbacks.

dbt fires callbacks from its worker threads. :class:`EventRelay` keeps each
callback cheap (it hands a frozen dataclass on),
never lets a user's callback break dbt, and is safe to call from any thread.

dbt also prints its own console lines on ``sys.stdout``; :func:`dbt_console_to_log`
turns them into ``dbt_runner.dbt.console`` DEBUG records instead (the CLI does this,
so stdout carries only the result). dbt's deprecation warnings and its "Summary of
encountered deprecations" are relayed at WARNING as dbt gives them: each deprecation
once per command, the summary once at the end of a command with that command's counts
(:mod:`dbt_runner._dbt.deprecations`).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from ._dbt.events import PARSE_EVENT, DbtEvent, NodeInfo
from .logging import EVENT_KEY

__all__ = ["PARSE_EVENT", "EventRelay", "NodeEvent", "RelaySnapshot", "dbt_console_to_log"]

log = logging.getLogger("dbt_runner.dbt")
console_log = logging.getLogger("dbt_runner.dbt.console")

#: statuses dbt reports at INFO: a saved query's or exposure's NO-OP is not a warning
_FINE_STATUSES = frozenset({"success", "pass", "no-op"})
#: node types whose adapter response counts rows written (a test's count is of failing rows)
_ROW_TYPES = frozenset({"model", "seed", "snapshot"})


@dataclass(frozen=True)
class NodeEvent:
    """A node started or finished (what progress displays and log pipelines need)."""

    event: str  # "node_start" | "node_finish"
    unique_id: str
    name: str
    resource_type: str
    thread: str
    timestamp: str
    status: str | None = None
    elapsed_s: float | None = None
    rows_affected: int | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return asdict(self)


NodeCallback = Callable[[NodeEvent], None]


@dataclass(frozen=True)
class NodeStarted:
    """A NodeStart seen during the current attempt."""

    node: NodeInfo
    thread: str
    timestamp: str


@dataclass(frozen=True)
class NodeEnded:
    """A NodeFinished seen during the current attempt (``monotonic``: when it arrived)."""

    event: DbtEvent
    thread: str
    timestamp: str
    monotonic: float
    rows: int | None


@dataclass(frozen=True)
class RelaySnapshot:
    """The node events of the current attempt, by unique_id."""

    started: dict[str, NodeStarted]
    finished: dict[str, NodeEnded]


class EventRelay:
    """The session's handler of dbt's events: counts parses, relays node events.

    dbt calls it from its worker threads with :class:`~dbt_runner._dbt.DbtEvent`
    values; it remembers the node starts and finishes of the current attempt
    (:meth:`begin`, :meth:`snapshot`) for the report after an interruption.
    """

    def __init__(self, callbacks: Sequence[NodeCallback] = ()) -> None:
        self._callbacks = tuple(callbacks)
        self._lock = threading.Lock()
        self.parse_events = 0
        self.threads_seen: set[str] = set()
        self.full_parse_reasons: list[str] = []
        self._started: dict[str, NodeStarted] = {}
        self._finished: dict[str, NodeEnded] = {}

    def begin(self) -> None:
        """A new attempt starts: forget the last one's node events."""
        with self._lock:
            self._started, self._finished = {}, {}

    def snapshot(self) -> RelaySnapshot:
        """The current attempt's node events so far."""
        with self._lock:
            return RelaySnapshot(dict(self._started), dict(self._finished))

    def __call__(self, event: DbtEvent) -> None:
        name = event.name
        if name == PARSE_EVENT:
            with self._lock:
                self.parse_events += 1
        elif name == "UnableToPartialParse":
            with self._lock:
                self.full_parse_reasons.append(str(event.reason))
        elif name in ("NodeStart", "NodeFinished") and event.node is not None:
            self._node(event, event.node)
        elif event.deprecation:
            self._deprecation(event)

    def _deprecation(self, event: DbtEvent) -> None:
        """A deprecation warning or dbt's summary of them, as one log line."""
        text = " ".join((event.text or event.name).split())
        log.warning("dbt deprecation: %s", text)

    def _node(self, event: DbtEvent, info: NodeInfo) -> None:
        thread = event.thread or threading.current_thread().name
        now = _now()
        if event.name == "NodeStart":
            node_event = NodeEvent(
                event="node_start",
                unique_id=info.unique_id,
                name=info.name,
                resource_type=info.resource_type,
                thread=thread,
                timestamp=now,
            )
            with self._lock:
                self._started[info.unique_id] = NodeStarted(info, thread, now)
            log.info(
                "START %s %s [%s]",
                node_event.resource_type,
                node_event.name,
                thread,
                extra={EVENT_KEY: node_event.to_dict()},
            )
        else:
            rows = _rows(event.adapter_response) if info.resource_type in _ROW_TYPES else None
            node_event = NodeEvent(
                event="node_finish",
                unique_id=info.unique_id,
                name=info.name,
                resource_type=info.resource_type,
                thread=thread,
                timestamp=now,
                status=event.status or info.status,
                elapsed_s=round(float(event.execution_time or 0.0), 3),
                rows_affected=rows,
                message=event.message or None,
            )
            with self._lock:
                self._finished[info.unique_id] = NodeEnded(
                    event, thread, now, time.monotonic(), rows
                )
            level = logging.INFO if node_event.status in _FINE_STATUSES else logging.WARNING
            log.log(
                level,
                "DONE  %s %s %s in %.2fs%s [%s]%s",
                node_event.resource_type,
                node_event.name,
                node_event.status,
                node_event.elapsed_s or 0.0,
                "" if rows is None else f" rows={rows}",
                thread,
                ""
                if level == logging.INFO or not node_event.message
                else f": {node_event.message}",
                extra={EVENT_KEY: node_event.to_dict()},
            )
        with self._lock:
            self.threads_seen.add(thread)
        for callback in self._callbacks:
            try:
                callback(node_event)
            except Exception:
                log.exception("node event callback %r failed", callback)


def _rows(response: Any) -> int | None:
    try:
        if not response or "rows_affected" not in response:
            return None
        value = response["rows_affected"]
    except (KeyError, TypeError, AttributeError, ValueError):
        return None
    try:
        rows = int(value)
    except (TypeError, ValueError):
        return None
    return rows if rows >= 0 else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class _LineLogger(io.TextIOBase):
    """A text stream that logs each complete line it is given (thread-safe)."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        super().__init__()
        self._logger, self._level = logger, level
        self._lock = threading.Lock()
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self._logger.log(self._level, "%s", line.rstrip())
        return len(text)

    def flush(self) -> None:
        with self._lock:
            line, self._partial = self._partial, ""
        if line.strip():
            self._logger.log(self._level, "%s", line.rstrip())


@contextmanager
def dbt_console_to_log(level: int = logging.DEBUG) -> Iterator[None]:
    """Inside the block, what is printed on ``sys.stdout`` (dbt's console lines) is logged
    to ``dbt_runner.dbt.console`` at ``level`` instead of printed.

    dbt opens its console stream on ``sys.stdout`` at the start of each invocation,
    so invocations inside the block are captured.

    >>> with dbt_console_to_log():
    ...     print("1 of 3 START sql incremental model staging.part_1")
    """
    writer = _LineLogger(console_log, level)
    try:
        with redirect_stdout(writer):
            yield
    finally:
        writer.flush()
