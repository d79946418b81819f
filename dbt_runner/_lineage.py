"""Where a session's relations live: dataset names for OpenLineage and Airflow asset URIs.

One naming, used by the Airflow outlets (:mod:`dbt_runner.airflow`) and the
OpenLineage events (:mod:`dbt_runner._openlineage`):

* the **namespace** of the warehouse, as OpenLineage's naming spec and its own
  dbt integration write it: ``postgres://host:port``, ``redshift://host:port``,
  ``duckdb://<absolute path of the file>``; any other adapter with a ``host``:
  ``<type>://host[:port]``;
* the **dataset name** of a relation: ``database.schema.table`` (dbt's
  ``relation_name`` with its quotes taken off);
* the **asset URI** (an Airflow 3 ``Asset`` / 2.10 ``Dataset``): the namespace,
  then the name's parts as path segments, the form Airflow's PostgreSQL
  provider checks for its scheme: ``postgres://host:port/database/schema/table``.
  DuckDB: ``duckdb:/path/to/file.duckdb/database/schema/table`` (Airflow normalises
  ``duckdb:///path`` to that form; both name the same asset).

The warehouse is the one dbt connects to as the settings name it (the real
host, never the local end of an SSH tunnel): the generated profile's
``WAREHOUSE__*`` or the chosen target of the user's own ``profiles.yml``.

>>> loc = Location("postgres", "db.example.com", None, None)
>>> loc.namespace
'postgres://db.example.com:5432'
>>> loc.dataset_name('"analytics"."staging"."stg_orders"')
'analytics.staging.stg_orders'
>>> loc.asset_uri('"analytics"."staging"."stg_orders"')
'postgres://db.example.com:5432/analytics/staging/stg_orders'
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from ._results import NodeResult
    from ._settings import Settings

__all__ = ["WRITING_TYPES", "Location", "relation_parts", "target_location", "written_nodes"]

log = logging.getLogger("dbt_runner.lineage")

#: node types that write a relation of their own
WRITING_TYPES = frozenset({"model", "seed", "snapshot"})
_DEFAULT_PORTS = {"postgres": 5432, "redshift": 5439}


@dataclass(frozen=True)
class Location:
    """The warehouse a target writes to: its adapter type and address."""

    type: str
    host: str | None
    port: int | None
    #: DuckDB: the database file (absolute), or ``:memory:``
    path: str | None

    @property
    def namespace(self) -> str | None:
        """The OpenLineage dataset namespace; None when this adapter has no address we know."""
        if self.type == "duckdb":
            return f"duckdb://{self.path}" if self.path else None
        if not self.host:
            return None
        port = self.port or _DEFAULT_PORTS.get(self.type)
        return f"{self.type}://{self.host}" + (f":{port}" if port else "")

    def dataset_name(self, relation_name: str | None) -> str | None:
        """``database.schema.table`` of a relation (None: no relation)."""
        parts = relation_parts(relation_name)
        return ".".join(parts) if parts else None

    def asset_uri(self, relation_name: str | None) -> str | None:
        """The Airflow asset URI of a relation (None: no relation, or no namespace)."""
        namespace, parts = self.namespace, relation_parts(relation_name)
        if namespace is None or not parts:
            return None
        uri = namespace + "".join("/" + quote(part, safe="") for part in parts)
        return urlunsplit(urlsplit(uri))  # as Airflow stores it: duckdb:///p -> duckdb:/p


def relation_parts(relation_name: str | None) -> tuple[str, ...]:
    """dbt's rendered relation name split into its identifiers, quotes taken off.

    >>> relation_parts('"db"."my.schema"."t"')
    ('db', 'my.schema', 't')
    >>> relation_parts("analytics.orders"), relation_parts(None)
    (('analytics', 'orders'), ())
    """
    if not relation_name:
        return ()
    parts: list[str] = []
    current: list[str] = []
    quote_char: str | None = None
    closing = {'"': '"', "`": "`", "[": "]"}
    for char in relation_name.strip():
        if quote_char is not None:
            if char == closing[quote_char]:
                quote_char = None
            else:
                current.append(char)
        elif char in closing:
            quote_char = char
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return tuple(p for p in parts if p)


def target_location(settings: Settings) -> Location:
    """Where the session of ``settings`` writes: the generated profile's warehouse, or
    the chosen target of the user's own ``profiles.yml`` (rendered as dbt renders it)."""
    if settings.profiles_dir is None:
        wh = settings.warehouse
        if wh.type == "duckdb":
            return Location("duckdb", None, None, str(wh.path.expanduser().resolve()))
        return Location(wh.type, wh.host, wh.effective_port, None)
    from ._profile import render_target

    _, _, output = render_target(
        settings.profiles_dir.resolve(), settings.resolved_project_dir, settings.chosen_target
    )
    kind = str(output.get("type") or "")
    path = output.get("path")
    if kind == "duckdb":
        where = str(path or ":memory:")
        if where != ":memory:" and "://" not in where:
            where = str(Path(where).expanduser().resolve())
        return Location(kind, None, None, where)
    return Location(kind, _text(output.get("host")), _port(output.get("port")), None)


def written_nodes(nodes: Iterable[NodeResult]) -> list[NodeResult]:
    """The models, seeds and snapshots that wrote their relation (ended in success)."""
    return [
        n
        for n in nodes
        if n.resource_type in WRITING_TYPES and n.status == "success" and n.relation_name
    ]


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _port(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
