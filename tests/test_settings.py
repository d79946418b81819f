"""Settings: ``DBT_RUNNER_*`` env vars, keyword overrides, early and secret-free errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import ConfigurationError, Settings

MINI = Path(__file__).parent / "fixtures" / "mini_project"
PASSWORD = "pw-Vb7!do-not-print"
PASSPHRASE = "pp-Lm4!do-not-print-either"
REDSHIFT = {
    "type": "redshift",
    "host": "cluster.example",
    "user": "dbt",
    "dbname": "analytics",
    "password": "pw",
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DBT_RUNNER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519"
    path.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def known_hosts(tmp_path: Path) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text("bastion.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEx\n")
    return path


def _error(**kwargs: Any) -> str:
    with pytest.raises(ConfigurationError) as info:
        Settings(**kwargs)
    return str(info.value)


# ---------------------------------------------------------------------- environment
def test_env_prefix_and_double_underscore_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBT_RUNNER_THREADS", "5")
    monkeypatch.setenv("DBT_RUNNER_TARGET", "prod")
    monkeypatch.setenv("DBT_RUNNER_WAREHOUSE__TYPE", "redshift")
    monkeypatch.setenv("DBT_RUNNER_WAREHOUSE__HOST", "cluster.example")
    monkeypatch.setenv("DBT_RUNNER_WAREHOUSE__USER", "dbt")
    monkeypatch.setenv("DBT_RUNNER_WAREHOUSE__DBNAME", "analytics")
    monkeypatch.setenv("DBT_RUNNER_WAREHOUSE__PASSWORD", PASSWORD)
    monkeypatch.setenv("DBT_RUNNER_WAREHOUSE__SCHEMA", "stg")
    monkeypatch.setenv("DBT_RUNNER_RETRY__ATTEMPTS", "1")
    monkeypatch.setenv("DBT_RUNNER_TIMEOUT_S", "90")

    s = Settings()

    assert s.threads == 5
    assert s.target == "prod"
    assert s.warehouse.type == "redshift"
    assert s.warehouse.host == "cluster.example"
    assert s.warehouse.schema == "stg"
    assert s.warehouse.password is not None
    assert s.warehouse.password.get_secret_value() == PASSWORD
    assert s.retry.attempts == 1
    assert s.timeout_s == 90


def test_keywords_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBT_RUNNER_THREADS", "5")
    monkeypatch.setenv("DBT_RUNNER_WAREHOUSE__PATH", "/from/env.duckdb")

    s = Settings(threads=2, warehouse={"type": "duckdb", "path": "kw.duckdb"})

    assert s.threads == 2
    assert s.warehouse.path == Path("kw.duckdb")


def test_invalid_env_value_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBT_RUNNER_WAREHOUSE__PORT", "fifty")
    with pytest.raises(ConfigurationError, match="DBT_RUNNER_WAREHOUSE__PORT"):
        Settings()


def test_undecodable_env_json_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBT_RUNNER_WAREHOUSE", '{"type": "redshift", "password": "' + PASSWORD)
    with pytest.raises(ConfigurationError) as info:
        Settings()
    assert "DBT_RUNNER_WAREHOUSE: not valid JSON" in str(info.value)
    assert "line 1 column" in str(info.value)  # where the JSON breaks, not the value
    assert PASSWORD not in str(info.value)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kind", ["redshift", "postgres"])
def test_network_warehouse_needs_host_user_and_dbname(kind: str) -> None:
    message = _error(warehouse={"type": kind})
    for var in ("HOST", "USER", "DBNAME"):
        assert f"DBT_RUNNER_WAREHOUSE__{var}" in message


def test_only_the_missing_network_fields_are_named() -> None:
    message = _error(warehouse={"type": "redshift", "user": "dbt", "dbname": "analytics"})
    assert "DBT_RUNNER_WAREHOUSE__HOST" in message
    assert "DBT_RUNNER_WAREHOUSE__USER" not in message


def test_threads_below_one() -> None:
    message = _error(threads=0)
    assert "DBT_RUNNER_THREADS" in message
    assert "greater than or equal to 1" in message


def test_retry_attempts_below_one() -> None:
    message = _error(retry={"attempts": 0})
    assert "DBT_RUNNER_RETRY__ATTEMPTS" in message
    assert "greater than or equal to 1" in message


def test_private_key_file_that_does_not_exist(tmp_path: Path, known_hosts: Path) -> None:
    missing = tmp_path / "no_such_key"
    message = _error(
        warehouse=REDSHIFT,
        ssh={
            "host": "bastion",
            "user": "ec2-user",
            "private_key": missing,
            "known_hosts": known_hosts,
        },
    )
    assert "DBT_RUNNER_SSH__PRIVATE_KEY" in message
    assert str(missing) in message
    assert "does not exist" in message


def test_private_key_readable_by_others(key_file: Path, known_hosts: Path) -> None:
    key_file.chmod(0o644)
    message = _error(
        warehouse=REDSHIFT,
        ssh={
            "host": "bastion",
            "user": "ec2-user",
            "private_key": key_file,
            "known_hosts": known_hosts,
        },
    )
    assert "DBT_RUNNER_SSH__PRIVATE_KEY" in message
    assert f"chmod 600 {key_file}" in message


def test_ssh_host_without_user(key_file: Path, known_hosts: Path) -> None:
    message = _error(
        warehouse=REDSHIFT,
        ssh={"host": "bastion", "private_key": key_file, "known_hosts": known_hosts},
    )
    assert "DBT_RUNNER_SSH__USER" in message


def test_ssh_host_without_host_key_verification(key_file: Path) -> None:
    message = _error(
        warehouse=REDSHIFT, ssh={"host": "bastion", "user": "ec2-user", "private_key": key_file}
    )
    assert "DBT_RUNNER_SSH__KNOWN_HOSTS" in message
    assert "DBT_RUNNER_SSH__HOST_KEY" in message


def test_known_hosts_file_missing(tmp_path: Path, key_file: Path) -> None:
    missing = tmp_path / "no_known_hosts"
    message = _error(
        warehouse=REDSHIFT,
        ssh={
            "host": "bastion",
            "user": "ec2-user",
            "private_key": key_file,
            "known_hosts": missing,
        },
    )
    assert "DBT_RUNNER_SSH__KNOWN_HOSTS" in message
    assert str(missing) in message


def test_verification_and_insecure_flag_together(key_file: Path, known_hosts: Path) -> None:
    message = _error(
        warehouse=REDSHIFT,
        ssh={
            "host": "bastion",
            "user": "ec2-user",
            "private_key": key_file,
            "known_hosts": known_hosts,
            "insecure_skip_host_key_check": True,
        },
    )
    assert "DBT_RUNNER_SSH__INSECURE_SKIP_HOST_KEY_CHECK" in message
    assert "only one" in message


def test_ssh_with_duckdb(key_file: Path, known_hosts: Path) -> None:
    message = _error(
        ssh={
            "host": "bastion",
            "user": "ec2-user",
            "private_key": key_file,
            "known_hosts": known_hosts,
        }
    )
    assert "DBT_RUNNER_SSH__HOST" in message
    assert "duckdb" in message


def test_project_dir_without_dbt_project_yml(tmp_path: Path) -> None:
    message = _error(project_dir=tmp_path)
    assert "DBT_RUNNER_PROJECT_DIR" in message
    assert "dbt_project.yml" in message


def test_a_valid_ssh_configuration_is_accepted(key_file: Path, known_hosts: Path) -> None:
    s = Settings(
        warehouse=REDSHIFT,
        ssh={
            "host": "bastion",
            "user": "ec2-user",
            "private_key": key_file,
            "known_hosts": known_hosts,
        },
    )
    assert s.ssh.enabled
    assert s.ssh.private_key == key_file


# ---------------------------------------------------------------------- secrets
@pytest.mark.parametrize(
    "bad",
    [
        {"port": "not-a-port"},
        {"sslmode": "sometimes"},
        {"type": "oracle"},
        {"pasword": "typo-field"},
    ],
    ids=["port", "sslmode", "type", "unknown-field"],
)
def test_invalid_values_never_echo_the_password(bad: dict[str, str]) -> None:
    message = _error(warehouse={**REDSHIFT, "password": PASSWORD, **bad})
    assert "DBT_RUNNER_WAREHOUSE__" in message
    assert PASSWORD not in message


def test_invalid_ssh_settings_never_echo_the_passphrase(key_file: Path, known_hosts: Path) -> None:
    message = _error(
        warehouse={**REDSHIFT, "password": PASSWORD},
        ssh={
            "host": "bastion",
            "user": "ec2-user",
            "private_key": key_file,
            "private_key_passphrase": PASSPHRASE,
            "known_hosts": known_hosts,
            "port": "twenty-two",
        },
    )
    assert "DBT_RUNNER_SSH__PORT" in message
    assert PASSPHRASE not in message
    assert PASSWORD not in message


def test_a_secret_with_the_wrong_type_is_not_echoed() -> None:
    # the secret itself is the invalid value: pydantic would normally quote it
    message = _error(warehouse={**REDSHIFT, "password": ["pw-in-a-list-4711"]})
    assert "DBT_RUNNER_WAREHOUSE__PASSWORD" in message
    assert "pw-in-a-list-4711" not in message


def test_repr_and_str_hide_password_and_passphrase(key_file: Path, known_hosts: Path) -> None:
    s = Settings(
        warehouse={**REDSHIFT, "password": PASSWORD},
        ssh={
            "host": "bastion",
            "user": "ec2-user",
            "private_key": key_file,
            "private_key_passphrase": PASSPHRASE,
            "known_hosts": known_hosts,
        },
    )
    for text in (repr(s), str(s), repr(s.warehouse), str(s.ssh)):
        assert PASSWORD not in text
        assert PASSPHRASE not in text
    assert s.warehouse.password is not None
    assert s.warehouse.password.get_secret_value() == PASSWORD


# ---------------------------------------------------------------------- defaults
def test_defaults_are_the_embedded_duckdb_with_three_threads() -> None:
    s = Settings()
    assert s.warehouse.type == "duckdb"
    assert s.threads == 3
    assert s.retry.attempts >= 1


@pytest.mark.parametrize(("kind", "port"), [("redshift", 5439), ("postgres", 5432)])
def test_port_and_sslmode_defaults(kind: str, port: int) -> None:
    """verify-full by default on both: the certificate and the host name are checked."""
    s = Settings(warehouse={**REDSHIFT, "type": kind})
    assert s.warehouse.effective_port == port
    assert s.warehouse.effective_sslmode == "verify-full"


# ---------------------------------------------------------------------- TLS settings
def test_sslrootcert_file_is_accepted_for_postgres(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = Settings(warehouse={**REDSHIFT, "type": "postgres", "sslrootcert": ca})
    assert s.warehouse.sslrootcert == ca


def test_sslrootcert_that_does_not_exist_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBT_RUNNER_WAREHOUSE__SSLROOTCERT", str(tmp_path / "nope.crt"))
    message = _error(warehouse={**REDSHIFT, "type": "postgres"})
    assert f"DBT_RUNNER_WAREHOUSE__SSLROOTCERT file {tmp_path / 'nope.crt'} does not exist" in (
        message
    )


def test_sslrootcert_on_redshift_is_refused_with_what_redshift_trusts(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    message = _error(warehouse={**REDSHIFT, "sslrootcert": ca})
    assert "DBT_RUNNER_WAREHOUSE__SSLROOTCERT is for postgres" in message
    assert "bundles plus the system's trust store" in message


def test_sslrootcert_with_sslmode_disable_is_a_contradiction(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    message = _error(
        warehouse={**REDSHIFT, "type": "postgres", "sslrootcert": ca, "sslmode": "disable"}
    )
    assert "SSLMODE=disable uses no TLS: unset one" in message


def test_remote_host_without_a_bastion_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DBT_RUNNER_SSH__REMOTE_HOST", "10.0.0.5")
    message = _error(warehouse=REDSHIFT)
    assert "DBT_RUNNER_SSH__REMOTE_HOST is set but DBT_RUNNER_SSH__HOST is not" in message


def test_remote_host_is_where_the_bastion_connects(key_file: Path, known_hosts: Path) -> None:
    ssh = {"host": "bastion", "user": "u", "private_key": key_file, "known_hosts": known_hosts}
    s = Settings(warehouse=REDSHIFT, ssh={**ssh, "remote_host": "10.0.0.5"})
    assert s.ssh.remote_end("cluster.example", 5439) == ("10.0.0.5", 5439)
    plain = Settings(warehouse=REDSHIFT, ssh=ssh)
    assert plain.ssh.remote_end("cluster.example", 5439) == ("cluster.example", 5439)


@pytest.mark.parametrize("kind", ["redshift", "postgres"])
def test_explicit_port_and_disabled_ssl_are_accepted(kind: str) -> None:
    s = Settings(warehouse={**REDSHIFT, "type": kind, "port": 15439, "sslmode": "disable"})
    assert s.warehouse.effective_port == 15439
    assert s.warehouse.effective_sslmode == "disable"


def test_project_dir_with_dbt_project_yml_is_used() -> None:
    s = Settings(project_dir=MINI)
    assert s.resolved_project_dir == MINI.resolve()


@pytest.mark.parametrize("kind", ["postgres", "redshift"])
def test_a_generated_profile_needs_the_password_before_anything_connects(kind: str) -> None:
    without = {k: v for k, v in REDSHIFT.items() if k != "password"}
    with pytest.raises(ConfigurationError) as info:
        Settings(warehouse={**without, "type": kind})
    assert "DBT_RUNNER_WAREHOUSE__PASSWORD" in str(info.value)


def test_own_profiles_need_no_password_setting(tmp_path: Path) -> None:
    (tmp_path / "profiles.yml").write_text("x: {}\n")
    without = {k: v for k, v in REDSHIFT.items() if k != "password"}
    assert Settings(warehouse=without, profiles_dir=tmp_path).warehouse.password is None


# ---------------------------------------------------------------------- misspellings
@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("DBT_RUNNER_WAREHOUS__TYPE", "DBT_RUNNER_WAREHOUSE__TYPE"),
        ("DBT_RUNNER_SSH_HOST", "DBT_RUNNER_SSH__HOST"),  # one underscore
        ("DBT_RUNNER_THREAD", "DBT_RUNNER_THREADS"),
        ("dbt_runner_warehouse__hots", "DBT_RUNNER_WAREHOUSE__HOST"),  # read case-blind
    ],
)
def test_an_unknown_variable_is_an_error_naming_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, meant: str
) -> None:
    monkeypatch.setenv(name, PASSWORD)
    with pytest.raises(ConfigurationError) as info:
        Settings(warehouse={"type": "duckdb"})  # keywords do not excuse the environment
    assert f"{name} is not a dbt_runner setting: did you mean {meant}?" in str(info.value)
    assert PASSWORD not in str(info.value)  # names only: a value may be a secret


@pytest.mark.parametrize(
    ("warehouse", "message"),
    [
        (
            {"host": "db.example.com"},
            "DBT_RUNNER_WAREHOUSE__HOST set without DBT_RUNNER_WAREHOUSE__TYPE",
        ),
        (
            {"user": "dbt", "dbname": "analytics"},
            "DBT_RUNNER_WAREHOUSE__DBNAME, DBT_RUNNER_WAREHOUSE__USER set without",
        ),
        ({"type": "duckdb", "port": 5439}, "WAREHOUSE__TYPE=duckdb takes no"),
    ],
)
def test_a_warehouse_field_without_its_type_is_an_error_never_duckdb(
    warehouse: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings(warehouse=warehouse)


# ------------------------------------------------------------------------- Redshift IAM
IAM = {"type": "redshift", "host": "cluster.example", "dbname": "analytics", "method": "iam"}


def test_iam_provisioned_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "TYPE": "redshift",
        "HOST": "cluster.example",
        "DBNAME": "analytics",
        "METHOD": "iam",
        "CLUSTER_ID": "analytics",
        "DB_USER": "dbt",
        "DB_GROUPS": "loaders, analysts",
        "AUTO_CREATE": "true",
        "REGION": "eu-west-1",
        "IAM_PROFILE": "etl",
    }.items():
        monkeypatch.setenv(f"DBT_RUNNER_WAREHOUSE__{name}", value)
    wh = Settings().warehouse  # no PASSWORD, no USER: the login comes from AWS
    assert wh.is_iam and not wh.is_serverless
    assert (wh.cluster_id, wh.db_user, wh.db_groups, wh.auto_create) == (
        "analytics",
        "dbt",
        ("loaders", "analysts"),
        True,
    )
    assert (wh.region, wh.iam_profile, wh.password, wh.user) == ("eu-west-1", "etl", None, None)


def test_iam_serverless_and_groups_as_a_json_list() -> None:
    wh = Settings(warehouse={**IAM, "workgroup": "analytics-wg"}).warehouse
    assert wh.is_serverless and wh.db_user is None
    groups = Settings(warehouse={**IAM, "cluster_id": "c", "db_user": "u", "db_groups": '["a"]'})
    assert groups.warehouse.db_groups == ("a",)


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"type": "postgres", "cluster_id": "c", "db_user": "u"}, ["TYPE=redshift"]),
        ({}, ["__CLUSTER_ID", "__WORKGROUP"]),
        ({"cluster_id": "c", "workgroup": "w", "db_user": "u"}, ["__CLUSTER_ID", "__WORKGROUP"]),
        ({"cluster_id": "c"}, ["__DB_USER"]),
        ({"cluster_id": "c", "db_user": "u", "password": PASSWORD}, ["unset", "__PASSWORD"]),
        ({"cluster_id": "c", "db_user": "u", "user": "dbt"}, ["unset", "__USER"]),
        ({"workgroup": "w", "db_user": "u", "db_groups": "g"}, ["__DB_USER", "__DB_GROUPS"]),
        ({"workgroup": "w", "auto_create": True}, ["__AUTO_CREATE"]),
        ({"cluster_id": "c", "db_user": "u", "db_groups": "[nope"}, ["__DB_GROUPS"]),
    ],
)
def test_contradicting_iam_settings_fail_early_naming_the_variable(
    values: dict[str, Any], names: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings(warehouse={**IAM, **values})
    text = str(info.value)
    assert all(name in text for name in names), text
    assert "DBT_RUNNER_WAREHOUSE" in text and PASSWORD not in text


def test_iam_fields_without_method_iam_are_an_error() -> None:
    with pytest.raises(ConfigurationError, match=r"DBT_RUNNER_WAREHOUSE__CLUSTER_ID.*METHOD=iam"):
        Settings(warehouse={**REDSHIFT, "cluster_id": "analytics"})


def test_iam_without_boto3_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from dbt_runner._aws import fetch_login

    monkeypatch.setitem(sys.modules, "boto3", None)  # as if dbt-redshift were not installed
    wh = Settings(warehouse={**IAM, "cluster_id": "c", "db_user": "u"}).warehouse
    with pytest.raises(ConfigurationError, match=r"boto3.*dbt-runner\[redshift\]"):
        fetch_login(wh)
