"""A loopback TCP proxy that adds a fixed round-trip time, for the benchmarks' latency mode.

Production puts tens of milliseconds between the bastion and the warehouse;
loopback has microseconds, which hides what connection opens and statement
round trips cost. ``DelayProxy(upstream, rtt_ms)`` listens on 127.0.0.1 and
forwards each connection to ``upstream``, delivering every chunk ``rtt_ms / 2``
after it was read, in order, in both directions: a request/response pair pays
``rtt_ms`` once, as over a real network (bandwidth is not limited).

>>> with DelayProxy(("127.0.0.1", 5432), rtt_ms=20) as proxy:   # doctest: +SKIP
...     psycopg2.connect(host=proxy.host, port=proxy.port, ...)
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from types import TracebackType

__all__ = ["DelayProxy"]


class DelayProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream`` with ``rtt_ms`` added per round trip."""

    def __init__(self, upstream: tuple[str, int], rtt_ms: float) -> None:
        self.upstream = upstream
        self.one_way_s = rtt_ms / 2000.0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", int(self._listener.getsockname()[1])
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="delay-proxy", daemon=True).start()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
            # The last of the two deliverers closes both sockets: by then both readers
            # have seen their EOF, so no thread still uses either descriptor.
            left = [2]
            for src, dst in ((client, server), (server, client)):
                pending: queue.Queue[tuple[float, bytes]] = queue.Queue()
                threading.Thread(target=self._read, args=(src, pending), daemon=True).start()
                threading.Thread(
                    target=self._deliver, args=(dst, pending, left, (client, server)), daemon=True
                ).start()

    def _read(self, src: socket.socket, pending: queue.Queue[tuple[float, bytes]]) -> None:
        data = b""
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                pending.put((time.monotonic() + self.one_way_s, data))
        pending.put((time.monotonic() + self.one_way_s, b""))  # EOF, delayed like data

    def _deliver(
        self,
        dst: socket.socket,
        pending: queue.Queue[tuple[float, bytes]],
        left: list[int],
        pair: tuple[socket.socket, socket.socket],
    ) -> None:
        broken = False
        while True:
            due, data = pending.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not broken:
                try:
                    dst.sendall(data)
                except OSError:
                    broken = True  # keep draining until the reader's EOF
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        with self._lock:
            left[0] -= 1
            last = left[0] == 0
            if last:
                self._sockets = [s for s in self._sockets if s not in pair]
        if last:
            for s in pair:
                s.close()

    def close(self) -> None:
        """Stop accepting and cut every forwarded connection."""
        self._closing.set()
        self._listener.close()
        with self._lock:  # wake every reader; the deliverers close (see _accept)
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
