"""Open a ``ModelsEnv`` (tests/test_models_duckdb.py) on a network warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings

from dbt_runner import DbtSession, Settings
from testbed.pg_fixtures import PgDatabase
from tests import test_models_duckdb as cases


@contextmanager
def models_env(db: PgDatabase, warehouse_type: str, tmp_path: Path) -> Iterator[cases.ModelsEnv]:
    """A reset ModelsEnv whose session runs ``warehouse_type`` (postgres/redshift) on ``db``.

    Loading and checks go through psycopg2 on the same host/port (for the
    Redshift stand-in, through its proxy).
    """
    cfg = Settings(
        project_dir=cases.MODELS_DIR,
        warehouse={
            "type": warehouse_type,
            "host": db.host,
            "port": db.port,
            "user": db.user,
            "password": db.password,
            "dbname": db.dbname,
            "schema": cases.STAGING_SCHEMA,
            "sslmode": db.sslmode,
        },
        state_dir=tmp_path / "state",
        threads=3,
        retry={"attempts": 1},
    )
    conn = db.connect()
    try:
        with DbtSession(cfg) as session:
            env = cases.ModelsEnv(session, conn, "postgres")
            env.reset()
            yield env
    finally:
        conn.close()


def property_settings(max_examples: int) -> settings:
    """Hypothesis settings for the incremental property on a network warehouse."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,  # every example resets the database itself
        ],
    )
