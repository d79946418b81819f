"""dbt_runner.synthetic: the raw data generator (DuckDB; PostgreSQL when available)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from dbt_runner import synthetic
from dbt_runner.synthetic import (
    MAX_PATH_EVENTS,
    RAW_TABLES,
    create_raw_tables,
    load_batch,
)

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
SCHEMA_YML = Path(__file__).resolve().parent.parent / "models_sql" / "models" / "staging"

ORDER_BY = {
    "ecs_order_info": "order_id, add_time, order_status, amount",
    "uni_tracking_info": "order_id, update_time, tracking_status",
    "uni_tracking_spath": "order_id, traceSeq, pathTime",
}


@pytest.fixture
def conn() -> Iterator[Any]:
    c = duckdb.connect()
    create_raw_tables(c, "duckdb")
    yield c
    c.close()


def rows(c: Any, table: str, schema: str = "raw") -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in c.execute(f"select * from {schema}.{table} order by {ORDER_BY[table]}").fetchall()
    ]


def scalar(c: Any, sql: str) -> Any:
    return c.execute(sql).fetchone()[0]


def test_raw_tables_follow_the_input_contract(conn: Any) -> None:
    columns = conn.execute(
        "select table_name, column_name, data_type from information_schema.columns "
        "where table_schema = 'raw' order by table_name, ordinal_position"
    ).fetchall()
    assert columns == [
        ("ecs_order_info", "order_id", "VARCHAR"),
        ("ecs_order_info", "shop_id", "INTEGER"),
        ("ecs_order_info", "customer_id", "INTEGER"),
        ("ecs_order_info", "order_status", "VARCHAR"),
        ("ecs_order_info", "amount", "DECIMAL(12,2)"),
        ("ecs_order_info", "currency", "VARCHAR"),
        ("ecs_order_info", "add_time", "BIGINT"),
        ("uni_tracking_info", "order_id", "VARCHAR"),
        ("uni_tracking_info", "tracking_number", "VARCHAR"),
        ("uni_tracking_info", "carrier_code", "VARCHAR"),
        ("uni_tracking_info", "tracking_status", "VARCHAR"),
        ("uni_tracking_info", "update_time", "BIGINT"),
        ("uni_tracking_spath", "order_id", "VARCHAR"),
        ("uni_tracking_spath", "traceSeq", "INTEGER"),
        ("uni_tracking_spath", "pathTime", "BIGINT"),
        ("uni_tracking_spath", "location", "VARCHAR"),
        ("uni_tracking_spath", "description", "VARCHAR"),
    ]
    # idempotent; replace=True empties the tables
    load_batch(conn, "duckdb", T0, T0 + 600, orders_per_minute=5)
    create_raw_tables(conn, "duckdb")
    assert scalar(conn, "select count(*) from raw.ecs_order_info") > 0
    create_raw_tables(conn, "duckdb", replace=True)
    assert scalar(conn, "select count(*) from raw.ecs_order_info") == 0


def test_a_clean_batch_has_the_expected_shape(conn: Any) -> None:
    counts = load_batch(
        conn, "duckdb", T0, T0 + 3600, orders_per_minute=30, duplicate_share=0, redelivery_share=0
    )
    assert set(counts) == set(RAW_TABLES)
    assert counts["ecs_order_info"] == 30 * 60
    for table, n in counts.items():
        assert scalar(conn, f"select count(*) from raw.{table}") == n
    # no duplicates, nothing outside the batch
    assert scalar(conn, "select count(distinct order_id) from raw.ecs_order_info") == 30 * 60
    assert scalar(conn, "select min(add_time) from raw.ecs_order_info") >= T0
    assert scalar(conn, "select max(add_time) from raw.ecs_order_info") < T0 + 3600
    assert scalar(conn, "select max(pathTime) from raw.uni_tracking_spath") < T0 + 3600
    assert scalar(conn, "select min(pathTime) from raw.uni_tracking_spath") >= T0
    assert (
        scalar(
            conn,
            "select count(*) from (select order_id, traceSeq, pathTime from raw.uni_tracking_spath"
            " group by all having count(*) > 1)",
        )
        == 0
    )
    # an order's path events: traceSeq 1..n with increasing pathTime
    assert (
        scalar(
            conn,
            "select count(*) from (select order_id, traceSeq, pathTime, lag(pathTime) over"
            " (partition by order_id order by traceSeq) as prev from raw.uni_tracking_spath)"
            " where prev >= pathTime",
        )
        == 0
    )
    assert scalar(conn, "select max(traceSeq) from raw.uni_tracking_spath") <= MAX_PATH_EVENTS
    # tracking info is re-sent per event: several versions per order, at the path times
    assert (
        scalar(
            conn,
            "select max(c) from (select count(*) c from raw.uni_tracking_info group by order_id)",
        )
        > 1
    )
    assert (
        scalar(
            conn,
            "select count(*) from raw.uni_tracking_info i left join raw.uni_tracking_spath p"
            " on p.order_id = i.order_id and p.pathTime = i.update_time where p.order_id is null",
        )
        == 0
    )


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    def load(seed: int) -> dict[str, list[tuple[Any, ...]]]:
        c = duckdb.connect()
        create_raw_tables(c, "duckdb")
        load_batch(c, "duckdb", T0, T0 + 1800, orders_per_minute=20, seed=seed, late_share=0.2)
        return {t: rows(c, t) for t in RAW_TABLES}

    first = load(1)
    assert first == load(1)
    assert load(2) != first
    assert all(first.values())


def test_docstring_examples_run() -> None:
    import doctest

    assert doctest.testmod(synthetic, raise_on_error=False).failed == 0


def test_consecutive_batches_deliver_what_one_batch_does() -> None:
    stream: dict[str, Any] = {
        "orders_per_minute": 15,
        "seed": 5,
        "duplicate_share": 0.1,
        "redelivery_share": 0.1,
        "redelivery_max_s": 3000,
        "late_share": 0.2,
        "late_delay_s": (30, 1500),
    }
    one = duckdb.connect()
    create_raw_tables(one, "duckdb")
    load_batch(one, "duckdb", T0, T0 + 7200, **stream)
    many = duckdb.connect()
    create_raw_tables(many, "duckdb")
    cuts = [T0, T0 + 60, T0 + 900, T0 + 1000, T0 + 3600, T0 + 7200]
    for start, end in itertools.pairwise(cuts):
        load_batch(many, "duckdb", start, end, **stream)
    for table in RAW_TABLES:
        assert rows(one, table) == rows(many, table), table


def test_duplicates_redeliveries_and_late_rows_follow_their_shares(conn: Any) -> None:
    load_batch(
        conn,
        "duckdb",
        T0,
        T0 + 4 * 3600,
        orders_per_minute=50,
        duplicate_share=0.1,
        redelivery_share=0.0,
        late_share=0.0,
    )
    orders = scalar(conn, "select count(*) from raw.ecs_order_info")
    distinct = scalar(conn, "select count(*) from (select distinct * from raw.ecs_order_info)")
    assert distinct == 50 * 240
    assert 0.08 < (orders - distinct) / distinct < 0.12  # ~10% exact duplicates

    late = duckdb.connect()
    create_raw_tables(late, "duckdb")
    start = T0 + 3600
    load_batch(
        late,
        "duckdb",
        start,
        start + 900,
        orders_per_minute=50,
        duplicate_share=0,
        redelivery_share=0,
        late_share=0.3,
        late_delay_s=(2000, 2500),  # beyond a 30-minute scan
    )
    early = scalar(late, f"select count(*) from raw.ecs_order_info where add_time < {start}")
    total = scalar(late, "select count(*) from raw.ecs_order_info")
    assert early > 0 and 0.2 < early / total < 0.4
    assert scalar(late, "select min(add_time) from raw.ecs_order_info") >= start - 2500
    assert scalar(late, "select max(add_time) from raw.ecs_order_info") < start + 900


def test_the_demo_domains_name_the_projects_accepted_values_vars() -> None:
    """ACCEPTED_VALUES_VARS sets exactly the project's domain vars, which default to empty."""
    project = yaml.safe_load((SCHEMA_YML.parent.parent / "dbt_project.yml").read_text())
    domain_vars = {k: v for k, v in project["vars"].items() if k.startswith("accepted_")}
    assert domain_vars.pop("accepted_values_severity") == "warn"
    assert domain_vars == {key: [] for key in synthetic.ACCEPTED_VALUES_VARS}
    spec = yaml.safe_load((SCHEMA_YML / "schema.yml").read_text())
    used: dict[tuple[str, str], set[str]] = {}
    for model in spec["models"]:
        for column in model.get("columns", []):
            for test in column.get("data_tests", []):
                if isinstance(test, dict) and "accepted_values_var" in test:
                    var = test["accepted_values_var"]["arguments"]["values_var"]
                    used.setdefault((model["name"], column["name"]), set()).add(var)
    assert used == {
        ("stg_ecs_order_info", "currency"): {"accepted_currencies"},
        ("stg_ecs_order_info", "order_status"): {"accepted_order_statuses"},
        ("stg_uni_tracking_info", "tracking_status"): {"accepted_tracking_statuses"},
    }
    assert {
        "accepted_currencies": list(synthetic.CURRENCIES),
        "accepted_order_statuses": list(synthetic.ORDER_STATUSES),
        "accepted_tracking_statuses": list(synthetic.TRACKING_STATUSES),
    } == synthetic.ACCEPTED_VALUES_VARS


def test_generated_values_stay_inside_the_accepted_values(conn: Any) -> None:
    load_batch(conn, "duckdb", T0, T0 + 7200, orders_per_minute=50)
    for table, column, values in (
        ("ecs_order_info", "currency", synthetic.CURRENCIES),
        ("ecs_order_info", "order_status", synthetic.ORDER_STATUSES),
        ("uni_tracking_info", "tracking_status", synthetic.TRACKING_STATUSES),
        ("uni_tracking_info", "carrier_code", synthetic.CARRIER_CODES),
    ):
        seen = {v for (v,) in conn.execute(f"select distinct {column} from raw.{table}").fetchall()}
        assert seen == set(values), (table, column)


def test_a_failing_batch_leaves_no_rows(conn: Any) -> None:
    conn.execute("drop table raw.uni_tracking_spath")  # the third insert fails
    with pytest.raises(duckdb.Error):
        load_batch(conn, "duckdb", T0, T0 + 600, orders_per_minute=10)
    assert scalar(conn, "select count(*) from raw.ecs_order_info") == 0
    assert scalar(conn, "select count(*) from raw.uni_tracking_info") == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dialect": "mysql"}, "dialect must be one of"),
        ({"start_ts": 10, "end_ts": 5}, "start_ts <= end_ts"),
        ({"duplicate_share": 1.5}, "duplicate_share"),
        ({"late_share": -0.1}, "late_share"),
        ({"late_delay_s": (10, 5)}, "late_delay_s"),
        ({"orders_per_minute": 0}, "orders_per_minute"),
        ({"schema": "raw; drop table x"}, "identifier"),
    ],
)
def test_bad_arguments_are_rejected(conn: Any, kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"dialect": "duckdb", "start_ts": T0, "end_ts": T0 + 60}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        load_batch(conn, **args)


def test_the_same_seed_gives_the_same_rows_on_postgres(conn: Any, pg_db: Any) -> None:
    stream: dict[str, Any] = {"orders_per_minute": 20, "seed": 9, "late_share": 0.2}
    load_batch(conn, "duckdb", T0, T0 + 3600, **stream)
    pg = pg_db.connect()
    try:
        create_raw_tables(pg, "postgres")
        counts = load_batch(pg, "postgres", T0, T0 + 3600, **stream)
        for table in RAW_TABLES:
            with pg.cursor() as cur:
                cur.execute(f"select * from raw.{table} order by {ORDER_BY[table]}")
                pg_rows = [tuple(r) for r in cur.fetchall()]
            assert pg_rows == rows(conn, table), table
            assert counts[table] == len(pg_rows)
    finally:
        pg.close()


def test_sample_data_loads_consecutive_quarter_hours_into_the_raw_schema_setting(
    tmp_path: Path,
) -> None:
    """DuckDB target: the raw schema comes from the settings; batches end at a quarter hour."""
    from dbt_runner import Settings
    from dbt_runner.synthetic import SAMPLE_BATCH_S, load_sample_data

    db = tmp_path / "sample.duckdb"
    settings = Settings(warehouse={"type": "duckdb", "path": str(db)}, raw_schema="landing")
    lines: list[str] = []
    before = int(time.time())
    counts = load_sample_data(settings, batches=2, echo=lines.append)
    assert len(lines) == 2 and all(line.startswith("batch [") for line in lines)
    check = duckdb.connect(str(db), read_only=True)
    try:
        for table in RAW_TABLES:
            assert scalar(check, f"select count(*) from landing.{table}") == counts[table] > 0
        newest = scalar(check, "select max(add_time) from landing.ecs_order_info")
        oldest = scalar(check, "select min(add_time) from landing.ecs_order_info")
    finally:
        check.close()
    end = before // SAMPLE_BATCH_S * SAMPLE_BATCH_S
    # (a re-delivery in the first batch may carry a timestamp up to 1200 s older)
    assert end - 2 * SAMPLE_BATCH_S - 1200 <= oldest and newest < end + SAMPLE_BATCH_S
    with pytest.raises(ValueError, match="batches"):
        load_sample_data(settings, batches=0)
