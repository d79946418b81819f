"""The examples run for real: the notebook top to bottom (nbclient), the plain script.

Both use the embedded default warehouse (DuckDB), so they need no services.
The Airflow DAG has its own test in tests/integration/test_airflow_dag.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No inherited DBT_RUNNER_* settings; dbt's target/ and logs/ under tmp_path."""
    for name in list(os.environ):
        if name.startswith("DBT_RUNNER_"):
            monkeypatch.delenv(name)
    state = tmp_path / "dbt_state"
    monkeypatch.setenv("DBT_RUNNER_STATE_DIR", str(state))
    return state


# ---------------------------------------------------------------------- notebook
def test_notebook_runs_top_to_bottom(clean_env: Path, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("pandas")

    nb = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), (
        "commit the notebook without outputs"
    )
    workdir = tmp_path / "nb"
    workdir.mkdir()
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error

    text = "\n".join(_outputs(nb))
    assert "dbt run: OK (1 nodes" in text  # staging for one model
    assert "dbt run: OK (3 nodes" in text  # then all three
    assert "dbt test: OK" in text
    assert "the three models ran at the same time: True" in text
    assert "SessionState.CLOSED" in text
    # the timeline chart: shown inline as a picture and saved as a static image beside the page
    shown = [
        out["data"]["image/svg+xml"]
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if "image/svg+xml" in out.get("data", {})
    ]
    assert len(shown) == 1
    for name in ("stg_ecs_order_info", "stg_uni_tracking_info", "stg_uni_tracking_spath"):
        assert f">{name}</text>" in shown[0]
    saved = workdir / "timeline.svg"
    assert saved.is_file() and (workdir / "timeline.html").is_file()
    assert "stg_ecs_order_info" in saved.read_text()
    # the notebook's DuckDB file is in its own directory, not in the repository
    assert (workdir / "notebook_demo.duckdb").is_file()
    assert not (EXAMPLES / "notebook_demo.duckdb").exists()


def _outputs(nb: object) -> list[str]:
    texts = []
    for cell in nb.cells:  # type: ignore[attr-defined]
        for out in cell.get("outputs", []):
            if "text" in out:
                texts.append(out["text"])
            data = out.get("data", {})
            if "text/plain" in data:
                texts.append(data["text/plain"])
    return texts


# ---------------------------------------------------------------------- plain script
def _run_script(env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "plain_python.py")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _duckdb_with_raw_data(path: Path, *, load: bool = True) -> None:
    import duckdb

    from dbt_runner.synthetic import create_raw_tables, load_batch

    with duckdb.connect(str(path)) as conn:
        create_raw_tables(conn, "duckdb")
        if load:
            load_batch(conn, "duckdb", T0, T0 + 3600, orders_per_minute=10)


def test_plain_python_runs_staging_and_tests(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    _duckdb_with_raw_data(db)
    proc = _run_script(
        {
            "DBT_RUNNER_WAREHOUSE__PATH": str(db),
            "DBT_RUNNER_STATE_DIR": str(tmp_path / "state"),
        },
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dbt run: OK (3 nodes" in proc.stdout
    assert "dbt test: OK" in proc.stdout


def test_plain_python_exit_code_1_when_a_model_fails(tmp_path: Path) -> None:
    import duckdb

    db = tmp_path / "warehouse.duckdb"
    _duckdb_with_raw_data(db)
    with duckdb.connect(str(db)) as conn:
        conn.execute("drop table raw.uni_tracking_spath")
    proc = _run_script(
        {
            "DBT_RUNNER_WAREHOUSE__PATH": str(db),
            "DBT_RUNNER_STATE_DIR": str(tmp_path / "state"),
        },
        tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "dbt run: FAILED" in proc.stdout
    assert "stg_uni_tracking_spath: error" in proc.stdout
    assert "dbt test" not in proc.stdout  # tests are skipped when staging failed


def test_plain_python_exit_code_2_on_bad_configuration(tmp_path: Path) -> None:
    proc = _run_script({"DBT_RUNNER_THREADS": "0"}, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "DBT_RUNNER_THREADS" in proc.stderr
