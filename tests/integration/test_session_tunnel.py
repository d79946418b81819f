"""A whole ``DbtSession`` through a real OpenSSH bastion to a real warehouse.

The tunnel itself is tested in ``test_tunnel.py``; failures injected while dbt
runs (bastion killed mid-run, bastion stalled past ``timeout_s`` and the
watchdog) in ``test_faults.py``. Here: what a session does with its tunnel
when things go right — one SSH connection and one parse for several
invocations, three models really running at once, a dropped tunnel re-opened
between invocations on the same local port, several sessions in a row and
several processes at once, dbt's partial parse kept valid whatever the local port
(the profile names the warehouse; the tunnel is a route), and nothing left behind
after ``__exit__``.

Every wait is bounded; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import DbtSession, RunResult, Settings
from dbt_runner._ssh.tunnel import derive_local_port
from dbt_runner.synthetic import create_raw_tables, load_batch
from testbed.pg_fixtures import PgDatabase, RedshiftDatabase
from testbed.sshd import SshdServer, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
MODELS = ("stg_ecs_order_info", "stg_uni_tracking_info", "stg_uni_tracking_spath")
T0 = 1_700_000_000  # epoch seconds of the synthetic data
#: model -> the Redshift clauses dbt-redshift must send (as the stand-in records them)
REDSHIFT_KEYS = {
    "stg_ecs_order_info": ["compound sortkey(add_time)", "distkey(order_id)", "diststyle key"],
    "stg_uni_tracking_info": [
        "compound sortkey(update_time)",
        "distkey(order_id)",
        "diststyle key",
    ],
    "stg_uni_tracking_spath": ["compound sortkey(pathtime)", "distkey(order_id)", "diststyle key"],
}
PROFILE_CHANGED = "profile has changed"
CHILD_TIMEOUT_S = 120.0


# ----------------------------------------------------------------------------- helpers
def load_raw(db: PgDatabase, hours: int = 2, orders_per_minute: int = 6) -> None:
    """The raw tables in schema ``raw`` with ``hours`` of synthetic deliveries."""
    conn = db.connect()
    try:
        create_raw_tables(conn, "postgres")
        load_batch(conn, "postgres", T0, T0 + hours * 3600, orders_per_minute=orders_per_minute)
    finally:
        conn.close()


def warehouse_of(db: PgDatabase, wh_type: str = "postgres", schema: str = "stg") -> dict[str, Any]:
    return {
        "type": wh_type,
        "host": "127.0.0.1",
        "port": db.port,
        "user": db.user,
        "password": db.password,
        "dbname": db.dbname,
        "sslmode": db.sslmode,  # TLS, as in production (require / verify-ca)
        "schema": schema,
    }


def ssh_of(sshd: SshdServer, **extra: Any) -> dict[str, Any]:
    return {
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "private_key": sshd.private_key_path,
        "known_hosts": sshd.known_hosts_path,
        **extra,
    }


def make_settings(
    db: PgDatabase,
    sshd: SshdServer,
    state_dir: Path,
    *,
    wh_type: str = "postgres",
    schema: str = "stg",
    **ssh_extra: Any,
) -> Settings:
    return Settings(
        warehouse=warehouse_of(db, wh_type, schema),
        ssh=ssh_of(sshd, **ssh_extra),
        state_dir=state_dir,
        threads=3,
        retry={"initial_wait_s": 0, "max_wait_s": 0},
    )


def ok(result: RunResult) -> RunResult:
    assert result.success, result.summary()
    return result


def stable_port(db: PgDatabase, sshd: SshdServer) -> int:
    """The local port the tunnel derives for this bastion/warehouse pair."""
    return derive_local_port(sshd.host, sshd.port, sshd.user, "127.0.0.1", db.port)


def new_logins(sshd: SshdServer, before: int, expected: int) -> int:
    """SSH logins since ``before``, once sshd's log shows ``expected`` of them (bounded wait)."""
    wait_until(lambda: sshd.accepted_connections() - before >= expected, timeout=5)
    return sshd.accepted_connections() - before


def _ts(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
def db(pg_db: PgDatabase) -> PgDatabase:
    """A PostgreSQL database with raw data loaded."""
    load_raw(pg_db)
    return pg_db


# ------------------------------------------------------- 1. one session, one tunnel, one parse
def test_session_runs_staging_and_tests_through_one_tunnel_with_three_threads(
    db: PgDatabase, sshd: SshdServer, tmp_path: Path
) -> None:
    before = sshd.accepted_connections()
    with DbtSession(make_settings(db, sshd, tmp_path / "state")) as session:
        assert session.tunnel is not None
        staging = ok(session.run_staging(threads=3))
        tests = ok(session.run_tests())
        assert session.parse_count == 1
        assert session.tunnel.local_port == stable_port(db, sshd)

    # exactly one SSH connection for the whole session (both invocations and the parse)
    assert new_logins(sshd, before, 1) == 1

    models = [n for n in staging.nodes if n.resource_type == "model"]
    assert sorted(n.name for n in models) == sorted(MODELS)
    assert all(n.status == "success" for n in models)
    assert staging.threads == 3
    # the three models ran at once: three worker threads, and their spans overlap
    assert len({n.thread for n in models}) == 3, [n.thread for n in models]
    last_start = max(_ts(n.started_at) for n in models)
    first_end = min(_ts(n.completed_at) for n in models)
    assert last_start < first_end, [(n.name, n.started_at, n.completed_at) for n in models]

    assert tests.nodes and all(n.status == "pass" for n in tests.nodes)


# ------------------------------------------------------- 2. dbt-redshift through the tunnel
def test_redshift_adapter_session_through_the_tunnel(
    redshift_db: RedshiftDatabase, sshd: SshdServer, tmp_path: Path
) -> None:
    load_raw(redshift_db)  # psycopg2 through the stand-in proxy
    before = sshd.accepted_connections()
    settings = make_settings(redshift_db, sshd, tmp_path / "state", wh_type="redshift")
    with DbtSession(settings) as session:
        staging = ok(session.run_staging(threads=3))
        ok(session.run_tests())
        assert session.parse_count == 1

    assert new_logins(sshd, before, 1) == 1
    assert sorted(n.name for n in staging.nodes if n.resource_type == "model") == sorted(MODELS)
    for model, clauses in REDSHIFT_KEYS.items():
        created = redshift_db.clauses_for(model)
        assert created, f"no CREATE TABLE {model} reached the stand-in"
        for seen in created:
            assert sorted(seen) == sorted(clauses), f"{model}: {seen}"


# ------------------------------------------- 3. bastion drops the tunnel between invocations
def test_tunnel_killed_between_invocations_is_reopened_on_the_same_port(
    db: PgDatabase, sshd: SshdServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dbt_runner.tunnel")
    with DbtSession(make_settings(db, sshd, tmp_path / "state")) as session:
        tunnel = session.tunnel
        assert tunnel is not None
        ok(session.run_staging())
        port = tunnel.local_port
        before = sshd.accepted_connections()

        assert sshd.kill_connections() > 0
        # paramiko notices the EOF on its own thread: wait for it, so the check before the
        # next invocation (not a failed dbt connection plus a retry) is what finds it dead
        assert wait_until(lambda: not tunnel.is_healthy(), timeout=10)
        assert "tunnel re-opened" not in caplog.text

        result = ok(session.run_staging())
        assert result.attempts == 1
        assert "tunnel re-opened" in caplog.text
        assert tunnel.local_port == port
        assert session.tunnel is tunnel
        assert new_logins(sshd, before, 1) == 1
        assert session.parse_count == 1  # the profile did not change: no re-parse


# ------------------------------- 4 + 5. sessions in a row: same port, partial parse stays valid
def test_sessions_in_a_row_reuse_the_port_and_the_partial_parse(
    db: PgDatabase, sshd: SshdServer, tmp_path: Path
) -> None:
    state = tmp_path / "state"  # shared: partial_parse.msgpack lives in its target/
    before = sshd.accepted_connections()

    with DbtSession(make_settings(db, sshd, state)) as first:
        ok(first.run_staging())
        ok(first.run_tests())
        assert first.tunnel is not None
        port = first.tunnel.local_port
    # nothing to partially parse from yet: proves the reasons are captured at all
    assert first._relay.full_parse_reasons, "dbt reported no reason for its first full parse"
    assert not any(PROFILE_CHANGED in r for r in first._relay.full_parse_reasons)

    with DbtSession(make_settings(db, sshd, state)) as second:
        ok(second.run_staging())
        assert second.tunnel is not None
        assert second.tunnel.local_port == port
        assert second.parse_count == 1
    # the same settings give the same profile: the partial parse holds
    assert second._relay.full_parse_reasons == []
    assert new_logins(sshd, before, 2) == 2

    # the local port forced elsewhere: the profile names the warehouse, not the tunnel's
    # port (the session routes that address through the tunnel), so it still holds
    other = free_port()
    with DbtSession(make_settings(db, sshd, state, local_port=other)) as third:
        ok(third.run_staging())
        assert third.tunnel is not None
        assert third.tunnel.local_port == other != port
    assert third._relay.full_parse_reasons == []


# ----------------------------------------------------- 4. two processes, one bastion, at once
CHILD = """
import json, os, sys, time
from pathlib import Path
from dbt_runner import DbtSession, Settings

name, barrier = sys.argv[1], Path(sys.argv[2])
settings = Settings(**json.loads(os.environ["SESSION_TUNNEL_TEST_SETTINGS"]))
with DbtSession(settings) as session:
    port = session.tunnel.local_port
    (barrier / (name + ".port")).write_text(str(port))
    # hold this tunnel open until the other process has opened its own too
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("*.port"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    overlapped = len(list(barrier.glob("*.port"))) == 2
    staging = session.run_staging()
    tests = session.run_tests()
print(json.dumps({"port": port, "overlapped": overlapped,
                  "staging": staging.to_dict(), "tests": tests.to_dict()}))
"""


def test_two_processes_at_once_each_get_their_own_port(
    db: PgDatabase, sshd: SshdServer, tmp_path: Path
) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    before = sshd.accepted_connections()
    children: dict[str, subprocess.Popen[str]] = {}
    try:
        for name in ("a", "b"):
            settings = {
                "warehouse": warehouse_of(db, schema=f"stg_{name}"),  # no DDL race between them
                "ssh": {k: str(v) for k, v in ssh_of(sshd).items()},
                "state_dir": str(tmp_path / f"state_{name}"),
                "threads": 3,
                "retry": {"initial_wait_s": 0, "max_wait_s": 0},
            }
            env = {**os.environ, "SESSION_TUNNEL_TEST_SETTINGS": json.dumps(settings)}
            children[name] = subprocess.Popen(
                [sys.executable, "-c", CHILD, name, str(barrier)],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        outputs = {
            name: child.communicate(timeout=CHILD_TIMEOUT_S) for name, child in children.items()
        }
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)

    reports = {}
    for name, child in children.items():
        out, err = outputs[name]
        assert child.returncode == 0, f"child {name} exited {child.returncode}:\n{err[-3000:]}"
        reports[name] = json.loads(out.strip().splitlines()[-1])
    for name, report in reports.items():
        assert report["overlapped"], f"child {name} never saw the other one's tunnel open"
        for kind in ("staging", "tests"):
            assert report[kind]["success"], f"{name} {kind}: {report[kind]['error']}"
    ports = {report["port"] for report in reports.values()}
    # one got the stable port, the other fell back to another one
    assert len(ports) == 2, reports
    assert stable_port(db, sshd) in ports
    assert new_logins(sshd, before, 2) == 2


# --------------------------------------------------------- 6. nothing survives __exit__
def open_files() -> Counter[str]:
    """What this process's descriptors point at (files, ``socket:[inode]``, pipes...).

    Compared as a multiset, fd numbers aside: dbt keeps its last invocation's
    ``logs/dbt.log`` open (its file logger is replaced, and the old one
    released, only when the next invocation sets up logging), so that one
    file may come back under another number; a new socket never compares equal.
    """
    targets: Counter[str] = Counter()
    for entry in os.listdir("/proc/self/fd"):
        try:
            targets[os.readlink(f"/proc/self/fd/{entry}")] += 1
        except OSError:  # the listdir's own fd, closed meanwhile
            continue
    return targets


def test_nothing_survives_exit(
    db: PgDatabase, sshd: SshdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    # other test runs on this machine may create dbt_runner_* entries in the shared /tmp
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    settings = make_settings(db, sshd, tmp_path / "state")

    def full_session() -> tuple[list[str], set[threading.Thread], Counter[str]]:
        """Run a session; return the temp entries, threads and open files it had while open."""
        with DbtSession(settings) as session:
            ok(session.run_staging())
            ok(session.run_tests())
            return sorted(os.listdir(private_tmp)), set(threading.enumerate()), open_files()

    full_session()  # warm-up: dbt's own process-wide threads and handles, if any
    threads, files = set(threading.enumerate()), open_files()
    secrets_before = {k for k in os.environ if k.startswith("DBT_ENV_SECRET_")}

    tmp_during, threads_during, files_during = full_session()
    # what the checks below must see go away was really there while the session was open
    assert any(e.startswith("dbt_runner_profile_") for e in tmp_during), tmp_during
    assert threads_during - threads, "no tunnel thread while the session was open"
    assert any(t.startswith("socket:") for t in (files_during - files).elements())

    def new_threads() -> list[str]:
        return sorted(t.name for t in set(threading.enumerate()) - threads)

    assert wait_until(lambda: not new_threads(), timeout=10), new_threads()
    assert wait_until(lambda: open_files() == files, timeout=5), {
        "new": sorted((open_files() - files).elements()),
        "gone": sorted((files - open_files()).elements()),
    }
    assert [e for e in os.listdir(private_tmp) if e.startswith("dbt_runner_")] == []
    assert {k for k in os.environ if k.startswith("DBT_ENV_SECRET_")} == secrets_before
    # and the SSH connection is gone on the bastion's side too
    assert wait_until(lambda: sshd.connection_pids() == [], timeout=10), sshd.connection_pids()
