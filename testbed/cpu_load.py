"""CPU contention for timing-sensitive tests: busy-loop processes, bounded in time.

>>> with cpu_load(processes=2, max_s=60):  # doctest: +SKIP
...     run_the_thing()
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["cpu_load"]

# Each child spins until its own deadline, even if the parent dies without killing it.
_SPIN = (
    "import time,sys\nend=time.monotonic()+float(sys.argv[1])\nwhile time.monotonic()<end: pass\n"
)


@contextlib.contextmanager
def cpu_load(processes: int = 2, max_s: float = 120.0) -> Iterator[None]:
    """Run ``processes`` busy loops for the block (each stops by itself after ``max_s``)."""
    children = [
        subprocess.Popen([sys.executable, "-c", _SPIN, str(max_s)]) for _ in range(processes)
    ]
    try:
        yield
    finally:
        for child in children:
            child.kill()
        for child in children:
            child.wait(10)
