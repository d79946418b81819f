"""pytest fixtures for a real AWS API on loopback: a moto server (:mod:`testbed.moto_server`).

``moto`` (session-scoped) is one server for the test process, reset before each test
that asks for it (resources forgotten, IAM not enforced); ``moto_env`` also points this
test's environment at it (``AWS_ENDPOINT_URL``, moto's test keys), so boto3, botocore and
a ``dbt-runner`` subprocess started by the test use it and nothing else. The server
answers Redshift Serverless too (:mod:`testbed.moto_serverless`, test-bed code).

``redshift_iam``: a Redshift stand-in database that accepts exactly the temporary
logins the moto server issues (:mod:`testbed.redshift_iam`).

Tests using them are marked ``integration``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed._require import require_service
from testbed.moto_server import INSTALL_HINT, MotoServer, moto_available
from testbed.pg_fixtures import RedshiftDatabase
from testbed.postgres import PostgresServer
from testbed.redshift_iam import IamWarehouse

_AWS_FIXTURES = frozenset({"moto", "moto_env", "redshift_iam"})
#: the IAM hook's configuration file and the answered actions' record, inside the
#: session's moto directory
_IAM_CONFIG = "redshift-iam.json"
_ACTIONS = "actions.jsonl"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _AWS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def _moto_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("moto")


@pytest.fixture(scope="session")
def _moto_server(_moto_dir: Path) -> Iterator[MotoServer]:
    require_service(moto_available(), INSTALL_HINT)
    with MotoServer(
        hooks=[
            ("testbed.redshift_iam:provision_roles", str(_moto_dir / _IAM_CONFIG)),
            ("testbed.moto_server:record_to", str(_moto_dir / _ACTIONS)),
        ],
        extensions=["testbed.moto_serverless:extend"],
    ) as server:
        yield server


@pytest.fixture
def moto(_moto_server: MotoServer) -> Iterator[MotoServer]:
    """The process's moto server, with no resources left by an earlier test and IAM not
    enforced (a test may switch it on: :meth:`MotoServer.enforce_iam`)."""
    _moto_server.reset()
    yield _moto_server
    _moto_server.enforce_iam(float("inf"))


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


@pytest.fixture
def redshift_iam(
    moto_env: MotoServer,
    pg_server: PostgresServer,
    redshift_db: RedshiftDatabase,
    _moto_dir: Path,
) -> Iterator[IamWarehouse]:
    """The Redshift stand-in database ``redshift_db``, reached with temporary logins from
    the moto server (cluster ``analytics``, Serverless workgroup ``analytics-wg``)."""
    warehouse = IamWarehouse(
        redshift_db, moto_env, pg_server, _moto_dir / _IAM_CONFIG, _moto_dir / _ACTIONS
    )
    try:
        yield warehouse.setup()
    finally:
        warehouse.teardown()
