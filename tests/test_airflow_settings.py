"""dbt_runner.airflow: Airflow connections -> Settings, without leaking a secret.

The mapping is tested on connection-shaped objects in this process (Airflow
is not imported here: it reconfigures logging process-wide); one test
resolves real ``AIRFLOW_CONN_*`` variables through Airflow in a child process.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import os
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import ConfigurationError, DbtSession, SessionState, Settings
from dbt_runner.airflow import (
    cycle_is_due,
    dbt_session,
    get_connection,
    settings_from_connections,
    ssh_values,
    warehouse_values,
)

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "wh-pass-7f3a9c1e"
PASSPHRASE = "key-pass-51d0be"
KEY_BODY = "b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABDSECRETLINE"
KEY_TEXT = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n" + KEY_BODY + "\n-----END OPENSSH PRIVATE KEY-----\n"
)
ED25519_BLOB = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))
ED25519_B64 = base64.b64encode(ED25519_BLOB).decode()


@dataclass
class Conn:
    """Shaped like ``airflow.sdk.Connection`` (the attributes the module reads)."""

    conn_id: str
    conn_type: str
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = None
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def extra_dejson(self) -> dict[str, Any]:
        return dict(self.extra)


def redshift(**kw: Any) -> Conn:
    values: dict[str, Any] = {
        "conn_id": "redshift_default",
        "conn_type": "redshift",
        "host": "cluster.abc.eu-west-1.redshift.amazonaws.com",
        "port": 5439,
        "login": "dbt",
        "password": PASSWORD,
        "schema": "analytics",
    }
    values.update(kw)
    return Conn(**values)


def bastion(**extra: Any) -> Conn:
    return Conn(
        "bastion", "ssh", host="bastion.example.com", port=2222, login="tunnel", extra=extra
    )


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("DBT_RUNNER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(
        "HOME", str(tmp_path / "home")
    )  # no ~/.ssh/known_hosts unless a test adds one


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519"
    path.write_text(KEY_TEXT)
    path.chmod(0o600)
    return path


def assert_no_secret(text: str) -> None:
    for secret in (PASSWORD, PASSPHRASE, KEY_BODY):
        assert secret not in text


# ---------------------------------------------------------------------- warehouse
def test_redshift_connection_maps_to_the_warehouse_settings() -> None:
    conn = redshift(extra={"sslmode": "verify-full", "connect_timeout": "7"})
    with settings_from_connections(conn) as settings:
        wh = settings.warehouse
        assert (wh.type, wh.host, wh.port, wh.user, wh.dbname) == (
            "redshift",
            conn.host,
            5439,
            "dbt",
            "analytics",  # Airflow's "Schema" field is the database name
        )
        assert wh.password is not None and wh.password.get_secret_value() == PASSWORD
        assert wh.sslmode == "verify-full" and wh.connect_timeout_s == 7
        assert wh.schema == "staging"  # the dbt target schema is not in the connection
        assert not settings.ssh.enabled
        assert_no_secret(repr(settings) + str(settings) + repr(settings.model_dump()))


@pytest.mark.parametrize("conn_type", ["postgres", "postgresql", "Postgres"])
def test_postgres_connection_types(conn_type: str) -> None:
    values = warehouse_values(redshift(conn_type=conn_type, port=None))
    assert values["type"] == "postgres" and "port" not in values


def test_warehouse_type_override_for_redshift_stored_as_postgres() -> None:
    values = warehouse_values(redshift(conn_type="postgres"), warehouse_type="redshift")
    assert values["type"] == "redshift"


def test_redshift_connector_ssl_false_means_sslmode_disable() -> None:
    assert warehouse_values(redshift(extra={"ssl": False}))["sslmode"] == "disable"
    assert "sslmode" not in warehouse_values(redshift(extra={"ssl": True}))


def test_postgres_sslrootcert_extra_is_the_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    conn = redshift(conn_type="postgres", extra={"sslmode": "verify-full", "sslrootcert": str(ca)})
    with settings_from_connections(conn) as settings:
        assert settings.warehouse.sslrootcert == ca
        assert settings.warehouse.effective_sslmode == "verify-full"


@pytest.mark.parametrize(
    ("conn", "needle"),
    [
        (redshift(conn_type="mysql"), "'mysql'"),
        (redshift(host=None), "Host"),
        (redshift(login=None), "Login"),
        (redshift(schema=None), "Schema"),
        (redshift(extra={"connect_timeout": "soon"}), "connect_timeout"),
    ],
)
def test_bad_warehouse_connections_are_configuration_errors(conn: Conn, needle: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        warehouse_values(conn)
    assert needle in str(info.value) and "'redshift_default'" in str(info.value)
    assert_no_secret(str(info.value))


# ------------------------------------------------------ warehouse: Redshift IAM extras
def test_redshift_iam_connection_maps_to_method_iam() -> None:
    """The Amazon provider's documented example: login and password are not used."""
    conn = redshift(
        extra={
            "iam": True,
            "cluster_identifier": "redshift-cluster-1",
            "port": 5439,
            "region": "us-east-1",
            "db_user": "awsuser",
            "database": "dev",
            "profile": "default",
            "db_groups": ["analysts", "loaders"],
            "auto_create": "true",
        }
    )
    with settings_from_connections(conn) as settings:
        wh = settings.warehouse
        assert (wh.method, wh.cluster_id, wh.db_user, wh.region, wh.iam_profile) == (
            "iam",
            "redshift-cluster-1",
            "awsuser",
            "us-east-1",
            "default",
        )
        assert wh.db_groups == ("analysts", "loaders") and wh.auto_create is True
        assert (wh.user, wh.password, wh.dbname) == (None, None, "analytics")  # Schema wins
        assert wh.host == "cluster.abc.eu-west-1.redshift.amazonaws.com"
        assert_no_secret(repr(settings))


def test_redshift_iam_cluster_and_user_default_to_host_and_login() -> None:
    values = warehouse_values(redshift(extra={"iam": "true"}))  # as the provider's hook reads it
    assert values["cluster_id"] == "cluster" and values["db_user"] == "dbt"
    assert "password" not in values and "user" not in values
    assert Settings(warehouse=values).warehouse.is_iam


def test_redshift_serverless_iam_connection_maps_to_the_workgroup() -> None:
    conn = redshift(
        host="default.123456789012.us-east-1.redshift-serverless.amazonaws.com",
        extra={
            "iam": True,
            "is_serverless": True,
            "serverless_work_group": "default",
            "serverless_token_duration_seconds": 3600,
            "region": "us-east-1",
        },
    )
    with settings_from_connections(conn) as settings:
        wh = settings.warehouse
        assert (wh.method, wh.workgroup, wh.region, wh.cluster_id) == (
            "iam",
            "default",
            "us-east-1",
            None,
        )
        assert wh.is_serverless and wh.db_user is None  # the IAM identity is the user


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"iam": True, "is_serverless": True}, "serverless_work_group"),
        (
            {
                "iam": True,
                "is_serverless": True,
                "serverless_work_group": "wg",
                "serverless_token_duration_seconds": 900,
            },
            "serverless_token_duration_seconds",
        ),
        ({"iam": True, "access_key_id": "AKIA", "secret_access_key": PASSWORD}, "access_key_id"),
    ],
)
def test_unusable_iam_extras_are_configuration_errors(extra: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        warehouse_values(redshift(extra=extra))
    assert needle in str(info.value) and "'redshift_default'" in str(info.value)
    assert_no_secret(str(info.value))


def test_iam_on_a_postgres_connection_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="Redshift connections only"):
        warehouse_values(redshift(conn_type="postgres", extra={"iam": True}))


# ---------------------------------------------------------------------- bastion
def test_ssh_connection_with_key_file_and_pinned_host_key(key_file: Path) -> None:
    host_key = f"ssh-ed25519 {ED25519_B64}"
    conn = bastion(key_file=str(key_file), host_key=host_key, conn_timeout="4")
    with settings_from_connections(redshift(), conn) as settings:
        ssh = settings.ssh
        assert (ssh.host, ssh.port, ssh.user) == ("bastion.example.com", 2222, "tunnel")
        assert ssh.private_key == key_file
        assert ssh.host_key == host_key
        assert ssh.connect_timeout_s == 4.0
        assert not ssh.insecure_skip_host_key_check
        assert not ssh.look_for_keys and not ssh.allow_agent  # explicit key only


def test_bare_base64_host_key_gets_its_type_from_the_key_blob(key_file: Path) -> None:
    values = ssh_values(bastion(key_file=str(key_file), host_key=ED25519_B64))
    assert values["host_key"] == f"ssh-ed25519 {ED25519_B64}"


def test_key_text_lives_in_a_private_file_only_while_the_settings_are_in_use() -> None:
    conn = bastion(private_key=KEY_TEXT, private_key_passphrase=PASSPHRASE, no_host_key_check=True)
    with settings_from_connections(redshift(), conn) as settings:
        key = settings.ssh.private_key
        assert key is not None and key.read_text() == KEY_TEXT
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
        secret = settings.ssh.private_key_passphrase
        assert secret is not None and secret.get_secret_value() == PASSPHRASE
        assert_no_secret(repr(settings) + str(settings.model_dump()))
    assert not key.exists() and not key.parent.exists()


def test_key_text_with_escaped_newlines_is_accepted() -> None:
    conn = bastion(private_key=KEY_TEXT.replace("\n", "\\n"), no_host_key_check="true")
    with settings_from_connections(redshift(), conn) as settings:
        assert settings.ssh.private_key is not None
        assert settings.ssh.private_key.read_text() == KEY_TEXT


def test_key_file_is_removed_even_when_the_settings_are_invalid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    # no_host_key_check and a known_hosts file contradict each other in Settings
    conn = bastion(private_key=KEY_TEXT, no_host_key_check=True)
    overrides = {"ssh": {"known_hosts": str(tmp_path)}}
    with (
        pytest.raises(ConfigurationError),
        settings_from_connections(redshift(), conn, **overrides),
    ):
        pass  # pragma: no cover - never reached
    assert list(scratch.iterdir()) == []


def test_connection_password_decrypts_the_key_like_paramiko(key_file: Path) -> None:
    conn = bastion(key_file=str(key_file), no_host_key_check=True)
    conn.password = PASSPHRASE
    values = ssh_values(conn)
    assert values["private_key_passphrase"] == PASSPHRASE


def test_no_host_key_check_is_honoured_loudly(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "dbt_runner.airflow")
    values = ssh_values(bastion(key_file=str(key_file), no_host_key_check="true"))
    assert values["insecure_skip_host_key_check"] is True
    assert "NOT verified" in caplog.text


def test_system_known_hosts_is_the_fallback(key_file: Path, tmp_path: Path) -> None:
    known = tmp_path / "home" / ".ssh" / "known_hosts"
    known.parent.mkdir(parents=True)
    known.write_text(f"[bastion.example.com]:2222 ssh-ed25519 {ED25519_B64}\n")
    values = ssh_values(bastion(key_file=str(key_file)))
    assert values["known_hosts"] == known
    assert "insecure_skip_host_key_check" not in values


def test_known_hosts_extra(key_file: Path, tmp_path: Path) -> None:
    known = tmp_path / "kh"
    known.write_text("")
    values = ssh_values(bastion(key_file=str(key_file), known_hosts=str(known)))
    assert values["known_hosts"] == known


def test_allow_host_key_change_is_ignored_with_a_warning(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "dbt_runner.airflow")
    conn = bastion(key_file=str(key_file), host_key=ED25519_B64, allow_host_key_change="true")
    values = ssh_values(conn)
    assert values["host_key"].startswith("ssh-ed25519 ")
    assert "allow_host_key_change is ignored" in caplog.text


def test_look_for_keys_is_opt_in(key_file: Path) -> None:
    assert "look_for_keys" not in ssh_values(bastion(key_file=str(key_file), host_key=ED25519_B64))
    values = ssh_values(bastion(look_for_keys="true", host_key=ED25519_B64))
    assert values["look_for_keys"] is True and "private_key" not in values


@pytest.mark.parametrize(
    ("extra", "password", "needle"),
    [
        ({"host_key": ED25519_B64}, None, "has no key"),
        ({"host_key": ED25519_B64}, PASSWORD, "password authentication"),
        ({"key_file": "/k", "private_key": KEY_TEXT}, None, "both"),
        ({"key_file": "/k"}, None, "verify the bastion's host key"),
        ({"key_file": "/k", "host_key": ED25519_B64, "no_host_key_check": True}, None, "host_key"),
        ({"private_key": "just-one-line"}, None, "BEGIN and END"),
        ({"key_file": "/k", "host_key": ED25519_B64, "conn_timeout": "x"}, None, "conn_timeout"),
    ],
)
def test_bad_ssh_connections_are_configuration_errors(
    extra: dict[str, Any], password: str | None, needle: str, tmp_path: Path
) -> None:
    conn = bastion(**extra)
    conn.password = password
    with pytest.raises(ConfigurationError) as info:
        ssh_values(conn, key_dir=tmp_path)
    assert needle in str(info.value) and "'bastion'" in str(info.value)
    assert_no_secret(str(info.value))


def test_ssh_connection_needs_host_login_and_type() -> None:
    with pytest.raises(ConfigurationError, match="no Host"):
        ssh_values(Conn("b", "ssh", login="x"))
    with pytest.raises(ConfigurationError, match="no Login"):
        ssh_values(Conn("b", "ssh", host="h"))
    with pytest.raises(ConfigurationError, match="'ssh' connection"):
        ssh_values(Conn("b", "postgres", host="h", login="x"))


def test_key_text_needs_a_key_dir() -> None:
    with pytest.raises(ConfigurationError, match="settings_from_connections"):
        ssh_values(bastion(private_key=KEY_TEXT, no_host_key_check=True))


# ---------------------------------------------------------------------- merging
def test_env_and_overrides_fill_in_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBT_RUNNER_WAREHOUSE__SCHEMA", "stg_env")
    monkeypatch.setenv("DBT_RUNNER_RETRY__ATTEMPTS", "5")
    monkeypatch.setenv("DBT_RUNNER_WAREHOUSE__HOST", "env-host-loses")
    with settings_from_connections(redshift(), threads=7, warehouse={"port": 15439}) as s:
        assert s.warehouse.schema == "stg_env" and s.retry.attempts == 5
        assert s.warehouse.host == redshift().host  # the connection wins over the env
        assert s.warehouse.port == 15439 and s.threads == 7  # keywords win over both


def test_dbt_session_opens_and_closes_from_connections(tmp_path: Path) -> None:
    conn = redshift(conn_type="postgres", extra={"sslmode": "disable"})
    with dbt_session(conn, state_dir=tmp_path / "state") as session:
        assert isinstance(session, DbtSession) and session.state is SessionState.OPEN
        assert isinstance(session.settings, Settings)
        assert_no_secret(repr(session))
    assert session.state is SessionState.CLOSED


# ---------------------------------------------------------------------- cadence
@pytest.mark.parametrize(
    ("hh", "mm", "every", "due"),
    [
        (10, 0, 60, True),
        (10, 7, 60, True),  # a manual run inside the first slot of the hour
        (10, 15, 60, False),
        (10, 45, 60, False),
        (0, 0, 60, True),
        (10, 30, 30, True),
        (10, 15, 30, False),
        (10, 15, 15, True),
        (10, 0, 0, False),  # 0: never
        (12, 0, 120, True),
        (11, 0, 120, False),
    ],
)
def test_cycle_is_due(hh: int, mm: int, every: int, due: bool) -> None:
    assert cycle_is_due(datetime(2026, 1, 1, hh, mm), every) is due


# ---------------------------------------------------------------------- Airflow itself
def test_core_package_does_not_import_airflow() -> None:
    code = (
        "import sys, dbt_runner, dbt_runner.airflow, dbt_runner.cli; "
        "print('airflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def test_get_connection_without_airflow_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "airflow", None)
    monkeypatch.setitem(sys.modules, "airflow.sdk", None)
    with pytest.raises(ConfigurationError, match=r"dbt-runner\[airflow\]"):
        get_connection("redshift_default")


_CHILD = """
import json, sys
from dbt_runner.airflow import settings_from_connections, get_connection
from dbt_runner import ConfigurationError
with settings_from_connections("dbt_wh", "dbt_ssh") as s:
    out = {
        "warehouse": s.warehouse.model_dump(mode="json", exclude={"password"}),
        "password_ok": s.warehouse.password.get_secret_value() == sys.argv[1],
        "ssh": s.ssh.model_dump(mode="json", exclude={"private_key_passphrase"}),
        "repr": repr(s),
    }
try:
    get_connection("not_defined_anywhere")
except ConfigurationError as exc:
    out["missing"] = str(exc)
print(json.dumps(out))
"""


@pytest.mark.skipif(importlib.util.find_spec("airflow") is None, reason="Airflow not installed")
def test_real_airflow_connections_from_env_uri_and_json(tmp_path: Path, key_file: Path) -> None:
    """URI extras arrive as strings ("true"); JSON extras keep their types."""
    from urllib.parse import quote

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DBT_RUNNER_"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow_home"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path / 'airflow.db'}",
        PYTHONPATH=str(ROOT),
        AIRFLOW_CONN_DBT_WH=(
            f"redshift://dbt:{quote(PASSWORD)}@cluster.example.com:5439/analytics?sslmode=require"
        ),
        AIRFLOW_CONN_DBT_SSH=json.dumps(
            {
                "conn_type": "ssh",
                "host": "bastion.example.com",
                "port": 2222,
                "login": "tunnel",
                "extra": {"key_file": str(key_file), "host_key": f"ssh-ed25519 {ED25519_B64}"},
            }
        ),
    )
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, PASSWORD],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    wh, ssh = out["warehouse"], out["ssh"]
    assert (wh["type"], wh["host"], wh["port"], wh["user"], wh["dbname"], wh["sslmode"]) == (
        "redshift",
        "cluster.example.com",
        5439,
        "dbt",
        "analytics",
        "require",
    )
    assert out["password_ok"] is True
    assert (ssh["host"], ssh["port"], ssh["user"], ssh["private_key"]) == (
        "bastion.example.com",
        2222,
        "tunnel",
        str(key_file),
    )
    assert ssh["host_key"] == f"ssh-ed25519 {ED25519_B64}"
    assert "not_defined_anywhere" in out["missing"]
    assert "AIRFLOW_CONN_NOT_DEFINED_ANYWHERE" in out["missing"]
    assert_no_secret(out["repr"] + proc.stdout + proc.stderr)
