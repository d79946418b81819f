"""The flags a session adds: only what the caller did not give, only what dbt's command accepts.

Asked of dbt's own click commands (no hand list), so these run against the
installed dbt-core.
"""

from __future__ import annotations

import pytest

from dbt_runner._dbt.args import accepts, given, with_defaults

DEFAULTS: list[tuple[str, str | None]] = [
    ("--project-dir", "P"),
    ("--profiles-dir", "R"),
    ("--target", "dev"),
    ("--target-path", "T"),
    ("--log-level", "warn"),
    ("--no-use-colors", None),
    ("--threads", "3"),
]


def added(args: list[str]) -> list[str]:
    return with_defaults(args, DEFAULTS)[len(args) :]


@pytest.mark.parametrize("command", [["deps"], ["debug"]])
def test_commands_without_a_target_path_never_get_one(command: list[str]) -> None:
    # dbt would answer "No such option '--target-path'" (issue 12: deps/debug never worked)
    assert "--target-path" not in added(command)
    assert "--threads" not in added(command)
    assert "--project-dir" in added(command)


@pytest.mark.parametrize(
    "args",
    [
        ["seed", "--target", "ci"],
        ["seed", "-t", "ci"],
        ["seed", "--target=ci"],
        ["seed", "-tci"],
    ],
)
def test_the_callers_target_wins_in_every_spelling(args: list[str]) -> None:
    assert given(args, "--target")
    assert "--target" not in added(args) and "dev" not in added(args)


def test_the_callers_log_level_threads_and_colours_win() -> None:
    args = ["run", "--log-level", "debug", "--threads", "1", "--use-colors"]
    extra = added(args)
    assert "warn" not in extra and "--threads" not in extra and "--no-use-colors" not in extra
    assert extra[:4] == ["--project-dir", "P", "--profiles-dir", "R"]


@pytest.mark.parametrize(
    ("args", "flag", "expected"),
    [
        (["docs", "generate"], "--target-path", True),
        (["source", "freshness"], "--threads", True),
        (["retry"], "--threads", True),
        (["clean"], "--threads", False),
        (["run"], "--no-such-flag", False),
    ],
)
def test_two_word_commands_are_asked_too(args: list[str], flag: str, expected: bool) -> None:
    assert accepts(args, flag) is expected


def test_other_flags_of_the_caller_leave_the_defaults_in_place() -> None:
    assert added(["run", "--vars", "{x: 1}"])[4:6] == ["--target", "dev"]
