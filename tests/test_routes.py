"""Routes: a connection to the warehouse's name goes to the tunnel's local end.

The drivers are real (dbt-postgres' psycopg2, redshift_connector); the "tunnel's local
end" is a loopback listener that records what reaches it. The names used here
(``warehouse.test``) do not resolve: a connection that arrives was routed. The real
runs through sshd with verify-full are in ``tests/integration/test_tls_bastion.py``.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dbt_runner import _dbt
from dbt_runner._dbt import routes

NAME = "warehouse.test"


class Listener:
    """A loopback server that accepts connections, keeps the first bytes of each, closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self.received.append(conn.recv(4096))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _no_routes_left() -> Iterator[None]:
    yield
    leftover = routes.routes()
    for route in leftover:
        route.remove()
    assert leftover == [], "a test left a route registered"


@dataclass
class FakeTunnel:
    """An :class:`~dbt_runner._dbt.routes.Endpoint` whose local port can move."""

    local_host: str
    local_port: int


def test_a_route_covers_exactly_its_host_and_port() -> None:
    with _dbt.add_route(NAME, 5432, ("127.0.0.1", 40123), driver="postgres"):
        assert _dbt.resolve(NAME, 5432) == ("127.0.0.1", 40123)
        assert _dbt.resolve("WAREHOUSE.test.", 5432) == ("127.0.0.1", 40123)  # DNS: no case
        assert _dbt.resolve(NAME, "5432") == ("127.0.0.1", 40123)  # a profile's string port
        assert _dbt.resolve(NAME, 5433) is None
        assert _dbt.resolve("other.test", 5432) is None
        assert _dbt.libpq_address(NAME, 5432) == {"hostaddr": "127.0.0.1", "port": 40123}
        assert _dbt.libpq_address("other.test", 5432) == {}
    assert _dbt.resolve(NAME, 5432) is None


def test_a_route_follows_its_tunnel_to_another_local_port() -> None:
    tunnel = FakeTunnel("127.0.0.1", 40123)
    route = _dbt.add_route(NAME, 5439, tunnel, driver="redshift")
    try:
        tunnel.local_port = 40999  # re-opened elsewhere: nobody re-registers
        assert _dbt.resolve(NAME, 5439) == ("127.0.0.1", 40999)
    finally:
        route.remove()
    route.remove()  # idempotent


def test_two_routes_to_one_address_stack_newest_first() -> None:
    first = _dbt.add_route(NAME, 5432, ("127.0.0.1", 40001), driver="postgres")
    second = _dbt.add_route(NAME, 5432, ("127.0.0.1", 40002), driver="postgres")
    assert _dbt.resolve(NAME, 5432) == ("127.0.0.1", 40002)
    second.remove()
    assert _dbt.resolve(NAME, 5432) == ("127.0.0.1", 40001)
    second.remove()  # removing twice does not take the other one
    assert _dbt.resolve(NAME, 5432) == ("127.0.0.1", 40001)
    first.remove()
    assert _dbt.resolve(NAME, 5432) is None


def _startup_params(packet: bytes) -> dict[str, str]:
    """The parameters of a PostgreSQL StartupMessage."""
    (length,) = struct.unpack("!I", packet[:4])
    fields = packet[8:length].split(b"\0")
    return {
        fields[i].decode(): fields[i + 1].decode()
        for i in range(0, len(fields) - 1, 2)
        if fields[i]
    }


def test_dbt_postgres_connects_by_name_to_the_routes_address(listener: Listener) -> None:
    """What dbt-postgres calls (its module's ``psycopg2.connect``) goes to the route, with
    ``host`` still the name; an address without a route is left to DNS."""
    psycopg2 = pytest.importorskip("psycopg2")
    from dbt.adapters.postgres import connections

    with _dbt.add_route(NAME, 5432, ("127.0.0.1", listener.port), driver="postgres"):
        assert connections.psycopg2.errors is psycopg2.errors  # the rest is psycopg2's own
        with pytest.raises(psycopg2.OperationalError) as info:
            connections.psycopg2.connect(
                host=NAME, port=5432, user="u", dbname="d", sslmode="disable", connect_timeout=5
            )
    # libpq names the address it used (hostaddr); the host name is what TLS would verify
    assert f'connection to server at "127.0.0.1", port {listener.port}' in str(info.value)
    assert len(listener.received) == 1
    assert _startup_params(listener.received[0])["user"] == "u"
    # no route: libpq resolves the name itself (and cannot)
    with pytest.raises(psycopg2.OperationalError, match=f'translate host name "{NAME}"'):
        connections.psycopg2.connect(
            host=NAME, port=5432, user="u", dbname="d", sslmode="disable", connect_timeout=5
        )
    assert len(listener.received) == 1


def test_redshift_connector_connects_by_name_to_the_routes_address(listener: Listener) -> None:
    redshift_connector = pytest.importorskip("redshift_connector")
    kwargs = {"host": NAME, "port": 5439, "user": "u", "password": "p", "database": "d"}
    with (
        _dbt.add_route(NAME, 5439, ("127.0.0.1", listener.port), driver="redshift"),
        pytest.raises(redshift_connector.InterfaceError),
    ):
        redshift_connector.connect(**kwargs, ssl=False, timeout=5)
    assert len(listener.received) == 1
    assert _startup_params(listener.received[0])["user"] == "u"
    with pytest.raises(redshift_connector.InterfaceError, match="communication error"):
        redshift_connector.connect(**kwargs, ssl=False, timeout=5)  # DNS: no such name
    assert len(listener.received) == 1
