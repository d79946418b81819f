"""Interruptions and concurrent runs, as an orchestrator produces them (issue 21).

Real processes, PostgreSQL with TLS, the Redshift stand-in, a real sshd. A run is
caught mid-query deterministically: the test holds ``LOCK TABLE ... IN ACCESS
EXCLUSIVE MODE`` on one staging table from an admin connection and waits until
``pg_stat_activity`` shows the dbt user waiting on a lock; then it sends the
signal, lets the watchdog fire or raises from a signal handler. The other two
models commit meanwhile. Every wait is a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import DbtSession, ErrorKind, RunResult, Settings
from dbt_runner.synthetic import create_raw_tables, load_batch
from testbed.pg_fixtures import PgDatabase
from testbed.postgres import PostgresServer
from testbed.settings import NO_WAITS, PROJECT, make_settings, ssh_of, warehouse_of
from testbed.soak import runner_env
from testbed.sshd import SshdServer, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SCHEMA = "stg"
KEYS = {
    "stg_ecs_order_info": "order_id",
    "stg_uni_tracking_info": "order_id",
    "stg_uni_tracking_spath": "path_key",
}
SORT = {
    "stg_ecs_order_info": "add_time",
    "stg_uni_tracking_info": "update_time",
    "stg_uni_tracking_spath": "pathtime",
}
#: the model the test blocks; the other two commit while it waits
BLOCKED = "stg_uni_tracking_spath"
T0 = 1_700_000_000
DEADLINE_S = 30.0


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("dbt-runner")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dbt_runner.cli"]


class Bed:
    """The test's database, seen as its superuser: data, blockers, backends, the oracle."""

    def __init__(self, server: PostgresServer, db: PgDatabase, wh_type: str) -> None:
        self.server, self.db, self.wh_type = server, db, wh_type
        self.batches = 0

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        return self.server.execute(statement, dbname=self.db.dbname)

    def load(self, start: int, end: int, **kwargs: Any) -> None:
        conn = self.db.connect()
        try:
            create_raw_tables(conn, "postgres")
            load_batch(conn, "postgres", start, end, orders_per_minute=6, seed=7, **kwargs)
        finally:
            conn.close()

    def next_batch(self) -> None:
        """20 more minutes of raw rows, with re-deliveries and late rows inside the scan."""
        self.batches += 1
        start = T0 + 7200 + (self.batches - 1) * 1200
        self.load(start, start + 1200, late_share=0.1, late_delay_s=(60, 1500))

    def blocked_and_others_committed(self) -> bool:
        """The blocked model waits on its table; the other two have committed the newest
        batch: their newest row is raw's newest (visible only once committed)."""
        if self.waiting("relation") < 1:
            return False
        for table in set(KEYS) - {BLOCKED}:
            raw = table.removeprefix("stg_")
            sort = SORT[table]
            ((staged, delivered),) = self.sql(
                f"select (select max({sort}) from {SCHEMA}.{table}), "
                f"(select max({sort}) from raw.{raw})"
            )
            if staged != delivered:
                return False
        return True

    def backends(self) -> int:
        """Sessions of the dbt role on the server (dbt's, the writer lock's)."""
        rows = self.sql(f"select count(*) from pg_stat_activity where usename = '{self.db.user}'")
        return int(rows[0][0])

    def waiting(self, what: str = "relation") -> int:
        """Backends of the dbt role waiting on a lock of kind ``what`` (relation/advisory)."""
        rows = self.sql(
            "select count(*) from pg_stat_activity a join pg_locks l on l.pid = a.pid "
            f"where a.usename = '{self.db.user}' and not l.granted and l.locktype = '{what}'"
        )
        return int(rows[0][0])

    @contextlib.contextmanager
    def holding(self, table: str = BLOCKED) -> Iterator[Callable[[], bool]]:
        """Hold ACCESS EXCLUSIVE on ``stg.<table>``; yields "is it still held?"."""
        conn = self.server.connect(dbname=self.db.dbname)
        conn.autocommit = False
        cursor = conn.cursor()
        cursor.execute(f"lock table {SCHEMA}.{table} in access exclusive mode")

        def held() -> bool:
            rows = self.sql(
                "select count(*) from pg_locks l join pg_class c on c.oid = l.relation "
                f"where c.relname = '{table}' and l.mode = 'AccessExclusiveLock' and l.granted"
            )
            return bool(rows[0][0])

        try:
            yield held
        finally:
            conn.rollback()
            conn.close()

    def duplicate_keys(self, table: str) -> int:
        key = KEYS[table]
        rows = self.sql(
            f"select count(*) from (select {key} from {SCHEMA}.{table} "
            f"group by {key} having count(*) > 1) d"
        )
        return int(rows[0][0])

    def assert_equals_full_refresh(self, session: DbtSession) -> None:
        """Each staging table equals a full refresh of the same raw data (row for row)."""
        for table in KEYS:
            assert self.duplicate_keys(table) == 0, f"duplicate keys in {table}"
        self.sql("drop schema if exists incremental cascade; create schema incremental")
        for table in KEYS:
            self.sql(f"create table incremental.{table} as select * from {SCHEMA}.{table}")
        full = session.invoke(["run", "--select", "tag:staging", "--full-refresh"])
        assert full.success, full.summary()
        for table in KEYS:
            a, b = f"{SCHEMA}.{table}", f"incremental.{table}"
            diff = self.sql(
                f"select (select count(*) from (select * from {a} except all select * from {b})"
                f" x) + (select count(*) from (select * from {b} except all select * from {a}) y)"
            )[0][0]
            assert diff == 0, f"{table}: the incremental state differs from a full refresh"


@pytest.fixture(params=["postgres", "redshift"])
def bed(request: pytest.FixtureRequest, pg_server: PostgresServer) -> Bed:
    db = request.getfixturevalue("pg_db" if request.param == "postgres" else "redshift_db")
    bed = Bed(pg_server, db, request.param)
    bed.load(T0, T0 + 7200, late_share=0.05)
    return bed


@pytest.fixture
def pg_bed(pg_server: PostgresServer, pg_db: PgDatabase) -> Bed:
    bed = Bed(pg_server, pg_db, "postgres")
    bed.load(T0, T0 + 7200, late_share=0.05)
    return bed


def settings_for(bed: Bed, tmp_path: Path, sshd: SshdServer | None = None, **kw: Any) -> Settings:
    return make_settings(bed.db, sshd, tmp_path / "state", wh_type=bed.wh_type, **kw)


def first_build(bed: Bed, tmp_path: Path) -> None:
    """Build staging once (the tables exist, so a later cycle's DELETE can be blocked)."""
    with DbtSession(settings_for(bed, tmp_path)) as session:
        assert session.run_staging().success
    bed.next_batch()


def blocked_and_committed(bed: Bed, result: RunResult, kind: ErrorKind) -> None:
    """The blocked model carries ``kind``; the two others committed and say so."""
    by_name = {n.name: n for n in result.nodes}
    assert set(by_name) == set(KEYS), result.summary()
    assert by_name[BLOCKED].error is not None and by_name[BLOCKED].error.kind is kind
    for name in set(KEYS) - {BLOCKED}:
        node = by_name[name]
        assert node.status == "success" and node.error is None, result.summary()
        assert node.rows_affected is not None and node.rows_affected > 0


def told_what_committed(bed: Bed, result: RunResult, kind: ErrorKind) -> None:
    """The blocked model carries ``kind``; each other model is ``success`` exactly when it
    committed the newest batch on the server, and carries ``kind`` when it did not.

    A deadline (not a condition) ended the run, so how far the other two got depends on
    the machine's load: what is asserted is that the result says what the server holds.
    (:func:`blocked_and_committed` asserts the committed path where a condition, not a
    clock, starts the cancel.)"""
    by_name = {n.name: n for n in result.nodes}
    assert set(by_name) == set(KEYS), result.summary()
    assert by_name[BLOCKED].error is not None and by_name[BLOCKED].error.kind is kind
    for name in set(KEYS) - {BLOCKED}:
        node, sort = by_name[name], SORT[name]
        ((staged, delivered),) = bed.sql(
            f"select (select max({sort}) from {SCHEMA}.{name}), "
            f"(select max({sort}) from raw.{name.removeprefix('stg_')})"
        )
        if staged == delivered:  # committed
            assert node.status == "success" and node.error is None, result.summary()
            assert node.rows_affected is not None and node.rows_affected > 0
        else:
            assert node.error is not None and node.error.kind is kind, result.summary()


def no_backend_left(bed: Bed, within_s: float = 5.0) -> bool:
    return wait_until(lambda: bed.backends() == 0, timeout=within_s)


# -------------------------------------------------------------------- the watchdog
def test_watchdog_cancels_on_the_server_and_tells_what_committed(bed: Bed, tmp_path: Path) -> None:
    """timeout_s=3, a model blocked on a lock: the statement is cancelled on the server
    (not left waiting for the blocker), the result is ``timeout``, and each of the two
    other models is ``success`` with its rows exactly when it committed."""
    first_build(bed, tmp_path)
    with DbtSession(settings_for(bed, tmp_path)) as session, bed.holding() as held:
        result = session.invoke(["run", "--select", "tag:staging"], timeout_s=3)
        assert held(), "the call returned only once the blocker went away"
        assert no_backend_left(bed), "a backend of the session is still on the server"
        assert not result.success and result.error is not None
        assert result.error.kind is ErrorKind.TIMEOUT
        assert result.attempts == 1
        told_what_committed(bed, result, ErrorKind.TIMEOUT)
    with DbtSession(settings_for(bed, tmp_path)) as session:  # the blocker is gone
        assert session.run_staging().success
        bed.assert_equals_full_refresh(session)


def test_cancel_from_another_thread_stops_the_run_and_the_session_goes_on(
    pg_bed: Bed, tmp_path: Path
) -> None:
    """DbtSession.cancel() (Prefect, Dagster, a notebook's stop button): kind cancelled."""
    first_build(pg_bed, tmp_path)
    with DbtSession(settings_for(pg_bed, tmp_path)) as session:
        with pg_bed.holding() as held:
            canceller = threading.Thread(
                target=lambda: (
                    wait_until(pg_bed.blocked_and_others_committed, DEADLINE_S) and session.cancel()
                ),
                daemon=True,
            )
            canceller.start()
            result = session.run_staging()
            canceller.join(DEADLINE_S)
            assert held() and no_backend_left(pg_bed)
        assert result.error is not None and result.error.kind is ErrorKind.CANCELLED
        assert result.exit_code == 130
        blocked_and_committed(pg_bed, result, ErrorKind.CANCELLED)
        assert session.cancel() is False  # nothing runs now
        assert session.run_staging().success  # the session is usable afterwards
        pg_bed.assert_equals_full_refresh(session)


# ----------------------------------------------------------- a foreign BaseException
class OrchestratorTimeout(BaseException):
    """What Airflow raises from its SIGALRM handler (AirflowTaskTimeout is a BaseException)."""


@pytest.mark.parametrize("call", ["invoke", "run_staging"])
def test_a_base_exception_from_a_signal_handler_reaches_the_caller_unchanged(
    bed: Bed, tmp_path: Path, call: str
) -> None:
    first_build(bed, tmp_path)
    raised: list[BaseException] = []

    def on_alarm(signum: int, frame: Any) -> None:
        raised.append(OrchestratorTimeout("task timed out"))
        raise raised[-1]

    previous = signal.signal(signal.SIGALRM, on_alarm)

    def alarm_when_blocked() -> None:
        if wait_until(bed.blocked_and_others_committed, DEADLINE_S):
            os.kill(os.getpid(), signal.SIGALRM)  # delivered to the main thread's handler

    try:
        with DbtSession(settings_for(bed, tmp_path)) as session, bed.holding() as held:
            threading.Thread(target=alarm_when_blocked, daemon=True).start()
            with pytest.raises(OrchestratorTimeout) as info:
                if call == "invoke":
                    session.invoke(["run", "--select", "tag:staging"])
                else:
                    session.run_staging()
            assert raised and info.value is raised[0]  # the very exception, not a copy
            assert held() and no_backend_left(bed)
            assert session.state.value == "open"
    finally:
        signal.signal(signal.SIGALRM, previous)
    with DbtSession(settings_for(bed, tmp_path)) as session:
        assert session.run_staging().success
        bed.assert_equals_full_refresh(session)


# -------------------------------------------------------------- signals to the CLI
@pytest.mark.parametrize("via", ["direct", "bastion"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_dbt_runner_cycle_cancels_on_the_server_and_cleans_up(
    pg_bed: Bed, tmp_path: Path, request: pytest.FixtureRequest, via: str, sig: int
) -> None:
    sshd: SshdServer | None = request.getfixturevalue("sshd") if via == "bastion" else None
    first_build(pg_bed, tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    sections: dict[str, Any] = {"warehouse": warehouse_of(pg_bed.db), "retry": NO_WAITS}
    if sshd is not None:
        sections["ssh"] = ssh_of(sshd)
    env = runner_env({"project_dir": PROJECT, "state_dir": tmp_path / "cli"}, **sections)
    env["TMPDIR"] = str(tmp)
    with pg_bed.holding() as held:
        proc = subprocess.Popen(
            [*_cli(), "cycle", "--json", "-q"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert wait_until(pg_bed.blocked_and_others_committed, DEADLINE_S), "not blocked"
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=10)  # the bound: exit within 10 s
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert held()
        assert proc.returncode == 128 + sig, err[-3000:]
        lines = [line for line in err.splitlines() if line.startswith("dbt-runner: ")]
        assert len(lines) == 1, err[-3000:]
        name = signal.Signals(sig).name
        assert lines[0].startswith(f"dbt-runner: interrupted by {name} during staging")
        assert "2 committed" in lines[0] and "1 cancelled" in lines[0]
        cleaned = "running statements cancelled on the server"
        cleaned += ", tunnel closed" if via == "bastion" else ""
        assert lines[0].endswith(f"; {cleaned}, generated profile removed (exit {128 + sig})")
        staging = json.loads(out)["staging"]
        assert staging["error"]["kind"] == "cancelled"
        assert no_backend_left(pg_bed), "a backend of the killed cycle is still on the server"
        assert not list(tmp.glob("dbt_runner_profile_*")), "a generated profile was left"
    with DbtSession(settings_for(pg_bed, tmp_path)) as session:
        assert session.run_staging().success
        pg_bed.assert_equals_full_refresh(session)


# ------------------------------------------------------------ one writer per target
def _start_cycle(bed: Bed, tmp_path: Path, name: str) -> subprocess.Popen[str]:
    env = runner_env(
        {"project_dir": PROJECT, "state_dir": tmp_path / name},
        warehouse=warehouse_of(bed.db, bed.wh_type),
        retry=NO_WAITS,
    )
    return subprocess.Popen(
        [*_cli(), "cycle", "--json", "-q"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def queued_behind(bed: Bed) -> bool:
    """One writer waits on the blocked table, the other on the writer lock."""
    if bed.wh_type == "postgres":
        return bed.waiting("relation") >= 1 and bed.waiting("advisory") >= 1
    return bed.waiting("relation") >= 2


def _outcome(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode in (0, 3), err[-3000:]
    return proc.returncode, json.loads(out), err


def test_two_cycles_at_the_same_moment_leave_staging_equal_to_a_full_refresh(
    bed: Bed, tmp_path: Path
) -> None:
    """The scheduled cycle plus an ad hoc one on the same target: 2 rounds started at the
    same moment, then 1 where both queue behind a lock the test holds; the second writer
    waits for the first (or reports ``locked``), and staging never duplicates."""
    first_build(bed, tmp_path)
    for round_ in range(3):
        queued = round_ == 2
        with bed.holding() if queued else contextlib.nullcontext() as held:
            procs = [_start_cycle(bed, tmp_path, f"cycle{i}") for i in (1, 2)]
            if held is not None:
                # one cycle waits on the table, the other on the writer lock (queued behind
                # it: an advisory lock on PostgreSQL, the lock table on Redshift)
                assert wait_until(lambda: queued_behind(bed), DEADLINE_S), "not both queued"
        outcomes = [_outcome(p) for p in procs]
        codes = [code for code, _, _ in outcomes]
        assert 0 in codes, outcomes
        for code, payload, err in outcomes:
            if code == 3:
                assert payload["staging"]["error"]["kind"] == "locked", (payload, err[-3000:])
            else:
                assert payload["staging"]["success"] and payload["tests"]["success"]
        for table in KEYS:
            assert bed.duplicate_keys(table) == 0, f"round {round_ + 1}: duplicates in {table}"
        bed.next_batch()
    with DbtSession(settings_for(bed, tmp_path)) as session:
        assert session.run_staging().success
        bed.assert_equals_full_refresh(session)


def test_waits_longer_than_the_connect_timeout_are_not_cut(bed: Bed, tmp_path: Path) -> None:
    """WAREHOUSE__CONNECT_TIMEOUT_S bounds opening a connection, not a statement: the
    writer lock's wait and a model's wait on a table lock both outlast it (on Redshift,
    the driver's socket timeout cut every read after it: a long model, or a writer
    queued behind a cycle longer than 10 s, failed as ``connection``)."""
    first_build(bed, tmp_path)
    connect_timeout_s = 2
    settings = settings_for(
        bed, tmp_path, warehouse={"connect_timeout_s": connect_timeout_s}, lock_timeout_s=120
    )

    def waited_longer(application: str) -> bool:
        rows = bed.sql(
            "select count(*) from pg_stat_activity where usename = "
            f"'{bed.db.user}' and wait_event_type = 'Lock' and application_name like "
            f"'{application}%' and now() - query_start > interval '{2 * connect_timeout_s} s'"
        )
        return bool(rows[0][0])

    results: list[RunResult] = []
    with DbtSession(settings) as session:
        # 1. queued behind another writer for longer than the connect timeout
        with DbtSession(settings_for(bed, tmp_path)) as holder, holder._writer_lock("run"):
            runner = threading.Thread(target=lambda: results.append(session.run_staging()))
            runner.start()
            assert wait_until(lambda: waited_longer("dbt_runner writer lock"), DEADLINE_S)
        runner.join(DEADLINE_S)
        assert results and results[-1].success, results[-1].summary() if results else "hung"
        bed.next_batch()
        # 2. a model's statement that waits longer than the connect timeout
        with bed.holding():
            runner = threading.Thread(target=lambda: results.append(session.run_staging()))
            runner.start()
            assert wait_until(lambda: waited_longer(""), DEADLINE_S)
        runner.join(DEADLINE_S)
        assert len(results) == 2 and results[-1].success, results[-1].summary()
        bed.assert_equals_full_refresh(session)


def test_a_busy_writer_lock_fails_as_locked_or_skips(pg_bed: Bed, tmp_path: Path) -> None:
    """LOCK_TIMEOUT_S=0: a second writer does not wait; ``fail`` is kind locked (exit 3),
    ``skip`` is a success that says it skipped; readers (run_tests) are not locked out."""
    first_build(pg_bed, tmp_path)
    with DbtSession(settings_for(pg_bed, tmp_path)) as holder, holder._writer_lock("run"):
        with DbtSession(settings_for(pg_bed, tmp_path, lock_timeout_s=0)) as other:
            failed = other.run_staging()
            assert not failed.success and failed.exit_code == 3
            assert failed.error is not None and failed.error.kind is ErrorKind.LOCKED
            assert "LOCK__ON_BUSY=skip" in failed.error.message
            assert failed.nodes == ()
            assert other.run_tests().success  # tests do not write: no lock
        skip = settings_for(pg_bed, tmp_path, lock_timeout_s=0, lock={"on_busy": "skip"})
        with DbtSession(skip) as other:
            skipped = other.run_staging()
            assert skipped.success and skipped.exit_code == 0 and skipped.nodes == ()
            assert skipped.error is not None and skipped.error.kind is ErrorKind.LOCKED
            assert skipped.summary().startswith("dbt run: SKIPPED [locked]")
    # the holder's session ended: its connection, and with it the lock, is gone
    with DbtSession(settings_for(pg_bed, tmp_path, lock_timeout_s=0)) as other:
        assert other.run_staging().success


def test_a_killed_holder_s_lock_is_released_by_the_server(pg_bed: Bed, tmp_path: Path) -> None:
    """SIGKILL leaves nothing to clean up but what the server cleans up itself."""
    first_build(pg_bed, tmp_path)
    with pg_bed.holding():
        proc = _start_cycle(pg_bed, tmp_path, "killed")
        assert wait_until(lambda: pg_bed.waiting() > 0, DEADLINE_S)
        proc.kill()
        proc.wait(timeout=30)
    # the server ends the dead client's sessions (its lock with them)
    assert wait_until(lambda: pg_bed.backends() == 0, DEADLINE_S)
    with DbtSession(settings_for(pg_bed, tmp_path, lock_timeout_s=0)) as session:
        assert session.run_staging().success
        pg_bed.assert_equals_full_refresh(session)


# ------------------------------------------------------------------ the demo at Ctrl-C
def test_ctrl_c_under_a_terminal_stops_the_demo(tmp_path: Path) -> None:
    """A pseudo-terminal's Ctrl-C (SIGINT to the foreground group) during the demo's first
    cycle: it stops there, exit 130, without running the rest of the demo."""
    import pty
    import select

    def read_some(fd: int) -> bytes:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            return b""
        try:
            return os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            return b""

    pid, fd = pty.fork()
    if pid == 0:  # the child: the demo on the terminal
        os.execv(_cli()[0], [*_cli(), "demo", "--path", str(tmp_path / "demo.duckdb")])
    output = b""
    deadline = time.monotonic() + 120
    try:
        while b"[2/4]" not in output and time.monotonic() < deadline:
            output += read_some(fd)
        assert b"[2/4]" in output, output.decode(errors="replace")[-2000:]
        os.write(fd, b"\x03")  # Ctrl-C
        stop_by = time.monotonic() + 30
        status = None
        while time.monotonic() < stop_by:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            output += read_some(fd)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the demo did not stop after Ctrl-C")
    finally:
        os.close(fd)
    assert status is not None and os.WIFEXITED(status), status
    assert os.WEXITSTATUS(status) == 130, output.decode(errors="replace")[-2000:]
    assert b"[3/4]" not in output  # the demo stopped; it did not go on to the next step


# --------------------------------------------------------------------- the warm worker
def _worker(bed: Bed, tmp_path: Path) -> tuple[Any, Settings]:
    from tests.integration.test_worker import WorkerProcess

    settings = make_settings(bed.db, None, tmp_path / "worker-state", wh_type=bed.wh_type)
    return WorkerProcess(settings, tmp_path / "w.sock"), settings


def test_sigterm_to_the_worker_cancels_its_child_and_the_client_gets_the_truth(
    pg_bed: Bed, tmp_path: Path
) -> None:
    from dbt_runner import WorkerClient

    first_build(pg_bed, tmp_path)
    worker, settings = _worker(pg_bed, tmp_path)
    try:
        with pg_bed.holding() as held:
            results: list[RunResult] = []
            client = WorkerClient(worker.socket_path, settings=settings)
            caller = threading.Thread(target=lambda: results.append(client.run_staging()))
            caller.start()
            assert wait_until(pg_bed.blocked_and_others_committed, DEADLINE_S)
            worker.proc.send_signal(signal.SIGTERM)
            assert worker.proc.wait(timeout=30) == 143, "".join(worker.output)[-3000:]
            caller.join(DEADLINE_S)
            assert held() and no_backend_left(pg_bed)
        assert client.last_ran_in_worker and results
        (result,) = results
        assert result.error is not None and result.error.kind is ErrorKind.CANCELLED
        blocked_and_committed(pg_bed, result, ErrorKind.CANCELLED)
        assert not worker.socket_path.exists()
    finally:
        worker.stop()


def test_an_interrupted_client_cancels_the_worker_s_child_and_re_raises(
    pg_bed: Bed, tmp_path: Path
) -> None:
    from dbt_runner import WorkerClient

    first_build(pg_bed, tmp_path)
    worker, settings = _worker(pg_bed, tmp_path)
    raised: list[BaseException] = []

    def on_alarm(signum: int, frame: Any) -> None:
        raised.append(OrchestratorTimeout("task timed out"))
        raise raised[-1]

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        client = WorkerClient(worker.socket_path, settings=settings)
        with pg_bed.holding() as held:
            threading.Thread(
                target=lambda: (
                    wait_until(pg_bed.blocked_and_others_committed, DEADLINE_S)
                    and os.kill(os.getpid(), signal.SIGALRM)
                ),
                daemon=True,
            ).start()
            with pytest.raises(OrchestratorTimeout) as info:
                client.run_staging()
            assert info.value is raised[0]
            assert held() and no_backend_left(pg_bed)
        assert client.run_staging().success and client.last_ran_in_worker  # it serves on
    finally:
        signal.signal(signal.SIGALRM, previous)
        worker.stop()
