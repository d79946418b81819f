"""One writer per target, across processes: the warehouse-side writer lock.

Two ``delete+insert`` runs of one incremental model in overlapping
transactions duplicate rows (each DELETE's snapshot cannot see the other's
INSERT), and both report success. So commands that write staging
(``run_staging``, ``build_staging``, a cycle; ``invoke(..., writer_lock=True)``)
first take a lock for the target schema, held on a connection of its own for
the length of the command:

- **PostgreSQL**: ``pg_advisory_lock`` on a key derived from the schema, waiting
  at most ``DBT_RUNNER_LOCK_TIMEOUT_S`` (the server's ``lock_timeout``);
- **Redshift** (no advisory locks): ``LOCK`` on the table
  ``<schema>.dbt_runner_writer_lock`` (created on first use) in a transaction
  left open, waiting at most the same (``statement_timeout``);
- **DuckDB**: the database file's own lock, which DuckDB takes for the process
  that opens the file: the session opens it and keeps it open.

The lock connection goes through the session's tunnel like every connection.
A process that dies holding the lock loses it when its connection ends (the
server ends the session; DuckDB's lock goes with the process). A wait can be
cut short: a cancel or an interrupt of the waiting thread aborts it.

>>> key = advisory_key("staging")
>>> key == advisory_key("staging"), -(2**63) <= key < 2**63
(True, True)
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from typing import Any

from . import _signals
from ._classify import diagnose, text_of
from ._exceptions import ErrorKind
from ._results import ErrorInfo
from ._settings import ENV_PREFIX, Settings

__all__ = ["LOCK_TABLE", "WriterLock", "advisory_key"]

log = logging.getLogger("dbt_runner.lock")

#: the Redshift lock table, in the target schema
LOCK_TABLE = "dbt_runner_writer_lock"
_APPLICATION = "dbt_runner writer lock"
_SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
#: how often a DuckDB file held by another process is tried again while waiting
_DUCKDB_POLL_S = 0.1
#: a wait for the lock longer than this is logged (INFO) once
_SAY_WAITING_S = 1.0


def advisory_key(schema: str) -> int:
    """The PostgreSQL advisory-lock key of a target schema (a signed 64-bit integer)."""
    digest = hashlib.sha256(f"dbt_runner writer lock\0{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _ident(name: str) -> str:
    return name if _SIMPLE.match(name) else '"' + name.replace('"', '""') + '"'


class WriterLock:
    """The writer lock of one target; ``acquire`` then ``release`` (idempotent)."""

    def __init__(self, settings: Settings) -> None:
        """``settings``' warehouse is the target (:func:`~._warehouse.as_warehouse`); the
        lock connects to its host/port (through the session's tunnel by its route)."""
        self._settings = settings
        self._conn: Any = None
        self._lock = threading.Lock()
        #: True from a successful acquire until the session first relies on it: the
        #: connection that just took the lock needs no ``select 1`` to prove it alive
        self.fresh = False
        wh = settings.warehouse
        self.describe = (
            f"duckdb {wh.path}"
            if wh.type == "duckdb"
            else f"{wh.type} {wh.host}:{wh.effective_port}/{wh.dbname} schema {wh.schema}"
        )

    @property
    def settings(self) -> Settings:
        """The target's settings the lock connects with."""
        return self._settings

    def relogin(self, settings: Settings) -> None:
        """Connect with ``settings`` next time (a refreshed Redshift IAM login)."""
        self._settings = settings

    @property
    def held(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release`."""
        return self._conn is not None

    def acquire(self, timeout_s: float, abort: threading.Event) -> ErrorInfo | None:
        """Take the lock, waiting up to ``timeout_s``; None when held, else why not
        (kind ``locked`` when another run still holds it, ``cancelled`` when
        ``abort`` was set, or the connection's own failure)."""
        outcome: list[ErrorInfo | None] = []
        waiter = threading.Thread(
            target=lambda: outcome.append(self._acquire(timeout_s, abort)),
            name="dbt_runner-writer-lock",
            daemon=True,
        )
        t0 = time.monotonic()
        waiter.start()
        said = False
        try:
            while waiter.is_alive() and not abort.is_set():
                _signals.join(waiter, _signals.HANDLER_SLICE_S)
                if not said and waiter.is_alive() and time.monotonic() - t0 >= _SAY_WAITING_S:
                    said = True  # a long wait is visible progress, not silence
                    log.info(
                        "waiting for the writer lock (%s): another run holds it; up to %gs "
                        "(%sLOCK_TIMEOUT_S)",
                        self.describe,
                        timeout_s,
                        ENV_PREFIX,
                    )
        except BaseException:
            abort.set()  # the caller's interrupt: stop waiting on the server too
            self._interrupt()
            _signals.join(waiter, self._settings.warehouse.connect_timeout_s)
            self.release()
            raise
        if abort.is_set() and waiter.is_alive():
            self._interrupt()
            _signals.join(waiter, self._settings.warehouse.connect_timeout_s)
        if not outcome or abort.is_set():
            self.release()
            return ErrorInfo(ErrorKind.CANCELLED, "cancelled while waiting for the writer lock")
        if outcome[0] is None:
            log.info("writer lock taken (%s) after %.1fs", self.describe, time.monotonic() - t0)
        return outcome[0]

    def alive(self) -> bool:
        """True while the lock's connection still answers (the server still holds it)."""
        conn = self._conn
        if conn is None:
            return False
        if self._settings.warehouse.type == "duckdb":
            return True  # the lock is this process's own
        try:
            cursor = conn.cursor()
            cursor.execute("select 1")
            cursor.fetchone()
            return True
        except Exception:
            return False

    def release(self) -> None:
        """Give the lock back (close its connection); safe to call twice."""
        with self._lock:
            conn, self._conn = self._conn, None
        self.fresh = False
        if conn is None:
            return
        try:
            conn.close()  # the server releases an advisory lock / a LOCK with the session
        except Exception:
            log.debug("could not close the writer lock's connection", exc_info=True)
        log.debug("writer lock released (%s)", self.describe)

    # ------------------------------------------------------------------ per warehouse
    def _busy(self, timeout_s: float) -> ErrorInfo:
        return ErrorInfo(
            ErrorKind.LOCKED,
            f"another run holds the writer lock of {self.describe}; still held after "
            f"{timeout_s:g}s ({ENV_PREFIX}LOCK_TIMEOUT_S). Its connection ends it; "
            f"{ENV_PREFIX}LOCK__ON_BUSY=skip skips the run instead of failing",
        )

    def _acquire(self, timeout_s: float, abort: threading.Event) -> ErrorInfo | None:
        kind = self._settings.warehouse.type
        try:
            if kind == "duckdb":
                return self._acquire_duckdb(timeout_s, abort)
            from ._warehouse import connect

            conn = connect(self._settings, application_name=_APPLICATION)
            with self._lock:
                self._conn = conn
            if kind == "postgres":
                return self._acquire_postgres(conn, timeout_s)
            return self._acquire_redshift(conn, timeout_s)
        except Exception as exc:
            self.release()
            if abort.is_set():
                return ErrorInfo(ErrorKind.CANCELLED, "cancelled while waiting for the lock")
            verdict = diagnose(exc, default=ErrorKind.CONNECTION)
            if verdict.kind in (ErrorKind.CONFLICT, ErrorKind.TIMEOUT):  # the wait ran out
                return self._busy(timeout_s)
            fix = f"\nfix: {verdict.hint}" if verdict.hint else ""
            return ErrorInfo(
                verdict.kind,
                f"could not take the writer lock ({self.describe}): "
                f"{type(exc).__name__}: {text_of(exc)}{fix}",
            )

    def _acquire_postgres(self, conn: Any, timeout_s: float) -> ErrorInfo | None:
        key = advisory_key(self._settings.warehouse.schema)
        cursor = conn.cursor()
        if timeout_s <= 0:
            cursor.execute("select pg_try_advisory_lock(%s)", (key,))
            row = cursor.fetchone()
            return None if row and row[0] else self._busy(timeout_s)
        # one round trip: the SET and the wait (55P03 when it runs out) in one message.
        # The connection runs nothing else that waits on a lock, so the timeout stays.
        cursor.execute(
            f"set lock_timeout = {max(1, int(timeout_s * 1000))}; select pg_advisory_lock(%s)",
            (key,),
        )
        self.fresh = True
        return None

    def _acquire_redshift(self, conn: Any, timeout_s: float) -> ErrorInfo | None:
        schema = self._settings.warehouse.schema
        table = f"{_ident(schema)}.{LOCK_TABLE}"
        conn.autocommit = True
        cursor = conn.cursor()
        cursor.execute("select count(*) from pg_catalog.pg_namespace where nspname = %s", (schema,))
        row = cursor.fetchone()
        if not row or not row[0]:
            cursor.execute(f"create schema if not exists {_ident(schema)}")
        try:
            cursor.execute(f"create table if not exists {table} (holder varchar(256))")
        except Exception as exc:  # another process created it at the same moment
            if diagnose(exc).kind is not ErrorKind.CONFLICT:
                raise
        conn.autocommit = False
        cursor = conn.cursor()
        # the transaction stays open: the LOCK lasts until it ends (release: close)
        cursor.execute(f"set statement_timeout to {max(1, int(timeout_s * 1000))}")
        cursor.execute(f"lock {table}")  # 57014 (statement timeout) when it runs out
        cursor.execute("set statement_timeout to 0")
        self.fresh = True
        return None

    def _acquire_duckdb(self, timeout_s: float, abort: threading.Event) -> ErrorInfo | None:
        import duckdb

        path = str(self._settings.warehouse.path.expanduser().resolve())
        if path == ":memory:":
            return None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                conn = duckdb.connect(path)  # the process holds the file's lock from now on
            except duckdb.IOException as exc:
                if "lock" not in text_of(exc).lower():
                    raise
                if time.monotonic() >= deadline:
                    return self._busy(timeout_s)
                if _signals.wait(abort, _DUCKDB_POLL_S):
                    return ErrorInfo(ErrorKind.CANCELLED, "cancelled while waiting for the lock")
                continue
            with self._lock:
                self._conn = conn
            self.fresh = True
            return None

    def _interrupt(self) -> None:
        """End a wait on the server (psycopg2 cancels the statement; other drivers: close)."""
        conn = self._conn
        if conn is None:
            return
        try:
            cancel = getattr(conn, "cancel", None)
            if callable(cancel) and self._settings.warehouse.type == "postgres":
                cancel()
            else:
                conn.close()
        except Exception:
            log.debug("could not interrupt the writer lock's wait", exc_info=True)
