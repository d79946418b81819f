"""Shared pytest configuration.

Real services (PostgreSQL, the Redshift stand-in, OpenSSH sshd) are started by
fixture plugins in ``testbed/``. When a service's binaries are missing
the tests that need it skip with a reason naming what to install, unless
``TESTBED_REQUIRE_INTEGRATION=1`` (set by ``.ci/run``), which turns every
such skip into a failure.
"""

from typing import Any

pytest_plugins = [
    "testbed.pg_fixtures",
    "testbed.ssh_fixtures",
    "testbed.aws_fixtures",
]

#: modules that take minutes each, longest first (module totals of a CI run): pytest-xdist
#: (``--dist loadfile --no-loadscope-reorder``, see pyproject.toml) hands modules to its
#: workers in collection order, so running these first keeps the run from ending on one
#: long module while the other worker idles
SLOW_MODULES = (
    "test_interruptions.py",
    "test_differential_postgres.py",
    "test_differential_bakery_postgres.py",
    "test_tunnel_soak.py",
    "test_airflow_dag.py",
    "test_differential_duckdb.py",
    "test_differential_bakery_duckdb.py",
    "test_artifact_cache.py",
    "test_models_redshift.py",
    "test_redshift_iam.py",
    "test_benchmarks_smoke.py",
    "test_models_postgres.py",
    "test_outputs_duckdb.py",
    "test_models_duckdb.py",
    "test_failure_table.py",
    "test_connection_reuse.py",
    "test_faults.py",
    "test_worker.py",
    "test_models_sample_data.py",
    "test_tls_bastion.py",
    "test_progress.py",
    "test_openlineage.py",
)


#: unit modules left out of the fast tier (``-m "not slow"``) besides tests/integration/:
#: each runs real dbt many times (tens of CPU-seconds or more in a CI run)
SLOW_UNIT_MODULES = frozenset(
    {
        "test_models_duckdb.py",
        "test_outputs_duckdb.py",
        "test_differential_duckdb.py",
        "test_differential_bakery_duckdb.py",
        "test_benchmarks_smoke.py",
        # two sessions, a subprocess run, and the base install's venv (built once a run)
        "test_openlineage.py",
    }
)


def pytest_xdist_auto_num_workers(config: Any) -> int | None:
    """``-n auto``: one worker more than the machine has CPUs. Much of the suite waits (on
    servers, locks, subprocesses, signals), and a worker that waits leaves its CPU idle;
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides when set."""
    import os

    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return len(os.sched_getaffinity(0)) + 1


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """Mark the slow tier; slow modules first (their own test order unchanged: the sort
    is stable)."""
    import pytest

    for item in items:
        if item.path.parent.name == "integration" or item.path.name in SLOW_UNIT_MODULES:
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_MODULES)))
