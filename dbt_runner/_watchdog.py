"""The watchdog: one attempt's deadline (``DBT_RUNNER_TIMEOUT_S``).

When the deadline passes it cancels the attempt through the one cancel path
(:meth:`dbt_runner._invocation.Invocation.cancel`, kind ``timeout``): the
server-side cancel runs at once, through the tunnel while it is open; the
invocation escalates (closes the tunnel) only if dbt has not stopped after a
grace period. Leaving the ``with`` block stops the timer and joins it: no
thread of a watchdog outlives its attempt.

>>> with Watchdog(None, lambda: None):     # no deadline: nothing is started
...     pass
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Watchdog"]

log = logging.getLogger("dbt_runner.session")


class Watchdog:
    """Calls ``on_timeout`` once if the block is still running after ``timeout_s``."""

    def __init__(self, timeout_s: float | None, on_timeout: Callable[[], None]) -> None:
        self.timeout_s = timeout_s
        self._on_timeout = on_timeout
        self._fired = threading.Event()
        self._timer: threading.Timer | None = None

    @property
    def fired(self) -> bool:
        """True when the deadline passed during the block."""
        return self._fired.is_set()

    def __enter__(self) -> Watchdog:
        if self.timeout_s is not None:
            self._timer = threading.Timer(self.timeout_s, self._fire)
            self._timer.name = "dbt_runner-watchdog"
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()

    def _fire(self) -> None:
        self._fired.set()
        log.error(
            "invocation exceeded its timeout of %ss (DBT_RUNNER_TIMEOUT_S); cancelling",
            self.timeout_s,
        )
        self._on_timeout()
