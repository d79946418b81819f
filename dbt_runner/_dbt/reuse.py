"""Reusing dbt's PostgreSQL connections within a session, each reset to a fresh session.

Plain dbt opens a warehouse connection per node (and per step of a command: the
relation cache, the ``master`` connection of the run hooks) and closes it when the
node ends: ``BaseConnectionManager.release`` says *"always close the connection"*,
and ``adapter_management`` (``dbt/cli/requires.py``) closes whatever is left when a
command ends. Opening one is several round trips (TCP, TLS, authentication; through
a bastion an SSH channel first). dbt-core itself is built to let a connection outlive
its node: ``set_connection_name`` hands a thread's open connection to the next name
(dbt's ``ConnectionReused`` event), and dbt-snowflake's ``reuse_connections`` (its
default) makes ``release`` keep the connection until the command ends.

A :class:`ConnectionPool` keeps the driver handles dbt closes and gives them to the
next connection dbt opens with the same credentials, in any thread. By default only
within one command, as dbt's own reuse (``scope="command"``): when the command ends
the pool closes what it kept, and the next command logs in anew, so what the server
decides at login — a role's or database's settings (``ALTER ROLE ... SET
lock_timeout``), its connection limit, a revoked login, ``pg_hba.conf`` — reaches each
command as it reaches plain dbt's. ``scope="session"`` also keeps them for the next
commands (closed after ``idle_s`` unused): fewer opens, but a command may then run on
sessions that logged in before such a change. What a node finds is what a new
connection gives it:

* **no transaction crosses a node**: dbt's own ``close`` rolls back the transaction
  it knows of; a handle still inside one (a statement sent without dbt's
  ``begin``) is rolled back when it comes back, before it is kept;
* **a fresh session's state**: before a kept handle is handed out again it is
  reset with PostgreSQL's ``DISCARD ALL`` (the documented "reset a session to its
  initial state": temporary tables, ``SET``/``SET ROLE``/session authorization back
  to the connection's defaults, prepared statements, cursors, ``LISTEN``, advisory
  locks, sequence state, cached plans). Connection-time settings are defaults, so
  the profile's ``search_path`` and ``application_name`` stay;
* **never a broken connection**: the reset is also the proof the connection is
  alive; a handle that fails it is closed and dbt opens a new connection, as it
  would have anyway. The session empties the pool when a command ends (or, across
  commands, after ``idle_s`` without use), when its tunnel re-opens, when an
  invocation is cancelled (:meth:`ConnectionPool.suspend`: idle connections are
  closed, none is kept or handed out until the next attempt), and when it closes.

**The reset costs no statement.** psycopg2 (not autocommit, dbt-postgres' default)
sends a ``BEGIN`` before the first statement of every transaction. dbt ends a node
with ``COMMIT`` or ``ROLLBACK`` sent as statements, which psycopg2 does not notice:
it goes on believing in its transaction, and would send the next statements without
a ``BEGIN``. A kept handle in that state gets :data:`RESET_IN_TRANSACTION` as one
message: ``DISCARD ALL``'s documented equivalent inside a transaction of its own,
committed, then the ``BEGIN`` of the transaction psycopg2 believes in, which the
node's first statement then runs in, exactly where a new connection's ``BEGIN``
would have put it. Every other kept handle (idle as psycopg2 sees it, or
autocommit) gets :data:`RESET_STATEMENT` before psycopg2's own ``BEGIN``: one
statement more than a new connection, where it saves the connection's opening.

Only ``postgres`` connections are kept. A profile with ``role`` is not pooled:
dbt-postgres sets it with ``set role`` after connecting, which ``DISCARD ALL``
undoes. dbt-redshift's connections are not pooled either: Amazon Redshift has no
``DISCARD`` (its ``RESET`` covers parameters, not the temporary tables a session
keeps until it ends), so a reused Redshift connection could not be shown to be fresh.

The hooks (:data:`HOOK_POINTS`) do nothing unless a pool is active (:func:`pooled`),
which a session makes only around its own dbt invocations.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["HOOK_POINTS", "ConnectionPool", "install_hooks", "pooled"]

log = logging.getLogger("dbt_runner.session")

#: (module, class, attribute) of every dbt internal the reuse hooks wrap
HOOK_POINTS: tuple[tuple[str, str, str], ...] = (
    ("dbt.adapters.contracts.connection", "LazyHandle", "resolve"),
    ("dbt.adapters.base.connections", "BaseConnectionManager", "close"),
)

#: the statement that makes a kept connection a fresh session again (PostgreSQL); it
#: cannot run inside a transaction block
RESET_STATEMENT = "DISCARD ALL"
#: the same reset in a transaction of its own (PostgreSQL documents DISCARD ALL as
#: equivalent to these nine statements), then the transaction the node runs in
RESET_IN_TRANSACTION = (
    "BEGIN; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; "
    "UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; "
    "DISCARD SEQUENCES; COMMIT; BEGIN"
)
#: connection types whose handles are kept, and the reason the others are not
_POOLED_TYPES = frozenset({"postgres"})
_NOT_POOLED = {
    "redshift": "Amazon Redshift has no DISCARD: a session's temporary tables cannot be "
    "reset, so each node gets a new connection as in plain dbt",
}
#: how long a connection dbt wants waits for one another node is handing back (its
#: rollback: one round trip) before it opens a new one
RETURN_WAIT_S = 5.0
#: libpq's PQtransactionStatus values (psycopg2.extensions.TRANSACTION_STATUS_*)
_IDLE, _INTRANS, _INERROR = 0, 2, 3
#: psycopg2's own view (psycopg2.extensions.STATUS_READY): outside a transaction
_READY = 1

#: the pool of the invocation running in this process (one at a time, as dbt-core runs)
_ACTIVE: ConnectionPool | None = None
_INSTALL_LOCK = threading.Lock()
_installed = False


@dataclass
class _Kept:
    key: str
    handle: Any
    #: the handle's ``autocommit`` as dbt's adapter left it after opening
    autocommit: bool
    idle_since: float = 0.0
    #: dbt is closing it (:meth:`ConnectionPool.returning`): a node may wait for it
    returning: bool = False


class ConnectionPool:
    """The reusable PostgreSQL connections of one session (thread-safe).

    >>> pool = ConnectionPool(scope="command")
    >>> pool.stats()
    {'opened': 0, 'reused': 0, 'idle': 0}
    """

    def __init__(self, scope: str = "command", idle_s: float = 60.0) -> None:
        """``scope``: ``"command"`` (closed when each command ends) or ``"session"``
        (kept for the next commands, closed after ``idle_s`` unused)."""
        if scope not in ("command", "session"):
            raise ValueError(f"scope must be 'command' or 'session', got {scope!r}")
        self.scope = scope
        self.idle_s = idle_s
        self._lock = threading.Lock()
        #: notified when a handle dbt closes is back (kept or closed)
        self._back = threading.Condition(self._lock)
        self._idle: list[_Kept] = []
        #: credentials key -> handles on their way back (dbt's close runs their rollback)
        self._returning: dict[str, int] = {}
        #: id(handle) -> what dbt holds now (opened or handed out under this pool)
        self._out: dict[int, _Kept] = {}
        self._suspended = False
        self._closed = False
        self._timer: threading.Timer | None = None
        self._pid = os.getpid()
        self._said: set[str] = set()
        self.opened = 0
        self.reused = 0

    def stats(self) -> dict[str, int]:
        """Connections dbt opened and reused under this pool, and how many wait idle."""
        with self._lock:
            return {"opened": self.opened, "reused": self.reused, "idle": len(self._idle)}

    # ------------------------------------------------------------------ dbt's side
    def key(self, connection: Any) -> str | None:
        """The credentials' fingerprint when ``connection`` may be pooled, else None."""
        kind = str(getattr(connection, "type", ""))
        if kind not in _POOLED_TYPES:
            self._say_once(kind, _NOT_POOLED.get(kind))
            return None
        credentials = connection.credentials
        if getattr(credentials, "role", None):
            self._say_once(
                "role",
                "the profile sets a role on connect (dbt-postgres: set role), which "
                "DISCARD ALL would undo: each node gets a new connection as in plain dbt",
            )
            return None
        try:
            described = json.dumps(credentials.to_dict(), sort_keys=True, default=str)
        except Exception:  # credentials dbt can no longer describe: do not guess
            return None
        # a digest: the password is part of the credentials and stays out of memory dumps
        digest = hashlib.sha256(f"{kind}\0{os.getpid()}\0{described}".encode()).hexdigest()
        return digest

    def take(self, connection: Any) -> Any | None:
        """A kept handle for ``connection``'s credentials, reset to a fresh session; None
        when there is none (dbt opens a new connection)."""
        key = self.key(connection)
        if key is None:
            return None
        deadline = time.monotonic() + RETURN_WAIT_S
        while True:
            with self._lock:
                kept = self._idle_for(key)
                # a node that just ended hands its connection back in a round trip: cheaper
                # to wait for it than to open one
                while kept is None and self._returning.get(key) and self._accepting():
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._back.wait(left):
                        break
                    kept = self._idle_for(key)
                if kept is None or not self._accepting():
                    return None
                self._idle.remove(kept)
            outcome = _reset(kept)
            if outcome == "fresh":
                with self._lock:
                    self._out[id(kept.handle)] = kept
                    self.reused += 1
                return kept.handle
            if outcome == "refused":  # a server that speaks PostgreSQL but has no DISCARD
                self._refuse("the server refused the session reset before a reuse")

    def _idle_for(self, key: str) -> _Kept | None:
        """The newest idle handle for ``key`` (under the lock)."""
        return next((k for k in reversed(self._idle) if k.key == key), None)

    def adopt(self, connection: Any) -> None:
        """dbt opened ``connection`` under this pool: its handle may be kept later."""
        key = self.key(connection)
        handle = getattr(connection, "_handle", None)
        if key is None or handle is None:
            return
        with self._lock:
            if not self._accepting():
                return
            autocommit = bool(getattr(handle, "autocommit", False))
            self._out[id(handle)] = _Kept(key, handle, autocommit)
            self.opened += 1

    def owns(self, handle: Any) -> bool:
        """True when ``handle`` is one this pool may keep."""
        with self._lock:
            return id(handle) in self._out

    def returning(self, handle: Any) -> None:
        """dbt begins to close ``handle`` (one :meth:`owns`): :meth:`give_back` follows."""
        with self._lock:
            kept = self._out.get(id(handle))
            if kept is not None and not kept.returning:
                kept.returning = True
                self._returning[kept.key] = self._returning.get(kept.key, 0) + 1

    def give_back(self, handle: Any) -> None:
        """dbt closes ``handle`` (one :meth:`owns`): keep it idle, rolled back, or close it."""
        with self._lock:
            kept = self._out.pop(id(handle), None)
            accepting = self._accepting()
        if kept is None:
            return
        try:
            if accepting and _rolled_back(handle):
                kept.idle_since = time.monotonic()
                with self._lock:
                    if self._accepting():
                        self._idle.append(kept)
                        return
            _close(handle)
        finally:
            with self._lock:
                if kept.returning:
                    kept.returning = False
                    self._returning[kept.key] -= 1
                self._back.notify_all()

    # ------------------------------------------------------------------ the session's side
    def suspend(self) -> None:
        """A cancel: close the idle connections; keep and hand out none until :meth:`resume`."""
        with self._lock:
            self._suspended = True
            self._back.notify_all()
        self._close_idle()

    def resume(self) -> None:
        """An attempt begins: connections may be kept and reused again."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._suspended = False

    def park(self) -> None:
        """A command ended: close what it kept (``scope="command"``), or what stays idle for
        ``idle_s`` from now (``"session"``)."""
        if self.scope == "command":
            self._close_idle()
            return
        with self._lock:
            if self._closed or not self._idle:
                return
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.idle_s, self._expire)
            self._timer.name = "dbt_runner-idle-connections"
            self._timer.daemon = True
            self._timer.start()

    def clear(self) -> None:
        """Close the idle connections (the tunnel re-opened: they are gone)."""
        self._close_idle()

    def close(self) -> None:
        """The session closes: close every idle connection; keep none from now on."""
        with self._lock:
            self._closed = True
            self._back.notify_all()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self._close_idle()

    # ------------------------------------------------------------------ internals
    def _accepting(self) -> bool:
        return not (self._suspended or self._closed) and os.getpid() == self._pid

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.idle_s
        self._close_idle(lambda kept: kept.idle_since <= cutoff)

    def _close_idle(self, which: Callable[[_Kept], bool] = lambda kept: True) -> None:
        with self._lock:
            closing = [k for k in self._idle if which(k)]
            self._idle = [k for k in self._idle if not which(k)]
            # handles dbt closed itself, outside an invocation (after a cancel): forgotten
            self._out = {i: k for i, k in self._out.items() if not getattr(k.handle, "closed", 1)}
        for kept in closing:
            _close(kept.handle)
        if closing:
            log.debug("closed %d idle warehouse connection(s)", len(closing))

    def _refuse(self, why: str) -> None:
        """Keep nothing more in this session (a server without DISCARD: not PostgreSQL)."""
        with self._lock:
            self._closed = True
            self._back.notify_all()
        log.warning("not reusing warehouse connections any more: %s", why)
        self._close_idle()

    def _say_once(self, what: str, why: str | None) -> None:
        if why is None or what in self._said:
            return
        self._said.add(what)
        log.info("not reusing warehouse connections: %s", why)


def _reset(kept: _Kept) -> str:
    """Reset a kept handle to a fresh session (see the module doc): ``"fresh"``, else the
    handle is closed and this says why: ``"lost"`` (the connection is gone) or
    ``"refused"`` (the server answered the reset with an error)."""
    handle = kept.handle
    try:
        if getattr(handle, "closed", 0):
            return "lost"
        if not kept.autocommit and handle.status != _READY:
            # psycopg2 believes in a transaction the server ended: reset, then begin it
            with handle.cursor() as cursor:
                cursor.execute(RESET_IN_TRANSACTION)
            expected = _INTRANS
        else:
            handle.autocommit = True  # DISCARD ALL cannot run inside a transaction block
            with handle.cursor() as cursor:
                cursor.execute(RESET_STATEMENT)
            handle.autocommit = kept.autocommit
            expected = _IDLE
        if handle.get_transaction_status() == expected:
            return "fresh"
        outcome = "refused"
    except Exception as exc:
        log.debug("a kept warehouse connection failed its reset (%s): closed", exc)
        outcome = "lost" if getattr(handle, "closed", 1) else "refused"
    _close(handle)
    return outcome


def _rolled_back(handle: Any) -> bool:
    """True when ``handle`` is outside any transaction on the server, rolled back if it was
    inside one dbt did not know of (psycopg2's own view may still be "in a transaction":
    :func:`_reset` deals with that)."""
    try:
        if getattr(handle, "closed", 0):
            return False
        status = handle.get_transaction_status()
        if status in (_INTRANS, _INERROR) and handle.status != _READY and not handle.autocommit:
            with handle.cursor() as cursor:
                cursor.execute("ROLLBACK")
            status = handle.get_transaction_status()
        return bool(status == _IDLE)
    except Exception:
        return False


def _close(handle: Any) -> None:
    with contextlib.suppress(Exception):
        handle.close()


@contextlib.contextmanager
def pooled(pool: ConnectionPool | None) -> Iterator[None]:
    """dbt opens and closes its connections through ``pool`` inside the block (no pool:
    dbt's own behaviour). Installs the hooks on first use."""
    global _ACTIVE
    if pool is None:
        yield
        return
    install_hooks()
    _ACTIVE = pool
    try:
        yield
    finally:
        _ACTIVE = None


# ---------------------------------------------------------------------- the hooks
def install_hooks() -> None:
    """Wrap dbt's hook points (idempotent); each wrapper passes through without a pool."""
    global _installed
    with _INSTALL_LOCK:
        if _installed:
            return
        from dbt.adapters.base.connections import BaseConnectionManager
        from dbt.adapters.contracts.connection import LazyHandle

        original = LazyHandle.__dict__["resolve"]
        resolve = _resolve(original)
        functools.update_wrapper(resolve, original)
        resolve.__dbt_runner_original__ = original
        setattr(LazyHandle, "resolve", resolve)  # noqa: B010 - a dbt method, replaced

        closer = BaseConnectionManager.__dict__["close"]
        close = _close_connection(closer.__func__)
        functools.update_wrapper(close, closer.__func__)
        close.__dbt_runner_original__ = closer
        setattr(BaseConnectionManager, "close", classmethod(close))  # noqa: B010
        _installed = True


def _resolve(original: Any) -> Any:
    def resolve(self: Any, connection: Any) -> Any:
        pool = _ACTIVE
        if pool is None:
            return original(self, connection)
        opener = self.opener

        def open_or_reuse(conn: Any) -> Any:
            handle = pool.take(conn)
            if handle is None:
                opened = opener(conn)
                pool.adopt(conn)
                return opened
            from dbt.adapters.contracts.connection import ConnectionState

            conn.handle = handle
            conn.state = ConnectionState.OPEN
            return conn

        # dbt's own resolve (its NewConnectionOpening event, the cancel hook), our opener
        return original(type(self)(open_or_reuse), connection)

    return resolve


class _Returning:
    """The handle dbt sees while it closes a kept connection: its rollback is the same
    ``ROLLBACK`` statement (psycopg2 keeps believing in its transaction: see the module
    doc), its close gives the real handle back to the pool. Closed afterwards."""

    closed = 1

    def __init__(self, pool: ConnectionPool, handle: Any) -> None:
        self._pool: ConnectionPool | None = pool
        self._handle = handle

    def rollback(self) -> None:
        handle = self._handle
        if handle.autocommit or handle.status == _READY:
            handle.rollback()  # nothing psycopg2 would send differently
            return
        with handle.cursor() as cursor:
            cursor.execute("ROLLBACK")

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.give_back(self._handle)


def _close_connection(original: Any) -> Any:
    def close(cls: Any, connection: Any) -> Any:
        pool = _ACTIVE
        handle = getattr(connection, "_handle", None)
        if pool is None or handle is None or not pool.owns(handle):
            return original(cls, connection)
        # dbt's own close (its Rollback and ConnectionClosed events) on the stand-in
        pool.returning(handle)
        stand_in = _Returning(pool, handle)
        connection.handle = stand_in
        try:
            return original(cls, connection)
        finally:
            stand_in.close()  # given back once, whatever dbt's close did

    return close
