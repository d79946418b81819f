"""A user's own profiles.yml with the SSH tunnel: the tunnel's remote end and the checks in
Settings.

dbt reads the user's file as it is (nothing is copied or written): the session routes the
target's host:port through the tunnel. The real tunnel run is in
``tests/integration/test_own_profile_tunnel.py``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import ConfigurationError, Settings
from dbt_runner._profile import tunnel_target

MINI = Path(__file__).parent / "fixtures" / "mini_project"
PASSWORD = "pw-Ow3!never-in-the-copy"

PROFILES = """\
# the team's profiles: comments, anchors, env_var secrets, two profiles
_base: &base
  type: postgres
  user: dbt
  password: "{{ env_var('OWN_PROFILE_TEST_PASSWORD') }}"
  dbname: analytics
  schema: stg
  threads: 2

mini:
  target: dev
  outputs:
    dev:
      <<: *base
      host: "{{ env_var('OWN_PROFILE_TEST_HOST') }}"
      port: "{{ env_var('OWN_PROFILE_TEST_PORT', '5433') | as_number }}"
    ci: &ci
      <<: *base
      host: ci-db.internal
      port: 6543
    ci_alias: *ci
    local:
      type: duckdb
      path: local.duckdb
      threads: 1
other_team:
  target: prod
  outputs:
    prod:
      <<: *base
      host: prod-db.internal
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("DBT_RUNNER_", "DBT_TARGET", "DBT_PROFILE")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OWN_PROFILE_TEST_PASSWORD", PASSWORD)
    monkeypatch.setenv("OWN_PROFILE_TEST_HOST", "dev-db.internal")
    monkeypatch.delenv("OWN_PROFILE_TEST_PORT", raising=False)


@pytest.fixture
def profiles_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "profiles"
    directory.mkdir()
    (directory / "profiles.yml").write_text(PROFILES)
    return directory


@pytest.fixture
def ssh(tmp_path: Path) -> dict[str, Any]:
    key = tmp_path / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o600)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("[127.0.0.1]:2222 ssh-ed25519 AAAA\n")
    return {
        "host": "127.0.0.1",
        "port": 2222,
        "user": "tunnel",
        "private_key": key,
        "known_hosts": known_hosts,
    }


def _settings(profiles_dir: Path, ssh: dict[str, Any], **extra: Any) -> Settings:
    return Settings(project_dir=MINI, profiles_dir=profiles_dir, ssh=ssh, **extra)


# ------------------------------------------------------------------ the tunnel's remote end
def test_remote_end_is_the_default_targets_rendered_host_and_port(profiles_dir: Path) -> None:
    target = tunnel_target(profiles_dir, MINI, None)
    assert (target.profile, target.target, target.type) == ("mini", "dev", "postgres")
    assert (target.host, target.port) == ("dev-db.internal", 5433)


def test_an_explicit_target_and_dbt_target_choose_it(
    profiles_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tunnel_target(profiles_dir, MINI, "ci").host == "ci-db.internal"
    monkeypatch.setenv("DBT_TARGET", "ci")  # dbt's own variable, as plain dbt reads it
    assert tunnel_target(profiles_dir, MINI, None).target == "ci"
    assert tunnel_target(profiles_dir, MINI, "dev").target == "dev"  # DBT_RUNNER_TARGET wins


def test_a_target_without_port_gets_the_adapters_default(tmp_path: Path) -> None:
    (tmp_path / "profiles.yml").write_text(
        "mini:\n  target: dev\n  outputs:\n    dev: {type: redshift, host: rs.internal}\n"
    )
    assert tunnel_target(tmp_path, MINI, None).port == 5439


def test_a_target_dbt_runner_cannot_route_is_refused(tmp_path: Path) -> None:
    """Only postgres and redshift connections are routed through the tunnel."""
    (tmp_path / "profiles.yml").write_text(
        "mini:\n  target: dev\n  outputs:\n"
        "    dev: {type: sqlserver, host: mssql.internal, port: 1433}\n"
    )
    with pytest.raises(ConfigurationError, match=r"type sqlserver: dbt_runner tunnels postgres"):
        tunnel_target(tmp_path, MINI, None)


def test_remote_host_is_where_the_bastion_connects_the_name_stays(
    profiles_dir: Path, ssh: dict[str, Any]
) -> None:
    """SSH__REMOTE_HOST applies to a user's own target too: the bastion connects there,
    while dbt connects (and TLS verifies) by the target's own host."""
    settings = _settings(profiles_dir, {**ssh, "remote_host": "10.1.2.3"})
    target = tunnel_target(profiles_dir, MINI, None)
    assert (target.host, target.port) == ("dev-db.internal", 5433)
    assert settings.ssh.remote_end(target.host, target.port) == ("10.1.2.3", 5433)
    assert _settings(profiles_dir, ssh).ssh.remote_end(target.host, target.port) == (
        "dev-db.internal",
        5433,
    )


def test_warehouse_sslrootcert_is_refused_with_an_own_profile(
    profiles_dir: Path, ssh: dict[str, Any], tmp_path: Path
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigurationError, match=r"your target's own sslrootcert applies"):
        _settings(
            profiles_dir,
            ssh,
            warehouse={
                "type": "postgres",
                "host": "h",
                "user": "u",
                "dbname": "d",
                "sslrootcert": ca,
            },
        )


# ------------------------------------------------------------------ Settings
def test_settings_accept_own_profile_with_ssh(profiles_dir: Path, ssh: dict[str, Any]) -> None:
    settings = _settings(profiles_dir, ssh)
    assert settings.chosen_target is None  # the profile's default target
    assert _settings(profiles_dir, ssh, target="ci").chosen_target == "ci"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("local", r"DBT_RUNNER_SSH__HOST is set but target 'local' .*duckdb.* no host"),
        ("nope", r"DBT_RUNNER_TARGET: profile 'mini' .* has no target 'nope' .*ci, ci_alias"),
    ],
)
def test_impossible_target_with_ssh_is_refused_by_settings(
    profiles_dir: Path, ssh: dict[str, Any], target: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _settings(profiles_dir, ssh, target=target)


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"target": "nope"}, "DBT_RUNNER_TARGET"),  # a keyword: the setting's own name
        ({"target": "nope", "_flags": {"target": "--target"}}, "--target"),  # the CLI's flag
        ({"DBT_TARGET": "nope"}, "DBT_TARGET"),  # dbt's own variable
        ({"profile_target": "nope"}, "the target: of profile 'mini'"),  # profiles.yml itself
    ],
    ids=["keyword", "flag", "dbt-variable", "profile"],
)
def test_a_missing_target_is_named_where_it_was_chosen(
    profiles_dir: Path,
    ssh: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    given: dict[str, Any],
    named: str,
) -> None:
    """dbt's order (target, DBT_TARGET, the profile's target:) also says whom to blame."""
    extra = dict(given)
    if "DBT_TARGET" in extra:
        monkeypatch.setenv("DBT_TARGET", extra.pop("DBT_TARGET"))
    if "profile_target" in extra:
        text = PROFILES.replace("  target: dev\n", f"  target: {extra.pop('profile_target')}\n", 1)
        (profiles_dir / "profiles.yml").write_text(text)
    with pytest.raises(ConfigurationError) as info:
        _settings(profiles_dir, ssh, **extra)
    message = str(info.value)
    assert f"{named}: profile 'mini' in " in message and "has no target 'nope'" in message
    wrong = {"DBT_RUNNER_TARGET", "--target", "DBT_TARGET", "the target: of"} - {named}
    assert not [w for w in wrong if f"{w}:" in message or f"({w})" in message], message


def test_profile_missing_from_profiles_yml_is_refused(tmp_path: Path, ssh: dict[str, Any]) -> None:
    (tmp_path / "profiles.yml").write_text("someone_else:\n  outputs: {}\n")
    with pytest.raises(ConfigurationError, match=r"has no profile 'mini'.*someone_else"):
        _settings(tmp_path, ssh)


def test_profiles_dir_without_profiles_yml_is_refused(tmp_path: Path, ssh: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=r"PROFILES_DIR .* has no profiles\.yml"):
        _settings(tmp_path, ssh)


def test_unrenderable_host_names_the_setting_without_secrets(
    profiles_dir: Path, ssh: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OWN_PROFILE_TEST_HOST")
    with pytest.raises(ConfigurationError, match="DBT_RUNNER_SSH__HOST: cannot render") as info:
        _settings(profiles_dir, ssh)
    assert PASSWORD not in str(info.value)


def test_without_ssh_own_profile_is_not_inspected(tmp_path: Path) -> None:
    """No tunnel: dbt reads the user's profiles.yml itself and reports its own errors."""
    (tmp_path / "profiles.yml").write_text("someone_else:\n  outputs: {}\n")
    assert Settings(project_dir=MINI, profiles_dir=tmp_path).profiles_dir == tmp_path


def test_settings_and_logs_never_show_the_password(
    profiles_dir: Path, ssh: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = _settings(profiles_dir, ssh)
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in caplog.text
