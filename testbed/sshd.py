"""A real OpenSSH bastion for tests: ``sshd`` on a free loopback port.

:class:`SshdServer` generates its own ed25519 host key and user keys in a
temporary directory, writes a forwarding-only ``sshd_config`` and runs
``/usr/sbin/sshd -D`` as a child process. Tests can count accepted SSH
connections, kill the per-connection processes (a dropped tunnel), freeze the
whole server (a network stall) and restart it on the same port.

>>> server = SshdServer()            # doctest: +SKIP
>>> server.start()                   # doctest: +SKIP
>>> server.known_hosts_path.read_text()   # doctest: +SKIP
'[127.0.0.1]:40123 ssh-ed25519 AAAA...'
>>> server.close()                   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
INSTALL_HINT = "OpenSSH server not found: apt-get install -y openssh-server"
_TUNNEL_USER = "tunnel"


def sshd_available() -> bool:
    """True when the OpenSSH server and ``ssh-keygen`` are installed."""
    return os.access(SSHD, os.X_OK) and shutil.which(SSH_KEYGEN) is not None


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fingerprint_of(public_key_line: str) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a ``"ssh-ed25519 AAAA..."`` line."""
    blob = base64.b64decode(public_key_line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def is_listening(host: str, port: int) -> bool:
    """True when a socket LISTENs on ``host:port`` (read from /proc/net/tcp: no connection made)."""
    local = f"{socket.htonl(int.from_bytes(socket.inet_aton(host), 'big')):08X}:{port:04X}"
    try:
        with open("/proc/net/tcp", encoding="ascii") as fh:
            rows = fh.read().splitlines()[1:]
    except OSError:  # not Linux: fall back to connecting
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            return False
        return True
    return any(
        fields[1] == local and fields[3] == "0A"  # 0A = TCP_LISTEN
        for fields in (row.split() for row in rows)
        if len(fields) > 3
    )


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) < 2:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first, then grandchildren...)."""
    children = _children_map()
    found: list[int] = []
    queue = [pid]
    while queue and len(found) < 10_000:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def _ensure_user(name: str) -> None:
    """Create the unprivileged bastion user (as root) and unlock it for ``UsePAM no``."""
    import pwd

    try:
        pwd.getpwnam(name)
        exists = True
    except KeyError:
        exists = False
    if not exists:
        result = subprocess.run(
            ["useradd", "-M", "-s", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        # 9 = the user exists (another process created it meanwhile)
        if result.returncode not in (0, 9):
            raise RuntimeError(f"useradd {name} failed: {result.stderr.strip()}")
    # A useradd user is locked ("!"), and with UsePAM no sshd refuses locked
    # accounts even for public keys; "*" = no password login, but not locked.
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True, timeout=30)


class SshdServer:
    """An OpenSSH ``sshd`` on 127.0.0.1 that only allows TCP forwarding for one user.

    Attributes valid after construction: ``host``, ``port``, ``user``,
    ``private_key_path`` (authorized, no passphrase), ``encrypted_key_path`` +
    ``key_passphrase`` (authorized, with a passphrase), ``unauthorized_key_path``
    (a valid key the server does not accept), ``known_hosts_path``,
    ``host_public_key`` and ``host_key_fingerprint``.
    """

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.user = _TUNNEL_USER if os.geteuid() == 0 else getpass.getuser()
        # Not under pytest's tmp dir: that is mode 0700 and sshd reads
        # authorized_keys as the (unprivileged) tunnel user.
        self.dir = Path(tempfile.mkdtemp(prefix="dbt-runner-sshd-"))
        self.dir.chmod(0o755)
        self.config_path = self.dir / "sshd_config"
        self.log_path = self.dir / "sshd.log"
        self.pid_path = self.dir / "sshd.pid"
        self.authorized_keys_path = self.dir / "authorized_keys"
        self.key_passphrase = "pp-" + secrets.token_hex(8)
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._log_offset = 0

        try:
            self.host_key_path = self._keygen("ssh_host_ed25519_key")
            self.host_public_key = self._public_line(self.host_key_path)
            self.host_key_fingerprint = fingerprint_of(self.host_public_key)
            self.private_key_path = self.make_key("id_ed25519", authorize=True)
            self.encrypted_key_path = self.make_key(
                "id_ed25519_pass", passphrase=self.key_passphrase, authorize=True
            )
            self.unauthorized_key_path = self.make_key("id_ed25519_other", authorize=False)
            self.known_hosts_path = self.dir / "known_hosts"
            self.known_hosts_path.write_text(f"{self.known_hosts_entry()}\n")
            self._write_config()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    # ------------------------------------------------------------------ keys
    def _keygen(self, name: str, passphrase: str = "") -> Path:
        path = self.dir / name
        subprocess.run(
            [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f", str(path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        path.chmod(0o600)
        return path

    @staticmethod
    def _public_line(private_key: Path) -> str:
        """``"ssh-ed25519 AAAA..."`` (without the comment) of a generated key."""
        fields = Path(f"{private_key}.pub").read_text().split()
        return f"{fields[0]} {fields[1]}"

    def make_key(self, name: str, passphrase: str = "", authorize: bool = False) -> Path:
        """Generate an ed25519 user key in the server's directory; optionally authorize it."""
        path = self._keygen(name, passphrase)
        if authorize:
            with self.authorized_keys_path.open("a") as fh:
                fh.write(self._public_line(path) + "\n")
            self.authorized_keys_path.chmod(0o644)
        return path

    def known_hosts_entry(self) -> str:
        """The known_hosts line for this server: ``[127.0.0.1]:PORT ssh-ed25519 AAAA...``."""
        return f"[{self.host}]:{self.port} {self.host_public_key}"

    def _write_config(self) -> None:
        lines = [
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.pid_path}",
            f"AuthorizedKeysFile {self.authorized_keys_path}",
            "StrictModes no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            f"AllowUsers {self.user}",
            "AllowTcpForwarding yes",
            "PermitOpen any",
            "PermitTTY no",
            "X11Forwarding no",
            "PrintMotd no",
            "LoginGraceTime 20",
            "LogLevel VERBOSE",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    # ------------------------------------------------------------- lifecycle
    @property
    def pid(self) -> int | None:
        """The listener's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the listener process is alive."""
        return self.pid is not None

    def start(self, timeout: float = 10.0) -> None:
        """Start sshd (on the same port as before) and wait until it listens."""
        if self.running:
            return
        if os.geteuid() == 0:
            _ensure_user(self.user)
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(self.config_path), "-E", str(self.log_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._paused = False
        listening = f"Server listening on {self.host} port {self.port}"
        ok = wait_until(
            lambda: (
                not self.running
                or (listening in self._log_since_start() and is_listening(self.host, self.port))
            ),
            timeout=timeout,
        )
        if not ok or not self.running:
            log = self._log_since_start()
            self._terminate()
            raise RuntimeError(f"sshd did not start listening on port {self.port}:\n{log[-2000:]}")

    def _log_since_start(self) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self) -> str:
        """The whole sshd log (all starts)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def accepted_connections(self) -> int:
        """How many SSH connections authenticated so far (``Accepted publickey`` lines)."""
        return self.log().count("Accepted publickey")

    def connection_pids(self) -> list[int]:
        """The per-connection processes (root monitor + unprivileged child) of this sshd."""
        pid = self.pid
        return descendants(pid) if pid is not None else []

    def kill_connections(self, timeout: float = 5.0) -> int:
        """SIGKILL every per-connection process (the tunnel drops); return how many."""
        pids = self.connection_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(p in self.connection_pids() for p in pids), timeout)
        return len(pids)

    def pause(self) -> None:
        """SIGSTOP the listener and its connections: a network stall (TCP stays up)."""
        pid = self.pid
        if pid is None:
            return
        os.kill(pid, signal.SIGSTOP)  # first, so no new connection process appears
        self._paused = True
        for _ in range(2):  # twice: catch a child forked just before the stop
            for child in descendants(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        pid = self.pid
        if pid is None:
            self._paused = False
            return
        for child in descendants(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGCONT)
        os.kill(pid, signal.SIGCONT)
        self._paused = False

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused

    def stop(self) -> None:
        """The bastion goes down: its connections are killed, then the listener stops."""
        if self._proc is None:
            return
        if self._paused:
            self.resume()
        self.kill_connections()
        self._terminate()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def reset(self) -> None:
        """Bring the server back to normal after a destructive test (resume, restart)."""
        if self._paused:
            self.resume()
        if not self.running:
            self.start()

    def close(self) -> None:
        """Stop sshd and remove its directory (keys included)."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SshdServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SshdServer(host={self.host!r}, port={self.port}, user={self.user!r})"
