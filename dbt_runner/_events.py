"""dbt's event stream turned into :class:`NodeEvent` s, ``logging`` records and callbacks.

dbt fires callbacks from its worker threads. :class:`EventRelay` keeps each
callback cheap (it reads a handful of fields and hands a frozen dataclass on),
never lets a user's callback break dbt, and is safe to call from any thread.

dbt also prints its own console lines on ``sys.stdout``; :func:`dbt_console_to_log`
turns them into ``dbt_runner.dbt.console`` DEBUG records instead (the CLI does this,
so stdout carries only the result). Deprecation notices are relayed once per
session at WARNING, however many invocations repeat them.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from ._logjson import EVENT_KEY

__all__ = ["EventRelay", "NodeEvent", "dbt_console_to_log"]

log = logging.getLogger("dbt_runner.dbt")
console_log = logging.getLogger("dbt_runner.dbt.console")

#: node types whose adapter response counts rows written (a test's count is of failing rows)
_ROW_TYPES = frozenset({"model", "seed", "snapshot"})

#: dbt fires this exactly once each time it loads (parses) a project
PARSE_EVENT = "StateCheckVarsHash"


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


class EventRelay:
    """The callback handed to ``dbtRunner``; counts parses and relays node events."""

    def __init__(self, callbacks: Sequence[NodeCallback] = ()) -> None:
        self._callbacks = tuple(callbacks)
        self._lock = threading.Lock()
        self.parse_events = 0
        self.threads_seen: set[str] = set()
        self.full_parse_reasons: list[str] = []
        self._deprecations_seen: set[str] = set()

    def __call__(self, msg: Any) -> None:
        try:
            name = msg.info.name
            if name == PARSE_EVENT:
                with self._lock:
                    self.parse_events += 1
            elif name == "UnableToPartialParse":
                with self._lock:
                    self.full_parse_reasons.append(str(msg.data.reason))
            elif name in ("NodeStart", "NodeFinished"):
                self._node(name, msg)
            elif name == "DeprecationsSummary" or name.endswith("Deprecation"):
                self._deprecation(name, msg)
        except Exception:  # never break dbt from a callback
            log.warning(
                "could not relay dbt event %s", getattr(msg.info, "name", "?"), exc_info=True
            )

    def _deprecation(self, name: str, msg: Any) -> None:
        """dbt repeats its deprecation notices after every invocation: log each once."""
        with self._lock:
            if name in self._deprecations_seen:
                return
            self._deprecations_seen.add(name)
        text = " ".join(str(getattr(msg.info, "msg", "") or name).split())
        log.warning("dbt deprecation (shown once per session): %s", text)

    def _node(self, name: str, msg: Any) -> None:
        info = msg.data.node_info
        thread = str(msg.info.thread or threading.current_thread().name)
        if name == "NodeStart":
            event = NodeEvent(
                event="node_start",
                unique_id=info.unique_id,
                name=info.node_name,
                resource_type=info.resource_type,
                thread=thread,
                timestamp=_now(),
            )
            log.info(
                "START %s %s [%s]",
                event.resource_type,
                event.name,
                thread,
                extra={EVENT_KEY: event.to_dict()},
            )
        else:
            result = msg.data.run_result
            rows = _rows(result) if info.resource_type in _ROW_TYPES else None
            event = NodeEvent(
                event="node_finish",
                unique_id=info.unique_id,
                name=info.node_name,
                resource_type=info.resource_type,
                thread=thread,
                timestamp=_now(),
                status=result.status or info.node_status,
                elapsed_s=round(float(result.execution_time or 0.0), 3),
                rows_affected=rows,
                message=result.message or None,
            )
            level = logging.INFO if event.status in ("success", "pass") else logging.WARNING
            log.log(
                level,
                "DONE  %s %s %s in %.2fs%s [%s]%s",
                event.resource_type,
                event.name,
                event.status,
                event.elapsed_s or 0.0,
                "" if rows is None else f" rows={rows}",
                thread,
                "" if level == logging.INFO or not event.message else f": {event.message}",
                extra={EVENT_KEY: event.to_dict()},
            )
        with self._lock:
            self.threads_seen.add(thread)
        for callback in self._callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("node event callback %r failed", callback)


def _rows(result: Any) -> int | None:
    response = result.adapter_response
    try:
        if "rows_affected" not in response:
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
