"""Differential suite, second foreign project, on DuckDB: dbt's own messages (issue 24).

``tests/fixtures/bakery_project`` (unit tests, a snapshot, saved queries, freshness rules,
deprecated settings) runs :data:`tests._differential.BAKERY_STEPS` once through plain
``dbt`` (subprocess, copy A) and once through one long-lived ``DbtSession`` (copy B);
:class:`~tests._differential.BakeryChecks` compares outcomes and dbt's messages per
command; the doctor's output is checked last, on the library's copy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._differential import (
    BAKERY,
    BAKERY_PACKAGES,
    BakeryChecks,
    Runs,
    bakery_parametrize,
    duckdb_sides,
    environment,
    run_sequence,
)

pytestmark = pytest.mark.timeout(900)
pytest_generate_tests = bakery_parametrize


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Both sides' outcomes of the bakery sequence (run once for the module)."""
    root = tmp_path_factory.mktemp("bakery-duckdb")
    plain, lib, lib_env = duckdb_sides(root, BAKERY, BAKERY_PACKAGES, "BAKERY_DUCKDB_PATH")
    plain_runs = run_sequence(plain, TestBakeryDuckDB.STEPS)
    with environment(lib_env):
        lib_runs = run_sequence(lib, TestBakeryDuckDB.STEPS)
    return Runs(plain_runs, lib_runs, plain.project, lib.project)


@pytest.fixture(scope="module")
def doctor(runs: Runs) -> tuple[Path, dict[str, str]]:
    """How the doctor reaches the library copy's warehouse: its profile, its file."""
    project = runs.lib_project
    return project / "profiles" / "duckdb", {
        "BAKERY_DUCKDB_PATH": str(project.parent / "warehouse.duckdb")
    }


class TestBakeryDuckDB(BakeryChecks):
    """The bakery sequence on DuckDB."""
