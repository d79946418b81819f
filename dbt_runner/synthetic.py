"""Synthetic raw data for the staging models: set-based SQL, deterministic per seed.

The generator writes the three raw tables of the staging project's input
contract (``ecs_order_info``, ``uni_tracking_info``, ``uni_tracking_spath``,
see ``docs/models.md``) on DuckDB or PostgreSQL. Every row is produced by one
``INSERT ... SELECT`` over ``generate_series``: no Python row loops, so
millions of rows load in seconds.

The data model
--------------
* Orders are created at a steady ``orders_per_minute``; order number ``g`` is
  created at ``add_time = g * 60 // orders_per_minute`` (epoch seconds) and has
  ``order_id = 'O<g>'``. The numbering is global, so batches generated with the
  same ``orders_per_minute`` and ``seed`` fit together.
* Each order has 2-6 tracking events, about 20 minutes apart. Event ``j``
  writes a path row (``traceSeq = j``, ``pathTime``) and re-sends the order's
  tracking info with ``update_time = pathTime`` and the new status.
* Every row has a *delivery time*: its own timestamp, plus a delay for the
  ``late_share`` of rows picked as late. A batch ``[start_ts, end_ts)``
  holds the rows delivered in that interval, so late rows carry timestamps
  earlier than the batch they arrive in. Consecutive batches (``end_ts`` of
  one = ``start_ts`` of the next, same parameters) deliver every row exactly
  once, plus the duplicates below. The stream starts with the first batch
  loaded: a re-delivery whose first delivery fell before that arrives as a
  first delivery (as a late row, if it is old).
* ``duplicate_share`` of rows are delivered twice in the same batch (exact
  duplicates); ``redelivery_share`` of rows are delivered once more, up to
  ``redelivery_max_s`` later (re-deliveries, possibly in a later batch).

Which rows are late, duplicated or re-delivered is a hash of the row and the
seed: the same call always produces the same rows, on either database.

>>> import duckdb
>>> from dbt_runner.synthetic import create_raw_tables, load_batch
>>> conn = duckdb.connect()
>>> create_raw_tables(conn, "duckdb")
>>> counts = load_batch(
...     conn, "duckdb", 1_700_000_000, 1_700_003_600,
...     orders_per_minute=10, duplicate_share=0, redelivery_share=0,
... )
>>> counts["ecs_order_info"]  # 60 minutes x 10 orders, no duplicates
600
>>> sorted(counts)
['ecs_order_info', 'uni_tracking_info', 'uni_tracking_spath']
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ._settings import Settings

__all__ = [
    "ACCEPTED_VALUES_VARS",
    "CARRIER_CODES",
    "CURRENCIES",
    "LOCATIONS",
    "MAX_PATH_EVENTS",
    "ORDER_STATUSES",
    "PATH_STEP_S",
    "RAW_TABLES",
    "SAMPLE_BATCH_S",
    "TRACKING_STATUSES",
    "Connection",
    "Dialect",
    "create_raw_tables",
    "load_batch",
    "load_sample_data",
    "main",
]

Dialect = Literal["duckdb", "postgres"]

RAW_TABLES: tuple[str, ...] = ("ecs_order_info", "uni_tracking_info", "uni_tracking_spath")
"""The raw tables, in load order."""

CURRENCIES: tuple[str, ...] = ("USD", "EUR", "GBP", "CNY", "JPY")
"""Values of ``ecs_order_info.currency``."""

ORDER_STATUSES: tuple[str, ...] = ("pending", "paid", "shipped", "completed", "cancelled")
"""Values of ``ecs_order_info.order_status``."""

TRACKING_STATUSES: tuple[str, ...] = (
    "info_received",
    "in_transit",
    "out_for_delivery",
    "delivered",
    "exception",
)
"""Values of ``uni_tracking_info.tracking_status``."""

ACCEPTED_VALUES_VARS: dict[str, list[str]] = {
    "accepted_currencies": list(CURRENCIES),
    "accepted_order_statuses": list(ORDER_STATUSES),
    "accepted_tracking_statuses": list(TRACKING_STATUSES),
}
"""The staging project's value-domain vars set to this generator's values.

The raw contract does not define these domains, so the project leaves them
empty (no accepted-values tests); the demo sets them for its synthetic data.
"""

CARRIER_CODES: tuple[str, ...] = ("ups", "fedex", "dhl", "usps", "sf_express")
"""Values of ``uni_tracking_info.carrier_code``."""

LOCATIONS: tuple[str, ...] = (  # values of uni_tracking_spath.location
    "Shenzhen",
    "Hong Kong",
    "Leipzig",
    "Louisville",
    "Memphis",
    "Chicago",
    "Rotterdam",
    "Singapore",
    "Dubai",
    "Los Angeles",
)

MAX_PATH_EVENTS = 6
"""Most tracking events per order (each order has 2 to this many)."""

PATH_STEP_S = 1200
"""Event ``j`` of an order happens in ``[add_time + j*STEP, add_time + (j+1)*STEP)``."""

_STATUS_TEXT = {
    "info_received": "Shipment information received",
    "in_transit": "In transit",
    "out_for_delivery": "Out for delivery",
    "delivered": "Delivered",
    "exception": "Delivery exception",
}

_PRIME = 2_147_483_647  # 2**31 - 1: keeps every product of the hash below 2**63
_PPM = 1_000_000  # shares are compared in parts per million
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Cursor(Protocol):
    rowcount: int

    def execute(self, sql: str, /) -> Any: ...

    def close(self) -> Any: ...


class Connection(Protocol):
    """The DB-API surface the generator uses (a duckdb or psycopg2 connection)."""

    def cursor(self) -> Any: ...

    def commit(self) -> Any: ...

    def rollback(self) -> Any: ...


# --------------------------------------------------------------------------
# The only place where DuckDB and PostgreSQL differ.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _SQLDialect:
    name: Dialect
    floor_div: str  # integer division of two bigints, truncating (operands >= 0)
    begin: str | None  # statement opening the batch's transaction, None = driver's own

    def idiv(self, a: str, b: str) -> str:
        return self.floor_div.format(a=a, b=b)


_DIALECTS: dict[str, _SQLDialect] = {
    # DuckDB: `/` is float division, `//` integer division; autocommit by
    # default, so the batch opens its own transaction.
    "duckdb": _SQLDialect("duckdb", "(({a}) // ({b}))", "begin transaction"),
    # PostgreSQL: `/` on bigints truncates; psycopg2 opens a transaction itself.
    "postgres": _SQLDialect("postgres", "(({a}) / ({b}))", None),
}


def _dialect(dialect: str) -> _SQLDialect:
    try:
        return _DIALECTS[dialect]
    except KeyError:
        raise ValueError(f"dialect must be one of {sorted(_DIALECTS)}, got {dialect!r}") from None


# --------------------------------------------------------------------------
# DDL
# --------------------------------------------------------------------------

_DDL = {
    "ecs_order_info": (
        "order_id varchar, shop_id integer, customer_id integer, order_status varchar, "
        "amount numeric(12,2), currency varchar(3), add_time bigint"
    ),
    "uni_tracking_info": (
        "order_id varchar, tracking_number varchar, carrier_code varchar, "
        "tracking_status varchar, update_time bigint"
    ),
    "uni_tracking_spath": (
        "order_id varchar, traceSeq integer, pathTime bigint, location varchar, description varchar"
    ),
}


def create_raw_tables(
    conn: Connection, dialect: Dialect, schema: str = "raw", *, replace: bool = False
) -> None:
    """Create the schema and the three raw tables (the models' input contract).

    Existing tables are kept unless ``replace=True``, which drops them first.
    Identifiers are unquoted, as upstream creates them (PostgreSQL folds
    ``traceSeq`` to ``traceseq``).

    >>> import duckdb
    >>> conn = duckdb.connect()
    >>> create_raw_tables(conn, "duckdb", schema="raw")
    >>> conn.execute("select count(*) from raw.uni_tracking_spath").fetchone()
    (0,)
    """
    d = _dialect(dialect)
    _check_identifier(schema)
    statements = [f"create schema if not exists {schema}"]
    for table in RAW_TABLES:
        if replace:
            statements.append(f"drop table if exists {schema}.{table}")
        statements.append(f"create table if not exists {schema}.{table} ({_DDL[table]})")
    _run_in_transaction(conn, d, statements)


# --------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------


def load_batch(
    conn: Connection,
    dialect: Dialect,
    start_ts: int,
    end_ts: int,
    *,
    orders_per_minute: int = 1000,
    seed: int = 0,
    duplicate_share: float = 0.01,
    redelivery_share: float = 0.01,
    redelivery_max_s: int = 1200,
    late_share: float = 0.0,
    late_delay_s: tuple[int, int] = (60, 1500),
    schema: str = "raw",
) -> dict[str, int]:
    """Append the raw rows delivered in ``[start_ts, end_ts)``; return rows per table.

    All three tables are written in one transaction.

    Args:
        conn: an open duckdb or psycopg2 connection (committed on success).
        dialect: ``"duckdb"`` or ``"postgres"``.
        start_ts, end_ts: the delivery interval, epoch seconds (``0 <= start_ts <= end_ts``).
        orders_per_minute: order creation rate; keep it (and ``seed``) constant
            for all batches of one data set, order ids depend on it.
        seed: varies every hashed choice (amounts, statuses, which rows are
            late or duplicated...).
        duplicate_share: share of rows delivered twice in the same batch.
        redelivery_share: share of rows delivered again 1..``redelivery_max_s``
            seconds after their first delivery.
        late_share: share of rows delivered late, by a delay drawn uniformly
            from ``late_delay_s`` (inclusive bounds, seconds). With the
            staging models' 30-minute scan, delays up to 1800 s are caught by
            the next incremental run; longer ones are missed by it (the audit
            test reports them). Note a delay counts from the row's own
            timestamp: a row is *earlier than its batch* only when the delay
            exceeds its distance from ``start_ts``.
        schema: schema of the raw tables (see :func:`create_raw_tables`).

    >>> import duckdb
    >>> conn = duckdb.connect()
    >>> create_raw_tables(conn, "duckdb")
    >>> counts = load_batch(
    ...     conn, "duckdb", 1_700_003_600, 1_700_004_500, orders_per_minute=10,
    ...     late_share=0.2, late_delay_s=(600, 1200),
    ... )
    >>> counts["ecs_order_info"] > 0
    True
    >>> conn.execute(  # late rows: timestamps before the batch they arrive in
    ...     "select count(*) > 0 from raw.ecs_order_info where add_time < 1700003600"
    ... ).fetchone()
    (True,)
    """
    d = _dialect(dialect)
    _check_identifier(schema)
    plan = _Plan.build(
        start_ts=start_ts,
        end_ts=end_ts,
        orders_per_minute=orders_per_minute,
        seed=seed,
        duplicate_share=duplicate_share,
        redelivery_share=redelivery_share,
        redelivery_max_s=redelivery_max_s,
        late_share=late_share,
        late_delay_s=late_delay_s,
    )
    statements = [
        _orders_sql(d, plan, schema),
        _tracking_sql(d, plan, schema, "uni_tracking_info"),
        _tracking_sql(d, plan, schema, "uni_tracking_spath"),
    ]
    counts = _run_in_transaction(conn, d, statements)
    return dict(zip(RAW_TABLES, counts[-3:], strict=True))


@dataclass(frozen=True)
class _Plan:
    """A batch's parameters, validated, plus the candidate order range."""

    start_ts: int
    end_ts: int
    orders_per_minute: int
    seed: int
    dup_ppm: int
    redelivery_ppm: int
    redelivery_max_s: int
    late_ppm: int
    late_lo: int
    late_hi: int

    @classmethod
    def build(
        cls,
        *,
        start_ts: int,
        end_ts: int,
        orders_per_minute: int,
        seed: int,
        duplicate_share: float,
        redelivery_share: float,
        redelivery_max_s: int,
        late_share: float,
        late_delay_s: tuple[int, int],
    ) -> _Plan:
        if not 0 <= start_ts <= end_ts:
            raise ValueError(f"need 0 <= start_ts <= end_ts, got {start_ts}, {end_ts}")
        if orders_per_minute < 1:
            raise ValueError(f"orders_per_minute must be >= 1, got {orders_per_minute}")
        for name, share in (
            ("duplicate_share", duplicate_share),
            ("redelivery_share", redelivery_share),
            ("late_share", late_share),
        ):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {share}")
        late_lo, late_hi = late_delay_s
        if not 0 <= late_lo <= late_hi:
            raise ValueError(
                f"late_delay_s must be (lo, hi) with 0 <= lo <= hi, got {late_delay_s}"
            )
        if redelivery_max_s < 1:
            raise ValueError(f"redelivery_max_s must be >= 1, got {redelivery_max_s}")
        return cls(
            start_ts=start_ts,
            end_ts=end_ts,
            orders_per_minute=orders_per_minute,
            seed=seed,
            dup_ppm=round(duplicate_share * _PPM),
            redelivery_ppm=round(redelivery_share * _PPM),
            redelivery_max_s=redelivery_max_s,
            late_ppm=round(late_share * _PPM),
            late_lo=late_lo,
            late_hi=late_hi,
        )

    @property
    def max_delay_s(self) -> int:
        """Longest delivery delay any row of this batch can have."""
        late = self.late_hi if self.late_ppm else 0
        again = self.redelivery_max_s if self.redelivery_ppm else 0
        return late + again

    def order_range(self, event_span_s: int) -> tuple[int, int]:
        """Inclusive range of order numbers whose rows may be delivered in this batch.

        ``event_span_s``: how long after its creation an order still emits rows.
        """
        opm = self.orders_per_minute
        first_ts = max(0, self.start_ts - self.max_delay_s - event_span_s)
        last_ts = self.end_ts - 1
        first = -(-first_ts * opm // 60)  # smallest g with g*60//opm >= first_ts
        last = ((last_ts + 1) * opm - 1) // 60  # largest g with g*60//opm <= last_ts
        return first, last

    def hash(self, x: str, salt: str) -> str:
        """SQL for a pseudo-random integer in [0, 2**31 - 1) from integer expression x.

        ((a*x + b) mod p)^2 mod p, with a, b drawn from (seed, salt): integer
        arithmetic both databases evaluate identically, all products < 2**63.
        """
        rng = random.Random(f"dbt_runner.synthetic/{self.seed}/{salt}")
        a = rng.randrange(1, _PRIME)
        b = rng.randrange(0, _PRIME)
        y = f"(((({x}) % {_PRIME}) * {a} + {b}) % {_PRIME})"
        return f"(({y} * {y}) % {_PRIME})"

    def chance(self, x: str, salt: str, ppm: int) -> str:
        """SQL condition true for about ``ppm`` parts per million of x values."""
        if ppm >= _PPM:
            return "1 = 1"
        if ppm <= 0:
            return "1 = 0"
        return f"({self.hash(x, salt)} % {_PPM} < {ppm})"


def _pick(index_sql: str, values: Sequence[str]) -> str:
    """SQL choosing values[index] (index_sql is already reduced modulo len(values))."""
    whens = " ".join(f"when {i} then '{v}'" for i, v in enumerate(values))
    return f"(case {index_sql} {whens} end)"


def _deliveries(plan: _Plan, table: str, event_sql: str, columns: str) -> str:
    """Wrap one row per event into its deliveries that fall in the batch.

    ``event_sql`` yields the table's ``columns`` plus ``ev_time`` (the row's
    timestamp) and ``ev_key`` (a unique integer per event, for the hashes).
    """
    late = plan.chance("ev_key", f"{table}/late", plan.late_ppm)
    late_span = plan.late_hi - plan.late_lo + 1
    delay = (
        f"(case when {late} then {plan.late_lo} + "
        f"{plan.hash('ev_key', f'{table}/late_delay')} % {late_span} else 0 end)"
        if plan.late_ppm
        else "0"
    )
    copies = ["(0)"]
    conditions = ["k.n = 0"]
    if plan.dup_ppm:
        copies.append("(1)")
        conditions.append(f"(k.n = 1 and {plan.chance('ev_key', f'{table}/dup', plan.dup_ppm)})")
    if plan.redelivery_ppm:
        copies.append("(2)")
        conditions.append(
            f"(k.n = 2 and {plan.chance('ev_key', f'{table}/again', plan.redelivery_ppm)})"
        )
    again_delay = plan.hash("ev_key", f"{table}/again_delay")
    again = f"(case when k.n = 2 then 1 + {again_delay} % {plan.redelivery_max_s} else 0 end)"
    return f"""
select {columns}
from (
    select ev.*, ev.ev_time + {delay} + {again if plan.redelivery_ppm else "0"} as delivered_at
    from ({event_sql}) ev
    cross join (values {", ".join(copies)}) as k(n)
    where {" or ".join(conditions)}
) d
where delivered_at >= {plan.start_ts} and delivered_at < {plan.end_ts}
"""


def _orders_source(d: _SQLDialect, plan: _Plan, span_s: int) -> str:
    first, last = plan.order_range(span_s)
    return (
        f"select g, {d.idiv('g * 60', str(plan.orders_per_minute))} as created_at "
        f"from generate_series(cast({first} as bigint), cast({last} as bigint)) as s(g)"
    )


def _orders_sql(d: _SQLDialect, plan: _Plan, schema: str) -> str:
    h = plan.hash
    event_sql = f"""
        select
            'O' || cast(o.g as varchar) as order_id,
            1 + {h("o.g", "shop")} % 500 as shop_id,
            1 + {h("o.g", "customer")} % 200000 as customer_id,
            {_pick(f"{h('o.g', 'order_status')} % {len(ORDER_STATUSES)}", ORDER_STATUSES)}
                as order_status,
            cast(1 + ({h("o.g", "amount")} % 100000) * 0.01 as numeric(12,2)) as amount,
            {_pick(f"{h('o.g', 'currency')} % {len(CURRENCIES)}", CURRENCIES)} as currency,
            o.created_at as add_time,
            o.created_at as ev_time,
            o.g as ev_key
        from ({_orders_source(d, plan, 0)}) o"""
    columns = "order_id, shop_id, customer_id, order_status, amount, currency, add_time"
    return f"insert into {schema}.ecs_order_info ({columns})" + _deliveries(
        plan, "ecs_order_info", event_sql, columns
    )


def _tracking_sql(d: _SQLDialect, plan: _Plan, schema: str, table: str) -> str:
    """Tracking info (one re-send per event) or path rows (one per event)."""
    h = plan.hash
    span = (MAX_PATH_EVENTS + 1) * PATH_STEP_S
    events = f"""
        select
            o.g,
            e.j,
            o.created_at + e.j * {PATH_STEP_S} + {h("o.g * 8 + e.j", "jitter")} % {PATH_STEP_S}
                as ev_time,
            o.g * 8 + e.j as ev_key,
            case
                when e.j = o.p then
                    case when {h("o.g", "exception")} % 20 = 0
                        then 'exception' else 'delivered' end
                when e.j = 1 then 'info_received'
                when e.j = o.p - 1 then 'out_for_delivery'
                else 'in_transit'
            end as status
        from (
            select g, created_at, 2 + {h("g", "events")} % {MAX_PATH_EVENTS - 1} as p
            from ({_orders_source(d, plan, span)}) src
        ) o
        cross join generate_series(1, {MAX_PATH_EVENTS}) as e(j)
        where e.j <= o.p"""
    if table == "uni_tracking_info":
        columns = "order_id, tracking_number, carrier_code, tracking_status, update_time"
        event_sql = f"""
            select
                'O' || cast(g as varchar) as order_id,
                'TN' || cast(g as varchar) as tracking_number,
                {_pick(f"{h('g', 'carrier')} % {len(CARRIER_CODES)}", CARRIER_CODES)}
                    as carrier_code,
                status as tracking_status,
                ev_time as update_time,
                ev_time,
                ev_key
            from ({events}) t"""
    else:
        columns = "order_id, traceSeq, pathTime, location, description"
        status_text = " ".join(f"when '{k}' then '{v}'" for k, v in _STATUS_TEXT.items())
        event_sql = f"""
            select
                'O' || cast(g as varchar) as order_id,
                cast(j as integer) as traceSeq,
                ev_time as pathTime,
                {_pick(f"{h('ev_key', 'location')} % {len(LOCATIONS)}", LOCATIONS)} as location,
                (case status {status_text} end) as description,
                ev_time,
                ev_key
            from ({events}) t"""
    return f"insert into {schema}.{table} ({columns})" + _deliveries(
        plan, table, event_sql, columns
    )


# --------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------


def _check_identifier(name: str) -> None:
    if not _IDENT.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")


def _run_in_transaction(conn: Connection, d: _SQLDialect, statements: Sequence[str]) -> list[int]:
    """Run statements in one transaction; return each one's rowcount."""
    cur: _Cursor = conn.cursor()
    counts: list[int] = []
    try:
        if d.begin:
            cur.execute(d.begin)
        for sql in statements:
            cur.execute(sql)
            counts.append(cur.rowcount)
        if d.begin:
            cur.execute("commit")
        else:
            conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):  # keep the original error
            if d.begin:  # a duckdb cursor is its own connection: roll back there
                cur.execute("rollback")
            else:
                conn.rollback()
        raise
    finally:
        cur.close()
    return counts


# --------------------------------------------------------------------------
# Sample data into the configured warehouse (``dbt-runner sample-data``)
# --------------------------------------------------------------------------

SAMPLE_BATCH_S = 900
"""Length of one sample batch: one 15-minute cycle's deliveries."""

_ROWS_PER_INSERT = 1000  # 7 columns x 1000 rows stays far below the 32767 bind parameters
_COLUMNS = {table: ", ".join(c.split()[0] for c in ddl.split(", ")) for table, ddl in _DDL.items()}


def load_sample_data(
    settings: Settings,
    *,
    batches: int = 8,
    orders_per_minute: int = 20,
    start_ts: int | None = None,
    seed: int = 0,
    replace: bool = False,
    echo: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Load ``batches`` 15-minute batches of synthetic raw data where ``settings`` point.

    The raw tables go to the schema of ``settings.dbt_vars["raw_schema"]``
    (``DBT_RUNNER_RAW_SCHEMA``, default ``raw``), over the same connection
    settings dbt uses, through the session's SSH tunnel when a bastion is
    configured. They are created when missing (``replace=True`` drops them
    first). The batches are consecutive and end at the last full quarter hour
    before now, unless ``start_ts`` (epoch seconds) says where they start.
    Returns the rows written per table.

    DuckDB is written with set-based SQL (:func:`load_batch`). PostgreSQL and
    Redshift get the same rows, generated in an in-memory DuckDB, as batched
    multi-row ``INSERT ... VALUES`` with bound parameters, one transaction
    per batch: no COPY, no S3, nothing but the warehouse connection, so it
    works through the tunnel.

    >>> from dbt_runner import Settings
    >>> counts = load_sample_data(  # doctest: +SKIP
    ...     Settings(warehouse={"type": "postgres", "host": "db", "user": "u", "dbname": "d"}),
    ...     batches=4,
    ... )
    """
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    schema = str(settings.dbt_vars.get("raw_schema", "raw"))
    _check_identifier(schema)
    if start_ts is None:
        import time

        start_ts = (int(time.time()) // SAMPLE_BATCH_S - batches) * SAMPLE_BATCH_S
    stream: dict[str, Any] = {"orders_per_minute": orders_per_minute, "seed": seed}
    windows = [
        (start_ts + i * SAMPLE_BATCH_S, start_ts + (i + 1) * SAMPLE_BATCH_S) for i in range(batches)
    ]
    say = echo or (lambda _line: None)
    totals = dict.fromkeys(RAW_TABLES, 0)
    with _warehouse_connection(settings) as (conn, dialect):
        if dialect == "duckdb":
            create_raw_tables(conn, "duckdb", schema, replace=replace)
            for first, last in windows:
                counts = load_batch(conn, "duckdb", first, last, schema=schema, **stream)
                _add(totals, counts, first, last, say)
            return totals
        import duckdb

        create_raw_tables(conn, "postgres", schema, replace=replace)
        scratch = duckdb.connect()
        try:
            create_raw_tables(scratch, "duckdb", "sample")
            for first, last in windows:
                load_batch(scratch, "duckdb", first, last, schema="sample", **stream)
                counts = _copy_rows(scratch, conn, schema)
                _add(totals, counts, first, last, say)
        finally:
            scratch.close()
    return totals


def _add(
    totals: dict[str, int],
    counts: dict[str, int],
    first: int,
    last: int,
    say: Callable[[str], None],
) -> None:
    for table, n in counts.items():
        totals[table] += n
    detail = ", ".join(f"{table} {n:,}" for table, n in counts.items())
    say(f"batch [{first}, {last}): {detail}")


def _copy_rows(scratch: Any, conn: Any, schema: str) -> dict[str, int]:
    """Move the scratch DuckDB's sample rows into ``schema`` on ``conn``, one transaction."""
    counts: dict[str, int] = {}
    cur = conn.cursor()
    try:
        for table in RAW_TABLES:
            columns = _COLUMNS[table]
            rows = scratch.execute(f"select {columns} from sample.{table}").fetchall()
            counts[table] = len(rows)
            width = len(columns.split(", "))
            row_marks = "(" + ", ".join(["%s"] * width) + ")"
            for i in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[i : i + _ROWS_PER_INSERT]
                sql = f"insert into {schema}.{table} ({columns}) values " + ", ".join(
                    [row_marks] * len(chunk)
                )
                cur.execute(sql, [value for row in chunk for value in row])
        conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):  # keep the original error
            conn.rollback()
        raise
    finally:
        cur.close()
    scratch.execute("begin transaction")
    for table in RAW_TABLES:
        scratch.execute(f"delete from sample.{table}")
    scratch.execute("commit")
    return counts


@contextlib.contextmanager
def _warehouse_connection(settings: Settings) -> Iterator[tuple[Any, Dialect]]:
    """A DB-API connection to the configured warehouse (tunnelled when SSH is set)."""
    wh = settings.warehouse
    if wh.type == "duckdb":
        import duckdb

        conn: Any = duckdb.connect(str(wh.path))
        try:
            yield conn, "duckdb"
        finally:
            conn.close()
        return
    from ._warehouse import connect as connect_warehouse
    from ._warehouse import routed, tunnel

    with contextlib.ExitStack() as stack:
        if settings.ssh.enabled:  # by the warehouse's name, the bytes through the tunnel
            stack.enter_context(routed(settings, stack.enter_context(tunnel(settings))))
        conn = connect_warehouse(settings, application_name="dbt-runner sample-data")
        stack.callback(conn.close)
        conn.autocommit = False
        yield conn, "postgres"


# --------------------------------------------------------------------------
# Command line: a quick load-time measure
# --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dbt_runner.synthetic``: load N hours of raw data and print the time taken.

    The default, 28 hours at 1000 orders/minute, is about 15 M raw rows.

    >>> main(["--duckdb", ":memory:", "--hours", "1", "--orders-per-minute", "10"])
    ... # doctest: +ELLIPSIS
    loaded 5,... raw rows (ecs_order_info 6..., ...) into duckdb in ... s
    0
    """
    import argparse
    import time

    parser = argparse.ArgumentParser(
        prog="python -m dbt_runner.synthetic", description=main.__doc__
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--duckdb", metavar="PATH", help="DuckDB file (or :memory:)")
    target.add_argument("--postgres", metavar="DSN", help="libpq DSN, e.g. 'host=... dbname=...'")
    parser.add_argument("--schema", default="raw")
    parser.add_argument("--start", type=int, default=1_767_225_600, help="epoch seconds")
    parser.add_argument("--hours", type=float, default=28.0)
    parser.add_argument("--orders-per-minute", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--late-share", type=float, default=0.01)
    args = parser.parse_args(argv)

    dialect: Dialect
    if args.duckdb is not None:
        import duckdb

        conn: Any = duckdb.connect(args.duckdb)
        dialect = "duckdb"
    else:
        import psycopg2

        conn = psycopg2.connect(args.postgres)
        dialect = "postgres"
    try:
        create_raw_tables(conn, dialect, args.schema, replace=True)
        t0 = time.perf_counter()
        counts = load_batch(
            conn,
            dialect,
            args.start,
            args.start + round(args.hours * 3600),
            orders_per_minute=args.orders_per_minute,
            seed=args.seed,
            late_share=args.late_share,
            schema=args.schema,
        )
        elapsed = time.perf_counter() - t0
    finally:
        conn.close()
    detail = ", ".join(f"{table} {n:,}" for table, n in counts.items())
    print(f"loaded {sum(counts.values()):,} raw rows ({detail}) into {dialect} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
