"""The README's main command: `dbt-runner demo` on the embedded DuckDB, twice in a row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

MODELS = ("stg_ecs_order_info", "stg_uni_tracking_info", "stg_uni_tracking_spath")


def _demo(
    path: Path, cwd: Path, *args: str, merged: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dbt_runner.cli", "demo", "--path", str(path), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        text=True,
        timeout=300,
    )


def test_demo_runs_two_cycles_and_can_run_again(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    first = _demo(db, tmp_path)
    # the second run overwrites the file; --verbose puts the node lines in the same stream
    second = _demo(db, tmp_path, "--verbose", merged=True)
    for run, proc in ((1, first), (2, second)):
        assert proc.returncode == 0, f"run {run}:\n{proc.stdout}\n{proc.stderr}"
        out = proc.stdout
        assert "cycle 1, first build" in out and "cycle 2, incremental" in out
        for model in MODELS:
            assert out.count(model) >= 2, model  # a row per model in both cycles
        assert "11 passed, 0 failed" in out  # 8 hourly tests + 3 accepted-values (demo vars)
        assert "demo passed" in out
        assert "Traceback" not in out + (proc.stderr or "")
    assert f"DuckDB file {db} (new)" in first.stdout
    assert f"DuckDB file {db} (overwritten)" in second.stdout
    assert " START " not in first.stdout and not first.stderr.strip()  # quiet without --verbose
    # each step's header comes before the node lines that belong to it
    lines = second.stdout.splitlines()
    header = next(i for i, x in enumerate(lines) if x.startswith("[2/4] cycle 1, first build"))
    first_start = next(i for i, x in enumerate(lines) if " START model " in x)
    assert header < first_start, second.stdout
    header = next(i for i, x in enumerate(lines) if x.startswith("[4/4] cycle 2, incremental"))
    assert any(" START model " in x for x in lines[header:])
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


def test_the_readme_tour_runs_as_written_after_the_demo(tmp_path: Path) -> None:
    """A newcomer's first hour: the demo, then the README's tour pasted into Python."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    tour = readme.split("## A tour", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    demo = subprocess.run(
        [sys.executable, "-m", "dbt_runner.cli", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    proc = subprocess.run(
        [sys.executable, "-c", tour + "\nprint('TOUR', staging.success, tests.success)\n"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "<DbtSession open duckdb dbt_runner_demo.duckdb>" in proc.stdout  # which warehouse
    assert "TOUR True True" in proc.stdout
    assert sorted(p.name for p in tmp_path.glob("*.duckdb")) == ["dbt_runner_demo.duckdb"]
