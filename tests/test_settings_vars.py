"""dbt vars as settings: ``DBT_RUNNER_VARS`` (JSON) and ``DBT_RUNNER_RAW_SCHEMA``.

They reach every dbt command of a session, merged under the caller's own
``--vars`` (dbt semantics: what the caller passes wins, key by key); the CLI's
``--vars`` is such a caller. Checked on real dbt + DuckDB, plus the merge
seam itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from dbt_runner import ConfigurationError, Settings
from dbt_runner._session import _with_vars
from dbt_runner.cli import main
from dbt_runner.synthetic import create_raw_tables, load_batch

T0 = 1_767_225_600


# --------------------------------------------------------------------------- settings
def test_vars_come_from_json_and_raw_schema_joins_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBT_RUNNER_VARS", '{"test_window_s": 3600, "accepted_currencies": ["EUR"]}')
    monkeypatch.setenv("DBT_RUNNER_RAW_SCHEMA", "landing")
    assert Settings().dbt_vars == {
        "test_window_s": 3600,
        "accepted_currencies": ["EUR"],
        "raw_schema": "landing",
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DBT_RUNNER_VARS": "{not json"}, "DBT_RUNNER_VARS: not valid JSON: .* line 1 column 2"),
        ({"DBT_RUNNER_VARS": "[1, 2]"}, "DBT_RUNNER_VARS"),
        ({"DBT_RUNNER_RAW_SCHEMA": "raw; drop table x"}, "DBT_RUNNER_RAW_SCHEMA"),
        (
            {"DBT_RUNNER_RAW_SCHEMA": "landing", "DBT_RUNNER_VARS": '{"raw_schema": "raw"}'},
            "disagree",
        ),
    ],
)
def test_bad_vars_settings_are_configuration_errors(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=message):
        Settings()


# --------------------------------------------------------------------------- the merge
SETTINGS_VARS = {"raw_schema": "landing", "test_window_s": 3600}


def _vars_in(args: list[str]) -> dict[str, object]:
    i = args.index("--vars")
    assert "--vars" not in args[i + 1 :]  # exactly one --vars reaches dbt
    parsed: dict[str, object] = json.loads(args[i + 1])
    return parsed


def test_settings_vars_are_added_when_the_caller_gives_none() -> None:
    args = _with_vars(["run", "--select", "tag:staging"], SETTINGS_VARS)
    assert args[:3] == ["run", "--select", "tag:staging"]
    assert _vars_in(args) == SETTINGS_VARS


@pytest.mark.parametrize(
    "given",
    [
        ["--vars", "{raw_schema: raw, source_lookback_s: 7200}"],  # YAML, as dbt reads it
        ['--vars={"raw_schema": "raw", "source_lookback_s": 7200}'],
    ],
)
def test_the_callers_vars_win_key_by_key(given: list[str]) -> None:
    args = _with_vars(["test", *given, "--select", "tag:audit"], SETTINGS_VARS)
    assert _vars_in(args) == {"raw_schema": "raw", "test_window_s": 3600, "source_lookback_s": 7200}
    assert args[0] == "test" and args[-2:] == ["--select", "tag:audit"]


def test_nothing_is_added_without_settings_vars_or_to_a_vars_value_dbt_must_reject() -> None:
    assert _with_vars(["run"], {}) == ["run"]
    assert _with_vars(["run", "--vars", "[1, 2]"], SETTINGS_VARS) == ["run", "--vars", "[1, 2]"]


# --------------------------------------------------------------------------- real dbt
def _load(db: Path) -> None:
    """``landing``: 1 h of orders; ``raw``: 2 h, so the two are told apart by row count."""
    conn = duckdb.connect(str(db))
    try:
        for schema, hours in (("landing", 1), ("raw", 2)):
            create_raw_tables(conn, "duckdb", schema)
            load_batch(
                conn,
                "duckdb",
                T0,
                T0 + hours * 3600,
                orders_per_minute=5,
                duplicate_share=0,
                redelivery_share=0,
                schema=schema,
            )
    finally:
        conn.close()


def _orders_in_staging(db: Path) -> int:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        [(n,)] = conn.execute("select count(*) from staging.stg_ecs_order_info").fetchall()
        return int(n)
    finally:
        conn.close()


def test_raw_schema_setting_reaches_the_cli_and_its_own_vars_win(tmp_path: Path) -> None:
    db = tmp_path / "vars.duckdb"
    _load(db)
    env = {
        "DBT_RUNNER_WAREHOUSE__TYPE": "duckdb",
        "DBT_RUNNER_WAREHOUSE__PATH": str(db),
        "DBT_RUNNER_STATE_DIR": str(tmp_path / "state"),
        "DBT_RUNNER_RAW_SCHEMA": "landing",
        "DBT_RUNNER_VARS": '{"accepted_currencies": ["USD"], "accepted_values_severity": "error"}',
        "DBT_RUNNER_RETRY__ATTEMPTS": "1",
    }
    runner = CliRunner()

    # the settings reach run and test: staging reads landing.*, and the currency
    # domain from DBT_RUNNER_VARS makes the hourly tests fail (other currencies exist)
    result = runner.invoke(main, ["cycle", "--json"], env=env)
    assert result.exit_code == 1, result.output
    assert _orders_in_staging(db) == 300  # 60 min x 5 orders/min, from landing
    payload = json.loads(result.stdout)
    assert [n["name"] for n in payload["tests"]["nodes"] if n["status"] == "fail"] == [
        "accepted_values_var_stg_ecs_order_info_currency__add_time__accepted_currencies"
    ]

    # the command's own --vars win over the settings, key by key
    result = runner.invoke(
        main,
        ["cycle", "--vars", "{raw_schema: raw, accepted_values_severity: warn}"],
        env={**env, "DBT_RUNNER_VARS": '{"accepted_currencies": ["USD"]}'},
    )
    assert result.exit_code == 0, result.output
    assert _orders_in_staging(db) == 600  # 120 min, from raw
