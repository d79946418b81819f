"""OpenLineage run events (``DBT_RUNNER_OPENLINEAGE__ENABLED``), sent by the real client.

A foreign project (its own profiles.yml, DuckDB, local packages, an ephemeral model and a
model that fails) runs in a session with the client's **file** transport and, in a second
session, its **HTTP** transport to a receiver on loopback. Each event is checked against
the OpenLineage spec's JSON schema for a run event (:data:`RUN_EVENT_SCHEMA`: the client
ships no schema file, so its required structure is written out here) with ``jsonschema``;
then the lineage itself: one run per command, one per model/seed/snapshot with its
inputs (``ref``/``source``, through ephemeral models) and its output.

Off by default, the client is not even imported; the base install has no client and
says which extra to install.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import DbtSession, Settings
from tests._differential import make_copy

jsonschema = pytest.importorskip("jsonschema")

SPEC = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
#: The OpenLineage spec's RunEvent (spec/OpenLineage.json, 2-0-2, the version the client's
#: generated model names): its required fields and formats, and the base facet's. Written
#: out because the client ships no schema file.
RUN_EVENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$ref": "#/$defs/RunEvent",
    "$defs": {
        "RunEvent": {
            "type": "object",
            "required": ["eventType", "eventTime", "run", "job", "producer", "schemaURL"],
            "properties": {
                "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
                "eventTime": {"type": "string", "format": "date-time"},
                "producer": {"type": "string", "format": "uri"},
                "schemaURL": {"type": "string", "format": "uri"},
                "run": {
                    "type": "object",
                    "required": ["runId"],
                    "properties": {
                        "runId": {"type": "string", "format": "uuid"},
                        "facets": {"additionalProperties": {"$ref": "#/$defs/BaseFacet"}},
                    },
                },
                "job": {
                    "type": "object",
                    "required": ["namespace", "name"],
                    "properties": {
                        "namespace": {"type": "string"},
                        "name": {"type": "string"},
                        "facets": {"additionalProperties": {"$ref": "#/$defs/BaseFacet"}},
                    },
                },
                "inputs": {"type": "array", "items": {"$ref": "#/$defs/Dataset"}},
                "outputs": {"type": "array", "items": {"$ref": "#/$defs/Dataset"}},
            },
        },
        "Dataset": {
            "type": "object",
            "required": ["namespace", "name"],
            "properties": {"namespace": {"type": "string"}, "name": {"type": "string"}},
        },
        "BaseFacet": {
            "type": "object",
            "required": ["_producer", "_schemaURL"],
            "properties": {
                "_producer": {"type": "string", "format": "uri"},
                "_schemaURL": {"type": "string", "format": "uri"},
            },
        },
    },
}
#: the facets' own required fields (spec/facets/*.json)
FACET_REQUIRED = {
    "parent": ["run", "job"],
    "errorMessage": ["message", "programmingLanguage"],
    "jobType": ["processingType", "integration"],
}

DB = "shop"


def _validate(event: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(
        RUN_EVENT_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(event), key=str)
    assert not errors, [e.message for e in errors]
    facets = {**event["run"].get("facets", {}), **event["job"].get("facets", {})}
    for name, required in FACET_REQUIRED.items():
        if name in facets:
            assert set(required) <= set(facets[name]), (name, facets[name])
    assert event["run"]["runId"][14] == "7"  # the client's UUIDv7 (time-ordered run ids)
    # the spec version the schema above was written from
    assert event["schemaURL"].startswith(SPEC), event["schemaURL"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_copy(tmp_path / "copy")


def _settings(project: Path) -> Settings:
    return Settings(
        project_dir=project,
        profiles_dir=project / "profiles" / "duckdb",
        openlineage={"enabled": True, "namespace": "shop_jobs"},
    )


def _by_job(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    jobs: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        jobs.setdefault(event["job"]["name"], []).append(event)
    return jobs


def _names(datasets: list[dict[str, Any]]) -> set[str]:
    return {d["name"] for d in datasets}


def test_file_transport_writes_a_run_per_command_and_per_model(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    database = tmp_path / f"{DB}.duckdb"
    monkeypatch.setenv("FOREIGN_DUCKDB_PATH", str(database))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(path))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")

    with DbtSession(_settings(project)) as session:
        assert session.invoke(["seed"]).success
        run = session.invoke(["run", "--select", "+customer_orders", "broken_cast"])
    assert not run.success  # broken_cast fails on purpose

    events = [json.loads(line) for line in path.read_text().splitlines()]
    for event in events:
        _validate(event)
    jobs = _by_job(events)
    namespace = f"duckdb://{database}"

    # -- one run per command: START, then COMPLETE or FAIL, in the jobs' namespace
    assert [e["eventType"] for e in jobs["foreign_shop.seed"]] == ["START", "COMPLETE"]
    command = jobs["foreign_shop.run"]
    assert [e["eventType"] for e in command] == ["START", "FAIL"]
    assert command[0]["run"]["runId"] == command[1]["run"]["runId"]
    assert "broken_cast" in command[1]["run"]["facets"]["errorMessage"]["message"]
    assert {e["job"]["namespace"] for e in events} == {"shop_jobs"}

    # -- one run per model and seed, a child of its command's run
    for name, state in [
        ("seed.foreign_shop.raw_orders", "COMPLETE"),
        ("model.foreign_shop.stg_orders", "COMPLETE"),
        ("model.foreign_shop.customer_orders", "COMPLETE"),
        ("model.fx_money.fx_currencies", "COMPLETE"),  # a package's model
        ("model.foreign_shop.broken_cast", "FAIL"),
    ]:
        start, end = jobs[name]
        assert (start["eventType"], end["eventType"]) == ("START", state), name
        assert start["run"]["runId"] == end["run"]["runId"]
        parent = end["run"]["facets"]["parent"]
        parent_job = "foreign_shop.seed" if name.startswith("seed.") else "foreign_shop.run"
        assert (parent["job"]["namespace"], parent["job"]["name"]) == ("shop_jobs", parent_job)
        assert parent["run"]["runId"] == jobs[parent_job][0]["run"]["runId"]
    failed = jobs["model.foreign_shop.broken_cast"][1]["run"]["facets"]["errorMessage"]
    assert "Could not convert string" in failed["message"]
    # an ephemeral model has no relation and no run of its own; tests are not jobs here
    assert "model.foreign_shop.int_orders_eur" not in jobs
    assert not [j for j in jobs if j.startswith(("test.", "unit_test."))]

    # -- datasets: the target's relations, named database.schema.table in the file's namespace
    stg_orders = jobs["model.foreign_shop.stg_orders"][0]
    assert {d["namespace"] for d in stg_orders["inputs"] + stg_orders["outputs"]} == {namespace}
    assert _names(stg_orders["inputs"]) == {f"{DB}.dev.raw_orders"}  # a source
    assert _names(stg_orders["outputs"]) == {f"{DB}.dev.stg_orders"}
    mart = jobs["model.foreign_shop.customer_orders"][1]
    # refs, the ephemeral int_orders_eur standing for what it reads (stg_orders, fx_currencies)
    assert _names(mart["inputs"]) == {
        f"{DB}.dev.stg_customers",
        f"{DB}.dev.stg_orders",
        f"{DB}.dev.fx_currencies",
    }
    assert _names(mart["outputs"]) == {f"{DB}.dev.customer_orders"}
    assert jobs["seed.foreign_shop.raw_orders"][0]["inputs"] == []


class _Receiver(BaseHTTPRequestHandler):
    """An OpenLineage HTTP endpoint on loopback: keeps each request's path and JSON body."""

    received: list[tuple[str, dict[str, Any]]]
    arrived: threading.Condition

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.arrived:
            self.received.append((self.path, json.loads(body)))
            self.arrived.notify_all()
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Handler", (_Receiver,), {"received": [], "arrived": threading.Condition()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_http_transport_posts_the_events_to_a_receiver(
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    receiver: tuple[str, type[_Receiver]],
) -> None:
    url, handler = receiver
    database = tmp_path / f"{DB}.duckdb"
    monkeypatch.setenv("FOREIGN_DUCKDB_PATH", str(database))
    monkeypatch.setenv("OPENLINEAGE_URL", url)

    with DbtSession(_settings(project)) as session:
        assert session.invoke(["seed", "--select", "raw_orders"]).success
        assert session.invoke(["run", "--select", "stg_orders"]).success

    with handler.arrived:  # the client posts synchronously; a bounded wait all the same
        handler.arrived.wait_for(lambda: len(handler.received) >= 8, timeout=30)
    paths = {path for path, _ in handler.received}
    assert paths == {"/api/v1/lineage"}  # the client's endpoint
    events = [body for _, body in handler.received]
    for event in events:
        _validate(event)
    jobs = _by_job(events)
    model = jobs["model.foreign_shop.stg_orders"]
    assert [e["eventType"] for e in model] == ["START", "COMPLETE"]
    assert _names(model[1]["inputs"]) == {f"{DB}.dev.raw_orders"}
    assert _names(model[1]["outputs"]) == {f"{DB}.dev.stg_orders"}
    assert [e["eventType"] for e in jobs["foreign_shop.run"]] == ["START", "COMPLETE"]


def test_off_by_default_the_client_is_not_imported_and_the_base_install_has_none(
    tmp_path: Path,
) -> None:
    """With the client installed but the setting off, a session runs dbt without importing
    it; the base install has no client, and turning the setting on says what to install."""
    run_and_check = (
        "import sys\n"
        "from dbt_runner import DbtSession, Settings\n"
        "import dbt_runner.airflow, dbt_runner.cli\n"
        "with DbtSession(Settings(warehouse={'path': sys.argv[1]})) as s:\n"
        "    assert s.invoke(['parse']).success\n"
        "print('imported' if 'openlineage' in sys.modules else 'not imported')\n"
    )
    here = subprocess.run(
        [sys.executable, "-c", run_and_check, str(tmp_path / "a.duckdb")],
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(tmp_path),
    )
    assert here.returncode == 0, here.stderr[-3000:]
    assert here.stdout.strip().splitlines()[-1] == "not imported"

    from tests._venvs import REQUIREMENTS, cached_venv

    base = cached_venv("base", REQUIREMENTS["base"])  # `pip install .`: no extras
    enabled = (
        "import importlib.util\n"
        "from dbt_runner import ConfigurationError, DbtSession, Settings\n"
        "assert importlib.util.find_spec('openlineage') is None, 'a base dependency'\n"
        "try:\n"
        "    DbtSession(Settings(openlineage={'enabled': True}))\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    there = subprocess.run(
        [str(base / "python"), "-c", enabled],
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(tmp_path),
    )
    assert there.returncode == 0, there.stderr[-3000:]
    assert "pip install 'dbt-runner[openlineage]'" in there.stdout


def _clean_env(tmp_path: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBT_", "OPENLINEAGE"))}
    env["DBT_RUNNER_STATE_DIR"] = str(tmp_path / "state")
    return env
