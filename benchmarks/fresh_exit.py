"""A fresh ``dbt-runner cycle`` process: the console script's fast exit vs a normal exit.

Not a test: a measurement to run by hand::

    python benchmarks/fresh_exit.py [--rounds 4]

Builds the demo's DuckDB file (synthetic data, no services), then alternates,
round by round, ``dbt-runner cycle`` (the console script: ``gc.freeze()`` after
the imports, ``os._exit`` once the result is flushed) and the same command
through ``dbt_runner.cli.main()`` in a plain ``python -c`` (the interpreter's
normal teardown). Prints wall and CPU (user+sys, from ``wait4``) medians and
the per-round CPU ratio; CPU is the steadier figure on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    if not 1 <= args.rounds <= 50:
        parser.error("--rounds must be 1..50")
    bindir = Path(sys.executable).parent
    work = Path(tempfile.mkdtemp(prefix="dbr-exit-"))
    db = work / "demo.duckdb"
    subprocess.run(
        [str(bindir / "dbt-runner"), "demo", "--path", str(db)],
        cwd=work,
        check=True,
        capture_output=True,
        timeout=900,
    )
    env = dict(
        os.environ,
        DBT_RUNNER_WAREHOUSE__TYPE="duckdb",
        DBT_RUNNER_WAREHOUSE__PATH=str(db),
        DBT_RUNNER_STATE_DIR=str(work / "state"),
    )
    normal = "import sys; from dbt_runner.cli import main; sys.argv[0] = 'dbt-runner'; main()"
    commands = {
        "fast exit (dbt-runner)": [str(bindir / "dbt-runner"), "cycle", "-q"],
        "normal exit (main())": [sys.executable, "-c", normal, "cycle", "-q"],
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, command in commands.items():
            started = time.monotonic()
            proc = subprocess.Popen(
                command, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                print(f"{name} exited {os.waitstatus_to_exitcode(status)}")
                return 1
            runs[name].append((time.monotonic() - started, usage.ru_utime + usage.ru_stime))
    for name, xs in runs.items():
        wall = statistics.median(x[0] for x in xs)
        cpu = statistics.median(x[1] for x in xs)
        print(f"{name:<24} wall median {wall:6.2f}s  CPU median {cpu:5.2f}s")
    fast, slow = runs["fast exit (dbt-runner)"], runs["normal exit (main())"]
    ratios = [a[1] / b[1] for a, b in zip(fast, slow, strict=True)]
    print(
        "per-round CPU ratio fast/normal: "
        + " ".join(f"{r:.2f}" for r in ratios)
        + f"  median {statistics.median(ratios):.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
