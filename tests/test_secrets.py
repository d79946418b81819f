"""Secrets never leak: not in reprs, logs, results, exceptions or files left on disk."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import ConfigurationError, DbtSession, ErrorKind, Settings

SECRET = "pw-Zq8!never-print-me"
PASSPHRASE = "pp-Kx3!never-print-me-either"
MINI = Path(__file__).parent / "fixtures" / "mini_project"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree_text(root: Path) -> str:
    chunks = []
    for path in root.rglob("*"):
        if path.is_file():
            chunks.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(chunks)


def test_failed_postgres_session_leaks_no_password(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("dbt.adapters.postgres", reason="pip install 'dbt-runner[postgres]'")
    caplog.set_level(logging.DEBUG)
    # OpenLineage events too (a file under tmp_path: "files left on disk" below reads it)
    events = tmp_path / "openlineage.jsonl"
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(events))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    settings = Settings(
        project_dir=MINI,
        warehouse={
            "type": "postgres",
            "host": "127.0.0.1",
            "port": _closed_port(),
            "user": "dbt",
            "password": SECRET,
            "dbname": "nowhere",
            "sslmode": "disable",
            "connect_timeout_s": 2,
        },
        state_dir=tmp_path / "state",
        retry={"attempts": 2, "initial_wait_s": 0, "max_wait_s": 0},
        openlineage={"enabled": True},
    )
    session = DbtSession(settings)
    with session:
        profile_dir = session._profiles_dir
        assert profile_dir is not None
        profile_text = (profile_dir / "profiles.yml").read_text()
        # dbt itself connects (and fails) with the password: no writer lock in front
        result = session.invoke(["run", "--select", "tag:staging"])
        # the writer lock's own login fails first: dbt never gets the password
        staging = session.run_staging()
        session_repr = repr(session)

    assert not result.success
    assert result.error is not None and result.error.kind is ErrorKind.CONNECTION
    assert result.attempts == 2  # a connection failure is transient: retried
    assert not staging.success and staging.attempts == 0
    assert staging.error is not None and staging.error.kind is ErrorKind.CONNECTION
    assert "writer lock" in staging.error.message
    assert any("writer lock: attempt 1 failed" in r.getMessage() for r in caplog.records)
    assert SECRET not in profile_text
    # the failed command's OpenLineage FAIL event carries the error (without the password)
    assert '"eventType": "FAIL"' in events.read_text()
    assert not profile_dir.exists()  # the generated profile is gone after close
    assert not any(SECRET in value for value in os.environ.values())
    leaks = {
        "repr(settings)": repr(settings) + str(settings),
        "repr(session)": session_repr,
        "result json": result.to_json() + staging.to_json(),
        "logs": "\n".join(r.getMessage() for r in caplog.records),
        "stdout/stderr": "".join(capfd.readouterr()),
        "files left on disk": _tree_text(tmp_path),
    }
    for where, text in leaks.items():
        assert SECRET not in text, f"password leaked into {where}"
    for failed in (result, staging):
        with pytest.raises(Exception) as info:
            failed.raise_for_status()
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)


def test_invalid_settings_error_does_not_echo_secrets(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("not really a key")
    key.chmod(0o644)
    with pytest.raises(ConfigurationError) as info:
        Settings(
            warehouse={"type": "redshift", "password": SECRET},
            ssh={
                "host": "127.0.0.1",
                "user": "tunnel",
                "private_key": key,
                "private_key_passphrase": PASSPHRASE,
            },
        )
    text = str(info.value) + repr(info.value)
    assert "DBT_RUNNER_WAREHOUSE" in text
    assert SECRET not in text and PASSPHRASE not in text


# ------------------------------------------------------------------- Redshift IAM: AWS keys
AWS_SECRET = "aws-Wq9!secret-access-key-never-print"


def _iam_warehouse(**extra: object) -> dict[str, object]:
    return {
        "type": "redshift",
        "method": "iam",
        "host": "127.0.0.1",
        "port": _closed_port(),
        "dbname": "analytics",
        "cluster_id": "analytics",
        "db_user": "dbt",
        "region": "us-east-1",
        "sslmode": "disable",
        "connect_timeout_s": 2,
        **extra,
    }


def test_iam_session_that_cannot_reach_aws_leaks_no_aws_key(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The AWS endpoint refuses connections: a transient CredentialsError, retried, then
    raised at open; the secret key is nowhere."""
    from dbt_runner import CredentialsError

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = Settings(
        project_dir=MINI,
        warehouse=_iam_warehouse(),
        state_dir=tmp_path / "state",
        retry={"attempts": 2, "initial_wait_s": 0, "max_wait_s": 0},
    )
    session = DbtSession(settings)
    with pytest.raises(CredentialsError) as info:
        session.open()
    assert info.value.kind is ErrorKind.CONNECTION  # transient: tried twice
    assert "could not be reached" in str(info.value)
    leaks = {
        "exception": str(info.value) + repr(info.value) + repr(info.value.__cause__),
        "repr(settings)": repr(settings) + repr(session),
        "logs": "\n".join(r.getMessage() for r in caplog.records),
        "stdout/stderr": "".join(capfd.readouterr()),
        "files left on disk": _tree_text(tmp_path),
    }
    for where, text in leaks.items():
        assert AWS_SECRET not in text, f"AWS secret key leaked into {where}"


def test_own_profile_aws_keys_stay_out_of_reprs(tmp_path: Path) -> None:
    """A team's profiles.yml with ``method: iam`` and explicit keys: dbt_runner's own
    connections use them, and no repr shows the secret one."""
    from dbt_runner._warehouse import as_warehouse

    project = tmp_path / "project"
    project.mkdir()
    (project / "dbt_project.yml").write_text("name: team\nversion: '1.0'\nprofile: team\n")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "profiles.yml").write_text(
        "team:\n  target: prod\n  outputs:\n    prod:\n      type: redshift\n"
        "      method: iam\n      host: analytics.abc.us-east-1.redshift.amazonaws.com\n"
        "      port: 5439\n      user: dbt\n      dbname: analytics\n      schema: team\n"
        "      cluster_id: analytics\n      access_key_id: AKIAEXAMPLEEXAMPLE00\n"
        f"      secret_access_key: {AWS_SECRET}\n"
    )
    settings, other = as_warehouse(Settings(project_dir=project, profiles_dir=profiles))
    wh = settings.warehouse
    assert other is None and wh.is_iam and wh.region == "us-east-1"  # from the host name
    assert wh._aws_keys.access_key_id == "AKIAEXAMPLEEXAMPLE00"
    assert wh._aws_keys.secret_access_key.get_secret_value() == AWS_SECRET
    text = repr(settings) + str(settings) + repr(wh) + repr(wh._aws_keys)
    assert AWS_SECRET not in text


@pytest.mark.slow  # real services: the moto server and the Redshift stand-in
def test_temporary_password_and_aws_key_never_leak(
    redshift_iam: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real IAM session: the temporary DbPassword AWS issued and the AWS secret key are
    in no log, result, exception, repr or file left, and gone from the environment after
    close; also when the login is refused (expired)."""
    import boto3

    from testbed.settings import NO_WAITS, PROJECT

    iam = boto3.client("iam")
    iam.create_user(UserName="dbt-runner")
    key = iam.create_access_key(UserName="dbt-runner")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    caplog.set_level(logging.DEBUG)
    settings = Settings(
        project_dir=PROJECT,
        warehouse=redshift_iam.warehouse(),
        state_dir=tmp_path / "state",
        retry=dict(NO_WAITS),
    )
    with DbtSession(settings) as session:
        assert session._login is not None
        password = session._login.password.get_secret_value()
        profile_dir = session._profiles_dir
        assert profile_dir is not None
        profile_text = (profile_dir / "profiles.yml").read_text()
        redshift_iam.expire()  # time passes: the next logins are refused
        refused = session.run_staging(select="stg_ecs_order_info")
        session_repr = repr(session)
    assert len(password) >= 16
    assert not refused.success and refused.error is not None
    assert refused.error.kind is ErrorKind.AUTH
    secrets = {"temporary password": password, "AWS secret key": key["SecretAccessKey"]}
    assert password not in profile_text  # the profile reads it from a DBT_ENV_SECRET_ variable
    assert not any(password in value for value in os.environ.values())  # gone after close
    with pytest.raises(Exception) as info:
        refused.raise_for_status()
    leaks = {
        "repr(settings)": repr(settings) + str(settings),
        "repr(session)": session_repr,
        "result json": refused.to_json(),
        "exception": str(info.value) + repr(info.value),
        "logs": "\n".join(r.getMessage() for r in caplog.records),
        "stdout/stderr": "".join(capfd.readouterr()),
        "files left on disk": _tree_text(tmp_path),
    }
    for what, secret in secrets.items():
        for where, text in leaks.items():
            assert secret not in text, f"{what} leaked into {where}"
