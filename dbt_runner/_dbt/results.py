"""dbt's per-node results as run_results.json entries (plain dicts).

A node's result reaches dbt_runner two ways: dbt's ``RunResult`` objects in
``dbtRunnerResult.result.results``, or entries of ``run_results.json`` (when
dbt raised after writing it). Both become the artifact's entry shape here,
with the few fields the artifact lacks (``name``, ``resource_type``,
``relation_name``, ``compiled_path``) added from the node object, so one
function (:func:`dbt_runner._results.node_from_entry`) reads them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["entries", "read_run_results"]


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return str(value.isoformat())
    return str(value)


def _entry(result: Any, base_dir: Path | None) -> dict[str, Any]:
    if isinstance(result, Mapping):
        return dict(result)
    if getattr(result, "node", None) is None:
        # run-operation's RunResultOutput: the artifact's own entry, no node object
        return dict(result.to_dict(omit_none=False))
    node = result.node
    compiled = getattr(node, "compiled_path", None)
    if compiled and base_dir is not None:
        compiled = str(base_dir / compiled)  # an absolute target path stays as it is
    if compiled and not Path(compiled).is_file():
        compiled = None  # inline SQL (show/compile --inline) has no file
    message = result.message
    if message is None and hasattr(result, "max_loaded_at"):
        message = _freshness_message(result)
    return {
        "unique_id": str(node.unique_id),
        "name": str(node.name),
        "resource_type": str(node.resource_type),
        "status": str(result.status),
        "timing": [
            {"started_at": _iso(t.started_at), "completed_at": _iso(t.completed_at)}
            for t in (result.timing or ())
        ],
        "execution_time": float(result.execution_time or 0.0),
        "thread_id": result.thread_id,
        "message": message,
        "adapter_response": result.adapter_response,
        "failures": result.failures,
        "relation_name": getattr(node, "relation_name", None),
        "compiled_path": str(compiled) if compiled else None,
    }


def _age(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps it readable: ``245.6 days``, ``3.2 hours``."""
    for unit, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0)):
        if seconds >= size:
            value = round(seconds / size, 1)
            return f"{value:g} {unit}{'' if value == 1 else 's'}"
    return f"{seconds:.0f} seconds"


def _freshness_message(result: Any) -> str | None:
    """What a source freshness result that is not ``pass`` means (dbt gives it no message):
    ``stale: last loaded 245.6 days ago (2024-03-05T11:45:00+00:00); error after 3 days``."""
    status = str(result.status)
    if status not in ("warn", "error"):
        return None
    criteria = getattr(result.node, "freshness", None)
    after = getattr(criteria, "error_after" if status == "error" else "warn_after", None)
    limit = ""
    if after is not None and after.count is not None and after.period is not None:
        period = str(getattr(after.period, "value", after.period))
        limit = f"; {status} after {after.count} {period if after.count == 1 else period + 's'}"
    age = float(result.age or 0.0)
    return f"stale: last loaded {_age(age)} ago ({_iso(result.max_loaded_at)}){limit}"


def entries(value: Any, base_dir: Path | None = None) -> list[dict[str, Any]]:
    """The node entries of ``dbtRunnerResult.result`` (empty when it has none)."""
    results = getattr(value, "results", None)
    return [_entry(r, base_dir) for r in results or ()]


def read_run_results(path: Path, since_s: float) -> list[dict[str, Any]]:
    """The entries of ``path`` (run_results.json) when written in the last ``since_s`` s."""
    try:
        if path.stat().st_mtime < time.time() - since_s:
            return []
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [r for r in data.get("results", []) if isinstance(r, dict) and "unique_id" in r]
