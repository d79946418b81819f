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
(Airflow, a notebook) keeps its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from ._exceptions import EXIT_INTERRUPTED, EXIT_TERMINATED

__all__ = ["Terminated", "exit_code_of", "handled_signals", "signal_name"]


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
