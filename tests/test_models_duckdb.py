"""The staging models (models_sql/) on real dbt + DuckDB: correctness proofs.

Oracle: after any sequence of incremental cycles over raw data with exact
duplicates, re-deliveries, tracking updates and late rows inside the scan
window, every staging table equals a ``--full-refresh`` of the same raw data,
row for row (EXCEPT ALL in both directions). Rows later than the scan window
are missed by the incremental run and reported by the audit test.

The scenario helpers here are dialect-neutral; the PostgreSQL and Redshift
integration tests import them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from dbt_runner import DbtInvocationError, DbtSession, ErrorKind, RunResult, Settings
from dbt_runner.synthetic import Dialect, create_raw_tables, load_batch

MODELS_DIR = Path(__file__).resolve().parent.parent / "models_sql"
STAGING_SCHEMA = "staging"
SNAPSHOT_SCHEMA = "incremental_snapshot"
AUDIT_SCHEMA = f"{STAGING_SCHEMA}_dbt_test__audit"  # where store_failures puts the audit rows
AUDIT_TEST = "audit_raw_keys_missing_from_staging"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z

#: staging table -> (key columns, sort column)
MODELS: dict[str, tuple[tuple[str, ...], str]] = {
    "stg_ecs_order_info": (("order_id",), "add_time"),
    "stg_uni_tracking_info": (("order_id",), "update_time"),
    "stg_uni_tracking_spath": (("order_id", "traceSeq", "pathTime"), "pathTime"),
}


# --------------------------------------------------------------------------- environment
@dataclass
class ModelsEnv:
    """A warehouse with an open DbtSession on the staging project and a DB-API connection.

    ``conn`` shares the warehouse with dbt (for DuckDB: the same in-process
    database instance, which DuckDB hands out to every connect() of the file).
    """

    session: DbtSession
    conn: Any
    dialect: Dialect
    schema: str = STAGING_SCHEMA

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        """Run one statement and commit (never leave a transaction open on dbt's tables)."""
        cur = self.conn.cursor()
        try:
            cur.execute(sql)
            rows = list(cur.fetchall()) if cur.description else []
            self.conn.commit()
            return rows
        except BaseException:
            with contextlib.suppress(Exception):  # duckdb: no transaction to roll back
                self.conn.rollback()
            raise
        finally:
            cur.close()

    def scalar(self, sql: str) -> Any:
        return self.execute(sql)[0][0]

    def reset(self) -> None:
        """Empty raw tables, no staging tables, no snapshot."""
        for schema in (self.schema, SNAPSHOT_SCHEMA, f"{self.schema}_dbt_test__audit"):
            self.execute(f"drop schema if exists {schema} cascade")
        create_raw_tables(self.conn, self.dialect, replace=True)

    def load(self, start_ts: int, end_ts: int, **kwargs: Any) -> dict[str, int]:
        return load_batch(self.conn, self.dialect, start_ts, end_ts, **kwargs)

    def count(self, table: str, schema: str | None = None) -> int:
        return int(self.scalar(f"select count(*) from {schema or self.schema}.{table}"))

    def high_water_mark(self, table: str) -> int:
        return int(self.scalar(f"select max({MODELS[table][1]}) from {self.schema}.{table}"))

    def snapshot(self) -> None:
        """Copy the staging tables aside (schema incremental_snapshot)."""
        self.execute(f"drop schema if exists {SNAPSHOT_SCHEMA} cascade")
        self.execute(f"create schema {SNAPSHOT_SCHEMA}")
        for table in MODELS:
            self.execute(
                f"create table {SNAPSHOT_SCHEMA}.{table} as select * from {self.schema}.{table}"
            )

    def differences(self) -> dict[str, tuple[int, int]]:
        """Per table: (rows only in the snapshot, rows only in staging), multiset semantics."""
        out = {}
        for table in MODELS:
            snap, stg = f"{SNAPSHOT_SCHEMA}.{table}", f"{self.schema}.{table}"
            only_snap = self.scalar(
                f"select count(*) from (select * from {snap} except all select * from {stg}) d"
            )
            only_stg = self.scalar(
                f"select count(*) from (select * from {stg} except all select * from {snap}) d"
            )
            out[table] = (int(only_snap), int(only_stg))
        return out


def ok(result: RunResult) -> RunResult:
    """The result, after asserting it succeeded (with dbt's summary on failure)."""
    assert result.success, result.summary()
    return result


def failed_nodes(result: RunResult) -> set[str]:
    return {n.name for n in result.nodes if n.failed}


# --------------------------------------------------------------------------- scenarios
@dataclass(frozen=True)
class Scenario:
    """A raw data stream cut into batches, with an incremental cycle after some of them.

    The delivery parameters (duplicates, re-deliveries, late rows) belong to the
    stream, so consecutive batches deliver every row exactly once plus its
    copies. The first batch starts ``LEAD_S`` before T0 so that every
    re-delivery of the stream has its first delivery in the data too. Late
    rows are at most ``late_max_s <= source_lookback_s`` late: inside the scan
    window, so the incremental cycle must catch every one.
    """

    seed: int
    orders_per_minute: int
    first_batch_s: int
    batches: tuple[tuple[int, bool], ...]  # (length_s, run an incremental cycle after it)
    source_lookback_s: int = 1800
    delete_window_s: int = 7200
    duplicate_share: float = 0.02
    redelivery_share: float = 0.0
    redelivery_max_s: int = 600
    late_share: float = 0.0
    late_max_s: int = 1

    LEAD_S = 4 * 3600  # > the longest redelivery_max_s + late delay drawn below

    @property
    def vars(self) -> dict[str, int]:
        return {
            "source_lookback_s": self.source_lookback_s,
            "delete_window_s": self.delete_window_s,
        }

    def stream(self) -> dict[str, Any]:
        late_max = min(self.late_max_s, self.source_lookback_s)
        return {
            "orders_per_minute": self.orders_per_minute,
            "seed": self.seed,
            "duplicate_share": self.duplicate_share,
            "redelivery_share": self.redelivery_share,
            "redelivery_max_s": self.redelivery_max_s,
            "late_share": self.late_share,
            "late_delay_s": (1, max(1, late_max)),
        }


def run_scenario(env: ModelsEnv, scenario: Scenario) -> dict[str, int]:
    """Load, run incremental cycles, snapshot, full refresh, compare. Returns row counts."""
    env.reset()
    stream = scenario.stream()
    t = T0 + scenario.first_batch_s
    env.load(T0 - scenario.LEAD_S, t, **stream)
    ok(env.session.run_staging(vars=scenario.vars))  # first build
    for i, (length_s, run_after) in enumerate(scenario.batches):
        env.load(t, t + length_s, **stream)
        t += length_s
        if run_after or i == len(scenario.batches) - 1:  # else: a skipped cycle
            ok(env.session.run_staging(vars=scenario.vars))
    env.snapshot()
    ok(env.session.run_staging(vars=scenario.vars, full_refresh=True))
    diffs = env.differences()
    assert all(d == (0, 0) for d in diffs.values()), (
        f"incremental != full refresh (rows only incremental, only full refresh): {diffs}"
    )
    counts = {table: env.count(table) for table in MODELS}
    assert all(counts.values()), f"a staging table is empty: {counts}"
    return counts


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    lookback, window = draw(st.sampled_from([(1800, 7200), (900, 900)]))
    return Scenario(
        seed=draw(st.integers(0, 2**20)),
        orders_per_minute=draw(st.sampled_from([3, 10, 30])),
        first_batch_s=draw(st.integers(1800, 3 * 3600)),
        batches=tuple(
            draw(st.lists(st.tuples(st.integers(60, 3600), st.booleans()), min_size=1, max_size=4))
        ),
        source_lookback_s=lookback,
        delete_window_s=window,
        duplicate_share=draw(st.sampled_from([0.0, 0.05, 0.3])),
        redelivery_share=draw(st.sampled_from([0.0, 0.05, 0.3])),
        redelivery_max_s=draw(st.sampled_from([60, 1800, 3 * 3600])),
        late_share=draw(st.sampled_from([0.0, 0.1, 0.5])),
        late_max_s=draw(st.integers(1, 1800)),
    )


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def duck_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelsEnv]:
    tmp = tmp_path_factory.mktemp("models_duckdb")
    db = tmp / "models.duckdb"
    cfg = Settings(
        project_dir=MODELS_DIR,
        warehouse={"type": "duckdb", "path": str(db), "schema": STAGING_SCHEMA},
        state_dir=tmp / "state",
        threads=3,
        retry={"attempts": 1},
    )
    conn = duckdb.connect(str(db))
    try:
        with DbtSession(cfg) as session:
            yield ModelsEnv(session, conn, "duckdb")
    finally:
        conn.close()


@pytest.fixture
def env(duck_env: ModelsEnv) -> ModelsEnv:
    duck_env.reset()
    return duck_env


def build(env: ModelsEnv, hours: float = 3, **kwargs: Any) -> int:
    """Reset, load ``hours`` of data from T0, first build; return the end timestamp."""
    end = T0 + int(hours * 3600)
    env.load(T0, end, orders_per_minute=kwargs.pop("orders_per_minute", 10), **kwargs)
    ok(env.session.run_staging(threads=3))
    return end


# --------------------------------------------------------------------------- the property
@settings(
    max_examples=5,  # each a 3-6 invocation scenario; PostgreSQL and Redshift add 3 + 2 more
    deadline=None,
    # each example runs dbt 3-6 times: no shrinking, the scenario is printed as drawn
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
def test_incremental_cycles_equal_a_full_refresh(duck_env: ModelsEnv, scenario: Scenario) -> None:
    run_scenario(duck_env, scenario)


def test_fixed_scenario_with_every_kind_of_mess(env: ModelsEnv) -> None:
    """A deterministic companion of the property: skipped cycle, late rows, re-deliveries."""
    scenario = Scenario(
        seed=42,
        orders_per_minute=20,
        first_batch_s=3 * 3600,
        batches=((900, True), (900, False), (600, True), (1800, True)),
        duplicate_share=0.2,
        redelivery_share=0.3,
        redelivery_max_s=3 * 3600,
        late_share=0.3,
        late_max_s=1800,
    )
    counts = run_scenario(env, scenario)
    raw = env.scalar("select count(*) from raw.uni_tracking_spath")
    assert raw > counts["stg_uni_tracking_spath"]  # there were duplicates to remove


# --------------------------------------------------------------------------- late data
def test_row_later_than_the_scan_window_is_missed_and_the_audit_reports_it(
    env: ModelsEnv,
) -> None:
    end = build(env)
    ok(env.session.invoke(["test", "--select", "tag:audit"]))  # nothing missing yet
    hwm = {t: env.high_water_mark(t) for t in MODELS}
    # an order, a path event and a tracking update delivered an hour late: older
    # than the high-water mark minus the 30-minute scan, inside the 24 h audit
    env.execute(
        "insert into raw.ecs_order_info values "
        f"('LATE-ORDER', 1, 1, 'paid', 9.99, 'EUR', {hwm['stg_ecs_order_info'] - 3600})"
    )
    env.execute(
        "insert into raw.uni_tracking_spath values "
        f"('LATE-ORDER', 1, {hwm['stg_uni_tracking_spath'] - 3600}, 'Leipzig', 'In transit')"
    )
    stale_id, stale_time = env.execute(
        "select order_id, update_time from staging.stg_uni_tracking_info "
        f"where update_time < {hwm['stg_uni_tracking_info'] - 3600} "
        "and tracking_status in ('delivered', 'exception')"  # its last event: no newer one
        " order by order_id limit 1"
    )[0]
    env.execute(
        "insert into raw.uni_tracking_info values "
        f"('{stale_id}', 'TN-late', 'dhl', 'delivered', {stale_time + 1})"
    )
    env.load(end, end + 900, orders_per_minute=10)
    ok(env.session.run_staging())

    # missed by the incremental cycle...
    assert (
        env.count("stg_ecs_order_info")
        == env.scalar("select count(distinct order_id) from raw.ecs_order_info") - 1
    )
    assert env.execute(
        f"select update_time from staging.stg_uni_tracking_info where order_id = '{stale_id}'"
    ) == [(stale_time,)]
    # ...reported by the audit test, which is not part of the staging tests
    staging_tests = ok(env.session.run_tests())
    assert AUDIT_TEST not in {n.name for n in staging_tests.nodes}
    audit = env.session.invoke(["test", "--select", "tag:audit"])
    assert not audit.success
    assert failed_nodes(audit) == {AUDIT_TEST}
    assert audit.error is not None and audit.error.kind is ErrorKind.TEST_FAILURE
    listed = set(env.execute(f"select model_name, missing_key from {AUDIT_SCHEMA}.{AUDIT_TEST}"))
    assert listed == {
        ("stg_ecs_order_info", "LATE-ORDER"),
        ("stg_uni_tracking_info", stale_id),
        ("stg_uni_tracking_spath", f"LATE-ORDER|1|{hwm['stg_uni_tracking_spath'] - 3600}"),
    }

    # a full refresh recovers them; the audit passes again
    env.snapshot()
    ok(env.session.run_staging(full_refresh=True))
    assert env.differences() == {
        "stg_ecs_order_info": (0, 1),
        "stg_uni_tracking_info": (1, 1),
        "stg_uni_tracking_spath": (0, 1),
    }
    ok(env.session.invoke(["test", "--select", "tag:audit"]))


def test_audit_ignores_rows_the_next_cycle_will_still_read(env: ModelsEnv) -> None:
    """Raw loaded but not processed yet (or late inside the scan): no false alarm."""
    end = build(env)
    env.load(end, end + 1800, orders_per_minute=10, late_share=0.5, late_delay_s=(60, 1700))
    ok(env.session.invoke(["test", "--select", "tag:audit"]))  # before the cycle
    ok(env.session.run_staging())
    ok(env.session.invoke(["test", "--select", "tag:audit"]))  # after it


def test_staging_data_tests_carry_the_staging_tag_themselves(env: ModelsEnv) -> None:
    """dbt does not pass a model's tags to its yml tests; the project tags them."""
    build(env, hours=1)
    direct = ok(
        env.session.invoke(["test", "--select", "tag:staging", "--indirect-selection", "empty"])
    )
    assert len(direct.nodes) == len(ok(env.session.run_tests(scope="all")).nodes) >= 20
    assert AUDIT_TEST not in {n.name for n in direct.nodes}


def test_wider_lookback_recovers_late_rows(env: ModelsEnv) -> None:
    end = build(env)
    late_time = env.high_water_mark("stg_ecs_order_info") - 3600
    env.execute(
        "insert into raw.ecs_order_info values "
        f"('LATE-ORDER', 1, 1, 'paid', 9.99, 'EUR', {late_time})"
    )
    env.load(end, end + 900, orders_per_minute=10)
    wide = {"source_lookback_s": 7200, "delete_window_s": 7200}
    ok(env.session.run_staging(vars=wide))
    assert env.execute(
        "select add_time from staging.stg_ecs_order_info where order_id = 'LATE-ORDER'"
    ) == [(late_time,)]
    ok(env.session.invoke(["test", "--select", "tag:audit"]))


# --------------------------------------------------------------------------- windows
def test_delete_window_shorter_than_scan_is_a_compile_error(env: ModelsEnv) -> None:
    build(env, hours=1)
    result = env.session.run_staging(vars={"delete_window_s": 600})
    assert not result.success
    assert result.error is not None and result.error.kind is ErrorKind.COMPILATION
    message = result.error.message
    assert "stg_ecs_order_info" in message or "stg_uni_tracking_spath" in message
    assert "delete_window_s=600" in message and "source_lookback_s=1800" in message
    assert "duplicate" in message
    with pytest.raises(DbtInvocationError):
        result.raise_for_status()
    # the same through a plain `dbt compile`, and a scan widened past the window
    compiled = env.session.invoke(["compile", "--vars", json.dumps({"source_lookback_s": 9000})])
    assert not compiled.success and compiled.error is not None
    assert "source_lookback_s=9000" in compiled.error.message
    assert "delete_window_s=7200" in compiled.error.message
    # nothing was run: the tables are untouched
    assert env.count("stg_ecs_order_info") == 60 * 10


def test_delete_window_limits_the_delete(env: ModelsEnv) -> None:
    """The predicate really reaches the DELETE: rows older than the window are kept.

    (Which is why add_time must never change for an order: a re-delivery with a
    new add_time would leave the old row in place.)
    """
    end = build(env)
    hwm = env.high_water_mark("stg_ecs_order_info")
    old = env.execute(
        "select order_id, add_time from staging.stg_ecs_order_info "
        f"where add_time < {hwm - 7200 - 60} order by order_id limit 1"
    )[0]
    # contract violation on purpose: the same order again, with a new add_time
    env.execute(
        "insert into raw.ecs_order_info "
        f"select order_id, shop_id, customer_id, 'cancelled', amount, currency, {hwm} "
        f"from raw.ecs_order_info where order_id = '{old[0]}' limit 1"
    )
    env.load(end, end + 900, orders_per_minute=10)
    ok(env.session.run_staging())
    rows = env.execute(
        "select add_time from staging.stg_ecs_order_info "
        f"where order_id = '{old[0]}' order by add_time"
    )
    assert rows == [(old[1],), (hwm,)]


def test_tracking_update_replaces_an_arbitrarily_old_row(env: ModelsEnv) -> None:
    """stg_uni_tracking_info has no delete window: any old version is replaced."""
    end = build(env, hours=5)
    hwm = env.high_water_mark("stg_uni_tracking_info")
    order_id, old_time = env.execute(
        "select order_id, update_time from staging.stg_uni_tracking_info "
        f"where update_time < {hwm - 4 * 3600} "
        "and tracking_status in ('delivered', 'exception') order by order_id limit 1"
    )[0]
    env.execute(
        "insert into raw.uni_tracking_info values "
        f"('{order_id}', 'TN-new', 'dhl', 'exception', {end + 10})"
    )
    env.load(end, end + 900, orders_per_minute=10)
    ok(env.session.run_staging())
    assert env.execute(
        "select tracking_status, update_time from staging.stg_uni_tracking_info "
        f"where order_id = '{order_id}'"
    ) == [("exception", end + 10)]
    assert old_time < end + 10


def test_incremental_sql_uses_the_windows(env: ModelsEnv) -> None:
    """The compiled incremental SQL: scan from HWM - 1800, delete from HWM - 7200."""
    end = build(env, hours=1)
    env.load(end, end + 900, orders_per_minute=10)
    ok(env.session.run_staging())
    target = env.session.state_dir / "target"
    run_dir = target / "run" / "dbt_runner_staging" / "models" / "staging"
    compiled_dir = target / "compiled" / "dbt_runner_staging" / "models" / "staging"
    spath = " ".join((run_dir / "stg_uni_tracking_spath.sql").read_text().split())
    assert "pathTime >= (select max(pathTime) from" in spath and ") - 7200" in spath
    assert "path_key) in (" in spath
    info = " ".join((compiled_dir / "stg_uni_tracking_info.sql").read_text().split())
    assert "where update_time >= ( select coalesce(max(update_time), 0) from" in info
    assert ") - 1800" in info
    run_info = (run_dir / "stg_uni_tracking_info.sql").read_text()
    assert "update_time >= (select max" not in run_info  # no delete window here


# --------------------------------------------------------------------------- data tests
def test_models_land_in_the_target_schema_under_their_names(env: ModelsEnv) -> None:
    build(env, hours=1)
    tables = {
        name
        for (name,) in env.execute(
            "select table_name from information_schema.tables "
            f"where table_schema = '{STAGING_SCHEMA}' order by 1"
        )
    }
    assert tables == set(MODELS)


#: the hourly tests (scope "recent") and the whole-table tests (scope "full")
RECENT_TESTS = {
    "recent_unique_stg_ecs_order_info_order_id__add_time",
    "recent_unique_stg_uni_tracking_info_order_id__update_time",
    "recent_unique_stg_uni_tracking_spath_order_id__traceSeq__pathTime__pathTime",
    "recent_not_null_stg_ecs_order_info_order_id__add_time",
    "recent_not_null_stg_uni_tracking_info_order_id__update_time",
    "recent_not_null_stg_uni_tracking_spath_order_id__pathTime",
    "recent_not_null_stg_uni_tracking_spath_traceSeq__pathTime",
    "recent_not_null_stg_uni_tracking_spath_path_key__pathTime",
}
FULL_TESTS = {
    "unique_stg_ecs_order_info_order_id",
    "not_null_stg_ecs_order_info_order_id",
    "not_null_stg_ecs_order_info_add_time",
    "unique_stg_uni_tracking_info_order_id",
    "not_null_stg_uni_tracking_info_order_id",
    "not_null_stg_uni_tracking_info_update_time",
    "unique_combination_stg_uni_tracking_spath_order_id__traceSeq__pathTime",
    "unique_stg_uni_tracking_spath_path_key",
    "not_null_stg_uni_tracking_spath_order_id",
    "not_null_stg_uni_tracking_spath_traceSeq",
    "not_null_stg_uni_tracking_spath_pathTime",
    "not_null_stg_uni_tracking_spath_path_key",
}
SIX_DAYS_S = 6 * 86400


def test_data_tests_pass_on_good_data_and_name_the_failing_node(env: ModelsEnv) -> None:
    build(env, hours=1, duplicate_share=0.2, redelivery_share=0.2)
    hourly = ok(env.session.run_tests())
    assert {n.name for n in hourly.nodes} == RECENT_TESTS  # no accepted values: no vars set
    assert {n.resource_type for n in hourly.nodes} == {"test"}
    assert {n.name for n in ok(env.session.run_tests(scope="full")).nodes} == FULL_TESTS

    # plant a duplicate path event and a duplicate order (all rows are recent here)
    env.execute(
        "insert into staging.stg_uni_tracking_spath "
        "select * from staging.stg_uni_tracking_spath order by path_key limit 1"
    )
    env.execute(
        "insert into staging.stg_ecs_order_info "
        "select * from staging.stg_ecs_order_info order by order_id limit 1"
    )
    bad = env.session.run_tests()
    assert not bad.success
    assert failed_nodes(bad) == {
        "recent_unique_stg_uni_tracking_spath_order_id__traceSeq__pathTime__pathTime",
        "recent_unique_stg_ecs_order_info_order_id__add_time",
    }
    assert bad.error is not None and bad.error.kind is ErrorKind.TEST_FAILURE
    assert failed_nodes(env.session.run_tests(scope="full")) == {
        "unique_combination_stg_uni_tracking_spath_order_id__traceSeq__pathTime",
        "unique_stg_uni_tracking_spath_path_key",
        "unique_stg_ecs_order_info_order_id",
    }


def _recent_rows(env: ModelsEnv, table: str, where: str) -> int:
    """Rows of ``table`` matching ``where`` inside the hourly tests' window (7200 s)."""
    sort = MODELS[table][1]
    return int(
        env.scalar(
            f"select count(*) from {env.schema}.{table} where {where} "
            f"and {sort} >= (select max({sort}) from {env.schema}.{table}) - 7200"
        )
    )


def test_hourly_test_catches_a_duplicate_whose_other_copy_is_six_days_old(env: ModelsEnv) -> None:
    """Keys touched in the recent window are checked against the whole table."""
    build(env, hours=1)
    # the row an update replaces can be arbitrarily old: plant a 6-day-old second
    # copy of a recent tracking row and of a recent order
    env.execute(
        "insert into staging.stg_uni_tracking_info select order_id, tracking_number, "
        f"carrier_code, 'in_transit', update_time - {SIX_DAYS_S} "
        "from staging.stg_uni_tracking_info order by update_time desc, order_id limit 1"
    )
    env.execute(
        "insert into staging.stg_ecs_order_info select order_id, shop_id, customer_id, "
        f"order_status, amount, currency, add_time - {SIX_DAYS_S} from staging.stg_ecs_order_info "
        "order by add_time desc, order_id limit 1"
    )
    old = env.execute(
        "select order_id from staging.stg_uni_tracking_info group by order_id having count(*) > 1"
    )
    assert len(old) == 1
    # a test of the window alone would see one copy only
    assert _recent_rows(env, "stg_uni_tracking_info", f"order_id = '{old[0][0]}'") == 1
    hourly = env.session.run_tests()
    assert failed_nodes(hourly) == {
        "recent_unique_stg_uni_tracking_info_order_id__update_time",
        "recent_unique_stg_ecs_order_info_order_id__add_time",
    }


def test_hourly_test_catches_a_null_key_in_the_recent_window(env: ModelsEnv) -> None:
    build(env, hours=1)
    env.execute(
        "update staging.stg_uni_tracking_spath set traceSeq = null where path_key = "
        "(select max(path_key) from staging.stg_uni_tracking_spath "
        " where pathTime = (select max(pathTime) from staging.stg_uni_tracking_spath))"
    )
    env.execute(
        "update staging.stg_ecs_order_info set order_id = null "
        "where add_time = (select max(add_time) from staging.stg_ecs_order_info)"
    )
    assert failed_nodes(env.session.run_tests()) == {
        "recent_not_null_stg_uni_tracking_spath_traceSeq__pathTime",
        "recent_not_null_stg_ecs_order_info_order_id__add_time",
    }


def test_hourly_tests_read_the_window_and_the_full_tests_the_table(env: ModelsEnv) -> None:
    """A NULL older than test_window_s is the daily full run's to find, not the hourly's."""
    build(env, hours=4)
    env.execute(
        "update staging.stg_ecs_order_info set order_id = null "
        "where add_time = (select min(add_time) from staging.stg_ecs_order_info)"
    )
    assert _recent_rows(env, "stg_ecs_order_info", "order_id is null") == 0
    ok(env.session.run_tests())
    assert failed_nodes(env.session.run_tests(scope="full")) == {
        "not_null_stg_ecs_order_info_order_id"
    }
    # a wider window (a var, like every window) reaches it
    wider = env.session.run_tests(vars={"test_window_s": 86400})
    assert failed_nodes(wider) == {"recent_not_null_stg_ecs_order_info_order_id__add_time"}


def test_everything_compiles_before_the_first_run(env: ModelsEnv) -> None:
    """The hourly tests read the HWM when they run, but need no table to compile."""
    compiled = ok(env.session.invoke(["compile"]))
    assert {n.name for n in compiled.nodes} >= RECENT_TESTS | FULL_TESTS


def test_hourly_tests_filter_on_the_sort_key(env: ModelsEnv) -> None:
    """The compiled hourly tests restrict the recent rows to a literal range of the sort key.

    A literal (the HWM is read when the test runs) is what lets Redshift's zone
    maps and PostgreSQL's statistics see how narrow the window is.
    """
    build(env, hours=1)
    ok(env.session.run_tests())
    compiled = env.session.state_dir / "target" / "compiled" / "dbt_runner_staging"

    def compiled_sql(test: str, table: str) -> str:
        """The compiled SQL of a ``test`` on ``table`` (long test names are hashed)."""
        texts = [" ".join(p.read_text().split()) for p in compiled.rglob(f"{test}_*.sql")]
        return next(t for t in texts if f'"{table}"' in t or f".{table} " in t)

    for table, (_, sort) in MODELS.items():
        bound = env.high_water_mark(table) - 7200
        for test in ("recent_unique", "recent_not_null"):
            assert f"where {sort} >= {bound}" in compiled_sql(test, table), (table, test)
        # the key lookup reads the whole table, unless the sort column is part of the key
        # (then every row sharing a recent key is recent too)
        whole_table_side = f"t.{sort} >= {bound}" not in compiled_sql("recent_unique", table)
        assert whole_table_side == (sort not in MODELS[table][0]), table


def test_data_tests_pass_on_raw_data_from_another_generator(env: ModelsEnv) -> None:
    """Any data following the column contract passes: no invented domains."""
    end = T0 + 3600
    env.load(T0, end, orders_per_minute=10)
    env.execute("update raw.ecs_order_info set order_status = 'created', currency = 'CHF'")
    env.execute(
        "update raw.uni_tracking_info set tracking_status = case when update_time % 2 = 0 "
        "then 'label_created' else 'picked_up' end"
    )
    ok(env.session.run_staging())
    env.load(end, end + 900, orders_per_minute=10)
    ok(env.session.run_staging())
    hourly = ok(env.session.run_tests(scope="all"))
    assert {n.status for n in hourly.nodes} == {"pass"}
    assert {n.name for n in hourly.nodes} == RECENT_TESTS | FULL_TESTS


def test_accepted_values_are_vars_with_warn_severity_by_default(env: ModelsEnv) -> None:
    build(env, hours=1)
    env.execute("update staging.stg_ecs_order_info set currency = 'XXX' where shop_id = 1")
    domains = {"accepted_currencies": ["USD", "EUR", "GBP", "CNY", "JPY"]}

    ok(env.session.run_tests())  # no domain configured: nothing to check
    warned = ok(env.session.run_tests(vars=domains))  # warn: the run still succeeds
    assert {n.name: n.status for n in warned.nodes if n.status != "pass"} == {
        "accepted_values_var_stg_ecs_order_info_currency__add_time__accepted_currencies": "warn"
    }
    failed = env.session.run_tests(
        scope="full", vars={**domains, "accepted_values_severity": "error"}
    )
    assert failed_nodes(failed) == {
        "accepted_values_var_stg_ecs_order_info_currency__accepted_currencies"
    }
