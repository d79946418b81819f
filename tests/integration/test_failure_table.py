"""The adversarial failure table: real failures -> kind, retry decision, exit code.

Every row produces a real failure — dbt on DuckDB or PostgreSQL through a
``DbtSession``, psycopg2 or DuckDB raising for real, a real OpenSSH bastion
refusing us — and checks the three things an orchestrator acts on: the error
kind, whether dbt_runner retried (or would retry) it, and the CLI exit code
(read from the one map, :attr:`ErrorKind.exit_code`). Names that contain
``timeout``, ``interrupted``, ``connection``, ``lock``, ``password`` or
``too many`` are the adversarial part: user-chosen names never decide a kind.

Issue 13's six reports are rows here: a missing column ``interrupted_at``, a
failing test named like a fault, ``--selector`` under a connection limit (in
``test_retry.py``), the SSL mismatch, host key / SSH key refused, and the
missing password.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import (
    ConfigurationError,
    DbtInvocationError,
    DbtRunFailed,
    DbtRunnerError,
    DbtSession,
    DbtTestsFailed,
    ErrorKind,
    RetrySettings,
    RunResult,
    Settings,
)
from dbt_runner._classify import classify_exception
from dbt_runner._retry import is_retryable
from dbt_runner.cli import exit_code
from dbt_runner.logging import EVENT_KEY
from testbed.pg_fixtures import PgDatabase
from testbed.postgres import PostgresServer, free_port
from testbed.sshd import SshdServer
from tests._projects import write_project
from tests.integration._nossl import nossl_db, nossl_server  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

K = ErrorKind


@dataclass(frozen=True)
class Observed:
    """What an orchestrator sees of one failure."""

    kind: ErrorKind
    retried: bool
    exit_code: int
    message: str = ""


@dataclass
class Env:
    """The real services and a scratch dir for one row."""

    tmp: Path
    pg_server: PostgresServer
    pg_db: PgDatabase
    sshd: SshdServer
    caplog: pytest.LogCaptureFixture
    nossl_db: PgDatabase  # a server with SSL off (the shared one speaks TLS)


# ---------------------------------------------------------------------- helpers
def make_project(
    root: Path, models: dict[str, str], tests: dict[str, str] | None = None, yml: str = ""
) -> Path:
    return write_project(root, "adv", models, tests=tests, yml=yml)


RETRY = {"attempts": 2, "initial_wait_s": 0, "max_wait_s": 0}


def duckdb_settings(env: Env, project: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "project_dir": project,
        "warehouse": {"type": "duckdb", "path": str(env.tmp / "w.duckdb")},
        "state_dir": env.tmp / "state",
        "retry": RETRY,
    }
    values.update(overrides)
    return Settings(**values)


def pg_settings(
    env: Env, project: Path, retry: dict[str, Any] | None = None, **wh: Any
) -> Settings:
    db = env.pg_db
    warehouse: dict[str, Any] = {
        "type": "postgres",
        "host": db.host,
        "port": db.port,
        "user": db.user,
        "password": db.password,
        "dbname": db.dbname,
        "sslmode": "disable",
        "schema": "adv",
        "connect_timeout_s": 5,
    }
    warehouse.update(wh)
    return Settings(
        project_dir=project,
        warehouse=warehouse,
        state_dir=env.tmp / "state",
        retry=retry or RETRY,
        threads=2,
    )


def run(settings: Settings, args: list[str]) -> Observed:
    """One invocation in a session: the result as an orchestrator sees it."""
    with DbtSession(settings) as session:
        result = session.invoke(args)
    return observed_result(result)


def observed_result(result: RunResult) -> Observed:
    assert not result.success, result.summary()
    assert result.error is not None
    kind = result.error.kind
    # raise_for_status, the CLI's exit code and the kind agree
    expected_exc: type[DbtRunnerError] = {
        K.MODEL_FAILURE: DbtRunFailed,
        K.TEST_FAILURE: DbtTestsFailed,
    }.get(kind, DbtInvocationError)
    with pytest.raises(expected_exc) as raised:
        result.raise_for_status()
    assert raised.value.kind is kind
    assert exit_code(result) == result.exit_code == kind.exit_code
    return Observed(kind, result.attempts > 1, result.exit_code, result.error.message)


def observed_exception(exc: BaseException) -> Observed:
    """A driver's real exception: its kind and what the default policy would do."""
    kind = classify_exception(exc)
    return Observed(kind, is_retryable(kind, RetrySettings()), kind.exit_code, str(exc))


def observed_open(env: Env, settings: Settings) -> Observed:
    """Opening the session fails: the exception's kind, and whether open() retried."""
    env.caplog.clear()
    with pytest.raises(DbtRunnerError) as raised:
        DbtSession(settings).open()
    retried = any(
        getattr(r, EVENT_KEY, {}).get("event") == "retry" for r in list(env.caplog.records)
    )
    return Observed(raised.value.kind, retried, raised.value.exit_code, str(raised.value))


def pg_raises(env: Env, sql: str, *, setup: str = "") -> Observed:
    import psycopg2

    conn = env.pg_db.connect()
    try:
        with conn.cursor() as cur:
            if setup:
                cur.execute(setup)
            with pytest.raises(psycopg2.Error) as raised:
                cur.execute(sql)
    finally:
        conn.close()
    return observed_exception(raised.value)


def pg_connect_raises(**kwargs: Any) -> Observed:
    import psycopg2

    with pytest.raises(psycopg2.Error) as raised:
        psycopg2.connect(connect_timeout=5, **kwargs)
    return observed_exception(raised.value)


def duckdb_raises(sql: str, setup: str = "") -> Observed:
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        if setup:
            con.execute(setup)
        with pytest.raises(duckdb.Error) as raised:
            con.execute(sql)
    finally:
        con.close()
    return observed_exception(raised.value)


def as_owner(env: Env, sql: str) -> None:
    """Run ``sql`` as the database's own role (what dbt logs in as)."""
    db = env.pg_db
    env.pg_server.execute(sql, dbname=db.dbname, user=db.user, password=db.password)


def ssh(env: Env, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "host": env.sshd.host,
        "port": env.sshd.port,
        "user": env.sshd.user,
        "private_key": env.sshd.private_key_path,
        "known_hosts": env.sshd.known_hosts_path,
        "connect_timeout_s": 5,
    }
    values.update(overrides)
    return values


# ---------------------------------------------------------------------- the rows
ORDERS = "select 1 as order_id, 'x' as status"


def dbt_missing_column_interrupted_at(env: Env) -> Observed:
    project = make_project(
        env.tmp, {"orders": ORDERS, "late": "select interrupted_at from {{ ref('orders') }}"}
    )
    # retry_timeouts on: a word in the column name must still not make it a "timeout"
    retry = {**RETRY, "retry_timeouts": True}
    return run(duckdb_settings(env, project, retry=retry), ["run"])


def dbt_model_named_lock_timeout_syntax_error(env: Env) -> Observed:
    project = make_project(env.tmp, {"lock_timeout_audit": "selec 1"})
    return run(duckdb_settings(env, project), ["run"])


def dbt_table_named_connection_refused(env: Env) -> Observed:
    project = make_project(env.tmp, {"m": "select * from main.connection_refused_log"})
    return run(duckdb_settings(env, project), ["run"])


def dbt_column_named_password_missing(env: Env) -> Observed:
    project = make_project(env.tmp, {"users": "select password from (select 1 as id) t"})
    return run(duckdb_settings(env, project), ["run"])


def dbt_cast_error_in_too_many_connections_model(env: Env) -> Observed:
    project = make_project(env.tmp, {"too_many_connections": "select cast('x' as integer) as n"})
    return run(duckdb_settings(env, project), ["run"])


def dbt_failing_test_on_column_timeout(env: Env) -> Observed:
    project = make_project(
        env.tmp,
        {"sessions": "select null::integer as timeout"},
        yml="version: 2\nmodels:\n  - name: sessions\n    columns:\n"
        "      - name: timeout\n        data_tests: [not_null]\n",
    )
    with DbtSession(duckdb_settings(env, project)) as session:
        assert session.invoke(["run"]).success
        result = session.invoke(["test"])
    failed = [n.name for n in result.failed_nodes]
    assert failed == ["not_null_sessions_timeout"], failed  # its name, never a hash
    return observed_result(result)


def dbt_singular_test_interrupted_orders_fails(env: Env) -> Observed:
    project = make_project(
        env.tmp,
        {"orders": ORDERS},
        tests={"interrupted_orders": "select * from {{ ref('orders') }}"},
    )
    with DbtSession(duckdb_settings(env, project)) as session:
        assert session.invoke(["run"]).success
        return observed_result(session.invoke(["test"]))


def dbt_undefined_macro_in_ssh_tunnel_model(env: Env) -> Observed:
    project = make_project(env.tmp, {"ssh_tunnel_audit": "select {{ no_such_macro() }} as x"})
    return run(duckdb_settings(env, project), ["run"])


def dbt_ref_to_missing_model(env: Env) -> Observed:
    project = make_project(env.tmp, {"deadlock_report": "select * from {{ ref('nope') }}"})
    return run(duckdb_settings(env, project), ["run"])


def dbt_duckdb_file_locked_by_another_process(env: Env) -> Observed:
    project = make_project(env.tmp, {"orders": ORDERS})
    path = env.tmp / "w.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True);"
            " time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        return run(duckdb_settings(env, project), ["run"])
    finally:
        holder.kill()
        holder.wait(10)


def pg_project(env: Env) -> Path:
    return make_project(env.tmp, {"orders": ORDERS})


def dbt_pg_ssl_required_server_without_ssl(env: Env) -> Observed:
    db = env.nossl_db
    settings = pg_settings(
        env,
        pg_project(env),
        host=db.host,
        port=db.port,
        user=db.user,
        password=db.password,
        dbname=db.dbname,
        sslmode="require",
    )
    observed = run(settings, ["run"])
    assert "DBT_RUNNER_WAREHOUSE__SSLMODE" in observed.message
    return observed


def dbt_pg_wrong_password(env: Env) -> Observed:
    observed = run(pg_settings(env, pg_project(env), password="wrong-password"), ["run"])
    assert "wrong-password" not in observed.message
    return observed


def dbt_pg_unknown_database(env: Env) -> Observed:
    observed = run(pg_settings(env, pg_project(env), dbname="no_such_db"), ["run"])
    assert "DBT_RUNNER_WAREHOUSE__DBNAME" in observed.message
    return observed


def dbt_pg_unknown_role(env: Env) -> Observed:
    return run(pg_settings(env, pg_project(env), user="no_such_role"), ["run"])


def dbt_pg_nothing_listens(env: Env) -> Observed:
    return run(pg_settings(env, pg_project(env), port=free_port()), ["run"])


def dbt_pg_connection_limit_zero(env: Env) -> Observed:
    env.pg_server.execute(f'alter role "{env.pg_db.user}" connection limit 0')
    try:
        return run(pg_settings(env, pg_project(env)), ["run"])
    finally:
        env.pg_server.execute(f'alter role "{env.pg_db.user}" connection limit -1')


def dbt_pg_statement_timeout(env: Env) -> Observed:
    env.pg_server.execute(f"alter role \"{env.pg_db.user}\" set statement_timeout = '200ms'")
    project = make_project(env.tmp, {"slow_interrupted": "select 1 as x from pg_sleep(2)"})
    return run(pg_settings(env, project), ["run"])


def dbt_pg_lock_timeout(env: Env) -> Observed:
    project = pg_project(env)
    settings = pg_settings(env, project)
    with DbtSession(settings) as session:
        assert session.invoke(["run"]).success
        env.pg_server.execute(f"alter role \"{env.pg_db.user}\" set lock_timeout = '300ms'")
        holder = env.pg_server.connect(dbname=env.pg_db.dbname)
        holder.autocommit = False
        try:
            with holder.cursor() as cur:
                cur.execute("lock table adv.orders in access exclusive mode")
            return observed_result(session.invoke(["run"]))
        finally:
            holder.rollback()
            holder.close()


def dbt_pg_user_raise_with_a_fault_text(env: Env) -> Observed:
    """A model whose SQL raises 'too many connections' itself: the SQLSTATE (P0001) decides."""
    env.pg_server.execute(
        "create function public.boom() returns int language plpgsql as $$ begin "
        "raise exception 'too many connections for role \"x\"'; end $$",
        dbname=env.pg_db.dbname,
    )
    project = make_project(env.tmp, {"m": "select public.boom() as n"})
    observed = run(pg_settings(env, project), ["run"])
    return observed


def dbt_pg_relation_named_like_a_fault(env: Env) -> Observed:
    project = make_project(
        env.tmp, {"m": 'select * from "server closed the connection unexpectedly"'}
    )
    return run(pg_settings(env, project), ["run"])


def dbt_pg_failing_test_named_lock(env: Env) -> Observed:
    project = make_project(
        env.tmp, {"orders": ORDERS}, tests={"lock_wait_orders": "select * from {{ ref('orders') }}"}
    )
    with DbtSession(pg_settings(env, project)) as session:
        assert session.invoke(["run"]).success
        return observed_result(session.invoke(["test"]))


def settings_missing_password(env: Env) -> Observed:
    db = env.pg_db
    with pytest.raises(ConfigurationError) as raised:
        Settings(
            warehouse={"type": "postgres", "host": db.host, "user": db.user, "dbname": db.dbname}
        )
    assert "DBT_RUNNER_WAREHOUSE__PASSWORD" in str(raised.value)
    return Observed(raised.value.kind, False, raised.value.exit_code)


# --- real driver exceptions
def psycopg2_refused(env: Env) -> Observed:
    return pg_connect_raises(host="127.0.0.1", port=free_port(), user="u", dbname="d")


def psycopg2_wrong_password(env: Env) -> Observed:
    db = env.pg_db
    return pg_connect_raises(
        host=db.host, port=db.port, user=db.user, password="nope", dbname=db.dbname
    )


def psycopg2_no_password(env: Env) -> Observed:
    db = env.pg_db
    observed = pg_connect_raises(host=db.host, port=db.port, user=db.user, dbname=db.dbname)
    assert "no password supplied" in observed.message
    return observed


def psycopg2_ssl_mismatch(env: Env) -> Observed:
    db = env.nossl_db
    return pg_connect_raises(
        host=db.host,
        port=db.port,
        user=db.user,
        password=db.password,
        dbname=db.dbname,
        sslmode="require",
    )


def psycopg2_unknown_database(env: Env) -> Observed:
    db = env.pg_db
    return pg_connect_raises(
        host=db.host, port=db.port, user=db.user, password=db.password, dbname="nope_db"
    )


def psycopg2_too_many_connections(env: Env) -> Observed:
    db = env.pg_db
    env.pg_server.execute(f'alter role "{db.user}" connection limit 0')
    try:
        return pg_connect_raises(
            host=db.host, port=db.port, user=db.user, password=db.password, dbname=db.dbname
        )
    finally:
        env.pg_server.execute(f'alter role "{db.user}" connection limit -1')


def psycopg2_statement_timeout(env: Env) -> Observed:
    return pg_raises(env, "select pg_sleep(2)", setup="set statement_timeout = '100ms'")


def psycopg2_lock_timeout(env: Env) -> Observed:
    as_owner(env, "create table public.t (i int)")
    holder = env.pg_server.connect(dbname=env.pg_db.dbname)
    holder.autocommit = False
    try:
        with holder.cursor() as cur:
            cur.execute("lock table public.t in access exclusive mode")
        return pg_raises(env, "select * from public.t", setup="set lock_timeout = '100ms'")
    finally:
        holder.rollback()
        holder.close()


def psycopg2_deadlock(env: Env) -> Observed:
    import psycopg2

    as_owner(env, "create table public.d (i int primary key, v int)")
    as_owner(env, "insert into public.d values (1, 0), (2, 0)")
    a, b = env.pg_db.connect(), env.pg_db.connect()
    errors: list[BaseException] = []
    try:
        ca, cb = a.cursor(), b.cursor()
        ca.execute("update public.d set v = 1 where i = 1")
        cb.execute("update public.d set v = 1 where i = 2")

        def cross(cur: Any, key: int) -> None:
            try:
                cur.execute(f"update public.d set v = 2 where i = {key}")
            except psycopg2.Error as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=cross, args=(ca, 2)),
            threading.Thread(target=cross, args=(cb, 1)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        a.close()
        b.close()
    assert len(errors) == 1, errors
    return observed_exception(errors[0])


def psycopg2_serialization_failure(env: Env) -> Observed:
    import psycopg2

    as_owner(env, "create table public.s (i int primary key, v int)")
    as_owner(env, "insert into public.s values (1, 0)")
    a, b = env.pg_db.connect(), env.pg_db.connect()
    try:
        for c in (a, b):
            c.set_session(isolation_level="REPEATABLE READ")
        ca, cb = a.cursor(), b.cursor()
        ca.execute("select * from public.s")
        cb.execute("select * from public.s")
        ca.execute("update public.s set v = 1 where i = 1")
        a.commit()
        with pytest.raises(psycopg2.Error) as raised:
            cb.execute("update public.s set v = 2 where i = 1")
    finally:
        a.close()
        b.close()
    return observed_exception(raised.value)


def psycopg2_terminated_by_admin(env: Env) -> Observed:
    import psycopg2

    conn = env.pg_db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("select pg_backend_pid()")
            pid = cur.fetchone()[0]
        env.pg_server.execute(f"select pg_terminate_backend({pid})")
        with pytest.raises(psycopg2.Error) as raised, conn.cursor() as cur:
            cur.execute("select 1")
    finally:
        conn.close()
    return observed_exception(raised.value)


def psycopg2_undefined_column_interrupted_at(env: Env) -> Observed:
    return pg_raises(env, "select interrupted_at from (select 1 as id) t")


def psycopg2_relation_named_too_many_connections(env: Env) -> Observed:
    return pg_raises(env, 'select * from "too many connections for role"')


def psycopg2_user_raise_deadlock_text(env: Env) -> Observed:
    return pg_raises(env, "do $$ begin raise exception 'deadlock detected'; end $$")


def duckdb_binder_interrupted_at(env: Env) -> Observed:
    return duckdb_raises("select interrupted_at from (select 1 as id)")


def duckdb_catalog_connection_timeout_table(env: Env) -> Observed:
    return duckdb_raises("select * from connection_timeout")


def duckdb_parser_error(env: Env) -> Observed:
    return duckdb_raises("selec 'lock timeout'")


def duckdb_write_write_conflict(env: Env) -> Observed:
    import duckdb

    con = duckdb.connect(":memory:")
    first, second = con.cursor(), con.cursor()
    first.execute("begin")
    second.execute("begin")
    first.execute("create table stg (i int)")
    with pytest.raises(duckdb.Error) as raised:
        second.execute("create table stg (i int)")
    con.close()
    return observed_exception(raised.value)


def duckdb_interrupted_query(env: Env) -> Observed:
    import duckdb

    con = duckdb.connect(":memory:")
    timer = threading.Timer(0.3, con.interrupt)
    timer.start()
    try:
        with pytest.raises(duckdb.Error) as raised:
            con.execute("select count(*) from range(100000000000) a")
    finally:
        timer.cancel()
        con.close()
    return observed_exception(raised.value)


def socket_refused(env: Env) -> Observed:
    with pytest.raises(OSError) as raised:
        socket.create_connection(("127.0.0.1", free_port()), timeout=5)
    return observed_exception(raised.value)


# --- the bastion
def bastion_wrong_host_key(env: Env) -> Observed:
    impostor = env.sshd.make_key(f"impostor_{time.monotonic_ns()}")
    line = " ".join(Path(f"{impostor}.pub").read_text().split()[:2])
    known = env.tmp / "known_hosts"
    known.write_text(f"[127.0.0.1]:{env.sshd.port} {line}\n")
    settings = pg_settings(env, pg_project(env))
    return observed_open(
        env, settings.model_copy(update={"ssh": ssh_model(env, known_hosts=known)})
    )


def bastion_refuses_our_key(env: Env) -> Observed:
    settings = pg_settings(env, pg_project(env))
    wrong = ssh_model(env, private_key=env.sshd.unauthorized_key_path)
    return observed_open(env, settings.model_copy(update={"ssh": wrong}))


def bastion_unreachable(env: Env) -> Observed:
    settings = pg_settings(env, pg_project(env))
    closed = ssh_model(env, port=free_port())
    return observed_open(env, settings.model_copy(update={"ssh": closed}))


def ssh_model(env: Env, **overrides: Any) -> Any:
    from dbt_runner import SSHSettings

    return SSHSettings(**ssh(env, **overrides))


# (row, expected kind, retried, exit code)
TABLE: list[tuple[Callable[[Env], Observed], ErrorKind, bool, int]] = [
    # dbt through a session, DuckDB
    (dbt_missing_column_interrupted_at, K.MODEL_FAILURE, False, 1),
    (dbt_model_named_lock_timeout_syntax_error, K.MODEL_FAILURE, False, 1),
    (dbt_table_named_connection_refused, K.MODEL_FAILURE, False, 1),
    (dbt_column_named_password_missing, K.MODEL_FAILURE, False, 1),
    (dbt_cast_error_in_too_many_connections_model, K.MODEL_FAILURE, False, 1),
    (dbt_failing_test_on_column_timeout, K.TEST_FAILURE, False, 1),
    (dbt_singular_test_interrupted_orders_fails, K.TEST_FAILURE, False, 1),
    (dbt_undefined_macro_in_ssh_tunnel_model, K.COMPILATION, False, 1),
    (dbt_ref_to_missing_model, K.COMPILATION, False, 1),
    (dbt_duckdb_file_locked_by_another_process, K.CONFLICT, True, 3),
    # dbt through a session, PostgreSQL
    (dbt_pg_ssl_required_server_without_ssl, K.CONFIGURATION, False, 2),
    (dbt_pg_wrong_password, K.AUTH, False, 2),
    (dbt_pg_unknown_database, K.CONFIGURATION, False, 2),
    (dbt_pg_unknown_role, K.AUTH, False, 2),
    (dbt_pg_nothing_listens, K.CONNECTION, True, 3),
    (dbt_pg_connection_limit_zero, K.TOO_MANY_CONNECTIONS, True, 3),
    (dbt_pg_statement_timeout, K.TIMEOUT, False, 3),
    (dbt_pg_lock_timeout, K.CONFLICT, True, 3),
    (dbt_pg_user_raise_with_a_fault_text, K.MODEL_FAILURE, False, 1),
    (dbt_pg_relation_named_like_a_fault, K.MODEL_FAILURE, False, 1),
    (dbt_pg_failing_test_named_lock, K.TEST_FAILURE, False, 1),
    (settings_missing_password, K.CONFIGURATION, False, 2),
    # real driver exceptions (retried: what the default policy decides)
    (psycopg2_refused, K.CONNECTION, True, 3),
    (psycopg2_wrong_password, K.AUTH, False, 2),
    (psycopg2_no_password, K.CONFIGURATION, False, 2),
    (psycopg2_ssl_mismatch, K.CONFIGURATION, False, 2),
    (psycopg2_unknown_database, K.CONFIGURATION, False, 2),
    (psycopg2_too_many_connections, K.TOO_MANY_CONNECTIONS, True, 3),
    (psycopg2_statement_timeout, K.TIMEOUT, False, 3),
    (psycopg2_lock_timeout, K.CONFLICT, True, 3),
    (psycopg2_deadlock, K.CONFLICT, True, 3),
    (psycopg2_serialization_failure, K.CONFLICT, True, 3),
    (psycopg2_terminated_by_admin, K.CONNECTION, True, 3),
    (psycopg2_undefined_column_interrupted_at, K.MODEL_FAILURE, False, 1),
    (psycopg2_relation_named_too_many_connections, K.MODEL_FAILURE, False, 1),
    (psycopg2_user_raise_deadlock_text, K.MODEL_FAILURE, False, 1),
    (duckdb_binder_interrupted_at, K.MODEL_FAILURE, False, 1),
    (duckdb_catalog_connection_timeout_table, K.MODEL_FAILURE, False, 1),
    (duckdb_parser_error, K.MODEL_FAILURE, False, 1),
    (duckdb_write_write_conflict, K.CONFLICT, True, 3),
    (duckdb_interrupted_query, K.TIMEOUT, False, 3),
    (socket_refused, K.CONNECTION, True, 3),
    # the bastion, when the session opens
    (bastion_wrong_host_key, K.AUTH, False, 2),
    (bastion_refuses_our_key, K.AUTH, False, 2),
    (bastion_unreachable, K.TUNNEL, True, 3),
]


def test_the_table_has_forty_rows_or_more() -> None:
    assert len(TABLE) >= 40


@pytest.mark.parametrize(
    ("row", "kind", "retried", "code"), TABLE, ids=[row.__name__ for row, *_ in TABLE]
)
def test_real_failure_kind_retry_and_exit_code(
    row: Callable[[Env], Observed],
    kind: ErrorKind,
    retried: bool,
    code: int,
    tmp_path: Path,
    pg_server: PostgresServer,
    pg_db: PgDatabase,
    sshd: SshdServer,
    caplog: pytest.LogCaptureFixture,
    nossl_db: PgDatabase,  # noqa: F811 - the fixture imported above
) -> None:
    caplog.set_level(logging.WARNING, logger="dbt_runner.retry")
    observed = row(Env(tmp_path, pg_server, pg_db, sshd, caplog, nossl_db))
    assert (observed.kind, observed.retried, observed.exit_code) == (kind, retried, code), (
        observed.message
    )


def test_cli_doctor_plain_script_and_dag_agree_on_a_refused_host_key(
    tmp_path: Path, pg_db: PgDatabase, sshd: SshdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: a wrong bastion host key exited 3 from ``cycle`` but 2 from ``doctor``."""
    from click.testing import CliRunner

    from dbt_runner.cli import main

    impostor = sshd.make_key(f"impostor_{time.monotonic_ns()}")
    line = " ".join(Path(f"{impostor}.pub").read_text().split()[:2])
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {line}\n")
    for name in [n for n in os.environ if n.startswith("DBT_RUNNER_")]:
        monkeypatch.delenv(name)
    env = {
        "DBT_RUNNER_WAREHOUSE__TYPE": "postgres",
        "DBT_RUNNER_WAREHOUSE__HOST": pg_db.host,
        "DBT_RUNNER_WAREHOUSE__PORT": str(pg_db.port),
        "DBT_RUNNER_WAREHOUSE__USER": pg_db.user,
        "DBT_RUNNER_WAREHOUSE__PASSWORD": pg_db.password,
        "DBT_RUNNER_WAREHOUSE__DBNAME": pg_db.dbname,
        "DBT_RUNNER_SSH__HOST": sshd.host,
        "DBT_RUNNER_SSH__PORT": str(sshd.port),
        "DBT_RUNNER_SSH__USER": sshd.user,
        "DBT_RUNNER_SSH__PRIVATE_KEY": str(sshd.private_key_path),
        "DBT_RUNNER_SSH__KNOWN_HOSTS": str(known),
        "DBT_RUNNER_STATE_DIR": str(tmp_path / "state"),
    }
    cycle = CliRunner().invoke(main, ["cycle"], env=env)
    doctor = CliRunner().invoke(main, ["doctor", "--hold", "0.2"], env=env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    try:
        import plain_python

        script = plain_python.main()
    finally:
        sys.path.pop(0)
    dag_retries = K.AUTH.is_infrastructure  # the DAG hands only infrastructure to Airflow
    assert (cycle.exit_code, doctor.exit_code, script) == (2, 2, 2), cycle.output
    assert not dag_retries
