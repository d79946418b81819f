"""The staging models on a real PostgreSQL 15 through dbt-postgres.

The same SQL as on DuckDB: the incremental-equals-full-refresh property (fewer
examples) and the DuckDB suite's deterministic cases, run unchanged against
PostgreSQL (the helpers and cases live in tests/test_models_duckdb.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given

from testbed.pg_fixtures import PgDatabase
from tests import test_models_duckdb as cases
from tests.integration._models_env import models_env, property_settings

pytestmark = pytest.mark.integration

#: the DuckDB module's deterministic cases, each taking a reset ModelsEnv
SHARED_CASES: list[Callable[[cases.ModelsEnv], None]] = [
    cases.test_fixed_scenario_with_every_kind_of_mess,
    cases.test_row_later_than_the_scan_window_is_missed_and_the_audit_reports_it,
    cases.test_audit_ignores_rows_the_next_cycle_will_still_read,
    cases.test_wider_lookback_recovers_late_rows,
    cases.test_delete_window_shorter_than_scan_is_a_compile_error,
    cases.test_delete_window_limits_the_delete,
    cases.test_tracking_update_replaces_an_arbitrarily_old_row,
    cases.test_incremental_sql_uses_the_windows,
    cases.test_models_land_in_the_target_schema_under_their_names,
    cases.test_data_tests_pass_on_good_data_and_name_the_failing_node,
    cases.test_hourly_test_catches_a_duplicate_whose_other_copy_is_six_days_old,
    cases.test_hourly_test_catches_a_null_key_in_the_recent_window,
    cases.test_hourly_tests_read_the_window_and_the_full_tests_the_table,
    cases.test_hourly_tests_filter_on_the_sort_key,
    cases.test_data_tests_pass_on_raw_data_from_another_generator,
    cases.test_accepted_values_are_vars_with_warn_severity_by_default,
]


@pytest.fixture
def pg_env(pg_db: PgDatabase, tmp_path: Path) -> Iterator[cases.ModelsEnv]:
    with models_env(pg_db, "postgres", tmp_path) as env:
        yield env


@property_settings(max_examples=3)
@given(scenario=cases.scenarios())
def test_incremental_cycles_equal_a_full_refresh_on_postgres(
    pg_env: cases.ModelsEnv, scenario: cases.Scenario
) -> None:
    cases.run_scenario(pg_env, scenario)


@pytest.mark.parametrize("case", SHARED_CASES, ids=lambda f: f.__name__.removeprefix("test_"))
def test_duckdb_case_on_postgres(
    pg_env: cases.ModelsEnv, case: Callable[[cases.ModelsEnv], None]
) -> None:
    case(pg_env)


def test_identifiers_fold_to_lower_case(pg_env: cases.ModelsEnv) -> None:
    """Unquoted traceSeq/pathTime are stored as traceseq/pathtime, as on Redshift."""
    cases.build(pg_env, hours=1)
    columns = pg_env.execute(
        "select column_name from information_schema.columns "
        "where table_schema = 'staging' and table_name = 'stg_uni_tracking_spath' "
        "order by ordinal_position"
    )
    assert [c for (c,) in columns] == [
        "order_id",
        "traceseq",
        "pathtime",
        "location",
        "description",
        "path_key",
    ]
