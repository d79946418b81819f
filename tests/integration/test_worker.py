"""The warm worker (``dbt-runner serve``) for real: a real process, real dbt, real sockets.

- results through the worker equal an in-process session's on an identical copy
  (DuckDB, and PostgreSQL over TLS through the real sshd);
- a killed child is a classified failure and the worker serves the next request;
- a stale socket file is replaced; the socket is owner-only (0600);
- with no worker, the client runs in-process and says so.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import DbtSession, ErrorKind, RunResult, Settings, Step, WorkerClient
from testbed.soak import runner_env
from testbed.sshd import SshdServer, descendants, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MINI = Path(__file__).resolve().parents[1] / "fixtures" / "mini_project"
READY_S = 120.0


def _env(settings: Settings) -> dict[str, str]:
    """The DBT_RUNNER_* environment equal to ``settings`` (what the worker reads)."""
    # what the settings were given (a default left unset: a DuckDB warehouse takes no
    # METHOD, not even the default one)
    dumped: dict[str, Any] = settings.model_dump(exclude_none=True, exclude_unset=True)
    top = {k: dumped[k] for k in ("project_dir", "state_dir", "threads") if k in dumped}
    return runner_env(top, **{s: dumped.get(s, {}) for s in ("warehouse", "ssh", "retry")})


class WorkerProcess:
    """``dbt-runner serve`` in a subprocess, ready once its socket exists."""

    def __init__(self, settings: Settings, socket_path: Path) -> None:
        self.socket_path = socket_path
        script = Path(sys.executable).with_name("dbt-runner")
        self.proc = subprocess.Popen(
            [str(script), "serve", "--socket", str(socket_path)],
            env=_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        ready = wait_until(
            lambda: (
                any("worker ready" in line for line in self.output) or self.proc.poll() is not None
            ),
            timeout=READY_S,
        )
        assert ready and self.proc.poll() is None, "".join(self.output)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def children(self) -> list[int]:
        return descendants(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def duckdb_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tmp_path = tmp_path_factory.mktemp("worker")
    return Settings(
        project_dir=MINI,
        warehouse={"type": "duckdb", "path": str(tmp_path / "w.duckdb"), "schema": "stg"},
        state_dir=tmp_path / "state",
        retry={"attempts": 1},
    )


@pytest.fixture(scope="module")
def worker(
    duckdb_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One warm worker for the module's DuckDB tests (it serves them one after another)."""
    proc = WorkerProcess(duckdb_settings, tmp_path_factory.mktemp("sock") / "w.sock")
    try:
        yield proc
    finally:
        proc.stop()


def _shape(results: list[RunResult]) -> list[tuple[str, bool, list[tuple[str, str]]]]:
    """What a user compares: command, success, and each node's name and status."""
    return [(r.command, r.success, sorted((n.name, n.status) for n in r.nodes)) for r in results]


def _copy_settings(settings: Settings, tmp_path: Path, name: str) -> Settings:
    """The same settings on an identical copy of the DuckDB file and state."""
    path = Path(str(settings.warehouse.path))
    copy = tmp_path / f"{name}.duckdb"
    if path.exists():
        shutil.copy(path, copy)
    return settings.model_copy(
        update={
            "warehouse": settings.warehouse.model_copy(update={"path": copy}),
            "state_dir": tmp_path / f"{name}-state",
        }
    )


def test_cycle_through_the_worker_equals_in_process(
    worker: WorkerProcess, duckdb_settings: Settings, tmp_path: Path
) -> None:
    in_process_settings = _copy_settings(duckdb_settings, tmp_path, "inproc")
    client = WorkerClient(worker.socket_path, settings=duckdb_settings)
    through_worker = client.cycle(threads=3)
    assert client.last_ran_in_worker
    with DbtSession(in_process_settings) as session:
        expected = [session.run_staging(threads=3), session.run_tests(threads=3)]
    assert _shape(through_worker) == _shape(expected)
    assert all(r.success for r in through_worker)
    assert stat.S_IMODE(worker.socket_path.stat().st_mode) == 0o600
    # a second request is served by a new child of the same worker
    again = client.invoke(["run", "--select", "part_1"])
    assert client.last_ran_in_worker and again.success
    assert [n.name for n in again.nodes] == ["part_1"]


def test_a_request_that_ended_is_not_cancelled_when_its_client_hangs_up(
    duckdb_settings: Settings, tmp_path: Path
) -> None:
    """The client reads its result and closes the socket: the child that served it must
    not then log a cancel (it did, on every request: the child's watch on the socket took
    the client's hang-up after the result for a departure mid-run)."""
    settings = _copy_settings(duckdb_settings, tmp_path, "hangup")
    proc = WorkerProcess(settings, tmp_path / "w.sock")
    try:
        client = WorkerClient(proc.socket_path, settings=settings)
        for _ in range(2):
            assert client.invoke(["run", "--select", "part_1"]).success
            assert client.last_ran_in_worker
    finally:
        proc.stop()  # every child reaped and the worker's output read to its end
    proc._reader.join(READY_S)
    output = "".join(proc.output)
    assert output.count("DONE  model part_1 success") == 2, output
    assert "went away" not in output and "client cancelled" not in output, output


def test_a_killed_child_is_a_classified_failure_and_the_next_request_works(
    worker: WorkerProcess, duckdb_settings: Settings
) -> None:
    client = WorkerClient(worker.socket_path, settings=duckdb_settings)
    killed: list[int] = []

    class KillOnFirstRecord(logging.Handler):
        """The child's first forwarded log line: it is mid-request. Kill it there."""

        def emit(self, record: logging.LogRecord) -> None:
            if not killed:
                for pid in worker.children():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

    handler = KillOnFirstRecord(logging.INFO)
    logger = logging.getLogger("dbt_runner")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        (result,) = client.cycle(threads=3)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert killed, "no child to kill"
    assert not result.success
    assert result.error is not None and result.error.kind is ErrorKind.CONNECTION
    assert "SIGKILL" in result.error.message
    # the worker is still there and serves the next request
    after = client.run_staging(threads=3)
    assert client.last_ran_in_worker and after.success, after.summary()


def test_a_stale_socket_file_is_replaced(duckdb_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # a worker that died without removing its socket
    dead.close()
    assert path.exists()
    proc = WorkerProcess(duckdb_settings, path)
    try:
        assert any("stale worker socket" in line for line in proc.output)
        client = WorkerClient(path, settings=duckdb_settings)
        assert client.run_staging().success and client.last_ran_in_worker
    finally:
        proc.stop()
    assert not path.exists()  # SIGTERM removes it


def test_no_worker_runs_in_process_and_says_so(
    duckdb_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = WorkerClient(tmp_path / "nobody.sock", settings=duckdb_settings)
    with caplog.at_level(logging.INFO, logger="dbt_runner.worker"):
        result = client.run_staging(threads=3)
    assert result.success and not client.last_ran_in_worker
    assert any("running staging in-process" in r.getMessage() for r in caplog.records)


def test_a_client_without_settings_uses_the_worker_s_and_falls_back_to_its_own(
    worker: WorkerProcess, duckdb_settings: Settings, tmp_path: Path
) -> None:
    """The DAG's shape: the worker's configuration is authoritative; with no worker the
    client's fallback session (e.g. from Airflow connections) runs the steps."""
    opened: list[Settings] = []

    def fallback() -> DbtSession:
        settings = _copy_settings(duckdb_settings, tmp_path, "fallback")
        opened.append(settings)
        return DbtSession(settings)

    steps = [Step("run_staging", {"threads": 3}), Step("run_tests")]
    client = WorkerClient(worker.socket_path, fallback=fallback)
    ran = list(client.run_steps(steps).values())
    assert client.last_ran_in_worker and opened == []
    assert [r.command for r in ran] == ["run", "test"] and all(r.success for r in ran)
    nobody = WorkerClient(tmp_path / "nobody.sock", fallback=fallback)
    again = list(nobody.run_steps(steps).values())
    assert not nobody.last_ran_in_worker and len(opened) == 1
    assert _shape(again) == _shape(ran)


def test_other_settings_are_refused_and_run_in_process(
    worker: WorkerProcess, duckdb_settings: Settings, tmp_path: Path
) -> None:
    other = _copy_settings(duckdb_settings, tmp_path, "other")
    client = WorkerClient(worker.socket_path, settings=other)
    result = client.run_staging(threads=1)
    assert result.success and not client.last_ran_in_worker


def test_worker_through_the_bastion_equals_in_process(
    sshd: SshdServer, pg_db: Any, tmp_path: Path
) -> None:
    """PostgreSQL over TLS through the real sshd: the child opens its own tunnel."""
    from tests.integration.test_session_tunnel import load_raw, make_settings

    load_raw(pg_db, hours=1)
    settings = make_settings(pg_db, sshd, tmp_path / "state")
    proc = WorkerProcess(settings, tmp_path / "pg.sock")
    try:
        client = WorkerClient(proc.socket_path, settings=settings)
        logins = sshd.accepted_connections()
        first = client.cycle(threads=3)
        assert client.last_ran_in_worker
        assert wait_until(lambda: sshd.accepted_connections() == logins + 1, timeout=5)
    finally:
        proc.stop()
    with DbtSession(settings) as session:  # same data again: an incremental no-op cycle
        second = [session.run_staging(threads=3), session.run_tests(threads=3)]
    assert all(r.success for r in first), [r.summary() for r in first]
    assert _shape(first) == _shape(second)


def test_the_worker_reparses_in_the_parent_when_a_model_changes(tmp_path: Path) -> None:
    """Parsed once in the parent (children inherit the manifest); a changed model file
    is noticed before the next fork and its new SQL is what the next request runs."""
    import duckdb

    project = tmp_path / "project"
    shutil.copytree(MINI, project, ignore=shutil.ignore_patterns("target", "logs"))
    db = tmp_path / "reparse.duckdb"
    settings = Settings(
        project_dir=project,
        warehouse={"type": "duckdb", "path": str(db), "schema": "stg"},
        state_dir=tmp_path / "state",
        retry={"attempts": 1},
    )

    def part_1() -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(db), read_only=True)
        try:
            return con.execute("select part from stg.part_1").fetchall()
        finally:
            con.close()

    proc = WorkerProcess(settings, tmp_path / "r.sock")
    try:
        client = WorkerClient(proc.socket_path, settings=settings)
        first = client.invoke(["run", "--select", "part_1"])
        assert client.last_ran_in_worker and first.success, first.summary()
        assert part_1() == [(1,)]
        parses = sum("worker parsed the project" in line for line in proc.output)

        model = project / "models" / "part_1.sql"
        mtime = model.stat().st_mtime_ns
        model.write_text(model.read_text().replace("select 1 as part", "select 7 as part"))
        os.utime(model, ns=(mtime + 10**9, mtime + 10**9))  # a later mtime on any clock
        second = client.invoke(["run", "--select", "part_1"])
        assert client.last_ran_in_worker and second.success, second.summary()
        assert part_1() == [(7,)]
        assert wait_until(
            lambda: sum("worker parsed the project" in line for line in proc.output) == parses + 1,
            timeout=5,
        ), "".join(proc.output)

        third = client.invoke(["run", "--select", "part_1"])  # unchanged: no new parse
        assert third.success
    finally:
        proc.stop()
    assert sum("worker parsed the project" in line for line in proc.output) == parses + 1
