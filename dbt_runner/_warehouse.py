"""Driver connections to the warehouse made the way dbt makes them.

The one place outside dbt that connects to PostgreSQL or Redshift: ``dbt-runner
doctor``'s probes, ``dbt-runner sample-data`` and the writer lock
(:mod:`dbt_runner._lock`) use psycopg2 / redshift_connector with the settings dbt's
profile gets (sslmode, timeouts), through the session's tunnel when there is one.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ._exceptions import ConfigurationError
from ._settings import Settings, WarehouseSettings, flags_of, setting_name

__all__ = ["as_warehouse", "connect"]


def connect(
    settings: Settings, host: str, port: int, *, application_name: str = "dbt-runner doctor"
) -> Any:
    """A driver connection the way dbt makes it (psycopg2 / redshift_connector), autocommit.

    ``host``/``port``: where to connect (the tunnel's local end, or the warehouse).
    """
    wh = settings.warehouse
    password = wh.password.get_secret_value() if wh.password is not None else None
    sslmode = wh.effective_sslmode
    if wh.type == "redshift":
        import redshift_connector

        # dbt-redshift's translation: anything but disable means TLS, verified
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
    else:
        import psycopg2

        conn = psycopg2.connect(
            host=host,
            port=port,
            user=wh.user,
            password=password,
            dbname=wh.dbname,
            sslmode=sslmode,
            connect_timeout=wh.connect_timeout_s,
            application_name=application_name,
        )
    conn.autocommit = True
    return conn


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
                "sslmode": output.get("sslmode"),
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
        given = setting_name("profiles_dir", flags_of(settings))
        raise ConfigurationError(f"{given}: {where}: {problems}") from None
    return settings.model_copy(update=update), None
