"""Differential suite, the commands' own values: ``RunResult.output`` vs plain ``dbt``.

What plain ``dbt`` prints or writes for ``ls``, ``show``, ``compile``,
``run-operation``, ``source freshness`` and ``docs generate`` must be what the
library's ``RunResult.output`` carries, on identical copies of the foreign
project (DuckDB, one file per copy):

- ls: ``list[str]``, the lines plain ``dbt ls`` prints with the same args;
- show: one node / ``--inline``: ``list[dict]`` rows; several nodes:
  ``dict[unique_id, list[dict]]`` (compared with ``dbt show --output json``);
- compile: one node / ``--inline``: the compiled SQL; several:
  ``dict[unique_id, str]`` (compared with run_results' compiled code and
  ``dbt compile --inline``'s output);
- run-operation: the macro's return value (or None when dbt does not expose it);
- source freshness: ``list[dict]`` per source (compared with target/sources.json);
- docs generate: ``{"catalog_path", "nodes", "sources"}`` (compared with catalog.json);
- and the per-node fields ``failures``, ``relation_name``, ``invocation_id``,
  ``compiled_path`` (compared with run_results.json).

``RunResult.output`` is landing from another branch: until then this module skips.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import RunResult
from tests._differential import (
    FAILING_TEST,
    INCREMENTAL,
    Outcome,
    Runs,
    Step,
    environment,
    run_sequence,
    steps,
)
from tests.test_differential_duckdb import duckdb_sides


def _has_output() -> bool:
    fields = {f.name for f in dataclasses.fields(RunResult)}
    return hasattr(RunResult, "output") or "output" in fields


pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not _has_output(), reason="needs RunResult.output"),
]

CUSTOMER_ORDERS = "model.foreign_shop.customer_orders"
INLINE = (
    "select order_id, ordered_at, cast(null as integer) as nothing "
    "from {{ ref('stg_orders') }} order by order_id"
)
#: dbt selects a model's tests with it (eager indirect selection): "one node" needs "empty"
ONLY = ("--indirect-selection", "empty")
STEPS = (
    *steps(("deps", "seed", "run-exclude", "test")),
    *steps(("ls-name", "ls-path", "ls-json", "ls-selector")),
    Step("show-one", ("show", "--select", "customer_orders", *ONLY, "--output", "json")),
    Step("show-inline", ("show", "--inline", INLINE, "--output", "json")),
    Step(
        "show-many",
        ("show", "--select", "customer_orders", "orders_incremental", *ONLY, "--output", "json"),
    ),
    Step("compile-one", ("compile", "--select", "customer_orders", *ONLY)),
    Step("compile-many", ("compile", "--select", "tag:marts")),
    *steps(("compile-inline", "run-operation", "freshness", "docs")),
)
_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\s")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    plain, lib, lib_env = duckdb_sides(tmp_path_factory.mktemp("differential-outputs"))
    plain_runs = run_sequence(plain, STEPS)
    with environment(lib_env):
        lib_runs = run_sequence(lib, STEPS)
    return Runs(plain_runs, lib_runs, plain.project, lib.project)


def printed(outcome: Outcome) -> list[str]:
    """What plain dbt printed besides its log lines (``HH:MM:SS  ...``)."""
    return [
        line for line in outcome.output.splitlines() if line.strip() and not _LOG_LINE.match(line)
    ]


def json_documents(outcome: Outcome) -> list[dict[str, Any]]:
    """The JSON documents plain ``dbt show --output json`` printed."""
    text, docs, decoder = "\n".join(printed(outcome)), [], json.JSONDecoder()
    position = text.find("{")
    while position != -1:
        doc, end = decoder.raw_decode(text, position)
        docs.append(doc)
        position = text.find("{", end)
    return docs


def plain_value(value: Any) -> Any:
    """A cell as JSON shows it (numbers as float, dates as ISO strings)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)):
        return float(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def plain_rows(rows: list[dict[str, Any]], *, ordered: bool = False) -> list[dict[str, Any]]:
    """Rows as JSON shows them; sorted unless the query has an ORDER BY (``ordered``).

    A table's scan order is not part of dbt's contract: two copies built the same
    table with a parallel GROUP BY may store its rows in different orders.
    """
    normal = [{k: plain_value(v) for k, v in row.items()} for row in rows]
    return normal if ordered else sorted(normal, key=repr)


def output(outcome: Outcome) -> Any:
    assert outcome.result is not None, f"the library raised {outcome.raised!r}"
    assert outcome.result.success, outcome.result.summary()
    return outcome.result.output  # type: ignore[attr-defined]


@pytest.mark.parametrize("key", ["ls-name", "ls-path", "ls-json", "ls-selector"])
def test_ls_lists_the_lines_plain_dbt_prints(runs: Runs, key: str) -> None:
    plain, lib = runs.pair(key)
    lines = printed(plain)
    assert lines, plain.output[-2000:]
    assert output(lib) == lines


@pytest.mark.parametrize("key", ["show-one", "show-inline"])
def test_show_rows_equal_plain_dbts_json(runs: Runs, key: str) -> None:
    plain, lib = runs.pair(key)
    (doc,) = json_documents(plain)
    rows = output(lib)
    assert isinstance(rows, list) and rows
    ordered = key == "show-inline"  # its query orders the rows
    assert plain_rows(rows, ordered=ordered) == plain_rows(doc["show"], ordered=ordered)


def test_show_inline_gives_dates_as_iso_strings_and_null_as_none(runs: Runs) -> None:
    rows = output(runs.lib["show-inline"])
    assert all(isinstance(r["ordered_at"], str) and r["nothing"] is None for r in rows)
    datetime.fromisoformat(rows[0]["ordered_at"])


def test_show_of_several_nodes_maps_unique_ids_to_rows(runs: Runs) -> None:
    plain, lib = runs.pair("show-many")
    by_name = {doc["node"]: doc["show"] for doc in json_documents(plain)}
    assert set(by_name) == {"customer_orders", "orders_incremental"}
    rows = output(lib)
    assert set(rows) == {CUSTOMER_ORDERS, INCREMENTAL}
    for unique_id, node_rows in rows.items():
        assert plain_rows(node_rows) == plain_rows(by_name[unique_id.split(".")[-1]])


def test_compile_of_one_node_is_its_sql(runs: Runs) -> None:
    plain, lib = runs.pair("compile-one")
    expected = (plain.results or {})[CUSTOMER_ORDERS]["compiled_code"]
    assert output(lib).strip() == expected.strip()


def test_compile_of_several_nodes_maps_unique_ids_to_sql(runs: Runs) -> None:
    plain, lib = runs.pair("compile-many")
    expected = {uid: r["compiled_code"].strip() for uid, r in (plain.results or {}).items()}
    assert INCREMENTAL in expected
    assert {uid: sql.strip() for uid, sql in output(lib).items()} == expected


def test_compile_inline_is_what_plain_dbt_prints(runs: Runs) -> None:
    plain, lib = runs.pair("compile-inline")
    lines = plain.output.splitlines()
    start = next(i for i, line in enumerate(lines) if "Compiled inline node is:" in line)
    expected = "\n".join(line for line in lines[start + 1 :] if not _LOG_LINE.match(line))
    assert " ".join(output(lib).split()) == " ".join(expected.split())


def test_run_operation_returns_the_macros_value(runs: Runs) -> None:
    plain, lib = runs.pair("run-operation")
    assert "orders above 1000: 3" in plain.output
    assert output(lib) in (3, None)  # None: dbt did not expose the return value


def test_source_freshness_lists_each_source_like_sources_json(runs: Runs) -> None:
    plain, lib = runs.pair("freshness")
    sources = output_any(lib)
    keys = {"unique_id", "source_name", "table_name", "status", "max_loaded_at"}
    keys |= {"snapshotted_at", "age_s", "error"}
    assert all(set(s) == keys for s in sources)
    assert {s["unique_id"]: s["status"] for s in sources} == plain.freshness


def test_docs_generate_reports_the_catalog(runs: Runs) -> None:
    plain, lib = runs.pair("docs")
    nodes, sources = plain.artifacts["catalog"]
    value = output(lib)
    assert value["nodes"] == len(nodes) and value["sources"] == len(sources)
    catalog = json.loads(Path(value["catalog_path"]).read_text())
    assert sorted(catalog["nodes"]) == nodes


def output_any(outcome: Outcome) -> Any:
    """The output of a command that may have failed (freshness / docs keep their value)."""
    assert outcome.result is not None, f"the library raised {outcome.raised!r}"
    return outcome.result.output  # type: ignore[attr-defined]


def test_node_results_carry_what_run_results_json_says(runs: Runs) -> None:
    for key in ("run-exclude", "test"):
        plain, lib = runs.pair(key)
        assert lib.result is not None and plain.results and lib.results
        for node in lib.result.nodes:
            expected = plain.results[node.unique_id]
            assert node.failures == expected["failures"], node.unique_id  # type: ignore[attr-defined]
            assert node.relation_name == expected["relation_name"], node.unique_id  # type: ignore[attr-defined]
            assert node.invocation_id == lib.invocation_id  # type: ignore[attr-defined]
            path = node.compiled_path  # type: ignore[attr-defined]
            if path is not None:  # relative to the project, like dbt's own
                assert (runs.lib_project / path).is_file(), path
    failing = {n.unique_id: n for n in runs.lib["test"].result.nodes}[FAILING_TEST]  # type: ignore[union-attr]
    assert failing.failures == 1  # type: ignore[attr-defined]
