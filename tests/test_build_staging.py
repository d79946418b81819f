"""``DbtSession.build_staging``: one ``dbt build`` instead of run + test, and how its
semantics differ (a failed test skips the models downstream of it), on real dbt + DuckDB."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dbt_runner import DbtSession, Settings

MINI = Path(__file__).parent / "fixtures" / "mini_project"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    project = tmp_path / "project"
    shutil.copytree(MINI, project, ignore=shutil.ignore_patterns("target", "logs"))
    (project / "models" / "downstream.sql").write_text(
        "{{ config(tags=['staging']) }}\nselect part from {{ ref('part_2') }}\n"
    )
    return Settings(
        project_dir=project,
        warehouse={"type": "duckdb", "path": str(tmp_path / "b.duckdb"), "schema": "stg"},
        state_dir=tmp_path / "state",
        retry={"attempts": 1},
    )


def _statuses(nodes: object) -> dict[str, str]:
    return {n.name: n.status for n in nodes}  # type: ignore[attr-defined]


def test_build_runs_models_and_their_tests_in_one_invocation(settings: Settings) -> None:
    with DbtSession(settings) as session:
        built = session.build_staging(threads=3)
    assert built.success, built.summary()
    assert built.command == "build"
    kinds = {n.resource_type for n in built.nodes}
    assert kinds == {"model", "test"}
    assert {n.name for n in built.nodes if n.resource_type == "model"} == {
        "part_1",
        "part_2",
        "part_3",
        "downstream",
    }
    assert len([n for n in built.nodes if n.resource_type == "test"]) == 3


def test_a_failed_test_skips_downstream_models_in_build_but_not_in_run_then_test(
    settings: Settings,
) -> None:
    schema = settings.resolved_project_dir / "models" / "schema.yml"
    schema.write_text(schema.read_text().replace("values: [2250000]", "values: [1]"))
    with DbtSession(settings) as session:
        staging = session.run_staging(threads=3)
        tests = session.run_tests(threads=3)
        built = session.build_staging(threads=3)
    # run + test: every model is built, then the test reports the bad value
    assert staging.success and _statuses(staging.nodes)["downstream"] == "success"
    assert not tests.success
    # build: the failed test on part_2 stops what depends on part_2
    statuses = _statuses(built.nodes)
    assert not built.success
    assert statuses["downstream"] == "skipped"
    assert statuses["part_1"] == statuses["part_3"] == "success"
    assert built.error is not None and built.error.kind.value == "test_failure"
