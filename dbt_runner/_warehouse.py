"""Driver connections to the warehouse made the way dbt makes them.

The one place outside dbt that connects to PostgreSQL or Redshift: ``dbt-runner
doctor``'s probes, ``dbt-runner sample-data`` and the writer lock
(:mod:`dbt_runner._lock`) use psycopg2 / redshift_connector with the settings dbt's
profile gets (sslmode, CA, timeouts). They connect by the warehouse's own name, as
dbt does; through a bastion the route of the tunnel (:func:`tunnel` here, or the
session's) sends the bytes to its local end (:mod:`dbt_runner._dbt.routes`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from ._exceptions import ConfigurationError
from ._settings import ENV_PREFIX, Settings, WarehouseSettings

if TYPE_CHECKING:
    from ._ssh import Tunnel

__all__ = ["as_warehouse", "connect", "routed", "tunnel"]


def connect(settings: Settings, *, application_name: str = "dbt-runner doctor") -> Any:
    """A driver connection the way dbt makes it (psycopg2 / redshift_connector), autocommit,
    to the warehouse's host/port (through a tunnel when a route for it is registered)."""
    from . import _dbt

    wh = settings.warehouse
    host, port = wh.host, wh.effective_port
    password = wh.password.get_secret_value() if wh.password is not None else None
    sslmode = wh.effective_sslmode
    if wh.type == "redshift":
        import redshift_connector

        # dbt-redshift's translation: anything but disable means TLS, verified (the
        # route's hook in redshift_connector picks the address, the name stays for TLS)
        conn = redshift_connector.connect(
            host=host,
            port=port,
            user=wh.user,
            password=password or "",
            database=wh.dbname,
            ssl=sslmode != "disable",
            sslmode="verify-full" if sslmode == "verify-full" else "verify-ca",
            timeout=wh.connect_timeout_s,
            application_name=application_name,
        )
        # its timeout bounded the connect; a statement (the writer lock's wait) runs on
        _dbt.clear_read_timeout(conn)
    else:
        import psycopg2

        params: dict[str, Any] = {"host": host, "port": port}
        params.update(_dbt.libpq_address(host, port))  # hostaddr + the tunnel's port if routed
        if wh.sslrootcert is not None:
            params["sslrootcert"] = str(wh.sslrootcert.expanduser())
        conn = psycopg2.connect(
            user=wh.user,
            password=password,
            dbname=wh.dbname,
            sslmode=sslmode,
            connect_timeout=wh.connect_timeout_s,
            application_name=application_name,
            **params,
        )
    conn.autocommit = True
    return conn


def tunnel(settings: Settings) -> Tunnel:
    """The (unopened) tunnel to ``settings``' warehouse: the bastion connects to
    ``SSH__REMOTE_HOST`` when set, else to the warehouse's host."""
    from ._ssh import Tunnel

    wh = settings.warehouse
    assert wh.host is not None and wh.effective_port is not None
    return Tunnel(settings.ssh, *settings.ssh.remote_end(wh.host, wh.effective_port))


@contextlib.contextmanager
def routed(settings: Settings, through: Tunnel) -> Iterator[None]:
    """While the block runs, connections to ``settings``' warehouse go through ``through``."""
    from . import _dbt

    wh = settings.warehouse
    assert wh.host is not None and wh.effective_port is not None
    driver: Literal["postgres", "redshift"] = "redshift" if wh.type == "redshift" else "postgres"
    with _dbt.add_route(wh.host, wh.effective_port, through, driver=driver):
        yield


def as_warehouse(settings: Settings) -> tuple[Settings, str | None]:
    """``settings`` whose ``warehouse`` is the user's own target when PROFILES_DIR is set.

    Returns those settings and, for a target dbt_runner cannot connect to itself
    (neither postgres, redshift nor duckdb), a description of it (else None). Rendered
    values (secrets too) stay in memory.
    """
    if settings.profiles_dir is None:
        return settings, None
    from ._profile import render_target

    profile, target, output = render_target(
        settings.profiles_dir, settings.resolved_project_dir, settings.chosen_target
    )
    kind = str(output.get("type", "?"))
    update: dict[str, Any] = {}
    threads = output.get("threads")
    if isinstance(threads, int) and threads >= 1 and "threads" not in settings.model_fields_set:
        update["threads"] = threads
    where = f"target {target!r} of profile {profile!r}"
    try:
        if kind == "duckdb":
            fields: dict[str, Any] = {"type": "duckdb", "path": output.get("path") or ":memory:"}
            update["warehouse"] = WarehouseSettings.model_validate(fields)
        elif kind in ("postgres", "redshift"):
            password = output.get("password") or output.get("pass")
            timeout = output.get("connect_timeout")
            fields = {
                "type": kind,
                "host": output.get("host"),
                "port": output.get("port"),
                "user": output.get("user"),
                "password": str(password) if password is not None else None,
                "dbname": output.get("dbname") or output.get("database"),
                "schema": output.get("schema") or "public",
                # unset in the profile: the adapters' own default (both: prefer)
                "sslmode": output.get("sslmode") or "prefer",
                "sslrootcert": output.get("sslrootcert"),
                "connect_timeout_s": timeout if isinstance(timeout, int) and timeout >= 1 else 10,
            }
            update["warehouse"] = WarehouseSettings.model_validate(fields)
        else:
            return settings.model_copy(update=update), f"{where} (type {kind})"
    except ValidationError as exc:  # named by field, never by value (one may be the password)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigurationError(f"{ENV_PREFIX}PROFILES_DIR: {where}: {problems}") from None
    return settings.model_copy(update=update), None
