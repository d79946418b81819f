"""pytest fixtures for a real AWS API on loopback: a moto server (:mod:`testbed.moto_server`).

``moto`` (session-scoped) is one server for the test process, reset before each test
that asks for it; ``moto_env`` also points this test's environment at it
(``AWS_ENDPOINT_URL``, moto's test keys), so boto3, botocore and a ``dbt-runner``
subprocess started by the test use it and nothing else. Tests using them are marked
``integration``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed._require import require_service
from testbed.moto_server import INSTALL_HINT, MotoServer, moto_available

_AWS_FIXTURES = frozenset({"moto", "moto_env"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _AWS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def _moto_server() -> Iterator[MotoServer]:
    require_service(moto_available(), INSTALL_HINT)
    with MotoServer() as server:
        yield server


@pytest.fixture
def moto(_moto_server: MotoServer) -> MotoServer:
    """The process's moto server, with no resources left by an earlier test."""
    _moto_server.reset()
    return _moto_server


@pytest.fixture
def moto_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """:func:`moto`, with this test's environment pointed at it (and at nothing else:
    no profile file, no instance metadata)."""
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    return moto
