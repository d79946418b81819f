"""Ending a process fast once its work is done and reported.

The interpreter's own teardown after a dbt run (module teardown and a garbage
collection of dbt's whole heap) costs about a second of CPU and changes
nothing anyone sees. :func:`exit_now` keeps every registered exit handler
(``atexit``: multiprocessing's semaphore clean-up, logging's flush, dbt's own)
and skips only that teardown. For processes we own end to end — the
``dbt-runner`` console script and the worker's forked children — never for
library calls.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn

__all__ = ["exit_now"]


def exit_now(code: int) -> NoReturn:
    """Flush stdout/stderr, run the exit handlers, then ``os._exit(code)``."""
    try:
        atexit._run_exitfuncs()  # the handlers a normal exit would run, in their order
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)
