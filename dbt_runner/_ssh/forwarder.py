"""The local forward server: accepted connections <-> SSH channels to the warehouse.

The only module that touches sshtunnel's private hooks (the reason for its
``<0.5.2`` pin) and the place of the socket tuning of both forwarded legs.

sshtunnel hooks overridden on :class:`Forwarder`:

- ``_connect_to_gateway``: use the transport the tunnel already connected,
  verified and authenticated (see :mod:`dbt_runner._tunnel`);
- ``_make_ssh_forward_server_class``: bind the stable local port (with
  fallbacks), ``TCP_NODELAY`` on accepted sockets, track handler threads;
- ``_make_ssh_forward_handler_class``: :class:`ForwardHandler` instead of
  sshtunnel's ``_ForwardHandler``.

Why our own handler (the root cause of the mid-cycle tunnel drops, issue 11):
sshtunnel's handler ``select()``s on ``Channel.fileno()``. That call makes
paramiko create an OS pipe that the channel's receive buffer "sets" (writes a
byte to) from the **transport thread** whenever data arrives, while
``Channel.close()`` in the **handler thread** closes that same pipe. The two
are not under one lock (paramiko issue #2271): when data arrives just as the
handler closes the channel — with TLS to the warehouse this is the normal end
of every connection, the server's ``close_notify`` landing right after the
client's EOF — the transport thread writes to a descriptor that was just
closed. It gets ``EBADF``, which paramiko treats as a dead socket: the whole
SSH connection drops ("Socket exception: Bad file descriptor (9)", then "SSH
session not active" for every new connection). When the number was already
reused, the byte lands in someone else's socket instead. Under CPU load this
hit most cycles.

:class:`ForwardHandler` never calls ``fileno()``, so no pipe exists: each
direction is pumped by a thread doing plain blocking ``recv``/``sendall``,
and every descriptor has exactly one owner.

Who owns and closes what (every socket, channel and pipe of a tunnel):

- **SSH socket** (TCP to the bastion): made by ``_tunnel._connect_socket``;
  owned by the ``paramiko.Transport``, which alone closes it
  (``Transport.close()``, called by ``Tunnel._teardown`` or by paramiko when
  the link dies). Nothing else touches it after the handshake. paramiko
  closes it from the calling thread while its own thread may still be polling
  it; ``Tunnel._teardown`` joins the transport thread before anything new is
  opened (a failed ``open()`` closes the transport, then the socket object:
  the second close is a no-op on the same object).
- **Listening socket**: owned by the forward server; closed once by
  ``server_close()`` in ``Tunnel._teardown`` after ``shutdown()`` stopped its
  serve thread. A failed bind closes its own socket before the next port.
- **Accepted client socket** (dbt <-> tunnel): owned by its handler thread
  (socketserver's ``process_request_thread``). The pump thread only does
  ``recv``/``sendall``/``shutdown`` on it while the handler thread waits for
  the pump; socketserver's ``shutdown_request()`` closes it once, in the
  handler thread, after ``handle()`` returned, i.e. after the pump exited. No
  other thread ever closes it, so no close can hit a reused number.
- **SSH channel**: opened and closed by the handler thread (``Channel.close``
  once, in ``handle``'s ``finally``). The transport thread only feeds its
  buffers; with no ``fileno()`` call there is no pipe for it to write to.
- **Channel pipes**: none are created (nothing calls ``Channel.fileno()``;
  ``Tunnel._check_forward`` opens and closes one channel without it).
- **Threads**: the serve thread, one handler thread per connection and its
  pump thread; ``Tunnel._teardown`` closes the transport first (every channel
  closes, each pump ends, each handler follows) and joins them all.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import socket
import threading
import time
from typing import Any, Literal

import paramiko
import sshtunnel

from .._settings import SSHSettings

__all__ = [
    "LOCAL_HOST",
    "TUNE_NODELAY",
    "TUNE_QUICKACK",
    "ChannelOpenFailure",
    "ForwardHandler",
    "Forwarder",
    "connect_socket",
]

log = logging.getLogger("dbt_runner.tunnel")
#: sshtunnel's own messages (it logs causes it then does not raise).
sshtunnel_log = logging.getLogger("dbt_runner.tunnel.sshtunnel")

#: The tunnel only ever listens on loopback.
LOCAL_HOST = "127.0.0.1"
#: Bytes per read on either leg.
_CHUNK = 32768
#: After the client's EOF, how long the server may take to finish (e.g. TLS close_notify).
_DRAIN_S = 5.0
#: A new channel must open within this long (sshtunnel's TUNNEL_TIMEOUT).
_CHANNEL_TIMEOUT_S = 10.0
#: Channel-open failures a tunnel remembers (the latest ones).
MAX_CHANNEL_FAILURES = 64


@dataclasses.dataclass(frozen=True)
class ChannelOpenFailure:
    """The bastion did not open a forwarded connection to the warehouse.

    ``reason``: ``refused`` (the bastion answered no: ``code`` is the SSH
    channel-open failure code, 1 administratively prohibited, 2 connect
    failed...), ``timeout`` (no answer in time) or ``session`` (the SSH
    session itself was gone).
    """

    reason: Literal["refused", "timeout", "session"]
    code: int | None
    text: str
    #: ``time.time()`` of the failure
    at: float

    def __str__(self) -> str:
        code = f" (SSH channel open failure {self.code})" if self.code is not None else ""
        return f"{self.reason}: {self.text}{code}"


def channel_failure(exc: BaseException) -> ChannelOpenFailure:
    """The value of a failed ``open_channel`` call."""
    if isinstance(exc, paramiko.ChannelException):
        return ChannelOpenFailure("refused", exc.code, exc.text, time.time())
    if isinstance(exc, paramiko.SSHException) and "timeout" in str(exc).lower():
        return ChannelOpenFailure("timeout", None, str(exc), time.time())
    return ChannelOpenFailure("session", None, f"{type(exc).__name__}: {exc}", time.time())


# ---------------------------------------------------------------------- a connection
class ForwardHandler(sshtunnel._ForwardHandler):  # type: ignore[misc]
    """One forwarded connection: client socket <-> SSH channel, one thread per direction.

    The handler thread opens the channel, starts a pump thread for
    channel -> client, and itself pumps client -> channel. EOF travels both
    ways (``Channel.shutdown_write`` / ``socket.shutdown(SHUT_WR)``); a channel
    closed by the far end or by a dead transport ends both directions. The
    handler thread waits for the pump before anything is closed; see the
    module docstring for who owns what.
    """

    remote_address: tuple[str, int]
    ssh_transport: paramiko.Transport
    logger: logging.Logger
    channel_failures: collections.deque[ChannelOpenFailure]

    def handle(self) -> None:
        client: socket.socket = self.request
        try:
            chan = self.ssh_transport.open_channel(
                kind="direct-tcpip",
                dest_addr=self.remote_address,
                src_addr=client.getpeername(),
                timeout=_CHANNEL_TIMEOUT_S,
            )
        except Exception as exc:
            failure = channel_failure(exc)
            self.channel_failures.append(failure)
            log.error(
                "the bastion did not open a forwarded connection to %s:%s: %s",
                *self.remote_address,
                failure,
            )
            return  # socketserver closes the client socket: dbt sees the connection end
        pump = threading.Thread(
            target=_channel_to_client,
            args=(chan, client),
            name=f"{threading.current_thread().name}-pump",
            daemon=True,
        )
        pump.start()
        clean_eof = False
        try:
            clean_eof = _client_to_channel(client, chan)
        finally:
            if clean_eof:
                # The client is done: let the server's last bytes (its TLS
                # close_notify, say) through before both legs end.
                pump.join(_DRAIN_S)
            chan.close()  # wakes a pump blocked in chan.recv
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in sendall
            # Both of the pump's blocking calls are now woken: this join ends. Only
            # then may socketserver close the client socket (in this thread).
            pump.join()


def _client_to_channel(client: socket.socket, chan: paramiko.Channel) -> bool:
    """Forward until the client's EOF and pass the EOF on; False when a side broke off."""
    try:
        while True:
            data = client.recv(_CHUNK)
            if not data:
                break
            chan.sendall(data)
    except (OSError, EOFError, paramiko.SSHException):
        return False  # reset by the client, or the channel closed under us
    if chan.closed:
        return False
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        chan.shutdown_write()
    return True


def _channel_to_client(chan: paramiko.Channel, client: socket.socket) -> None:
    """Forward until the server's EOF (or the channel closes), then pass it on."""
    try:
        while True:
            data = chan.recv(_CHUNK)
            if not data:
                break
            client.sendall(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass
    # EOF only: the client may still send (half-close). A closed channel
    # (far end gone, transport dead): nothing more can pass either way.
    how = socket.SHUT_RDWR if chan.closed else socket.SHUT_WR
    with contextlib.suppress(OSError):
        client.shutdown(how)


# --------------------------------------------------------------------------- sockets
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


def connect_socket(
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
class Forwarder(sshtunnel.SSHTunnelForwarder):  # type: ignore[misc]
    """sshtunnel's forwarder on top of a transport we connected and verified ourselves."""

    def __init__(
        self,
        transport: paramiko.Transport,
        pkey: paramiko.PKey,
        ssh: SSHSettings,
        remote: tuple[str, int],
        ports: list[int],
        captured: list[BaseException],
        tune: bool,
    ) -> None:
        self._ready_transport = transport
        self._ports = ports
        self._captured = captured  # bind errors, for the tunnel's error message
        self._tune = tune
        #: the bastion's refusals to open a forwarded connection, latest last
        self.channel_failures: collections.deque[ChannelOpenFailure] = collections.deque(
            maxlen=MAX_CHANNEL_FAILURES
        )
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

    def _make_ssh_forward_handler_class(self, remote_address: tuple[str, int]) -> type[Any]:
        # sshtunnel hook: the per-connection handler. Ours never calls Channel.fileno().
        class _Handler(ForwardHandler):
            pass

        _Handler.remote_address = remote_address
        _Handler.ssh_transport = self._transport
        _Handler.logger = self.logger
        _Handler.channel_failures = self.channel_failures
        return _Handler

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
                        forwarder._captured.append(exc)
                        log.debug("local port %s unavailable: %s", port, exc)
                        server.socket.close()
                        server.socket = socket.socket(server.address_family, server.socket_type)
                        continue
                    forwarder.servers.append(self)
                    return
                raise forwarder._captured[-1]

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
