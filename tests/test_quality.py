"""The project's own checks: ruff and mypy --strict on the package, README ↔ CI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "dbt_runner", "tests", "examples", "benchmarks"),
        ("ruff", "format", "--check", "dbt_runner", "tests", "examples", "benchmarks"),
        ("mypy", "--strict", "dbt_runner"),
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_package_is_clean(command: tuple[str, ...]) -> None:
    # examples/ and benchmarks/ are checked as soon as they exist
    existing = [c for c in command if c not in ("examples", "benchmarks") or (ROOT / c).is_dir()]
    proc = _run(*existing)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_starts_with_the_two_commands() -> None:
    demo, tests = _readme_commands()
    assert "dbt-runner demo" in demo and "pip install ." in demo
    assert "pytest" in tests and "pip install" in tests


def test_ci_runs_exactly_the_readme_test_command() -> None:
    _, tests = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, "the README's test command must appear verbatim in .ci/run"
    assert "export DBT_RUNNER_REQUIRE_INTEGRATION=1" in ci
