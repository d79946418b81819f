"""A team's own dbt project and profiles.yml, through a real OpenSSH bastion to PostgreSQL.

``DBT_RUNNER_PROFILES_DIR`` + ``DBT_RUNNER_SSH__HOST``: dbt reads the team's profiles.yml
as it is (nothing copied, nothing written); the session routes the target's host:port
through the tunnel. Real PostgreSQL (TLS) and a real sshd; loopback only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import ConfigurationError, DbtSession, RunResult, Settings
from testbed.pg_fixtures import PgDatabase
from testbed.sshd import SshdServer, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PASSWORD_VAR = "TEAM_PG_PASSWORD"
PROFILE_CHANGED = "profile has changed"


def write_project(root: Path) -> Path:
    """A small project of the team's: one seed, one model on it."""
    project = root / "team_project"
    (project / "seeds").mkdir(parents=True)
    (project / "models").mkdir()
    (project / "dbt_project.yml").write_text(
        "name: team\nversion: '1.0'\nconfig-version: 2\nprofile: team\n"
        "models:\n  team:\n    +materialized: table\n"
    )
    (project / "seeds" / "people.csv").write_text("id,name\n1,ada\n2,grace\n3,edsger\n")
    (project / "models" / "people_count.sql").write_text(
        "select count(*) as n from {{ ref('people') }}\n"
    )
    return project


def write_profiles(root: Path, db: PgDatabase) -> Path:
    """The team's profiles.yml: two targets, an anchor, the password as env_var."""
    directory = root / "team_profiles"
    directory.mkdir()
    (directory / "profiles.yml").write_text(
        f"""\
_pg: &pg
  type: postgres
  user: {db.user}
  password: "{{{{ env_var('{PASSWORD_VAR}') }}}}"
  dbname: {db.dbname}
  sslmode: {db.sslmode}
  threads: 2
team:
  target: dev
  outputs:
    dev:
      <<: *pg
      host: "{{{{ env_var('TEAM_PG_HOST') }}}}"
      port: {db.port}
      schema: team_dev
    other:
      <<: *pg
      host: {db.host}
      port: {db.port}
      schema: team_other
"""
    )
    return directory


@pytest.fixture
def team(pg_db: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    for name in list(os.environ):
        if name.startswith(("DBT_RUNNER_", "DBT_TARGET", "DBT_PROFILE")):
            monkeypatch.delenv(name)
    monkeypatch.setenv(PASSWORD_VAR, pg_db.password)
    monkeypatch.setenv("TEAM_PG_HOST", pg_db.host)
    return write_project(tmp_path), write_profiles(tmp_path, pg_db)


def settings_for(team: tuple[Path, Path], sshd: SshdServer, **extra: Any) -> Settings:
    project, profiles = team
    return Settings(
        project_dir=project,
        profiles_dir=profiles,
        ssh={
            "host": sshd.host,
            "port": sshd.port,
            "user": sshd.user,
            "private_key": sshd.private_key_path,
            "known_hosts": sshd.known_hosts_path,
        },
        retry={"initial_wait_s": 0, "max_wait_s": 0},
        **extra,
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


def test_own_profile_seeds_and_runs_through_the_tunnel(
    team: tuple[Path, Path],
    pg_db: PgDatabase,
    sshd: SshdServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    before = sshd.accepted_connections()
    profiles_text = (team[1] / "profiles.yml").read_text()
    with DbtSession(settings_for(team, sshd)) as session:
        assert session.tunnel is not None
        seeded = ok(session.invoke(["seed"]))
        built = ok(session.invoke(["run"]))
        # what dbt ran with: the team's own profiles.yml, its dev target
        args = list(built.attempt_log[0].args)
        assert Path(args[args.index("--profiles-dir") + 1]) == team[1].resolve()
        assert args[args.index("--target") + 1] == "dev"

    # the team's file is untouched and nothing was written beside it
    assert (team[1] / "profiles.yml").read_text() == profiles_text
    assert sorted(p.name for p in team[1].iterdir()) == ["profiles.yml"]
    # one SSH login carried the whole session
    wait_until(lambda: sshd.accepted_connections() - before >= 1, timeout=5)
    assert sshd.accepted_connections() - before == 1
    # the data landed in the dev target's schema of the team's database
    assert [n.name for n in seeded.nodes] == ["people"]
    assert rows(pg_db, "select n from team_dev.people_count") == [(3,)]
    assert rows(pg_db, "select count(*) from team_dev.people") == [(3,)]
    # the password was never logged or put in a result
    assert pg_db.password not in caplog.text
    assert pg_db.password not in seeded.to_json() + built.to_json()
    dbt_log = team[0] / "logs" / "dbt.log"  # dbt's own debug log, in the team's project
    assert dbt_log.is_file()
    assert pg_db.password not in dbt_log.read_text()


def test_another_target_cannot_bypass_the_tunnel(
    team: tuple[Path, Path], pg_db: PgDatabase, sshd: SshdServer
) -> None:
    with DbtSession(settings_for(team, sshd)) as session:
        for args in (["seed", "--target", "other"], ["seed", "-t", "other"], ["seed", "-tother"]):
            with pytest.raises(ConfigurationError, match="tunnels target 'dev'"):
                session.invoke(args)
        with pytest.raises(ConfigurationError, match="--profiles-dir"):
            session.invoke(["seed", "--profiles-dir", str(team[1])])
        ok(session.invoke(["seed", "--target", "dev"]))  # the session's own target is fine
    assert rows(
        pg_db, "select count(*) from information_schema.schemata where schema_name = 'team_other'"
    ) == [(0,)]


def test_target_setting_picks_the_tunnelled_target(
    team: tuple[Path, Path], pg_db: PgDatabase, sshd: SshdServer
) -> None:
    with DbtSession(settings_for(team, sshd, target="other")) as session:
        ok(session.invoke(["seed"]))
    assert rows(pg_db, "select count(*) from team_other.people") == [(3,)]


def test_sessions_in_a_row_keep_the_partial_parse(
    team: tuple[Path, Path], sshd: SshdServer, tmp_path: Path
) -> None:
    """dbt reads the same file in every session: it does not re-parse everything."""
    state = tmp_path / "state"
    with DbtSession(settings_for(team, sshd, state_dir=state)) as first:
        ok(first.invoke(["seed"]))
    assert not any(PROFILE_CHANGED in r for r in first._relay.full_parse_reasons)
    with DbtSession(settings_for(team, sshd, state_dir=state)) as second:
        ok(second.invoke(["seed"]))
    assert second._relay.full_parse_reasons == []


def test_doctor_checks_the_teams_target_through_the_tunnel(
    team: tuple[Path, Path], pg_db: PgDatabase, sshd: SshdServer
) -> None:
    from dbt_runner._doctor import LAYERS, run_doctor

    before = sshd.accepted_connections()
    report = run_doctor(settings_for(team, sshd), hold_s=0.2)
    assert report.ok, report.render()
    assert [(x.layer, x.status) for x in report.layers] == [
        (name, "skipped" if name == "iam" else "ok")
        for name in LAYERS  # no IAM: a password
    ]
    # the team's dev target (its host rendered from env_var), not a generated profile's
    assert report.target.startswith(
        f"postgres {pg_db.user}@{pg_db.host}:{pg_db.port}/{pg_db.dbname} via bastion"
    )
    assert report.connections_requested == 3  # the profile's threads: 2, plus dbt's own
    assert sshd.accepted_connections() - before >= 1
    assert pg_db.password not in report.render() + report.to_json()
