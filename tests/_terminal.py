"""A real pseudo-terminal for tests of what a person sees at a terminal."""

from __future__ import annotations

import os
import subprocess


def in_terminal(
    argv: list[str], env: dict[str, str], timeout_s: float = 300, *, columns: int = 120
) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a real pseudo-terminal ``columns`` wide (the
    kernel's window size, as ``stty cols`` sets it, and ``COLUMNS``); its exit code and
    everything it wrote."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**env, "COLUMNS": str(columns)}
    child = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=env.get("PWD")
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        if child.poll() is None and time.monotonic() >= deadline:
            child.kill()
    code = child.wait(timeout=30)
    return code, b"".join(chunks).decode("utf-8", "replace")
