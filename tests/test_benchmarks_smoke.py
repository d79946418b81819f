"""Smoke test: issue 25's benchmark run (``benchmarks/matrix.py``, which drives the
staging cycle of ``benchmarks/cycle.py`` and the generated project of
``benchmarks/bigproject.py``) goes end to end on a tiny size and prints its tables.

Not a performance test: it checks nothing about the figures, only that every
contender ran (in the 20 ms lane: through the delaying proxy; the lane without
added latency is the same code without it), that the generated project ran cold,
from a kept ``target/`` and from the artifact cache, that the contenders' cycles
left the staging tables equal to a full refresh, and that the goals were printed
with a verdict. Needs PostgreSQL and OpenSSH sshd (it starts its own).
"""

from __future__ import annotations

import json
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
def test_matrix_benchmark_tiny_prints_every_contender(tmp_path: Path) -> None:
    reason = postgres_unavailable_reason()
    require_service(reason is None, reason or "")
    require_service(sshd_available(), INSTALL_HINT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
    out_json = tmp_path / "matrix.json"
    contenders = ("old", "new", "newcache", "warm", "floor")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.matrix",
            "--size",
            "tiny",
            "--models",
            "30",
            "--rounds",
            "1",
            "--rtt-ms",
            "20",
            "--contenders",
            ",".join(contenders),
            # S3 is exercised by tests/integration/test_artifact_cache.py; one cache is enough
            "--no-s3",
            "--no-warm-up",
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
    for lane in ("postgres",):  # one lane: labelled by its adapter alone
        assert f"-- {lane}: cycle wall time" in output, output[-4000:]
        for contender in contenders:
            assert re.search(rf"^\s+{contender}\s+\d+\.\d+\s+\d+\.\d+\s+\d+\.\d+", output, re.M), (
                f"no result row for {contender}:\n{output[-4000:]}"
            )
    for contender in ("cold", "target", "cache-local"):
        assert re.search(rf"\[30 models\] {contender}\s+\d+\.\d+s", output), output[-4000:]
    assert "[postgres] staging == full refresh after every contender's cycles: yes" in output
    assert "== goals of issue 25" in output
    assert re.search(r"20 ms: warm / floor <= 1.8x\s+\d+\.\d+x\s+(yes|NO)", output), output[-4000:]
    figures = json.loads(out_json.read_text())
    assert [g["goal"] for g in figures["goals"]][-1] == "staging == full refresh"
    assert figures["goals"][-1]["met"] is True
