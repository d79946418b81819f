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
]

#: modules that take minutes each, longest first (module totals of a CI run): pytest-xdist
#: (``--dist loadfile --no-loadscope-reorder``, see pyproject.toml) hands modules to its
#: workers in collection order, so running these first keeps the run from ending on one
#: long module while the other worker idles
SLOW_MODULES = (
    "test_models_redshift.py",
    "test_faults.py",
    "test_differential_duckdb.py",
    "test_models_duckdb.py",
    "test_differential_postgres.py",
    "test_benchmarks_smoke.py",
    "test_tunnel_soak.py",
    "test_models_postgres.py",
    "test_models_sample_data.py",
    "test_retry.py",
    "test_worker.py",
)


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """Slow modules first (their own test order unchanged: the sort is stable)."""
    rank = {name: i for i, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_MODULES)))
