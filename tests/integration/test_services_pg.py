"""The PostgreSQL and Redshift stand-in fixtures behave like the real services."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.pg_fixtures import PgDatabase, RedshiftDatabase
from testbed.postgres import PostgresServer
from testbed.redshift_proxy import RedshiftProxy, strip_redshift_ddl

integration = pytest.mark.integration


# -- PostgreSQL ----------------------------------------------------------------


@integration
def test_created_role_logs_in_with_md5_password(pg_server: PostgresServer, pg_db: PgDatabase):
    import psycopg2

    conn = pg_db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("select current_user, current_database()")
            assert cur.fetchone() == (pg_db.user, pg_db.dbname)
            # The owner may create schemas in its database.
            cur.execute("create schema analytics")
        conn.commit()
    finally:
        conn.close()

    (stored,) = pg_server.execute(
        f"select rolpassword from pg_authid where rolname = '{pg_db.user}'"
    )[0]
    assert stored.startswith("md5")

    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(
            host=pg_db.host,
            port=pg_db.port,
            user=pg_db.user,
            password="wrong",
            dbname=pg_db.dbname,
            connect_timeout=5,
        )


@integration
def test_restart_keeps_data_and_port(pg_server: PostgresServer, pg_db: PgDatabase):
    port = pg_server.port
    pg_server.execute(
        "create table kept (a int); insert into kept values (42)", dbname=pg_db.dbname
    )
    pg_server.restart()
    assert pg_server.port == port
    assert pg_server.execute("select a from kept", dbname=pg_db.dbname) == [(42,)]


@integration
def test_connection_limit_refuses_second_connection(pg_server: PostgresServer):
    import psycopg2

    pg_server.create_role("limited_role", "limited-pw", connection_limit=1)
    try:
        pg_server.create_database("limited_db", owner="limited_role")
        kwargs: dict[str, Any] = {
            "host": pg_server.host,
            "port": pg_server.port,
            "user": "limited_role",
            "password": "limited-pw",
            "dbname": "limited_db",
            "connect_timeout": 5,
        }
        first = psycopg2.connect(**kwargs)
        try:
            with pytest.raises(
                psycopg2.OperationalError, match='too many connections for role "limited_role"'
            ):
                psycopg2.connect(**kwargs)
        finally:
            first.close()
    finally:
        pg_server.drop_database("limited_db")
        pg_server.drop_role("limited_role")


# -- Redshift stand-in -----------------------------------------------------------


def test_strip_redshift_ddl_leaves_literals_and_ctas_query_alone():
    sql = (
        "create table s.t backup no diststyle key distkey (id) compound sortkey(id, ts)\n"
        "as (select 'diststyle all' as x, encode(b, 'hex') as h from u)"
    )
    out, records = strip_redshift_ddl(sql)
    assert "diststyle key" not in out and "sortkey" not in out
    assert "select 'diststyle all' as x, encode(b, 'hex') as h from u" in out
    assert records == [
        (sql, ["backup no", "diststyle key", "distkey(id)", "compound sortkey(id,ts)"])
    ]
    view = 'create view "db"."s"."v" as (select 1 as sortkey) with no schema binding'
    out, records = strip_redshift_ddl(view)
    assert out.rstrip() == 'create view "db"."s"."v" as (select 1 as sortkey)'
    assert records == [(view, ["with no schema binding"])]
    assert strip_redshift_ddl("select sortkey, distkey from t") == (
        "select sortkey, distkey from t",
        [],
    )


@integration
def test_redshift_connector_through_proxy(pg_server: PostgresServer, redshift_db: RedshiftDatabase):
    import redshift_connector

    conn = redshift_connector.connect(
        host=redshift_db.host,
        port=redshift_db.port,
        user=redshift_db.user,
        password=redshift_db.password,
        database=redshift_db.dbname,
        ssl=False,
        timeout=10,
    )
    try:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("select 1")
        assert cur.fetchone() == [1]
        cur.execute("create table t (a int encode az64) diststyle key distkey(a) sortkey(a)")
        cur.execute("insert into t values (7)")
        cur.execute("select a from t")
        assert cur.fetchall() == ([7],)
    finally:
        conn.close()

    assert pg_server.execute("select a from public.t", dbname=redshift_db.dbname) == [(7,)]
    assert redshift_db.ddl_log == [
        (
            "create table t (a int encode az64) diststyle key distkey(a) sortkey(a)",
            ["encode az64", "diststyle key", "distkey(a)", "sortkey(a)"],
        )
    ]
    assert redshift_db.clauses_for("t") == [
        ["encode az64", "diststyle key", "distkey(a)", "sortkey(a)"]
    ]
    assert {"client_protocol_version", "driver_version", "os_version"} <= (
        redshift_db.proxy.dropped_startup_parameters
    )


@integration
def test_postgres_fixture_speaks_tls(pg_db: PgDatabase):
    """Production-shaped: the session is encrypted, and verify-full passes with the test CA."""
    import psycopg2

    from testbed.tls import test_pki

    dsn = f"{pg_db.dsn} sslmode=verify-full sslrootcert={test_pki().ca_path}"
    conn = psycopg2.connect(dsn, connect_timeout=5)
    try:
        assert conn.info.ssl_in_use
        with conn.cursor() as cur:
            cur.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
            assert cur.fetchone() == (True,)
    finally:
        conn.close()


@integration
def test_redshift_stand_in_speaks_tls_with_verified_certificate(redshift_db: RedshiftDatabase):
    """redshift_connector's default (TLS, CA verified) works against the stand-in."""
    import psycopg2

    conn = redshift_db.connect_redshift()  # ssl=True, sslmode=verify-ca
    try:
        cursor = conn.cursor()
        cursor.execute("select count(*) from pg_catalog.svv_external_columns")
        assert cursor.fetchone()[0] == 0
    finally:
        conn.close()
    from testbed.tls import test_pki

    dsn = f"{redshift_db.dsn} sslmode=verify-full sslrootcert={test_pki().ca_path}"
    conn = psycopg2.connect(dsn, connect_timeout=5)
    try:
        assert conn.info.ssl_in_use
        with conn.cursor() as cur:
            cur.execute("show server_version")
            assert cur.fetchone()[0].split()[0].replace(".", "").isdigit()
            cur.execute(
                "select count(*) from pg_get_late_binding_view_cols() "
                "cols(s name, t name, c name, ty varchar, n int)"
            )
            assert cur.fetchone() == (0,)
    finally:
        conn.close()


@integration
def test_stand_in_without_tls_answers_ssl_request_with_no(
    pg_server: PostgresServer, pg_db: PgDatabase
):
    import psycopg2

    with RedshiftProxy.for_server(pg_server, tls=False) as proxy:
        # libpq with sslmode=prefer sends an SSLRequest first and falls back on 'N'.
        conn = psycopg2.connect(
            host=proxy.host,
            port=proxy.port,
            user=pg_db.user,
            password=pg_db.password,
            dbname=pg_db.dbname,
            sslmode="prefer",
            connect_timeout=5,
        )
        try:
            assert not conn.info.ssl_in_use
        finally:
            conn.close()


@integration
def test_proxy_close_ends_sessions_and_threads(pg_server: PostgresServer, pg_db: PgDatabase):
    import psycopg2

    before = {t.ident for t in threading.enumerate()}
    proxy = RedshiftProxy.for_server(pg_server)
    conn = psycopg2.connect(
        host=proxy.host,
        port=proxy.port,
        user=pg_db.user,
        password=pg_db.password,
        dbname=pg_db.dbname,
        connect_timeout=5,
    )
    with conn.cursor() as cur:
        cur.execute("select 1")
    assert proxy.active_sessions == 1
    proxy.close()
    with pytest.raises(psycopg2.Error), conn.cursor() as cur:
        cur.execute("select 1")
    conn.close()
    leaked = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert leaked == []


# -- dbt-redshift against the stand-in --------------------------------------------

_MODEL = """\
{{ config(materialized='incremental', unique_key='id', incremental_strategy='delete+insert',
          sort='id', dist='id') }}
select 1 as id, 'a'::varchar(10) as v
union all
select 2 as id, {% if is_incremental() %}'b2'{% else %}'b'{% endif %}::varchar(10) as v
{% if is_incremental() %}
union all
select 3 as id, 'c'::varchar(10) as v
{% endif %}
"""


def _write_project(root: Path, output: dict[str, Any]) -> None:
    (root / "models").mkdir(parents=True)
    (root / "models" / "events.sql").write_text(_MODEL)
    project = {
        "name": "svc_check",
        "version": "1.0",
        "config-version": 2,
        "profile": "svc_check",
        "model-paths": ["models"],
        "flags": {"send_anonymous_usage_stats": False, "use_colors": False},
    }
    (root / "dbt_project.yml").write_text(yaml.safe_dump(project))
    profiles = {"svc_check": {"target": "dev", "outputs": {"dev": output}}}
    (root / "profiles.yml").write_text(yaml.safe_dump(profiles))


@integration
def test_dbt_redshift_incremental_model_runs_twice(
    redshift_db: RedshiftDatabase, pg_server: PostgresServer, tmp_path: Path, monkeypatch
):
    from dbt.cli.main import dbtRunner

    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    project = tmp_path / "project"
    _write_project(project, redshift_db.dbt_output(schema="analytics"))
    args = [
        "run",
        "--project-dir",
        str(project),
        "--profiles-dir",
        str(project),
        "--log-path",
        str(tmp_path / "logs"),
    ]

    def table_oid() -> int:
        rows = pg_server.execute(
            "select 'analytics.events'::regclass::oid::int", dbname=redshift_db.dbname
        )
        return int(rows[0][0])

    def rows() -> list[tuple[Any, ...]]:
        return pg_server.execute(
            "select id, v from analytics.events order by id", dbname=redshift_db.dbname
        )

    first = dbtRunner().invoke(args)
    assert first.success, first.exception
    assert rows() == [(1, "a"), (2, "b")]
    oid = table_oid()

    second = dbtRunner().invoke(args)
    assert second.success, second.exception
    # Incremental: the same table, row 2 replaced (delete+insert), row 3 added.
    assert rows() == [(1, "a"), (2, "b2"), (3, "c")]
    assert table_oid() == oid

    creates = redshift_db.clauses_for("events")
    assert creates == [["diststyle key", "distkey(id)", "compound sortkey(id)"]]
    # The second run staged the new rows in a temp table with the same clauses.
    temp = [e for e in redshift_db.ddl_log if e.table and e.table.startswith("events__dbt_tmp")]
    assert len(temp) == 1
    assert "temporary" in temp[0].statement
    assert temp[0].clauses == ["diststyle key", "distkey(id)", "compound sortkey(id)"]
    assert redshift_db.proxy.errors == []
