"""pytest fixtures for a real OpenSSH bastion (see :mod:`testbed.sshd`).

- ``sshd`` (session scope): one server for the whole test session. After each
  test that used it, it is resumed / restarted if the test paused or stopped
  it, so a destructive test cannot break the next one.
- ``sshd_fresh`` (function scope): a server of its own (new port, keys and
  log) for a destructive test.

Both skip (or fail, with ``TESTBED_REQUIRE_INTEGRATION=1``) when the
OpenSSH server is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed._require import require_service
from testbed.sshd import INSTALL_HINT, SshdServer, sshd_available

__all__ = ["sshd", "sshd_fresh"]


@pytest.fixture(scope="session")
def sshd() -> Iterator[SshdServer]:
    """The session's bastion (``sshd`` on a free loopback port)."""
    require_service(sshd_available(), INSTALL_HINT)
    server = SshdServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def _reset_sshd_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Resume / restart the session's sshd after a test that paused or stopped it."""
    server: SshdServer | None = None
    if "sshd" in request.fixturenames:
        server = request.getfixturevalue("sshd")
    yield
    if server is not None:
        server.reset()


@pytest.fixture
def sshd_fresh() -> Iterator[SshdServer]:
    """A bastion of its own, for destructive tests."""
    require_service(sshd_available(), INSTALL_HINT)
    server = SshdServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
