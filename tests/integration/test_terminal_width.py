"""What a person reads at an 80- and a 120-column terminal after a failed run.

The real ``dbt-runner`` runs on a real pseudo-terminal (its window size set as
``stty cols`` sets it) on real DuckDB: two models whose names share a long prefix
fail, two tests with long names fail. The summary must hold every failed node's
full name (never ``stg_uni…`` for two different models), every word of every
error whole (wrapped at word boundaries, never by the terminal mid-word), and the
hint, wrapped at words too.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests._projects import write_project
from tests._terminal import in_terminal

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal"),
]

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
MODELS = {
    "stg_uni_tracking_info": "select * from raw_uni_tracking_info_that_is_missing",
    "stg_uni_tracking_spath": "select * from raw_uni_tracking_spath_that_is_missing",
    "orders_with_long_name": (
        "select 1 as id, cast(null as integer) as customer_identifier, 'x' as order_status"
    ),
}
SCHEMA = """\
version: 2
models:
  - name: orders_with_long_name
    columns:
      - name: customer_identifier
        data_tests: [not_null]
      - name: order_status
        data_tests:
          - accepted_values:
              arguments: {values: ['a', 'b']}
"""
FAILED = {
    "stg_uni_tracking_info",
    "stg_uni_tracking_spath",
    "not_null_orders_with_long_name_customer_identifier",
    "accepted_values_orders_with_long_name_order_status__a__b",
}


def _env(state: Path, cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
    env.update(TERM="xterm-256color", PWD=str(cwd), DBT_RUNNER_STATE_DIR=str(state))
    env["DBT_RUNNER_RETRY__ATTEMPTS"] = "1"
    return env


def _summary(raw: str, title: str) -> list[str]:
    """The lines of the final summary as the screen shows them (from its title on)."""
    text = ANSI.sub("", raw).replace("\r\n", "\n").replace("\r", "\n")
    assert title in text, text[-3000:]
    return text[text.rindex(title) :].splitlines()


def _whole(word: str, lines: list[str]) -> bool:
    """``word`` appears on one line, not cut (whitespace or the line's edge on both sides)."""
    pattern = re.compile(rf"(?<!\S){re.escape(word)}(?!\S)")
    return any(pattern.search(line) for line in lines)


def _messages(state: Path) -> dict[str, str]:
    """dbt's own message of each failed node, from its run_results.json."""
    results = json.loads((state / "target" / "run_results.json").read_text())["results"]
    return {
        r["unique_id"].split(".")[2]: r["message"] or ""
        for r in results
        if r["status"] in ("error", "fail")
    }


def _assert_readable(lines: list[str], columns: int, words: list[str]) -> None:
    too_wide = [line for line in lines if len(line.rstrip()) > columns]
    assert too_wide == [], "the terminal would wrap these mid-word"
    assert not [line for line in lines if "…" in line and "more lines" not in line], lines
    split = [w for w in words if not _whole(w, lines)]
    assert split == [], "\n".join(lines)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_project(tmp_path_factory.mktemp("narrow"), "narrow", MODELS, yml=SCHEMA)


@pytest.mark.parametrize("columns", [80, 120])
def test_a_failed_build_is_readable_at_the_terminal_s_width(
    project: Path, tmp_path: Path, columns: int
) -> None:
    state = tmp_path / "state"
    env = _env(state, tmp_path)
    env["DBT_RUNNER_WAREHOUSE__PATH"] = str(tmp_path / "w.duckdb")
    argv = [sys.executable, "-m", "dbt_runner.cli", "dbt", "--project-dir", str(project)]
    code, raw = in_terminal(
        [*argv, "--", "build"],
        env,
        columns=columns,
    )
    assert code == 1, ANSI.sub("", raw)[-3000:]
    lines = _summary(raw, "build: dbt build FAILED")
    messages = _messages(state)
    assert set(messages) == FAILED
    for name in FAILED:  # each failed node's full name, on a line of its own kind
        assert _whole(name, lines), f"{name} is cut:\n" + "\n".join(lines)
        assert any(re.match(rf"{name} \[(model_failure|test_failure)\]", x) for x in lines)
    words = [w for message in messages.values() for w in message.split()]
    assert max(len(w) for w in words) < columns - 4  # every word can be shown whole
    _assert_readable(lines, columns, words)
    if columns == 120:  # room for the table: test names in it, not cut
        for name in FAILED - {"stg_uni_tracking_info", "stg_uni_tracking_spath"}:
            assert any(re.match(rf"{name} +test +fail ", line) for line in lines), lines


def test_the_first_command_in_an_empty_dir_is_readable_at_80_columns(tmp_path: Path) -> None:
    """The issue's own screen: `dbt-runner cycle` with no settings, bundled project, no data."""
    empty = tmp_path / "empty"
    empty.mkdir()
    code, raw = in_terminal(
        [sys.executable, "-m", "dbt_runner.cli", "cycle"],
        _env(tmp_path / "state", empty),
        columns=80,
    )
    assert code == 1, ANSI.sub("", raw)[-3000:]
    lines = _summary(raw, "staging: dbt run FAILED")
    names = ["stg_ecs_order_info", "stg_uni_tracking_info", "stg_uni_tracking_spath"]
    for name in names:
        assert any(re.match(rf"{name} +model +error ", line) for line in lines), lines
        assert any(line.startswith(f"{name} [model_failure]") for line in lines), lines
    hint_at = next(i for i, line in enumerate(lines) if line.startswith("hint: "))
    hint = " ".join(line.strip() for line in lines[hint_at:] if line.strip())
    assert hint.startswith("hint: the raw tables are missing from ./dbt_runner.duckdb.")
    assert hint.endswith("(docs/configuration.md).")
    words = [w for message in _messages(tmp_path / "state").values() for w in message.split()]
    _assert_readable(lines, 80, words + hint.split())
    assert list(empty.iterdir()) == []  # and nothing left behind
