"""``_dbt.reuse.ConnectionPool`` against fake driver handles (its own seam).

What reaches a real PostgreSQL (the reset, the server's log, a killed connection,
Redshift) is in ``tests/integration/test_connection_reuse.py``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from dbt_runner._dbt.reuse import RESET_IN_TRANSACTION, RESET_STATEMENT, ConnectionPool
from testbed.sshd import wait_until

READY, BEGIN = 1, 2  # psycopg2's connection.status
IDLE, INTRANS = 0, 2  # libpq's transaction status


@dataclass
class Handle:
    """A psycopg2 connection as the pool sees it: psycopg2's own view of the transaction
    (``status``) and the server's (``transaction``), which a COMMIT or ROLLBACK sent as a
    statement sets apart."""

    autocommit: bool = False
    closed: int = 0
    status: int = READY
    transaction: int = IDLE
    #: the next statement fails: "lost" (the connection ends) or "refused" (an error)
    fail: str = ""
    sent: list[tuple[str, bool]] = field(default_factory=list)

    def get_transaction_status(self) -> int:
        return self.transaction

    def rollback(self) -> None:
        if self.status == BEGIN:
            self.sent.append(("ROLLBACK", self.autocommit))
        self.status, self.transaction = READY, IDLE

    def close(self) -> None:
        self.closed = 1

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Handle]:
        yield self

    def execute(self, sql: str) -> None:
        if self.fail == "lost":
            self.closed = 2
            raise OSError("server closed the connection unexpectedly")
        if self.fail == "refused":
            raise OSError('syntax error at or near "DISCARD"')
        if not self.autocommit and self.status == READY:
            self.sent.append(("BEGIN", False))  # psycopg2's own
            self.status, self.transaction = BEGIN, INTRANS
        self.sent.append((sql, self.autocommit))
        if sql in ("ROLLBACK", "COMMIT"):
            self.transaction = IDLE  # psycopg2 does not notice
        elif sql == RESET_IN_TRANSACTION:
            self.transaction = INTRANS


@dataclass
class Credentials:
    host: str = "db"
    role: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "role": self.role, "password": "s3cret"}


@dataclass
class Connection:
    """dbt's Connection: its type, credentials and driver handle."""

    _handle: Any = None
    type: str = "postgres"
    credentials: Credentials = field(default_factory=Credentials)


def opened(pool: ConnectionPool, handle: Handle, **kw: Any) -> Connection:
    """dbt opened ``handle`` under ``pool``."""
    connection = Connection(handle, **kw)
    pool.adopt(connection)
    return connection


def kept(pool: ConnectionPool, *handles: Handle) -> None:
    """dbt opened ``handles`` and closed them, in this order."""
    for handle in handles:
        opened(pool, handle)
        pool.give_back(handle)


def test_an_idle_handle_is_reset_outside_a_transaction_before_reuse() -> None:
    pool = ConnectionPool()
    handle = Handle()
    opened(pool, handle)
    assert pool.owns(handle)
    pool.give_back(handle)
    assert not handle.closed and pool.stats() == {"opened": 1, "reused": 0, "idle": 1}
    assert pool.take(Connection()) is handle
    # DISCARD ALL cannot run in a transaction; the handle is as dbt's adapter left it
    assert handle.sent == [(RESET_STATEMENT, True)] and handle.autocommit is False
    assert pool.stats() == {"opened": 1, "reused": 1, "idle": 0}
    assert pool.take(Connection()) is None  # one handle, one user at a time


def test_after_dbt_s_commit_the_reset_begins_the_transaction_psycopg2_believes_in() -> None:
    """dbt ended the node with COMMIT as a statement: psycopg2 still believes in its
    transaction. The reset comes in one message that ends inside a new transaction, in
    which the next node's first statement runs (no BEGIN of psycopg2's own)."""
    pool = ConnectionPool()
    handle = Handle()
    opened(pool, handle)
    handle.execute("COMMIT")  # the node's last statement
    handle.sent.clear()
    pool.give_back(handle)
    assert handle.sent == []  # nothing to roll back: the server is idle
    assert pool.take(Connection()) is handle
    handle.execute("select 1")
    assert handle.sent == [(RESET_IN_TRANSACTION, False), ("select 1", False)]
    assert (handle.status, handle.transaction) == (BEGIN, INTRANS)


def test_no_transaction_stays_open_on_a_kept_handle() -> None:
    pool = ConnectionPool()
    handle = Handle(status=BEGIN, transaction=INTRANS)  # a statement without dbt's begin
    kept(pool, handle)
    assert handle.sent == [("ROLLBACK", False)] and handle.transaction == IDLE
    assert pool.stats()["idle"] == 1


def test_a_handle_whose_connection_is_gone_is_closed_and_dbt_opens_a_new_one() -> None:
    pool = ConnectionPool()
    dead, alive = Handle(), Handle()
    kept(pool, alive, dead)
    dead.fail = "lost"
    assert pool.take(Connection()) is alive  # the newest first: dead, closed; then alive
    assert dead.closed
    assert pool.take(Connection()) is None


def test_a_server_that_refuses_the_reset_ends_reuse_for_the_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that speaks PostgreSQL's protocol without DISCARD: said once, then every
    connection is dbt's own again."""
    pool = ConnectionPool()
    other, refusing = Handle(), Handle()
    kept(pool, other, refusing)
    refusing.fail = "refused"
    assert pool.take(Connection()) is None
    assert refusing.closed and other.closed
    assert "not reusing warehouse connections any more" in caplog.text
    again = Handle()
    opened(pool, again)
    assert not pool.owns(again)


def test_a_node_waits_for_the_handle_another_node_is_handing_back() -> None:
    """Thread B needs a connection while thread A's node is rolling back its own: B gets
    A's (one round trip) instead of opening a new one."""
    pool = ConnectionPool()
    handle = Handle()
    opened(pool, handle)
    pool.returning(handle)  # dbt began to close it
    got: list[Any] = []
    taker = threading.Thread(target=lambda: got.append(pool.take(Connection())))
    taker.start()
    # it waits (on the pool's condition), it does not return None to open a new one
    assert wait_until(lambda: len(pool._back._waiters) == 1, timeout=10)
    assert got == []
    pool.give_back(handle)
    taker.join(10)
    assert got == [handle]


def test_a_wait_for_a_handle_ends_with_a_cancel() -> None:
    pool = ConnectionPool()
    handle = Handle()
    opened(pool, handle)
    pool.returning(handle)
    got: list[Any] = []
    taker = threading.Thread(target=lambda: got.append(pool.take(Connection())))
    taker.start()
    assert wait_until(lambda: len(pool._back._waiters) == 1, timeout=10)
    pool.suspend()
    taker.join(10)
    assert got == [None]  # dbt opens its own, as after any cancel


def test_only_the_same_credentials_get_a_handle() -> None:
    pool = ConnectionPool()
    handle = Handle()
    kept(pool, handle)
    assert pool.take(Connection(credentials=Credentials(host="other"))) is None
    assert pool.take(Connection()) is handle


@pytest.mark.parametrize(
    "connection",
    [Connection(type="redshift"), Connection(credentials=Credentials(role="loader"))],
    ids=["redshift", "role"],
)
def test_redshift_and_a_profile_with_a_role_are_not_kept(connection: Connection) -> None:
    pool = ConnectionPool()
    connection._handle = Handle()
    pool.adopt(connection)
    assert not pool.owns(connection._handle)
    assert pool.key(connection) is None


def test_a_cancel_closes_the_idle_and_keeps_nothing_until_the_next_attempt() -> None:
    pool = ConnectionPool()
    idle, busy = Handle(), Handle()
    opened(pool, idle)
    opened(pool, busy)
    pool.give_back(idle)
    pool.suspend()
    assert idle.closed
    pool.give_back(busy)  # a node that ends after the cancel: its handle is closed
    assert busy.closed
    assert pool.take(Connection()) is None
    pool.resume()
    again = Handle()
    kept(pool, again)
    assert pool.take(Connection()) is again


def test_a_command_s_kept_handles_close_when_it_ends() -> None:
    pool = ConnectionPool()  # scope="command": dbt's own reuse, within one command
    handle = Handle()
    kept(pool, handle)
    pool.park()
    assert handle.closed
    assert pool.take(Connection()) is None


def test_across_commands_idle_handles_close_after_idle_s_and_with_the_session() -> None:
    pool = ConnectionPool("session", idle_s=1.0)
    first = Handle()
    kept(pool, first)
    pool.park()
    assert not first.closed  # kept for the next command...
    assert wait_until(lambda: bool(first.closed), timeout=10)  # ...until idle_s unused
    pool.resume()
    second = Handle()
    kept(pool, second)
    pool.park()
    pool.close()
    assert second.closed
    third = Handle()
    opened(pool, third)  # a closed pool keeps nothing
    assert not pool.owns(third)
