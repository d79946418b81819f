"""The artifact cache's own seams: entries, the fingerprint, stores, settings, keys.

The claims about real stores and real dbt runs are in
``tests/integration/test_artifact_cache.py`` (a local directory and S3 on moto).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from dbt_runner import ConfigurationError, DbtSession, Settings
from dbt_runner._artifacts import (
    ArtifactCache,
    BadEntry,
    LocalStore,
    SessionArtifacts,
    _explain,
    _failed_nodes,
    fingerprint,
    open_store,
    pack,
    unpack,
)
from dbt_runner._dbt import ParseInputs


# ---------------------------------------------------------------------- entries
def test_an_entry_round_trips() -> None:
    data = pack({"kind": "parse", "fingerprint": "f" * 64}, {"partial_parse.msgpack": b"\x81x"})
    header, files = unpack(data, kind="parse", fingerprint="f" * 64)
    assert files == {"partial_parse.msgpack": b"\x81x"}
    assert header["format"] == 1


@pytest.mark.parametrize(
    ("expect", "match"),
    [({"fingerprint": "0" * 64}, "fingerprint"), ({"kind": "results"}, "kind")],
)
def test_a_foreign_entry_is_refused(expect: dict[str, str], match: str) -> None:
    data = pack({"kind": "parse", "fingerprint": "f" * 64}, {"a": b"1"})
    with pytest.raises(BadEntry, match=match):
        unpack(data, **expect)


def test_an_entry_of_another_format_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("header.json", json.dumps({"format": 99, "files": {}}))
    with pytest.raises(BadEntry, match="format 99"):
        unpack(buffer.getvalue())


def test_a_file_that_does_not_match_its_checksum_is_refused() -> None:
    header, _ = unpack(pack({"kind": "parse"}, {"a": b"original"}))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:  # same header, other bytes: bit rot, a bad copy
        zf.writestr("header.json", json.dumps(header))
        zf.writestr("a", b"tampered")
    with pytest.raises(BadEntry, match="checksum"):
        unpack(buffer.getvalue())


@pytest.mark.parametrize("data", [b"", b"not a zip", b"PK\x03\x04" + b"\0" * 40])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(BadEntry, match="not a readable entry"):
        unpack(data)


# ---------------------------------------------------------------------- fingerprint
@pytest.fixture
def inputs(tmp_path: Path) -> ParseInputs:
    project = tmp_path / "proj"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: p\nprofile: p\n")
    (project / "models" / "a.sql").write_text("select 1")
    return ParseInputs(
        versions=(("dbt-core", "1.11.16"), ("dbt-duckdb", "1.11.1")),
        install_dir="/site-packages/dbt",
        project_name="p",
        profile_name="p",
        target_name="dev",
        adapter_type="duckdb",
        connection=(("path", "'/data/w.duckdb'"), ("schema", "'staging'")),
        env_vars=(),
        source_dirs=(project / "models",),
        plugins=(),
    )


def test_the_fingerprint_is_stable_and_follows_each_input(inputs: ParseInputs) -> None:
    project = inputs.source_dirs[0].parent
    base = fingerprint(inputs, project, None)
    assert fingerprint(inputs, project, None) == base
    assert fingerprint(inputs, project, "{}").digest == base.digest
    # the same vars as YAML or JSON, keys in any order
    assert (
        fingerprint(inputs, project, "b: 2\na: 1").digest
        == fingerprint(inputs, project, '{"a": 1, "b": 2}').digest
    )
    variants = {
        "dbt version": replace(
            inputs, versions=(("dbt-core", "1.11.17"), ("dbt-duckdb", "1.11.1"))
        ),
        "adapter version": replace(inputs, versions=(("dbt-core", "1.11.16"),)),
        "install dir": replace(inputs, install_dir="/elsewhere/dbt"),
        "target": replace(inputs, target_name="prod"),
        "connection": replace(inputs, connection=(("path", "'/data/other.duckdb'"),)),
        "project env vars": replace(inputs, env_vars=(("SCHEMA_SUFFIX", "x"),)),
        "plugins": replace(inputs, plugins=("dbt_loom",)),
    }
    digests = {name: fingerprint(v, project, None).digest for name, v in variants.items()}
    digests["vars"] = fingerprint(inputs, project, "{a: 1}").digest
    digests["project dir"] = fingerprint(inputs, project.parent, None).digest
    assert base.digest not in digests.values()
    assert len(set(digests.values())) == len(digests)


def test_a_miss_names_what_changed(inputs: ParseInputs) -> None:
    project = inputs.source_dirs[0].parent
    old = fingerprint(inputs, project, None)
    written = {"components": old.components, "files": old.files}
    upgraded = replace(inputs, versions=(("dbt-core", "1.11.17"), ("dbt-duckdb", "1.11.1")))
    assert _explain(written, fingerprint(upgraded, project, None)) == (
        "dbt or adapter versions changed (dbt-core 1.11.16, dbt-duckdb 1.11.1 -> "
        "dbt-core 1.11.17, dbt-duckdb 1.11.1)"
    )
    (project / "models" / "a.sql").write_text("select 2")
    (project / "models" / "b.sql").write_text("select 3")
    assert _explain(written, fingerprint(inputs, project, "{x: 1}")) == (
        "--vars changed; project files changed: models/a.sql, models/b.sql"
    )


def test_the_state_dir_inside_a_source_dir_is_not_hashed(inputs: ParseInputs) -> None:
    project = inputs.source_dirs[0].parent
    state = project / "models" / "target"  # model-paths: ["."]-like layouts
    state.mkdir()
    before = fingerprint(inputs, project, None, exclude=[state])
    (state / "run_results.json").write_text("{}")
    assert fingerprint(inputs, project, None, exclude=[state]).digest == before.digest


# ---------------------------------------------------------------------- stores
def test_a_local_store_replaces_whole_files(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "cache"))
    assert isinstance(store, LocalStore)
    assert store.get("parse/x.zip") is None
    store.put("parse/x.zip", b"one")
    store.put("parse/x.zip", b"two")
    assert store.get("parse/x.zip") == b"two"
    assert [p.name for p in (tmp_path / "cache" / "parse").iterdir()] == ["x.zip"]


def test_s3_without_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # what a base install has
    with pytest.raises(ConfigurationError, match=r"dbt-runner\[s3\]"):
        open_store("s3://bucket/prefix")


class _Unreachable:
    def get(self, key: str) -> bytes | None:
        raise ConnectionError("endpoint unreachable")

    def put(self, key: str, data: bytes) -> None:
        raise ConnectionError("endpoint unreachable")

    def describe(self, key: str) -> str:
        return f"s3://down/{key}"


def test_an_unreachable_store_is_a_logged_miss(
    inputs: ParseInputs, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ArtifactCache(_Unreachable())
    fp = fingerprint(inputs, inputs.source_dirs[0].parent, None)
    with caplog.at_level(logging.WARNING, logger="dbt_runner.cache"):
        hit, why = cache.load_parse(fp)
        saved = cache.save_parse(fp, {"partial_parse.msgpack": b"\x80"}, object())
    assert hit is None and why.startswith("no entry for fingerprint")
    assert saved is False
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "artifact cache",
        "artifact cache",
        "artifact cache",
    ]
    assert all("ConnectionError: endpoint unreachable" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------- settings, keys
@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("", "is empty"),
        ("gs://bucket/x", "gs:// is not supported"),
        ("s3://", "is not an S3 bucket name"),
        ("s3://Upper_Case/x", "is not an S3 bucket name"),
    ],
)
def test_a_bad_cache_location_is_a_configuration_error(value: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Settings(artifact_cache=value)


@pytest.mark.parametrize(
    "value", ["/mnt/shared/dbt", "relative/dir", "s3://my-bucket", "s3://b1.x/p/q"]
)
def test_a_directory_or_an_s3_url_is_accepted(value: str) -> None:
    assert Settings(artifact_cache=value).artifact_cache == value


def test_resume_needs_the_artifact_cache() -> None:
    with pytest.raises(ConfigurationError, match="DBT_RUNNER_ARTIFACT_CACHE"):
        DbtSession(Settings()).invoke(["run"], resume="run-1")


def _results(*statuses: str) -> bytes:
    entries = [{"unique_id": f"model.p.m{i}", "status": st} for i, st in enumerate(statuses)]
    return json.dumps(
        {"metadata": {"generated_at": "2026-12-06T04:00:00Z"}, "results": entries}
    ).encode()


def test_resume_takes_only_the_same_runs_previous_try(tmp_path: Path) -> None:
    artifacts = SessionArtifacts(
        ArtifactCache(open_store(str(tmp_path / "cache"))), tmp_path / "proj", tmp_path / "state"
    )
    run = ["run", "--select", "tag:staging"]
    target = tmp_path / "state" / "target"

    def resumed(run_id: str) -> bytes | None:
        return artifacts.before_command(run, "tgt", target, resume=run_id)[0]

    assert resumed("run-1") is None  # a first try: nothing to resume from
    failed = _results("success", "error")
    artifacts.after_command(run, "tgt", target, failed, "run-1")
    assert resumed("run-1") == failed  # the next try of run-1 re-runs what failed
    assert resumed("run-2") is None  # another run never resumes from run-1's failures
    assert artifacts.before_command(run, "tgt", target, resume=None) == (None, None)
    other = ["run", "--select", "tag:other"]
    assert artifacts.before_command(other, "tgt", target, resume="run-1") == (None, None)
    artifacts.after_command(run, "tgt", target, _results("success", "success"), "run-1")
    assert resumed("run-1") is None  # it succeeded: a further try runs it all


def test_a_selection_key_ignores_threads_only() -> None:
    key = SessionArtifacts.selection_key
    run = ["run", "--select", "tag:staging"]
    assert key([*run, "--threads", "3"]) == key(run) == key([*run, "--threads=8"])
    assert key(["run", "--select", "tag:other"]) != key(run)
    assert key(["build", "--select", "tag:staging"]) != key(run)


def test_failed_nodes_are_what_dbt_retry_re_runs() -> None:
    results = {
        "results": [
            {"unique_id": "model.p.a", "status": "success"},
            {"unique_id": "model.p.b", "status": "error"},
            {"unique_id": "model.p.c", "status": "skipped"},
            {"unique_id": "test.p.d", "status": "fail"},
            {"unique_id": "test.p.e", "status": "pass"},
        ]
    }
    assert _failed_nodes(json.dumps(results).encode()) == ["model.p.b", "model.p.c", "test.p.d"]
    assert _failed_nodes(b"not json") == []
    assert _failed_nodes(None) == []


@pytest.mark.parametrize("command", ["staging", "test", "cycle"])
def test_the_cli_resume_option_needs_the_cache(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from dbt_runner.cli import main

    for name in [n for n in os.environ if n.startswith("DBT_RUNNER_")]:
        monkeypatch.delenv(name)
    env = {
        "DBT_RUNNER_WAREHOUSE__PATH": str(tmp_path / "cli.duckdb"),
        "DBT_RUNNER_STATE_DIR": str(tmp_path / "state"),
    }
    result = CliRunner().invoke(main, [command, "--resume", "manual__1"], env=env)
    assert result.exit_code == 2, result.output
    assert "DBT_RUNNER_ARTIFACT_CACHE" in result.output
