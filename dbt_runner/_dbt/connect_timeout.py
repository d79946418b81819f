"""Redshift's connect timeout, kept a connect timeout.

redshift_connector's ``timeout`` is its socket's timeout for the life of the
connection: once a read waits that long for the server, it fails with "The read
operation timed out". dbt-redshift passes its profile's ``connect_timeout`` there,
so a statement that runs, or waits on a lock, longer than the *connect* timeout is
cut (dbt-redshift #427, dbt-adapters #983), while libpq's ``connect_timeout``
(dbt-postgres) bounds only the opening of a connection.

``WAREHOUSE__CONNECT_TIMEOUT_S`` is "seconds to wait for a connection". So for the
profile dbt_runner generates (the session registers its ``host:port`` with
:func:`connect_only`) and for dbt_runner's own connections
(:func:`clear_read_timeout`), the timeout bounds opening the connection (TCP, TLS,
login) and is then cleared: a statement runs until it ends, the watchdog
(``TIMEOUT_S``) fires or a cancel stops it. A user's own ``profiles.yml`` is not
registered and keeps dbt-redshift's behaviour, as plain dbt does.

>>> registration = connect_only("cluster.example.com", 5439)
>>> registered("Cluster.Example.com", 5439), registered("cluster.example.com", 5440)
(True, False)
>>> registration.remove(); registered("cluster.example.com", 5439)
False
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

__all__ = ["HOOK_POINTS", "Registration", "clear_read_timeout", "connect_only", "registered"]

log = logging.getLogger("dbt_runner.session")

#: (module, owner, attribute) of the driver internal the hook wraps
HOOK_POINTS: tuple[tuple[str, str, str], ...] = (
    ("redshift_connector.core", "Connection", "__init__"),
)

_LOCK = threading.Lock()
_REGISTERED: Counter[tuple[str, int]] = Counter()
_INSTALLED: list[bool] = []


def _key(host: str, port: int | str) -> tuple[str, int]:
    return host.strip().lower().rstrip("."), int(port)


class Registration:
    """One :func:`connect_only` registration; :meth:`remove` ends it (idempotent)."""

    def __init__(self, host: str, port: int) -> None:
        self.key = _key(host, port)
        self._removed = False

    def remove(self) -> None:
        """Connections to this ``host:port`` keep the driver's timeout again (unless
        another registration of the same address is still in place)."""
        with _LOCK:
            if self._removed:
                return
            self._removed = True
            _REGISTERED[self.key] -= 1
            if _REGISTERED[self.key] <= 0:
                del _REGISTERED[self.key]


def connect_only(host: str, port: int) -> Registration:
    """Make ``timeout`` a connect timeout for redshift_connector connections to
    ``host:port`` (as the profile names them) until :meth:`Registration.remove`."""
    _install()
    registration = Registration(host, port)
    with _LOCK:
        _REGISTERED[registration.key] += 1
    return registration


def registered(host: Any, port: Any) -> bool:
    """True when connections to ``host:port`` get a connect-only timeout."""
    if not isinstance(host, str) or port in (None, ""):
        return False
    try:
        key = _key(host, port)
    except (TypeError, ValueError):
        return False
    with _LOCK:
        return _REGISTERED[key] > 0


def clear_read_timeout(conn: Any) -> None:
    """Clear the socket timeout of an open redshift_connector connection: its
    ``timeout`` bounded the opening, nothing after it."""
    sock = getattr(conn, "_usock", None)
    if sock is not None:
        sock.settimeout(None)


def _install() -> None:
    with _LOCK:
        if _INSTALLED:
            return
        _INSTALLED.append(True)
    try:
        from redshift_connector.core import Connection
    except ImportError:  # dbt-redshift not installed: no Redshift connection to adjust
        return
    original = Connection.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        # redshift_connector.connect() passes every parameter by keyword
        if kwargs.get("timeout") is not None and registered(kwargs.get("host"), kwargs.get("port")):
            clear_read_timeout(self)

    setattr(Connection, "__init__", __init__)  # noqa: B010 - a method, not an attribute
