"""The tunnel against a real OpenSSH bastion and a real PostgreSQL.

Each failure case checks the error class, that it failed for its real cause (not by
waiting out the connect timeout), that the message
says what to fix, and that nothing reached the warehouse (the tunnel's remote
is a "canary" listener that must not see a connection).
"""

from __future__ import annotations

import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from dbt_runner import HostKeyError, SSHAuthError, SSHSettings, TunnelError
from dbt_runner._ssh.tunnel import PORT_RANGE, Tunnel, derive_local_port
from testbed.pg_fixtures import PgDatabase, RedshiftDatabase
from testbed.sshd import SshdServer, free_port, wait_until

pytestmark = pytest.mark.integration


def settings(server: SshdServer, **overrides: Any) -> SSHSettings:
    values: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "private_key": server.private_key_path,
        "known_hosts": server.known_hosts_path,
        # generous: a loaded CI machine must not turn a slow handshake into a timeout
        "connect_timeout_s": 15.0,
    }
    values.update(overrides)
    return SSHSettings(**values)


class Canary:
    """A listener standing in for the warehouse: records whether anything connected."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.host, self.port = "127.0.0.1", int(self.sock.getsockname()[1])

    def was_contacted(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True


@pytest.fixture
def canary() -> Iterator[Canary]:
    c = Canary()
    yield c
    c.sock.close()


def query(db: PgDatabase, through: Tunnel | int, sql: str = "select 1") -> Any:
    """Run ``sql`` on ``db`` through a tunnel (or a local tunnel port)."""
    import psycopg2

    conn = psycopg2.connect(
        host="127.0.0.1",
        port=through if isinstance(through, int) else through.local_port,
        user=db.user,
        password=db.password,
        dbname=db.dbname,
        connect_timeout=5,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


def _timed_out(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):  # a cause chain, bounded
        if seen is None:
            return False
        if isinstance(seen, TimeoutError | socket.timeout):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def open_fails(
    tunnel: Tunnel, expected: type[TunnelError], *, timed_out: bool = False
) -> TunnelError:
    """open() fails with ``expected`` and its cause; it failed *fast* when the cause is the
    real reason (refused, wrong key, ...) rather than the connect timeout running out."""
    with pytest.raises(TunnelError) as info:
        tunnel.open()
    assert type(info.value) is expected, info.value
    assert info.value.__cause__ is not None
    assert _timed_out(info.value) is timed_out, info.value
    assert not tunnel.is_healthy()
    return info.value


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# ------------------------------------------------------------------ it works


def test_many_queries_over_one_ssh_connection(sshd: SshdServer, pg_db: PgDatabase) -> None:
    before = sshd.accepted_connections()
    with Tunnel(settings(sshd), pg_db.host, pg_db.port) as tunnel:
        assert tunnel.local_host == "127.0.0.1"
        assert tunnel.is_healthy()
        # sequential connections, then three at once (dbt threads=3)
        for i in range(5):
            assert query(pg_db, tunnel, f"select {i}") == i
        results: list[Any] = []
        workers = [
            threading.Thread(target=lambda: results.append(query(pg_db, tunnel, "select 42")))
            for _ in range(3)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join(10)
        assert results == [42, 42, 42]
    assert sshd.accepted_connections() == before + 1


def test_pinned_key_and_fingerprint_both_verify(sshd: SshdServer, pg_db: PgDatabase) -> None:
    for pin in (sshd.host_public_key, sshd.host_key_fingerprint):
        ssh = settings(sshd, known_hosts=None, host_key=pin)
        with Tunnel(ssh, pg_db.host, pg_db.port) as tunnel:
            assert query(pg_db, tunnel) == 1


def test_encrypted_key_with_its_passphrase(sshd: SshdServer, pg_db: PgDatabase) -> None:
    ssh = settings(
        sshd,
        private_key=sshd.encrypted_key_path,
        private_key_passphrase=sshd.key_passphrase,
    )
    with Tunnel(ssh, pg_db.host, pg_db.port) as tunnel:
        assert query(pg_db, tunnel) == 1
        assert sshd.key_passphrase not in repr(tunnel)


def test_stable_local_port_across_close_and_reopen(sshd: SshdServer, pg_db: PgDatabase) -> None:
    ssh = settings(sshd)
    tunnel = Tunnel(ssh, pg_db.host, pg_db.port)
    derived = derive_local_port(sshd.host, sshd.port, sshd.user, pg_db.host, pg_db.port)
    try:
        tunnel.open()
        first = tunnel.local_port
        assert PORT_RANGE[0] <= first < PORT_RANGE[1]
        assert first in range(derived, derived + 4)  # derived, or a near fallback if busy
        tunnel.close()
        assert not tunnel.is_healthy()
        tunnel.open()
        assert tunnel.local_port == first
        assert query(pg_db, tunnel) == 1
    finally:
        tunnel.close()


def test_two_tunnels_with_identical_settings(sshd: SshdServer, pg_db: PgDatabase) -> None:
    ssh = settings(sshd)
    with (
        Tunnel(ssh, pg_db.host, pg_db.port) as first,
        Tunnel(ssh, pg_db.host, pg_db.port) as second,
    ):
        assert first.local_port != second.local_port  # the second fell back
        assert query(pg_db, first, "select 1") == 1
        assert query(pg_db, second, "select 2") == 2


_CHILD = """
import sys
from dbt_runner import SSHSettings
from dbt_runner._ssh.tunnel import Tunnel
ssh = SSHSettings.model_validate_json(sys.argv[1])
with Tunnel(ssh, sys.argv[2], int(sys.argv[3])) as tunnel:
    print(tunnel.local_port, flush=True)
    sys.stdin.readline()  # until the parent is done
"""


def test_two_processes_with_identical_settings(sshd: SshdServer, pg_db: PgDatabase) -> None:
    ssh = settings(sshd)
    with Tunnel(ssh, pg_db.host, pg_db.port) as mine:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, ssh.model_dump_json(), pg_db.host, str(pg_db.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        try:
            assert child.stdout is not None and child.stdin is not None
            ready, _, _ = select.select([child.stdout], [], [], 60)
            assert ready, "the child process did not open its tunnel"
            line = child.stdout.readline().strip()
            assert line.isdigit(), f"child said {line!r}"
            theirs = int(line)
            assert theirs != mine.local_port  # it fell back to the next candidate
            assert query(pg_db, mine) == 1
            assert query(pg_db, theirs) == 1
            child.stdin.write("done\n")
            child.stdin.flush()
            assert child.wait(timeout=30) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)


def test_explicit_local_port_in_use_is_a_clear_error(sshd: SshdServer, pg_db: PgDatabase) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        tunnel = Tunnel(settings(sshd, local_port=port), pg_db.host, pg_db.port)
        error = open_fails(tunnel, TunnelError)
    assert str(port) in str(error)
    assert "LOCAL_PORT" in str(error)
    assert isinstance(error.__cause__, OSError)


def test_insecure_skip_logs_a_warning(
    sshd: SshdServer, pg_db: PgDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    ssh = settings(sshd, known_hosts=None, insecure_skip_host_key_check=True)
    with (
        caplog.at_level(logging.WARNING, logger="dbt_runner.tunnel"),
        Tunnel(ssh, pg_db.host, pg_db.port) as tunnel,
    ):
        assert query(pg_db, tunnel) == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("INSECURE_SKIP_HOST_KEY_CHECK" in r.getMessage() for r in warnings)
    assert any(sshd.host_key_fingerprint in r.getMessage() for r in warnings)


def test_tcp_tuning_is_on_both_forwarded_legs(
    sshd: SshdServer, redshift_db: RedshiftDatabase
) -> None:
    """TCP_NODELAY on the SSH socket and on every accepted socket, and the SSH socket re-arms
    TCP_QUICKACK: without them redshift_connector paid 15-45 ms per query (Nagle + delayed
    ACK; the per-query figures are in benchmarks/tunnel_latency.py)."""
    import gc

    import redshift_connector

    from dbt_runner._ssh.forwarder import _QuickAckSocket

    def nodelay(sock: socket.socket) -> int:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    with Tunnel(settings(sshd), redshift_db.host, redshift_db.port) as tunnel:
        conn = redshift_connector.connect(
            host=tunnel.local_host,
            port=tunnel.local_port,
            user=redshift_db.user,
            password=redshift_db.password,
            database=redshift_db.dbname,
            sslmode="verify-ca",  # TLS, as on Redshift
            timeout=10,
        )
        try:
            cur = conn.cursor()
            cur.execute("select 1")
            assert cur.fetchall() in ([[1]], ([1],), [(1,)], ((1,),))
            ssh_sock: Any = tunnel._transport.sock  # type: ignore[union-attr]
            assert isinstance(ssh_sock, _QuickAckSocket) and nodelay(ssh_sock)
            accepted = [
                o
                for o in gc.get_objects()
                if isinstance(o, socket.socket)
                and o.fileno() >= 0
                and o.family == socket.AF_INET
                and o.getsockname()[1] == tunnel.local_port
                and _is_connected(o)
            ]
            assert accepted and all(nodelay(o) for o in accepted)
        finally:
            conn.close()


def _is_connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


# ------------------------------------------------------------- host keys


def test_wrong_pinned_host_key(sshd: SshdServer, canary: Canary) -> None:
    impostor = sshd.make_key(f"impostor_{time.monotonic_ns()}")
    wrong_line = " ".join(Path(f"{impostor}.pub").read_text().split()[:2])
    before = sshd.accepted_connections()
    tunnel = Tunnel(settings(sshd, known_hosts=None, host_key=wrong_line), canary.host, canary.port)
    error = open_fails(tunnel, HostKeyError)
    message = str(error)
    assert sshd.host_key_fingerprint in message  # what the bastion presented
    assert "SSH__HOST_KEY" in message
    assert sshd.accepted_connections() == before  # we did not even authenticate
    assert not canary.was_contacted()


def test_unknown_host_in_known_hosts(sshd: SshdServer, canary: Canary, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{free_port()} {sshd.host_public_key}\n")  # another port
    tunnel = Tunnel(settings(sshd, known_hosts=known_hosts), canary.host, canary.port)
    error = open_fails(tunnel, HostKeyError)
    message = str(error)
    assert sshd.host_key_fingerprint in message
    assert sshd.known_hosts_entry() in message  # the line to add
    assert str(known_hosts) in message
    assert not canary.was_contacted()


def test_changed_host_key_in_known_hosts(sshd: SshdServer, canary: Canary, tmp_path: Path) -> None:
    impostor = sshd.make_key(f"impostor_{time.monotonic_ns()}")
    old_line = " ".join(Path(f"{impostor}.pub").read_text().split()[:2])
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {old_line}\n")
    tunnel = Tunnel(settings(sshd, known_hosts=known_hosts), canary.host, canary.port)
    error = open_fails(tunnel, HostKeyError)
    assert "intercepting" in str(error)
    assert sshd.host_key_fingerprint in str(error)
    assert not canary.was_contacted()


def test_known_hosts_lists_another_key_type(
    sshd: SshdServer, canary: Canary, tmp_path: Path
) -> None:
    """The bastion has no key of the expected type (e.g. it moved from RSA to ed25519)."""
    key = tmp_path / "ecdsa"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(key)], check=True, timeout=30
    )
    ecdsa_line = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {ecdsa_line}\n")
    tunnel = Tunnel(settings(sshd, known_hosts=known_hosts), canary.host, canary.port)
    error = open_fails(tunnel, HostKeyError)
    assert "ecdsa-sha2-nistp256" in str(error)
    assert str(known_hosts) in str(error)
    assert not canary.was_contacted()


# ----------------------------------------------------------- authentication


def test_wrong_user_key(sshd: SshdServer, canary: Canary) -> None:
    ssh = settings(sshd, private_key=sshd.unauthorized_key_path)
    error = open_fails(Tunnel(ssh, canary.host, canary.port), SSHAuthError)
    message = str(error)
    assert "refused the key" in message
    assert repr(sshd.user) in message
    assert str(sshd.unauthorized_key_path) in message
    assert isinstance(error.__cause__, paramiko.AuthenticationException)
    assert not canary.was_contacted()


@pytest.mark.parametrize("passphrase", [None, "wrong-passphrase-123"])
def test_encrypted_key_without_the_right_passphrase(
    sshd: SshdServer, canary: Canary, passphrase: str | None
) -> None:
    ssh = settings(sshd, private_key=sshd.encrypted_key_path, private_key_passphrase=passphrase)
    error = open_fails(Tunnel(ssh, canary.host, canary.port), SSHAuthError)
    assert "PASSPHRASE" in str(error)
    if passphrase:
        assert passphrase not in str(error)
    assert not canary.was_contacted()


# ---------------------------------------------------------- unreachable


def test_closed_port_is_refused_fast(canary: Canary, sshd: SshdServer) -> None:
    ssh = settings(sshd, port=free_port())
    error = open_fails(Tunnel(ssh, canary.host, canary.port), TunnelError)
    assert isinstance(error.__cause__, ConnectionRefusedError)
    assert "SSH__HOST/PORT" in str(error)
    assert not canary.was_contacted()


def test_stalled_bastion_times_out(sshd: SshdServer, canary: Canary) -> None:
    """A frozen sshd accepts TCP (kernel backlog) but never answers: bounded by the timeout."""
    sshd.pause()
    ssh = settings(sshd, connect_timeout_s=1.0)
    error = open_fails(Tunnel(ssh, canary.host, canary.port), TunnelError, timed_out=True)
    assert "bastion" in str(error)
    assert not canary.was_contacted()


def test_bastion_cannot_reach_the_warehouse(sshd: SshdServer) -> None:
    closed = free_port()
    error = open_fails(Tunnel(settings(sshd), "127.0.0.1", closed), TunnelError)
    assert f"127.0.0.1:{closed}" in str(error)
    assert "WAREHOUSE__HOST/PORT" in str(error)
    assert isinstance(error.__cause__, paramiko.ChannelException)


# --------------------------------------------------------- drop and re-open


def test_reopens_on_the_same_port_after_the_bastion_drops_it(
    sshd_fresh: SshdServer, pg_db: PgDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    with Tunnel(settings(sshd_fresh), pg_db.host, pg_db.port) as tunnel:
        assert query(pg_db, tunnel) == 1
        assert tunnel.ensure_open() is False  # healthy: nothing to do
        port = tunnel.local_port

        assert sshd_fresh.kill_connections() >= 1
        assert wait_until(lambda: not tunnel.is_healthy(), timeout=10)

        with caplog.at_level(logging.WARNING, logger="dbt_runner.tunnel"):
            assert tunnel.ensure_open() is True
        assert "tunnel re-opened" in caplog.text
        assert tunnel.local_port == port
        assert tunnel.is_healthy()
        assert query(pg_db, tunnel) == 1
    assert sshd_fresh.accepted_connections() == 2


def test_bastion_restart_then_reopen(sshd_fresh: SshdServer, pg_db: PgDatabase) -> None:
    tunnel = Tunnel(settings(sshd_fresh), pg_db.host, pg_db.port)
    try:
        tunnel.open()
        sshd_fresh.stop()
        assert wait_until(lambda: not tunnel.is_healthy(), timeout=10)
        with pytest.raises(TunnelError) as info:
            tunnel.ensure_open()  # bastion down: a transient TunnelError
        assert type(info.value) is TunnelError
        sshd_fresh.start()
        assert tunnel.ensure_open() is True
        assert query(pg_db, tunnel) == 1
    finally:
        tunnel.close()


# ------------------------------------------------------------------ leaks


def _settled(baseline_threads: int, baseline_fds: int) -> bool:
    return threading.active_count() == baseline_threads and fd_count() == baseline_fds


def test_close_leaves_no_thread_or_fd(sshd: SshdServer, pg_db: PgDatabase, canary: Canary) -> None:
    import psycopg2

    threads, fds = threading.active_count(), fd_count()
    names = {t.name for t in threading.enumerate()}
    for _ in range(2):
        tunnel = Tunnel(settings(sshd), pg_db.host, pg_db.port)
        tunnel.open()
        conns = [
            psycopg2.connect(
                host=tunnel.local_host,
                port=tunnel.local_port,
                user=pg_db.user,
                password=pg_db.password,
                dbname=pg_db.dbname,
            )
            for _ in range(3)
        ]
        for conn in conns:
            conn.close()
        tunnel.close()
        tunnel.close()  # idempotent
    # failed opens leave nothing behind either
    with pytest.raises(SSHAuthError):
        Tunnel(
            settings(sshd, private_key=sshd.unauthorized_key_path), canary.host, canary.port
        ).open()
    with pytest.raises(TunnelError):
        Tunnel(settings(sshd, port=free_port()), canary.host, canary.port).open()

    # Threads may need a moment to finish their last line after close() joined them.
    settled = wait_until(lambda: _settled(threads, fds), timeout=5)
    leftover = {t.name for t in threading.enumerate()} - names
    assert settled, (
        f"threads {threading.active_count()} vs {threads} {leftover}, fds {fd_count()} vs {fds}"
    )


def test_close_while_a_client_is_connected(sshd: SshdServer, pg_db: PgDatabase) -> None:
    import psycopg2

    threads = threading.active_count()
    tunnel = Tunnel(settings(sshd), pg_db.host, pg_db.port)
    tunnel.open()
    conn = psycopg2.connect(
        host=tunnel.local_host,
        port=tunnel.local_port,
        user=pg_db.user,
        password=pg_db.password,
        dbname=pg_db.dbname,
    )
    try:
        tunnel.close()  # returns (pytest-timeout guards a hang) and leaves no thread
        assert wait_until(lambda: threading.active_count() == threads, timeout=5)
        with pytest.raises(psycopg2.OperationalError), conn.cursor() as cur:
            cur.execute("select 1")
    finally:
        conn.close()


class _AnswerAfterEof:
    """A warehouse stand-in that reads until the client's EOF, then answers and closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", int(self.sock.getsockname()[1])
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(10)
        for _ in range(3):  # the tunnel's open() probes with an empty connection first
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(10)
                received = b""
                while chunk := conn.recv(4096):
                    received += chunk
                conn.sendall(b"answer:" + received)
            if received:
                self.received = received
                return


def test_half_close_passes_the_eof_on_and_keeps_the_answer(sshd: SshdServer) -> None:
    """TCP semantics survive the tunnel: the client's EOF reaches the server, whose answer
    after it still reaches the client (the old handler dropped it on the client's EOF)."""
    server = _AnswerAfterEof()
    with Tunnel(settings(sshd), server.host, server.port) as tunnel:
        client = socket.create_connection((tunnel.local_host, tunnel.local_port), timeout=10)
        with client:
            client.sendall(b"x" * 100_000)
            client.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := client.recv(65536):
                reply += chunk
        server.thread.join(10)
    server.sock.close()
    assert server.received == b"x" * 100_000
    assert reply == b"answer:" + b"x" * 100_000
