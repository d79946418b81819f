"""A long-lived ``DbtSession`` (a notebook, a long-running orchestrator): memory over time.

Not a test: a measurement to run by hand::

    python benchmarks/long_session.py [--invocations 200] [--every 20]

Opens one session on the bundled staging project over an embedded DuckDB file
with an hour of synthetic raw data, then runs ``run_staging`` and ``run_tests``
alternately (the same incremental work each time: the file is the session's
while it is open), printing the process's
resident memory (RSS, from /proc) and the time per invocation every
``--every`` invocations. Memory that keeps growing is a leak; a plateau is the
manifest, the adapter and Python's allocator settling.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

T0 = 1_767_225_600  # 2026-01-01 00:00 UTC


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=200)
    parser.add_argument("--every", type=int, default=20)
    args = parser.parse_args()
    if not 2 <= args.invocations <= 5000:
        parser.error("--invocations must be 2..5000")

    import duckdb

    from dbt_runner import DbtSession, Settings
    from dbt_runner.synthetic import create_raw_tables, load_batch

    work = Path(tempfile.mkdtemp(prefix="dbr-long-"))
    db = work / "long.duckdb"
    con = duckdb.connect(str(db))
    create_raw_tables(con, "duckdb")
    load_batch(con, "duckdb", T0, T0 + 3600, orders_per_minute=20)
    con.close()
    settings = Settings(
        warehouse={"type": "duckdb", "path": str(db), "schema": "stg"},
        state_dir=work / "state",
        retry={"attempts": 1},
    )
    samples: list[tuple[int, float, float]] = []
    window: list[float] = []
    print(f"{'invocation':>10} {'RSS MB':>8} {'s/inv (median of window)':>26}")
    with DbtSession(settings) as session:
        for i in range(1, args.invocations + 1):
            started = time.monotonic()
            step = session.run_staging if i % 2 else session.run_tests
            result = step(threads=3)
            window.append(time.monotonic() - started)
            if not result.success:
                print(result.summary())
                return 1
            if i % args.every == 0 or i == 1:
                samples.append((i, rss_mb(), statistics.median(window)))
                print(f"{i:>10} {samples[-1][1]:>8.0f} {samples[-1][2]:>26.3f}", flush=True)
                window = []
    first, last = samples[1] if len(samples) > 1 else samples[0], samples[-1]
    print(
        f"RSS after {first[0]} invocations {first[1]:.0f} MB, after {last[0]}: {last[1]:.0f} MB "
        f"({last[1] - first[1]:+.0f} MB); parse count {session.parse_count}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
