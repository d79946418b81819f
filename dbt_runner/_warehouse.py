"""Driver connections to the warehouse made the way dbt makes them.

The one place outside dbt that connects to PostgreSQL or Redshift: ``dbt-runner
doctor``'s probes, ``dbt-runner sample-data`` and the writer lock
(:mod:`dbt_runner._lock`) use psycopg2 / redshift_connector with the settings dbt's
profile gets (sslmode, timeouts), through the session's tunnel when there is one.
"""

from __future__ import annotations

from typing import Any

from ._settings import Settings

__all__ = ["connect"]


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
