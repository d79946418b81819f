"""Structured logs: one JSON object per record, carrying every node's events, no secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from dbt_runner import DbtSession, NodeEvent, Settings
from dbt_runner.logging import EVENT_KEY, JsonFormatter, event_extra

MINI = Path(__file__).parent / "fixtures" / "mini_project"
SECRET = "pw-Zq8!never-log-me"


def _record(msg: str = "hello %s", args: tuple[object, ...] = ("world",), **extra: object) -> str:
    logger = logging.getLogger("dbt_runner.test_logjson")
    record = logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, msg, args, None, extra=extra or None
    )
    return JsonFormatter().format(record)


def test_a_record_is_one_line_of_json_with_the_basics() -> None:
    line = _record("two\nlines %s", ("and\ttabs",))
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "WARNING"
    assert data["logger"] == "dbt_runner.test_logjson"
    assert data["message"] == "two\nlines and\ttabs"
    assert datetime.fromisoformat(data["timestamp"]).utcoffset() is not None
    assert "event" not in data and "extra" not in data


def test_structured_event_is_lifted_and_other_extras_kept() -> None:
    event = NodeEvent("node_finish", "model.p.a", "a", "model", "Thread-1", "t0", "success", 0.2)
    data = json.loads(_record(**{EVENT_KEY: event.to_dict()}, run_id="abc", path=Path("/x")))
    assert data["event"] == "node_finish"
    assert NodeEvent(**data["data"]) == event
    assert data["extra"] == {"run_id": "abc", "path": "/x"}


def test_secrets_never_reach_the_json() -> None:
    line = _record(
        "connecting as %s",
        ("dbt",),
        **event_extra("tunnel_open", passphrase=SECRET, local_port=4000),
        password=SecretStr(SECRET),
        token=SECRET,
        credentials={"user": "dbt", "db_password": SECRET},
        key=SecretStr(SECRET),
    )
    assert SECRET not in line
    data = json.loads(line)
    assert data["data"]["passphrase"] == "***" and data["data"]["local_port"] == 4000
    assert data["extra"]["credentials"] == {"user": "dbt", "db_password": "***"}
    assert data["extra"]["key"] == "**********"  # SecretStr's own mask


def test_exceptions_are_kept_as_text() -> None:
    logger = logging.getLogger("dbt_runner.test_logjson")
    try:
        raise ValueError("bad")
    except ValueError:
        record = logger.makeRecord(
            logger.name, logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    data = json.loads(JsonFormatter().format(record))
    assert "ValueError: bad" in data["exception"]


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("dbt_runner")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def test_a_real_run_logs_a_start_and_a_finish_for_every_node(
    tmp_path: Path, json_log: io.StringIO
) -> None:
    settings = Settings(
        project_dir=MINI,
        warehouse={"type": "duckdb", "path": str(tmp_path / "mini.duckdb"), "schema": "stg"},
        state_dir=tmp_path / "state",
        retry={"attempts": 1},
    )
    with DbtSession(settings) as session:
        staging = session.run_staging(threads=3)
        tests = session.run_tests()
    assert staging.success and tests.success

    records = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert records and all({"timestamp", "level", "logger", "message"} <= r.keys() for r in records)
    events = [r for r in records if r.get("event") in ("node_start", "node_finish")]
    for node in (*staging.nodes, *tests.nodes):
        mine = [NodeEvent(**r["data"]) for r in events if r["data"]["unique_id"] == node.unique_id]
        assert [e.event for e in mine] == ["node_start", "node_finish"], node.name
        finish = mine[1]
        assert finish.status == node.status and finish.thread == node.thread
        assert finish.elapsed_s is not None
        assert datetime.fromisoformat(finish.timestamp) >= datetime.fromisoformat(mine[0].timestamp)
    assert len({r["data"]["thread"] for r in events if r["logger"] == "dbt_runner.dbt"}) >= 3


def test_cli_json_logs_on_stderr_and_the_result_alone_on_stdout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
    env.update(
        DBT_RUNNER_WAREHOUSE__PATH=str(tmp_path / "mini.duckdb"),
        DBT_RUNNER_WAREHOUSE__SCHEMA="stg",
        DBT_RUNNER_STATE_DIR=str(tmp_path / "state"),
        DBT_RUNNER_LOG_FORMAT="json",  # the same as --log-format json
    )
    proc = subprocess.run(
        [sys.executable, "-m", "dbt_runner.cli", "cycle", "--json", "--project-dir", str(MINI)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    records = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is JSON
    finished = {r["data"]["unique_id"]: r for r in records if r.get("event") == "node_finish"}
    started = {r["data"]["unique_id"] for r in records if r.get("event") == "node_start"}
    node_ids = {n["unique_id"] for part in result.values() for n in part["nodes"]}
    assert len(node_ids) == 6
    assert started == node_ids == set(finished)
    for part in result.values():
        for node in part["nodes"]:
            assert finished[node["unique_id"]]["data"]["status"] == node["status"]
    assert "\x1b" not in proc.stderr
