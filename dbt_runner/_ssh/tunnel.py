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

The package :mod:`dbt_runner._ssh`, one concern a module:

- :mod:`~dbt_runner._ssh.hostkeys`: is the bastion's host key the expected one
  (pure, no sockets);
- :mod:`~dbt_runner._ssh.forwarder`: the local forward server on sshtunnel's
  private hooks (pinned ``<0.5.2``), the per-connection pumps, socket tuning,
  the written-down owner of every socket, channel and pipe, and the
  bastion's channel-open refusals as values;
- :mod:`~dbt_runner._ssh.errors`: the one mapping of SSH failures to ours;
- this module: local ports, the SSH connection (connect, handshake, host-key
  check, authentication, forward check) and :class:`Tunnel`.

We make the SSH connection ourselves instead of letting sshtunnel make it:
sshtunnel could not verify a fingerprint pin, nor verify before
authenticating, nor report why it failed.

Errors from socket, paramiko and sshtunnel are translated in one place,
:func:`~dbt_runner._ssh.errors.map_tunnel_errors`, into :class:`~dbt_runner.TunnelError`
(transient),
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

import collections
import contextlib
import hashlib
import logging
import math
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko

from .._exceptions import ConfigurationError
from .._settings import ENV_PREFIX, SSHSettings
from ..logging import event_extra
from .errors import _describe, _OpenAttempt, map_tunnel_errors
from .forwarder import (
    LOCAL_HOST,
    MAX_CHANNEL_FAILURES,
    ChannelOpenFailure,
    Forwarder,
    connect_socket,
)
from .hostkeys import HostKeyVerifier

__all__ = [
    "LOCAL_HOST",
    "PORT_RANGE",
    "Tunnel",
    "derive_local_port",
    "local_port_candidates",
]

log = logging.getLogger("dbt_runner.tunnel")

#: Derived local ports live here: below Linux's ephemeral range (32768-60999),
#: so an outgoing connection never happens to hold the port we want.
PORT_RANGE = (20000, 30000)
#: Derived candidates tried before an OS-assigned port.
PORT_CANDIDATES = 4
#: Threads (transport, server, handlers) get this long to finish on close.
_JOIN_TIMEOUT_S = 5.0

_SSH = f"{ENV_PREFIX}SSH__"


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
        self._forwarder: Forwarder | None = None
        self._agent: paramiko.Agent | None = None
        self._channel_failures: collections.deque[ChannelOpenFailure] = collections.deque(
            maxlen=MAX_CHANNEL_FAILURES
        )
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

    @property
    def channel_failures(self) -> list[ChannelOpenFailure]:
        """The bastion's latest refusals to open a forwarded connection (oldest first)."""
        return list(self._channel_failures)

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
        attempt = _OpenAttempt(
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
                forwarder = Forwarder(
                    transport,
                    pkey,
                    ssh,
                    self._remote,
                    attempt.local_ports,
                    attempt.captured,
                    self._tune,
                )
                forwarder.channel_failures = self._channel_failures  # kept across re-opens
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
        self, attempt: _OpenAttempt, keys: list[paramiko.PKey]
    ) -> tuple[paramiko.Transport, paramiko.PKey]:
        """TCP connect, SSH handshake, host key check, authentication, forward check."""
        ssh = self._ssh
        assert ssh.host is not None and ssh.user is not None
        timeout = ssh.connect_timeout_s
        with map_tunnel_errors(attempt, "connect"):
            sock = connect_socket(ssh.host, ssh.port, timeout, self._tune, ssh.keepalive_s)
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
