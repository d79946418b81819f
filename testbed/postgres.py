"""A throwaway PostgreSQL cluster on 127.0.0.1 for integration tests.

``PostgresServer`` runs ``initdb`` into a fresh temporary directory and starts
the cluster with ``pg_ctl`` on a free loopback port. PostgreSQL refuses to
run as root, so when the tests run as root the binaries are run as the
``postgres`` system user (via ``runuser``), in a directory that user owns.

SSL is on by default, as on every production warehouse (``ssl=False`` for a
test that needs a server without it): the certificate comes from
:func:`testbed.tls.test_pki`, and clients use ``sslmode=require``. ``named=True``
presents the certificate for ``warehouse.test`` instead of the loopback one (for
``verify-full`` through a bastion).

Passwords are stored MD5-encrypted (``password_encryption = md5``) because
redshift_connector's SCRAM client fails against PostgreSQL 15 ("The mechanism
name is not supported"), and the Redshift stand-in is this same server.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

POSTGRES_MISSING_REASON = "PostgreSQL server binaries not found: apt-get install -y postgresql"
_POSTGRES_USER_MISSING_REASON = (
    "running as root but there is no 'postgres' system user to run PostgreSQL as: "
    "apt-get install -y postgresql"
)
_PSYCOPG2_MISSING_REASON = "psycopg2 is not installed: pip install psycopg2-binary"

#: Environment variable that points at a directory holding initdb and pg_ctl.
PG_BIN_ENV = "TESTBED_PG_BIN"

_START_ATTEMPTS = 5
_PG_CTL_TIMEOUT_S = 30
_COMMAND_TIMEOUT_S = 60


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin -> numeric version, non-numeric last.
    parts = re.findall(r"\d+", path.parent.name)
    return tuple(int(p) for p in parts) if parts else (-1,)


def postgres_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None when not installed.

    Looks at ``$TESTBED_PG_BIN``, then the newest ``/usr/lib/postgresql/*/bin``
    (Debian/Ubuntu layout), then ``PATH``.
    """

    def usable(d: Path) -> bool:
        return all(os.access(d / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres"))

    env = os.environ.get(PG_BIN_ENV)
    if env and usable(Path(env)):
        return Path(env)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for candidate in candidates:
        if usable(candidate):
            return candidate
    on_path = shutil.which("pg_ctl")
    if on_path and usable(Path(on_path).parent):
        return Path(on_path).parent
    return None


def _postgres_account() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


def postgres_unavailable_reason() -> str | None:
    """Why a ``PostgresServer`` cannot be started here, or None when it can."""
    if postgres_bin_dir() is None:
        return POSTGRES_MISSING_REASON
    if os.geteuid() == 0 and _postgres_account() is None:
        return _POSTGRES_USER_MISSING_REASON
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return _PSYCOPG2_MISSING_REASON
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


#: one entry of the server log (log_line_prefix '%m [%p] %u@%d '): a first line that starts
#: with the timestamp; a statement's further lines follow, each starting with a tab
_LOG_ENTRY = re.compile(
    r"^\d{4}-\d\d-\d\d [^\[]*\[(?P<pid>\d+)\] (?P<who>\S*) (?P<level>[A-Z]+):  "
    r"(?P<message>.*?)(?=^\d{4}-\d\d-\d\d |\Z)",
    re.M | re.S,
)


@dataclass(frozen=True)
class LoggedActivity:
    """What one role did on one database, as the server logged it (``log_statement = all``,
    ``log_connections = on``): every statement sent, in log order, and the connections
    opened."""

    statements: tuple[str, ...]
    connections: int


def logged_activity(log: str, user: str, dbname: str) -> LoggedActivity:
    """Statements and connection opens of ``user`` on ``dbname`` in ``log`` (a slice of
    :meth:`PostgresServer.log_text`)."""
    who = f"{user}@{dbname}"
    statements: list[str] = []
    connections = 0
    for entry in _LOG_ENTRY.finditer(log):
        if entry["who"] != who or entry["level"] != "LOG":
            continue
        message = entry["message"]
        if message.startswith("statement: "):
            statements.append(message.removeprefix("statement: ").rstrip("\n"))
        elif message.startswith("execute "):  # an extended-protocol statement
            statements.append(message.split(": ", 1)[-1].rstrip("\n"))
        elif message.startswith("connection authorized"):
            connections += 1
    return LoggedActivity(tuple(statements), connections)


class PostgresError(RuntimeError):
    """initdb/pg_ctl failed; the message includes their output and the server log."""


class PostgresServer:
    """A throwaway PostgreSQL cluster listening on 127.0.0.1 only.

    >>> with PostgresServer() as pg:  # doctest: +SKIP
    ...     pg.execute("select 1")
    [(1,)]
    """

    host: str = "127.0.0.1"
    superuser: str = "postgres"

    def __init__(
        self,
        *,
        max_connections: int = 50,
        bin_dir: Path | None = None,
        ssl: bool = True,
        named: bool = False,
    ) -> None:
        found = bin_dir or postgres_bin_dir()
        if found is None:
            raise PostgresError(POSTGRES_MISSING_REASON)
        self.bin_dir: Path = found
        self.max_connections = max_connections
        self.ssl = ssl
        #: present the certificate for testbed.tls.WAREHOUSE_NAME (not 127.0.0.1)
        self.named = named
        self.superuser_password: str = secrets.token_hex(16)
        self.port: int = 0
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            account = _postgres_account()
            if account is None:
                raise PostgresError(_POSTGRES_USER_MISSING_REASON)
            self._run_as = account
        self.base_dir = Path(tempfile.mkdtemp(prefix="dbr-pg-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_path = self.base_dir / "server.log"
        self._initialized = False
        self._running = False
        self._md5_superuser = False

    # -- lifecycle -----------------------------------------------------------

    def _command(self, args: list[str]) -> list[str]:
        if self._run_as is None:
            return args
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", self._run_as.pw_name, "--", *args]
        return ["su", self._run_as.pw_name, "-s", "/bin/sh", "-c", subprocess.list2cmdline(args)]

    def _run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self._command(args),
            cwd=self.base_dir,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )
        if check and proc.returncode != 0:
            raise PostgresError(
                f"{Path(args[0]).name} failed (exit {proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}\n--- server log ---\n{self.log_text()}"
            )
        return proc

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _initdb(self) -> None:
        self._chown(self.base_dir)
        self.socket_dir.mkdir(mode=0o700)
        self._chown(self.socket_dir)
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        try:
            self._run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.superuser,
                    f"--pwfile={pwfile}",
                    "--auth-host=md5",
                    "--auth-local=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        settings = {
            "password_encryption": "md5",
            "max_connections": str(self.max_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %u@%d '",
            "timezone": "'UTC'",
        }
        if self.ssl:
            settings.update(self._install_certificate())
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# dbt_runner test settings\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._initialized = True

    def _install_certificate(self) -> dict[str, str]:
        """Copy the test PKI's server certificate into the data dir; the settings for it."""
        from testbed.tls import test_pki

        pki = test_pki()
        cert, key = self.data_dir / "server.crt", self.data_dir / "server.key"
        cert.write_bytes(pki.named_cert_pem if self.named else pki.cert_pem)
        key.write_bytes(pki.named_key_pem if self.named else pki.key_pem)
        key.chmod(0o600)  # PostgreSQL refuses a key others can read
        for path in (cert, key):
            self._chown(path)
        return {"ssl": "on", "ssl_cert_file": "'server.crt'", "ssl_key_file": "'server.key'"}

    def _pg_ctl_start(self, port: int) -> bool:
        """Start on ``port``; False when the port was taken, raise on other errors."""
        opts = f"-h {self.host} -p {port} -k {self.socket_dir}"
        proc = self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(_PG_CTL_TIMEOUT_S),
                "-o",
                opts,
                "start",
            ],
            check=False,
        )
        if proc.returncode == 0:
            return True
        log = self.log_text()
        if "could not bind" in log or "Address already in use" in log:
            return False
        raise PostgresError(
            f"pg_ctl start failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}\n"
            f"--- server log ---\n{log}"
        )

    def start(self) -> None:
        """initdb (first time only) and start on a free port (the same port on restarts)."""
        if self._running:
            return
        if not self._initialized:
            self._initdb()
        if self.port:
            if not self._pg_ctl_start(self.port):
                raise PostgresError(f"port {self.port} is taken; cannot restart on it")
        else:
            for _ in range(_START_ATTEMPTS):
                port = free_port(self.host)
                if self._pg_ctl_start(port):
                    self.port = port
                    break
            else:
                raise PostgresError(f"no free port after {_START_ATTEMPTS} attempts")
        self._running = True
        if not self._md5_superuser:
            # initdb stored the superuser password as SCRAM (password_encryption
            # was not yet md5); store it again as md5 for redshift_connector.
            self.execute(
                f"ALTER ROLE {_quote_ident(self.superuser)} "
                f"PASSWORD {_quote_literal(self.superuser_password)}"
            )
            self._md5_superuser = True

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE`` (smart, fast or immediate)."""
        if not self._running:
            return
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                mode,
                "-w",
                "-t",
                str(_PG_CTL_TIMEOUT_S),
                "stop",
            ]
        )
        self._running = False

    def kill(self) -> None:
        """Stop abruptly (``pg_ctl -m immediate``): clients see their connections drop."""
        self.stop("immediate")

    def restart(self) -> None:
        """Stop (fast) and start again on the same port; the data is kept."""
        self.stop("fast")
        self.start()

    @property
    def running(self) -> bool:
        return self._running

    def close(self) -> None:
        """Stop the server (immediately) and remove its temporary directory."""
        try:
            if self._running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def log_text(self) -> str:
        """The server log so far ('' when there is none yet)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- SQL helpers ---------------------------------------------------------

    def connect(
        self,
        dbname: str = "postgres",
        user: str | None = None,
        password: str | None = None,
    ) -> Any:
        """A psycopg2 connection (autocommit) over TCP; superuser by default."""
        import psycopg2

        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            dbname=dbname,
            user=user or self.superuser,
            password=password if user else (password or self.superuser_password),
            connect_timeout=10,
            sslmode="require" if self.ssl else "disable",
        )
        conn.autocommit = True
        return conn

    def execute(
        self,
        sql: str,
        dbname: str = "postgres",
        user: str | None = None,
        password: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run ``sql`` in autocommit mode; return its rows ([] when it returns none)."""
        conn = self.connect(dbname=dbname, user=user, password=password)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall()) if cur.description is not None else []
        finally:
            conn.close()

    def create_role(self, name: str, password: str, connection_limit: int | None = None) -> None:
        """A login role with an (md5-stored) password."""
        limit = f" CONNECTION LIMIT {int(connection_limit)}" if connection_limit is not None else ""
        self.execute(
            f"CREATE ROLE {_quote_ident(name)} LOGIN PASSWORD {_quote_literal(password)}{limit}"
        )

    def create_database(self, name: str, owner: str) -> None:
        """A database owned by ``owner`` (who may then create schemas in it)."""
        self.execute(f"CREATE DATABASE {_quote_ident(name)} OWNER {_quote_ident(owner)}")

    def drop_database(self, name: str) -> None:
        """Drop ``name``, terminating its open sessions first."""
        self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = {_quote_literal(name)} AND pid <> pg_backend_pid()"
        )
        self.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def drop_role(self, name: str) -> None:
        """Drop ``name``, terminating its sessions first."""
        self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE usename = {_quote_literal(name)} AND pid <> pg_backend_pid()"
        )
        # Terminated backends disappear asynchronously; DROP ROLE does not care.
        with contextlib.suppress(Exception):
            self.execute(f"DROP OWNED BY {_quote_ident(name)} CASCADE")
        self.execute(f"DROP ROLE IF EXISTS {_quote_ident(name)}")

    def wait_until_no_sessions(self, dbname: str, timeout_s: float = 5.0) -> bool:
        """Poll pg_stat_activity until ``dbname`` has no sessions; False on timeout."""
        deadline = time.monotonic() + timeout_s
        for _ in range(int(timeout_s / 0.05) + 1):
            rows = self.execute(
                "SELECT count(*) FROM pg_stat_activity "
                f"WHERE datname = {_quote_literal(dbname)} AND pid <> pg_backend_pid()"
            )
            if rows[0][0] == 0:
                return True
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return False
