"""The differential suite's plain ``dbt`` (:mod:`tests._dbt_fork`) is the ``dbt`` executable.

Both run the same commands on twin copies of a small DuckDB project; the exit codes,
what they print and what they write to ``target/`` must be the same.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests import _dbt_fork

FILES = {
    "dbt_project.yml": 'name: twin\nversion: "1.0"\nprofile: twin\nconfig-version: 2\n',
    "models/greeting.sql": "select '{{ env_var(\"TWIN_GREETING\") }}' as greeting\n",
    "models/broken.sql": "{{ config(materialized='table') }} select cast('x' as integer) as n\n",
}


def _project(root: Path) -> Path:
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    profile = {"twin": {"target": "dev", "outputs": {"dev": {"type": "duckdb", "path": "w.db"}}}}
    (root / "profiles.yml").write_text(json.dumps(profile))
    return root


def _env(project: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DBT_PROFILES_DIR": str(project),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_USE_COLORS": "false",
        "TWIN_GREETING": "hello from the environment",
    }


@pytest.fixture
def twins(tmp_path: Path) -> tuple[Path, Path]:
    return _project(tmp_path / "exe"), _project(tmp_path / "fork")


def _both(
    twins: tuple[Path, Path], *args: str
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    exe, fork = twins
    by_exe = subprocess.run(
        [_dbt_fork.DBT, *args],
        cwd=exe,
        env=_env(exe),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    return by_exe, _dbt_fork.run(args, cwd=fork, env=_env(fork), timeout=240)


def test_a_failing_run_exits_and_writes_like_the_executable(twins: tuple[Path, Path]) -> None:
    by_exe, by_fork = _both(twins, "run")
    assert by_exe.returncode == by_fork.returncode == 1, by_fork.stdout + by_fork.stderr
    statuses = []
    for project in twins:
        results = json.loads((project / "target" / "run_results.json").read_text())
        statuses.append({r["unique_id"]: r["status"] for r in results["results"]})
    assert (
        statuses[0]
        == statuses[1]
        == {
            "model.twin.greeting": "success",
            "model.twin.broken": "error",
        }
    )
    for proc in (by_exe, by_fork):  # dbt's summary line, on stdout, in both
        assert "Completed with 1 error, 0 partial successes, and 0 warnings" in proc.stdout
    assert (twins[1] / "logs" / "dbt.log").read_text().count("Running with dbt=") == 1


def test_the_command_s_environment_and_directory_reach_dbt(twins: tuple[Path, Path]) -> None:
    by_exe, by_fork = _both(twins, "compile", "-q", "--select", "greeting")
    assert by_exe.returncode == by_fork.returncode == 0, by_fork.stdout + by_fork.stderr
    assert by_fork.stdout == by_exe.stdout
    assert "select 'hello from the environment' as greeting" in by_fork.stdout
    assert (twins[1] / "target" / "compiled" / "twin" / "models" / "greeting.sql").exists()


def test_a_usage_error_prints_and_exits_like_the_executable(twins: tuple[Path, Path]) -> None:
    by_exe, by_fork = _both(twins, "run", "--no-such-flag")
    assert by_exe.returncode == by_fork.returncode == 2
    assert by_fork.stderr == by_exe.stderr
    assert "No such option '--no-such-flag'" in by_fork.stderr
    assert by_fork.stderr.startswith("Usage: dbt run")
