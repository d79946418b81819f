"""The SSH tunnel to the warehouse: one per session, through a bastion.

:class:`Tunnel` wraps :class:`sshtunnel.SSHTunnelForwarder`. dbt connects to
``tunnel.local_host:tunnel.local_port``; the bastion forwards each connection
to the warehouse::

    dbt ──> 127.0.0.1:local_port ══ SSH (bastion host:port) ══> warehouse host:port

Who does what:

- **This module** makes the SSH connection itself: a TCP socket with
  ``TCP_NODELAY`` (and ``TCP_QUICKACK`` on Linux), the SSH handshake, the
  **host key check** (``known_hosts`` file or a pinned key/fingerprint) before
  any authentication or channel, then public-key authentication, then one
  forwarding channel to the warehouse opened and closed at once (no bytes
  sent), so "the bastion cannot reach the warehouse" fails ``open()`` clearly
  instead of dbt's first query. Every step is bounded by
  ``SSH__CONNECT_TIMEOUT_S``.
- **sshtunnel** runs the local forward server (threads, one SSH channel per
  accepted connection) on top of that authenticated transport.

sshtunnel hooks used (sshtunnel 0.5.x has no public ones for this; the
version is pinned ``<0.5.2``): ``SSHTunnelForwarder._connect_to_gateway`` is
overridden to set its ``_transport`` to our authenticated transport instead of
making its own (which could not verify a fingerprint pin, nor verify before
authenticating, nor report why it failed), and
``SSHTunnelForwarder._make_ssh_forward_server_class`` is overridden to return
a subclass of its server that binds the stable local port (with fallbacks)
and sets ``TCP_NODELAY`` on accepted sockets, through socketserver's public
``server_bind``/``get_request`` hooks.

Errors from socket, paramiko and sshtunnel are translated in one place,
:func:`map_tunnel_errors`, into :class:`~dbt_runner.TunnelError` (transient),
:class:`~dbt_runner.HostKeyError` or :class:`~dbt_runner.SSHAuthError`, with
the original exception as ``__cause__``.

>>> from dbt_runner import SSHSettings
>>> ssh = SSHSettings(host="bastion.example.com", user="tunnel",   # doctest: +SKIP
...                   private_key="~/.ssh/id_ed25519", known_hosts="~/.ssh/known_hosts")
>>> with Tunnel(ssh, "warehouse.internal", 5439) as tunnel:        # doctest: +SKIP
...     print(tunnel.local_host, tunnel.local_port)
127.0.0.1 24817
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import paramiko
import sshtunnel

from ._exceptions import ConfigurationError, HostKeyError, SSHAuthError, TunnelError
from ._logjson import event_extra
from ._settings import ENV_PREFIX, SSHSettings

__all__ = [
    "LOCAL_HOST",
    "HostKeyVerifier",
    "PinnedKey",
    "Tunnel",
    "derive_local_port",
    "local_port_candidates",
    "map_tunnel_errors",
    "parse_host_key",
    "read_known_hosts",
    "sha256_fingerprint",
    "translate_error",
]

log = logging.getLogger("dbt_runner.tunnel")
#: sshtunnel's own messages (it logs causes it then does not raise).
sshtunnel_log = logging.getLogger("dbt_runner.tunnel.sshtunnel")

#: The tunnel only ever listens on loopback.
LOCAL_HOST = "127.0.0.1"
#: Derived local ports live here: below Linux's ephemeral range (32768-60999),
#: so an outgoing connection never happens to hold the port we want.
PORT_RANGE = (20000, 30000)
#: Derived candidates tried before an OS-assigned port.
PORT_CANDIDATES = 4
#: Threads (transport, server, handlers) get this long to finish on close.
_JOIN_TIMEOUT_S = 5.0

_SSH = f"{ENV_PREFIX}SSH__"

Stage = Literal["connect", "key", "handshake", "host_key", "auth", "forward", "bind"]


# --------------------------------------------------------------------------- ports
def derive_local_port(
    ssh_host: str, ssh_port: int, ssh_user: str, remote_host: str, remote_port: int
) -> int:
    """A stable local port for one bastion/warehouse pair, in :data:`PORT_RANGE`.

    The same settings always give the same port (in any process), so dbt's
    profile, and with it its partial parse, stays valid from run to run.

    >>> derive_local_port("bastion", 22, "tunnel", "db", 5439) == derive_local_port(
    ...     "bastion", 22, "tunnel", "db", 5439)
    True
    """
    key = "\0".join(
        [ssh_host.lower(), str(ssh_port), ssh_user, remote_host.lower(), str(remote_port)]
    )
    digest = hashlib.sha256(key.encode()).digest()
    low, high = PORT_RANGE
    return low + int.from_bytes(digest[:8], "big") % (high - low)


def local_port_candidates(derived: int, previous: int | None = None) -> list[int]:
    """Ports to try in order: the previous one, the derived one and its next few, then 0 (any).

    >>> local_port_candidates(29999, previous=20005)
    [20005, 29999, 20000, 20001, 20002, 0]
    """
    low, high = PORT_RANGE
    ports = [previous] if previous else []
    for i in range(PORT_CANDIDATES):
        port = low + (derived - low + i) % (high - low)
        if port not in ports:
            ports.append(port)
    return [*ports, 0]


# ------------------------------------------------------------------------ host keys
def sha256_fingerprint(blob: bytes) -> str:
    """OpenSSH's fingerprint of a public key blob: ``SHA256:`` + unpadded base64."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


@dataclasses.dataclass(frozen=True)
class PinnedKey:
    """One acceptable host key: a full public key, or only its SHA256 fingerprint."""

    fingerprint: str
    key_type: str | None = None
    blob: bytes | None = None

    def matches(self, blob: bytes) -> bool:
        """True when the server key ``blob`` is this key."""
        if self.blob is not None:
            return hmac.compare_digest(self.blob, blob)
        return hmac.compare_digest(self.fingerprint, sha256_fingerprint(blob))

    def describe(self) -> str:
        """``"ssh-ed25519 SHA256:..."`` (or just the fingerprint)."""
        return f"{self.key_type} {self.fingerprint}" if self.key_type else self.fingerprint


_KEY_TYPE = re.compile(r"^(ssh|ecdsa|sk)-[A-Za-z0-9@.+-]+$")


def _key_from_fields(key_type: str, b64: str) -> PinnedKey:
    """A :class:`PinnedKey` from ``"ssh-ed25519"``, ``"AAAA..."``; ValueError if inconsistent."""
    try:
        blob = base64.b64decode(b64, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the {key_type} key is not valid base64") from exc
    # A key blob starts with its own type as an SSH string: catches copy/paste slips.
    if len(blob) < 4 or blob[4 : 4 + int.from_bytes(blob[:4], "big")] != key_type.encode():
        raise ValueError(f"the key data does not hold a {key_type} key")
    return PinnedKey(sha256_fingerprint(blob), key_type, blob)


def parse_host_key(value: str) -> PinnedKey:
    """Parse ``SSH__HOST_KEY``: ``"ssh-ed25519 AAAA... [comment]"`` or ``"SHA256:..."``.

    A known_hosts line (``"[host]:port ssh-ed25519 AAAA..."``) is accepted too.
    Raises :class:`~dbt_runner.ConfigurationError` for anything else.

    >>> parse_host_key("SHA256:abc/DEF+123=").fingerprint
    'SHA256:abc/DEF+123'
    """
    text = value.strip()
    if text[:7].upper() == "SHA256:":
        b64 = text[7:].strip().rstrip("=")
        try:
            raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
        except binascii.Error:
            raw = b""
        if len(raw) != hashlib.sha256().digest_size:
            raise ConfigurationError(
                f"{_SSH}HOST_KEY: {text!r} is not a SHA256 fingerprint like "
                "'SHA256:4Kf...' (see: ssh-keygen -lf <host key>.pub)"
            )
        return PinnedKey(f"SHA256:{b64}")
    fields = text.split()
    for i, field in enumerate(fields[:-1]):
        if _KEY_TYPE.match(field):
            try:
                return _key_from_fields(field, fields[i + 1])
            except ValueError as exc:
                raise ConfigurationError(f"{_SSH}HOST_KEY: {exc}") from None
    raise ConfigurationError(
        f"{_SSH}HOST_KEY must be the bastion's public key ('ssh-ed25519 AAAA...', "
        "e.g. the content of /etc/ssh/ssh_host_ed25519_key.pub) or its fingerprint "
        "('SHA256:...')"
    )


def _known_hosts_name(host: str, port: int) -> str:
    """How OpenSSH names a server in known_hosts: ``host``, or ``[host]:port`` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):  # hashed entry: |1|base64(salt)|base64(hmac-sha1(salt, name))
        try:
            _, _, salt_b64, hash_b64 = pattern.split("|")
            salt, expected = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
        except (ValueError, binascii.Error):
            return False
        return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), expected)
    # Only * and ? are wildcards; "[host]:port" brackets are literal.
    regex = re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, name.lower()) is not None


def _host_matches(patterns: str, name: str) -> bool:
    matched = False
    for pattern in patterns.split(","):
        if pattern.startswith("!"):
            if _pattern_matches(pattern[1:], name):
                return False  # a negated match excludes the line
        elif _pattern_matches(pattern, name):
            matched = True
    return matched


def read_known_hosts(path: Path, host: str, port: int) -> tuple[list[PinnedKey], list[PinnedKey]]:
    """The keys a known_hosts file trusts for ``host:port``, and those it marks ``@revoked``.

    Understands hashed names, ``*``/``?`` wildcards, ``!`` negation and the
    ``[host]:port`` form. ``@cert-authority`` lines are ignored.
    """
    name = _known_hosts_name(host, port)
    trusted: list[PinnedKey] = []
    revoked: list[PinnedKey] = []
    with path.expanduser().open(encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, 1):
            if raw.lstrip().startswith("#"):
                continue
            fields = raw.split()
            marker = fields.pop(0) if fields and fields[0].startswith("@") else None
            if len(fields) < 3 or not _host_matches(fields[0], name):
                continue
            try:
                key = _key_from_fields(fields[1], fields[2])
            except ValueError as exc:
                log.debug("known_hosts %s line %d ignored: %s", path, lineno, exc)
                continue
            if marker == "@revoked":
                revoked.append(key)
            elif marker is None:
                trusted.append(key)
    return trusted, revoked


class _HostKeyRejected(Exception):
    """Our verdict on the bastion's host key; :func:`map_tunnel_errors` makes it a HostKeyError."""


# Which host key algorithms to offer for a key type (RSA keys sign with SHA-2 variants).
_ALGORITHMS_FOR_TYPE = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


class HostKeyVerifier:
    """Decides whether the bastion's host key is the expected one (settings -> verdict).

    Built from ``SSH__HOST_KEY`` (a pinned key or fingerprint), ``SSH__KNOWN_HOSTS``
    (read at each connection), or ``SSH__INSECURE_SKIP_HOST_KEY_CHECK``.
    """

    def __init__(self, ssh: SSHSettings) -> None:
        self._ssh = ssh
        self.pinned = parse_host_key(ssh.host_key) if ssh.host_key else None
        self.known_hosts = ssh.known_hosts.expanduser() if ssh.known_hosts else None
        self.insecure = ssh.insecure_skip_host_key_check
        if self.pinned is None and self.known_hosts is None and not self.insecure:
            raise ConfigurationError(
                f"the bastion's host key must be verified: set {_SSH}KNOWN_HOSTS or {_SSH}HOST_KEY"
            )

    def expected(self) -> tuple[list[PinnedKey], list[PinnedKey]]:
        """The trusted and revoked keys for this bastion, right now."""
        trusted = [self.pinned] if self.pinned else []
        revoked: list[PinnedKey] = []
        if self.known_hosts is not None:
            assert self._ssh.host is not None
            file_trusted, revoked = read_known_hosts(
                self.known_hosts, self._ssh.host, self._ssh.port
            )
            trusted += file_trusted
        return trusted, revoked

    def describe(self, trusted: list[PinnedKey]) -> str:
        """The expected keys and where they come from, for messages."""
        source = f"{_SSH}HOST_KEY" if self.known_hosts is None else f"{_SSH}KNOWN_HOSTS"
        if self.known_hosts is not None:
            source += f" ({self.known_hosts})"
        keys = ", ".join(k.describe() for k in trusted) or "no key"
        return f"{keys} from {source}"

    def restrict_algorithms(self, transport: paramiko.Transport, trusted: list[PinnedKey]) -> None:
        """Ask the server for a host key of a type we can check (like OpenSSH does)."""
        if not trusted or any(k.key_type is None for k in trusted):
            return  # a bare fingerprint: any type may match
        wanted: list[str] = []
        for key in trusted:
            assert key.key_type is not None
            wanted += _ALGORITHMS_FOR_TYPE.get(key.key_type, (key.key_type,))
        options = transport.get_security_options()
        offered = [alg for alg in options.key_types if alg in wanted]
        if offered:
            options.key_types = offered

    def verify(
        self, key: paramiko.PKey, trusted: list[PinnedKey], revoked: list[PinnedKey]
    ) -> None:
        """Accept ``key`` or raise (translated to :class:`~dbt_runner.HostKeyError`)."""
        ssh = self._ssh
        assert ssh.host is not None
        blob = key.asbytes()
        seen = f"{key.get_name()} {sha256_fingerprint(blob)}"
        where = f"bastion {ssh.host}:{ssh.port}"
        line = f"{_known_hosts_name(ssh.host, ssh.port)} {key.get_name()} {key.get_base64()}"
        if self.insecure:
            log.warning(
                "%sINSECURE_SKIP_HOST_KEY_CHECK is set: accepting the %s host key %s WITHOUT "
                "verification; pin it with %sHOST_KEY=%s",
                _SSH,
                where,
                seen,
                _SSH,
                sha256_fingerprint(blob),
            )
            return
        if any(k.matches(blob) for k in revoked):
            raise _HostKeyRejected(
                f"the {where} presented host key {seen}, which {_SSH}KNOWN_HOSTS "
                f"({self.known_hosts}) marks @revoked: refusing to connect"
            )
        if any(k.matches(blob) for k in trusted):
            return
        if self.pinned is not None and self.known_hosts is None:
            raise _HostKeyRejected(
                f"host key verification failed: the {where} presented {seen}, but "
                f"{_SSH}HOST_KEY pins {self.pinned.describe()}. Someone may be intercepting "
                "the connection; if the bastion's key was really changed, check the new "
                f"fingerprint out of band and update {_SSH}HOST_KEY"
            )
        sources = f"{_SSH}KNOWN_HOSTS ({self.known_hosts})"
        if self.pinned is not None:
            sources += f" or {_SSH}HOST_KEY"
        if not trusted:
            raise _HostKeyRejected(
                f"the {where} is unknown: no key for {_known_hosts_name(ssh.host, ssh.port)} in "
                f"{sources}. It presented {seen}; after checking that fingerprint out of band, "
                f"add this line to the known_hosts file: {line}"
            )
        expected = ", ".join(k.describe() for k in trusted)
        raise _HostKeyRejected(
            f"host key verification failed: the {where} presented {seen}, but {sources} "
            f"expects {expected}. Someone may be intercepting the connection; if the bastion's "
            f"key was really changed, check it out of band and replace the entry with: {line}"
        )


# --------------------------------------------------------------------------- errors
@dataclasses.dataclass
class _Attempt:
    """What one open() is doing, for error messages (no secrets in here)."""

    host: str
    port: int
    user: str
    remote: str
    timeout_s: float
    key_path: str | None
    local_ports: list[int] = dataclasses.field(default_factory=list)
    captured: list[BaseException] = dataclasses.field(default_factory=list)
    expected_host_keys: str = ""  # "ssh-ed25519 SHA256:... (from ...)", once known


def translate_error(exc: BaseException, attempt: _Attempt, stage: Stage) -> TunnelError | None:
    """The TunnelError (or subclass) for ``exc`` raised during ``stage``; None = not ours."""
    bastion = f"the bastion {attempt.host}:{attempt.port}"
    check_addr = f"check {_SSH}HOST/PORT"
    key = f"{_SSH}PRIVATE_KEY ({attempt.key_path})" if attempt.key_path else "the offered keys"

    if isinstance(exc, _HostKeyRejected | paramiko.BadHostKeyException):
        return HostKeyError(str(exc))
    if stage == "host_key" and isinstance(exc, OSError):
        return HostKeyError(f"cannot read {_SSH}KNOWN_HOSTS: {exc}")
    if isinstance(exc, paramiko.SSHException) and "no acceptable host key" in str(exc):
        # we asked only for the key types we can verify, and the bastion has none of them
        return HostKeyError(
            f"host key verification failed: {bastion} has no host key of the type we "
            f"expect ({attempt.expected_host_keys or 'see settings'}). Its key was probably "
            "replaced: check the new one out of band and update the known_hosts entry / "
            f"{_SSH}HOST_KEY"
        )
    # cryptography (under PKey.from_path) says "password-protected" with a TypeError
    if isinstance(exc, paramiko.PasswordRequiredException) or (
        stage == "key" and isinstance(exc, TypeError) and "password" in str(exc).lower()
    ):
        return SSHAuthError(f"{key} is encrypted: set {_SSH}PRIVATE_KEY_PASSPHRASE")
    if stage == "key" and isinstance(exc, paramiko.AuthenticationException):
        return SSHAuthError(f"no SSH key to offer ({exc}): set {_SSH}PRIVATE_KEY")
    if stage == "key" and isinstance(exc, paramiko.SSHException | ValueError | OSError):
        return SSHAuthError(
            f"cannot load {key}: wrong {_SSH}PRIVATE_KEY_PASSPHRASE, or not an OpenSSH/PEM "
            f"private key ({_describe(exc)})"
        )
    if isinstance(exc, paramiko.BadAuthenticationType):
        allowed = ", ".join(exc.allowed_types) or "none"
        return SSHAuthError(
            f"{bastion} does not accept public-key logins for user {attempt.user!r} "
            f"(it allows: {allowed}); check {_SSH}USER"
        )
    if isinstance(exc, paramiko.AuthenticationException):
        text = str(exc).lower()
        if "timeout" in text or "transport shut down" in text or "eof" in text:
            return TunnelError(
                f"{bastion} stopped answering during authentication "
                f"({_describe(exc)}): a network problem, retry"
            )
        return SSHAuthError(
            f"{bastion} refused the key {key} for user {attempt.user!r}: add its public key to "
            f"that user's authorized_keys on the bastion, or fix {_SSH}USER / {_SSH}PRIVATE_KEY"
        )
    if isinstance(exc, paramiko.ChannelException) or (
        stage == "forward" and isinstance(exc, paramiko.SSHException | OSError | EOFError)
    ):
        return TunnelError(
            f"{bastion} could not open a connection to the warehouse {attempt.remote}: "
            f"{_describe(exc)}. Check {ENV_PREFIX}WAREHOUSE__HOST/PORT, and that the bastion "
            "can reach it and allows TCP forwarding (AllowTcpForwarding / PermitOpen)"
        )
    if isinstance(exc, sshtunnel.BaseSSHTunnelForwarderError) or (
        stage == "bind" and isinstance(exc, OSError)
    ):
        ports = ", ".join(str(p) for p in attempt.local_ports) or "?"
        cause = attempt.captured[-1] if attempt.captured else exc
        return TunnelError(
            f"could not listen on {LOCAL_HOST} for the tunnel (tried ports {ports}): "
            f"{_describe(cause)}; unset {_SSH}LOCAL_PORT to let dbt_runner choose a free port"
        )
    if isinstance(exc, socket.gaierror):
        return TunnelError(f"cannot resolve the bastion host {attempt.host!r}: {exc}; {check_addr}")
    if isinstance(exc, ConnectionRefusedError):
        return TunnelError(
            f"{bastion} refused the connection (nothing listens there?); {check_addr}"
        )
    if isinstance(exc, TimeoutError):
        return TunnelError(
            f"no answer from {bastion} within {attempt.timeout_s:g}s ({_describe(exc)}); "
            f"{check_addr}, firewalls, or raise {_SSH}CONNECT_TIMEOUT_S"
        )
    if isinstance(exc, OSError):
        return TunnelError(f"cannot connect to {bastion}: {_describe(exc)}; {check_addr}")
    if isinstance(exc, EOFError | paramiko.SSHException):
        return TunnelError(
            f"the SSH handshake with {bastion} failed: {_describe(exc)}; is it an SSH server? "
            f"{check_addr}"
        )
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ChannelException):  # str() is its args tuple
        return f"{exc.text} (SSH channel open failure {exc.code})"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def map_tunnel_errors(attempt: _Attempt, stage: Stage) -> Iterator[None]:
    """The one seam: re-raise socket/paramiko/sshtunnel errors as our own, cause attached."""
    try:
        yield
    except TunnelError:
        raise
    except Exception as exc:
        mapped = translate_error(exc, attempt, stage)
        if mapped is None:
            raise
        cause: BaseException = exc
        if isinstance(exc, sshtunnel.BaseSSHTunnelForwarderError) and attempt.captured:
            cause = attempt.captured[-1]  # sshtunnel logged the real one and raised a generic one
        raise mapped from cause


# -------------------------------------------------------------------------- sockets
def _set_nodelay(sock: socket.socket) -> None:
    if hasattr(socket, "TCP_NODELAY"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _QuickAckSocket(socket.socket):
    """A socket that re-arms ``TCP_QUICKACK`` after each read (Linux clears it by itself).

    The bastion may send with Nagle on (OpenSSH's sshd did here, for a
    forwarding-only connection), so its next small packet waits for our ACK,
    which Linux delays (delayed ACK). Measured with redshift_connector on loopback
    (benchmarks/tunnel_latency.py): NODELAY on both legs alone 4.6 ms per
    ``select 1``, with QUICKACK re-armed 0.4 ms.
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        with contextlib.suppress(OSError):
            self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data


#: Module switches for the latency benchmark; leave them on.
TUNE_NODELAY = True
TUNE_QUICKACK = hasattr(socket, "TCP_QUICKACK")


def _set_keepalive(sock: socket.socket, interval_s: float) -> None:
    """Let the kernel notice a dead network too (not only paramiko's keepalive packets).

    ``TCP_USER_TIMEOUT``: data (e.g. paramiko's keepalive) unacknowledged for
    4 keepalive intervals drops the connection, so :meth:`Tunnel.is_healthy`
    turns False instead of the TCP connection hanging for ~15 minutes.
    """
    options = [
        (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
        (socket.IPPROTO_TCP, "TCP_KEEPIDLE", max(1, int(interval_s))),
        (socket.IPPROTO_TCP, "TCP_KEEPINTVL", max(1, int(interval_s))),
        (socket.IPPROTO_TCP, "TCP_KEEPCNT", 3),
        (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", int(max(30.0, 4 * interval_s) * 1000)),
    ]
    for level, name, value in options:
        if hasattr(socket, name):  # Linux has them all; others some
            with contextlib.suppress(OSError):
                sock.setsockopt(level, getattr(socket, name), value)


def _connect_socket(
    host: str, port: int, timeout: float, tune: bool, keepalive_s: float
) -> socket.socket:
    """A connected TCP socket to the bastion (each address tried within the overall timeout)."""
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    cls = _QuickAckSocket if tune and TUNE_QUICKACK else socket.socket
    for family, type_, proto, _, address in infos[:8]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = cls(family, type_, proto)
        try:
            sock.settimeout(remaining)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        if tune and TUNE_NODELAY:
            _set_nodelay(sock)
        _set_keepalive(sock, keepalive_s)
        return sock
    raise last or TimeoutError(f"timed out connecting to {host}:{port}")


# ------------------------------------------------------------------------ forwarder
class _Forwarder(sshtunnel.SSHTunnelForwarder):  # type: ignore[misc]
    """sshtunnel's forwarder on top of a transport we connected and verified ourselves."""

    def __init__(
        self,
        transport: paramiko.Transport,
        pkey: paramiko.PKey,
        ssh: SSHSettings,
        remote: tuple[str, int],
        ports: list[int],
        attempt: _Attempt,
        tune: bool,
    ) -> None:
        self._ready_transport = transport
        self._ports = ports
        self._attempt = attempt
        self._tune = tune
        self.servers: list[Any] = []  # our forward server(s), to join their threads on close
        super().__init__(
            ssh_address_or_host=(ssh.host, ssh.port),
            ssh_config_file=None,  # no ~/.ssh/config
            ssh_username=ssh.user,
            ssh_pkey=pkey,  # required by sshtunnel's checks; auth already happened
            allow_agent=False,
            host_pkey_directories=[],  # no ~/.ssh scanning
            remote_bind_address=remote,
            local_bind_address=(LOCAL_HOST, ports[0]),
            set_keepalive=ssh.keepalive_s,
            threaded=True,
            compression=False,
            logger=sshtunnel_log,
        )

    def _connect_to_gateway(self) -> None:  # sshtunnel hook: "open the SSH connection"
        self._transport = self._ready_transport

    def _make_ssh_forward_server_class(self, remote_address: tuple[str, int]) -> type[Any]:
        base: type[Any] = super()._make_ssh_forward_server_class(remote_address)
        forwarder = self

        class _Server(base):  # type: ignore[misc]
            def server_bind(self) -> None:
                # Stable port first, then fallbacks; listen() right away so two
                # processes binding the same free port (SO_REUSEADDR) cannot both win.
                server: Any = self  # socketserver attributes, untyped through sshtunnel
                for port in forwarder._ports:
                    server.server_address = (LOCAL_HOST, port)
                    try:
                        super().server_bind()
                        server.socket.listen(server.request_queue_size)
                    except OSError as exc:
                        forwarder._attempt.captured.append(exc)
                        log.debug("local port %s unavailable: %s", port, exc)
                        server.socket.close()
                        server.socket = socket.socket(server.address_family, server.socket_type)
                        continue
                    forwarder.servers.append(self)
                    return
                raise forwarder._attempt.captured[-1]

            def get_request(self) -> tuple[socket.socket, Any]:
                sock, address = super().get_request()
                if forwarder._tune and TUNE_NODELAY:
                    _set_nodelay(sock)  # the dbt <-> tunnel leg
                return sock, address

            def serve_forever(self, poll_interval: float = 0.5) -> None:
                self.serve_thread = threading.current_thread()
                super().serve_forever(poll_interval)

            handler_threads: set[threading.Thread] = set()  # noqa: RUF012 (one class per server)

            def process_request_thread(self, request: Any, client_address: Any) -> None:
                self.handler_threads.add(threading.current_thread())
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    self.handler_threads.discard(threading.current_thread())

        return _Server


class _QuietStopFilter(logging.Filter):
    """Drop sshtunnel's "not started" warnings when we stop a forwarder whose SSH link died."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and "not started" in str(record.msg))


sshtunnel_log.addFilter(_QuietStopFilter())
# sshtunnel's INFO lines ("Connecting to gateway", "0 key(s) loaded") describe a
# connection it no longer makes; ours say what happens. Lower it to see them.
sshtunnel_log.setLevel(logging.WARNING)


# --------------------------------------------------------------------------- tunnel
class Tunnel:
    """An SSH tunnel from ``127.0.0.1:local_port`` through the bastion to ``remote``.

    ``open()`` connects, verifies the bastion's host key, authenticates and
    starts forwarding; ``ensure_open()`` re-opens a dropped tunnel on the same
    local port; ``close()`` stops everything (idempotent). Also a context manager.

    >>> with Tunnel(settings.ssh, "warehouse.internal", 5439) as tunnel:  # doctest: +SKIP
    ...     dsn = f"host={tunnel.local_host} port={tunnel.local_port} ..."
    """

    local_host: str
    local_port: int

    def __init__(
        self, ssh: SSHSettings, remote_host: str, remote_port: int, *, tune_tcp: bool = True
    ) -> None:
        """Prepare (nothing connects yet). ``tune_tcp=False`` disables the latency tuning."""
        if not ssh.host or not ssh.user:
            raise ConfigurationError(f"a tunnel needs {_SSH}HOST and {_SSH}USER")
        self._ssh = ssh
        self._remote = (remote_host, remote_port)
        self._tune = tune_tcp
        self._verifier = HostKeyVerifier(ssh)  # parses SSH__HOST_KEY now: fail early
        self._derived_port = derive_local_port(ssh.host, ssh.port, ssh.user, *self._remote)
        self._lock = threading.RLock()
        self._pkey: paramiko.PKey | None = None
        self._transport: paramiko.Transport | None = None
        self._forwarder: _Forwarder | None = None
        self._agent: paramiko.Agent | None = None
        self.local_host = LOCAL_HOST
        self.local_port = 0

    def __repr__(self) -> str:
        state = "open" if self._forwarder is not None else "closed"
        local = f" local={self.local_host}:{self.local_port}" if self.local_port else ""
        return (
            f"<Tunnel {self._ssh.user}@{self._ssh.host}:{self._ssh.port} -> "
            f"{self._remote[0]}:{self._remote[1]}{local} {state}>"
        )

    # -- public -----------------------------------------------------------------
    def open(self) -> None:
        """Connect and start forwarding; a no-op when already open and healthy.

        Raises :class:`~dbt_runner.TunnelError` (bastion unreachable),
        :class:`~dbt_runner.HostKeyError` or :class:`~dbt_runner.SSHAuthError`,
        with the original exception as ``__cause__``.
        """
        with self._lock:
            if self.is_healthy():
                return
            self._teardown()
            self._open()

    def is_healthy(self) -> bool:
        """True while the SSH transport is up and the local forwarder is serving."""
        transport, forwarder = self._transport, self._forwarder
        return (
            transport is not None
            and forwarder is not None
            and transport.is_active()
            and transport.is_authenticated()
            and bool(forwarder.is_alive)
        )

    def ensure_open(self) -> bool:
        """Re-open the tunnel if it died (or was never opened); True when it (re-)opened.

        The local port stays the same whenever it is still free, so dbt's profile
        and partial parse stay valid.
        """
        with self._lock:
            if self.is_healthy():
                return False
            was_open = self._forwarder is not None
            previous = self.local_port
            self._teardown()
            self._open()
            if was_open:
                log.warning(
                    "tunnel re-opened (the SSH connection to %s:%s had dropped): %s:%s%s",
                    self._ssh.host,
                    self._ssh.port,
                    self.local_host,
                    self.local_port,
                    "" if self.local_port == previous else f" (was port {previous})",
                    extra=event_extra(
                        "tunnel_reopen",
                        local_port=self.local_port,
                        previous_port=previous,
                        bastion=f"{self._ssh.host}:{self._ssh.port}",
                    ),
                )
            return True

    def close(self) -> None:
        """Stop forwarding and close the SSH connection; safe to call twice."""
        with self._lock:
            was_open = self._forwarder is not None
            self._teardown()
        if was_open:
            log.info(
                "tunnel closed: %s:%s",
                self.local_host,
                self.local_port,
                extra=event_extra(
                    "tunnel_close",
                    local_port=self.local_port,
                    bastion=f"{self._ssh.host}:{self._ssh.port}",
                ),
            )

    def __enter__(self) -> Tunnel:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------
    def _open(self) -> None:
        ssh = self._ssh
        assert ssh.host is not None and ssh.user is not None
        attempt = _Attempt(
            host=ssh.host,
            port=ssh.port,
            user=ssh.user,
            remote=f"{self._remote[0]}:{self._remote[1]}",
            timeout_s=ssh.connect_timeout_s,
            key_path=str(ssh.private_key) if ssh.private_key else None,
        )
        if ssh.local_port is not None:
            attempt.local_ports = [ssh.local_port]  # explicit: exactly that one (0 = any)
        else:
            attempt.local_ports = local_port_candidates(self._derived_port, self.local_port or None)
        transport: paramiko.Transport | None = None
        try:
            with map_tunnel_errors(attempt, "key"):
                keys = self._keys()
            transport, pkey = self._connect(attempt, keys)
            self._transport = transport
            with map_tunnel_errors(attempt, "bind"):
                forwarder = _Forwarder(
                    transport, pkey, ssh, self._remote, attempt.local_ports, attempt, self._tune
                )
                self._forwarder = forwarder
                forwarder.start()
                self.local_port = int(forwarder.local_bind_port)
        except BaseException:
            self._teardown()
            raise
        if attempt.local_ports[0] not in (0, self.local_port):
            log.info("local port %s was taken: using %s", attempt.local_ports[0], self.local_port)
        log.info(
            "tunnel open: %s:%s -> %s@%s:%s -> %s",
            self.local_host,
            self.local_port,
            ssh.user,
            ssh.host,
            ssh.port,
            attempt.remote,
            extra=event_extra(
                "tunnel_open",
                local_host=self.local_host,
                local_port=self.local_port,
                bastion=f"{ssh.user}@{ssh.host}:{ssh.port}",
                remote=attempt.remote,
            ),
        )

    def _keys(self) -> list[paramiko.PKey]:
        """Keys to offer: the configured one, then (opt-in) the agent's and ~/.ssh's."""
        ssh = self._ssh
        keys: list[paramiko.PKey] = []
        if ssh.private_key is not None:
            if self._pkey is None:  # decrypt once per Tunnel, not per re-open
                secret = ssh.private_key_passphrase
                # bytes: PKey.from_path hands it to cryptography, which wants bytes
                # (the stubs say str).
                passphrase: Any = secret.get_secret_value().encode() if secret else None
                self._pkey = paramiko.PKey.from_path(ssh.private_key.expanduser(), passphrase)
            keys.append(self._pkey)
        if ssh.allow_agent:
            self._agent = paramiko.Agent()
            keys += list(self._agent.get_keys())
        if ssh.look_for_keys:
            for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
                path = Path("~/.ssh", name).expanduser()
                if path.is_file():
                    try:
                        keys.append(paramiko.PKey.from_path(path))
                    except (paramiko.SSHException, ValueError, OSError) as exc:
                        log.debug("skipping %s: %s", path, type(exc).__name__)
        if not keys:
            raise paramiko.AuthenticationException("no key to offer (agent and ~/.ssh empty)")
        return keys

    def _connect(
        self, attempt: _Attempt, keys: list[paramiko.PKey]
    ) -> tuple[paramiko.Transport, paramiko.PKey]:
        """TCP connect, SSH handshake, host key check, authentication, forward check."""
        ssh = self._ssh
        assert ssh.host is not None and ssh.user is not None
        timeout = ssh.connect_timeout_s
        with map_tunnel_errors(attempt, "connect"):
            sock = _connect_socket(ssh.host, ssh.port, timeout, self._tune, ssh.keepalive_s)
        transport: paramiko.Transport | None = None
        try:
            with map_tunnel_errors(attempt, "host_key"):
                trusted, revoked = self._verifier.expected()
                attempt.expected_host_keys = self._verifier.describe(trusted)
            with map_tunnel_errors(attempt, "handshake"):
                transport = paramiko.Transport(sock)
                transport.daemon = True
                transport.banner_timeout = timeout
                transport.handshake_timeout = timeout
                transport.auth_timeout = timeout
                self._verifier.restrict_algorithms(transport, trusted)
                transport.start_client(timeout=timeout)
                if not transport.is_active():
                    raise paramiko.SSHException("the bastion closed the connection")
                try:
                    server_key = transport.get_remote_server_key()
                except paramiko.SSHException as exc:  # still negotiating: timed out
                    raise TimeoutError(f"SSH handshake not done after {timeout:g}s") from exc
            # Verified before authenticating or opening any channel.
            with map_tunnel_errors(attempt, "host_key"):
                self._verifier.verify(server_key, trusted, revoked)
            with map_tunnel_errors(attempt, "auth"):
                pkey = self._authenticate(transport, keys)
            transport.set_keepalive(max(1, math.ceil(ssh.keepalive_s)))
            with map_tunnel_errors(attempt, "forward"):
                self._check_forward(transport, timeout)
        except BaseException:
            if transport is not None:
                _close_transport(transport)
            sock.close()
            raise
        return transport, pkey

    def _authenticate(
        self, transport: paramiko.Transport, keys: list[paramiko.PKey]
    ) -> paramiko.PKey:
        assert self._ssh.user is not None
        error: paramiko.AuthenticationException | None = None
        for pkey in keys[:16]:  # bounded: sshd's MaxAuthTries is 6 by default anyway
            try:
                transport.auth_publickey(self._ssh.user, pkey)
            except paramiko.BadAuthenticationType:
                raise
            except paramiko.AuthenticationException as exc:
                error = exc
                if not transport.is_active():
                    break
                continue
            if transport.is_authenticated():
                return pkey
        raise error or paramiko.AuthenticationException("Authentication failed.")

    def _check_forward(self, transport: paramiko.Transport, timeout: float) -> None:
        """Can the bastion reach the warehouse? (opens and closes one channel, no data)."""
        channel = transport.open_channel(
            "direct-tcpip", dest_addr=self._remote, src_addr=(LOCAL_HOST, 0), timeout=timeout
        )
        channel.close()

    def _teardown(self) -> None:
        forwarder, self._forwarder = self._forwarder, None
        transport, self._transport = self._transport, None
        agent, self._agent = self._agent, None
        threads: list[threading.Thread] = []
        if forwarder is not None:
            for server in forwarder.servers:
                serve_thread: threading.Thread | None = getattr(server, "serve_thread", None)
                threads += [serve_thread] if serve_thread is not None else []
                threads += list(server.handler_threads)
            try:
                forwarder.stop(force=True)
            except Exception as exc:  # never let cleanup hide the real error
                log.debug("forwarder stop: %s", _describe(exc))
            for server in forwarder.servers:  # stop() skips servers when the link died
                with contextlib.suppress(Exception):
                    server.server_close()
        if transport is not None:
            _close_transport(transport)
            threads.append(transport)
        if agent is not None:
            agent.close()
        _join_all(threads)


def _close_transport(transport: paramiko.Transport) -> None:
    transport.close()
    if transport.is_alive() and transport is not threading.current_thread():
        transport.join(_JOIN_TIMEOUT_S)


def _join_all(threads: list[threading.Thread], timeout: float = _JOIN_TIMEOUT_S) -> None:
    """Join threads with one overall deadline."""
    deadline = time.monotonic() + timeout
    current = threading.current_thread()
    for thread in threads:
        if thread is current or not thread.is_alive():
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
