"""Address overrides: connect to the warehouse by its name, send the bytes to the tunnel.

Through a bastion, dbt's drivers must reach ``127.0.0.1:<tunnel port>`` while TLS
checks the warehouse's real name (``sslmode=verify-full``) and, for Redshift IAM,
the driver sees the real cluster host name (dbt-redshift #729). Both drivers run in
this process, so instead of pointing dbt's profile at ``127.0.0.1`` (which breaks the
host-name check), the profile keeps the warehouse's ``host``/``port`` and a **route**
says where the bytes of exactly that ``host:port`` go::

    route = add_route("cluster.abc.eu-west-1.redshift.amazonaws.com", 5439, tunnel,
                      driver="redshift")
    ...                 # every connection to that host:port goes to tunnel.local_host:
    route.remove()      # tunnel.local_port, read when it connects (a re-open may move it)

One registry, consulted by each driver where it picks the address to connect to:

- **libpq** (dbt-postgres and our psycopg2 connections): ``hostaddr`` is libpq's own
  parameter for this: ``host`` stays the name (TLS host-name check, SNI, ``.pgpass``)
  and ``hostaddr``/``port`` are where the socket goes. dbt-postgres' credentials have
  no ``hostaddr``, so the ``psycopg2`` name that ``dbt.adapters.postgres.connections``
  calls ``psycopg2.connect`` on becomes a proxy that adds it for a routed ``host:port``
  (everything else of psycopg2 passes through). :func:`libpq_address` gives our own
  connections (``dbt_runner._warehouse``) the same two parameters.
- **redshift_connector** (dbt-redshift and our connections): it resolves the host in
  one private static method, ``Connection.__get_host_address_info(host, port)``, right
  before it opens its socket, and later wraps the socket with ``server_hostname=host``.
  That method answers the route's address for a routed ``host:port`` and asks DNS for
  everything else.

Scope: exactly the ``(host, port)`` pairs registered, only while registered (a
session adds its route when its tunnel opens and removes it on close); nothing is
read from or written to the environment. Host names compare case-insensitively
(DNS does). Two registrations of one ``host:port`` (two sessions of a process to one
warehouse) stack: the newest answers, and removing it uncovers the older one.

The hooks are installed on the first :func:`add_route` for their driver and do
nothing for an address without a route. :data:`HOOK_POINTS` names the internals they
replace; ``tests/test_layers.py`` checks that each exists in the installed versions.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal, Protocol

__all__ = [
    "HOOK_POINTS",
    "Endpoint",
    "Route",
    "add_route",
    "libpq_address",
    "resolve",
    "routes",
]

log = logging.getLogger("dbt_runner.session")

Driver = Literal["postgres", "redshift"]

#: (module, owner, attribute) of every driver/adapter internal the hooks replace
HOOK_POINTS: tuple[tuple[str, str, str], ...] = (
    # dbt-postgres calls ``psycopg2.connect`` through this module's ``psycopg2`` name
    ("dbt.adapters.postgres.connections", "", "psycopg2"),
    # redshift_connector resolves the host here (name-mangled ``__get_host_address_info``)
    ("redshift_connector.core", "Connection", "_Connection__get_host_address_info"),
)


class Endpoint(Protocol):
    """Where a route's bytes go: a :class:`~dbt_runner._ssh.Tunnel` is one (its local end
    is read at each connection, so a tunnel that re-opens on another port is followed)."""

    @property
    def local_host(self) -> str: ...

    @property
    def local_port(self) -> int: ...


class _Fixed:
    """A constant :class:`Endpoint` (``add_route(..., ("127.0.0.1", 40123))``)."""

    def __init__(self, host: str, port: int) -> None:
        self.local_host, self.local_port = host, port


class Route:
    """One registration: connections to ``host:port`` go to ``endpoint``'s local end."""

    def __init__(self, host: str, port: int, endpoint: Endpoint) -> None:
        self.host, self.port = host, port
        self.endpoint = endpoint

    def __repr__(self) -> str:
        to = self.address()
        return f"<Route {self.host}:{self.port} -> {to[0]}:{to[1]}>"

    def address(self) -> tuple[str, int]:
        """Where a connection to ``host:port`` goes now."""
        return self.endpoint.local_host, int(self.endpoint.local_port)

    def remove(self) -> None:
        """Unregister (idempotent): ``host:port`` is resolved as before (or by an older
        route of the same address)."""
        key = _key(self.host, self.port)
        with _LOCK:
            stack = _ROUTES.get(key, [])
            if self in stack:
                stack.remove(self)
            if not stack:
                _ROUTES.pop(key, None)

    def __enter__(self) -> Route:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


_LOCK = threading.Lock()
_ROUTES: dict[tuple[str, int], list[Route]] = {}
_INSTALLED: set[str] = set()


def _key(host: str, port: int | str) -> tuple[str, int]:
    return host.strip().lower().rstrip("."), int(port)


def add_route(
    host: str, port: int, endpoint: Endpoint | tuple[str, int], *, driver: Driver
) -> Route:
    """Send every connection of ``driver`` (and of our own connections) to ``host:port``
    to ``endpoint``'s local end, until :meth:`Route.remove`.

    ``driver``: ``postgres`` (dbt-postgres, libpq) or ``redshift`` (dbt-redshift,
    redshift_connector); its hook is installed now. ``endpoint``: a tunnel (or any
    object with ``local_host``/``local_port``), or a fixed ``(host, port)``; its
    ``local_host`` must be an IPv4 address (both drivers connect over IPv4 here).

    >>> route = add_route("warehouse.test", 5432, ("127.0.0.1", 40123), driver="postgres")
    >>> resolve("Warehouse.Test", 5432), resolve("warehouse.test", 5433)
    (('127.0.0.1', 40123), None)
    >>> route.remove(); resolve("warehouse.test", 5432) is None
    True
    """
    target: Endpoint = _Fixed(*endpoint) if isinstance(endpoint, tuple) else endpoint
    _install(driver)
    route = Route(host, port, target)
    with _LOCK:
        _ROUTES.setdefault(_key(host, port), []).append(route)
    log.debug("route %s:%s -> the tunnel's local end (%s)", host, port, driver)
    return route


def resolve(host: Any, port: Any) -> tuple[str, int] | None:
    """The local address a connection to ``host:port`` goes to, or None (no route)."""
    if not isinstance(host, str) or port in (None, ""):
        return None
    try:
        key = _key(host, port)
    except (TypeError, ValueError):
        return None
    with _LOCK:
        stack = _ROUTES.get(key)
        route = stack[-1] if stack else None
    return route.address() if route is not None else None


def routes() -> list[Route]:
    """The routes registered now (newest last per address), for diagnostics and tests."""
    with _LOCK:
        return [route for stack in _ROUTES.values() for route in stack]


def libpq_address(host: Any, port: Any) -> dict[str, Any]:
    """libpq parameters for a connection to ``host:port``: ``{"hostaddr": ..., "port":
    ...}`` when it is routed (``host`` stays the name TLS verifies), else ``{}``."""
    to = resolve(host, port)
    return {} if to is None else {"hostaddr": to[0], "port": to[1]}


# ---------------------------------------------------------------------- the hooks
def _install(driver: Driver) -> None:
    with _LOCK:
        if driver in _INSTALLED:
            return
        if driver == "postgres":
            _install_dbt_postgres()
        else:
            _install_redshift_connector()
        _INSTALLED.add(driver)


class _RoutedPsycopg2:
    """``psycopg2`` as dbt-postgres sees it: ``connect`` adds ``hostaddr`` for a routed
    ``host:port``; every other name is psycopg2's own."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        if "hostaddr" not in kwargs:
            kwargs.update(libpq_address(kwargs.get("host"), kwargs.get("port")))
        return self._real.connect(*args, **kwargs)


def _install_dbt_postgres() -> None:
    try:
        from dbt.adapters.postgres import connections
    except ImportError:  # dbt-postgres not installed: nothing to route
        return
    real = getattr(connections, "psycopg2")  # noqa: B009 - a module's private import
    if not isinstance(real, _RoutedPsycopg2):
        setattr(connections, "psycopg2", _RoutedPsycopg2(real))  # noqa: B010


def _install_redshift_connector() -> None:
    try:
        from redshift_connector.core import Connection
    except ImportError:  # dbt-redshift not installed: nothing to route
        return
    name = "_Connection__get_host_address_info"
    original = Connection.__dict__[name].__func__
    if getattr(original, "_dbt_runner_routed", False):
        return

    def get_host_address_info(host: str, port: int) -> Any:
        routed = resolve(host, port)
        return routed if routed is not None else original(host, port)

    get_host_address_info._dbt_runner_routed = True  # type: ignore[attr-defined]
    setattr(Connection, name, staticmethod(get_host_address_info))
