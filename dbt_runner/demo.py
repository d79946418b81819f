"""The README's demo: two staging cycles on an embedded DuckDB file, no services needed.

``dbt-runner demo`` (or :func:`run_demo`) creates a fresh DuckDB file, loads
six hours of synthetic raw data (:mod:`dbt_runner.synthetic`), runs a first
cycle -- the three staging models with 3 threads, then their data tests --
through a :class:`~dbt_runner.DbtSession`, appends the next 15 minutes of
data (with duplicates and rows up to 25 minutes late) and runs the
incremental cycle in a new session, as the next 15-minute DAG run would.
Finally the audit test checks that no raw key is missing from staging.

Each cycle is its own session, like one Airflow task per cycle: closing the
session releases dbt-duckdb's hold on the database file, and the raw data is
loaded in between.

>>> from pathlib import Path
>>> from dbt_runner.demo import run_demo
>>> run_demo(Path("demo.duckdb"), echo=lambda line: None)  # doctest: +SKIP
0
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ._results import RunResult
from ._session import DbtSession
from ._settings import Settings
from .synthetic import ACCEPTED_VALUES_VARS, create_raw_tables, load_batch

__all__ = ["run_demo"]

#: 2026-01-01T00:00:00Z: a fixed start, so every demo run loads the same data
DEMO_START = 1_767_225_600
FIRST_BATCH_S = 6 * 3600
CYCLE_S = 15 * 60
ORDERS_PER_MINUTE = 200
SEED = 2026
SOURCE_LOOKBACK_S = 1800  # the project's default source_lookback_s

#: staging model -> sort column (its high-water mark)
_MODELS = {
    "stg_ecs_order_info": "add_time",
    "stg_uni_tracking_info": "update_time",
    "stg_uni_tracking_spath": "pathTime",
}
# the raw stream: same parameters for every batch, so consecutive batches fit
DUPLICATE_SHARE = 0.02
REDELIVERY_SHARE = 0.01
LATE_SHARE = 0.05
LATE_DELAY_S = (60, 1500)  # inside the 30-minute scan: the incremental run catches them


_FOOTNOTE = (
    "* dbt-duckdb reports no row counts, so the demo computes them from the staging tables:\n"
    "  inserted = rows at or after this run's scan start (high-water mark before the run\n"
    "  - source_lookback_s; every such row was re-inserted), deleted = inserted - net growth."
)


@dataclass(frozen=True)
class _TableState:
    rows: int
    high_water_mark: int | None
    rows_since_scan_start: int | None = None  # rows with sort column >= a given scan start


def run_demo(db_path: Path, *, echo: Callable[[str], None] = print, threads: int = 3) -> int:
    """Run the demo into ``db_path`` (overwritten); return the exit code (0 = all passed).

    Prints, per cycle and model, the rows inserted and deleted, the model's
    elapsed time and dbt thread, then the data test results.
    """
    t0 = time.monotonic()
    db_path = Path(db_path).expanduser().resolve()
    existed = db_path.exists()
    for stale in (db_path, db_path.with_name(db_path.name + ".wal")):
        stale.unlink(missing_ok=True)
    settings = Settings(
        warehouse={"type": "duckdb", "path": str(db_path), "schema": "staging"},
        threads=threads,
        # the demo knows its synthetic data's domains: check them (warn on others)
        vars=ACCEPTED_VALUES_VARS,
    )
    state = "overwritten" if existed else "new"
    echo(f"dbt_runner demo: DuckDB file {db_path} ({state}), {threads} threads")
    echo("")

    first_end = DEMO_START + FIRST_BATCH_S
    _load(db_path, DEMO_START, first_end, echo, step="[1/4]", create=True)
    ok = _cycle(settings, db_path, threads, echo, step="[2/4]", title="cycle 1, first build")

    second_end = first_end + CYCLE_S
    _load(db_path, first_end, second_end, echo, step="[3/4]")
    ok &= _cycle(
        settings, db_path, threads, echo, step="[4/4]", title="cycle 2, incremental", audit=True
    )

    echo(_FOOTNOTE)
    echo("")
    echo(f"demo {'passed' if ok else 'FAILED'} in {time.monotonic() - t0:.1f} s")
    return 0 if ok else 1


def _load(
    db_path: Path,
    start: int,
    end: int,
    echo: Callable[[str], None],
    *,
    step: str,
    create: bool = False,
) -> None:
    import duckdb

    t0 = time.monotonic()
    conn = duckdb.connect(str(db_path))
    try:
        if create:
            create_raw_tables(conn, "duckdb")
        counts = load_batch(
            conn,
            "duckdb",
            start,
            end,
            orders_per_minute=ORDERS_PER_MINUTE,
            seed=SEED,
            duplicate_share=DUPLICATE_SHARE,
            redelivery_share=REDELIVERY_SHARE,
            redelivery_max_s=1200,
            late_share=LATE_SHARE,
            late_delay_s=LATE_DELAY_S,
        )
    finally:
        conn.close()
    late_lo, late_hi = LATE_DELAY_S
    echo(
        f"{step} raw data delivered {_utc(start)} -> {_utc(end)}: "
        f"{ORDERS_PER_MINUTE} orders/min, {DUPLICATE_SHARE:.0%} duplicates, "
        f"{LATE_SHARE:.0%} late by {late_lo // 60}-{late_hi // 60} min"
    )
    rows = ", ".join(f"{table} {n:,}" for table, n in counts.items())
    echo(f"      loaded {rows} rows in {time.monotonic() - t0:.1f} s")


def _cycle(
    settings: Settings,
    db_path: Path,
    threads: int,
    echo: Callable[[str], None],
    *,
    step: str,
    title: str,
    audit: bool = False,
) -> bool:
    before = _table_states(db_path)
    t0 = time.monotonic()
    # the header first: node log lines (--verbose) belong under it
    echo(f"{step} {title}: dbt run --select tag:staging --threads {threads}")
    with DbtSession(settings) as session:
        staging = session.run_staging(threads=threads)
        tests = session.run_tests(threads=threads)
        audit_result = session.invoke(["test", "--select", "tag:audit"]) if audit else None
    scan_starts = {
        model: state.high_water_mark - SOURCE_LOOKBACK_S
        for model, state in before.items()
        if state.high_water_mark is not None
    }
    after = _table_states(db_path, scan_starts)

    echo(f"      -> {'success' if staging.success else 'FAILED'} in {staging.elapsed_s:.1f} s")
    _echo_models(staging, before, after, echo)
    ok = staging.success and tests.success
    echo(f"      dbt test --select tag:staging -> {_tests_line(tests)}")
    if audit_result is not None:
        ok &= audit_result.success
        echo(
            f"      dbt test --select tag:audit (raw keys missing from staging, last 24 h) "
            f"-> {_tests_line(audit_result)}"
        )
    for node in (*staging.failed_nodes, *tests.failed_nodes):
        echo(f"      FAILED {node.name}: {node.message}")
    if staging.error is not None and not staging.nodes:
        echo(f"      {staging.error.kind.value}: {staging.error.message}")
    echo(f"      cycle took {time.monotonic() - t0:.1f} s (session open to close)")
    echo("")
    return ok


def _echo_models(
    staging: RunResult,
    before: dict[str, _TableState],
    after: dict[str, _TableState],
    echo: Callable[[str], None],
) -> None:
    echo(
        f"      {'model':<24} {'inserted*':>10} {'deleted*':>9} {'rows now':>10} "
        f"{'elapsed':>8}  thread"
    )
    nodes = {n.name: n for n in staging.nodes}
    for model in _MODELS:
        node = nodes.get(model)
        inserted, deleted = _inserted_deleted(model, before.get(model), after.get(model))
        now = after[model].rows if model in after else 0
        elapsed = f"{node.elapsed_s:.2f} s" if node else "-"
        thread = (node.thread or "-") if node else "not run"
        echo(f"      {model:<24} {inserted:>10,} {deleted:>9,} {now:>10,} {elapsed:>8}  {thread}")


def _inserted_deleted(
    model: str, before: _TableState | None, after: _TableState | None
) -> tuple[int, int]:
    if after is None:
        return 0, 0
    if before is None or after.rows_since_scan_start is None:  # first build: all rows new
        return after.rows, 0
    # Every staging row at or after the scan start was (re)inserted by this run:
    # its key was in the scan, so an older copy, if any, was deleted first
    # (inside the delete window, which covers the scan window).
    inserted = after.rows_since_scan_start
    return inserted, inserted - (after.rows - before.rows)


def _table_states(
    db_path: Path, scan_starts: dict[str, int] | None = None
) -> dict[str, _TableState]:
    """Row count and high-water mark of each existing staging table."""
    import duckdb

    conn = duckdb.connect(str(db_path))
    try:
        existing = {
            name
            for (name,) in conn.execute(
                "select table_name from information_schema.tables where table_schema = 'staging'"
            ).fetchall()
        }
        states = {}
        for model, sort in _MODELS.items():
            if model not in existing:
                continue
            since = (scan_starts or {}).get(model)
            row = conn.execute(
                f"select count(*), max({sort}), count(*) filter (where {sort} >= ?) "
                f"from staging.{model}",
                [since if since is not None else 0],
            ).fetchone()
            assert row is not None  # an aggregate always returns one row
            rows, hwm, recent = row
            states[model] = _TableState(rows, hwm, recent if since is not None else None)
        return states
    finally:
        conn.close()


def _tests_line(result: RunResult) -> str:
    tests = [n for n in result.nodes if n.resource_type == "test"]
    passed = sum(1 for n in tests if n.status == "pass")
    failed = [n.name for n in tests if n.failed]
    line = f"{passed} passed, {len(failed)} failed in {result.elapsed_s:.1f} s"
    if not tests and result.error is not None:
        line += f" ({result.error.kind.value}: {result.error.message.splitlines()[0]})"
    if failed:
        line += ": " + ", ".join(failed)
    return line


def _utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
