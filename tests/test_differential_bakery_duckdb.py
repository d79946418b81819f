"""Differential suite, second foreign project, on DuckDB: dbt's own messages (issue 24).

``tests/fixtures/bakery_project`` (unit tests, a snapshot, saved queries, freshness rules,
deprecated settings) runs :data:`tests._differential.BAKERY_STEPS` once through plain
``dbt`` (subprocess, copy A) and once through one long-lived ``DbtSession`` (copy B);
:class:`~tests._differential.BakeryChecks` compares outcomes and dbt's messages per
command. The doctor's output is checked last, on the library's copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests._differential import (
    BAKERY,
    BAKERY_PACKAGES,
    PLAIN_TIMEOUT_S,
    BakeryChecks,
    Library,
    PlainDbt,
    Runs,
    bakery_parametrize,
    deprecation_summaries,
    duckdb_snapshot,
    environment,
    library_settings,
    make_copy,
    run_sequence,
)

pytestmark = pytest.mark.timeout(900)
pytest_generate_tests = bakery_parametrize


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Both sides' outcomes of the bakery sequence (run once for the module)."""
    root = tmp_path_factory.mktemp("bakery-duckdb")
    plain_project = make_copy(root / "a", BAKERY, BAKERY_PACKAGES)
    lib_project = make_copy(root / "b", BAKERY, BAKERY_PACKAGES)
    plain_db, lib_db = root / "a" / "warehouse.duckdb", root / "b" / "warehouse.duckdb"
    plain = PlainDbt(
        plain_project,
        plain_project / "profiles" / "duckdb",
        duckdb_snapshot(plain_db),
        {"BAKERY_DUCKDB_PATH": str(plain_db)},
    )
    profiles = lib_project / "profiles" / "duckdb"
    lib = Library(
        lib_project,
        profiles,
        duckdb_snapshot(lib_db),
        lambda: library_settings(lib_project, profiles_dir=profiles),
    )
    plain_runs = run_sequence(plain, TestBakeryDuckDB.STEPS)
    with environment({"BAKERY_DUCKDB_PATH": str(lib_db)}):
        lib_runs = run_sequence(lib, TestBakeryDuckDB.STEPS)
    return Runs(plain_runs, lib_runs, plain.project, lib.project)


def doctor(project: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``dbt-runner doctor`` on ``project`` with its DuckDB profile, as a user runs it."""
    executable = shutil.which("dbt-runner", path=str(Path(sys.executable).parent))
    assert executable is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
    env["BAKERY_DUCKDB_PATH"] = str(project.parent / "warehouse.duckdb")
    return subprocess.run(
        [executable, "doctor", "--hold", "0", *flags],
        cwd=project,
        env={
            **env,
            "DBT_RUNNER_PROJECT_DIR": str(project),
            "DBT_RUNNER_PROFILES_DIR": str(project / "profiles" / "duckdb"),
        },
        capture_output=True,
        text=True,
        timeout=PLAIN_TIMEOUT_S,
        check=False,
    )


class TestBakeryDuckDB(BakeryChecks):
    """The bakery sequence on DuckDB."""

    def test_doctor_prints_only_its_own_lines_and_dbts_with_verbose(self, runs: Runs) -> None:
        quiet = doctor(runs.lib_project)
        assert quiet.returncode == 0, quiet.stdout + quiet.stderr
        assert "parse         OK" in quiet.stdout  # it parsed, where dbt met its deprecations
        for stream in (quiet.stdout, quiet.stderr):
            assert "Deprecated functionality" not in stream
            assert "encountered deprecations" not in stream
            assert "[WARNING]" not in stream
        verbose = doctor(runs.lib_project, "--verbose")
        assert verbose.returncode == 0, verbose.stdout + verbose.stderr
        assert "Deprecated functionality" not in verbose.stdout  # stdout is the report
        assert deprecation_summaries(verbose.stderr)  # dbt's own lines, asked for
