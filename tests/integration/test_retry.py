"""Retries re-run exactly what failed, with dbt's own ``retry`` command (real PostgreSQL).

dbt's ``retry`` reads the previous attempt's ``run_results.json``: it keeps the
original command, selection, ``--selector``, ``--exclude`` and state, and
re-runs the nodes that errored or were skipped — by their ids, so a test keeps
its name (never a hash that selects nothing).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import DbtSession, ErrorKind, NodeEvent, Settings
from testbed.pg_fixtures import PgDatabase
from testbed.postgres import PostgresServer
from testbed.sshd import wait_until
from tests._projects import write_project

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

DEADLINE_S = 30.0
HASH_NAME = re.compile(r"^[0-9a-f]{10}$")


def make_project(root: Path) -> Path:
    columns = "    columns:\n      - name: order_id\n        data_tests: [not_null, unique]\n"
    return write_project(
        root,
        "rt",
        {name: "select g as order_id from generate_series(1, 5) g" for name in ("a", "b", "c")},
        yml="version: 2\nmodels:\n" + "".join(f"  - name: {m}\n{columns}" for m in ("a", "b")),
        # a singular test that sleeps on its first execution only (the fault lands there)
        tests={
            "gated_orders": "select order_id from {{ ref('a') }} where public.fault_gate() <> 0"
        },
        selectors="selectors:\n  - name: only_ab\n    definition:\n      union: [a, b]\n",
    )


def settings(db: PgDatabase, tmp: Path, project: Path) -> Settings:
    return Settings(
        project_dir=project,
        warehouse={
            "type": "postgres",
            "host": db.host,
            "port": db.port,
            "user": db.user,
            "password": db.password,
            "dbname": db.dbname,
            "sslmode": "disable",
            "schema": "rt",
            "connect_timeout_s": 5,
        },
        state_dir=tmp / "state",
        retry={"attempts": 3, "initial_wait_s": 0, "max_wait_s": 0.2},
        threads=3,
    )


def as_owner(server: PostgresServer, db: PgDatabase, sql: str) -> list[tuple[Any, ...]]:
    return server.execute(sql, dbname=db.dbname, user=db.user, password=db.password)


def install_gate(server: PostgresServer, db: PgDatabase) -> None:
    as_owner(
        server,
        db,
        """
        create sequence public.fault_shots;
        create function public.fault_gate() returns int language plpgsql as $f$
        begin
          if nextval('public.fault_shots') = 1 then perform pg_sleep(60); end if;
          return 0;
        end $f$;
        """,
    )


def test_a_test_phase_retried_after_a_killed_connection_reruns_only_the_failed_test(
    pg_server: PostgresServer, pg_db: PgDatabase, tmp_path: Path
) -> None:
    install_gate(pg_server, pg_db)
    project = make_project(tmp_path)
    with DbtSession(settings(pg_db, tmp_path, project)) as session:
        assert session.invoke(["run"]).success

        def kill_the_sleeping_test() -> None:
            def sleeping() -> list[tuple[Any, ...]]:
                return pg_server.execute(
                    "select pid from pg_stat_activity "
                    f"where usename = '{pg_db.user}' and wait_event = 'PgSleep'"
                )

            assert wait_until(lambda: bool(sleeping()), timeout=DEADLINE_S)
            pg_server.execute(f"select pg_terminate_backend({sleeping()[0][0]})")

        killer = threading.Thread(target=kill_the_sleeping_test, daemon=True)
        killer.start()
        result = session.invoke(["test"])
        killer.join(DEADLINE_S)

    assert result.success, result.summary()
    assert result.attempts == 2
    first, second = result.attempt_log
    assert first.error is not None and first.error.kind is ErrorKind.CONNECTION
    failed = {n.name for n in first.nodes if n.failed}
    assert failed == {"gated_orders"}
    # dbt's retry re-ran the killed test, by its id, and nothing else
    assert second.args[0] == "retry"
    assert {n.name for n in second.nodes} == {"gated_orders"}
    assert {n.status for n in second.nodes} == {"pass"}
    # real names everywhere: the result, its JSON, every attempt
    names = {n["name"] for n in result.to_dict()["nodes"]}
    assert names == {
        "not_null_a_order_id",
        "unique_a_order_id",
        "not_null_b_order_id",
        "unique_b_order_id",
        "gated_orders",
    }
    assert not any(HASH_NAME.match(n.name) for a in result.attempt_log for n in a.nodes)


def test_a_retry_keeps_the_selector(
    pg_server: PostgresServer, pg_db: PgDatabase, tmp_path: Path
) -> None:
    """``run --selector only_ab`` with a lock on ``a``: the retry runs ``a`` only, never ``c``."""
    project = make_project(tmp_path)
    install_gate(pg_server, pg_db)
    holder = pg_server.connect(dbname=pg_db.dbname)
    holder.autocommit = False
    released = threading.Event()

    def release_when_refused(event: NodeEvent) -> None:
        if event.event == "node_finish" and event.name == "a" and event.status == "error":
            holder.rollback()
            released.set()

    try:
        with DbtSession(
            settings(pg_db, tmp_path, project), callbacks=[release_when_refused]
        ) as session:
            assert session.invoke(["run", "--selector", "only_ab"]).success
            as_owner(pg_server, pg_db, f"alter role \"{pg_db.user}\" set lock_timeout = '500ms'")
            with holder.cursor() as cur:
                cur.execute("lock table rt.a in access exclusive mode")
            result = session.invoke(["run", "--selector", "only_ab"])
    finally:
        holder.close()

    assert released.is_set()
    assert result.success, result.summary()
    first, second = result.attempt_log
    assert first.error is not None and first.error.kind is ErrorKind.CONFLICT
    assert {n.name for n in first.nodes} == {"a", "b"}
    assert second.args[0] == "retry"
    assert {n.name for n in second.nodes} == {"a"}
    assert all(n.name != "c" for a in result.attempt_log for n in a.nodes)
