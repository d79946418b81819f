"""``_dbt.reuse.ConnectionPool`` against fake driver handles (its own seam).

What reaches a real PostgreSQL (the reset, the server's log, a killed connection,
Redshift) is in ``tests/integration/test_connection_reuse.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from dbt_runner._dbt.reuse import RESET_STATEMENT, ConnectionPool
from testbed.sshd import wait_until

READY, BEGIN = 1, 2  # psycopg2's connection.status
IDLE, INTRANS = 0, 2  # libpq's transaction status


@dataclass
class Handle:
    """A psycopg2 connection as the pool sees it."""

    autocommit: bool = False
    closed: int = 0
    status: int = READY
    transaction: int = IDLE
    fail: bool = False
    sent: list[tuple[str, bool]] = field(default_factory=list)

    def get_transaction_status(self) -> int:
        return self.transaction

    def rollback(self) -> None:
        self.sent.append(("ROLLBACK", self.autocommit))
        self.status, self.transaction = READY, IDLE

    def close(self) -> None:
        self.closed = 1

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Handle]:
        yield self

    def execute(self, sql: str) -> None:
        if self.fail:
            raise OSError("server closed the connection unexpectedly")
        self.sent.append((sql, self.autocommit))


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


def test_a_handle_dbt_closes_is_reset_and_handed_to_the_next_connection() -> None:
    pool = ConnectionPool(idle_s=60)
    handle = Handle()
    opened(pool, handle)
    assert pool.owns(handle)
    pool.give_back(handle)
    assert not handle.closed and pool.stats() == {"opened": 1, "reused": 0, "idle": 1}
    assert pool.take(Connection()) is handle
    # the reset ran outside a transaction; the handle is as dbt's adapter left it
    assert handle.sent == [(RESET_STATEMENT, True)] and handle.autocommit is False
    assert pool.stats() == {"opened": 1, "reused": 1, "idle": 0}
    assert pool.take(Connection()) is None  # one handle, one user at a time


def test_no_transaction_stays_open_on_a_kept_handle() -> None:
    pool = ConnectionPool(idle_s=60)
    inside = Handle(status=BEGIN, transaction=INTRANS)  # a statement without dbt's begin
    committed = Handle(status=BEGIN, transaction=IDLE)  # a COMMIT sent as a statement
    for handle in (inside, committed):
        opened(pool, handle)
        pool.give_back(handle)
        assert handle.sent == [("ROLLBACK", False)]
        assert (handle.status, handle.transaction) == (READY, IDLE)
    assert pool.stats()["idle"] == 2


def test_a_handle_that_fails_its_reset_is_closed_and_dbt_opens_a_new_one() -> None:
    pool = ConnectionPool(idle_s=60)
    dead, alive = Handle(), Handle()
    for handle in (alive, dead):
        opened(pool, handle)
        pool.give_back(handle)
    dead.fail = True
    assert pool.take(Connection()) is alive  # the newest first: dead, closed; then alive
    assert dead.closed
    assert pool.take(Connection()) is None


def test_only_the_same_credentials_get_a_handle() -> None:
    pool = ConnectionPool(idle_s=60)
    handle = Handle()
    opened(pool, handle)
    pool.give_back(handle)
    assert pool.take(Connection(credentials=Credentials(host="other"))) is None
    assert pool.take(Connection()) is handle


@pytest.mark.parametrize(
    "connection",
    [Connection(type="redshift"), Connection(credentials=Credentials(role="loader"))],
    ids=["redshift", "role"],
)
def test_redshift_and_a_profile_with_a_role_are_not_kept(connection: Connection) -> None:
    pool = ConnectionPool(idle_s=60)
    connection._handle = Handle()
    pool.adopt(connection)
    assert not pool.owns(connection._handle)
    assert pool.key(connection) is None


def test_a_cancel_closes_the_idle_and_keeps_nothing_until_the_next_attempt() -> None:
    pool = ConnectionPool(idle_s=60)
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
    opened(pool, again)
    pool.give_back(again)
    assert pool.take(Connection()) is again


def test_idle_handles_close_after_idle_s_and_with_the_session() -> None:
    pool = ConnectionPool(idle_s=0.2)
    first = Handle()
    opened(pool, first)
    pool.give_back(first)
    pool.park()
    assert wait_until(lambda: bool(first.closed), timeout=10)
    pool.resume()
    second = Handle()
    opened(pool, second)
    pool.give_back(second)
    pool.close()
    assert second.closed
    third = Handle()
    opened(pool, third)  # a closed pool keeps nothing
    assert not pool.owns(third)
