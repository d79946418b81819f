"""Shared pytest configuration.

Real services (PostgreSQL, the Redshift stand-in, OpenSSH sshd) are started by
fixture plugins in ``tests/services``. When a service's binaries are missing
the tests that need it skip with a reason naming what to install, unless
``DBT_RUNNER_REQUIRE_INTEGRATION=1`` (set by ``.ci/run``), which turns every
such skip into a failure.
"""

pytest_plugins = [
    "tests.services.pg_fixtures",
    "tests.services.ssh_fixtures",
]
