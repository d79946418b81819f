"""dbt's deprecation warnings in a long-lived session: once per command, that command's counts.

dbt counts deprecations in process-wide state that only a new process resets; a session
runs many commands in one process (``dbt_runner._dbt.deprecations``). A small DuckDB
project meets one deprecation on every command (``include`` in ``warn_error_options``,
fired while dbt reads its flags) and one while parsing (a generic test's arguments not
under ``arguments:``). Plain dbt, one process per command, prints per command: the
first warning of each deprecation and one summary with that command's counts; a command
that reuses the partial-parse state meets only the flags' one.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from dbt_runner import DbtSession, Settings

pytestmark = pytest.mark.timeout(300)

PROJECT_YML = """\
name: noisy
version: "1.0"
config-version: 2
profile: noisy
flags:
  warn_error_options:
    include: ["NoNodesForSelectionCriteria"]
models:
  noisy:
    +materialized: table
"""
SCHEMA_YML = """\
models:
  - name: colours
    columns:
      - name: colour
        data_tests:
          - accepted_values:
              values: ["red", "blue"]
"""
FLAGS = "WEOIncludeExcludeDeprecation"
PARSE = "MissingArgumentsPropertyInGenericTestDeprecation"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = tmp_path / "noisy"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(PROJECT_YML)
    (project / "models" / "colours.sql").write_text("select 'red' as colour")
    (project / "models" / "schema.yml").write_text(SCHEMA_YML)
    (project / "profiles.yml").write_text(
        "noisy:\n  target: dev\n  outputs:\n"
        f"    dev: {{type: duckdb, path: '{tmp_path}/n.duckdb'}}\n"
    )
    return project


def summaries(records: list[logging.LogRecord]) -> list[dict[str, int]]:
    """Each relayed "Summary of encountered deprecations" as {deprecation: occurrences}."""
    found = []
    for record in records:
        text = record.getMessage()
        if "Summary of encountered deprecations" in text:
            counts = re.findall(r"- (\w+): (\d+) occurrences?", text)
            found.append({name: int(n) for name, n in counts})
    return found


def warnings_of(records: list[logging.LogRecord], name: str) -> int:
    return sum(
        1 for r in records if f"[{name}]" in r.getMessage() and "Summary" not in r.getMessage()
    )


def test_each_command_has_one_summary_with_its_own_counts(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dbt_runner.dbt")
    per_command = []
    with DbtSession(Settings(project_dir=project, profiles_dir=project)) as session:
        for args in (["run"], ["run"], ["test"], ["ls"]):
            caplog.clear()
            result = session.invoke(args)
            assert result.success, result.summary()
            per_command.append((summaries(caplog.records), warnings_of(caplog.records, FLAGS)))
        assert session.parse_count == 1  # one parse for the session, its counts in the first
    first, *others = per_command
    # the first command parsed (the session's own parse, then run): one summary, as one
    # dbt process would print it; the flags' deprecation counted once, warned about once
    assert first == ([{FLAGS: 1, PARSE: 1}], 1)
    # later commands reuse the parse: only what the flags meet, every time (no 2, 3, 4)
    assert others == [([{FLAGS: 1}], 1)] * 3


def test_a_changed_file_is_parsed_again_with_its_deprecations(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dbt_runner.dbt")
    with DbtSession(Settings(project_dir=project, profiles_dir=project)) as session:
        assert session.invoke(["run"]).success
        (project / "models" / "schema.yml").write_text(SCHEMA_YML.replace("blue", "green"))
        caplog.clear()
        assert session.invoke(["run"]).success
    assert summaries(caplog.records) == [{FLAGS: 1, PARSE: 1}]


def test_a_parse_that_fails_still_shows_its_summary(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (project / "models" / "broken.sql").write_text("select * from {{ ref('no_such_model') }}")
    caplog.set_level(logging.WARNING, logger="dbt_runner.dbt")
    with DbtSession(Settings(project_dir=project, profiles_dir=project)) as session:
        result = session.invoke(["run"])
    assert not result.success and result.error is not None
    assert result.error.kind.value == "compilation"
    assert summaries(caplog.records) == [{FLAGS: 1, PARSE: 1}]
