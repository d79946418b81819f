"""The artifact cache on a real store: a local directory and S3 on a loopback moto server.

Every test runs against both stores (``store`` is parametrised): the same claims hold
for a shared volume and for ``s3://bucket/prefix``. Sessions in one test stand for
fresh containers: each has its own empty working directory and state dir (no
``target/``) and only the cache in common; the writer and retry tests start real
processes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dbt_runner import DbtSession, Settings
from dbt_runner._artifacts import BadEntry, unpack
from tests._projects import write_project

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BUCKET = "dbr-artifacts"
#: bound on every child process of these tests
CHILD_TIMEOUT_S = 300


class Cache:
    """The store a test uses, and raw access to its objects (to look at or damage them)."""

    def __init__(self, location: str, s3: Any = None) -> None:
        self.location = location
        self._s3 = s3

    def objects(self) -> list[str]:
        if self._s3 is None:
            root = Path(self.location)
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        prefix = self.location.removeprefix(f"s3://{BUCKET}/") + "/"
        listed = self._s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        return sorted(o["Key"].removeprefix(prefix) for o in listed)

    def read(self, key: str) -> bytes:
        if self._s3 is None:
            return (Path(self.location) / key).read_bytes()
        prefix = self.location.removeprefix(f"s3://{BUCKET}/")
        body: bytes = self._s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read()
        return body

    def write(self, key: str, data: bytes) -> None:
        if self._s3 is None:
            (Path(self.location) / key).write_bytes(data)
            return
        prefix = self.location.removeprefix(f"s3://{BUCKET}/")
        self._s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{key}", Body=data)

    def parse_keys(self) -> list[str]:
        return [k for k in self.objects() if k.startswith("parse/") and k.endswith(".zip")]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Cache:
    if request.param == "local":
        return Cache(str(tmp_path / "shared-volume" / "dbt-cache"))
    request.getfixturevalue("moto_env")  # this test's environment points at the server
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    return Cache(f"s3://{BUCKET}/team-a/dbt", s3)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small DuckDB project: two models that read raw tables not there at first, one
    that reads an env var at parse time, one that reads a var."""
    return write_project(
        tmp_path,
        "cache_proj",
        {
            "ok_a": "select 1 as id",
            "fail_x": "select id from main.raw_x",
            "fail_y": "select id from main.raw_y",
            "region": 'select \'{{ env_var("DBR_CACHE_TEST_REGION", "eu") }}\' as region',
            "factor": "select {{ var('factor', 1) }} as factor",
        },
    )


class Containers:
    """Fresh "containers": sessions each in a new empty working dir and state dir."""

    def __init__(self, tmp_path: Path, store: Cache, monkeypatch: pytest.MonkeyPatch):
        self.tmp_path = tmp_path
        self.store = store
        self.monkeypatch = monkeypatch
        self.db = tmp_path / "warehouse.duckdb"
        self.count = 0

    def fresh_dir(self) -> Path:
        self.count += 1
        work = self.tmp_path / f"container-{self.count}"
        work.mkdir()
        return work

    def settings(self, work: Path, project: Path | None, **extra: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "state_dir": str(work / "state"),
            "artifact_cache": self.store.location,
            "warehouse": {"type": "duckdb", "path": str(self.db)},
            **extra,
        }
        if project is not None:
            values["project_dir"] = str(project)
        return values

    def session(self, project: Path | None, **extra: Any) -> DbtSession:
        work = self.fresh_dir()
        self.monkeypatch.chdir(work)
        return DbtSession(Settings(**self.settings(work, project, **extra)))


@pytest.fixture
def containers(tmp_path: Path, store: Cache, monkeypatch: pytest.MonkeyPatch) -> Containers:
    monkeypatch.delenv("DBR_CACHE_TEST_REGION", raising=False)
    return Containers(tmp_path, store, monkeypatch)


def _cache_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dbt_runner.cache"]


def _table(db: Path, name: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db)) as con:
        return con.execute(f"select * from staging.{name}").fetchall()


# ---------------------------------------------------------------------- parse cache
def test_a_fresh_container_with_a_warm_cache_does_not_parse(
    containers: Containers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dbt_runner")
    ls = ["ls", "--resource-type", "model", "--select", "tag:staging", "--output", "name"]
    with containers.session(None) as first:  # the bundled project
        listed = first.invoke(ls).raise_for_status().output
        assert first.parse_count == 1
    lines = _cache_lines(caplog)
    assert any(line.startswith("full parse: cache miss because no entry") for line in lines)
    assert len(containers.store.parse_keys()) == 1
    caplog.clear()

    with containers.session(None) as second:
        again = second.invoke(ls).raise_for_status().output
        assert second.parse_count == 0  # dbt never parsed: the cached manifest was used
        # target/ as dbt's parse leaves it: a later parse there is partial
        for name in ("partial_parse.msgpack", "manifest.json", "semantic_manifest.json"):
            assert (second.state_dir / "target" / name).is_file(), name
    assert again == listed
    assert sorted(listed) == [
        "stg_ecs_order_info",
        "stg_uni_tracking_info",
        "stg_uni_tracking_spath",
    ]
    hit = [line for line in _cache_lines(caplog) if line.startswith("parse: cache hit ")]
    assert len(hit) == 1, _cache_lines(caplog)


def test_a_project_edit_vars_change_or_env_change_is_a_miss(
    containers: Containers, project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dbt_runner")
    select = ["run", "--select", "ok_a", "region", "factor"]
    with containers.session(project) as first:
        first.invoke(select).raise_for_status()
    assert _table(containers.db, "ok_a") == [(1,)]

    (project / "models" / "ok_a.sql").write_text("select 2 as id")
    caplog.clear()
    with containers.session(project) as edited:
        edited.invoke(select).raise_for_status()
        assert edited.parse_count == 1  # parsed again: the old entry was not used
    assert _table(containers.db, "ok_a") == [(2,)]  # the edit is what ran
    assert any(
        "cache miss because" in line and "project files changed: models/ok_a.sql" in line
        for line in _cache_lines(caplog)
    ), _cache_lines(caplog)

    caplog.clear()
    with containers.session(project, vars={"factor": 7}) as with_vars:
        with_vars.invoke(select).raise_for_status()
        assert with_vars.parse_count == 1
    assert _table(containers.db, "factor") == [(7,)]
    assert any("--vars changed" in line for line in _cache_lines(caplog)), _cache_lines(caplog)

    caplog.clear()
    containers.monkeypatch.setenv("DBR_CACHE_TEST_REGION", "ap")
    with containers.session(project) as with_env:
        with_env.invoke(select).raise_for_status()
        assert with_env.parse_count == 1
    assert _table(containers.db, "region") == [("ap",)]
    assert any("env var DBR_CACHE_TEST_REGION differs" in line for line in _cache_lines(caplog)), (
        _cache_lines(caplog)
    )

    caplog.clear()  # and the same inputs again: a hit
    with containers.session(project) as same:
        same.invoke(select).raise_for_status()
        assert same.parse_count == 0
    assert _table(containers.db, "region") == [("ap",)]


def test_another_dbt_version_in_the_fingerprint_is_a_miss(
    containers: Containers, project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from dbt_runner._dbt import fingerprint as seam

    caplog.set_level(logging.INFO, logger="dbt_runner")
    with containers.session(project) as first:
        first.invoke(["ls"]).raise_for_status()
    real = seam._versions()
    faked = tuple((n, v + ".post1" if n == "dbt-core" else v) for n, v in real)
    containers.monkeypatch.setattr(seam, "_versions", lambda: faked)
    caplog.clear()
    with containers.session(project) as upgraded:
        upgraded.invoke(["ls"]).raise_for_status()
        assert upgraded.parse_count == 1
    core = dict(real)["dbt-core"]
    assert any(
        "dbt or adapter versions changed" in line and f"dbt-core {core}.post1" in line
        for line in _cache_lines(caplog)
    ), _cache_lines(caplog)
    assert len(containers.store.parse_keys()) == 2  # each version its own entry


def test_a_corrupt_or_foreign_entry_is_skipped_and_replaced(
    containers: Containers, project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dbt_runner")
    with containers.session(project) as first:
        first.invoke(["ls"]).raise_for_status()
    (key,) = containers.store.parse_keys()
    good = containers.store.read(key)
    containers.store.write(key, good[: len(good) // 2])  # a torn write of some other tool
    caplog.clear()
    with containers.session(project) as second:
        second.invoke(["ls"]).raise_for_status()
        assert second.parse_count == 1
    lines = _cache_lines(caplog)
    assert any(line.startswith("artifact cache: skipping") for line in lines), lines
    unusable = "full parse: cache miss because the cached entry is unusable"
    assert any(unusable in line for line in lines), lines
    unpack(containers.store.read(key))  # rewritten whole by the session that parsed

    # a foreign entry: a valid one, written under another fingerprint's key
    foreign = f"parse/{'0' * 64}.zip"
    containers.store.write(foreign, good)
    with pytest.raises(BadEntry, match="fingerprint"):
        unpack(containers.store.read(foreign), fingerprint="0" * 64)
    caplog.clear()
    with containers.session(project) as third:
        third.invoke(["ls"]).raise_for_status()
        assert third.parse_count == 0  # its own, good entry


# ---------------------------------------------------------------------- real processes
_CHILD = textwrap.dedent(
    """
    import gc, json, logging, os, sys, time
    from pathlib import Path
    config = json.loads(sys.argv[1])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from dbt_runner import DbtSession, Settings, _dbt
    if config.get("console"):
        _dbt.own_process()  # what the dbt-runner console script does first
    go = config.get("go")
    if go:  # start together: wait for the test's signal (bounded)
        Path(config["ready"]).touch()
        deadline = time.monotonic() + 120
        while not Path(go).exists():
            if time.monotonic() > deadline:
                sys.exit("no go signal")
            time.sleep(0.01)
    with DbtSession(Settings(**config["settings"])) as session:
        result = session.invoke(config["args"], resume=config.get("resume"))
        print(json.dumps({
            "success": result.success,
            "nodes": {n.name: n.status for n in result.nodes},
            "parse_count": session.parse_count,
            "attempts": [list(a.args[:1]) for a in result.attempt_log],
            "phases": [p.name for p in result.phases],
            "frozen": gc.get_freeze_count(),
        }))
    """
)


def _child(
    containers: Containers,
    project: Path,
    args: list[str],
    settings: dict[str, Any] | None = None,
    **config: Any,
) -> Any:
    work = containers.fresh_dir()
    values = containers.settings(work, project, **(settings or {}))
    payload = {"settings": values, "args": args, **config}
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(payload)],
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> tuple[dict[str, Any], str]:
    out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), err


def test_a_fresh_process_reports_dbts_import_and_keeps_a_library_hosts_collector(
    containers: Containers, project: Path
) -> None:
    """A cache hit in a new process still says where its time went: dbt's import is the
    ``import`` phase (the cache's lookup needs dbt, so it comes first). The console
    script's process freezes dbt's import heap out of the collector's way, and so does a
    library host that sets ``DBT_RUNNER_GC_FREEZE``; any other keeps its collector as it
    was."""
    with containers.session(project) as first:
        first.invoke(["ls"]).raise_for_status()  # fills the cache
    library, _ = _result(_child(containers, project, ["ls"]))
    console, err = _result(_child(containers, project, ["ls"], console=True))
    opted_in, _ = _result(_child(containers, project, ["ls"], settings={"gc_freeze": True}))
    for result in (library, console, opted_in):
        assert result["success"]
        assert result["parse_count"] == 0  # the cache's manifest
        assert result["phases"] == ["open", "import"]
    assert "parse: cache hit" in err
    assert library["frozen"] == 0
    assert console["frozen"] > 100_000  # dbt's and the adapter's modules
    assert opted_in["frozen"] > 100_000


def test_two_processes_writing_the_same_entry_at_once_leave_a_good_one(
    containers: Containers, project: Path, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    ready = [tmp_path / "ready-1", tmp_path / "ready-2"]
    procs = [_child(containers, project, ["ls"], go=str(go), ready=str(r)) for r in ready]
    try:
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in ready):  # both imported and waiting
            assert time.monotonic() < deadline, "the writers did not start"
            assert all(p.poll() is None for p in procs), "a writer exited early"
            time.sleep(0.01)
        go.touch()
        results = [_result(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    for result, _ in results:
        assert result["success"]
    # at least one parsed and wrote (both do when neither finished before the other
    # looked: the common case, not a condition of the test)
    writers = [err for _, err in results if "full parse: cache miss because" in err]
    assert writers
    (key,) = containers.store.parse_keys()
    _, files = unpack(containers.store.read(key), kind="parse")
    assert set(files) == {"partial_parse.msgpack", "manifest.json", "semantic_manifest.json"}
    assert not [k for k in containers.store.objects() if k.endswith(".tmp")]  # no leftovers
    with containers.session(project) as reader:
        reader.invoke(["ls"]).raise_for_status()
        assert reader.parse_count == 0


def test_retry_state_reaches_a_new_process_in_a_new_directory(
    containers: Containers, project: Path
) -> None:
    run = ["run", "--select", "ok_a", "fail_x", "fail_y"]
    # try 1 of the orchestrator's run "run-1", in one container
    first, err = _result(_child(containers, project, run, resume="run-1"))
    assert "resume: running all of dbt run" in err and "no earlier try of run 'run-1'" in err
    assert not first["success"]
    assert first["nodes"] == {"ok_a": "success", "fail_x": "error", "fail_y": "error"}

    with duckdb.connect(str(containers.db)) as con:
        con.execute("create table main.raw_x as select 1 as id")
    # plain `dbt retry` in a new container: the previous results come from the cache
    second, err = _result(_child(containers, project, ["retry"]))
    assert "the previous results come from the artifact cache" in err
    assert second["nodes"] == {"fail_x": "success", "fail_y": "error"}  # only what failed
    assert second["parse_count"] == 1 and "parse: cache hit" in err  # dbt's own parse, partial

    with duckdb.connect(str(containers.db)) as con:
        con.execute("create table main.raw_y as select 2 as id")
    # the orchestrator's next try of run-1, in a third container: only what still failed
    third, err = _result(_child(containers, project, run, resume="run-1"))
    assert "resume: re-running only the 1 node(s)" in err
    assert third["success"] and third["nodes"] == {"fail_y": "success"}
    assert third["attempts"] == [["retry"]]

    # run-1 succeeded: another try of it (or another run) runs all of the command
    with containers.session(project) as fourth:
        again = fourth.invoke(run, resume="run-1")
    assert {n.name: n.status for n in again.nodes} == {
        "ok_a": "success",
        "fail_x": "success",
        "fail_y": "success",
    }


# ---------------------------------------------------------------------- the stores alone
_WRITER = textwrap.dedent(
    """
    import sys
    from dbt_runner._artifacts import open_store, pack
    location, key, tag, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = open_store(location)
    payload = (tag * 400_000).encode()  # ~1 MB per entry: a PUT that takes a while
    for i in range(rounds):
        store.put(key, pack({"kind": "stress", "writer": tag, "round": i}, {"data": payload}))
    """
)


@pytest.fixture
def writers(store: Cache) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def test_concurrent_writers_never_leave_a_partial_entry(
    store: Cache, writers: list[subprocess.Popen[str]]
) -> None:
    from dbt_runner._artifacts import open_store

    rounds = 15
    key = "parse/stress.zip"
    for tag in ("a", "b"):
        writers.append(
            subprocess.Popen(
                [sys.executable, "-c", _WRITER, store.location, key, tag, str(rounds)],
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    reader = open_store(store.location)
    seen: set[str] = set()
    reads = 0
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while any(p.poll() is None for p in writers) and reads < 2000:
        assert time.monotonic() < deadline
        data = reader.get(key)
        if data is not None:
            header, files = unpack(data, kind="stress")  # whole, checksums right, or raises
            assert files["data"] == (header["writer"] * 400_000).encode()
            seen.add(header["writer"])
            reads += 1
    for p in writers:
        _, err = p.communicate(timeout=CHILD_TIMEOUT_S)
        assert p.returncode == 0, err[-2000:]
    header, _ = unpack(reader.get(key) or b"", kind="stress")
    assert header["round"] == rounds - 1
    assert reads > 0 and seen  # the reader saw entries while both wrote
    assert not [k for k in store.objects() if k.endswith(".tmp")]


def test_a_password_profile_hits_across_sessions_and_never_reaches_the_cache(
    store: Cache, pg_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from testbed.settings import warehouse_of

    counter = iter(range(2))

    def session() -> DbtSession:
        work = tmp_path / f"pg-container-{next(counter)}"
        work.mkdir()
        monkeypatch.chdir(work)
        return DbtSession(
            Settings(
                state_dir=work / "state",
                artifact_cache=store.location,
                warehouse=warehouse_of(pg_db),
            )
        )

    with session() as first:  # the generated profile reads the password from a secret env var
        first.invoke(["ls"]).raise_for_status()
    with session() as second:  # another random secret variable name: still the same inputs
        second.invoke(["ls"]).raise_for_status()
        assert second.parse_count == 0
    password = pg_db.password.encode()
    assert len(password) >= 8
    for key in store.objects():
        data = store.read(key)
        assert password not in data, key
        if key.endswith(".zip"):
            _, files = unpack(data)
            assert all(password not in body for body in files.values()), key
