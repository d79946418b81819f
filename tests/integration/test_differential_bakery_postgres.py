"""Differential suite, second foreign project, on PostgreSQL (SSL on): dbt's own messages.

The bakery project (``tests/fixtures/bakery_project``) with its own ``profiles.yml``
(connection from ``env_var()``): plain ``dbt`` runs
:data:`~tests._differential.BAKERY_STEPS` once against its database, one long-lived
``DbtSession`` runs them against another, and
:class:`~tests._differential.BakeryChecks` compares (the DuckDB module does the same,
``tests/test_differential_bakery_duckdb.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.pg_fixtures import PgDatabase, _database
from testbed.postgres import PostgresServer
from tests._differential import (
    BAKERY,
    BAKERY_PACKAGES,
    BakeryChecks,
    Library,
    PlainDbt,
    Runs,
    bakery_parametrize,
    environment,
    library_settings,
    make_copy,
    postgres_snapshot,
    run_sequence,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
pytest_generate_tests = bakery_parametrize


def bakery_env(db: PgDatabase) -> dict[str, str]:
    """The environment the bakery project's postgres profile reads."""
    return {
        "BAKERY_PG_HOST": db.host,
        "BAKERY_PG_PORT": str(db.port),
        "BAKERY_PG_USER": db.user,
        "DBT_ENV_SECRET_BAKERY_PG_PASSWORD": db.password,
        "BAKERY_PG_DBNAME": db.dbname,
        "BAKERY_PG_SSLMODE": db.sslmode,
    }


@pytest.fixture(scope="module")
def databases(pg_server: PostgresServer) -> Iterator[dict[str, PgDatabase]]:
    """A fresh database (and role) per side on the shared server."""
    with _database(pg_server, "dbr_bka") as plain, _database(pg_server, "dbr_bkb") as lib:
        yield {
            side: PgDatabase(pg_server.host, pg_server.port, *names)
            for side, names in (("plain", plain), ("lib", lib))
        }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, databases: dict[str, PgDatabase]) -> Runs:
    """Both sides' outcomes of the bakery sequence (run once for the module)."""
    root = tmp_path_factory.mktemp("bakery-postgres")
    plain_project = make_copy(root / "a", BAKERY, BAKERY_PACKAGES)
    lib_project = make_copy(root / "b", BAKERY, BAKERY_PACKAGES)
    plain_db, lib_db = databases["plain"], databases["lib"]
    plain = PlainDbt(
        plain_project,
        plain_project / "profiles" / "postgres",
        postgres_snapshot(plain_db.connect),
        bakery_env(plain_db),
    )
    profiles = lib_project / "profiles" / "postgres"
    lib = Library(
        lib_project,
        profiles,
        postgres_snapshot(lib_db.connect),
        lambda: library_settings(lib_project, profiles_dir=profiles),
    )
    plain_runs = run_sequence(plain, TestBakeryPostgres.STEPS)
    with environment(bakery_env(lib_db)):
        lib_runs = run_sequence(lib, TestBakeryPostgres.STEPS)
    return Runs(plain_runs, lib_runs, plain.project, lib.project)


@pytest.fixture(scope="module")
def doctor(runs: Runs, databases: dict[str, PgDatabase]) -> tuple[Path, dict[str, str]]:
    """How the doctor reaches the library's database: the project's profile, its env."""
    return runs.lib_project / "profiles" / "postgres", bakery_env(databases["lib"])


class TestBakeryPostgres(BakeryChecks):
    """The bakery sequence on PostgreSQL, direct, with the team's own profile."""

    DOCTOR_VERBOSE = False  # the DuckDB module shows --verbose; here the quiet report
