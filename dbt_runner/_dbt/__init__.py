"""The one place dbt_runner reaches into dbt-core and its adapters.

Every ``import dbt`` and ``import dbt_common`` of the package is inside this
folder (``tests/test_layers.py`` keeps it so), and so is every dbt internal
dbt_runner depends on. A dbt upgrade that moves something breaks here, and
only here. Nothing below imports dbt at module import time: dbt is loaded
when a session first needs it.

=================  ==============================================================
module             what of dbt it owns
=================  ==============================================================
``runner``         ``dbtRunner``: one invocation as a :class:`DbtReturn`; the warm
                   worker's imports; dbt's invocation id
``cancel``         stopping a running invocation from any thread, in dbt's own
                   Ctrl-C sequence (the hooks on dbt's task and connection manager)
``adapters``       dbt's adapter factory (under its lock): connections, relation
                   caches, threads, DuckDB's process-wide database handle
``reuse``          keeping dbt's PostgreSQL connections for the next node (of the
                   command, or of the session), each reset to a fresh session (the
                   hooks on dbt's connection open and close)
``events``         dbt's event messages as :class:`~.events.DbtEvent` values
``results``        dbt's node results as run_results.json entries
``outputs``        a command's own value (ls lines, show rows, compiled SQL, ...)
``manifest``       the compile fields of a reused manifest; node names
``args``           dbt's click commands: which flags a command accepts
``profile``        rendering a profile value with dbt's renderer
=================  ==============================================================
"""

from __future__ import annotations

from .adapters import (
    adapter_threads,
    clear_relation_caches,
    drop_connections,
    release_duckdb,
)
from .args import accepts, given, with_defaults
from .cancel import Cancellation, Stop, active, cancel_on_server
from .events import DEPRECATION_SUMMARY, PARSE_EVENT, DbtEvent, NodeInfo
from .manifest import node_names, reset_compile_state
from .outputs import capture_macro_return, command_output, json_value
from .profile import render_value
from .results import entries, read_run_results
from .reuse import ConnectionPool, pooled
from .runner import DbtReturn, invocation_id, invoke, warm_up

__all__ = [
    "DEPRECATION_SUMMARY",
    "PARSE_EVENT",
    "Cancellation",
    "ConnectionPool",
    "DbtEvent",
    "DbtReturn",
    "NodeInfo",
    "Stop",
    "accepts",
    "active",
    "adapter_threads",
    "cancel_on_server",
    "capture_macro_return",
    "clear_relation_caches",
    "command_output",
    "drop_connections",
    "entries",
    "given",
    "invocation_id",
    "invoke",
    "json_value",
    "node_names",
    "pooled",
    "read_run_results",
    "release_duckdb",
    "render_value",
    "reset_compile_state",
    "warm_up",
    "with_defaults",
]
