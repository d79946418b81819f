"""``sslmode=verify-full`` through a real OpenSSH bastion, on both adapters.

The ``named_*`` servers present a certificate for ``warehouse.test`` and nothing else
(no 127.0.0.1, no localhost), signed by the test CA; ``warehouse.test`` resolves
nowhere. The bastion reaches them at 127.0.0.1 (``SSH__REMOTE_HOST``). So a run
succeeds only if the drivers connect by the name ``warehouse.test`` — and TLS checks
that name — while the bytes go through the tunnel: dbt-postgres (libpq), dbt-redshift
(redshift_connector, against the Redshift stand-in) and our own connections (the writer
lock, ``doctor``), with the generated profile and with a team's own profiles.yml. A
server whose certificate is for another name is refused: exit 2, the fix in the
message, no retry, nothing left on the server.

Real PostgreSQL, real sshd, the stand-in proxy; loopback only.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dbt_runner import DbtSession, RunResult, Settings, _dbt
from dbt_runner.cli import main
from dbt_runner.synthetic import create_raw_tables, load_batch
from testbed.pg_fixtures import PgDatabase, RedshiftDatabase
from testbed.postgres import PostgresServer
from testbed.settings import NO_WAITS, PROJECT, ssh_of
from testbed.sshd import SshdServer, wait_until
from testbed.tls import WAREHOUSE_NAME, test_pki

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MODELS = ["stg_ecs_order_info", "stg_uni_tracking_info", "stg_uni_tracking_spath"]
T0 = 1_700_000_000
PASSWORD_VAR = "TLS_TEAM_PASSWORD"


# ----------------------------------------------------------------------------- helpers
def load_raw(db: PgDatabase) -> None:
    """One hour of synthetic raw data (psycopg2, verify-full by the fixture's dsn)."""
    conn = db.connect()
    try:
        create_raw_tables(conn, "postgres")
        load_batch(conn, "postgres", T0, T0 + 3600, orders_per_minute=2)
    finally:
        conn.close()


def named_warehouse(db: PgDatabase, kind: str, **extra: Any) -> dict[str, Any]:
    """WAREHOUSE__* by the certificate's name; the sslmode is left to the default."""
    values = {
        "type": kind,
        "host": WAREHOUSE_NAME,
        "port": db.port,
        "user": db.user,
        "password": db.password,
        "dbname": db.dbname,
        "schema": "stg",
        **extra,
    }
    if kind == "postgres":
        values["sslrootcert"] = test_pki().ca_path  # libpq: the private CA
    return values


def named_settings(db: PgDatabase, sshd: SshdServer, kind: str, state: Path) -> Settings:
    return Settings(
        project_dir=PROJECT,
        warehouse=named_warehouse(db, kind),
        ssh=ssh_of(sshd, remote_host=db.host),  # the bastion reaches 127.0.0.1
        state_dir=state,
        threads=3,
        retry=dict(NO_WAITS),
    )


def ok(result: RunResult) -> RunResult:
    assert result.success, result.summary()
    return result


def rows(db: PgDatabase, sql: str) -> list[tuple[Any, ...]]:
    conn = db.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())
    finally:
        conn.close()


# ------------------------------------------------------------- the generated profile
def test_verify_full_through_the_bastion_to_postgres(
    named_pg_db: PgDatabase, sshd: SshdServer, tmp_path: Path
) -> None:
    """dbt-postgres and the writer lock (psycopg2) verify warehouse.test through the
    tunnel; a tunnel re-opened on another local port changes neither the route's
    working nor dbt's profile (no re-parse)."""
    load_raw(named_pg_db)
    settings = named_settings(named_pg_db, sshd, "postgres", tmp_path / "state")
    assert settings.warehouse.effective_sslmode == "verify-full"  # the default
    with DbtSession(settings) as session:
        tunnel = session.tunnel
        assert tunnel is not None
        first = ok(session.run_staging())  # the writer lock, then dbt: both verify-full
        assert sorted(n.name for n in first.nodes) == MODELS

        # the tunnel drops and its port is taken meanwhile: it re-opens elsewhere
        old_port = tunnel.local_port
        tunnel.close()
        with socket.create_server(("127.0.0.1", old_port)):
            second = ok(session.run_staging())
        assert tunnel.local_port != old_port
        assert second.attempts == 1
        assert session.parse_count == 1  # the profile names the warehouse: still valid
        assert _dbt.resolve(WAREHOUSE_NAME, named_pg_db.port) == ("127.0.0.1", tunnel.local_port)
    assert _dbt.resolve(WAREHOUSE_NAME, named_pg_db.port) is None  # closed: no route left
    assert rows(named_pg_db, "select count(*) from stg.stg_ecs_order_info")[0][0] == 120


def test_verify_full_through_the_bastion_to_the_redshift_stand_in(
    named_redshift_db: RedshiftDatabase, sshd: SshdServer, tmp_path: Path
) -> None:
    """dbt-redshift and the writer lock (redshift_connector) verify warehouse.test
    through the tunnel; redshift_connector trusts the test CA through the system store
    (SSL_CERT_FILE, set by the fixture), as it would a private CA in production."""
    load_raw(named_redshift_db)
    settings = named_settings(named_redshift_db, sshd, "redshift", tmp_path / "state")
    assert settings.warehouse.effective_sslmode == "verify-full"
    with DbtSession(settings) as session:
        staging = ok(session.run_staging())
    assert sorted(n.name for n in staging.nodes) == MODELS
    created = named_redshift_db.clauses_for("stg_ecs_order_info")  # went through the stand-in
    assert created and "diststyle key" in created[0]


# ------------------------------------------------------------- the team's own profile
def write_team(root: Path, db: PgDatabase, kind: str) -> tuple[Path, Path]:
    """A one-seed project and a profiles.yml whose target names the certificate's host."""
    project = root / "team_project"
    (project / "seeds").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: team\nversion: '1.0'\nconfig-version: 2\nprofile: team\n"
    )
    (project / "seeds" / "people.csv").write_text("id,name\n1,ada\n2,grace\n3,edsger\n")
    profiles = root / "team_profiles"
    profiles.mkdir()
    output = {
        "type": kind,
        "host": WAREHOUSE_NAME,
        "port": db.port,
        "user": db.user,
        "password": f"{{{{ env_var('{PASSWORD_VAR}') }}}}",
        "dbname": db.dbname,
        "schema": "team",
        "threads": 2,
        "sslmode": "verify-full",
    }
    if kind == "postgres":
        output["sslrootcert"] = str(test_pki().ca_path)
    else:
        output["method"] = "database"
    document = {"team": {"target": "prod", "outputs": {"prod": output}}}
    (profiles / "profiles.yml").write_text(json.dumps(document))  # JSON is YAML
    return project, profiles


@pytest.mark.parametrize("kind", ["postgres", "redshift"])
def test_verify_full_through_the_bastion_with_the_teams_own_profile(
    kind: str,
    request: pytest.FixtureRequest,
    sshd: SshdServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The user's profiles.yml is used as it is (host: warehouse.test, its own sslmode and
    sslrootcert); SSH__REMOTE_HOST says where the bastion connects."""
    db: PgDatabase = request.getfixturevalue(f"named_{'pg' if kind == 'postgres' else kind}_db")
    for name in list(os.environ):
        if name.startswith(("DBT_RUNNER_", "DBT_TARGET", "DBT_PROFILE")):
            monkeypatch.delenv(name)
    monkeypatch.setenv(PASSWORD_VAR, db.password)
    project, profiles = write_team(tmp_path, db, kind)
    profiles_text = (profiles / "profiles.yml").read_text()
    settings = Settings(
        project_dir=project,
        profiles_dir=profiles,
        ssh=ssh_of(sshd, remote_host=db.host),
        retry=dict(NO_WAITS),
    )
    with DbtSession(settings) as session:
        seeded = ok(session.invoke(["seed"], writer_lock=True))  # our lock connection too
        args = list(seeded.attempt_log[0].args)
        assert Path(args[args.index("--profiles-dir") + 1]) == profiles.resolve()
    assert [n.name for n in seeded.nodes] == ["people"]
    assert rows(db, "select count(*) from team.people") == [(3,)]
    assert (profiles / "profiles.yml").read_text() == profiles_text  # untouched
    assert sorted(p.name for p in profiles.iterdir()) == ["profiles.yml"]

    if kind == "postgres":  # doctor's probes: the team's target, by name, via the route
        from dbt_runner._doctor import LAYERS, run_doctor

        report = run_doctor(settings, hold_s=0.1, parse=False)
        layers = [(x.layer, x.status) for x in report.layers if x.layer not in ("parse", "iam")]
        expected = [(name, "ok") for name in LAYERS if name not in ("parse", "iam")]
        assert layers == expected, report.render()  # iam: skipped (a password login)
        assert report.target.startswith(f"postgres {db.user}@{WAREHOUSE_NAME}:{db.port}/")


# ------------------------------------------------------------------ the wrong name
def cli_env(db: PgDatabase, kind: str, sshd: SshdServer, tmp_path: Path) -> dict[str, str]:
    """Settings for a server whose certificate is for 127.0.0.1/localhost, not the name."""
    env = {
        f"DBT_RUNNER_WAREHOUSE__{k.upper()}": str(v) for k, v in named_warehouse(db, kind).items()
    }
    env.update({f"DBT_RUNNER_SSH__{k.upper()}": str(v) for k, v in ssh_of(sshd).items()})
    env.update(
        {
            "DBT_RUNNER_SSH__REMOTE_HOST": db.host,
            "DBT_RUNNER_PROJECT_DIR": str(PROJECT),
            "DBT_RUNNER_STATE_DIR": str(tmp_path / "state"),
            "DBT_RUNNER_RETRY__ATTEMPTS": "3",  # a retry would show: none may happen
            "DBT_RUNNER_RETRY__INITIAL_WAIT_S": "0",
            "DBT_RUNNER_RETRY__MAX_WAIT_S": "0",
        }
    )
    return env


@pytest.mark.parametrize(
    ("kind", "command", "says"),
    [
        # staging takes the writer lock first: our psycopg2 connection meets the certificate
        ("postgres", "staging", 'is for "127.0.0.1" (and 1 other name), not WAREHOUSE__HOST='),
        # test takes no lock: dbt-redshift's own connection meets it
        ("redshift", "test", "is not for WAREHOUSE__HOST='warehouse.test'"),
    ],
)
def test_a_certificate_for_another_name_is_refused_with_exit_2_and_the_fix(
    kind: str,
    command: str,
    says: str,
    request: pytest.FixtureRequest,
    pg_server: PostgresServer,
    sshd: SshdServer,
    tmp_path: Path,
) -> None:
    db: PgDatabase = request.getfixturevalue("pg_db" if kind == "postgres" else "redshift_db")
    before = sshd.accepted_connections()
    result = CliRunner().invoke(main, [command, "--json"], env=cli_env(db, kind, sshd, tmp_path))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 2, result.output

    data = json.loads(result.stdout)
    # never retried: the lock's failure stops staging before dbt (0 attempts); dbt's
    # failed connect is one attempt
    assert data["success"] is False and data["attempts"] == (0 if command == "staging" else 1)
    assert "retrying" not in result.stderr
    assert data["error"]["kind"] == "configuration"
    message = data["error"]["message"]
    assert says in message
    assert "set DBT_RUNNER_WAREHOUSE__HOST" in message and "DBT_RUNNER_SSH__REMOTE_HOST" in message
    assert db.password not in result.output
    # one session, one SSH login; nothing left on the server: no session, no schema
    assert wait_until(lambda: sshd.accepted_connections() - before >= 1, timeout=5)
    assert sshd.accepted_connections() - before == 1
    assert pg_server.wait_until_no_sessions(db.dbname, timeout_s=10)
    assert rows(
        db, "select count(*) from information_schema.schemata where schema_name = 'stg'"
    ) == [(0,)]
