"""Skip-or-fail decision shared by the service fixture plugins.

A test that needs a real service (PostgreSQL, sshd, ...) skips with a reason
naming what to install when the service is unavailable, unless the
environment variable ``TESTBED_REQUIRE_INTEGRATION`` is set to ``1`` (CI
sets it): then the missing service is a test failure instead. (The test bed's
variables do not start with ``DBT_RUNNER_``: every variable that does must be
a dbt_runner setting, or the library refuses to start.)
"""

from __future__ import annotations

import os

import pytest

REQUIRE_INTEGRATION_ENV = "TESTBED_REQUIRE_INTEGRATION"


def integration_required() -> bool:
    """True when missing services must fail the tests instead of skipping them."""
    return os.environ.get(REQUIRE_INTEGRATION_ENV, "").strip().lower() in {"1", "true", "yes"}


def require_service(available: bool, reason: str) -> None:
    """Return if ``available``; otherwise skip the test, or fail it when required.

    ``reason`` should say what is missing and how to install it, e.g.
    ``"PostgreSQL server binaries not found: apt-get install -y postgresql"``.
    """
    if available:
        return
    if integration_required():
        pytest.fail(f"{reason} ({REQUIRE_INTEGRATION_ENV}=1)", pytrace=False)
    pytest.skip(reason)
