"""Smoke test: the cycle benchmark runs end to end on a tiny size and prints its tables.

Not a performance test: it checks nothing about the figures, only that every
contender ran (old, dbtcli, new, warm, floor; the postgres adapter), that their
cycles left the staging tables equal to a full refresh, and that the result
tables were printed. Needs PostgreSQL and OpenSSH sshd (it starts its own).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testbed._require import require_service
from testbed.postgres import postgres_unavailable_reason
from testbed.sshd import INSTALL_HINT, sshd_available

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_cycle_benchmark_tiny_prints_every_contender(tmp_path: Path) -> None:
    reason = postgres_unavailable_reason()
    require_service(reason is None, reason or "")
    require_service(sshd_available(), INSTALL_HINT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
    out_json = tmp_path / "cycle.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.cycle",
            "--size",
            "tiny",
            "--rounds",
            "1",
            "--latency-queries",
            "10",
            # both adapters are exercised by the integration tests; one keeps this quick
            "--adapters",
            "postgres",
            "--json",
            str(out_json),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "-- postgres: cycle wall time" in output, output[-4000:]
    for contender in ("old", "dbtcli", "new", "warm", "floor"):
        assert re.search(rf"^\s+{contender}\s+\d+\.\d+\s+\d+\.\d+\s+\d+\.\d+", output, re.M), (
            f"no result row for {contender}:\n{output[-4000:]}"
        )
    assert "ratio old/new" in output and "ratio new/floor" in output
    assert "ratio old/warm" in output and "ratio dbtcli/warm" in output
    # the contenders' incremental cycles left what a full refresh builds
    assert "[postgres] staging == full refresh after every contender's cycles: yes" in output
    assert "== summary" in output
    assert "per-query latency" in output
    assert out_json.is_file()
