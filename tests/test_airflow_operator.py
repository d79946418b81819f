"""``DbtRunnerOperator``'s parts without running dbt: steps, asset names, the operator.

The operator running for real (dag.test() on Airflow 2.10 and 3, asset events in the
metadata DB) is in tests/integration/test_airflow_dag.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import ConfigurationError, NodeResult, RunResult, Settings, Step
from dbt_runner._lineage import Location, relation_parts, target_location
from dbt_runner.airflow import asset_events, command_steps, settings_from_connections
from tests._differential import FIXTURES
from tests.test_airflow_settings import KEY_TEXT, PASSWORD, bastion, redshift

airflow_sdk = pytest.importorskip("airflow.sdk")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DBT_RUNNER_"):
            monkeypatch.delenv(name)


# ---------------------------------------------------------------------- steps
def test_building_blocks_carry_selection_vars_threads_and_scope() -> None:
    steps = command_steps(
        "cycle", select="tag:nightly", exclude="tag:wip", vars={"d": 1}, threads=4, scope="full"
    )
    assert [(s.operation, s.kwargs) for s in steps] == [
        (
            "run_staging",
            {"select": "tag:nightly", "exclude": "tag:wip", "vars": {"d": 1}, "threads": 4},
        ),
        (
            "run_tests",
            {
                "select": "tag:nightly",
                "exclude": "tag:wip",
                "vars": {"d": 1},
                "threads": 4,
                "scope": "full",
            },
        ),
    ]
    assert command_steps("run_staging") == [Step("run_staging")]
    assert command_steps("build_staging", scope="all") == [Step("build_staging", {"scope": "all"})]


def test_a_dbt_command_gets_the_flags_it_does_not_give_itself() -> None:
    [step] = command_steps(
        ["build", "--select", "tag:marts"], select="ignored", exclude="tag:broken", vars={"a": 1}
    )
    assert step.operation == "invoke"
    assert step.args == (
        "build",
        "--select",
        "tag:marts",
        "--exclude",
        "tag:broken",
        "--vars",
        '{"a": 1}',
    )
    [step] = command_steps("seed -s raw_orders", select="ignored", threads=2)
    assert step.args == ("seed", "-s", "raw_orders") and step.kwargs == {"threads": 2}
    with pytest.raises(ConfigurationError, match="command is empty"):
        command_steps("  ")


# ---------------------------------------------------------------------- asset names
def _node(uid: str, kind: str, status: str, relation: str | None) -> NodeResult:
    return NodeResult(
        uid, uid.split(".")[-1], kind, status, None, None, 0.1, "Thread-1", 1, None,
        relation_name=relation,
    )  # fmt: skip


def test_asset_events_are_the_relations_written() -> None:
    nodes = (
        _node("model.shop.orders", "model", "success", '"db"."stg"."orders"'),
        _node("seed.shop.raw", "seed", "success", '"db"."stg"."raw"'),
        _node("model.shop.broken", "model", "error", '"db"."stg"."broken"'),
        _node("model.shop.ephemeral", "model", "success", None),
        _node("test.shop.unique_orders_id.abc", "test", "pass", None),
    )
    result = RunResult("build", False, "", 1.0, 2, 1, nodes)
    where = Location("redshift", "cluster.example.com", None, None)
    assert [uri for uri, _ in asset_events({"build": result}, where)] == [
        "redshift://cluster.example.com:5439/db/stg/orders",
        "redshift://cluster.example.com:5439/db/stg/raw",
    ]


def test_relation_names_of_several_quoting_styles() -> None:
    assert relation_parts('"DB"."My Schema"."t"') == ("DB", "My Schema", "t")
    assert relation_parts("`proj`.`ds`.`t`") == ("proj", "ds", "t")
    assert relation_parts("[db].[dbo].[t]") == ("db", "dbo", "t")
    where = Location("postgres", "pg", 5433, None)
    assert where.asset_uri('"db"."My Schema"."t"') == "postgres://pg:5433/db/My%20Schema/t"
    assert Location("snowflake", None, None, None).asset_uri('"a"."b"."c"') is None


def test_the_location_of_your_own_profile_is_rendered_like_dbt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project = FIXTURES / "foreign_project"
    monkeypatch.setenv("FOREIGN_PG_HOST", "pg.internal")
    monkeypatch.setenv("FOREIGN_PG_PORT", "6543")
    monkeypatch.setenv("FOREIGN_PG_USER", "shop")
    monkeypatch.setenv("DBT_ENV_SECRET_FOREIGN_PG_PASSWORD", PASSWORD)
    monkeypatch.setenv("FOREIGN_PG_DBNAME", "shop")
    settings = Settings(project_dir=project, profiles_dir=project / "profiles" / "postgres")
    where = target_location(settings)
    assert where.namespace == "postgres://pg.internal:6543"
    assert PASSWORD not in repr(where)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FOREIGN_DUCKDB_PATH", "shop.duckdb")  # relative: dbt's working dir
    settings = Settings(
        project_dir=project, profiles_dir=project / "profiles" / "duckdb", target="ci"
    )
    assert target_location(settings).namespace == f"duckdb://{tmp_path / 'shop.duckdb'}"


def test_a_bastion_connection_tunnels_to_your_own_profile(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text(KEY_TEXT)
    key.chmod(0o600)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "dbt_project.yml").write_text("name: p\nprofile: p\nconfig-version: 2\n")
    (project / "profiles.yml").write_text(
        "p:\n  target: dev\n  outputs:\n    dev: {type: postgres, host: db.internal, port: 5432,"
        " user: u, password: x, dbname: d, schema: s}\n"
    )
    conn = bastion(key_file=str(key), host_key="ssh-ed25519 " + "A" * 68)
    with settings_from_connections(None, conn, project_dir=project, profiles_dir=project) as s:
        assert s.profiles_dir == project and s.ssh.host == "bastion.example.com"
        assert s.warehouse.type == "duckdb"  # untouched: the warehouse is the profile's
        assert target_location(s).namespace == "postgres://db.internal:5432"  # not the tunnel


# ---------------------------------------------------------------------- the operator
def _operator(**kwargs: Any) -> Any:
    from dbt_runner.airflow import DbtRunnerOperator

    with airflow_sdk.DAG("shop", schedule=None):
        return DbtRunnerOperator(task_id="nightly", **kwargs)


def test_the_operator_declares_its_alias_outlet_and_template_fields() -> None:
    op = _operator(command="build --select tag:nightly", outlets=[airflow_sdk.Asset("x://y/z")])
    assert op.outlets == [
        airflow_sdk.Asset("x://y/z"),
        airflow_sdk.AssetAlias("dbt_runner/shop/nightly"),
    ]
    assert {"select", "exclude", "target", "vars", "threads", "project_dir"} <= set(
        op.template_fields
    )
    op = _operator(asset_alias="staging_tables")
    assert op.outlets == [airflow_sdk.AssetAlias("staging_tables")]


def test_steps_from_the_context_and_rendered_parameters() -> None:
    op = _operator(steps=lambda context: [{"operation": "invoke", "args": [context["cmd"]]}])
    assert op.steps_for({"cmd": "seed"}) == [Step("invoke", args=("seed",))]
    # what templates render to: text
    op = _operator(command="run_tests", select="tag:x", threads="2", vars='{"d": 3}', exclude="")
    assert op.steps_for({}) == [
        Step("run_tests", {"select": "tag:x", "threads": 2, "vars": {"d": 3}, "scope": "recent"})
    ]


def test_on_kill_cancels_what_runs() -> None:
    class Running:
        cancelled = 0

        def cancel(self) -> bool:
            self.cancelled += 1
            return True

    op = _operator()
    op.on_kill()  # nothing runs: nothing to do
    running = Running()
    op._running = running
    op.on_kill()
    assert running.cancelled == 1


def test_connections_never_reach_an_asset_uri() -> None:
    conn = redshift()
    with settings_from_connections(conn) as settings:
        where = target_location(settings)
    uri = where.asset_uri('"analytics"."staging"."orders"')
    assert (
        uri
        == "redshift://cluster.abc.eu-west-1.redshift.amazonaws.com:5439/analytics/staging/orders"
    )
    assert PASSWORD not in uri and "dbt@" not in uri


def test_a_bad_step_fails_the_task_without_retries() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    op = _operator(steps=[{"operation": "run_everything"}])
    with pytest.raises(AirflowFailException, match="unknown step operation 'run_everything'"):
        op.execute({})
