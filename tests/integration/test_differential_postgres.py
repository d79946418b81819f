"""Differential suite on PostgreSQL (SSL on): plain ``dbt`` vs the library.

The representative subset of the sequence (every command runs on DuckDB,
``tests/test_differential_duckdb.py``) plus the ``--target ci`` steps, on the real
PostgreSQL fixture, one fresh database per copy, both through the
foreign project's own ``profiles.yml`` (connection settings from ``env_var()``).
The tunnel path is ``test_differential_tunnel.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._differential import (
    POSTGRES_STEPS,
    DifferentialChecks,
    Library,
    PlainDbt,
    Runs,
    environment,
    library_settings,
    make_copy,
    parametrize_keys,
    postgres_snapshot,
    run_sequence,
    steps,
)
from tests.services.pg_fixtures import PgDatabase, _database
from tests.services.postgres import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
pytest_generate_tests = parametrize_keys


def pg_env(db: PgDatabase) -> dict[str, str]:
    """The environment the foreign project's postgres profile reads."""
    return {
        "FOREIGN_PG_HOST": db.host,
        "FOREIGN_PG_PORT": str(db.port),
        "FOREIGN_PG_USER": db.user,
        "DBT_ENV_SECRET_FOREIGN_PG_PASSWORD": db.password,
        "FOREIGN_PG_DBNAME": db.dbname,
        "FOREIGN_PG_SSLMODE": db.sslmode,
    }


@pytest.fixture(scope="module")
def databases(pg_server: PostgresServer) -> Iterator[tuple[PgDatabase, PgDatabase]]:
    """Two fresh databases (and roles) on the shared server: plain dbt's, the library's."""
    with _database(pg_server, "dbr_dfa") as a, _database(pg_server, "dbr_dfb") as b:
        yield (
            PgDatabase(pg_server.host, pg_server.port, *a),
            PgDatabase(pg_server.host, pg_server.port, *b),
        )


def plain_side(root: Path, db: PgDatabase) -> PlainDbt:
    project = make_copy(root)
    return PlainDbt(
        project, project / "profiles" / "postgres", postgres_snapshot(db.connect), pg_env(db)
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, databases: tuple[PgDatabase, ...]) -> Runs:
    root = tmp_path_factory.mktemp("differential-postgres")
    plain_db, lib_db = databases
    plain = plain_side(root / "a", plain_db)
    lib_project = make_copy(root / "b")
    profiles = lib_project / "profiles" / "postgres"
    lib = Library(
        lib_project,
        profiles,
        postgres_snapshot(lib_db.connect),
        lambda: library_settings(lib_project, profiles_dir=profiles),
    )
    sequence = TestPostgres.STEPS
    plain_runs = run_sequence(plain, sequence)
    with environment(pg_env(lib_db)):
        lib_runs = run_sequence(lib, sequence)
    return Runs(plain_runs, lib_runs, plain.project, lib.project)


class TestPostgres(DifferentialChecks):
    """The representative subset, on PostgreSQL with the team's own profile."""

    STEPS = steps(POSTGRES_STEPS)
