"""The benchmark test bed: real PostgreSQL, a real sshd bastion, raw data at a size.

:class:`Bed` starts (all on 127.0.0.1, all torn down by :meth:`Bed.close`):

* a throwaway PostgreSQL 15 (``testbed.postgres.PostgresServer``), tuned
  a little for a data set of millions of rows (see :data:`PG_TUNING`);
* the Redshift stand-in proxy (``testbed.redshift_proxy``) when the
  redshift adapter is benchmarked, with the catalog stubs dbt-redshift needs;
* an OpenSSH ``sshd`` bastion (``testbed.sshd.SshdServer``).

It then loads the three raw tables with :mod:`dbt_runner.synthetic` up to a
total number of raw rows, at a steady order rate, in time order; indexes the
raw tables on their time columns and ``CLUSTER``\\ s them (PostgreSQL's
stand-in for a Redshift SORTKEY: a time-range scan reads only its blocks).
:meth:`Bed.append_batch` appends the next 15-minute delivery batch, so every
measured cycle has real incremental work to do.

PostgreSQL has no zone maps: ``max(sort column)`` of a staging table and the
``DELETE ... where key in (...)`` of delete+insert would be full scans of the
staging table there, while Redshift answers them from zone maps / the
DISTKEY. :meth:`Bed.index_staging` therefore adds b-tree indexes on each
staging table's sort column and unique key after the initial build (the
incremental runs keep the table, so the indexes stay).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbt_runner import synthetic
from testbed.postgres import PostgresServer
from testbed.sshd import SshdServer

BATCH_S = 900
"""One cycle's delivery batch: 15 minutes."""

START_TS = 1_767_225_600
"""Epoch seconds where the synthetic history starts (2026-01-01 00:00 UTC)."""

ROWS_PER_ORDER = 9.1
"""Raw rows per order across the three tables (1 order + ~4 tracking + ~4 path rows + dups)."""

DEFAULT_ORDERS_PER_MINUTE = 150
"""The old job's rate: ~14 M raw rows in 7 days is ~150 orders a minute at ~9 rows each."""

PG_TUNING = {
    "shared_buffers": "512MB",
    "work_mem": "32MB",
    "maintenance_work_mem": "256MB",
    "effective_cache_size": "4GB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    # every statement and connection in the server log: counted per cycle (Bed.activity)
    "log_statement": "all",
    "log_connections": "on",
}
"""ALTER SYSTEM settings on top of the test fixture's (fsync off, md5 passwords)."""

#: staging table -> (sort column, unique key column) indexed by :meth:`Bed.index_staging`
STAGING_INDEXES = {
    "stg_ecs_order_info": ("add_time", "order_id"),
    "stg_uni_tracking_info": ("update_time", "order_id"),
    "stg_uni_tracking_spath": ("pathtime", "path_key"),
}

RAW_TIME_COLUMNS = {
    "ecs_order_info": "add_time",
    "uni_tracking_info": "update_time",
    "uni_tracking_spath": "pathtime",
}

ADAPTERS = ("postgres", "redshift")


def exit_on_sigterm() -> None:
    """SIGTERM (a ``kill``, a CI timeout) ends the benchmark as Ctrl-C does: it raises
    ``SystemExit(143)`` in the main thread, so every ``with``/``finally`` runs and the
    bed's PostgreSQL, sshd and moto server (detached processes) are stopped, not left."""

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def parse_size(text: str) -> int:
    """``"2m"`` -> 2_000_000, ``"500k"`` -> 500_000, ``"tiny"`` -> 60_000, ``"1234"`` -> 1234."""
    text = text.strip().lower().replace("_", "")
    if text == "tiny":
        return 60_000
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([km]?)", text)
    if not m:
        raise ValueError(f"size must be like 2m, 500k, 15m, tiny or a row count, got {text!r}")
    return int(float(m.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2)])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Endpoint:
    """Where a client reaches the warehouse for one adapter (PG itself or the proxy)."""

    adapter: str
    host: str
    port: int
    user: str
    password: str
    dbname: str

    def connect(self) -> Any:
        """A psycopg2 connection (autocommit) to this endpoint."""
        import psycopg2

        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.dbname,
            connect_timeout=10,
        )
        conn.autocommit = True
        return conn


@dataclass
class Bed:
    """PostgreSQL + sshd (+ Redshift proxy) with the raw tables loaded. See the module doc."""

    size_rows: int
    orders_per_minute: int = DEFAULT_ORDERS_PER_MINUTE
    adapters: tuple[str, ...] = ADAPTERS
    seed: int = 7
    log: Callable[[str], None] = print
    #: latency mode: round-trip time added between the bastion and the warehouse
    rtt_ms: float = 0.0
    #: sslmode of the postgres adapter's sessions (the Redshift stand-in has no TLS)
    sslmode: str = "disable"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dbr-bench-")))

    pg: PostgresServer | None = None
    sshd: SshdServer | None = None
    proxy: Any = None
    user: str = ""
    password: str = ""
    dbname: str = ""
    next_ts: int = START_TS
    raw_counts: dict[str, int] = field(default_factory=dict)
    delayed: dict[str, tuple[str, int]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Bed:
        t0 = time.monotonic()
        self._stack.callback(shutil.rmtree, self.workdir, True)
        pg = PostgresServer(max_connections=60)
        self._stack.callback(pg.close)
        pg.start()
        for key, value in PG_TUNING.items():
            pg.execute(f"ALTER SYSTEM SET {key} = '{value}'")
        pg.restart()
        self.pg = pg
        self.user = "bench_" + secrets.token_hex(3)
        self.password = secrets.token_hex(16)
        self.dbname = "bench"
        pg.create_role(self.user, self.password)
        pg.create_database(self.dbname, owner=self.user)
        if "redshift" in self.adapters:
            from testbed.redshift_proxy import RedshiftProxy, install_redshift_stubs

            install_redshift_stubs(pg, self.dbname)
            self.proxy = RedshiftProxy.for_server(pg)
            self._stack.callback(self.proxy.close)
        sshd = SshdServer()
        self._stack.callback(sshd.close)
        sshd.start()
        self.sshd = sshd
        if self.rtt_ms:
            from benchmarks._delay import DelayProxy

            upstreams = {"postgres": (pg.host, pg.port)}
            if self.proxy is not None:
                upstreams["redshift"] = (self.proxy.host, self.proxy.port)
            for adapter, upstream in upstreams.items():
                delayed = DelayProxy(upstream, self.rtt_ms)
                self._stack.callback(delayed.close)
                self.delayed[adapter] = (delayed.host, delayed.port)
        with self.connect() as conn:
            synthetic.create_raw_tables(conn, "postgres", schema="raw")
        self.timings["services_s"] = time.monotonic() - t0
        return self

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Bed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ connections
    def connect(self) -> Any:
        """psycopg2 connection to the bench database, directly (not autocommit)."""
        import psycopg2

        assert self.pg is not None
        return psycopg2.connect(
            host=self.pg.host,
            port=self.pg.port,
            user=self.user,
            password=self.password,
            dbname=self.dbname,
            connect_timeout=10,
        )

    def endpoint(self, adapter: str, delayed: bool = True) -> Endpoint:
        """The warehouse as an adapter sees it: PostgreSQL itself, or the Redshift proxy
        (behind the delaying proxy in latency mode, unless ``delayed`` is false: a bed
        with latency serves contenders without it too)."""
        assert self.pg is not None
        if delayed and adapter in self.delayed:  # latency mode: through the delaying proxy
            host, port = self.delayed[adapter]
        elif adapter == "redshift":
            assert self.proxy is not None, "start the bed with the redshift adapter"
            host, port = self.proxy.host, self.proxy.port
        else:
            host, port = self.pg.host, self.pg.port
        return Endpoint(adapter, host, port, self.user, self.password, self.dbname)

    def activity(self) -> tuple[int, int]:
        """(statements, connections) of the bench user logged by PostgreSQL so far.

        Difference two readings around a cycle for its statements and connection opens
        (``log_statement = all``, ``log_connections = on``; the floor's included).
        """
        from testbed.postgres import logged_activity

        assert self.pg is not None
        seen = logged_activity(self.pg.log_text(), self.user, self.dbname)
        return len(seen.statements), seen.connections

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Run one statement (autocommit) as the bench user; return its rows."""
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall()) if cur.description is not None else []
        finally:
            conn.close()

    # ------------------------------------------------------------------ data
    def history_minutes(self) -> int:
        """Minutes of history that give ``size_rows`` raw rows at the order rate."""
        return max(60, round(self.size_rows / (ROWS_PER_ORDER * self.orders_per_minute)))

    def load_history(self, chunk_minutes: int = 12 * 60) -> dict[str, int]:
        """Load ``size_rows`` raw rows (about), in time order; index, cluster, analyze."""
        t0 = time.monotonic()
        minutes = self.history_minutes()
        end = START_TS + minutes * 60
        conn = self.connect()
        try:
            ts = START_TS
            for _ in range(minutes // chunk_minutes + 2):  # bounded
                if ts >= end:
                    break
                nxt = min(end, ts + chunk_minutes * 60)
                counts = synthetic.load_batch(
                    conn,
                    "postgres",
                    ts,
                    nxt,
                    orders_per_minute=self.orders_per_minute,
                    seed=self.seed,
                    late_share=0.02,
                    late_delay_s=(60, 1500),
                )
                for k, v in counts.items():
                    self.raw_counts[k] = self.raw_counts.get(k, 0) + v
                ts = nxt
        finally:
            conn.close()
        self.next_ts = end
        self.timings["load_s"] = time.monotonic() - t0
        t1 = time.monotonic()
        for table, column in RAW_TIME_COLUMNS.items():
            self.sql(f"create index if not exists {table}_{column}_idx on raw.{table} ({column})")
            self.sql(f"cluster raw.{table} using {table}_{column}_idx")
            self.sql(f"analyze raw.{table}")
        self.timings["index_cluster_s"] = time.monotonic() - t1
        return dict(self.raw_counts)

    def append_batch(self) -> dict[str, int]:
        """Append the next 15-minute delivery batch to the raw tables (and analyze them)."""
        conn = self.connect()
        try:
            counts = synthetic.load_batch(
                conn,
                "postgres",
                self.next_ts,
                self.next_ts + BATCH_S,
                orders_per_minute=self.orders_per_minute,
                seed=self.seed,
                late_share=0.02,
                late_delay_s=(60, 1500),
            )
        finally:
            conn.close()
        self.next_ts += BATCH_S
        for k, v in counts.items():
            self.raw_counts[k] = self.raw_counts.get(k, 0) + v
        return counts

    @property
    def raw_total(self) -> int:
        return sum(self.raw_counts.values())

    def index_staging(self, schema: str) -> None:
        """B-tree indexes standing in for Redshift's SORTKEY/DISTKEY on the staging tables."""
        for table, columns in STAGING_INDEXES.items():
            for column in columns:
                self.sql(
                    f"create index if not exists {table}_{column}_idx"
                    f" on {schema}.{table} ({column})"
                )
            self.sql(f"analyze {schema}.{table}")

    def staging_counts(self, schema: str) -> dict[str, int]:
        return {
            t: int(self.sql(f"select count(*) from {schema}.{t}")[0][0]) for t in STAGING_INDEXES
        }

    # ------------------------------------------------------------------ dbt settings
    def runner_env(
        self, adapter: str, schema: str, state_dir: Path, threads: int = 3, delayed: bool = True
    ) -> dict[str, str]:
        """``DBT_RUNNER_*`` variables for a :class:`dbt_runner.DbtSession` through the bastion
        (``delayed``: see :meth:`endpoint`)."""
        assert self.sshd is not None
        ep = self.endpoint(adapter, delayed)
        return {
            "DBT_RUNNER_WAREHOUSE__TYPE": adapter,
            "DBT_RUNNER_WAREHOUSE__HOST": ep.host,
            "DBT_RUNNER_WAREHOUSE__PORT": str(ep.port),
            "DBT_RUNNER_WAREHOUSE__USER": ep.user,
            "DBT_RUNNER_WAREHOUSE__PASSWORD": ep.password,
            "DBT_RUNNER_WAREHOUSE__DBNAME": ep.dbname,
            "DBT_RUNNER_WAREHOUSE__SCHEMA": schema,
            "DBT_RUNNER_WAREHOUSE__SSLMODE": self.sslmode if adapter == "postgres" else "disable",
            "DBT_RUNNER_SSH__HOST": self.sshd.host,
            "DBT_RUNNER_SSH__PORT": str(self.sshd.port),
            "DBT_RUNNER_SSH__USER": self.sshd.user,
            "DBT_RUNNER_SSH__PRIVATE_KEY": str(self.sshd.private_key_path),
            "DBT_RUNNER_SSH__KNOWN_HOSTS": str(self.sshd.known_hosts_path),
            "DBT_RUNNER_STATE_DIR": str(state_dir),
            "DBT_RUNNER_THREADS": str(threads),
            "DBT_RUNNER_RETRY__ATTEMPTS": "1",
        }
