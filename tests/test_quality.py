"""README ↔ CI: the README's test command (lint, types, then pytest) is what CI runs.

ruff and mypy run as commands of that command, beside pytest, not inside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_starts_with_the_two_commands() -> None:
    demo, tests = _readme_commands()
    assert "dbt-runner demo" in demo and "pip install ." in demo
    assert "pytest" in tests and "pip install" in tests
    # the static checks are part of it, over every Python folder of the repository
    for check in ("ruff check", "ruff format --check", "mypy --strict dbt_runner"):
        assert check in tests, check
    folders = [p.name for p in ROOT.iterdir() if p.is_dir() and any(p.glob("*.py"))]
    linted = tests.split("ruff check ", 1)[1].split(" &&")[0].split()
    assert sorted(f for f in folders if f not in ("models_sql",)) == sorted(linted)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    _, tests = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, "the README's test command must appear verbatim in .ci/run"
    assert "export TESTBED_REQUIRE_INTEGRATION=1" in ci
