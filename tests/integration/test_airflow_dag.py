"""The example DAG, run for real by Apache Airflow 3 and 2.10 against PostgreSQL (and sshd).

Airflow reads its configuration once per process, so everything Airflow does
here happens in a child process with its own ``AIRFLOW_HOME`` (SQLite, no
example DAGs) and the connections given as ``AIRFLOW_CONN_*`` variables. The
child runs :func:`_drive` (this module, run as a script) and writes what it
saw as JSON; the test asserts on that, on the captured task log and on the
bastion's own count of SSH connections.

Airflow 3 is the test venv's own; Airflow 2.10 gets a venv of its own, built
once and cached for the run (:func:`tests._venvs.cached_venv`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from testbed._require import require_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = ROOT / "examples" / "airflow"
DAG_ID = "order_tracking_hybrid_dbt_dag"
TASK_ID = "dbt_staging"
#: the raw data: two hours of orders ending at T0 + 2 h
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
CHILD_TIMEOUT_S = 240

AIRFLOW_MISSING = "Apache Airflow 3 is not installed: pip install -e '.[airflow,test]'"
VENV_TIMEOUT_S = 600


def _airflow_available() -> bool:
    return importlib.util.find_spec("airflow") is not None


@pytest.fixture(scope="module", params=["airflow3", "airflow2"])
def airflow_python(request: pytest.FixtureRequest) -> str:
    """The Python that runs Airflow: this venv's (Airflow 3) or a cached Airflow 2.10 venv."""
    if request.param == "airflow3":
        require_service(_airflow_available(), AIRFLOW_MISSING)
        return sys.executable
    from tests._venvs import REQUIREMENTS, cached_venv

    try:
        bin_dir = cached_venv("airflow2", REQUIREMENTS["airflow2"], timeout_s=VENV_TIMEOUT_S)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        require_service(False, f"could not build the Airflow 2.10 venv: {exc}")
        raise
    return str(bin_dir / "python")


def _airflow_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no inherited AIRFLOW_* / DBT_RUNNER_* settings."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DBT_RUNNER_", "DBT_"))
    }
    home = tmp_path / "airflow_home"
    home.mkdir(exist_ok=True)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        # dbt's target/ and logs/ for this test only (not the repo's models_sql/target)
        DBT_RUNNER_STATE_DIR=str(tmp_path / "dbt_state"),
        DBT_RUNNER_RETRY__MAX_WAIT_S="1",
    )
    env.update(extra)
    return env


def _run_child(
    tmp_path: Path, env: dict[str, str], spec: dict[str, Any], python: str = sys.executable
) -> tuple[dict, str]:
    spec_path, out_path = tmp_path / "spec.json", tmp_path / "out.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [python, "-m", "tests.integration.test_airflow_dag", str(spec_path), str(out_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    output = proc.stdout + proc.stderr
    (tmp_path / "child.log").write_text(output)
    assert proc.returncode == 0, f"Airflow child failed ({proc.returncode}):\n{output[-6000:]}"
    return json.loads(out_path.read_text()), output


# ---------------------------------------------------------------------- tests
@pytest.mark.timeout(CHILD_TIMEOUT_S + VENV_TIMEOUT_S + 60)
def test_dag_file_parses_fast_without_importing_dbt(tmp_path: Path, airflow_python: str) -> None:
    out, _ = _run_child(tmp_path, _airflow_env(tmp_path), {"parse_only": True}, airflow_python)

    assert out["import_errors"] == {}
    assert out["dag_ids"] == [DAG_ID]
    # parsing must not pay for dbt: dbt_runner.airflow loads dbt when the task runs
    assert out["dbt_imported_by_parse"] is False
    assert out["parse_s"] < 5.0, out["parse_s"]
    print(f"DagBag parsed the folder in {out['parse_s']:.2f}s")
    dag = out["dag"]
    assert dag["task_ids"] == [TASK_ID]  # one task: one session, one tunnel
    assert dag["max_active_runs"] == 1
    assert dag["catchup"] is False
    assert dag["schedule"] == "*/15 * * * *"
    assert dag["retries"] >= 1
    assert dag["params"]["threads"] == 3


@pytest.mark.timeout(CHILD_TIMEOUT_S + 60)
def test_dag_runs_a_cycle_through_the_bastion(tmp_path: Path, pg_db: Any, sshd: Any) -> None:
    """dag.test(): staging + tests + audit on the hourly cycle, one SSH connection;
    then a cycle whose model fails fails the task, naming the node and dbt's message."""
    require_service(_airflow_available(), AIRFLOW_MISSING)
    from dbt_runner.synthetic import create_raw_tables, load_batch

    conn = pg_db.connect()
    try:
        create_raw_tables(conn, "postgres")
        load_batch(conn, "postgres", T0, T0 + 7200, orders_per_minute=5)
    finally:
        conn.close()

    key_text = Path(sshd.encrypted_key_path).read_text()
    warehouse = {
        "conn_type": "postgres",
        "host": pg_db.host,
        "port": pg_db.port,
        "login": pg_db.user,
        "password": pg_db.password,
        "schema": pg_db.dbname,
        "extra": {"sslmode": "disable"},
    }
    bastion = {
        "conn_type": "ssh",
        "host": sshd.host,
        "port": sshd.port,
        "login": sshd.user,
        # the key as text (the case that needs a private temp file), with its passphrase,
        # and the bastion's key pinned the way the SSH provider's host_key extra takes it
        "extra": {
            "private_key": key_text,
            "private_key_passphrase": sshd.key_passphrase,
            "host_key": sshd.host_public_key,
        },
    }
    lineage = tmp_path / "openlineage.jsonl"
    env = _airflow_env(
        tmp_path,
        AIRFLOW_CONN_DBT_WAREHOUSE=json.dumps(warehouse),
        AIRFLOW_CONN_DBT_BASTION=json.dumps(bastion),
        # OpenLineage from inside the task, to a file
        DBT_RUNNER_OPENLINEAGE__ENABLED="true",
        OPENLINEAGE__TRANSPORT__TYPE="file",
        OPENLINEAGE__TRANSPORT__LOG_FILE_PATH=str(lineage),
        OPENLINEAGE__TRANSPORT__APPEND="true",
    )
    spec = {
        "parse_only": False,
        "sshd_log": str(sshd.log_path),
        "dsn": pg_db.dsn,
        # 10:00 is the cycle that starts the hour: tests and audit are due
        "cycles": [
            {"name": "hourly", "logical_date": "2026-01-01T10:00:00+00:00"},
            # midnight starts the day: the whole-table tests instead of the recent ones
            {"name": "daily", "logical_date": "2026-01-01T00:00:00+00:00"},
            {
                "name": "broken",
                "logical_date": "2026-01-01T10:15:00+00:00",
                "before_sql": "drop table raw.uni_tracking_spath",
            },
        ],
    }
    accepted_before = sshd.accepted_connections()
    t0 = time.monotonic()
    out, output = _run_child(tmp_path, env, spec)
    elapsed = time.monotonic() - t0
    print(f"Airflow child took {elapsed:.1f}s")

    assert out["import_errors"] == {}
    hourly, daily, broken = out["cycles"]

    # -- the hourly cycle: one task, success, results in XCom, one SSH connection
    assert hourly["dag_run_state"] == "success", output[-4000:]
    assert hourly["task_states"] == {TASK_ID: "success"}
    assert hourly["try_numbers"] == {TASK_ID: 1}
    assert hourly["ssh_connections"] == 1
    xcom = hourly["xcom"]["return_value"]
    assert set(xcom) == {"staging", "tests", "audit"}
    json.dumps(xcom)  # plain JSON
    staging, tests, audit = xcom["staging"], xcom["tests"], xcom["audit"]
    assert staging["success"] and staging["command"] == "run" and staging["threads"] == 3
    assert {n["name"] for n in staging["nodes"]} == {
        "stg_ecs_order_info",
        "stg_uni_tracking_info",
        "stg_uni_tracking_spath",
    }
    assert all(n["status"] == "success" for n in staging["nodes"])
    assert tests["success"] and tests["command"] == "test"
    assert tests["nodes"] and all(n["resource_type"] == "test" for n in tests["nodes"])
    assert all(n["name"].startswith("recent_") for n in tests["nodes"])  # hourly: recent scope
    # each staging table the cycle wrote is an asset event in Airflow's metadata DB, named by
    # the warehouse itself (not the tunnel's local end), through the task's alias outlet
    base = f"postgres://{pg_db.host}:{pg_db.port}/{pg_db.dbname}/staging"
    assert sorted(e["uri"] for e in hourly["asset_events"]) == [
        f"{base}/stg_ecs_order_info",
        f"{base}/stg_uni_tracking_info",
        f"{base}/stg_uni_tracking_spath",
    ]
    assert {e["alias"] for e in hourly["asset_events"]} == {f"dbt_runner/{DAG_ID}/{TASK_ID}"}
    assert {e["extra"]["dbt_command"] for e in hourly["asset_events"]} == {"run"}
    # OpenLineage: each staging model's run reads its raw table and writes its staging table,
    # in the warehouse's namespace (the real host:port, not the tunnel's)
    events = [json.loads(line) for line in lineage.read_text().splitlines()]
    model = next(
        e
        for e in events
        if e["job"]["name"] == "model.dbt_runner_staging.stg_ecs_order_info"
        and e["eventType"] == "COMPLETE"
    )
    assert [(d["namespace"], d["name"]) for d in model["inputs"]] == [
        (f"postgres://{pg_db.host}:{pg_db.port}", f"{pg_db.dbname}.raw.ecs_order_info")
    ]
    assert [d["name"] for d in model["outputs"]] == [f"{pg_db.dbname}.staging.stg_ecs_order_info"]

    # -- the daily cycle: the whole-table tests
    assert daily["dag_run_state"] == "success", output[-4000:]
    daily_tests = daily["xcom"]["return_value"]["tests"]
    assert daily_tests["success"] and daily_tests["nodes"]
    assert "unique_stg_uni_tracking_info_order_id" in {n["name"] for n in daily_tests["nodes"]}
    assert not any(n["name"].startswith("recent_") for n in daily_tests["nodes"])
    assert audit["success"]
    assert [n["name"] for n in audit["nodes"]] == ["audit_raw_keys_missing_from_staging"]

    # -- the broken cycle: the model fails -> task failed at once, names in the log
    assert broken["dag_run_state"] == "failed"
    assert broken["task_states"] == {TASK_ID: "failed"}
    assert broken["try_numbers"] == {TASK_ID: 1}  # a model failure is not retried
    assert broken["ssh_connections"] == 1
    failed = broken["xcom"]["dbt_results"]["staging"]
    assert failed["success"] is False
    assert failed["error"]["kind"] == "model_failure"
    bad = [n for n in failed["nodes"] if n["status"] == "error"]
    assert [n["name"] for n in bad] == ["stg_uni_tracking_spath"]
    assert "uni_tracking_spath" in bad[0]["message"]
    assert "stg_uni_tracking_spath: error [model_failure]" in output
    assert 'relation "raw.uni_tracking_spath" does not exist' in output
    assert "AirflowFailException" in output
    assert broken["asset_events"] == []  # a failed task records no asset event

    # -- the bastion agrees: one SSH connection per task run
    assert sshd.accepted_connections() - accepted_before == 3
    # -- no secret reached the logs
    for secret in (pg_db.password, sshd.key_passphrase, key_text.strip().splitlines()[1]):
        assert secret not in output


@pytest.mark.timeout(CHILD_TIMEOUT_S + VENV_TIMEOUT_S + 60)
def test_infrastructure_failure_is_left_to_airflows_retry(
    tmp_path: Path, pg_db: Any, airflow_python: str
) -> None:
    """First try: the warehouse refuses connections -> kind ``connection`` -> the task fails
    *with* retries left; Airflow's retry (the warehouse is back) succeeds."""
    from dbt_runner.synthetic import create_raw_tables, load_batch

    conn = pg_db.connect()
    try:
        create_raw_tables(conn, "postgres")
        load_batch(conn, "postgres", T0, T0 + 7200, orders_per_minute=5)
    finally:
        conn.close()
    warehouse = {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": 0,  # the child's gate: refuses until Airflow retries the task
        "login": pg_db.user,
        "password": pg_db.password,
        "schema": pg_db.dbname,
        "extra": {"sslmode": "disable"},
    }
    # dbt_runner's own retries off: the infrastructure failure reaches Airflow
    env = _airflow_env(tmp_path, DBT_RUNNER_RETRY__ATTEMPTS="1")
    spec = {
        "parse_only": False,
        "gate": {"host": pg_db.host, "port": pg_db.port, "warehouse": warehouse},
        "cycles": [
            {
                "name": "retried",
                "logical_date": "2026-01-01T10:15:00+00:00",  # staging only
                "run_conf": {"ssh_conn_id": ""},  # direct, no bastion
            }
        ],
    }
    out, output = _run_child(tmp_path, env, spec, airflow_python)

    [cycle] = out["cycles"]
    assert cycle["gate_opened_on_retry"] is True, output[-4000:]
    assert cycle["dag_run_state"] == "success", output[-4000:]
    assert cycle["task_states"] == {TASK_ID: "success"}
    assert cycle["try_numbers"] == {TASK_ID: 2}  # failed once, Airflow's retry succeeded
    staging = cycle["xcom"]["return_value"]["staging"]
    assert staging["success"] and len(staging["nodes"]) == 3
    # the bundled project's tables as Airflow 3 Assets / 2.10 Datasets, rows in its DB
    rows = {n["name"]: n["rows_affected"] for n in staging["nodes"]}
    base = f"postgres://127.0.0.1:{cycle['gate_port']}/{pg_db.dbname}/staging"  # its host:port
    assert {e["uri"]: e["extra"]["rows_affected"] for e in cycle["asset_events"]} == {
        f"{base}/{name}": count for name, count in rows.items()
    }
    # the first try's log says why it failed, as an infrastructure kind
    assert "[connection]" in output, output[-4000:]
    assert "AirflowFailException" not in output  # not failed for good
    assert pg_db.password not in output


FOREIGN_DAG = """
from datetime import datetime, timezone

from dbt_runner.airflow import DbtRunnerOperator

try:  # Airflow 3
    from airflow.sdk import dag
except ImportError:  # Airflow 2.10
    from airflow.decorators import dag

PROJECT, PROFILES = {project!r}, {profiles!r}


@dag(
    dag_id="foreign_shop",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    params={{"select": "+customer_orders"}},
)
def foreign_shop():
    common = dict(project_dir=PROJECT, profiles_dir=PROFILES, target="ci")
    seed = DbtRunnerOperator(task_id="seed", command="seed", **common)
    marts = DbtRunnerOperator(
        task_id="marts",
        command="build",
        select="{{{{ params.select }}}}",
        exclude="test_type:unit",
        vars={{"region": "eu"}},
        threads=1,
        **common,
    )
    seed >> marts


foreign_shop()
"""


@pytest.mark.timeout(CHILD_TIMEOUT_S + VENV_TIMEOUT_S + 60)
def test_operator_runs_a_foreign_project_and_records_its_assets(
    tmp_path: Path, airflow_python: str
) -> None:
    """Another team's project (its own profiles.yml, the DuckDB adapter, local packages) in
    two DbtRunnerOperator tasks: seed, then ``dbt build`` with a templated selection, an
    exclude, a target, vars and threads. Each relation written is an asset event (Airflow 3)
    or a dataset event (2.10) in Airflow's metadata DB."""
    from tests._differential import make_copy

    project = make_copy(tmp_path / "copy")
    dags = tmp_path / "dags"
    dags.mkdir()
    profiles = project / "profiles" / "duckdb"
    (dags / "foreign_shop.py").write_text(
        FOREIGN_DAG.format(project=str(project), profiles=str(profiles))
    )
    database = tmp_path / "shop.duckdb"
    env = _airflow_env(
        tmp_path, AIRFLOW__CORE__DAGS_FOLDER=str(dags), FOREIGN_DUCKDB_PATH=str(database)
    )
    spec = {
        "parse_only": False,
        "dags_folder": str(dags),
        "dag_id": "foreign_shop",
        "task_id": "marts",
        "cycles": [{"name": "foreign", "logical_date": "2026-01-01T10:00:00+00:00"}],
    }
    out, output = _run_child(tmp_path, env, spec, airflow_python)

    assert out["import_errors"] == {}
    [run] = out["cycles"]
    assert run["dag_run_state"] == "success", output[-4000:]
    assert run["task_states"] == {"seed": "success", "marts": "success"}
    seeded = run["xcoms"]["seed"]["return_value"]["seed"]
    assert {n["name"] for n in seeded["nodes"]} == {"raw_orders", "raw_customers"}
    build = run["xcoms"]["marts"]["return_value"]["build"]
    assert build["success"] and build["command"] == "build" and build["threads"] == 1
    names = {n["name"]: n for n in build["nodes"]}
    # +customer_orders: the mart, its parents (the package's model too) and their tests
    assert {"customer_orders", "stg_customers", "stg_orders", "fx_currencies"} <= set(names)
    assert "broken_cast" not in names and "orders_incremental" not in names
    assert not [n for n in build["nodes"] if n["resource_type"] == "unit_test"]  # excluded
    assert any(n["resource_type"] == "test" for n in build["nodes"])
    args = build["attempt_log"][0]["args"]
    assert args[args.index("--vars") + 1] == '{"region": "eu"}'
    assert args[args.index("--target") + 1] == "ci"

    # the relations, in the target's schema (ci), under the database file's own name
    base = f"duckdb:{database}/shop/ci"
    events = {(e["task_id"], e["uri"]): e for e in run["asset_events"]}
    assert set(events) == {
        ("seed", f"{base}/raw_orders"),
        ("seed", f"{base}/raw_customers"),
        ("marts", f"{base}/stg_customers"),
        ("marts", f"{base}/stg_orders"),
        ("marts", f"{base}/fx_currencies"),
        ("marts", f"{base}/customer_orders"),  # the ephemeral int_orders_eur is no relation
    }
    for (task_id, _), event in events.items():
        assert event["alias"] == f"dbt_runner/foreign_shop/{task_id}"
    assert events[("marts", f"{base}/customer_orders")]["extra"] == {
        "dbt_unique_id": "model.foreign_shop.customer_orders",
        "dbt_command": "build",
        "dbt_invocation_id": build["invocation_id"],
        "rows_affected": names["customer_orders"]["rows_affected"],
    }


@pytest.mark.timeout(CHILD_TIMEOUT_S + VENV_TIMEOUT_S + 60)
@pytest.mark.parametrize("stop", ["execution_timeout", "sigterm"])
def test_airflow_stopping_the_task_cancels_dbt_on_the_server(
    tmp_path: Path, pg_server: Any, pg_db: Any, airflow_python: str, stop: str
) -> None:
    """``execution_timeout`` (AirflowTaskTimeout from SIGALRM) and SIGTERM (a task marked
    failed: on_kill, AirflowTaskTerminated on 2.10) while a model waits on a lock: the
    task fails, and no backend of the task is left on the server while the lock is
    still held (dbt did not wait for the blocker)."""
    import signal

    from testbed.sshd import wait_until
    from tests.integration.test_interruptions import Bed, first_build, no_backend_left

    bed = Bed(pg_server, pg_db, "postgres")
    bed.load(T0, T0 + 7200, late_share=0.05)
    first_build(bed, tmp_path)
    warehouse = {
        "conn_type": "postgres",
        "host": pg_db.host,
        "port": pg_db.port,
        "login": pg_db.user,
        "password": pg_db.password,
        "schema": pg_db.dbname,
        "extra": {"sslmode": pg_db.sslmode},
    }
    env = _airflow_env(
        tmp_path,
        AIRFLOW_CONN_DBT_WAREHOUSE=json.dumps(warehouse),
        DBT_RUNNER_WAREHOUSE__SCHEMA="stg",
        DBT_RUNNER_RETRY__ATTEMPTS="1",
    )
    spec: dict[str, Any] = {
        "parse_only": False,
        "retries": 0,
        "cycles": [
            {
                "name": stop,
                "logical_date": "2026-01-01T10:15:00+00:00",  # staging only
                "run_conf": {"ssh_conn_id": ""},
            }
        ],
    }
    if stop == "execution_timeout":
        spec["execution_timeout_s"] = 8
    spec_path, out_path = tmp_path / "spec.json", tmp_path / "out.json"
    spec_path.write_text(json.dumps(spec))
    with bed.holding() as held:
        proc = subprocess.Popen(
            [
                airflow_python,
                "-m",
                "tests.integration.test_airflow_dag",
                str(spec_path),
                str(out_path),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            if stop == "sigterm":
                assert wait_until(bed.blocked_and_others_committed, CHILD_TIMEOUT_S)
                proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=CHILD_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        (tmp_path / "child.log").write_text(output)
        assert held() and no_backend_left(bed), output[-4000:]
    assert proc.returncode == 0, output[-6000:]
    [cycle] = json.loads(out_path.read_text())["cycles"]
    assert cycle["task_states"] == {TASK_ID: "failed"}, output[-4000:]
    # Airflow's own exception reached Airflow unchanged (2.10's dag.test re-raises it)
    assert cycle["raised"] in (None, "AirflowTaskTimeout", "AirflowTaskTerminated"), cycle
    assert "cancelled on the server" in output or "cancelling dbt run" in output, output[-4000:]
    assert pg_db.password not in output


# ---------------------------------------------------------------------- the child
class _Gate:
    """A loopback port that refuses connections until :meth:`open`, then relays to a server."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))  # bound, not listening: a connect is refused
        self.port = self.sock.getsockname()[1]
        self.opened = threading.Event()

    def open(self, context: Any = None) -> None:
        if self.opened.is_set():
            return
        self.sock.listen(16)
        self.opened.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.sock.accept()
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def _count_accepted(sshd_log: str | None) -> int:
    if not sshd_log:
        return 0
    try:
        return Path(sshd_log).read_text(errors="replace").count("Accepted publickey")
    except FileNotFoundError:
        return 0


def _drive(spec_path: str, out_path: str) -> None:  # pragma: no cover - runs in the child
    """Parse the DAG folder, then ``dag.test()`` each cycle of the spec; write JSON."""
    from datetime import datetime

    spec = json.loads(Path(spec_path).read_text())
    out: dict[str, Any] = {}

    from airflow.models import DagBag

    dags_folder = spec.get("dags_folder") or str(DAGS_FOLDER)
    t0 = time.monotonic()
    bag = DagBag(dag_folder=dags_folder)
    out["parse_s"] = round(time.monotonic() - t0, 3)
    out["import_errors"] = {str(k): str(v) for k, v in bag.import_errors.items()}
    out["dag_ids"] = sorted(bag.dag_ids)
    out["dbt_imported_by_parse"] = any(m == "dbt" or m.startswith("dbt.") for m in sys.modules)
    dag = bag.dags.get(spec.get("dag_id", DAG_ID))
    if dag is None:
        Path(out_path).write_text(json.dumps(out))
        return
    task = dag.get_task(spec.get("task_id", TASK_ID))
    schedule = getattr(dag, "schedule", None) or getattr(dag, "schedule_interval", None)
    out["dag"] = {
        "task_ids": sorted(dag.task_ids),
        "max_active_runs": dag.max_active_runs,
        "catchup": dag.catchup,
        "schedule": str(schedule),
        "retries": task.retries,
        "params": {k: dag.params[k] for k in dag.params},
    }
    if spec.get("parse_only"):
        Path(out_path).write_text(json.dumps(out))
        return

    import inspect
    from datetime import timedelta

    from airflow.utils.db import upgradedb

    upgradedb()  # `airflow db migrate` on the test's own SQLite database
    if _airflow_major() == 2:
        # what Airflow 2's DAG processor does before a run (3's dag.test() does it itself):
        # the DAG's DatasetAlias outlets exist in the metadata DB
        dag.sync_to_db()

    if spec.get("execution_timeout_s"):
        task.execution_timeout = timedelta(seconds=spec["execution_timeout_s"])
    if "retries" in spec:
        task.retries = spec["retries"]
    gate = None
    if spec.get("gate"):
        gate = _Gate((spec["gate"]["host"], spec["gate"]["port"]))
        warehouse = {**spec["gate"]["warehouse"], "port": gate.port}
        os.environ["AIRFLOW_CONN_DBT_WAREHOUSE"] = json.dumps(warehouse)
        # the warehouse comes back when Airflow decides to retry; no waiting in between
        task.on_retry_callback = [gate.open]
        task.retry_delay = timedelta(0)
    date_kw = (
        "logical_date"
        if "logical_date" in inspect.signature(dag.test).parameters
        else ("execution_date")
    )

    out["cycles"] = []
    for cycle in spec["cycles"]:
        if cycle.get("before_sql"):
            import psycopg2

            with psycopg2.connect(spec["dsn"]) as conn, conn.cursor() as cur:
                cur.execute(cycle["before_sql"])
            conn.close()
        before = _count_accepted(spec.get("sshd_log"))
        kwargs: dict[str, Any] = {date_kw: datetime.fromisoformat(cycle["logical_date"])}
        if cycle.get("run_conf"):
            kwargs["run_conf"] = cycle["run_conf"]
        raised = None
        try:
            dag_run = dag.test(**kwargs)
        except BaseException as exc:  # Airflow 2.10's dag.test re-raises AirflowTaskTimeout
            raised = type(exc).__name__
            dag_run = _latest_run(dag.dag_id)
        out["cycles"].append(
            {
                "name": cycle["name"],
                "raised": raised,
                "gate_opened_on_retry": gate.opened.is_set() if gate else None,
                "gate_port": gate.port if gate else None,
                "dag_run_state": str(getattr(dag_run.state, "value", dag_run.state)),
                **_task_outcome(dag_run),
                "asset_events": _asset_events(dag_run),
                "ssh_connections": _count_accepted(spec.get("sshd_log")) - before,
            }
        )
    Path(out_path).write_text(json.dumps(out, default=str))


def _latest_run(dag_id: str) -> Any:  # pragma: no cover - runs in the child
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=dag_id).order_by(DagRun.id.desc()).first()
        session.expunge(run)
        return run


def _task_outcome(dag_run: Any) -> dict[str, Any]:  # pragma: no cover - runs in the child
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    try:  # Airflow 3
        from airflow.models.xcom import XComModel
    except ImportError:  # Airflow 2
        from airflow.models.xcom import XCom as XComModel

    with create_session() as session:
        tis = (
            session.query(TaskInstance)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id)
            .all()
        )
        xcoms = (
            session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        )
        by_task: dict[str, dict[str, Any]] = {}
        for x in xcoms:
            by_task.setdefault(x.task_id, {})[x.key] = _xcom_value(x.value)
        return {
            "task_states": {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in tis},
            "try_numbers": {ti.task_id: ti.try_number for ti in tis},
            "xcom": by_task.get(TASK_ID, {}),
            "xcoms": by_task,
        }


def _airflow_major() -> int:  # pragma: no cover - runs in the child
    import airflow

    return int(airflow.__version__.split(".")[0])


def _asset_events(dag_run: Any) -> list[dict[str, Any]]:  # pragma: no cover - in the child
    """The run's asset events as Airflow's metadata DB holds them: Airflow 3's ``asset_event``
    (2.10: ``dataset_event``) rows, with the asset's URI and the alias they came through."""
    from airflow.utils.session import create_session
    from sqlalchemy import text

    kind = "asset" if _airflow_major() >= 3 else "dataset"
    query = text(
        f"select a.uri, e.extra, e.source_task_id, al.name from {kind}_event e "
        f"join {kind} a on a.id = e.{kind}_id "
        f"left join {kind}_alias_{kind}_event ae on ae.event_id = e.id "
        f"left join {kind}_alias al on al.id = ae.alias_id "
        "where e.source_dag_id = :dag_id and e.source_run_id = :run_id order by e.id"
    )
    with create_session() as session:
        rows = session.execute(query, {"dag_id": dag_run.dag_id, "run_id": dag_run.run_id})
        return [
            {
                "uri": uri,
                "extra": json.loads(extra) if isinstance(extra, str) else extra,
                "task_id": task_id,
                "alias": alias,
            }
            for uri, extra, task_id, alias in rows
        ]


def _xcom_value(value: Any) -> Any:  # pragma: no cover - runs in the child
    if isinstance(value, bytes):  # Airflow 2 stores the JSON as bytes
        value = value.decode()
    return json.loads(value) if isinstance(value, str) else value


if __name__ == "__main__":  # pragma: no cover
    _drive(sys.argv[1], sys.argv[2])
