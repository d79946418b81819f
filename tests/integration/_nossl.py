"""A PostgreSQL server with SSL off, for the failures only such a server gives.

The shared fixture server speaks TLS like production; ``sslmode=require`` against a
server *without* SSL (issue 13: "server does not support SSL, but SSL was required")
needs one of these. Import the fixtures into a test module to use them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.pg_fixtures import PgDatabase, _database, started_server
from testbed.postgres import PostgresServer


@pytest.fixture(scope="module")
def nossl_server() -> Iterator[PostgresServer]:
    with started_server(ssl=False) as server:
        yield server


@pytest.fixture
def nossl_db(nossl_server: PostgresServer) -> Iterator[PgDatabase]:
    with _database(nossl_server, "dbr_nossl") as (user, password, dbname):
        yield PgDatabase(
            nossl_server.host, nossl_server.port, user, password, dbname, sslmode="disable"
        )
