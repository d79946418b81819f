"""``dbt-runner sample-data`` then a first real cycle, on PostgreSQL and the Redshift stand-in.

A new user's path: settings in ``DBT_RUNNER_*`` (raw schema included), sample
raw data loaded through the same settings (and the same SSH bastion), then
``dbt-runner cycle`` on it. The raw tables must hold exactly the rows the
generator produces for those batches, and the cycle must build and test them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from dbt_runner.cli import main
from dbt_runner.synthetic import RAW_TABLES, SAMPLE_BATCH_S, create_raw_tables, load_batch
from testbed.pg_fixtures import PgDatabase, RedshiftDatabase
from testbed.sshd import SshdServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

START = 1_767_225_600  # 2026-01-01T00:00:00Z
RAW_SCHEMA = "landing"


def _env(db: PgDatabase, kind: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "DBT_RUNNER_WAREHOUSE__TYPE": kind,
        "DBT_RUNNER_WAREHOUSE__HOST": db.host,
        "DBT_RUNNER_WAREHOUSE__PORT": str(db.port),
        "DBT_RUNNER_WAREHOUSE__USER": db.user,
        "DBT_RUNNER_WAREHOUSE__PASSWORD": db.password,
        "DBT_RUNNER_WAREHOUSE__DBNAME": db.dbname,
        "DBT_RUNNER_WAREHOUSE__SSLMODE": db.sslmode,
        "DBT_RUNNER_WAREHOUSE__SCHEMA": "staging",
        "DBT_RUNNER_RAW_SCHEMA": RAW_SCHEMA,
        "DBT_RUNNER_STATE_DIR": str(tmp_path / "state"),
        "DBT_RUNNER_RETRY__ATTEMPTS": "1",
    }
    env.update(extra)
    return env


def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _expected_rows(batches: int, orders_per_minute: int) -> dict[str, list[tuple[Any, ...]]]:
    """What the generator yields for those batches, sorted, read from DuckDB."""
    conn = duckdb.connect()
    try:
        create_raw_tables(conn, "duckdb")
        for i in range(batches):
            first = START + i * SAMPLE_BATCH_S
            load_batch(
                conn, "duckdb", first, first + SAMPLE_BATCH_S, orders_per_minute=orders_per_minute
            )
        return {t: sorted(conn.execute(f"select * from raw.{t}").fetchall()) for t in RAW_TABLES}
    finally:
        conn.close()


def _rows(db: PgDatabase, table: str) -> list[tuple[Any, ...]]:
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"select * from {RAW_SCHEMA}.{table}")
            return sorted(tuple(r) for r in cur.fetchall())
    finally:
        conn.close()


def _first_cycle(db: PgDatabase, env: dict[str, str]) -> None:
    args = ("--batches", "3", "--orders-per-minute", "10", "--start", str(START))
    code, out = _cli(env, "sample-data", *args)
    assert code == 0, out
    expected = _expected_rows(3, 10)
    for table in RAW_TABLES:
        assert _rows(db, table) == expected[table], table
    assert f"{RAW_SCHEMA}.ecs_order_info {len(expected['ecs_order_info']):,}" in out

    # the raw schema setting reaches dbt: the first cycle reads landing.*
    code, out = _cli(env, "cycle", "--json")
    assert code == 0, out
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("select count(*) from staging.stg_ecs_order_info")
            assert cur.fetchone()[0] == len({r[0] for r in expected["ecs_order_info"]})
    finally:
        conn.close()

    # a second load appends the next batch; the next cycle picks it up
    args = ("--batches", "1", "--orders-per-minute", "10")
    code, out = _cli(env, "sample-data", *args, "--start", str(START + 3 * SAMPLE_BATCH_S))
    assert code == 0, out
    expected = _expected_rows(4, 10)
    assert _rows(db, "uni_tracking_spath") == expected["uni_tracking_spath"]
    code, out = _cli(env, "cycle")
    assert code == 0, out


def test_sample_data_and_a_first_cycle_on_postgres_through_the_bastion(
    pg_db: PgDatabase, sshd: SshdServer, tmp_path: Path
) -> None:
    env = _env(
        pg_db,
        "postgres",
        tmp_path,
        DBT_RUNNER_SSH__HOST=sshd.host,
        DBT_RUNNER_SSH__PORT=str(sshd.port),
        DBT_RUNNER_SSH__USER=sshd.user,
        DBT_RUNNER_SSH__PRIVATE_KEY=str(sshd.private_key_path),
        DBT_RUNNER_SSH__KNOWN_HOSTS=str(sshd.known_hosts_path),
    )
    before = sshd.accepted_connections()
    _first_cycle(pg_db, env)
    # two sample-data loads and two cycles: one SSH connection each
    assert sshd.accepted_connections() - before == 4


def test_sample_data_and_a_first_cycle_on_the_redshift_stand_in(
    redshift_db: RedshiftDatabase, tmp_path: Path
) -> None:
    _first_cycle(redshift_db, _env(redshift_db, "redshift", tmp_path))


def test_sample_data_reports_a_wrong_password_as_configuration(
    pg_db: PgDatabase, tmp_path: Path
) -> None:
    env = _env(pg_db, "postgres", tmp_path, DBT_RUNNER_WAREHOUSE__PASSWORD="wrong-secret-xyz")
    code, out = _cli(env, "sample-data", "--batches", "1")
    assert code == 2, out
    assert "auth error" in out and "wrong-secret-xyz" not in out
