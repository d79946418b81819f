"""Redshift IAM authentication against a real AWS API (moto server) and the stand-in.

The moto server on loopback issues the temporary logins (``GetClusterCredentials``,
Serverless ``GetCredentials``: :mod:`testbed.moto_serverless`), and the Redshift
stand-in accepts exactly those (:mod:`testbed.redshift_iam`: the issued password, valid
until the issued expiration; any other password is refused by PostgreSQL itself): no
in-process mock. Direct and through a real OpenSSH bastion; the generated profile and a
team's own ``profiles.yml`` with ``method: iam``.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from click.testing import CliRunner

from dbt_runner import CredentialsError, DbtSession, ErrorKind, RunResult, Settings
from dbt_runner._doctor import LAYERS, run_doctor
from dbt_runner.cli import main
from dbt_runner.synthetic import create_raw_tables, load_batch
from testbed.redshift_iam import IamWarehouse
from testbed.settings import NO_WAITS, PROJECT, ssh_of
from testbed.sshd import SshdServer
from tests._projects import write_project

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

T0 = 1_700_000_000
MODELS = ("stg_ecs_order_info", "stg_uni_tracking_info", "stg_uni_tracking_spath")


def load_raw(iam: IamWarehouse) -> None:
    """Half an hour of raw deliveries in schema ``raw`` (as the database's owner)."""
    conn = iam.db.connect()
    try:
        create_raw_tables(conn, "postgres")
        load_batch(conn, "postgres", T0, T0 + 1800, orders_per_minute=4)
    finally:
        conn.close()


def iam_settings(
    iam: IamWarehouse,
    state_dir: Path,
    *,
    serverless: bool = False,
    sshd: SshdServer | None = None,
    **overrides: Any,
) -> Settings:
    values: dict[str, Any] = {
        "project_dir": PROJECT,
        "warehouse": iam.warehouse(serverless),
        "state_dir": state_dir,
        "threads": 3,
        "retry": dict(NO_WAITS),
    }
    if sshd is not None:
        values["ssh"] = ssh_of(sshd)
    values.update(overrides)
    return Settings(**values)


def env_of(iam: IamWarehouse, state_dir: Path, *, serverless: bool = False) -> dict[str, str]:
    """The same settings as ``DBT_RUNNER_*`` variables (for the CLI)."""
    env = {
        f"DBT_RUNNER_WAREHOUSE__{k.upper()}": str(v) for k, v in iam.warehouse(serverless).items()
    }
    env["DBT_RUNNER_WAREHOUSE__AUTO_CREATE"] = "true" if not serverless else ""
    env = {k: v for k, v in env.items() if v}
    env.update(
        DBT_RUNNER_PROJECT_DIR=str(PROJECT),
        DBT_RUNNER_STATE_DIR=str(state_dir),
        DBT_RUNNER_RETRY__INITIAL_WAIT_S="0",
        DBT_RUNNER_RETRY__MAX_WAIT_S="0",
    )
    return env


def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    """``dbt-runner ARGS`` (the real CLI, in this process) with ``env`` as its settings."""
    result = CliRunner().invoke(main, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def ok(result: RunResult) -> RunResult:
    assert result.success, result.summary()
    return result


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("DBT_RUNNER_", "DBT_TARGET", "DBT_PROFILE")):
            monkeypatch.delenv(name)


# -------------------------------------------------- the generated profile: a real dbt run
def test_provisioned_cluster_direct_runs_staging_with_one_login_per_session(
    redshift_iam: IamWarehouse, tmp_path: Path
) -> None:
    load_raw(redshift_iam)
    with DbtSession(iam_settings(redshift_iam, tmp_path / "state")) as session:
        staging = ok(session.run_staging())
        # every connection so far (the writer lock's, dbt's one per node) used one login
        assert redshift_iam.calls("GetClusterCredentials") == 1
        # time passes: more than half of the login's life is gone
        login = session._login
        assert login is not None
        session._login = replace(login, fetched_at=login.expiration - timedelta(hours=3))
        # a new login before the next command; dbt uses it (the stand-in now refuses the
        # old password: a role has one)
        ok(session.run_tests())
        assert redshift_iam.calls("GetClusterCredentials") == 2
    assert sorted(n.name for n in staging.nodes if n.resource_type == "model") == sorted(MODELS)
    # the login AWS issued, for the user asked for (auto-create: IAMA:), valid for an hour
    until = redshift_iam.roles()[redshift_iam.login_user()]
    assert until is not None and until > "2026"


def test_provisioned_cluster_through_the_bastion_logs_in_again_after_a_reopen(
    redshift_iam: IamWarehouse, sshd: SshdServer, tmp_path: Path
) -> None:
    load_raw(redshift_iam)
    settings = iam_settings(redshift_iam, tmp_path / "state", sshd=sshd)
    select = "stg_ecs_order_info"
    with DbtSession(settings) as session:
        ok(session.run_staging(select=select))
        assert redshift_iam.calls("GetClusterCredentials") == 1
        assert sshd.kill_connections() >= 1  # the bastion drops the tunnel
        ok(session.run_staging(select=select))  # re-opened, with a new login
    assert redshift_iam.calls("GetClusterCredentials") == 2


def test_serverless_direct_runs_a_model(redshift_iam: IamWarehouse, tmp_path: Path) -> None:
    load_raw(redshift_iam)
    settings = iam_settings(redshift_iam, tmp_path / "state", serverless=True)
    with DbtSession(settings) as session:
        ok(session.run_staging(select="stg_uni_tracking_info"))
    assert redshift_iam.calls("GetCredentials") == 1
    assert redshift_iam.calls("GetClusterCredentials") == 0
    # the database user is the caller's IAM identity, as on Redshift Serverless
    assert redshift_iam.roles()[redshift_iam.login_user(serverless=True)] is not None


# -------------------------------------------------------------- the doctor's IAM layer
def test_doctor_iam_layer_through_the_bastion_to_serverless(
    redshift_iam: IamWarehouse, sshd: SshdServer, tmp_path: Path
) -> None:
    settings = iam_settings(redshift_iam, tmp_path / "state", serverless=True, sshd=sshd)
    report = run_doctor(settings, hold_s=0, parse=False)
    assert [(x.layer, x.status) for x in report.layers] == [
        (name, "skipped" if name == "parse" else "ok") for name in LAYERS
    ], report.render()
    iam = report.layer("iam").detail
    assert "environment (AWS_ACCESS_KEY_ID" in iam  # where the AWS credentials came from
    assert "arn:aws:sts::123456789012:user/moto" in iam  # whose they are
    assert f"temporary login for {redshift_iam.login_user(serverless=True)}" in iam
    assert report.to_dict()["settings"]["iam"]["workgroup"] == redshift_iam.workgroup
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in report.to_json() + report.render()


def test_doctor_iam_layer_names_a_refused_login(redshift_iam: IamWarehouse, tmp_path: Path) -> None:
    wh = redshift_iam.warehouse(cluster_id="no-such-cluster")
    settings = Settings(project_dir=PROJECT, warehouse=wh, state_dir=tmp_path / "state")
    report = run_doctor(settings, hold_s=0, parse=False)
    iam = report.layer("iam")
    assert iam.failed and iam.kind is ErrorKind.AUTH
    assert "ClusterNotFound" in iam.errors[0]
    assert "arn:aws:sts::123456789012:user/moto" in iam.detail  # who asked
    assert report.layer("auth").status == "skipped"  # nothing logged in
    assert any("redshift:GetClusterCredentials" in hint for hint in report.hints)


# ------------------------------------------------------ expired and denied: auth, exit 2
def test_expired_login_is_auth_exit_2(
    redshift_iam: IamWarehouse, tmp_path: Path, clean_env: None
) -> None:
    load_raw(redshift_iam)
    redshift_iam.expire()  # time passes: the issued password is past its VALID UNTIL
    code, output = cli(env_of(redshift_iam, tmp_path / "state"), "staging")
    assert code == 2, output
    assert "[auth]" in output and "password authentication failed" in output
    assert redshift_iam.calls("GetClusterCredentials") == 1  # never retried


def test_denied_by_iam_policy_is_auth_exit_2(
    redshift_iam: IamWarehouse, tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    iam = boto3.client("iam")
    iam.create_user(UserName="no-redshift")
    key = iam.create_access_key(UserName="no-redshift")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    redshift_iam.moto.enforce_iam()  # from now on moto checks signatures and policies
    code, output = cli(env_of(redshift_iam, tmp_path / "state", serverless=True), "staging")
    assert code == 2, output
    assert "AccessDenied" in output and "redshift-serverless:GetCredentials" in output
    assert key["SecretAccessKey"] not in output
    assert redshift_iam.calls("GetCredentials", status=403) == 1  # never retried


def test_unknown_aws_keys_fail_the_session_open_as_auth(
    redshift_iam: IamWarehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNUNKNOWN00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unknown-secret-key-never-print")
    redshift_iam.moto.enforce_iam()
    session = DbtSession(iam_settings(redshift_iam, tmp_path / "state"))
    with pytest.raises(CredentialsError) as info:
        session.open()
    assert info.value.kind is ErrorKind.AUTH and info.value.exit_code == 2
    assert "InvalidClientTokenId" in str(info.value)
    assert "unknown-secret-key-never-print" not in str(info.value)
    assert redshift_iam.calls("GetClusterCredentials", status=403) == 1


# ------------------------------------------------ a team's own profiles.yml: method: iam
def write_team(root: Path, output: dict[str, Any]) -> tuple[Path, Path]:
    """A team's project (two models) and its profiles.yml with one target, ``output``."""
    project = write_project(
        root,
        "team",
        {
            "people": "select 1 as id union all select 2 union all select 3",
            "people_count": "select count(*) as n from {{ ref('people') }}",
        },
    )
    profiles = root / "team_profiles"
    profiles.mkdir()
    document = {"team": {"target": "prod", "outputs": {"prod": output}}}
    (profiles / "profiles.yml").write_text(yaml.safe_dump(document))
    return project, profiles


#: real Redshift endpoint names: through the bastion, dbt connects by them (the route sends
#: the bytes to the tunnel), so redshift_connector's IAM path reads the cluster, workgroup,
#: account and region from them as it does in production (dbt-redshift #729, dbt-core
#: #14621); they resolve nowhere here. verify-ca: the stand-in's certificate is for
#: warehouse.test, not for these names
PROVISIONED_HOST = "analytics.c1a2b3c4d5e6.us-east-1.redshift.amazonaws.com"
SERVERLESS_HOST = "analytics-wg.123456789012.us-east-1.redshift-serverless.amazonaws.com"


@pytest.mark.parametrize("serverless", [False, True], ids=["provisioned", "serverless"])
def test_own_profile_method_iam_through_the_bastion_by_the_endpoint_name(
    redshift_iam: IamWarehouse,
    sshd: SshdServer,
    tmp_path: Path,
    clean_env: None,
    serverless: bool,
) -> None:
    output = redshift_iam.dbt_output(serverless)
    output["host"] = SERVERLESS_HOST if serverless else PROVISIONED_HOST
    if serverless:  # all of it from the host name, as dbt-redshift and the driver read it
        for key in ("is_serverless", "serverless_work_group", "region"):
            output.pop(key)
    project, profiles = write_team(tmp_path, output)
    settings = Settings(
        project_dir=project,
        profiles_dir=profiles,
        ssh=ssh_of(sshd, remote_host=redshift_iam.db.host),  # where the bastion connects
        state_dir=tmp_path / "state",
        retry=dict(NO_WAITS),
    )
    with DbtSession(settings) as session:
        # dbt-redshift's own IAM path (redshift_connector asks AWS); the writer lock is
        # dbt_runner's own connection, with a login of its own for the same target
        build = ok(session.invoke(["build"], writer_lock=True))
    assert {n.name for n in build.nodes} == {"people", "people_count"}
    rows = redshift_iam.pg.execute("select n from team.people_count", redshift_iam.db.dbname)
    assert rows == [(3,)]
    action = "GetCredentials" if serverless else "GetClusterCredentials"
    assert redshift_iam.calls(action) >= 2  # dbt's login and the lock's
    assert redshift_iam.login_user(serverless) in redshift_iam.roles()


def test_own_profile_method_iam_direct(
    redshift_iam: IamWarehouse, tmp_path: Path, clean_env: None
) -> None:
    project, profiles = write_team(tmp_path, redshift_iam.dbt_output())
    settings = Settings(project_dir=project, profiles_dir=profiles, state_dir=tmp_path / "state")
    with DbtSession(settings) as session:
        run = ok(session.invoke(["run", "--select", "people"], writer_lock=True))
    assert [n.name for n in run.nodes] == ["people"]
    assert redshift_iam.calls("GetClusterCredentials") >= 2  # dbt's login, and the lock's
