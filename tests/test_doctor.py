"""Unit tests of the doctor: layer verdicts, the TCP probe, server settings, report, CLI.

The real faults (connection limit, wrong host key, ...) are in
``tests/integration/test_doctor.py``; here only local sockets and fakes.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dbt_runner import ConfigurationError, ErrorKind, Settings
from dbt_runner import _doctor as doctor_mod
from dbt_runner._doctor import (
    LAYERS,
    ConnectionCheck,
    DoctorReport,
    LayerCheck,
    _connection_layers,
    _server_settings,
    _tcp_probe,
    run_doctor,
)
from dbt_runner.cli import main


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("DBT_RUNNER_"):
            monkeypatch.delenv(name)


# ------------------------------------------------------------------ a tiny server
class OneShotServer:
    """Accepts connections on 127.0.0.1 and answers each with ``reply``.

    ``b""``: close without answering; ``None``: keep it open and never answer (a stall).
    """

    def __init__(self, reply: bytes | None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.reply = reply
        self.requests: list[bytes] = []
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.reply is None:
                self.held.append(conn)
                continue
            with conn:
                conn.settimeout(5)
                self.requests.append(conn.recv(8))
                if self.reply:
                    conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[OneShotServer]:
    srv = OneShotServer(request.param)
    yield srv
    srv.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_settings(port: int, **extra: Any) -> Settings:
    return Settings(
        warehouse={
            "type": "postgres",
            "host": "127.0.0.1",
            "port": port,
            "user": "dbt",
            "password": "s3cret-pw",
            "dbname": "analytics",
            "sslmode": "disable",
            "connect_timeout_s": 2,
        },
        **extra,
    )


# ------------------------------------------------------------------------ tcp probe
@pytest.mark.parametrize("server", [b"N"], indirect=True)
def test_probe_sends_an_ssl_request_and_accepts_n(server: OneShotServer) -> None:
    assert _tcp_probe("127.0.0.1", server.port, 2, tunnelled=False) == "no TLS"
    assert server.requests == [bytes.fromhex("0000000804d2162f")]  # length 8, code 80877103


@pytest.mark.parametrize("server", [b"S"], indirect=True)
def test_probe_accepts_s(server: OneShotServer) -> None:
    assert _tcp_probe("127.0.0.1", server.port, 2, tunnelled=False) == "TLS offered"


@pytest.mark.parametrize("server", [b""], indirect=True)
def test_probe_closed_without_answer_names_the_tunnel(server: OneShotServer) -> None:
    with pytest.raises(ConnectionError, match="bastion could not open the forwarded connection"):
        _tcp_probe("127.0.0.1", server.port, 2, tunnelled=True)
    with pytest.raises(ConnectionError, match="the server closed it"):
        _tcp_probe("127.0.0.1", server.port, 2, tunnelled=False)


@pytest.mark.parametrize("server", [b"SSH-2.0-OpenSSH_9.2\r\n"], indirect=True)
def test_probe_rejects_a_non_postgres_server(server: OneShotServer) -> None:
    with pytest.raises(ConnectionError, match="PostgreSQL or Redshift endpoint"):
        _tcp_probe("127.0.0.1", server.port, 2, tunnelled=False)


@pytest.mark.timeout(120)  # a hang guard only: the outcome is the timeout's own error below
@pytest.mark.parametrize("server", [None], indirect=True)
def test_a_server_that_never_answers_fails_tcp_within_the_timeout(server: OneShotServer) -> None:
    report = run_doctor(pg_settings(server.port), connections=2, hold_s=0, parse=False)
    tcp = report.layer("tcp")
    assert tcp.status == "failed"
    assert tcp.errors == ("2x TimeoutError: timed out",)
    assert report.layer("auth").status == "skipped"


def test_probe_refused() -> None:
    with pytest.raises(ConnectionRefusedError):
        _tcp_probe("127.0.0.1", closed_port(), 2, tunnelled=False)


# ---------------------------------------------------------------------- run_doctor
def test_refused_port_fails_tcp_and_skips_the_rest() -> None:
    port = closed_port()
    report = run_doctor(pg_settings(port), hold_s=0, parse=False)
    assert not report.ok
    assert [x.layer for x in report.layers] == list(LAYERS)
    assert report.layer("ssh_session").status == "skipped"
    tcp = report.layer("tcp")
    assert tcp.status == "failed" and tcp.kind is ErrorKind.CONNECTION
    assert tcp.detail == "0/4 connection(s) reached the server (it answered an SSLRequest)"
    assert tcp.errors == ("4x ConnectionRefusedError: [Errno 111] Connection refused",)
    assert report.layer("auth").status == "skipped"
    assert report.layer("query").status == "skipped"
    assert report.failed_kinds == (ErrorKind.CONNECTION,)
    assert [c.failed_layer for c in report.connections] == ["tcp"] * 4
    text = report.render() + report.to_json()
    assert "s3cret-pw" not in text
    assert any("did not answer" in hint for hint in report.hints)


def test_connections_default_to_threads_plus_one_and_are_validated() -> None:
    port = closed_port()
    assert (
        run_doctor(pg_settings(port, threads=5), hold_s=0, parse=False).connections_requested == 6
    )
    assert (
        run_doctor(pg_settings(port), connections=2, hold_s=0, parse=False).connections_requested
        == 2
    )
    with pytest.raises(ConfigurationError):
        run_doctor(pg_settings(port), connections=0)
    with pytest.raises(ConfigurationError):
        run_doctor(pg_settings(port), hold_s=-1)


def test_duckdb_has_no_network_layers(tmp_path: Path) -> None:
    import duckdb

    missing = Settings(warehouse={"type": "duckdb", "path": str(tmp_path / "none.duckdb")})
    report = run_doctor(missing)
    assert report.ok
    assert report.layer("query").status == "skipped"
    assert not (tmp_path / "none.duckdb").exists()  # the doctor creates nothing

    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    report = run_doctor(Settings(warehouse={"type": "duckdb", "path": str(path)}))
    assert report.ok
    assert report.layer("query").status == "ok"
    assert report.target == f"duckdb {path}"


# ----------------------------------------------------------------- layer verdicts
def test_layers_from_connection_checks() -> None:
    refused = 'OperationalError: FATAL:  too many connections for role "dbt"'
    checks = (
        ConnectionCheck(1, "held"),
        ConnectionCheck(2, "held"),
        ConnectionCheck(3, "tcp", "auth", refused, ErrorKind.TOO_MANY_CONNECTIONS),
        ConnectionCheck(4, "tcp", "auth", refused, ErrorKind.TOO_MANY_CONNECTIONS),
    )
    layers = _connection_layers(checks, hold_s=1)
    assert layers["tcp"].status == "ok" and layers["tcp"].detail.startswith("4/4 ")
    assert layers["auth"].status == "failed"
    assert layers["auth"].kind is ErrorKind.TOO_MANY_CONNECTIONS
    assert layers["auth"].detail.startswith("2/4 ")
    assert layers["auth"].errors == (f"2x {refused}",)
    assert layers["query"].status == "ok" and layers["query"].detail.startswith("2/2 ")


def test_a_connection_dropped_while_held_fails_the_query_layer() -> None:
    dropped = "after being held open together with the others: OperationalError: SSL SYSCALL"
    checks = (
        ConnectionCheck(1, "held"),
        ConnectionCheck(2, "query", "query", dropped, ErrorKind.CONNECTION),
    )
    layers = _connection_layers(checks, hold_s=1)
    assert layers["auth"].status == "ok"
    assert layers["query"].status == "failed"
    assert layers["query"].detail.startswith("1/2 ")
    assert layers["query"].errors == (dropped,)


# ------------------------------------------------------------------ server settings
class FakeCursor:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.row: Any = None

    def execute(self, sql: str) -> None:
        for fragment, value in self.answers.items():
            if fragment in sql:
                if isinstance(value, Exception):
                    raise value
                self.row = (value,)
                return
        raise RuntimeError(f"relation does not exist: {sql}")

    def fetchone(self) -> Any:
        return self.row

    def close(self) -> None:
        pass


class FakeConn:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    def cursor(self) -> FakeCursor:
        return FakeCursor(self.answers)


def test_server_settings_postgres() -> None:
    found = _server_settings(
        FakeConn(
            {
                "pg_roles": -1,
                "pg_stat_activity": 5,
                "max_connections": "100",
                "superuser_reserved": "3",
                "lock_timeout": "1s",
                "statement_timeout": "0",
            }
        )
    )
    assert found == {
        "role_connection_limit": "unlimited",
        "role_sessions_now": 5,
        "max_connections": "100",
        "superuser_reserved_connections": "3",
        "lock_timeout": "1s",
        "statement_timeout": "0",
    }


def test_server_settings_redshift_fallbacks_and_unreadable() -> None:
    found = _server_settings(
        FakeConn(
            {
                "pg_roles": RuntimeError("permission denied"),
                "pg_user_info": "UNLIMITED",
                "stv_sessions": 2,
                "statement_timeout": "0",
            }
        )
    )
    assert found["role_connection_limit"] == "unlimited"
    assert found["role_sessions_now"] == 2
    assert found["max_connections"] is None  # not readable: reported as such
    assert found["lock_timeout"] is None
    assert _server_settings(FakeConn({"pg_user_info": " 10 "}))["role_connection_limit"] == 10


# --------------------------------------------------------------------- the report
def failed_report(kind: ErrorKind, layer: str = "auth") -> DoctorReport:
    layers = tuple(
        LayerCheck(name, "failed", "boom", ("E: boom",), kind)
        if name == layer
        else LayerCheck(name, "ok", "fine")
        for name in LAYERS
    )
    return DoctorReport(target="postgres x", connections_requested=4, hold_s=1, layers=layers)


def test_report_render_and_json() -> None:
    report = failed_report(ErrorKind.TOO_MANY_CONNECTIONS)
    assert not report.ok
    text = report.render()
    assert "auth          FAILED  boom [too_many_connections]" in text
    assert "E: boom" in text
    data = json.loads(report.to_json())
    assert data["ok"] is False
    assert [x["layer"] for x in data["layers"]] == list(LAYERS)
    assert data["layers"][LAYERS.index("auth")]["kind"] == "too_many_connections"
    with pytest.raises(KeyError):
        report.layer("nope")


def test_hints_for_a_connection_limit() -> None:
    checks = (
        ConnectionCheck(1, "held"),
        ConnectionCheck(2, "tcp", "auth", "too many", ErrorKind.TOO_MANY_CONNECTIONS),
    )
    hints = doctor_mod._hints(
        pg_settings(5432, threads=3),
        (LayerCheck("auth", "failed", "x", (), ErrorKind.TOO_MANY_CONNECTIONS),),
        checks,
        {"server": {"role_connection_limit": 2}},
    )
    assert len(hints) == 1
    assert "limit reads 2" in hints[0] and "up to 4 connections" in hints[0]
    assert "DBT_RUNNER_RETRY__DEGRADE_THREADS" in hints[0]
    # a limit too low for dbt is worth a hint even when the doctor opened fewer
    low = doctor_mod._hints(pg_settings(5432), (), (), {"server": {"role_connection_limit": 2}})
    assert "needs 4" in low[0]


# ----------------------------------------------------------------------------- CLI
@pytest.mark.parametrize(
    ("report", "code"),
    [
        (DoctorReport("x", 4, 1, (LayerCheck("query", "ok", "fine"),)), 0),
        (failed_report(ErrorKind.TOO_MANY_CONNECTIONS), 3),
        (failed_report(ErrorKind.AUTH, "ssh_session"), 2),
        (failed_report(ErrorKind.TUNNEL, "channel_open"), 3),
    ],
)
def test_cli_exit_codes(monkeypatch: pytest.MonkeyPatch, report: DoctorReport, code: int) -> None:
    seen: dict[str, Any] = {}

    def fake(
        settings: Settings, *, connections: int | None, hold_s: float, parse: bool
    ) -> DoctorReport:
        seen.update(threads=settings.threads, connections=connections, hold_s=hold_s)
        assert parse
        return report

    monkeypatch.setattr(doctor_mod, "run_doctor", fake)
    result = CliRunner().invoke(
        main, ["doctor", "--threads", "5", "-n", "2", "--hold", "0.5", "--json"], env={}
    )
    assert result.exit_code == code, result.output
    assert json.loads(result.stdout)["ok"] is (code == 0)
    assert seen == {"threads": 5, "connections": 2, "hold_s": 0.5}


def test_cli_text_against_a_refused_port(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    env = {
        "DBT_RUNNER_WAREHOUSE__TYPE": "postgres",
        "DBT_RUNNER_WAREHOUSE__HOST": "127.0.0.1",
        "DBT_RUNNER_WAREHOUSE__PORT": str(port),
        "DBT_RUNNER_WAREHOUSE__USER": "dbt",
        "DBT_RUNNER_WAREHOUSE__DBNAME": "analytics",
        "DBT_RUNNER_WAREHOUSE__PASSWORD": "s3cret-pw",
        "DBT_RUNNER_WAREHOUSE__SSLMODE": "disable",
    }
    result = CliRunner().invoke(main, ["doctor", "--hold", "0"], env=env)
    assert result.exit_code == 3
    assert "tcp           FAILED  0/4 connection(s)" in result.stdout
    assert "Connection refused" in result.stdout
    assert "s3cret-pw" not in result.output


def test_cli_bad_configuration_exits_2() -> None:
    env = {"DBT_RUNNER_WAREHOUSE__TYPE": "postgres"}  # no host/user/dbname
    result = CliRunner().invoke(main, ["doctor"], env=env)
    assert result.exit_code == 2
    assert "DBT_RUNNER_WAREHOUSE__HOST" in result.output


# ------------------------------------------------- the user's own project and profile
def foreign_project(root: Path, model_sql: str) -> tuple[Path, Path]:
    """Another team's DuckDB project and its own profiles.yml (profile ``foreign``)."""
    project = root / "foreign"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: foreign\nversion: '1.0'\nconfig-version: 2\nprofile: foreign\n"
    )
    (project / "models" / "m.sql").write_text(model_sql)
    profiles = root / "profiles"
    profiles.mkdir()
    (profiles / "profiles.yml").write_text(
        "foreign:\n  target: dev\n  outputs:\n"
        f"    dev: {{type: duckdb, path: '{root / 'foreign.duckdb'}', threads: 2}}\n"
    )
    return project, profiles


def test_doctor_reports_dbts_parse_error_of_a_foreign_project(tmp_path: Path) -> None:
    project, profiles = foreign_project(tmp_path, "select * from {{ ref('m2' }}\n")
    env = {"DBT_RUNNER_PROJECT_DIR": str(project), "DBT_RUNNER_PROFILES_DIR": str(profiles)}
    settings = Settings(project_dir=project, profiles_dir=profiles)
    report = run_doctor(settings, hold_s=0)

    assert not report.ok
    parse = report.layer("parse")
    assert parse.status == "failed"
    assert parse.kind is ErrorKind.COMPILATION
    assert "Compilation Error in model m (models/m.sql)" in parse.errors[0]  # dbt's words
    # the user's profile and target, not the library's embedded default
    assert report.target == f"duckdb {tmp_path / 'foreign.duckdb'}"
    assert report.settings["threads"] == 2
    assert any("does not parse" in hint for hint in report.hints)

    result = CliRunner().invoke(main, ["doctor", "--hold", "0"], env=env)
    assert result.exit_code == 1, result.output
    assert "parse         FAILED" in result.stdout
    assert str(project) in result.stdout


def test_doctor_parse_ok_for_a_foreign_project(tmp_path: Path) -> None:
    project, profiles = foreign_project(tmp_path, "select 1 as one\n")
    report = run_doctor(Settings(project_dir=project, profiles_dir=profiles), hold_s=0)
    assert report.ok, report.render()
    assert report.layer("parse").status == "ok"
    assert report.layer("parse").detail == f"{project} parses"


def test_doctor_with_a_broken_own_target_exits_2_without_its_password(tmp_path: Path) -> None:
    project, profiles = foreign_project(tmp_path, "select 1 as one\n")
    (profiles / "profiles.yml").write_text(
        "foreign:\n  target: dev\n  outputs:\n    dev: {type: postgres, host: 127.0.0.1, "
        "port: not-a-port, user: dbt, password: s3cret-own-pw, dbname: d, schema: s}\n"
    )
    env = {"DBT_RUNNER_PROJECT_DIR": str(project), "DBT_RUNNER_PROFILES_DIR": str(profiles)}
    result = CliRunner().invoke(main, ["doctor", "--hold", "0", "--no-parse"], env=env)
    assert result.exit_code == 2, result.output
    assert "target 'dev' of profile 'foreign'" in result.output
    assert "port" in result.output
    assert "s3cret-own-pw" not in result.output


def test_cli_stdout_is_the_report_without_dbts_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """dbt prints its console lines (deprecation warnings...) on stdout while the doctor
    parses: they are captured (shown with --verbose on stderr), stdout is the report."""

    def fake(
        settings: Settings, *, connections: int | None, hold_s: float, parse: bool
    ) -> DoctorReport:
        print("12:00:00  [WARNING][DeprecationsSummary]: Deprecated functionality")
        return failed_report(ErrorKind.TOO_MANY_CONNECTIONS)

    monkeypatch.setattr(doctor_mod, "run_doctor", fake)
    for flags in ([], ["--json"]):
        result = CliRunner().invoke(main, ["doctor", "--hold", "0", *flags], env={})
        assert result.exit_code == 3, result.output
        assert "Deprecated functionality" not in result.stdout
    assert json.loads(result.stdout)["ok"] is False  # --json: nothing but the JSON
