"""Differential suite on PostgreSQL (SSL on): plain ``dbt`` vs the library, direct and
through the real bastion.

Plain ``dbt`` runs :data:`~tests._differential.POSTGRES_STEPS` once, against its own
database, with the foreign project's own ``profiles.yml`` (connection settings from
``env_var()``). Two library sides are compared with it, each a single long-lived
session on a database of its own:

* ``TestPostgres``: direct, with the same ``profiles.yml``, the same steps;
* ``TestTunnel``: through the sshd fixture (SSL on, host key verified), one tunnel for the
  whole sequence, with the profile the library generates for the project's profile name
  (``foreign``, target ``dev``, the same schema). A tunnelled session's target is fixed
  when it opens, so the ``--target ci`` steps are not in this path, and the warehouse is
  compared without plain dbt's ``ci`` schema.

Every command of the sequence runs on DuckDB (``tests/test_differential_duckdb.py``).
A team's *own* ``profiles.yml`` through the tunnel is the last test here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from dbt_runner import DbtSession
from testbed.pg_fixtures import PgDatabase, _database
from testbed.postgres import PostgresServer
from testbed.sshd import SshdServer
from tests._differential import (
    POSTGRES_STEPS,
    TUNNEL_STEPS,
    DifferentialChecks,
    Library,
    Outcome,
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
from tests.integration.test_session_tunnel import ssh_of, warehouse_of

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
def databases(pg_server: PostgresServer) -> Iterator[dict[str, PgDatabase]]:
    """A fresh database (and role) per side on the shared server."""
    with (
        _database(pg_server, "dbr_dfa") as plain,
        _database(pg_server, "dbr_dfb") as direct,
        _database(pg_server, "dbr_dtb") as tunnel,
    ):
        yield {
            side: PgDatabase(pg_server.host, pg_server.port, *names)
            for side, names in (("plain", plain), ("direct", direct), ("tunnel", tunnel))
        }


@pytest.fixture(scope="module")
def plain(
    tmp_path_factory: pytest.TempPathFactory, databases: dict[str, PgDatabase]
) -> tuple[dict[str, Outcome], PlainDbt]:
    """Plain dbt's outcomes of POSTGRES_STEPS: what both library paths are compared with."""
    db = databases["plain"]
    project = make_copy(tmp_path_factory.mktemp("differential-plain"))
    side = PlainDbt(
        project, project / "profiles" / "postgres", postgres_snapshot(db.connect), pg_env(db)
    )
    return run_sequence(side, steps(POSTGRES_STEPS)), side


class TestPostgres(DifferentialChecks):
    """Direct to PostgreSQL, with the team's own profile."""

    STEPS = steps(POSTGRES_STEPS)

    @pytest.fixture(scope="class")
    def runs(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        databases: dict[str, PgDatabase],
        plain: tuple[dict[str, Outcome], PlainDbt],
    ) -> Runs:
        db = databases["direct"]
        project = make_copy(tmp_path_factory.mktemp("differential-direct"))
        profiles = project / "profiles" / "postgres"
        lib = Library(
            project,
            profiles,
            postgres_snapshot(db.connect),
            lambda: library_settings(project, profiles_dir=profiles),
        )
        with environment(pg_env(db)):
            lib_runs = run_sequence(lib, self.STEPS)
        return Runs(plain[0], lib_runs, plain[1].project, project)


def _without_ci_schema(outcome: Outcome) -> Outcome:
    """Plain dbt's outcome as the tunnel path can have it: no ``ci`` schema tables."""
    if outcome.data is None:
        return outcome
    kept = {t: v for t, v in outcome.data.items() if not t.startswith("ci.")}
    return dataclasses.replace(outcome, data=kept)


class TestTunnel(DifferentialChecks):
    """The library's side through the bastion, one session (one tunnel) for every step."""

    STEPS = steps(TUNNEL_STEPS)

    @pytest.fixture(scope="class")
    def logins(self) -> dict[str, int]:
        """SSH logins sshd saw while the library ran the sequence (filled by ``runs``)."""
        return {}

    @pytest.fixture(scope="class")
    def runs(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        databases: dict[str, PgDatabase],
        plain: tuple[dict[str, Outcome], PlainDbt],
        sshd: SshdServer,
        logins: dict[str, int],
    ) -> Runs:
        db = databases["tunnel"]
        project = make_copy(tmp_path_factory.mktemp("differential-tunnel"))
        lib = Library(
            project,
            project,  # no profiles dir: the library generates the profile
            postgres_snapshot(db.connect),
            lambda: library_settings(
                project,
                target="dev",
                warehouse=warehouse_of(db, schema="dev"),  # the foreign profile's dev target
                ssh=ssh_of(sshd),
            ),
        )
        before = sshd.accepted_connections()
        lib_runs = run_sequence(lib, self.STEPS)
        logins["count"] = sshd.accepted_connections() - before
        plain_runs = {key: _without_ci_schema(plain[0][key]) for key in TUNNEL_STEPS}
        return Runs(plain_runs, lib_runs, plain[1].project, project)

    def test_every_library_command_went_through_the_bastion(
        self, runs: Runs, logins: dict[str, int]
    ) -> None:
        # one session for the whole sequence: one SSH connection carried every command
        # (the library's database is written only through the tunnel's profile)
        assert logins["count"] == 1


def test_own_profile_through_the_tunnel_seeds_like_plain_dbt(
    tmp_path_factory: pytest.TempPathFactory, pg_server: PostgresServer, sshd: SshdServer
) -> None:
    with _database(pg_server, "dbr_dto") as (user, password, dbname):
        db = PgDatabase(pg_server.host, pg_server.port, user, password, dbname)
        project = make_copy(tmp_path_factory.mktemp("own-profile"))
        before = sshd.accepted_connections()
        with environment(pg_env(db)):
            settings = library_settings(
                project,
                profiles_dir=project / "profiles" / "postgres",
                ssh=ssh_of(sshd),
                target="ci",  # a tunnelled session's target is fixed when it opens
            )
            with DbtSession(settings) as session:
                assert session.invoke(["deps"]).success
                seeded = session.invoke(["seed"])
        assert seeded.success, seeded.summary()
        assert {n.status for n in seeded.nodes} == {"success"}
        assert sshd.accepted_connections() > before
        tables = postgres_snapshot(db.connect)()
        assert set(tables) == {"ci.raw_customers", "ci.raw_orders"}
