"""The README's main command: `dbt-runner demo` on the embedded DuckDB, twice in a row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

MODELS = ("stg_ecs_order_info", "stg_uni_tracking_info", "stg_uni_tracking_spath")


def _demo(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dbt_runner.cli", "demo", "--path", str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_runs_two_cycles_and_can_run_again(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    for run in (1, 2):
        proc = _demo(db, tmp_path)
        assert proc.returncode == 0, f"run {run}:\n{proc.stdout}\n{proc.stderr}"
        out = proc.stdout
        assert "cycle 1, first build" in out and "cycle 2, incremental" in out
        for model in MODELS:
            assert out.count(model) >= 2, model  # a row per model in both cycles
        assert "11 passed, 0 failed" in out  # 8 hourly tests + 3 accepted-values (demo vars)
        assert "demo passed" in out
        assert "Traceback" not in proc.stderr
    # the staging tables are really there, and the DuckDB file is free once the demo ended
    con = duckdb.connect(str(db), read_only=True)
    try:
        for model in MODELS:
            [(rows,)] = con.execute(f"select count(*) from staging.{model}").fetchall()
            assert rows > 0, model
        [(dupes,)] = con.execute(
            "select count(*) - count(distinct order_id) from staging.stg_ecs_order_info"
        ).fetchall()
        assert dupes == 0
    finally:
        con.close()
