"""Fresh-process cycles through the tunnel, each checked for a dropped or re-opened SSH link.

One cycle is what the 15-minute job does: a new ``dbt-runner cycle`` process
(run the staging models, then their tests) through the bastion. A cycle
*dropped* the tunnel when paramiko logged a socket error or a connection was
refused with "SSH session not active"; it *re-opened* the tunnel when the
session logged its ``tunnel_reopen`` event. Used by
``tests/integration/test_tunnel_soak.py`` (10 cycles) and
``benchmarks/tunnel_soak.py`` (hundreds, drops per 100 cycles).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["CycleOutcome", "cycle_env", "run_cycles", "runner_env"]

#: What paramiko / sshtunnel log when the SSH connection under the tunnel died.
DROP_MARKERS = ("Socket exception", "SSH session not active", "Bad file descriptor")
CYCLE_TIMEOUT_S = 300.0


@dataclasses.dataclass(frozen=True)
class CycleOutcome:
    """One fresh-process cycle: exit code, what it logged about the tunnel, its duration."""

    exit_code: int
    dropped: bool
    reopened: bool
    seconds: float
    stderr_tail: str

    @property
    def clean(self) -> bool:
        return self.exit_code == 0 and not self.dropped and not self.reopened


def runner_env(
    top: Mapping[str, Any] | None = None, **sections: Mapping[str, Any]
) -> dict[str, str]:
    """This process's environment with its DBT_RUNNER_* settings replaced by ``top``
    (``DBT_RUNNER_<KEY>``) and ``sections`` (``DBT_RUNNER_<SECTION>__<KEY>``), secrets
    unwrapped: what a ``dbt-runner`` subprocess reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
    for key, value in (top or {}).items():
        env[f"DBT_RUNNER_{key.upper()}"] = str(value)
    for section, values in sections.items():
        for key, value in values.items():
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            env[f"DBT_RUNNER_{section.upper()}__{key.upper()}"] = str(value)
    return env


def cycle_env(
    warehouse: Mapping[str, Any], ssh: Mapping[str, Any], state_dir: Path
) -> dict[str, str]:
    """The environment of a ``dbt-runner cycle`` process (no waits between retries)."""
    no_waits = {"initial_wait_s": 0, "max_wait_s": 0}
    return runner_env({"state_dir": state_dir}, warehouse=warehouse, ssh=ssh, retry=no_waits)


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("dbt-runner")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dbt_runner.cli"]


def _reopened(stderr: str) -> bool:
    for line in stderr.splitlines():
        if '"tunnel_reopen"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "tunnel_reopen":
            return True
    return False


def run_cycles(env: Mapping[str, str], cycles: int, deadline_s: float) -> Iterator[CycleOutcome]:
    """Run up to ``cycles`` fresh-process cycles, stopping once ``deadline_s`` has passed."""
    deadline = time.monotonic() + deadline_s
    for _ in range(cycles):
        if time.monotonic() > deadline:
            return
        started = time.monotonic()
        proc = subprocess.run(
            [*_cli(), "cycle", "--json", "--log-format", "json"],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=CYCLE_TIMEOUT_S,
            check=False,
        )
        yield CycleOutcome(
            exit_code=proc.returncode,
            dropped=any(marker in proc.stderr for marker in DROP_MARKERS),
            reopened=_reopened(proc.stderr),
            seconds=time.monotonic() - started,
            stderr_tail=proc.stderr[-2000:],
        )
