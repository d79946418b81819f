"""pytest fixtures: a real PostgreSQL server and a Redshift stand-in.

* ``pg_server`` (session): a started :class:`PostgresServer`.
* ``pg_db`` (function): a fresh database and login role on it -> :class:`PgDatabase`.
* ``redshift_server`` (session): a :class:`RedshiftProxy` in front of ``pg_server``.

Both speak TLS, as production warehouses do: ``pg_db`` connects with
``sslmode=require``, ``redshift_db`` with dbt-redshift's default ``verify-ca``
(the test CA is trusted through ``SSL_CERT_FILE`` while the test runs).
* ``redshift_db`` (function): like ``pg_db``, reached through the proxy, with
  the Redshift catalog stubs installed -> :class:`RedshiftDatabase`.

The ``named_*`` twins serve the certificate for ``warehouse.test`` (and no other
name) from 127.0.0.1, for ``sslmode=verify-full`` through a bastion: their
databases' ``server_name`` is that name, ``host`` the address to connect to.

* ``named_pg_server`` (session, started on first use): a PostgreSQL server of its own;
* ``named_pg_db`` (function) -> :class:`PgDatabase` with ``sslmode=verify-full``;
* ``named_redshift_server`` (session): a stand-in in front of ``pg_server``;
* ``named_redshift_db`` (function) -> :class:`RedshiftDatabase`, ``verify-full``.

Without PostgreSQL binaries the tests using them skip, or fail when
``TESTBED_REQUIRE_INTEGRATION=1``. Tests using these fixtures are marked
``integration`` automatically.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from testbed._require import require_service
from testbed.postgres import PostgresServer, postgres_unavailable_reason
from testbed.redshift_proxy import DdlEntry, RedshiftProxy, install_redshift_stubs
from testbed.tls import WAREHOUSE_NAME, test_pki

_PG_FIXTURES = frozenset(
    {
        "pg_server",
        "pg_db",
        "redshift_server",
        "redshift_db",
        "named_pg_server",
        "named_pg_db",
        "named_redshift_server",
        "named_redshift_db",
    }
)


@dataclass(frozen=True)
class PgDatabase:
    """Connection details of a throwaway database owned by a login role."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    #: ``require`` against the SSL-on fixture server (production's shape).
    sslmode: str = field(default="require", kw_only=True)
    #: the name the server's certificate is for, when it is not ``host`` (the named
    #: fixtures: ``warehouse.test``); ``host`` is then only where to connect
    server_name: str | None = field(default=None, kw_only=True)

    @property
    def dsn(self) -> str:
        """libpq keyword/value DSN (names and passwords here never need quoting)."""
        where = f"host={self.host}"
        if self.server_name is not None:  # TLS verifies the name, the socket goes to host
            where = f"host={self.server_name} hostaddr={self.host}"
        dsn = (
            f"{where} port={self.port} user={self.user} "
            f"password={self.password} dbname={self.dbname} sslmode={self.sslmode}"
        )
        if self.sslmode.startswith("verify"):
            dsn += f" sslrootcert={test_pki().ca_path}"
        return dsn

    def connect(self) -> Any:
        """A new psycopg2 connection (not autocommit); the caller closes it."""
        import psycopg2

        return psycopg2.connect(self.dsn, connect_timeout=10)

    def dbt_output(self, schema: str = "analytics", threads: int = 1) -> dict[str, Any]:
        """A profiles.yml output (target) for dbt-postgres."""
        return {
            "type": "postgres",
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": self.dbname,
            "schema": schema,
            "threads": threads,
            "sslmode": self.sslmode,
            "connect_timeout": 10,
        }


@dataclass(frozen=True)
class RedshiftDatabase(PgDatabase):
    """A :class:`PgDatabase` reached through the Redshift stand-in proxy."""

    proxy: RedshiftProxy = field(repr=False, compare=False, kw_only=True)
    #: dbt-redshift's production default; the stand-in's CA is trusted via SSL_CERT_FILE.
    sslmode: str = field(default="verify-ca", kw_only=True)

    @property
    def ddl_log(self) -> list[DdlEntry]:
        """``(statement, clauses)`` of each CREATE TABLE sent to this database."""
        return self.proxy.ddl_log_for(self.dbname)

    def clauses_for(self, table: str) -> list[list[str]]:
        """Stripped Redshift clauses of each CREATE TABLE of ``table`` here."""
        return self.proxy.clauses_for(table, database=self.dbname)

    def connect_redshift(self, **kwargs: Any) -> Any:
        """A redshift_connector connection through the proxy (TLS unless sslmode=disable)."""
        import redshift_connector

        return redshift_connector.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.dbname,
            ssl=self.sslmode != "disable",
            sslmode="verify-full" if self.sslmode == "verify-full" else "verify-ca",
            timeout=10,
            **kwargs,
        )

    def dbt_output(self, schema: str = "analytics", threads: int = 1) -> dict[str, Any]:
        """A profiles.yml output (target) for dbt-redshift."""
        return {
            "type": "redshift",
            "method": "database",
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": self.dbname,
            "schema": schema,
            "threads": threads,
            "sslmode": self.sslmode,
            "connect_timeout": 10,
            "retries": 0,
        }


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _PG_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@contextlib.contextmanager
def started_server(**options: Any) -> Iterator[PostgresServer]:
    """A started :class:`PostgresServer` (``options`` as its keywords), closed after; skips
    (or fails with ``TESTBED_REQUIRE_INTEGRATION=1``) without PostgreSQL."""
    reason = postgres_unavailable_reason()
    require_service(reason is None, reason or "")
    server = PostgresServer(**options)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with started_server() as server:
        yield server


@contextlib.contextmanager
def _database(server: PostgresServer, prefix: str) -> Iterator[tuple[str, str, str]]:
    if not server.running:  # a previous test stopped the shared server
        server.start()
    suffix = secrets.token_hex(5)
    user, dbname, password = f"{prefix}_u_{suffix}", f"{prefix}_db_{suffix}", secrets.token_hex(16)
    server.create_role(user, password)
    try:
        server.create_database(dbname, owner=user)
        try:
            yield user, password, dbname
        finally:
            if server.running:
                server.drop_database(dbname)
    finally:
        if server.running:
            server.drop_role(user)


@pytest.fixture
def pg_db(pg_server: PostgresServer) -> Iterator[PgDatabase]:
    with _database(pg_server, "dbr_pg") as (user, password, dbname):
        yield PgDatabase(pg_server.host, pg_server.port, user, password, dbname)


@pytest.fixture(scope="session")
def redshift_server(pg_server: PostgresServer) -> Iterator[RedshiftProxy]:
    proxy = RedshiftProxy.for_server(pg_server)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def redshift_db(
    pg_server: PostgresServer, redshift_server: RedshiftProxy, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RedshiftDatabase]:
    # redshift_connector verifies the server against the default trust store:
    # let it (and any subprocess the test starts) trust the stand-in's CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(test_pki().bundle_path))
    with _database(pg_server, "dbr_rs") as (user, password, dbname):
        install_redshift_stubs(pg_server, dbname)
        yield RedshiftDatabase(
            redshift_server.host,
            redshift_server.port,
            user,
            password,
            dbname,
            proxy=redshift_server,
        )


# ------------------------------------------------------------ the certificate for a name
@pytest.fixture(scope="session")
def named_pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server presenting the certificate for ``warehouse.test`` only."""
    with started_server(named=True) as server:
        yield server


@pytest.fixture
def named_pg_db(named_pg_server: PostgresServer) -> Iterator[PgDatabase]:
    with _database(named_pg_server, "dbr_tls") as (user, password, dbname):
        yield PgDatabase(
            named_pg_server.host,
            named_pg_server.port,
            user,
            password,
            dbname,
            sslmode="verify-full",
            server_name=WAREHOUSE_NAME,
        )


@pytest.fixture(scope="session")
def named_redshift_server(pg_server: PostgresServer) -> Iterator[RedshiftProxy]:
    """A Redshift stand-in presenting the certificate for ``warehouse.test`` only."""
    proxy = RedshiftProxy.for_server(pg_server, named=True)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def named_redshift_db(
    pg_server: PostgresServer,
    named_redshift_server: RedshiftProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RedshiftDatabase]:
    # redshift_connector trusts the default store (plus its Redshift CAs): the test CA
    monkeypatch.setenv("SSL_CERT_FILE", str(test_pki().bundle_path))
    with _database(pg_server, "dbr_tlsrs") as (user, password, dbname):
        install_redshift_stubs(pg_server, dbname)
        yield RedshiftDatabase(
            named_redshift_server.host,
            named_redshift_server.port,
            user,
            password,
            dbname,
            proxy=named_redshift_server,
            sslmode="verify-full",
            server_name=WAREHOUSE_NAME,
        )
