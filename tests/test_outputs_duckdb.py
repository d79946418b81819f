"""``RunResult.output`` and the node fields against what plain ``dbt`` prints and writes.

A small foreign project (a seed, two models, a source with freshness, a macro
that returns a value, a snapshot, a test that fails) is written twice: plain
``dbt`` (a process of its own) runs one copy, a :class:`DbtSession` the other, each
on its own DuckDB file of the same name (so both compile to the same SQL).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import DbtSession, RunResult, Settings
from tests import _dbt_fork

FILES = {
    "dbt_project.yml": """\
name: shop
version: "1.0"
profile: shop
config-version: 2
""",
    "seeds/raw_orders.csv": """\
id,amount,ordered_at,loaded_at
1,10.50,2026-01-01,2026-01-01 10:00:00
2,20.25,2026-01-02,2026-01-02 11:00:00
3,-5.00,2026-01-03,2026-01-03 12:00:00
4,-1.10,2026-01-04,2026-01-04 13:30:00
""",
    "models/schema.yml": """\
version: 2
sources:
  - name: raw
    schema: main
    tables:
      - name: raw_orders
        loaded_at_field: loaded_at
        config:
          freshness:
            warn_after: {count: 1, period: day}
            error_after: {count: 36500, period: day}
models:
  - name: orders
    columns:
      - name: id
        data_tests: [not_null, unique]
""",
    "models/orders.sql": """\
select id, amount::decimal(10, 2) as amount, ordered_at::date as ordered_at,
       loaded_at::timestamp as loaded_at, null::varchar as note
from {{ source('raw', 'raw_orders') }}
""",
    "models/order_totals.sql": """\
select count(*) as n, sum(amount) as total from {{ ref('orders') }}
""",
    "tests/positive_amounts.sql": """\
select * from {{ ref('orders') }} where amount < 0
""",
    "macros/answer.sql": """\
{% macro answer(x=41) %}
  {% set value = {"answer": x + 1, "items": [1, 2], "name": "shop"} %}
  {{ print(tojson(value)) }}
  {{ return(value) }}
{% endmacro %}
{% macro say_nothing() %}
  {% do log("nothing to return", info=False) %}
{% endmacro %}
""",
    "snapshots/orders_snap.sql": """\
{% snapshot orders_snap %}
{{ config(target_schema='main', unique_key='id', strategy='check', check_cols='all') }}
select id, amount from {{ ref('orders') }}
{% endsnapshot %}
""",
}


def _write_project(root: Path) -> Path:
    """The project in ``root/project`` with a profile on ``root/db/shop.duckdb``."""
    project = root / "project"
    for rel, text in FILES.items():
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "db").mkdir(parents=True, exist_ok=True)
    profile = {
        "shop": {
            "target": "dev",
            "outputs": {
                "dev": {
                    "type": "duckdb",
                    "path": str(root / "db" / "shop.duckdb"),
                    "schema": "main",
                    "threads": 2,
                }
            },
        }
    }
    (project / "profiles.yml").write_text(json.dumps(profile))
    return project


def _dbt(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Plain dbt in a process of its own, as a user runs it in the project directory
    (forked after dbt's import: :mod:`tests._dbt_fork`)."""
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DBT_USE_COLORS": "false"}
    proc = _dbt_fork.run([*args, "--profiles-dir", str(project)], cwd=project, env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _json_objects(text: str) -> list[Any]:
    """Every JSON document dbt printed one after another on stdout."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while True:
        start = min((p for p in (text.find("{", i), text.find("[", i)) if p >= 0), default=-1)
        if start < 0:
            return out
        value, i = decoder.raw_decode(text, start)
        out.append(value)


def _settings(project: Path) -> Settings:
    return Settings(project_dir=project, profiles_dir=project, retry={"attempts": 1})


class Twins:
    """The plain-dbt copy and the library's copy of the project, built alike."""

    def __init__(self, plain: Path, lib: Path, session: DbtSession) -> None:
        self.plain, self.lib, self.session = plain, lib, session

    def both(self, args: list[str]) -> tuple[subprocess.CompletedProcess[str], RunResult]:
        """``args`` run by plain dbt on one copy and by the session on the other."""
        proc = _dbt(self.plain, *args, "-q", check=False)
        return proc, self.session.invoke(args)


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twins]:
    plain = _write_project(tmp_path_factory.mktemp("plain"))
    lib = _write_project(tmp_path_factory.mktemp("lib"))
    _dbt(plain, "seed")  # the models read it as a source: dbt build would not order it first
    _dbt(plain, "build", "--exclude", "positive_amounts", "resource_type:seed")
    with DbtSession(_settings(lib)) as session:  # one session for the module, as in a notebook
        for step in (["seed"], ["run"], ["snapshot"]):
            session.invoke(step).raise_for_status()
        yield Twins(plain, lib, session)


def test_ls_output_is_the_lines_plain_dbt_prints(twins: Twins) -> None:
    proc, result = twins.both(["ls"])
    assert result.success
    assert result.output == proc.stdout.splitlines()
    assert "source:shop.raw.raw_orders" in result.output


def test_ls_json_with_output_keys_is_what_plain_dbt_prints(twins: Twins) -> None:
    args = ["ls", "--resource-type", "model", "--output", "json"]
    proc, result = twins.both([*args, "--output-keys", "name", "resource_type"])
    assert result.output == proc.stdout.splitlines()
    assert [json.loads(line) for line in result.output] == [
        {"name": "order_totals", "resource_type": "model"},
        {"name": "orders", "resource_type": "model"},
    ]


def test_show_of_one_model_gives_the_rows_dbt_show_prints(twins: Twins) -> None:
    proc, result = twins.both(["show", "--select", "orders", "--output", "json"])
    assert result.success, result.summary()
    (printed,) = _json_objects(proc.stdout)
    assert printed["node"] == "orders"
    assert result.output == printed["show"]
    assert result.output[0] == {
        "id": 1,
        "amount": 10.5,
        "ordered_at": "2026-01-01",
        "loaded_at": "2026-01-01T10:00:00",
        "note": None,
    }


def test_show_inline_honours_limit(twins: Twins) -> None:
    sql = "select id, amount from {{ ref('orders') }} order by id"
    proc, result = twins.both(["show", "--inline", sql, "--limit", "2", "--output", "json"])
    (printed,) = _json_objects(proc.stdout)
    assert (
        result.output == printed["show"] == [{"id": 1, "amount": 10.5}, {"id": 2, "amount": 20.25}]
    )


def test_show_of_several_nodes_gives_rows_by_unique_id(twins: Twins) -> None:
    session = twins.session
    # dbt's console previews nodes whose name is in the selection: none for a path
    several = session.invoke(
        ["show", "--select", "path:models", "--exclude", "resource_type:test", "--limit", "1"]
    )
    named = session.invoke(["show", "--select", "order_totals"])
    assert several.success, several.summary()
    assert several.output == {
        "model.shop.orders": [
            {
                "id": 1,
                "amount": 10.5,
                "ordered_at": "2026-01-01",
                "loaded_at": "2026-01-01T10:00:00",
                "note": None,
            }
        ],
        "model.shop.order_totals": [{"n": 4, "total": 24.65}],
    }
    assert named.output == [{"n": 4, "total": 24.65}]


def test_compile_output_is_the_sql_dbt_writes_under_target_compiled(twins: Twins) -> None:
    proc, result = twins.both(["compile", "--select", "orders"])
    assert proc.returncode == 0
    written = twins.plain / "target" / "compiled" / "shop" / "models" / "orders.sql"
    assert result.output == written.read_text()
    (orders,) = [n for n in result.nodes if n.name == "orders"]
    assert orders.compiled_path == str(
        twins.lib / "target" / "compiled" / "shop" / "models" / "orders.sql"
    )
    assert Path(orders.compiled_path).read_text() == result.output


def test_compile_of_every_node_gives_sql_by_unique_id(twins: Twins) -> None:
    result = twins.session.invoke(["compile"])
    assert isinstance(result.output, dict)
    assert set(result.output) == {n.unique_id for n in result.nodes}
    compiled = twins.lib / "target" / "compiled" / "shop" / "models" / "order_totals.sql"
    assert result.output["model.shop.order_totals"] == compiled.read_text()


def test_compile_inline_gives_the_sql_dbt_prints(twins: Twins) -> None:
    sql = "select count(*) from {{ ref('orders') }}"
    proc, result = twins.both(["compile", "--inline", sql, "--output", "json"])
    (printed,) = _json_objects(proc.stdout)
    assert result.output == printed["compiled"]


def test_run_operation_output_is_the_macro_return_value(twins: Twins) -> None:
    proc, result = twins.both(["run-operation", "answer", "--args", "{x: 1}"])
    assert result.success, result.summary()
    # the macro prints what it returns: plain dbt shows it, the result carries it
    (printed,) = _json_objects(proc.stdout)
    assert result.output == printed == {"answer": 2, "items": [1, 2], "name": "shop"}
    assert RunResult.from_dict(json.loads(result.to_json())).output == result.output


def test_run_operation_without_return_has_no_output(twins: Twins) -> None:
    result = twins.session.invoke(["run-operation", "say_nothing"])
    assert result.success, result.summary()
    assert result.output is None
    assert [n.unique_id for n in result.nodes] == ["macro.shop.say_nothing"]


def test_source_freshness_output_matches_sources_json(twins: Twins) -> None:
    proc, result = twins.both(["source", "freshness"])
    assert result.success and proc.returncode == 0
    plain = json.loads((twins.plain / "target" / "sources.json").read_text())["results"]
    own = json.loads((twins.lib / "target" / "sources.json").read_text())["results"]
    assert [(e["unique_id"], e["status"], e["max_loaded_at"]) for e in plain] == [
        (e["unique_id"], e["status"], e["max_loaded_at"]) for e in result.output
    ]
    assert result.output == [
        {
            "unique_id": e["unique_id"],
            "source_name": "raw",
            "table_name": "raw_orders",
            "status": "warn",
            "max_loaded_at": e["max_loaded_at"],
            "snapshotted_at": e["snapshotted_at"],
            "age_s": e["max_loaded_at_time_ago_in_s"],
            "error": None,
        }
        for e in own
    ]


def test_docs_generate_output_counts_the_catalog(twins: Twins) -> None:
    proc, result = twins.both(["docs", "generate"])
    assert result.success and proc.returncode == 0
    plain = json.loads((twins.plain / "target" / "catalog.json").read_text())
    assert result.output is not None
    assert result.output["nodes"] == len(plain["nodes"]) == 4  # seed, 2 models, snapshot
    assert result.output["sources"] == len(plain["sources"]) == 1
    own = json.loads(Path(result.output["catalog_path"]).read_text())
    assert set(own["nodes"]) == set(plain["nodes"])


def test_failing_test_counts_its_failing_rows_and_models_name_their_relation(
    twins: Twins,
) -> None:
    proc, result = twins.both(["build", "--select", "orders+"])
    assert proc.returncode == 1 and not result.success
    plain = json.loads((twins.plain / "target" / "run_results.json").read_text())["results"]
    plain_failures = {e["unique_id"]: e["failures"] for e in plain}
    (failing,) = [n for n in result.nodes if n.status == "fail"]
    assert failing.name == "positive_amounts"
    assert failing.failures == plain_failures[failing.unique_id] == 2
    assert failing.rows_affected is None
    passing = [n for n in result.nodes if n.status == "pass"]
    assert passing and all(n.failures == 0 and n.rows_affected is None for n in passing)

    manifest = json.loads((twins.lib / "target" / "manifest.json").read_text())["nodes"]
    for node in result.nodes:
        assert node.relation_name == manifest[node.unique_id]["relation_name"]
        assert node.invocation_id == result.invocation_id
    run_results = json.loads((twins.lib / "target" / "run_results.json").read_text())
    assert result.invocation_id == run_results["metadata"]["invocation_id"]


def test_seed_reports_rows_written_and_dbt_adapter_response(twins: Twins) -> None:
    result = twins.session.invoke(["seed"])
    (seed,) = result.nodes
    assert seed.rows_affected == 4
    assert seed.adapter_response["rows_affected"] == 4
    assert seed.relation_name == '"shop"."main"."raw_orders"'
    assert json.loads(json.dumps(result.to_dict()))["nodes"][0]["adapter_response"] == (
        seed.adapter_response
    )


def test_every_dbt_command_runs_through_a_session(tmp_path: Path) -> None:
    project = _write_project(tmp_path)
    state = tmp_path / "state"
    expected_success = {
        ("deps",): True,
        ("debug",): True,
        ("parse",): True,
        ("seed",): True,
        ("run",): True,
        ("snapshot",): True,
        ("compile",): True,
        ("ls",): True,
        ("show",): True,
        ("run-operation",): True,
        ("test",): False,  # positive_amounts fails on purpose
        ("build",): False,
        ("retry",): False,  # re-runs the failing test
        ("clone",): True,
        ("source", "freshness"): True,
        ("docs", "generate"): True,
        ("clean",): True,
    }
    commands = [
        ["deps"],
        ["debug"],
        ["parse"],
        ["seed"],
        ["run"],
        ["snapshot"],
        ["compile", "--select", "orders"],
        ["ls", "--select", "orders"],
        ["show", "--select", "orders"],
        ["run-operation", "answer"],
        ["test"],
        ["build"],
        ["retry"],
        ["clone", "--state", str(state)],
        ["source", "freshness"],
        ["docs", "generate"],
        ["clean"],
    ]
    outcomes: dict[tuple[str, ...], bool] = {}
    with DbtSession(_settings(project)) as session:
        for args in commands:
            if args[0] == "clone":
                shutil.copytree(project / "target", state)
            result = session.invoke(args)
            words = tuple(args[:2]) if args[0] in ("source", "docs") else (args[0],)
            outcomes[words] = result.success
            if result.success:
                assert result.exit_code == 0
            else:
                assert result.error is not None and result.error.kind.value == "test_failure"
                assert result.exit_code == 1
            assert RunResult.from_dict(json.loads(result.to_json())) == result
    assert outcomes == expected_success
    assert not (project / "target").exists()  # dbt clean removed it


def test_debug_that_cannot_connect_is_a_failed_result(tmp_path: Path) -> None:
    project = _write_project(tmp_path)
    profile = json.loads((project / "profiles.yml").read_text())
    profile["shop"]["outputs"]["dev"]["path"] = str(tmp_path / "no" / "such" / "dir" / "x.duckdb")
    (project / "profiles.yml").write_text(json.dumps(profile))
    plain = _dbt(project, "debug", check=False)
    with DbtSession(_settings(project)) as session:
        result = session.invoke(["debug"])
    assert plain.returncode == 1
    assert not result.success
    assert result.error is not None and "dbt debug" in result.error.message
    assert result.exit_code == 2  # bad configuration: never retried
