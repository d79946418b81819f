"""The plausible causes of the old ``threads: 3`` failure, reproduced with real faults.

Every test runs the bundled staging project (``models_sql``) with three
threads against a real PostgreSQL (and, for the tunnel cases, a real OpenSSH
bastion), injects a real fault while dbt runs, and checks what a user would
see: the error kind, the server's own message, how many attempts were made,
that a retry re-ran only what had failed (never what had succeeded), the
final outcome, and that every staging table still equals a full refresh of
the same raw data (delete+insert stayed atomic).

How a fault lands mid-run, deterministically: a statement trigger on one
staging table ("the gate") sleeps on the first INSERT only (a sequence, which
is not transactional, counts the shots). The model's delete+insert transaction
has then already deleted its rows and is blocked inside the INSERT; a helper
thread waits for exactly that (``pg_stat_activity`` shows the sleep and the two
other models have finished) and then breaks something. Every wait has a
deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import (
    DbtInvocationError,
    DbtSession,
    ErrorKind,
    NodeEvent,
    RunResult,
    Settings,
)
from dbt_runner.cli import EXIT_CONFIG, EXIT_INFRA, exit_code
from dbt_runner.logging import EVENT_KEY
from dbt_runner.synthetic import create_raw_tables, load_batch
from testbed.pg_fixtures import PgDatabase
from testbed.postgres import PostgresServer
from testbed.sshd import SshdServer, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PROJECT = Path(__file__).resolve().parents[2] / "models_sql"
SCHEMA = "stg"
KEYS = {
    "stg_ecs_order_info": "order_id",
    "stg_uni_tracking_info": "order_id",
    "stg_uni_tracking_spath": "path_key",
}
GATED = "stg_ecs_order_info"
T0 = 1_700_000_000  # epoch seconds of the synthetic data
DEADLINE_S = 30.0


# ----------------------------------------------------------------------------- helpers
class Warehouse:
    """The test's database: raw data, staging tables, faults, the full-refresh oracle."""

    def __init__(self, server: PostgresServer, db: PgDatabase) -> None:
        self.server, self.db = server, db
        self.batches = 0

    def sql(self, statement: str, *, as_owner: bool = False) -> list[tuple[Any, ...]]:
        """Run SQL as the superuser (default) or as the dbt role (owner of what dbt builds)."""
        if as_owner:
            return self.server.execute(
                statement, dbname=self.db.dbname, user=self.db.user, password=self.db.password
            )
        return self.server.execute(statement, dbname=self.db.dbname)

    def load(self, start: int, end: int, **kwargs: Any) -> None:
        conn = self.db.connect()
        try:
            create_raw_tables(conn, "postgres")
            load_batch(conn, "postgres", start, end, orders_per_minute=6, seed=11, **kwargs)
        finally:
            conn.close()

    def next_batch(self) -> None:
        """20 more minutes of raw rows: re-deliveries, duplicates, late rows within the scan."""
        self.batches += 1
        start = T0 + 7200 + (self.batches - 1) * 1200
        self.load(start, start + 1200, late_share=0.1, late_delay_s=(60, 1500))

    def arm_gate(self, table: str = GATED) -> None:
        """The first INSERT into ``table`` sleeps (inside dbt's delete+insert transaction)."""
        self.sql(
            f"""
            create sequence public.fault_shots;
            create function public.fault_gate() returns trigger language plpgsql as $f$
            begin
              if nextval('public.fault_shots') = 1 then perform pg_sleep(60); end if;
              return null;
            end $f$;
            create trigger fault_gate before insert on {SCHEMA}.{table}
              for each statement execute function public.fault_gate();
            """,
            as_owner=True,
        )

    def sleeping_in_gate(self) -> bool:
        rows = self.sql(
            "select count(*) from pg_stat_activity "
            f"where usename = '{self.db.user}' and wait_event = 'PgSleep'"
        )
        return bool(rows[0][0])

    def role_sessions(self) -> int:
        return int(
            self.sql(f"select count(*) from pg_stat_activity where usename = '{self.db.user}'")[0][
                0
            ]
        )

    def set_role(self, clause: str) -> None:
        self.sql(f'alter role "{self.db.user}" {clause}')

    def snapshot(self, schema: str) -> None:
        self.sql(f"drop schema if exists {schema} cascade; create schema {schema}")
        for table in KEYS:
            self.sql(f"create table {schema}.{table} as select * from {SCHEMA}.{table}")

    def differences(self, schema: str, table: str) -> int:
        """Rows in one of ``stg.table`` / ``schema.table`` but not the other (multisets)."""
        a, b = f"{SCHEMA}.{table}", f"{schema}.{table}"
        return int(
            self.sql(
                f"select (select count(*) from (select * from {a} except all select * from {b}) x)"
                f" + (select count(*) from (select * from {b} except all select * from {a}) y)"
            )[0][0]
        )

    def duplicate_keys(self, table: str) -> int:
        key = KEYS[table]
        return int(
            self.sql(
                f"select count(*) from (select {key} from {SCHEMA}.{table} "
                f"group by {key} having count(*) > 1) d"
            )[0][0]
        )

    def assert_equals_full_refresh(self, session: DbtSession) -> None:
        """The incremental state (after faults and retries) equals a full refresh."""
        for table in KEYS:
            assert self.duplicate_keys(table) == 0, f"duplicate keys in {table}"
        self.snapshot("incremental")
        # a healthy run's own deadline (a session's tight watchdog is for the faults)
        full = session.invoke(["run", "--select", "tag:staging", "--full-refresh"], timeout_s=300)
        assert full.success, full.summary()
        for table in KEYS:
            count = self.sql(f"select count(*) from {SCHEMA}.{table}")[0][0]
            assert count > 0
            assert self.differences("incremental", table) == 0, (
                f"{table}: incremental state differs from a full refresh (lost or extra rows)"
            )


class Fault(threading.Thread):
    """Runs a fault in a helper thread; ``finish()`` re-raises whatever it raised."""

    def __init__(self, action: Callable[[], None]) -> None:
        super().__init__(name="fault", daemon=True)
        self._action = action
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._action()
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float = DEADLINE_S) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the fault thread did not finish"
        if self.error is not None:
            raise self.error


class Events:
    """Node events of the session (dbt's worker threads append to it)."""

    def __init__(self) -> None:
        self.items: list[NodeEvent] = []

    def __call__(self, event: NodeEvent) -> None:
        self.items.append(event)

    def finished(self, name: str, status: str | None = None) -> bool:
        return any(
            e.event == "node_finish" and e.name == name and (status is None or e.status == status)
            for e in list(self.items)
        )

    def clear(self) -> None:
        self.items.clear()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    if not wait_until(condition, timeout=timeout):
        raise AssertionError(f"timed out after {timeout:g}s waiting for: {what}")


def when_gate_is_blocking(wh: Warehouse, events: Events) -> None:
    """The gated model sits in its INSERT; the two other models have finished."""
    others = [t for t in KEYS if t != GATED]
    wait_for(
        lambda: all(events.finished(t, "success") for t in others) and wh.sleeping_in_gate(),
        "the gated model blocked in its INSERT, the others done",
    )


def make_settings(
    db: PgDatabase, tmp_path: Path, *, password: str | None = None, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "project_dir": PROJECT,
        "warehouse": {
            "type": "postgres",
            "host": db.host,
            "port": db.port,
            "user": db.user,
            "password": db.password if password is None else password,
            "dbname": db.dbname,
            "sslmode": "disable",
            "schema": SCHEMA,
            "connect_timeout_s": 5,
        },
        "state_dir": tmp_path / "state",
        "retry": {"attempts": 3, "initial_wait_s": 0, "max_wait_s": 0.2},
        "threads": 3,
    }
    values.update(overrides)
    return Settings(**values)


def ssh_settings(sshd: SshdServer) -> dict[str, Any]:
    return {
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "private_key": sshd.private_key_path,
        "known_hosts": sshd.known_hosts_path,
        "connect_timeout_s": 5,
    }


def node_ids(attempt: Any) -> set[str]:
    return {n.unique_id for n in attempt.nodes}


def assert_retries_only_rerun_failures(result: RunResult) -> None:
    """No retry ran a node that had already succeeded in an earlier attempt."""
    succeeded: set[str] = set()
    for attempt in result.attempt_log:
        rerun = node_ids(attempt) & succeeded
        assert not rerun, f"attempt {attempt.number} re-ran succeeded nodes {rerun}"
        succeeded |= {n.unique_id for n in attempt.nodes if n.status == "success"}


class _OnRetry(logging.Handler):
    """Runs ``action`` when the session logs its ``retry`` event (before the retry's wait)."""

    def __init__(self, action: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._action = action

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, EVENT_KEY, {}).get("event") == "retry":
            self._action()


def retry_logged(caplog: pytest.LogCaptureFixture, after_attempt: int) -> bool:
    """The session's structured ``retry`` log event after attempt ``after_attempt`` was seen."""
    return any(
        getattr(r, EVENT_KEY, {}).get("event") == "retry"
        and getattr(r, EVENT_KEY, {}).get("attempt") == after_attempt
        for r in list(caplog.records)
    )


def node(attempt: Any, name: str) -> Any:
    return next(n for n in attempt.nodes if n.name == name)


@pytest.fixture
def wh(pg_server: PostgresServer, pg_db: PgDatabase) -> Iterator[Warehouse]:
    warehouse = Warehouse(pg_server, pg_db)
    warehouse.load(T0, T0 + 7200, late_share=0.05)
    yield warehouse
    if not pg_server.running:  # a test stopped it and failed before starting it again
        pg_server.start()


# ---------------------------------------------------------------- connection limit
def staging(session: DbtSession) -> RunResult:
    """The staging models as plain dbt runs them (no writer lock)."""
    return session.invoke(["run", "--select", "tag:staging"])


def test_connection_limit_below_threads_plus_one(wh: Warehouse, tmp_path: Path) -> None:
    """Role CONNECTION LIMIT < threads + 1: too_many_connections with the server's message.

    dbt's own connections only (``invoke``, no writer lock): the lock's connection
    takes a slot of its own, checked at the end.
    """
    refused = f'too many connections for role "{wh.db.user}"'
    plain = make_settings(wh.db, tmp_path, retry={"attempts": 3, "initial_wait_s": 0})
    with DbtSession(plain) as session:
        assert staging(session).success
        wh.next_batch()

        # limit 0: no login at all, every try is refused: it still fails after the retries
        wh.set_role("connection limit 0")
        failed = staging(session)
        assert not failed.success
        assert failed.error is not None
        assert failed.error.kind is ErrorKind.TOO_MANY_CONNECTIONS
        assert refused in failed.error.message
        assert failed.attempts == 3
        assert all(
            a.error and a.error.kind is ErrorKind.TOO_MANY_CONNECTIONS for a in failed.attempt_log
        )
        assert exit_code(failed) == EXIT_INFRA
        with pytest.raises(DbtInvocationError) as raised:
            failed.raise_for_status()
        assert raised.value.kind is ErrorKind.TOO_MANY_CONNECTIONS
        assert all(a.nodes == () for a in failed.attempt_log)  # nothing ran

        # limit 2: some models get a connection and succeed, the rest are refused; each
        # retry re-runs exactly the refused ones, which fit, and the run completes
        wh.set_role("connection limit 2")
        result = staging(session)
        assert result.success, (result.summary(), [a.to_dict() for a in result.attempt_log])
        first = result.attempt_log[0]
        assert first.error is not None
        assert first.error.kind is ErrorKind.TOO_MANY_CONNECTIONS
        assert refused in first.error.message
        refused_nodes = {n.name for n in first.nodes if n.failed}
        if refused_nodes:  # refused per node (not while dbt was starting)
            assert all(refused in (node(first, n).message or "") for n in refused_nodes)
            # dbt's own retry re-ran exactly the refused (and skipped) nodes
            assert result.attempt_log[1].args[0] == "retry"
            assert {n.name for n in result.attempt_log[1].nodes} == refused_nodes
        assert_retries_only_rerun_failures(result)
        assert result.degraded_threads is None
        wh.set_role("connection limit -1")
        wh.assert_equals_full_refresh(session)

        # the building block's writer lock needs a connection too: refused, it says so
        wh.set_role("connection limit 0")
        locked_out = session.run_staging()
        assert not locked_out.success and locked_out.nodes == ()
        assert locked_out.error is not None
        assert locked_out.error.kind is ErrorKind.TOO_MANY_CONNECTIONS
        assert "writer lock" in locked_out.error.message and refused in locked_out.error.message
        wh.set_role("connection limit -1")

    # limit 1, degrade on: the retry runs what was refused on one thread, and completes
    wh.next_batch()
    wh.set_role("connection limit 1")
    degrade = make_settings(
        wh.db, tmp_path, retry={"attempts": 2, "initial_wait_s": 0, "degrade_threads": 1}
    )
    # PostgreSQL counts a closed connection against the limit until its backend has exited:
    # the retry starts once attempt 1's backends are gone (a condition, not a sleep), so the
    # one slot is really free for the degraded retry
    slots_freed = _OnRetry(lambda: wait_for(lambda: wh.role_sessions() == 0, "free slots"))
    retry_log = logging.getLogger("dbt_runner.retry")
    retry_log.addHandler(slots_freed)
    try:
        with DbtSession(degrade) as session:
            result = staging(session)
    finally:
        retry_log.removeHandler(slots_freed)
    with DbtSession(degrade) as session:
        assert result.success, result.summary()
        assert result.attempts == 2
        assert result.attempt_log[0].error is not None
        assert result.attempt_log[0].error.kind is ErrorKind.TOO_MANY_CONNECTIONS
        assert refused in result.attempt_log[0].error.message
        assert result.attempt_log[0].threads == 3
        assert result.attempt_log[1].threads == 1
        assert result.degraded_threads == 1
        assert result.to_dict()["degraded_threads"] == 1
        assert_retries_only_rerun_failures(result)
        wh.set_role("connection limit -1")
        wh.assert_equals_full_refresh(session)


# ------------------------------------------------------------------ lock contention
def test_lock_held_past_lock_timeout_is_a_conflict_then_retry_completes(
    wh: Warehouse, tmp_path: Path
) -> None:
    locked = "stg_uni_tracking_info"
    events = Events()
    holder = wh.server.connect(dbname=wh.db.dbname)
    holder.autocommit = False
    released = threading.Event()

    def release_when_refused(event: NodeEvent) -> None:
        events(event)
        if event.event == "node_finish" and event.name == locked and event.status == "error":
            holder.rollback()  # the other session lets go, before dbt's retry starts
            released.set()

    try:
        with DbtSession(make_settings(wh.db, tmp_path), callbacks=[release_when_refused]) as s:
            assert s.run_staging().success
            wh.next_batch()
            wh.set_role("set lock_timeout = '1s'")
            with holder.cursor() as cur:
                cur.execute(f"lock table {SCHEMA}.{locked} in access exclusive mode")
            events.clear()
            result = s.run_staging()

            assert released.is_set()
            assert result.success, result.summary()
            assert result.attempts == 2
            first, second = result.attempt_log
            assert first.error is not None
            assert first.error.kind is ErrorKind.CONFLICT
            assert "canceling statement due to lock timeout" in first.error.message
            assert node(first, locked).status == "error"
            assert node(first, locked).error.kind is ErrorKind.CONFLICT
            assert {n.name for n in first.nodes if n.status == "success"} == set(KEYS) - {locked}
            # the retry re-ran the locked model only
            assert second.args[0] == "retry"  # dbt's own retry, on the first run's results
            assert {n.name for n in second.nodes} == {locked}
            assert_retries_only_rerun_failures(result)
            wh.assert_equals_full_refresh(s)
    finally:
        holder.close()


# -------------------------------------------------------- PostgreSQL restarted mid-run
def test_postgres_restarted_mid_run_completes_after_retry(
    wh: Warehouse, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server goes down inside a delete+insert and stays down through one retry."""
    caplog.set_level(logging.WARNING, logger="dbt_runner.retry")
    events = Events()
    settings = make_settings(
        wh.db, tmp_path, retry={"attempts": 6, "initial_wait_s": 0.2, "max_wait_s": 1.0}
    )
    with DbtSession(settings, callbacks=[events]) as session:
        assert session.run_staging().success
        wh.next_batch()
        wh.arm_gate()
        events.clear()

        def restart() -> None:
            when_gate_is_blocking(wh, events)
            wh.server.stop("fast")  # terminates every session, rolls back the open one
            wait_for(lambda: retry_logged(caplog, after_attempt=2), "a retry that found it down")
            wh.server.start()

        fault = Fault(restart)
        fault.start()
        result = session.run_staging()
        fault.finish()

        assert result.success, result.summary()
        first, down, *rest = result.attempt_log
        assert first.error is not None and first.error.kind is ErrorKind.CONNECTION
        gated = node(first, GATED)
        assert gated.status == "error" and gated.error is not None
        assert gated.error.kind is ErrorKind.CONNECTION
        assert any(
            text in (gated.message or "")
            for text in (
                "terminating connection due to administrator command",
                "server closed the connection unexpectedly",
            )
        ), gated.message
        # the retry that found the server down ran no node at all ...
        assert down.error is not None and down.error.kind is ErrorKind.CONNECTION
        assert "Connection refused" in down.error.message or "shutting down" in down.error.message
        assert down.nodes == ()
        # ... and no retry widened the selection back to the models that had succeeded
        for attempt in (down, *rest):
            assert attempt.args[0] == "retry"
            assert {n.name for n in attempt.nodes} <= {GATED}
        assert_retries_only_rerun_failures(result)
        assert node(rest[-1], GATED).status == "success"
        wh.assert_equals_full_refresh(session)


# --------------------------------------------------------------------- wrong password
def test_wrong_password_is_auth_not_retried_and_fast(
    wh: Warehouse, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        wh.db,
        tmp_path,
        password="nope",
        retry={"attempts": 3, "initial_wait_s": 5, "max_wait_s": 5},
    )
    with DbtSession(settings) as session:
        result = session.run_staging()

    assert not result.success
    assert result.error is not None
    assert result.error.kind is ErrorKind.AUTH
    assert f'password authentication failed for user "{wh.db.user}"' in result.error.message
    # refused at the writer lock's login, before dbt ran (attempts 0), and not retried
    # (how fast that is belongs in benchmarks/, not in a pass/fail)
    assert result.attempts == 0 and result.nodes == ()
    assert "writer lock" in result.error.message
    assert not any("retrying" in r.getMessage() for r in caplog.records)
    assert exit_code(result) == EXIT_CONFIG
    assert "nope" not in result.to_json()


# ------------------------------------------------------------ sshd killed mid-run
def test_bastion_connections_killed_mid_run_reopen_and_rerun_failed(
    wh: Warehouse, sshd: SshdServer, tmp_path: Path
) -> None:
    events = Events()
    # PostgreSQL ends a backend whose client vanished within 200 ms instead of letting
    # the orphaned statement run on (and hold its row locks) until it next writes
    wh.set_role("set client_connection_check_interval = '200ms'")
    settings = make_settings(wh.db, tmp_path, ssh=ssh_settings(sshd))
    with DbtSession(settings, callbacks=[events]) as session:
        assert session.run_staging().success
        wh.next_batch()
        wh.arm_gate()
        events.clear()
        logins_before = sshd.accepted_connections()

        def kill() -> None:
            when_gate_is_blocking(wh, events)
            assert sshd.kill_connections() > 0

        fault = Fault(kill)
        fault.start()
        result = session.run_staging()
        fault.finish()

        assert result.success, result.summary()
        assert result.attempts == 2
        first, second = result.attempt_log
        assert first.error is not None
        assert first.error.kind in (ErrorKind.CONNECTION, ErrorKind.TUNNEL)
        gated = node(first, GATED)
        assert gated.status == "error"
        assert "server closed the connection unexpectedly" in (gated.message or "")
        # dbt's message names this test's tmp dir (".../test_bastion_connections_...") in its
        # "compiled code at" line: such user text must not make it a "tunnel" error
        assert "bastion" in (gated.message or "")
        assert gated.error is not None and gated.error.kind is ErrorKind.CONNECTION
        assert second.args[0] == "retry"
        assert {n.name for n in second.nodes} == {GATED}
        assert_retries_only_rerun_failures(result)
        # the tunnel was re-opened once, in the same session
        assert sshd.accepted_connections() == logins_before + 1
        wh.assert_equals_full_refresh(session)


# ------------------------------------------------- network stall longer than timeout_s
@pytest.mark.timeout(900)  # its deadline scales with this machine's speed (see below)
def test_stalled_bastion_hits_the_watchdog_no_hang(
    wh: Warehouse, sshd: SshdServer, tmp_path: Path
) -> None:
    events = Events()
    wh.set_role("set client_connection_check_interval = '200ms'")
    # The watchdog's deadline must be longer than a healthy run, or a loaded machine's slow
    # (but healthy) run is cut as "a stall": the stalled run's deadline is three times what a
    # healthy (already parsed) run of the same models took here, at least 6 s; the runs
    # around it get a generous deadline of their own (invoke(timeout_s=...)). (pytest's own
    # timeout interrupting dbt mid-run would look like a leak: it is set well above.)
    settings = make_settings(wh.db, tmp_path, ssh=ssh_settings(sshd), timeout_s=6.0)
    healthy_s = 300.0
    with DbtSession(settings, callbacks=[events]) as session:
        for _ in range(2):  # the first one parses and creates the tables
            warm = session.invoke(["run", "--select", "tag:staging"], timeout_s=healthy_s)
            assert warm.success, warm.summary()
        timeout_s = round(max(6.0, 3 * warm.elapsed_s), 1)
        wh.next_batch()
        wh.arm_gate()
        wh.snapshot("before")
        events.clear()

        def stall() -> None:
            # until the gate blocks (bounded: the watchdog ends the run before this)
            wait_for(
                lambda: (
                    all(events.finished(t, "success") for t in KEYS if t != GATED)
                    and wh.sleeping_in_gate()
                ),
                "the gated model blocked in its INSERT, the others done",
                timeout=timeout_s + DEADLINE_S,
            )
            sshd.pause()  # SIGSTOP: TCP stays up, nothing answers

        fault = Fault(stall)
        fault.start()
        t0 = time.monotonic()
        result = session.invoke(["run", "--select", "tag:staging"], timeout_s=timeout_s)
        took = time.monotonic() - t0
        fault.finish(timeout_s + DEADLINE_S)
        sshd.resume()

        assert not result.success
        assert result.error is not None
        assert result.error.kind is ErrorKind.TIMEOUT
        assert f"invocation timed out after {timeout_s:g}s" in result.error.message
        assert result.attempts == 1  # timeouts are retried only when configured
        assert took < timeout_s + 10.0, f"took {took:.1f}s"  # no hang: cancelled, then cut
        assert node(result.attempt_log[0], GATED).error.kind is ErrorKind.TIMEOUT
        assert exit_code(result) == EXIT_INFRA

        # the interrupted delete+insert rolled back: the gated table is as before the run
        wait_for(lambda: wh.role_sessions() == 0, "the orphaned backend to end")
        assert wh.differences("before", GATED) == 0
        assert wh.duplicate_keys(GATED) == 0

        # the next run re-opens the tunnel and catches up: no state of the timed-out
        # invocation (its watchdog, its cancelled connections) leaks into it
        again = session.invoke(["run", "--select", "tag:staging"], timeout_s=healthy_s)
        assert again.success, again.summary()
        assert again.attempts == 1
        wh.assert_equals_full_refresh(session)
