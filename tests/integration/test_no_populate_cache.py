"""``--no-populate-cache`` changes nothing a user sees (issue 16): differential check.

dbt normally fills its relation cache with one catalog query per schema at the
start of each invocation; with ``--no-populate-cache`` it asks only about the
relations it touches. Same raw data, same cycles, once with ``--populate-cache``
and once with ``--no-populate-cache``, each in its own schema of a real
PostgreSQL: every invocation's node statuses and every resulting table must be
identical — on the bundled staging project (incremental delete+insert models,
hourly tests) and on a foreign project (seed, view, incremental merge, table,
generic and relationship tests).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import DbtSession, RunResult, Settings
from dbt_runner.synthetic import create_raw_tables, load_batch
from tests.services.pg_fixtures import PgDatabase
from tests.test_models_duckdb import MODELS, MODELS_DIR, T0

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

FLAGS = {"populate": "--populate-cache", "no_populate": "--no-populate-cache"}


def _settings(db: PgDatabase, project: Path, schema: str, state: Path) -> Settings:
    return Settings(
        project_dir=project,
        warehouse={
            "type": "postgres",
            "host": db.host,
            "port": db.port,
            "user": db.user,
            "password": db.password,
            "dbname": db.dbname,
            "schema": schema,
            "sslmode": db.sslmode,
        },
        state_dir=state,
        threads=3,
        retry={"attempts": 1},
    )


def _shape(result: RunResult) -> tuple[str, bool, list[tuple[str, str]]]:
    return (result.command, result.success, sorted((n.name, n.status) for n in result.nodes))


def _execute(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        rows = list(cur.fetchall()) if cur.description else []
    conn.commit()
    return rows


def _same_rows(conn: Any, a: str, b: str) -> tuple[int, int, int]:
    """(rows in a, rows only in a, rows only in b): multiset difference both ways."""
    count = _execute(conn, f"select count(*) from {a}")[0][0]
    only_a = _execute(
        conn, f"select count(*) from (select * from {a} except all select * from {b}) d"
    )
    only_b = _execute(
        conn, f"select count(*) from (select * from {b} except all select * from {a}) d"
    )
    return int(count), int(only_a[0][0]), int(only_b[0][0])


def _cycle(settings: Settings, steps: list[list[str]], flag: str) -> list[Any]:
    with DbtSession(settings) as session:
        return [_shape(session.invoke([*args, flag])) for args in steps]


def test_staging_project_is_identical_without_cache_population(
    pg_db: PgDatabase, tmp_path: Path
) -> None:
    conn = pg_db.connect()
    try:
        create_raw_tables(conn, "postgres", replace=True)
        conn.commit()
        shapes: dict[str, list[Any]] = {k: [] for k in FLAGS}
        start = T0
        for cycle in range(3):  # full refresh, then two incremental cycles on new batches
            load_batch(conn, "postgres", start, start + 900, orders_per_minute=20, seed=cycle)
            conn.commit()
            start += 900
            steps = [["run", "--select", "tag:staging"], ["test", "--select", "tag:staging"]]
            if cycle == 0:
                steps[0].append("--full-refresh")
            for name, flag in FLAGS.items():
                cfg = _settings(pg_db, MODELS_DIR, f"stg_{name}", tmp_path / name)
                shapes[name] += _cycle(cfg, steps, flag)
        assert shapes["populate"] == shapes["no_populate"]
        assert all(ok for _, ok, _ in shapes["populate"]), shapes["populate"]
        assert len(shapes["populate"][0][2]) == len(MODELS)
        for table in MODELS:
            count, only_a, only_b = _same_rows(
                conn, f"stg_populate.{table}", f"stg_no_populate.{table}"
            )
            assert count > 0 and (only_a, only_b) == (0, 0), table
    finally:
        conn.close()


FOREIGN_FILES = {
    "dbt_project.yml": """
name: shop
version: "1.0"
config-version: 2
profile: shop
models:
  shop:
    +materialized: view
""",
    "seeds/countries.csv": "code,name\nDE,Germany\nFR,France\nJP,Japan\n",
    "models/sources.yml": """
version: 2
sources:
  - name: app
    schema: "{{ var('source_schema') }}"
    tables: [{name: customers}, {name: orders}]
""",
    "models/customers.sql": """
select c.id, c.name, k.name as country
from {{ source('app', 'customers') }} c left join {{ ref('countries') }} k on k.code = c.country
""",
    "models/orders.sql": """
{{ config(materialized='incremental', unique_key='id', incremental_strategy='merge') }}
select id, customer_id, amount, updated_at from {{ source('app', 'orders') }}
{% if is_incremental() %}
where updated_at > (select coalesce(max(updated_at), 0) from {{ this }})
{% endif %}
""",
    "models/revenue.sql": """
{{ config(materialized='table') }}
select c.country, count(*) as orders, sum(o.amount) as amount
from {{ ref('orders') }} o join {{ ref('customers') }} c on c.id = o.customer_id
group by 1
""",
    "models/schema.yml": """
version: 2
models:
  - name: customers
    columns:
      - {name: id, data_tests: [unique, not_null]}
  - name: orders
    columns:
      - {name: id, data_tests: [unique, not_null]}
      - name: customer_id
        data_tests:
          - relationships: {arguments: {to: ref('customers'), field: id}}
  - name: revenue
    columns:
      - {name: country, data_tests: [unique]}
""",
}


def test_a_foreign_project_is_identical_without_cache_population(
    pg_db: PgDatabase, tmp_path: Path
) -> None:
    project = tmp_path / "shop"
    for rel, text in FOREIGN_FILES.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text.lstrip())
    conn = pg_db.connect()
    try:
        _execute(conn, "drop schema if exists app cascade")
        _execute(conn, "create schema app")
        _execute(conn, "create table app.customers (id int, name text, country text)")
        _execute(
            conn, "create table app.orders (id int, customer_id int, amount int, updated_at int)"
        )
        _execute(conn, "insert into app.customers values (1,'a','DE'),(2,'b','FR'),(3,'c','JP')")
        shapes: dict[str, list[Any]] = {k: [] for k in FLAGS}
        batches = [
            "(1,1,10,1),(2,2,20,2),(3,3,30,3)",
            "(4,1,40,4),(2,2,25,5)",  # a new order, and an update of order 2 (merge)
            "(5,3,50,6)",
        ]
        vars_ = json.dumps({"source_schema": "app"})
        for number, batch in enumerate(batches):
            _execute(conn, f"insert into app.orders values {batch}")
            steps = [["build", "--vars", vars_]]
            if number == 0:
                steps[0].append("--full-refresh")
            for name, flag in FLAGS.items():
                cfg = _settings(pg_db, project, f"shop_{name}", tmp_path / name)
                shapes[name] += _cycle(cfg, steps, flag)
        assert shapes["populate"] == shapes["no_populate"]
        assert all(ok for _, ok, _ in shapes["populate"]), shapes["populate"]
        for table in ("countries", "customers", "orders", "revenue"):
            count, only_a, only_b = _same_rows(
                conn, f"shop_populate.{table}", f"shop_no_populate.{table}"
            )
            assert count > 0 and (only_a, only_b) == (0, 0), table
        # the merge really updated order 2 in place (incremental, not a rebuild)
        assert _execute(conn, "select amount from shop_no_populate.orders where id = 2") == [(25,)]
    finally:
        conn.close()
