"""``dbt-runner doctor`` against real faults: a connection limit and a wrong bastion host key.

The doctor opens the session's tunnel and threads + 1 connections at once,
and must name the failing layer with the server's (or the tunnel's) exact
message, show the settings that matter, and exit non-zero.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dbt_runner import ErrorKind, Settings
from dbt_runner._doctor import LAYERS, run_doctor
from dbt_runner.cli import main
from testbed.pg_fixtures import PgDatabase, RedshiftDatabase
from testbed.postgres import PostgresServer
from testbed.sshd import SshdServer, free_port
from tests.integration._nossl import nossl_db, nossl_server  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def env_for(db: PgDatabase, *, kind: str = "postgres", **extra: Any) -> dict[str, str]:
    env = {
        "DBT_RUNNER_WAREHOUSE__TYPE": kind,
        "DBT_RUNNER_WAREHOUSE__HOST": db.host,
        "DBT_RUNNER_WAREHOUSE__PORT": str(db.port),
        "DBT_RUNNER_WAREHOUSE__USER": db.user,
        "DBT_RUNNER_WAREHOUSE__PASSWORD": db.password,
        "DBT_RUNNER_WAREHOUSE__DBNAME": db.dbname,
        "DBT_RUNNER_WAREHOUSE__SSLMODE": "disable",
        "DBT_RUNNER_WAREHOUSE__CONNECT_TIMEOUT_S": "5",
        "DBT_RUNNER_THREADS": "3",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def ssh_env(sshd: SshdServer, known_hosts: Path | None = None) -> dict[str, str]:
    return {
        "DBT_RUNNER_SSH__HOST": sshd.host,
        "DBT_RUNNER_SSH__PORT": str(sshd.port),
        "DBT_RUNNER_SSH__USER": sshd.user,
        "DBT_RUNNER_SSH__PRIVATE_KEY": str(sshd.private_key_path),
        "DBT_RUNNER_SSH__KNOWN_HOSTS": str(known_hosts or sshd.known_hosts_path),
        "DBT_RUNNER_SSH__CONNECT_TIMEOUT_S": "5",
    }


def doctor(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run ``dbt-runner doctor`` with only ``env`` as dbt_runner settings."""
    result = CliRunner().invoke(main, ["doctor", "--hold", "0.5", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import os

    for name in list(os.environ):
        if name.startswith("DBT_RUNNER_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def limited(pg_server: PostgresServer, pg_db: PgDatabase) -> PgDatabase:
    """The dbt role may hold 2 connections: fewer than threads (3) + 1."""
    pg_server.execute(f'alter role "{pg_db.user}" connection limit 2')
    return pg_db


# ------------------------------------------------------------------ connection limit
def test_connection_limit_is_named_with_the_servers_message(
    limited: PgDatabase, clean_env: None
) -> None:
    code, out = doctor(env_for(limited), "--json")
    report = json.loads(out)
    assert code == 3
    assert report["ok"] is False
    assert report["connections_requested"] == 4  # threads + 1
    layers = {x["layer"]: x for x in report["layers"]}
    assert layers["ssh_session"]["status"] == "skipped"
    assert layers["tcp"]["status"] == "ok"
    auth = layers["auth"]
    assert auth["status"] == "failed"
    assert auth["kind"] == "too_many_connections"
    assert auth["detail"].startswith("2/4 ")
    assert any(f'too many connections for role "{limited.user}"' in e for e in auth["errors"])
    assert layers["query"]["status"] == "ok"  # the two that got in answered, held together
    assert layers["query"]["detail"].startswith("2/2 ")
    server = report["settings"]["server"]
    assert server["role_connection_limit"] == 2
    assert report["settings"]["threads"] == 3
    assert any("DEGRADE_THREADS" in hint for hint in report["hints"])
    assert limited.password not in out


def test_connection_limit_through_the_tunnel_text_report(
    limited: PgDatabase, sshd: SshdServer, clean_env: None
) -> None:
    code, out = doctor({**env_for(limited), **ssh_env(sshd)})
    assert code == 3
    assert "ssh_session   OK" in out
    assert "channel_open  OK" in out
    assert "auth          FAILED  2/4 connection(s) logged in [too_many_connections]" in out
    assert f'too many connections for role "{limited.user}"' in out
    assert "server.role_connection_limit" in out
    assert limited.password not in out


def test_all_layers_ok_through_the_tunnel(pg_db: PgDatabase, sshd: SshdServer) -> None:
    settings = Settings(
        warehouse={
            "type": "postgres",
            "host": pg_db.host,
            "port": pg_db.port,
            "user": pg_db.user,
            "password": pg_db.password,
            "dbname": pg_db.dbname,
            "sslmode": "disable",
        },
        ssh={
            "host": sshd.host,
            "port": sshd.port,
            "user": sshd.user,
            "private_key": sshd.private_key_path,
            "known_hosts": sshd.known_hosts_path,
        },
        threads=3,
    )
    logins = sshd.accepted_connections()
    report = run_doctor(settings, hold_s=0.3)
    assert report.ok, report.render()
    # a password login: no AWS (the iam layer is skipped); every other layer OK, parse too
    assert [x.status for x in report.layers] == ["skipped"] + ["ok"] * (len(LAYERS) - 1)
    assert len(report.connections) == 4 and all(c.ok for c in report.connections)
    assert report.settings["server"]["role_connection_limit"] == "unlimited"
    assert report.settings["server"]["role_sessions_now"] >= 4  # all held at once
    assert sshd.accepted_connections() == logins + 1  # one SSH connection, like a session


def test_redshift_driver_sees_the_connection_limit(
    pg_server: PostgresServer, redshift_db: RedshiftDatabase
) -> None:
    pg_server.execute(f'alter role "{redshift_db.user}" connection limit 1')
    settings = Settings(
        warehouse={
            "type": "redshift",
            "host": redshift_db.host,
            "port": redshift_db.port,
            "user": redshift_db.user,
            "password": redshift_db.password,
            "dbname": redshift_db.dbname,
            "sslmode": "disable",
        },
        threads=2,
    )
    report = run_doctor(settings, hold_s=0.2)
    auth = report.layer("auth")
    assert auth.status == "failed", report.render()
    assert auth.kind is ErrorKind.TOO_MANY_CONNECTIONS
    assert auth.detail.startswith("1/3 ")
    assert any(f'too many connections for role "{redshift_db.user}"' in e for e in auth.errors)
    assert report.settings["server"]["role_connection_limit"] == 1


# -------------------------------------------------------------------- wrong host key
def test_wrong_bastion_host_key(
    pg_db: PgDatabase, sshd: SshdServer, tmp_path: Path, clean_env: None
) -> None:
    impostor = sshd.make_key("impostor_doctor")
    line = " ".join(Path(f"{impostor}.pub").read_text().split()[:2])
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{sshd.host}]:{sshd.port} {line}\n")
    logins = sshd.accepted_connections()

    code, out = doctor({**env_for(pg_db), **ssh_env(sshd, known_hosts)})
    assert code == 2  # like a refused login: fix the settings, no retry helps
    assert "ssh_session   FAILED  could not open the SSH session" in out
    assert "HostKeyError: host key verification failed" in out
    assert sshd.host_key_fingerprint in out
    for layer in ("channel_open", "tcp", "auth", "query"):
        assert f"{layer:<13} skipped" in out
    assert sshd.accepted_connections() == logins  # never authenticated to it

    code, out = doctor({**env_for(pg_db), **ssh_env(sshd, known_hosts)}, "--json")
    report = json.loads(out)
    assert code == 2
    ssh_layer = report["layers"][LAYERS.index("ssh_session")]
    assert ssh_layer["kind"] == "auth"
    assert "host key verification failed" in ssh_layer["errors"][0]
    assert report["connections"] == []


# --------------------------------------------------------------------- other layers
def test_bastion_cannot_reach_the_warehouse(pg_db: PgDatabase, sshd: SshdServer) -> None:
    closed = free_port()
    settings = Settings(
        warehouse={
            "type": "postgres",
            "host": "127.0.0.1",
            "port": closed,
            "user": pg_db.user,
            "password": pg_db.password,
            "dbname": pg_db.dbname,
            "sslmode": "disable",
        },
        ssh={
            "host": sshd.host,
            "port": sshd.port,
            "user": sshd.user,
            "private_key": sshd.private_key_path,
            "known_hosts": sshd.known_hosts_path,
        },
    )
    report = run_doctor(settings, hold_s=0)
    assert report.layer("ssh_session").status == "ok"
    channel = report.layer("channel_open")
    assert channel.status == "failed" and channel.kind is ErrorKind.TUNNEL
    assert f"127.0.0.1:{closed}" in channel.errors[0]
    assert report.layer("tcp").status == "skipped"


def test_wrong_password_fails_at_auth(pg_db: PgDatabase, clean_env: None) -> None:
    env = env_for(pg_db)
    env["DBT_RUNNER_WAREHOUSE__PASSWORD"] = "not-the-password"
    code, out = doctor(env, "--json", "--connections", "2")
    data = json.loads(out)
    assert code == 2
    auth = next(x for x in data["layers"] if x["layer"] == "auth")
    assert auth["status"] == "failed" and auth["kind"] == "auth"
    assert f'password authentication failed for user "{pg_db.user}"' in auth["errors"][0]
    assert "not-the-password" not in out
    assert data["connections_requested"] == 2


def test_ssl_required_by_a_server_without_ssl_is_configuration_with_the_fix(
    nossl_db: PgDatabase,  # noqa: F811 - the fixture imported above
    clean_env: None,
) -> None:
    """The default sslmode=require against a server without SSL: exit 2, the setting named."""
    code, out = doctor(env_for(nossl_db, DBT_RUNNER_WAREHOUSE__SSLMODE="require"), "--json")
    data = json.loads(out)
    assert code == 2
    failed = [x for x in data["layers"] if x["status"] == "failed"]
    assert failed and {x["kind"] for x in failed} == {"configuration"}
    assert "server does not support SSL, but SSL was required" in failed[0]["errors"][0]
    assert any("DBT_RUNNER_WAREHOUSE__SSLMODE" in hint for hint in data["hints"])
