"""A user's own profiles.yml with the SSH tunnel: the private copy and the checks in Settings.

Only the session's target points at the tunnel; everything else is the user's YAML, with
its ``env_var`` jinja unrendered, so no secret is ever written. The real tunnel run is in
``tests/integration/test_own_profile_tunnel.py``.
"""

from __future__ import annotations

import argparse
import contextvars
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbt_runner import ConfigurationError, Settings
from dbt_runner._profile import TunnelledProfile, tunnel_target

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


def _copy(profiles_dir: Path, target: str | None = None, port: int = 41234) -> dict[str, Any]:
    profile = TunnelledProfile(tunnel_target(profiles_dir, MINI, target))
    try:
        directory = profile.write("127.0.0.1", port)
        document: dict[str, Any] = yaml.safe_load((directory / "profiles.yml").read_text())
    finally:
        profile.close()
    return document


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


# ------------------------------------------------------------------ the copy
def test_only_the_chosen_target_points_at_the_tunnel(profiles_dir: Path) -> None:
    original = yaml.safe_load(PROFILES)
    copy = _copy(profiles_dir)

    dev = copy["mini"]["outputs"]["dev"]
    assert (dev["host"], dev["port"]) == ("127.0.0.1", 41234)
    # the rest of the target is the user's, secrets as env_var references
    expected_dev = {**original["mini"]["outputs"]["dev"], "host": "127.0.0.1", "port": 41234}
    assert dev == expected_dev
    # every other target and profile exactly as the user wrote them (anchors resolved)
    for name in ("ci", "ci_alias", "local"):
        assert copy["mini"]["outputs"][name] == original["mini"]["outputs"][name]
    assert copy["other_team"] == original["other_team"]
    assert copy["_base"] == original["_base"]
    assert copy["mini"]["target"] == "dev"


def test_an_aliased_target_is_tunnelled_alone(profiles_dir: Path) -> None:
    """``ci_alias: *ci`` shares ``ci``'s mapping in YAML: tunnelling ci leaves the alias be."""
    copy = _copy(profiles_dir, "ci")
    assert copy["mini"]["outputs"]["ci"]["host"] == "127.0.0.1"
    assert copy["mini"]["outputs"]["ci_alias"]["host"] == "ci-db.internal"
    assert copy["mini"]["outputs"]["dev"]["host"] == "{{ env_var('OWN_PROFILE_TEST_HOST') }}"


def test_copy_is_private_secret_free_and_removed_on_close(profiles_dir: Path) -> None:
    profile = TunnelledProfile(tunnel_target(profiles_dir, MINI, None))
    directory = profile.write("127.0.0.1", 41234)
    path = directory / "profiles.yml"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert PASSWORD not in text
    dev = yaml.safe_load(text)["mini"]["outputs"]["dev"]
    assert dev["password"] == "{{ env_var('OWN_PROFILE_TEST_PASSWORD') }}"
    assert PASSWORD not in repr(profile)
    assert "&" not in text and "*" not in text  # no anchors to share a tunnelled mapping

    profile.close()
    assert not directory.exists()
    profile.close()  # idempotent


def test_copy_changes_only_with_the_port(profiles_dir: Path) -> None:
    """Two sessions on the same port write the same bytes: dbt's partial parse stays valid."""
    texts = []
    for _ in range(2):
        profile = TunnelledProfile(tunnel_target(profiles_dir, MINI, None))
        texts.append(profile.render("127.0.0.1", 41234))
        profile.close()
    assert texts[0] == texts[1]
    other = TunnelledProfile(tunnel_target(profiles_dir, MINI, None))
    try:
        assert other.render("127.0.0.1", 41235) != texts[0]
    finally:
        other.close()


def test_dbt_reads_the_copy_as_the_users_profile(
    profiles_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dbt's own profile loader renders the copy: tunnel endpoint, the user's secret from env."""
    from dbt.config.profile import Profile, read_profile
    from dbt.config.renderer import ProfileRenderer
    from dbt_common.context import set_invocation_context

    # what a dbt invocation sets up first, kept to this test
    monkeypatch.setattr(
        "dbt.config.profile.get_flags", lambda: argparse.Namespace(LOG_CACHE_EVENTS=False)
    )

    def load(directory: Path) -> Any:
        set_invocation_context(os.environ)
        raw = read_profile(str(directory))
        return Profile.from_raw_profiles(raw, "mini", ProfileRenderer({}), None)

    profile = TunnelledProfile(tunnel_target(profiles_dir, MINI, None))
    try:
        directory = profile.write("127.0.0.1", 41234)
        loaded = contextvars.copy_context().run(load, directory)
    finally:
        profile.close()
    creds: Any = loaded.credentials
    assert (creds.host, creds.port, creds.database, creds.schema) == (
        "127.0.0.1",
        41234,
        "analytics",
        "stg",
    )
    assert creds.password == PASSWORD  # rendered by dbt at run time, never written
    assert loaded.threads == 2


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
    _copy(profiles_dir)
    assert PASSWORD not in caplog.text
