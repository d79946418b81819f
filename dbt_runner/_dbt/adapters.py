"""dbt's adapter factory: the adapters a process holds, their connections and caches.

dbt keeps one adapter per warehouse type in a process-wide container
(``dbt.adapters.factory.FACTORY``) that it mutates under ``FACTORY.lock``;
every read here takes that lock too, and works on a copy outside it (dbt's
own calls on an adapter may take the lock again, and it is not re-entrant).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = [
    "adapter_threads",
    "adapters",
    "clear_relation_caches",
    "drop_connections",
    "is_cancelable",
    "release_duckdb",
]

log = logging.getLogger("dbt_runner.session")


def adapters() -> list[Any]:
    """The adapters dbt's factory holds in this process (none if dbt's internals moved)."""
    try:
        from dbt.adapters.factory import FACTORY
    except ImportError:  # pragma: no cover - dbt-core is a dependency
        return []
    with FACTORY.lock:
        return list(FACTORY.adapters.values())


def adapter_threads(project_dir: Path) -> int | None:
    """The threads dbt's adapter for ``project_dir`` was last configured with (profile's)."""
    for adapter in adapters():
        config = getattr(adapter, "config", None)
        if str(getattr(config, "project_root", "")) != str(project_dir):
            continue
        threads = getattr(config, "threads", None)
        if isinstance(threads, int):
            return threads
    return None


def clear_relation_caches() -> None:
    """Empty dbt's relation caches, as in a fresh process.

    dbt fills an adapter's relation cache at the start of a command and keeps it
    up to date while it runs; it clears it only when it populates it again. With
    ``--no-populate-cache`` an adapter that lives on in the session would start
    the next command with the last one's entries; an empty cache is what a fresh
    process starts from.
    """
    for adapter in adapters():
        adapter.cache.clear()


def drop_connections() -> None:
    """Close and forget every connection dbt's adapters still hold (cancelled ones too)."""
    for adapter in adapters():
        try:
            adapter.cleanup_connections()
        except Exception:  # best effort: a dead handle must not fail the next invocation
            log.debug("could not clean up dbt's connections", exc_info=True)


def is_cancelable(adapter: Any) -> bool:
    """``adapter.is_cancelable()``, without making DuckDB open its database to answer."""
    manager = getattr(type(adapter), "ConnectionManager", None)
    if getattr(manager, "TYPE", None) == "duckdb" and getattr(manager, "_ENV", None) is None:
        return False  # no database open: nothing runs, nothing to interrupt
    try:
        return bool(adapter.is_cancelable())
    except Exception:  # NotImplementedError on adapters that never implemented it
        return False


def release_duckdb() -> None:
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
