"""DbtSession against real dbt and real DuckDB, on the small fixture project."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

import dbt_runner
from dbt_runner import DbtInvocationError, DbtRunFailed, DbtSession, ErrorKind, Settings

MINI = Path(__file__).parent / "fixtures" / "mini_project"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        project_dir=MINI,
        warehouse={"type": "duckdb", "path": str(tmp_path / "mini.duckdb"), "schema": "stg"},
        state_dir=tmp_path / "state",
        retry={"attempts": 1},
    )


def _overlap(nodes: list[dbt_runner.NodeResult]) -> bool:
    spans = [
        (datetime.fromisoformat(n.started_at or ""), datetime.fromisoformat(n.completed_at or ""))
        for n in nodes
    ]
    latest_start = max(s for s, _ in spans)
    earliest_end = min(e for _, e in spans)
    return latest_start < earliest_end


def test_staging_and_tests_in_one_session_parse_once(settings: Settings, tmp_path: Path) -> None:
    with DbtSession(settings) as session:
        staging = session.run_staging(threads=3)
        tests = session.run_tests()
        parses = session.parse_count

    assert staging.success, staging.summary()
    assert {n.name for n in staging.nodes} == {"part_1", "part_2", "part_3"}
    assert tests.success, tests.summary()
    assert {n.resource_type for n in tests.nodes} == {"test"}
    assert len(tests.nodes) == 3
    # dbt's own StateCheckVarsHash event fires once per project load: one parse, two commands
    assert parses == 1
    # the models really landed in DuckDB
    con = duckdb.connect(str(tmp_path / "mini.duckdb"), read_only=True)
    try:
        assert con.execute("select part, n from stg.part_2").fetchall() == [(2, 2_250_000)]
    finally:
        con.close()


def test_three_threads_really_run_concurrently(settings: Settings) -> None:
    with DbtSession(settings) as session:
        result = session.run_staging(threads=3)
    assert result.success, result.summary()
    assert result.threads == 3
    assert len({n.thread for n in result.nodes}) == 3
    assert _overlap(list(result.nodes)), [(n.started_at, n.completed_at) for n in result.nodes]


def test_one_thread_runs_nodes_one_after_another(settings: Settings) -> None:
    with DbtSession(settings) as session:
        result = session.run_staging(threads=1)
    assert result.success
    assert len({n.thread for n in result.nodes}) == 1
    assert not _overlap(list(result.nodes))


def test_failing_model_is_a_result_with_its_message(settings: Settings) -> None:
    with DbtSession(settings) as session:
        result = session.invoke(["run", "--select", "tag:broken"])
    assert not result.success
    assert result.attempts == 1
    [node] = result.nodes
    assert node.name == "broken" and node.status == "error"
    assert "this_table_does_not_exist" in (node.message or "")
    assert node.error is not None and node.error.kind is ErrorKind.MODEL_FAILURE
    with pytest.raises(DbtRunFailed) as info:
        result.raise_for_status()
    assert "broken" in str(info.value)
    assert info.value.result is result


def test_compile_error_raises_invocation_error_with_kind(settings: Settings) -> None:
    with DbtSession(settings) as session:
        result = session.run_staging(vars={"break_compile": True})
        # the session is still usable, and the cached manifest without the var still works
        ok = session.run_staging(select="part_1")
    assert not result.success
    assert result.error is not None and result.error.kind is ErrorKind.COMPILATION
    assert "this_macro_does_not_exist" in result.error.message
    with pytest.raises(DbtInvocationError) as info:
        result.raise_for_status()
    assert info.value.kind is ErrorKind.COMPILATION
    assert ok.success


def test_result_json_is_plain_and_complete(settings: Settings) -> None:
    with DbtSession(settings) as session:
        result = session.run_staging()
    data = json.loads(result.to_json())
    assert data["command"] == "run" and data["success"] is True
    assert data["threads"] == 3
    assert sorted(n["name"] for n in data["nodes"]) == ["part_1", "part_2", "part_3"]
    for node in data["nodes"]:
        assert node["status"] == "success"
        assert node["thread"] and node["started_at"] and node["completed_at"]


def test_node_events_reach_logging_and_callbacks(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[dbt_runner.NodeEvent] = []
    caplog.set_level(logging.INFO, logger="dbt_runner")
    with DbtSession(settings, callbacks=[seen.append]) as session:
        session.run_staging()
    finishes = [e for e in seen if e.event == "node_finish"]
    assert sorted(e.name for e in finishes) == ["part_1", "part_2", "part_3"]
    assert all(e.status == "success" and e.elapsed_s is not None for e in finishes)
    done_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("DONE")]
    assert len(done_lines) == 3 and all("success" in line for line in done_lines)


def test_convenience_functions_open_their_own_session(settings: Settings) -> None:
    staging = dbt_runner.run_staging(threads=2, settings=settings)
    tests = dbt_runner.run_tests(settings=settings)
    assert staging.success and staging.threads == 2
    assert tests.success and len(tests.nodes) == 3


def test_project_dir_stays_clean_when_state_dir_is_set(settings: Settings) -> None:
    before = sorted(p.name for p in MINI.iterdir())
    with DbtSession(settings) as session:
        session.run_staging(select="part_1")
    assert sorted(p.name for p in MINI.iterdir()) == before
    assert (settings.state_dir or Path()).joinpath("target", "run_results.json").is_file()
