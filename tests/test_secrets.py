"""Secrets never leak: not in reprs, logs, results, exceptions or files left on disk."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

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
