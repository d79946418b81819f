"""A long-lived ``DbtSession`` (a notebook, a long-running orchestrator): memory over time.

Not a test: a measurement to run by hand::

    python benchmarks/long_session.py [--invocations 200] [--every 20] [--max-minutes 30]
    python benchmarks/long_session.py --tracemalloc     # + the allocations that grew most

Opens one session on the bundled staging project over an embedded DuckDB file
with an hour of synthetic raw data, then runs ``run_staging`` and ``run_tests``
alternately (the same incremental work each time: the file is the session's
while it is open), printing the process's
resident memory (RSS, from /proc) and the time per invocation every
``--every`` invocations, and dbt's parse count (one parse for the whole run
when no project file changes). At the end: RSS at the first sample after
warm-up and at the last, and the slope per 100 invocations (least squares
over the samples after warm-up). Memory that keeps growing is a leak; a
plateau is the manifest, the adapter and Python's allocator settling. The run
stops early (and says so) after ``--max-minutes``.
"""

from __future__ import annotations

import argparse
import ctypes
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
    parser.add_argument("--max-minutes", type=float, default=30.0)
    parser.add_argument(
        "--tracemalloc", action="store_true", help="trace allocations (slower): top growth"
    )
    parser.add_argument(
        "--malloc-trim",
        action="store_true",
        help="glibc malloc_trim(0) before each sample: freed-but-kept heap vs memory in use",
    )
    args = parser.parse_args()
    if not 2 <= args.invocations <= 5000:
        parser.error("--invocations must be 2..5000")
    if not 1 <= args.every <= args.invocations:
        parser.error("--every must be 1..--invocations")
    if not 0 < args.max_minutes <= 240:
        parser.error("--max-minutes must be in (0, 240]")
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(1)

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
    deadline = time.monotonic() + args.max_minutes * 60
    baseline_snapshot = None
    print(f"{'invocation':>10} {'RSS MB':>8} {'s/inv (median of window)':>26} {'parses':>7}")
    with DbtSession(settings) as session:
        for i in range(1, args.invocations + 1):
            if time.monotonic() > deadline:
                print(f"stopped after {i - 1} invocations: --max-minutes {args.max_minutes:g}")
                break
            started = time.monotonic()
            step = session.run_staging if i % 2 else session.run_tests
            result = step(threads=3)
            window.append(time.monotonic() - started)
            if not result.success:
                print(result.summary())
                return 1
            if i % args.every == 0 or i == 1:
                if args.malloc_trim:
                    ctypes.CDLL("libc.so.6").malloc_trim(0)
                samples.append((i, rss_mb(), statistics.median(window)))
                i_, rss, per = samples[-1]
                print(f"{i_:>10} {rss:>8.1f} {per:>26.3f} {session.parse_count:>7}", flush=True)
                window = []
                if args.tracemalloc and baseline_snapshot is None and i >= args.every:
                    import tracemalloc

                    baseline_snapshot = tracemalloc.take_snapshot()
        con = duckdb.connect(str(db))  # the session's DuckDB instance (same process)
        try:
            used = con.execute(
                "select sum(memory_usage_bytes) / 1048576 from duckdb_memory()"
            ).fetchone()
            mb = float(used[0] or 0) if used else 0.0
            print(f"DuckDB's own memory (duckdb_memory()): {mb:.1f} MB")
        except duckdb.Error as exc:
            print(f"DuckDB's own memory: not available ({exc})")
        finally:
            con.close()
    steady = samples[1:] if len(samples) > 2 else samples
    first, last = steady[0], steady[-1]
    print(
        f"RSS after {first[0]} invocations {first[1]:.1f} MB, after {last[0]}: {last[1]:.1f} MB "
        f"({last[1] - first[1]:+.1f} MB); slope {slope_per_100(steady):+.2f} MB per 100 "
        f"invocations; parse count {session.parse_count}"
    )
    if baseline_snapshot is not None:
        import tracemalloc

        print("top allocation growth since the first window (tracemalloc):")
        stats = tracemalloc.take_snapshot().compare_to(baseline_snapshot, "lineno")
        for stat in stats[:12]:
            print(f"  {stat}")
    return 0


def slope_per_100(samples: list[tuple[int, float, float]]) -> float:
    """Least-squares slope of RSS (MB) against invocation number, per 100 invocations."""
    if len(samples) < 2:
        return 0.0
    xs = [float(s[0]) for s in samples]
    ys = [s[1] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return 100 * cov / var if var else 0.0


if __name__ == "__main__":
    raise SystemExit(main())
