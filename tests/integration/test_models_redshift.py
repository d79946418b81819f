"""The staging models through dbt-redshift, against the Redshift stand-in.

The stand-in (testbed/: a wire-protocol proxy in front of PostgreSQL)
lets dbt-redshift and redshift_connector run for real; the proxy strips the
Redshift-only DDL clauses PostgreSQL cannot parse and records them, so the
tests can assert what dbt asked Redshift for: each model's SORTKEY and
DISTKEY. The incremental property and the DuckDB suite's cases run unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given

from testbed.pg_fixtures import RedshiftDatabase
from tests import test_models_duckdb as cases
from tests.integration._models_env import models_env, property_settings

pytestmark = pytest.mark.integration

#: model -> (intended sort key, intended dist key), as the proxy canonicalises them
INTENDED_KEYS = {
    "stg_ecs_order_info": ("compound sortkey(add_time)", "distkey(order_id)"),
    "stg_uni_tracking_info": ("compound sortkey(update_time)", "distkey(order_id)"),
    "stg_uni_tracking_spath": ("compound sortkey(pathtime)", "distkey(order_id)"),
}

SHARED_CASES: list[Callable[[cases.ModelsEnv], None]] = [
    cases.test_fixed_scenario_with_every_kind_of_mess,
    cases.test_row_later_than_the_scan_window_is_missed_and_the_audit_reports_it,
    cases.test_audit_ignores_rows_the_next_cycle_will_still_read,
    cases.test_delete_window_shorter_than_scan_is_a_compile_error,
    cases.test_delete_window_limits_the_delete,
    cases.test_tracking_update_replaces_an_arbitrarily_old_row,
    cases.test_incremental_sql_uses_the_windows,
    cases.test_data_tests_pass_on_good_data_and_name_the_failing_node,
    cases.test_hourly_test_catches_a_duplicate_whose_other_copy_is_six_days_old,
    cases.test_hourly_test_catches_a_null_key_in_the_recent_window,
    cases.test_hourly_tests_read_the_window_and_the_full_tests_the_table,
    cases.test_hourly_tests_filter_on_the_sort_key,
    cases.test_data_tests_pass_on_raw_data_from_another_generator,
    cases.test_accepted_values_are_vars_with_warn_severity_by_default,
]


@pytest.fixture
def rs_env(redshift_db: RedshiftDatabase, tmp_path: Path) -> Iterator[cases.ModelsEnv]:
    with models_env(redshift_db, "redshift", tmp_path) as env:
        yield env


def _creates_of(redshift_db: RedshiftDatabase, model: str) -> dict[str, list[str]]:
    """Table created -> stripped clauses, for every CREATE TABLE of the model.

    That is the model's own table and dbt's intermediates (``<model>__dbt_tmp...``:
    the incremental run's temp table and the full refresh's new table).
    """
    pattern = re.compile(rf"^{model}(__dbt_tmp\w*)?$")
    return {
        entry.table: entry.clauses
        for entry in redshift_db.ddl_log
        if entry.table is not None and pattern.match(entry.table)
    }


def test_ddl_carries_each_models_sort_and_dist_key(
    rs_env: cases.ModelsEnv, redshift_db: RedshiftDatabase
) -> None:
    end = cases.build(rs_env, hours=2)  # first build: CREATE TABLE <model> AS
    rs_env.load(end, end + 900, orders_per_minute=10)
    cases.ok(rs_env.session.run_staging())  # incremental: CREATE TEMP TABLE, delete+insert
    cases.ok(rs_env.session.run_staging(full_refresh=True))  # CREATE <model>__dbt_tmp, rename

    for model, (sortkey, distkey) in INTENDED_KEYS.items():
        creates = _creates_of(redshift_db, model)
        assert model in creates, f"{model} never created under its own name: {creates}"
        assert len(creates) == 3, f"{model}: one CREATE per run expected, saw {creates}"
        for table, clauses in creates.items():
            assert sorted(clauses) == sorted([sortkey, distkey, "diststyle key"]), (
                f"{table}: {clauses}"
            )


def test_delete_uses_the_sort_key_window_on_redshift(rs_env: cases.ModelsEnv) -> None:
    """dbt-redshift's delete+insert: DELETE without alias, the window on the SORTKEY."""
    end = cases.build(rs_env, hours=1)
    rs_env.load(end, end + 900, orders_per_minute=10)
    cases.ok(rs_env.session.run_staging())
    run_dir = (
        rs_env.session.state_dir / "target" / "run" / "dbt_runner_staging" / "models" / "staging"
    )
    for model, sort in (("stg_ecs_order_info", "add_time"), ("stg_uni_tracking_spath", "pathTime")):
        sql = " ".join((run_dir / f"{model}.sql").read_text().split())
        delete = sql[sql.index("delete from") : sql.index("insert into")]
        assert " as DBT_INTERNAL_DEST" not in delete
        assert f"and {sort} >= (select max({sort}) from " in delete
        assert delete.rstrip(" ;").endswith("- 7200")


@property_settings(max_examples=2)
@given(scenario=cases.scenarios())
def test_incremental_cycles_equal_a_full_refresh_on_redshift(
    rs_env: cases.ModelsEnv, scenario: cases.Scenario
) -> None:
    cases.run_scenario(rs_env, scenario)


@pytest.mark.parametrize("case", SHARED_CASES, ids=lambda f: f.__name__.removeprefix("test_"))
def test_duckdb_case_on_redshift(
    rs_env: cases.ModelsEnv, case: Callable[[cases.ModelsEnv], None]
) -> None:
    case(rs_env)
