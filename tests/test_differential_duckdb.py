"""Differential suite on DuckDB: every dbt command, plain ``dbt`` vs the library.

The foreign project (``tests/fixtures/foreign_project``) runs the whole command
sequence of :data:`tests._differential.STEPS` twice — plain ``dbt`` in a
subprocess on copy A, the library on copy B, each with its own DuckDB file —
and every test then compares one thing a user would notice: did the command
succeed, which nodes passed/failed/errored/were skipped, how many rows each
failing test found, what is in the warehouse, what the artifacts hold. The
command outputs (``ls`` lines, ``show`` rows, ...) are compared in
``tests/test_outputs_duckdb.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dbt_runner import DbtSession
from tests._differential import (
    INCREMENTAL,
    PACKAGE_MODEL,
    SOURCES,
    UNIT_TEST,
    DifferentialChecks,
    Runs,
    duckdb_sides,
    environment,
    parametrize_keys,
    run_sequence,
    steps,
)

pytestmark = pytest.mark.timeout(900)
pytest_generate_tests = parametrize_keys


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Both sides' outcomes of the whole sequence (run once for the module)."""
    plain, lib, lib_env = duckdb_sides(tmp_path_factory.mktemp("differential-duckdb"))
    sequence = TestDuckDB.STEPS
    plain_runs = run_sequence(plain, sequence)
    with environment(lib_env):
        lib_runs = run_sequence(lib, sequence)
    return Runs(plain_runs, lib_runs, plain.project, lib.project)


class TestDuckDB(DifferentialChecks):
    """Every command of the sequence, on DuckDB."""

    STEPS = steps()

    def test_seed_target_ci_wrote_where_plain_dbt_wrote(self, runs: Runs) -> None:
        plain, lib = runs.pair("seed-ci")
        ci = {t: v for t, v in (plain.data or {}).items() if t.startswith("ci.")}
        assert set(ci) == {"ci.raw_customers", "ci.raw_orders"}
        assert {t: v for t, v in (lib.data or {}).items() if t.startswith("ci.")} == ci

    def test_clone_into_ci_from_the_saved_state_like_plain_dbt(self, runs: Runs) -> None:
        plain, lib = runs.pair("clone")
        assert (plain.statuses or {})[INCREMENTAL] == "success"
        assert "ci.orders_incremental" in (plain.data or {})
        assert lib.statuses == plain.statuses
        assert lib.data == plain.data

    @pytest.mark.parametrize("key", ["parse", "compile", "docs"])
    def test_manifest_holds_the_same_nodes(self, runs: Runs, key: str) -> None:
        plain, lib = runs.pair(key)
        manifest = plain.artifacts.get("manifest")
        assert manifest and PACKAGE_MODEL in manifest and UNIT_TEST in manifest
        assert lib.artifacts.get("manifest") == manifest

    def test_docs_generate_writes_the_same_catalog(self, runs: Runs) -> None:
        plain, lib = runs.pair("docs")
        nodes, sources = plain.artifacts["catalog"]
        assert INCREMENTAL in nodes and set(SOURCES) <= set(sources)
        assert lib.artifacts.get("catalog") == plain.artifacts["catalog"]
        # written by this very step on both sides: no catalog before it
        assert "catalog" not in runs.lib["freshness"].artifacts
        assert "catalog" not in runs.plain["freshness"].artifacts

    def test_clean_removes_what_plain_dbt_removes(self, runs: Runs) -> None:
        plain, lib = runs.pair("clean")
        assert plain.ok and lib.ok
        for project in (runs.plain_project, runs.lib_project):
            assert not (project / "target").exists()
            assert not (project / "dbt_packages").exists()

    def test_plain_run_operation_logs_the_macros_value(self, runs: Runs) -> None:
        plain, _ = runs.pair("run-operation")
        assert plain.ok and "orders above 1000: 3" in plain.output

    def test_run_operation_returns_a_result_like_plain_dbt(self, runs: Runs) -> None:
        _, lib = runs.pair("run-operation")
        assert lib.raised is None, f"the library raised {lib.raised!r}"
        assert lib.ok


def test_one_session_builds_children_of_an_ephemeral_model_twice(tmp_path: Path) -> None:
    """What an orchestrator's long-lived session does every cycle: the same run twice."""
    _, lib, lib_env = duckdb_sides(tmp_path)
    args = ["run", "--exclude", "tag:broken"]
    with environment(lib_env), DbtSession(lib.settings()) as session:
        for command in (["deps"], ["seed"], args):
            assert session.invoke(command).success, command
        again = session.invoke(args)
    assert again.success, again.summary()
