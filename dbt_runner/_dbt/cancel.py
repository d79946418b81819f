"""Stopping a running dbt invocation from outside, in dbt's own sequence.

dbt stops a run on Ctrl-C like this (``GraphRunnableTask.execute_nodes``): the
``KeyboardInterrupt`` reaches its main thread while it hands nodes to its
thread pool; it writes ``run_results.json`` with the nodes that ended, closes
the pool, cancels the open connections on the server
(``_cancel_connections``: ``adapter.connection_named("master")`` then
``adapter.cancel_open_connections()``, only if ``adapter.is_cancelable()``;
PostgreSQL and Redshift terminate the backends, DuckDB interrupts the query),
waits for the pool and re-raises. dbt gets that interrupt only from a signal
in the main thread. A :class:`Cancellation` gets dbt there from any thread:

1. :meth:`Cancellation.request` marks the invocation cancelled and puts
   :class:`Stop` (a ``KeyboardInterrupt``) on dbt's "next tick"
   (``_raise_next_tick``, which its main thread raises before it hands out
   the next node and after the last one ended), so no further node starts;
2. :func:`cancel_on_server` then runs dbt's cancel sequence from the calling
   thread (exactly what ``_cancel_connections`` does, for every adapter of the
   process): the running statements end, their nodes end, dbt's main thread
   wakes, raises :class:`Stop` and goes through its own Ctrl-C path above.

Hooks close the windows that sequence leaves open (dbt's own Ctrl-C has them
too), each checking the mark under the cancellation's lock: a statement about
to be sent (``SQLConnectionManager.add_query``) and a connection just opened
(``LazyHandle.resolve``) are refused after the cancel, so no statement starts
after the cancel pass (which kills every connection that was open when it
began) — except the cancel statements themselves. And a node whose COMMIT
began before the cancel (``SQLConnectionManager.commit``) is left alone by the
cancel pass and by the guards: it committed, it finishes its clean-up, and it
is reported as it ended; a COMMIT asked for after the cancel is refused (the
node rolls back). For that, while one of our invocations is cancelled, dbt's
``_cancel_connections`` runs this module's pass instead of
``cancel_open_connections`` (the same statements, minus the committed). DuckDB's
interrupt only ends a statement that is running: one that begins in the
instant between the check and the interrupt runs to its end (it is local, and
reported as it ended).

The hooks are installed once, on first use, and do nothing unless an
invocation of ours runs under :func:`active`. :data:`HOOK_POINTS` names every
dbt internal used here; a test checks that each exists in the installed dbt.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

from .adapters import adapters, is_cancelable

__all__ = [
    "HOOK_POINTS",
    "Cancellation",
    "Stop",
    "active",
    "cancel_on_server",
    "install_hooks",
]

log = logging.getLogger("dbt_runner.session")

#: (module, class, attribute) of every dbt internal the hooks wrap or set
HOOK_POINTS: tuple[tuple[str, str, str], ...] = (
    ("dbt.task.runnable", "GraphRunnableTask", "run_queue"),
    ("dbt.task.runnable", "GraphRunnableTask", "_cancel_connections"),
    ("dbt.task.runnable", "GraphRunnableTask", "_raise_set_error"),
    ("dbt.adapters.sql.connections", "SQLConnectionManager", "add_query"),
    ("dbt.adapters.sql.connections", "SQLConnectionManager", "commit"),
    ("dbt.adapters.sql.connections", "SQLConnectionManager", "cancel"),
    ("dbt.adapters.contracts.connection", "LazyHandle", "resolve"),
)


class Stop(KeyboardInterrupt):
    """Raised in dbt's main thread to stop a cancelled invocation (dbt's Ctrl-C path)."""


class Cancelled(Exception):
    """Marker base of the error a statement gets when it would start after a cancel."""


@functools.lru_cache(maxsize=1)
def _cancelled_statement() -> type[Exception]:
    """A dbt runtime error (dbt reports it as the node's error) that is also :class:`Cancelled`."""
    from dbt_common.exceptions import DbtRuntimeError

    class CancelledStatement(DbtRuntimeError, Cancelled):
        """A statement that would have started after the cancel."""

    return CancelledStatement


def _cancelled_error(reason: str) -> Exception:
    return _cancelled_statement()(f"not started: the invocation was cancelled ({reason})")


class Cancellation:
    """The cancel state of one dbt invocation (thread-safe; one per attempt).

    >>> c = Cancellation()
    >>> c.requested, c.request("timeout"), c.request("again"), c.reason
    (False, True, False, 'timeout')
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.reason: str | None = None
        #: ``time.monotonic()`` when the cancel was requested
        self.requested_at: float | None = None
        self._tasks: list[Any] = []
        #: ``(unique_id, name, resource_type)`` of the nodes dbt selected (graph commands)
        self.selected: list[tuple[str, str, str]] = []
        #: connection names (dbt names a node's connection by its unique_id) whose COMMIT
        #: began before the cancel: left to finish
        self.committed: set[str] = set()

    @property
    def requested(self) -> bool:
        """True once :meth:`request` was called."""
        return self.reason is not None

    def request(self, reason: str) -> bool:
        """Mark cancelled and stop dbt handing out nodes; True the first time."""
        with self._lock:
            if self.reason is not None:
                return False
            self.reason = reason
            self.requested_at = time.monotonic()
            for task in self._tasks:
                task._raise_next_tick = Stop(reason)
            return True

    def check(self, connection: str | None = None) -> None:
        """Raise the statement's cancel error if cancelled (under the lock: see module doc);
        a connection that committed before the cancel passes."""
        if getattr(_EXEMPT, "depth", 0):
            return
        with self._lock:
            if self.reason is not None and connection not in self.committed:
                raise _cancelled_error(self.reason)

    def begin_commit(self, connection: str | None) -> None:
        """A COMMIT is about to be sent on ``connection``: refused after the cancel, else
        marked so that the cancel pass leaves it alone (atomic with :meth:`request`)."""
        if getattr(_EXEMPT, "depth", 0):
            return
        with self._lock:
            if self.reason is not None and connection not in self.committed:
                raise _cancelled_error(self.reason)
            if connection is not None:
                self.committed.add(connection)

    def _attach(self, task: Any) -> None:
        with self._lock:
            self._tasks.append(task)
            nodes = getattr(task, "_flattened_nodes", None) or ()
            self.selected = [(str(n.unique_id), str(n.name), str(n.resource_type)) for n in nodes]
            if self.reason is not None:
                task._raise_next_tick = Stop(self.reason)

    def _detach(self, task: Any) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._tasks.remove(task)


#: the cancellation of the invocation running in this process (one at a time: dbt-core
#: cannot run two invocations at once in one process)
_ACTIVE: Cancellation | None = None
_EXEMPT = threading.local()
_INSTALL_LOCK = threading.Lock()
_installed = False


@contextlib.contextmanager
def active(cancellation: Cancellation) -> Iterator[Cancellation]:
    """Run dbt under ``cancellation`` inside the block (installs the hooks on first use)."""
    global _ACTIVE
    install_hooks()
    _ACTIVE = cancellation
    try:
        yield cancellation
    finally:
        _ACTIVE = None


@contextlib.contextmanager
def _exempt() -> Iterator[None]:
    """The cancel statements themselves pass the hooks (this thread, inside the block)."""
    _EXEMPT.depth = getattr(_EXEMPT, "depth", 0) + 1
    try:
        yield
    finally:
        _EXEMPT.depth -= 1


def cancel_on_server(skip: Collection[str] = ()) -> list[str]:
    """dbt's server-side cancel for every adapter of the process; the connections' names.

    The sequence of ``GraphRunnableTask._cancel_connections``: only adapters that
    say ``is_cancelable()``; the cancel statements run on a ``master`` connection
    of the calling thread (``connection_named``), which is opened for it and
    closed after; each open connection but the caller's gets the adapter's
    ``cancel`` (PostgreSQL/Redshift: ``pg_terminate_backend``, DuckDB: interrupt),
    as ``cancel_open_connections`` does — except those named in ``skip`` (nodes that
    committed). Through a tunnel, the tunnel must still be open.
    """
    from dbt.adapters.contracts.connection import ConnectionState

    names: list[str] = []
    with _exempt():
        for adapter in adapters():
            if not is_cancelable(adapter):
                continue
            try:
                with adapter.connection_named("master"):
                    manager = adapter.connections
                    this = manager.get_if_exists()
                    with manager.lock:
                        for connection in list(manager.thread_connections.values()):
                            if connection is this or connection.name in skip:
                                continue
                            # state first: reading an unopened connection's handle opens it
                            if connection.state == ConnectionState.OPEN and connection.handle:
                                manager.cancel(connection)
                            if connection.name is not None:
                                names.append(str(connection.name))
            except Exception as exc:  # the caller escalates (closes the tunnel) if needed
                log.warning(
                    "could not cancel the running statements on the server: %s: %s",
                    type(exc).__name__,
                    exc,
                )
    return names


# ---------------------------------------------------------------------- the hooks
def install_hooks() -> None:
    """Wrap dbt's hook points (idempotent); each wrapper passes through when idle."""
    global _installed
    with _INSTALL_LOCK:
        if _installed:
            return
        from dbt.adapters.contracts.connection import LazyHandle
        from dbt.adapters.sql.connections import SQLConnectionManager
        from dbt.task.runnable import GraphRunnableTask

        _wrap(GraphRunnableTask, "run_queue", _run_queue)
        _wrap(GraphRunnableTask, "_cancel_connections", _cancel_connections)
        _wrap(SQLConnectionManager, "add_query", _add_query)
        _wrap(SQLConnectionManager, "commit", _commit)
        _wrap(LazyHandle, "resolve", _resolve)
        _installed = True


def _wrap(cls: type, name: str, make: Callable[[Any], Any]) -> None:
    original = cls.__dict__[name]
    wrapper = make(original)
    functools.update_wrapper(wrapper, original)
    wrapper.__dbt_runner_original__ = original
    setattr(cls, name, wrapper)


def _run_queue(original: Any) -> Any:
    def run_queue(self: Any, pool: Any) -> Any:
        cancellation = _ACTIVE
        if cancellation is None:
            return original(self, pool)
        cancellation._attach(self)
        try:
            return original(self, pool)
        except BaseException as exc:
            # a node's own fail-fast error that surfaced after the cancel: it is the cancel
            if cancellation.requested and not isinstance(exc, Stop):
                raise Stop(cancellation.reason or "cancelled") from exc
            raise
        finally:
            cancellation._detach(self)

    return run_queue


def _cancel_connections(original: Any) -> Any:
    def cancel_connections(self: Any, pool: Any) -> Any:
        cancellation = _ACTIVE
        if cancellation is None or not cancellation.requested:
            with _exempt():  # dbt's own Ctrl-C, in its own words
                return original(self, pool)
        # ours: dbt's sequence, with the pass that leaves committed nodes alone
        pool.close()
        pool.terminate()
        cancel_on_server(skip=set(cancellation.committed))
        pool.join()
        return None

    return cancel_connections


def _connection_name(manager: Any) -> str | None:
    connection = manager.get_if_exists()
    name = getattr(connection, "name", None)
    return str(name) if name is not None else None


def _add_query(original: Any) -> Any:
    def add_query(self: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
        cancellation = _ACTIVE
        if cancellation is not None:
            cancellation.check(_connection_name(self))
        return original(self, sql, *args, **kwargs)

    return add_query


def _commit(original: Any) -> Any:
    def commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        cancellation = _ACTIVE
        if cancellation is not None:
            cancellation.begin_commit(_connection_name(self))
        return original(self, *args, **kwargs)

    return commit


def _resolve(original: Any) -> Any:
    def resolve(self: Any, connection: Any) -> Any:
        opened = original(self, connection)
        cancellation = _ACTIVE
        if cancellation is not None:
            # opened during the cancel pass: not one it could see
            name = getattr(connection, "name", None)
            cancellation.check(str(name) if name is not None else None)
        return opened

    return resolve
