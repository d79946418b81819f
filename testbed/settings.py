"""Settings for the test bed's services: one place, instead of a block per test module.

>>> warehouse_of(db)                               # doctest: +SKIP
{'type': 'postgres', 'host': '127.0.0.1', 'port': 5432, ...}
>>> make_settings(db, sshd, tmp_path / "state")    # doctest: +SKIP
Settings(...)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dbt_runner import Settings
from testbed.pg_fixtures import PgDatabase
from testbed.sshd import SshdServer

__all__ = ["NO_WAITS", "PROJECT", "make_settings", "ssh_of", "warehouse_of"]

#: the bundled staging project, from the checkout
PROJECT = Path(__file__).resolve().parents[1] / "models_sql"
#: a retry policy without back-off waits (tests wait on conditions, not on time)
NO_WAITS = {"initial_wait_s": 0, "max_wait_s": 0}


def warehouse_of(
    db: PgDatabase, wh_type: str = "postgres", schema: str = "stg", **extra: Any
) -> dict[str, Any]:
    """``DBT_RUNNER_WAREHOUSE__*`` values for ``db`` (TLS as the fixture serves it)."""
    return {
        "type": wh_type,
        "host": db.host,
        "port": db.port,
        "user": db.user,
        "password": db.password,
        "dbname": db.dbname,
        "sslmode": db.sslmode,  # TLS, as in production (require / verify-ca)
        "schema": schema,
        **extra,
    }


def ssh_of(sshd: SshdServer, **extra: Any) -> dict[str, Any]:
    """``DBT_RUNNER_SSH__*`` values for the bastion ``sshd``."""
    return {
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "private_key": sshd.private_key_path,
        "known_hosts": sshd.known_hosts_path,
        **extra,
    }


def make_settings(
    db: PgDatabase,
    sshd: SshdServer | None,
    state_dir: Path,
    *,
    wh_type: str = "postgres",
    schema: str = "stg",
    warehouse: dict[str, Any] | None = None,
    ssh: dict[str, Any] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings of a session on ``db`` (through ``sshd`` when given), 3 threads, no waits."""
    values: dict[str, Any] = {
        "project_dir": PROJECT,
        "warehouse": warehouse_of(db, wh_type, schema, **(warehouse or {})),
        "state_dir": state_dir,
        "threads": 3,
        "retry": dict(NO_WAITS),
    }
    if sshd is not None:
        values["ssh"] = ssh_of(sshd, **(ssh or {}))
    values.update(overrides)
    return Settings(**values)
