"""order_tracking_hybrid_dbt_dag, rebuilt on dbt_runner (Apache Airflow 3 or 2.10, TaskFlow API).

Every 15 minutes **one task** (``dbt_runner.airflow.DbtRunnerOperator``, see
docs/airflow.md) opens one ``DbtSession`` (so one SSH tunnel) from two Airflow
connections, runs the staging models with 3 threads and, on the
cycle that starts each hour, the staging tests and the audit test, all in the
same session (each step only after the previous one succeeded). The hourly
tests are the ``recent`` ones (rows of the last two hours, keys touched there
checked against the whole table: their cost follows the batch, not the
history); the cycle that starts each day runs the whole-table ``full`` tests
instead (``run_tests(scope="full")``, see docs/models.md). dbt runs
in-process: no ``pip install``, no ``dbt debug``, no subprocess.

Connections (secrets stay in Airflow's connection store):

* ``dbt_warehouse``: a ``redshift`` (or ``postgres``) connection. Host, Port,
  Login, Password; *Schema* is the database name. Extras: ``sslmode``.
* ``dbt_bastion``: an ``ssh`` connection. Host, Port, Login; extras as the SSH
  provider names them: ``key_file`` or ``private_key`` (+
  ``private_key_passphrase``) and ``host_key`` (or ``no_host_key_check``).
  Leave the ``ssh_conn_id`` param empty to connect directly.

Everything else comes from ``DBT_RUNNER_*`` variables in the worker's
environment (target schema, retries, timeout: see docs/configuration.md).

With the ``worker_socket`` param set, the same steps run in a warm
``dbt-runner serve`` worker on that machine (``WorkerClient``): dbt's start-up
is paid once, not every 15 minutes; with no worker answering, the task runs
them itself as above.

Interruptions: ``execution_timeout`` and Airflow stopping the task (marked
failed, a worker shutting down: SIGTERM, ``on_kill``) cancel the running dbt
command on the server, through the tunnel, and close the tunnel before the
task ends (``dbt_runner.airflow.dbt_session`` and ``cancel_on_sigterm``); the
task then fails without retries for a cancel, and Airflow's own
``AirflowTaskTimeout`` / ``AirflowTaskTerminated`` is what it reports.

Assets: each staging table the cycle wrote is an asset event (Airflow 3 ``Asset``,
2.10 ``Dataset``; URI ``postgres://host:port/database/schema/table`` or
``redshift://...``) through the task's alias outlet ``dbt_runner/<dag>/<task>``: a
downstream DAG can be scheduled on them.

Outcome: the task fails when a model or a test fails, with the node names and
dbt's messages in the task log; model/test failures, compile errors and bad
configuration fail it at once, while infrastructure failures (tunnel,
connection, timeout) that dbt_runner's own retries could not fix are left to
Airflow's task retries. The results, as plain JSON, go to XCom:
``return_value`` on success, key ``dbt_results`` on failure, each shaped
``{"staging": RunResult, "tests": RunResult?, "audit": RunResult?}``.

Parsing this file imports ``dbt_runner.airflow`` but not dbt: dbt is loaded when the
task runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from dbt_runner.airflow import DbtRunnerOperator

try:  # Airflow 3
    from airflow.sdk import Param, dag
except ImportError:  # Airflow 2.10: the same TaskFlow names, older homes
    from airflow.decorators import dag
    from airflow.models.param import Param

#: the schedule's period; test cadences below are multiples of it
CYCLE_MINUTES = 15


def cycle_steps(context: Any) -> list[Any]:
    """This cycle's steps: staging; the tests on the hour (the whole-table ones at
    midnight); the audit on the hour. Each step runs only if the previous one succeeded."""
    from dbt_runner import Step
    from dbt_runner.airflow import cycle_is_due

    params = context["params"]
    # logical_date is None for runs triggered without one; run_after is always set
    when = context.get("logical_date") or context["dag_run"].run_after
    full_due = cycle_is_due(when, params["full_tests_every_minutes"], CYCLE_MINUTES)
    tests_due = full_due or cycle_is_due(when, params["tests_every_minutes"], CYCLE_MINUTES)
    audit_due = cycle_is_due(when, params["audit_every_minutes"], CYCLE_MINUTES)
    steps = [Step("run_staging", {"threads": params["threads"]})]
    if tests_due:
        steps.append(Step("run_tests", {"scope": "full" if full_due else "recent"}))
    if audit_due:
        steps.append(Step("run_tests", {"select": "tag:audit"}, label="audit"))
    return steps


@dag(
    dag_id="order_tracking_hybrid_dbt_dag",
    schedule=f"*/{CYCLE_MINUTES} * * * *",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,  # a slow cycle delays the next one; cycles never overlap
    tags=["dbt", "staging"],
    doc_md=__doc__,
    params={
        "warehouse_conn_id": Param("dbt_warehouse", type="string"),
        "ssh_conn_id": Param("dbt_bastion", type=["null", "string"], description="empty: direct"),
        "threads": Param(3, type="integer", minimum=1),
        "tests_every_minutes": Param(
            60, type="integer", minimum=0, description="0: never; 15: every cycle"
        ),
        "full_tests_every_minutes": Param(
            24 * 60,
            type="integer",
            minimum=0,
            description="whole-table tests instead of the recent ones; 0: never",
        ),
        "audit_every_minutes": Param(
            60, type="integer", minimum=0, description="0: never; 15: every cycle"
        ),
        "worker_socket": Param(
            None,
            type=["null", "string"],
            description="a `dbt-runner serve` socket: the cycle runs in its warm worker "
            "(configured by the worker's own DBT_RUNNER_* settings); empty: in this task",
        ),
    },
)
def order_tracking_hybrid_dbt_dag() -> None:
    DbtRunnerOperator(
        task_id="dbt_staging",
        warehouse_conn_id="{{ params.warehouse_conn_id }}",
        ssh_conn_id="{{ params.ssh_conn_id or '' }}",
        worker_socket="{{ params.worker_socket or '' }}",
        steps=cycle_steps,
        retries=2,
        retry_delay=timedelta(minutes=1),
        execution_timeout=timedelta(minutes=12),
    )


order_tracking_hybrid_dbt_dag()
