"""SIGTERM/SIGINT in the processes dbt_runner owns (real signals to a child process)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent(
    """
    import os, signal, sys, time
    from dbt_runner._signals import Terminated, exit_code_of, handled_signals

    mode = sys.argv[1]
    handled = []
    on_first = (lambda signum: handled.append(signum) or True) if mode != "raise" else None
    try:
        with handled_signals(on_first) as received:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler runs here
            print("after first", received, handled, flush=True)
            if mode == "twice":
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
                print("not reached", flush=True)
    except BaseException as exc:
        print(type(exc).__name__, exit_code_of(exc), flush=True)
        sys.exit(exit_code_of(exc))
    """
)


def _run(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=60
    )


def test_the_first_sigterm_raises_terminated_and_exits_143() -> None:
    proc = _run("raise")
    assert proc.stdout.split() == ["Terminated", "143"], proc.stderr
    assert proc.returncode == 143


def test_a_first_signal_that_cancelled_something_raises_nothing() -> None:
    proc = _run("cancel")
    assert proc.stdout.strip() == f"after first [{int(signal.SIGTERM)}] [{int(signal.SIGTERM)}]"
    assert proc.returncode == 0


def test_a_second_signal_exits_at_once() -> None:
    proc = _run("twice")
    assert "not reached" not in proc.stdout
    assert proc.returncode == 130  # the second one was SIGINT
    assert "again: exiting now" in proc.stderr


@pytest.mark.parametrize(("exc", "code"), [(KeyboardInterrupt(), 130), (ValueError(), None)])
def test_exit_codes_of_exceptions(exc: BaseException, code: int | None) -> None:
    from dbt_runner._signals import Terminated, exit_code_of

    assert exit_code_of(exc) == code
    assert exit_code_of(Terminated(signal.SIGTERM)) == 143
