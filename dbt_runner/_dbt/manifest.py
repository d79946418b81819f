"""What dbt_runner reads from and resets in a parsed manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["GraphNode", "node_graph", "node_names", "reset_compile_state"]


def reset_compile_state(manifest: Any) -> None:
    """Clear what an earlier invocation's compile wrote into the session's manifest.

    dbt compiles nodes in place on the manifest it is given. A child of an
    ephemeral model keeps ``extra_ctes_injected=True`` from its first compile;
    the next invocation renders its SQL afresh (with a ``__dbt__cte__...``
    reference) but skips the injection because of that flag, and the query
    fails with "__dbt__cte__<model> does not exist". Plain dbt never sees this:
    each process parses a new manifest. Resetting the compile fields (the
    parse-time defaults) gives every invocation that same starting point, at
    O(nodes) cost instead of a copy of the manifest.
    """
    for node in getattr(manifest, "nodes", {}).values():  # None: no manifest (deps, ...)
        fields = getattr(type(node), "__dataclass_fields__", {})
        if "extra_ctes_injected" not in fields:  # seeds: a read-only property, nothing compiled
            continue
        if node.compiled or node.extra_ctes_injected:
            node.compiled = False
            node.compiled_code = None
            node.compiled_path = None
            node.extra_ctes_injected = False
            node.extra_ctes = []
            node._pre_injected_sql = None


def node_names(manifest: Any) -> dict[str, str]:
    """unique_id -> node name, from a parsed manifest (tests' ids end in a hash)."""
    names: dict[str, str] = {}
    for attr in ("nodes", "unit_tests", "sources", "exposures", "snapshots"):
        for uid, node in (getattr(manifest, attr, None) or {}).items():
            name = getattr(node, "name", None)
            if isinstance(name, str):
                names[uid] = name
    return names


@dataclass(frozen=True)
class GraphNode:
    """One node of a parsed manifest as lineage needs it."""

    resource_type: str
    #: the warehouse relation, as dbt renders it (None: ephemeral, or a test)
    relation_name: str | None
    #: the unique_ids it reads from (``ref`` and ``source``)
    parents: tuple[str, ...]


def node_graph(manifest: Any) -> dict[str, GraphNode]:
    """unique_id -> :class:`GraphNode` for the nodes and sources of a parsed manifest."""
    graph: dict[str, GraphNode] = {}
    for attr in ("nodes", "sources", "snapshots"):
        for uid, node in (getattr(manifest, attr, None) or {}).items():
            depends_on = getattr(node, "depends_on", None)
            parents = getattr(depends_on, "nodes", None) or ()
            relation = getattr(node, "relation_name", None)
            kind = getattr(node, "resource_type", None) or uid.split(".", 1)[0]
            graph[str(uid)] = GraphNode(
                resource_type=str(getattr(kind, "value", kind)),
                relation_name=relation if isinstance(relation, str) and relation else None,
                parents=tuple(str(p) for p in parents),
            )
    return graph
