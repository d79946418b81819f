"""dbt's event messages (``EventMsg``) as plain :class:`DbtEvent` values.

dbt calls its callbacks from its worker threads with protobuf-backed
messages; :func:`translating` reads the few fields dbt_runner uses and hands
on a frozen dataclass, so nothing outside this package knows their shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEPRECATION_SUMMARY",
    "PARSE_EVENT",
    "DbtEvent",
    "NodeInfo",
    "is_deprecation",
    "read_event",
    "translating",
]

log = logging.getLogger("dbt_runner.dbt")

#: dbt fires this exactly once each time it loads (parses) a project
PARSE_EVENT = "StateCheckVarsHash"
#: dbt's end-of-command list of the deprecations it saw
DEPRECATION_SUMMARY = "DeprecationsSummary"


@dataclass(frozen=True)
class NodeInfo:
    """The node an event is about."""

    unique_id: str
    name: str
    resource_type: str
    status: str | None = None


@dataclass(frozen=True)
class DbtEvent:
    """One dbt event: its name, thread and text; for node events the node and its result."""

    name: str
    thread: str | None = None
    text: str = ""
    node: NodeInfo | None = None
    #: NodeFinished: the node's result
    status: str | None = None
    execution_time: float | None = None
    message: str | None = None
    adapter_response: Mapping[str, Any] | None = None
    #: UnableToPartialParse: why dbt parses everything again
    reason: str | None = None
    #: a deprecation warning of dbt's, or its summary of them (:data:`DEPRECATION_SUMMARY`)
    deprecation: bool = False


def read_event(msg: Any) -> DbtEvent:
    """The plain value of a dbt ``EventMsg`` (missing fields stay None)."""
    info = msg.info
    name = str(info.name)
    data: Any = getattr(msg, "data", None)
    node = None
    if name in ("NodeStart", "NodeFinished"):
        node_info = data.node_info  # a node event without its node is malformed: raise
        node = NodeInfo(
            unique_id=str(node_info.unique_id),
            name=str(node_info.node_name),
            resource_type=str(node_info.resource_type),
            status=str(getattr(node_info, "node_status", "") or "") or None,
        )
    event = DbtEvent(
        name=name,
        thread=str(info.thread) if getattr(info, "thread", None) else None,
        text=str(getattr(info, "msg", "") or ""),
        node=node,
        deprecation=is_deprecation(name),
    )
    if name == "NodeFinished":
        result = data.run_result
        response = result.adapter_response
        event = DbtEvent(
            name=name,
            thread=event.thread,
            text=event.text,
            node=node,
            status=str(result.status) if result.status else None,
            execution_time=float(result.execution_time or 0.0),
            message=str(result.message) if result.message else None,
            adapter_response=dict(response) if response else {},
        )
    elif name == "UnableToPartialParse":
        reason = getattr(data, "reason", None)
        event = DbtEvent(name=name, thread=event.thread, text=event.text, reason=str(reason))
    return event


_deprecation_names: tuple[int, frozenset[str]] = (-1, frozenset())


def is_deprecation(name: str) -> bool:
    """True for the name of one of dbt's deprecation events (or of their summary).

    dbt names most of them ``...Deprecation``, not all (``SourceFreshnessProjectHooksNotRun``,
    ``EnvironmentVariableRenamed``): the names come from dbt's list of deprecations.
    """
    global _deprecation_names
    if name == DEPRECATION_SUMMARY or name.endswith("Deprecation"):
        return True
    try:
        from dbt import deprecations

        known = deprecations.deprecations  # grows when dbt registers a renamed env var
    except Exception:  # pragma: no cover - dbt moved it: the name rule above still holds
        return False
    size, names = _deprecation_names
    if size != len(known):
        names = frozenset(str(d._event) for d in list(known.values()) if d._event)
        _deprecation_names = (len(known), names)
    return name in names


def translating(handler: Callable[[DbtEvent], None]) -> Callable[[Any], None]:
    """A dbt callback that hands ``handler`` each event as a :class:`DbtEvent`.

    It never lets a failure (a field dbt renamed, the handler's own) reach dbt.
    """

    def callback(msg: Any) -> None:
        try:
            handler(read_event(msg))
        except Exception:
            name = getattr(getattr(msg, "info", None), "name", "?")
            log.warning("could not relay dbt event %s", name, exc_info=True)

    return callback
