"""The generated profiles.yml: private, free of secrets, accepted by the real adapters."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbt_runner import ConfigurationError, Settings
from dbt_runner._profile import GeneratedProfile, project_profile_name

MINI = Path(__file__).parent / "fixtures" / "mini_project"
PASSWORD = "pw-Qr9!not-on-disk"
NETWORK = {"host": "cluster.example", "user": "dbt", "dbname": "analytics", "password": PASSWORD}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DBT_RUNNER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def made() -> Iterator[list[GeneratedProfile]]:
    profiles: list[GeneratedProfile] = []
    yield profiles
    for profile in profiles:
        profile.close()


def _profile(made: list[GeneratedProfile], warehouse: dict[str, Any]) -> GeneratedProfile:
    profile = GeneratedProfile(Settings(project_dir=MINI, warehouse=warehouse), "mini")
    made.append(profile)
    return profile


def _output(profile_dir: Path) -> dict[str, Any]:
    document = yaml.safe_load((profile_dir / "profiles.yml").read_text())
    assert document["mini"]["target"] == "dev"
    output: dict[str, Any] = document["mini"]["outputs"]["dev"]
    return output


def _secret_var(output: dict[str, Any]) -> str:
    match = re.fullmatch(r"\{\{ env_var\('(DBT_ENV_SECRET_\w+)'\) \}\}", output["password"])
    assert match, output["password"]
    return match.group(1)


def test_profile_is_private_on_disk(made: list[GeneratedProfile]) -> None:
    profile = _profile(made, {"type": "redshift", **NETWORK})
    profile_dir = profile.write()
    assert stat.S_IMODE(profile_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((profile_dir / "profiles.yml").stat().st_mode) == 0o600


def test_password_is_an_env_reference_only_while_open(made: list[GeneratedProfile]) -> None:
    profile = _profile(made, {"type": "postgres", **NETWORK})
    profile_dir = profile.write()

    text = (profile_dir / "profiles.yml").read_text()
    assert PASSWORD not in text
    var = _secret_var(_output(profile_dir))  # dbt scrubs DBT_ENV_SECRET_* from its logs
    assert os.environ[var] == PASSWORD
    assert PASSWORD not in repr(profile)

    profile.close()

    assert var not in os.environ
    assert not profile_dir.exists()
    profile.close()  # idempotent


def test_the_profile_names_the_warehouse_itself_with_or_without_a_tunnel(
    made: list[GeneratedProfile], tmp_path: Path
) -> None:
    """A tunnel is a route, not a profile change: the file is the same for the same settings
    (dbt's partial parse stays valid whatever port the tunnel gets), and it names the
    host TLS verifies."""
    key, known_hosts = tmp_path / "key", tmp_path / "known_hosts"
    key.write_text("k")
    key.chmod(0o600)
    known_hosts.write_text("")
    ssh = {"host": "bastion", "user": "u", "private_key": key, "known_hosts": known_hosts}
    direct = _profile(made, {"type": "redshift", **NETWORK})
    tunnelled = GeneratedProfile(
        Settings(
            project_dir=MINI,
            warehouse={"type": "redshift", **NETWORK},
            ssh={**ssh, "remote_host": "10.0.0.5", "local_port": 40123},
        ),
        "mini",
    )
    made.append(tunnelled)
    output = _output(tunnelled.write())
    assert (output["host"], output["port"]) == ("cluster.example", 5439)
    first = (tunnelled.write() / "profiles.yml").read_text()
    assert (tunnelled.write() / "profiles.yml").read_text() == first
    assert not (tunnelled.dir / "profiles.yml.tmp").exists()
    # the same but for the password's per-session variable name
    secret = re.compile(r"DBT_ENV_SECRET_\w+")
    direct_text = (direct.write() / "profiles.yml").read_text()
    assert secret.sub("S", direct_text) == secret.sub("S", first)


def test_duckdb_output(made: list[GeneratedProfile], tmp_path: Path) -> None:
    profile = _profile(made, {"type": "duckdb", "path": str(tmp_path / "x.duckdb")})
    output = _output(profile.write())
    assert output == {
        "type": "duckdb",
        "path": str((tmp_path / "x.duckdb").resolve()),
        "schema": "staging",
        "threads": 3,
    }


def test_redshift_output_and_secure_defaults(made: list[GeneratedProfile]) -> None:
    profile = _profile(made, {"type": "redshift", **NETWORK, "connect_timeout_s": 7})
    output = _output(profile.write())
    assert output["type"] == "redshift"
    assert output["method"] == "database"
    assert output["host"] == "cluster.example"
    assert output["port"] == 5439
    assert output["user"] == "dbt"
    assert output["dbname"] == "analytics"
    assert output["schema"] == "staging"
    assert output["sslmode"] == "verify-full"
    assert "sslrootcert" not in output  # redshift_connector: bundled CAs + the system's
    assert output["connect_timeout"] == 7
    assert output["retries"] >= 1
    assert output["threads"] == 3


def test_postgres_output_and_defaults(made: list[GeneratedProfile]) -> None:
    profile = _profile(made, {"type": "postgres", **NETWORK})
    output = _output(profile.write())
    assert output["type"] == "postgres"
    assert output["port"] == 5432
    assert output["sslmode"] == "verify-full"
    assert output["connect_timeout"] == 10
    assert "method" not in output
    assert "sslrootcert" not in output  # libpq's own default: ~/.postgresql/root.crt


def test_postgres_sslrootcert_is_written_as_an_absolute_path(
    made: list[GeneratedProfile], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.chdir(tmp_path)
    profile = _profile(made, {"type": "postgres", **NETWORK, "sslrootcert": "ca.crt"})
    output = _output(profile.write())
    assert output["sslrootcert"] == str(tmp_path / "ca.crt")
    assert output["sslmode"] == "verify-full"


@pytest.mark.parametrize("sslmode", ["disable", "verify-full"])
def test_explicit_sslmode_is_written(made: list[GeneratedProfile], sslmode: str) -> None:
    profile = _profile(made, {"type": "redshift", **NETWORK, "sslmode": sslmode})
    assert _output(profile.write())["sslmode"] == sslmode


@pytest.mark.parametrize(
    ("kind", "module", "cls"),
    [
        ("redshift", "dbt.adapters.redshift.connections", "RedshiftCredentials"),
        ("postgres", "dbt.adapters.postgres.connections", "PostgresCredentials"),
    ],
)
def test_real_adapter_accepts_the_output(
    made: list[GeneratedProfile], kind: str, module: str, cls: str
) -> None:
    """Every key we write is one the adapter knows, with a value it accepts."""
    credentials = getattr(pytest.importorskip(module), cls)
    output = _output(_profile(made, {"type": kind, **NETWORK}).write())
    fields = {k: v for k, v in output.items() if k not in ("type", "threads")}
    fields["database"] = fields.pop("dbname")
    fields["password"] = os.environ[_secret_var(output)]  # what dbt renders at run time
    creds = credentials.from_dict(fields)
    assert creds.host == "cluster.example"
    assert str(getattr(creds.sslmode, "value", creds.sslmode)) == output["sslmode"]
    assert creds.connect_timeout == output["connect_timeout"]


def test_project_profile_name_reads_profile_key(tmp_path: Path) -> None:
    assert project_profile_name(MINI) == "mini"
    (tmp_path / "dbt_project.yml").write_text("name: x\nversion: '1'\nprofile: warehouse_prod\n")
    assert project_profile_name(tmp_path) == "warehouse_prod"


def test_project_without_profile_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: x\nversion: '1'\n")
    with pytest.raises(ConfigurationError, match="names no profile"):
        project_profile_name(tmp_path)


def test_unreadable_project_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"dbt_project\.yml"):
        project_profile_name(tmp_path)
