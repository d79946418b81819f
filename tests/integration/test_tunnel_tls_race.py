"""The tunnel must never drop a healthy SSH connection (issue 11).

Production-shaped conditions: PostgreSQL with SSL on (``sslmode=require``), a
real OpenSSH bastion, both cores busy, and many short-lived forwarded
connections opened and closed from several threads at once — the way dbt's
test phase uses the tunnel. Before the fix, sshtunnel's handler selected on
paramiko's ``Channel.fileno()`` pipe; closing that pipe raced with the
transport thread writing to it when the server's TLS ``close_notify`` arrived
just after the client's EOF, and the transport thread died with ``EBADF`` (or
wrote into a reused descriptor): every later connection failed with
``SSH session not active``.

Drops are counted from the tunnel itself: the SSH transport it opened must
still be the one it has, alive, after every connection; paramiko must not have
logged a socket error; no connection may fail.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dbt_runner._ssh.tunnel import Tunnel
from testbed.cpu_load import cpu_load
from testbed.pg_fixtures import PgDatabase
from testbed.sshd import SshdServer
from tests.integration.test_tunnel import settings

pytestmark = pytest.mark.integration

THREADS = 4
CONNECTIONS_PER_THREAD = 40
DEADLINE_S = 120.0


class _Errors(logging.Handler):
    """Collects ERROR records from paramiko and the tunnel."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def errors() -> Iterator[_Errors]:
    handler = _Errors()
    loggers = [logging.getLogger(name) for name in ("paramiko", "dbt_runner.tunnel")]
    for lg in loggers:
        lg.addHandler(handler)
    yield handler
    for lg in loggers:
        lg.removeHandler(handler)


def _short_connections(db: PgDatabase, port: int, count: int, deadline: float) -> list[str]:
    """Open, query over TLS and close ``count`` connections; the failures' messages."""
    import psycopg2

    failures: list[str] = []
    for i in range(count):
        if time.monotonic() > deadline:
            failures.append("deadline passed")
            break
        try:
            conn = psycopg2.connect(
                host="127.0.0.1",
                port=port,
                user=db.user,
                password=db.password,
                dbname=db.dbname,
                sslmode="require",
                connect_timeout=10,
            )
            try:
                assert conn.info.ssl_in_use
                with conn.cursor() as cur:
                    cur.execute("select %s", (i,))
                    assert cur.fetchone() == (i,)
            finally:
                conn.close()
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}".strip())
    return failures


def test_many_short_tls_connections_under_load_never_drop_the_tunnel(
    sshd: SshdServer, pg_db: PgDatabase, errors: _Errors
) -> None:
    accepted_before = sshd.accepted_connections()
    deadline = time.monotonic() + DEADLINE_S
    with (
        cpu_load(processes=2, max_s=DEADLINE_S),
        Tunnel(settings(sshd), pg_db.host, pg_db.port) as tunnel,
    ):
        transport: Any = tunnel._transport
        failures: list[str] = []
        lock = threading.Lock()

        def worker() -> None:
            got = _short_connections(pg_db, tunnel.local_port, CONNECTIONS_PER_THREAD, deadline)
            with lock:
                failures.extend(got)

        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE_S + 10)
        assert not any(t.is_alive() for t in threads)
        assert tunnel._transport is transport and transport.is_active(), "the SSH link dropped"
        assert tunnel.is_healthy()
    assert failures == [], f"{len(failures)} connections failed, first: {failures[:3]}"
    socket_errors = [r.getMessage() for r in errors.records]
    assert socket_errors == []
    assert sshd.accepted_connections() == accepted_before + 1  # one SSH connection, no re-open
