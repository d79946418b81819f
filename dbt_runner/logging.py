"""Structured logs: one JSON object per ``logging`` record, for log pipelines.

Every line is a complete JSON object (newlines inside messages are escaped)::

    {"timestamp": "2026-01-01T12:00:00.123456+00:00", "level": "INFO",
     "logger": "dbt_runner.dbt", "thread": "Thread-1 (worker)",
     "message": "DONE  model part_1 success in 0.23s [Thread-1 (worker)]",
     "event": "node_finish", "data": {"event": "node_finish", "unique_id": ..., ...}}

Records that describe something a pipeline wants to count or chart (a node
started or finished, a retry, the tunnel opened, closed or re-opened) carry a
plain dict under the ``extra`` key :data:`EVENT_KEY`; the formatter lifts its
``"event"`` name to the top level and keeps the whole dict under ``"data"``
(for node events that is :meth:`NodeEvent.to_dict() <dbt_runner.NodeEvent.to_dict>`).
Other ``extra`` fields land under ``"extra"``. Secrets stay out: pydantic
``SecretStr`` values render masked, and fields whose names say password,
passphrase, secret or token are replaced by ``"***"``.

>>> import logging
>>> handler = logging.StreamHandler()
>>> handler.setFormatter(JsonFormatter())
>>> logging.getLogger("dbt_runner").addHandler(handler)       # doctest: +SKIP

The CLI does this with ``--log-format json`` (or ``DBT_RUNNER_LOG_FORMAT=json``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

__all__ = ["EVENT_KEY", "JsonFormatter", "event_extra"]

#: the ``extra=`` key under which a log record carries its structured event
EVENT_KEY = "dbt_runner_event"

_MASK = "***"
_SECRET_NAME = re.compile(r"password|passphrase|secret|token", re.IGNORECASE)
# attributes every LogRecord has; anything else on a record came from ``extra=``
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def event_extra(event: str, /, **fields: Any) -> dict[str, dict[str, Any]]:
    """The ``extra=`` for a log record that carries a structured event.

    >>> extra = event_extra("tunnel_open", local_port=40123)
    >>> extra[EVENT_KEY]["event"], extra[EVENT_KEY]["local_port"]
    ('tunnel_open', 40123)
    >>> logging.getLogger("dbt_runner.tunnel").info("tunnel open", extra=extra)
    """
    return {
        EVENT_KEY: {
            "event": event,
            "timestamp": datetime.now(timezone.utc).isoformat(),
            **fields,
        }
    }


class JsonFormatter(logging.Formatter):
    """A :class:`logging.Formatter` that renders each record as one line of JSON.

    >>> record = logging.LogRecord("dbt_runner.dbt", logging.INFO, __file__, 1,
    ...                            "START %s", ("part_1",), None)
    >>> data = json.loads(JsonFormatter().format(record))
    >>> data["level"], data["logger"], data["message"]
    ('INFO', 'dbt_runner.dbt', 'START part_1')
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single-line JSON object."""
        payload: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        event = getattr(record, EVENT_KEY, None)
        if isinstance(event, Mapping):
            data = _scrub(event)
            payload["event"] = data.get("event")
            payload["data"] = data
        extra = {
            key: value
            for key, value in vars(record).items()
            if key not in _STANDARD_ATTRS and key != EVENT_KEY and not key.startswith("_")
        }
        if extra:
            payload["extra"] = _scrub(extra)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=_json_default, ensure_ascii=False)


def _scrub(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with secret-looking fields masked (nested dicts too)."""
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if _SECRET_NAME.search(str(key)) and value is not None:
            clean[str(key)] = _MASK
        elif isinstance(value, Mapping):
            clean[str(key)] = _scrub(value)
        else:
            clean[str(key)] = value
    return clean


def _json_default(value: Any) -> Any:
    """JSON for what ``json`` does not know: enums by value, the rest (paths, secrets) by str.

    ``str()`` of a pydantic ``SecretStr`` is its mask, never the secret.
    """
    enum_value = getattr(value, "value", None)
    if isinstance(enum_value, (str, int, float)) and not isinstance(value, (str, int, float)):
        return enum_value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
