"""Differential suite through the real bastion: plain ``dbt`` direct, the library via sshd.

Plain ``dbt`` runs the representative subset against its PostgreSQL database
directly with the foreign project's own ``profiles.yml``; the library runs the
same commands against its own database through the sshd fixture (SSL on, host
key verified), one session — one tunnel — for the whole sequence, with the profile it
generates for the project's profile name (``foreign``, target ``dev``, the
same schema). Statuses, failing rows, warehouse contents must be the same,
and every library command must really have gone through the bastion.

A team's *own* ``profiles.yml`` through the tunnel: the session's target
(``ci`` here) is the one pointed at the bastion, the rest of the file verbatim.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import DbtSession
from tests._differential import (
    TUNNEL_STEPS,
    DifferentialChecks,
    Library,
    Runs,
    environment,
    library_settings,
    make_copy,
    parametrize_keys,
    postgres_snapshot,
    run_sequence,
    steps,
)
from tests.integration.test_differential_postgres import pg_env, plain_side
from tests.services.pg_fixtures import PgDatabase, _database
from tests.services.postgres import PostgresServer
from tests.services.sshd import SshdServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
pytest_generate_tests = parametrize_keys


def ssh_of(sshd: SshdServer) -> dict[str, Any]:
    return {
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "private_key": sshd.private_key_path,
        "known_hosts": sshd.known_hosts_path,
    }


def warehouse_of(db: PgDatabase) -> dict[str, Any]:
    """The generated profile's connection: the database behind the bastion, schema dev."""
    return {
        "type": "postgres",
        "host": db.host,
        "port": db.port,
        "user": db.user,
        "password": db.password,
        "dbname": db.dbname,
        "sslmode": db.sslmode,
        "schema": "dev",  # the foreign profile's dev target
    }


@pytest.fixture(scope="module")
def databases(pg_server: PostgresServer) -> Iterator[tuple[PgDatabase, PgDatabase]]:
    with _database(pg_server, "dbr_dta") as a, _database(pg_server, "dbr_dtb") as b:
        yield (
            PgDatabase(pg_server.host, pg_server.port, *a),
            PgDatabase(pg_server.host, pg_server.port, *b),
        )


@pytest.fixture(scope="module")
def logins() -> dict[str, int]:
    """SSH logins sshd saw while the library ran the sequence (filled by ``runs``)."""
    return {}


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
    databases: tuple[PgDatabase, ...],
    sshd: SshdServer,
    logins: dict[str, int],
) -> Runs:
    root = tmp_path_factory.mktemp("differential-tunnel")
    plain_db, lib_db = databases
    plain = plain_side(root / "a", plain_db)
    lib_project = make_copy(root / "b")
    lib = Library(
        lib_project,
        lib_project,  # no profiles dir: the library generates the profile
        postgres_snapshot(lib_db.connect),
        lambda: library_settings(
            lib_project, target="dev", warehouse=warehouse_of(lib_db), ssh=ssh_of(sshd)
        ),
    )
    sequence = TestTunnel.STEPS
    plain_runs = run_sequence(plain, sequence)
    before = sshd.accepted_connections()
    lib_runs = run_sequence(lib, sequence)
    logins["count"] = sshd.accepted_connections() - before
    return Runs(plain_runs, lib_runs, plain.project, lib.project)


class TestTunnel(DifferentialChecks):
    """The representative subset, the library's side through the bastion."""

    STEPS = steps(TUNNEL_STEPS)

    def test_every_library_command_went_through_the_bastion(
        self, runs: Runs, logins: dict[str, int]
    ) -> None:
        # one session for the whole sequence: one SSH connection carried every command
        # (the library's database is written only through the tunnel's profile)
        assert logins["count"] == 1


def test_own_profile_through_the_tunnel_seeds_like_plain_dbt(
    tmp_path: Path, pg_server: PostgresServer, sshd: SshdServer
) -> None:
    with _database(pg_server, "dbr_dto") as (user, password, dbname):
        db = PgDatabase(pg_server.host, pg_server.port, user, password, dbname)
        project = make_copy(tmp_path)
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
