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
                   worker's imports (and a console script's, frozen out of the
                   garbage collector's way); dbt's invocation id
``cancel``         stopping a running invocation from any thread, in dbt's own
                   Ctrl-C sequence (the hooks on dbt's task and connection manager)
``adapters``       dbt's adapter factory (under its lock): connections, relation
                   caches, threads, DuckDB's process-wide database handle
``reuse``          keeping dbt's PostgreSQL connections for the next node (of the
                   command, or of the session), each reset to a fresh session (the
                   hooks on dbt's connection open and close)
``events``         dbt's event messages as :class:`~.events.DbtEvent` values
``deprecations``   dbt's deprecation counts and summary, per command as plain dbt
``results``        dbt's node results as run_results.json entries
``outputs``        a command's own value (ls lines, show rows, compiled SQL, ...)
``manifest``       the compile fields of a reused manifest; node names
``fingerprint``    a parse's inputs as dbt resolves them; a saved partial parse loaded
``args``           dbt's click commands: which flags a command accepts
``profile``        rendering a profile value with dbt's renderer
``routes``         address overrides: dbt-postgres' and redshift_connector's
                   connections to a warehouse's name go to the tunnel's local end
``connect_timeout`` redshift_connector's ``timeout`` bounding the connect only, for the
                   generated profile and dbt_runner's own connections
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
from .connect_timeout import Registration, clear_read_timeout, connect_only
from .deprecations import CommandDeprecations
from .events import DEPRECATION_SUMMARY, PARSE_EVENT, DbtEvent, NodeInfo
from .fingerprint import (
    TOP_FILES,
    ParseInputs,
    load_partial_parse,
    parse_inputs,
    partial_parse_env_vars,
)
from .manifest import GraphNode, node_graph, node_names, reset_compile_state
from .outputs import capture_macro_return, command_output, json_value
from .profile import render_value
from .results import entries, read_run_results
from .reuse import ConnectionPool, pooled
from .routes import Route, add_route, libpq_address, resolve
from .runner import (
    DbtReturn,
    import_dbt,
    imported,
    invocation_id,
    invoke,
    own_process,
    warm_up,
)

__all__ = [
    "DEPRECATION_SUMMARY",
    "PARSE_EVENT",
    "TOP_FILES",
    "Cancellation",
    "CommandDeprecations",
    "ConnectionPool",
    "DbtEvent",
    "DbtReturn",
    "GraphNode",
    "NodeInfo",
    "ParseInputs",
    "Registration",
    "Route",
    "Stop",
    "accepts",
    "active",
    "adapter_threads",
    "add_route",
    "cancel_on_server",
    "capture_macro_return",
    "clear_read_timeout",
    "clear_relation_caches",
    "command_output",
    "connect_only",
    "drop_connections",
    "entries",
    "given",
    "import_dbt",
    "imported",
    "invocation_id",
    "invoke",
    "json_value",
    "libpq_address",
    "load_partial_parse",
    "node_graph",
    "node_names",
    "own_process",
    "parse_inputs",
    "partial_parse_env_vars",
    "pooled",
    "read_run_results",
    "release_duckdb",
    "render_value",
    "reset_compile_state",
    "resolve",
    "warm_up",
    "with_defaults",
]
