"""SIGTERM and SIGINT in the processes dbt_runner owns: the CLI and the warm worker.

While :func:`handled_signals` is active (in the main thread):

- the **first** SIGINT or SIGTERM is offered to ``on_first``: the CLI and the
  worker's child cancel the session's running invocation there
  (:meth:`DbtSession.cancel`: on the server, through the tunnel while it is
  open), so the command gets its result with the truth about each node, closes
  what it opened, prints one line saying what was interrupted and exits 130 /
  143. When nothing was running to cancel (opening the tunnel, between two
  steps), SIGINT raises ``KeyboardInterrupt`` and SIGTERM :class:`Terminated`
  (``BaseException`` s that are not ``Exception`` s), which unwind the same way;
- a **second** signal of either kind ends the process at once
  (``os._exit(128 + signal)``), whatever is still running.

Library code never installs these handlers: a process that embeds dbt_runner
(Airflow, a notebook) keeps its own. What library code owes every handler is to
let it run: CPython runs a signal's Python handler in the main thread, between
two bytecodes; when another thread of the process took the signal at the C
level, a main thread blocked in an untimed ``Event.wait()`` or ``join()`` is not
woken, and the handler (Airflow's timeout, a Ctrl-C) waits until that wait ends
on its own. :func:`wait` and :func:`join` wait in slices of
:data:`HANDLER_SLICE_S` instead, so that a handler runs within one slice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

from ._exceptions import EXIT_INTERRUPTED, EXIT_TERMINATED

__all__ = ["Terminated", "exit_code_of", "handled_signals", "join", "signal_name", "wait"]

#: the longest one blocking call of a wait lasts (the delay a signal's handler may see)
HANDLER_SLICE_S = 0.05


def wait(event: threading.Event, timeout: float | None = None) -> bool:
    """``event.wait(timeout)``, in slices during which a signal's handler may run.

    >>> ready = threading.Event()
    >>> wait(ready, 0.01), (ready.set(), wait(ready))[1]
    (False, True)
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = HANDLER_SLICE_S if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return event.is_set()
        if event.wait(min(left, HANDLER_SLICE_S)):
            return True


def join(thread: threading.Thread, timeout: float | None = None) -> bool:
    """``thread.join(timeout)`` the same way; True once the thread has ended."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while thread.is_alive():
        left = HANDLER_SLICE_S if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return False
        thread.join(min(left, HANDLER_SLICE_S))
    return True


class Terminated(BaseException):
    """SIGTERM arrived (raised by :func:`handled_signals`' handler); ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(f"terminated by {signal_name(signum)}")
        self.signum = signum


def signal_name(signum: int) -> str:
    """``SIGTERM``, ``SIGINT``... (the number when it has no name)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def exit_code_of(exc: BaseException) -> int | None:
    """130 for ``KeyboardInterrupt``, 128 + signal for :class:`Terminated`, else None."""
    if isinstance(exc, Terminated):
        return 128 + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return None


@contextlib.contextmanager
def handled_signals(on_first: Callable[[int], bool] | None = None) -> Iterator[list[int]]:
    """Install the handlers above for the block; yields the signals received so far.

    ``on_first(signum)`` returns True when it dealt with the first signal (it cancelled
    something); else the signal's exception is raised. Outside the main thread (where
    Python cannot install handlers) it does nothing.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) > 1:  # the second one: no more waiting for a clean stop
            with contextlib.suppress(Exception):
                sys.stderr.write(
                    f"dbt-runner: {signal_name(signum)} again: exiting now, without clean-up\n"
                )
                sys.stderr.flush()
            os._exit(EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED)
        if on_first is not None and on_first(signum):
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
