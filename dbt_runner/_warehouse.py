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

from pydantic import SecretStr, ValidationError

from ._exceptions import ConfigurationError
from ._settings import ENV_PREFIX, Settings, WarehouseSettings, flags_of, setting_name

if TYPE_CHECKING:
    from ._aws import Login
    from ._ssh import Tunnel

__all__ = ["as_warehouse", "connect", "fetch_login", "routed", "tunnel", "with_login"]


def fetch_login(settings: Settings) -> Login:
    """A temporary login from AWS for ``settings``' warehouse (``METHOD=iam``), with the
    AWS keys of the user's own profile when it gives some."""
    from ._aws import fetch_login as fetch

    wh = settings.warehouse
    return fetch(wh, wh._aws_keys)


def with_login(settings: Settings, login: Login) -> Settings:
    """``settings`` as the connections of a Redshift IAM session log in: the warehouse's
    ``user``/``password`` are the temporary login's (METHOD stays ``iam``). The generated
    profile and dbt_runner's own connections read them from there."""
    wh = settings.warehouse.model_copy(update={"user": login.user, "password": login.password})
    return settings.model_copy(update={"warehouse": wh})


def connect(settings: Settings, *, application_name: str = "dbt-runner doctor") -> Any:
    """A driver connection the way dbt makes it (psycopg2 / redshift_connector), autocommit,
    to the warehouse's host/port (through a tunnel when a route for it is registered)."""
    from . import _dbt

    if settings.warehouse.is_iam and settings.warehouse.password is None:
        # Redshift IAM outside a session (doctor, sample-data): a login of its own
        settings = with_login(settings, fetch_login(settings))
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
        settings.profiles_dir,
        settings.resolved_project_dir,
        settings.chosen_target,
        flags_of(settings),
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
            method = str(output.get("method") or "database") if kind == "redshift" else None
            if method == "iam":
                fields.update(_iam_fields(output, where))
            elif method not in (None, "database"):
                # iam_role, identity center: dbt-redshift's own, not dbt_runner's connections
                return settings.model_copy(update=update), f"{where} (redshift method {method})"
            warehouse = WarehouseSettings.model_validate(fields)
            if method == "iam":
                warehouse._aws_keys = _aws_keys(output, where)
            update["warehouse"] = warehouse
        else:
            return settings.model_copy(update=update), f"{where} (type {kind})"
    except ValidationError as exc:  # named by field, never by value (one may be the password)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        given = setting_name("profiles_dir", flags_of(settings))
        raise ConfigurationError(f"{given}: {where}: {problems}") from None
    return settings.model_copy(update=update), None


def _iam_fields(output: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``METHOD=iam`` warehouse fields of a dbt-redshift target with ``method: iam``.

    Read as dbt-redshift and redshift_connector read them: Serverless when the host says
    so (``serverless`` in it) or ``is_serverless: true``; the workgroup and region from
    the host (redshift_connector's own patterns) when the target gives none.
    """
    from redshift_connector.redshift_property import RedshiftProperty

    host = str(output.get("host") or "")
    serverless = "serverless" in host or output.get("is_serverless") is True
    known = RedshiftProperty()
    known.put("host", host)
    region = output.get("region")
    if not region:
        known.set_region_from_host()
        region = known.region
    fields: dict[str, Any] = {
        "method": "iam",
        "user": None,
        "password": None,  # dbt-redshift logs in with the temporary password only
        "region": region or None,
        "iam_profile": output.get("iam_profile") or None,
    }
    if serverless:
        workgroup = output.get("serverless_work_group")
        if not workgroup:
            known.set_serverless_work_group_from_host()
            workgroup = known.serverless_work_group
        if not workgroup:
            raise ConfigurationError(
                f"{ENV_PREFIX}PROFILES_DIR: {where} is Redshift Serverless with method: iam: "
                "dbt_runner's own connections (writer lock, doctor) need its workgroup: add "
                "serverless_work_group: to the target"
            )
        fields["workgroup"] = workgroup
    else:
        fields.update(
            cluster_id=output.get("cluster_id"),
            db_user=output.get("user"),
            db_groups=tuple(output.get("db_groups") or ()),
            auto_create=bool(output.get("autocreate", False)),
        )
    return fields


def _aws_keys(output: dict[str, Any], where: str) -> Any:
    """The explicit AWS keys of a ``method: iam`` target (``access_key_id`` /
    ``secret_access_key``), else None (the default chain or ``iam_profile``)."""
    key_id, secret = output.get("access_key_id"), output.get("secret_access_key")
    if not key_id and not secret:
        return None
    if not key_id or not secret:
        raise ConfigurationError(
            f"{ENV_PREFIX}PROFILES_DIR: {where}: access_key_id and secret_access_key go together"
        )
    from ._aws import AwsKeys

    return AwsKeys(str(key_id), SecretStr(str(secret)))
