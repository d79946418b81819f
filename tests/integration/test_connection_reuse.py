"""Connection reuse (issue 25): what dbt sends and what it builds are the same with and
without it; only the connection opens go down.

A PostgreSQL server of this module's own logs every statement and every connection
(``log_statement = all``, ``log_connections = on``), as ``benchmarks/cycle.py`` counts
them. Each comparison runs the same commands on identical data in two databases: once
with ``CONNECTIONS__REUSE=command`` (the default: a command's nodes share connections)
and once ``off`` (a new connection per node, as plain dbt); plain dbt against the
library with the default is the differential suite
(``tests/integration/test_differential_postgres.py``).

``tests/fixtures/session_state_project`` is the project that would show a leak: each
of its nodes records what its connection carried from before (temporary tables,
``SET`` values, prepared statements, ``LISTEN``), then leaves all of these behind,
under fixed names that fail when they are already there.
"""

from __future__ import annotations

import collections
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import DbtSession, RunResult, Settings
from dbt_runner._dbt import reuse
from dbt_runner.synthetic import create_raw_tables, load_batch
from testbed._require import require_service
from testbed.pg_fixtures import PgDatabase, _database
from testbed.postgres import (
    LoggedActivity,
    PostgresServer,
    logged_activity,
    postgres_unavailable_reason,
)
from testbed.settings import make_settings
from testbed.sshd import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PROBE = Path(__file__).resolve().parents[1] / "fixtures" / "session_state_project"
T0 = 1_700_000_000
STAGING = ("stg_ecs_order_info", "stg_uni_tracking_info", "stg_uni_tracking_spath")
#: what the issue asks of a cycle on PostgreSQL (connection opens counted in the server log)
MAX_OPENS_PER_CYCLE = 8


@pytest.fixture(scope="module")
def logged() -> Iterator[PostgresServer]:
    """A PostgreSQL server (TLS on) that logs every statement and connection."""
    reason = postgres_unavailable_reason()
    require_service(reason is None, reason or "")
    server = PostgresServer()
    try:
        server.start()
        for key in ("log_statement", "log_connections"):
            server.execute(
                f"alter system set {key} = '{'all' if key == 'log_statement' else 'on'}'"
            )
        server.execute("select pg_reload_conf()")
        yield server
    finally:
        server.close()


class Side:
    """One database of the logged server, and what its role did there."""

    def __init__(self, server: PostgresServer, db: PgDatabase) -> None:
        self.server, self.db = server, db
        self._mark = 0

    def mark(self) -> None:
        """Count from here on."""
        self._mark = len(self.server.log_text())

    def activity(self) -> LoggedActivity:
        """Statements and connection opens of the side's role since :meth:`mark`."""
        return logged_activity(self.server.log_text()[self._mark :], self.db.user, self.db.dbname)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return sorted(self.server.execute(sql, dbname=self.db.dbname), key=repr)

    def backends(self) -> int:
        rows = self.server.execute(
            f"select count(*) from pg_stat_activity where usename = '{self.db.user}'"
        )
        return int(rows[0][0])

    def normalized(self, statements: tuple[str, ...]) -> collections.Counter[str]:
        """The statements as comparable text: the database's name and dbt's temporary
        tables' timestamps left out (the two sides differ only there); a reset that
        ends in the node's transaction counts as the BEGIN it stands for."""
        out = (
            "BEGIN"
            if s == reuse.RESET_IN_TRANSACTION
            else re.sub(r"__dbt_tmp\d+", "__dbt_tmp", s.replace(self.db.dbname, "<db>"))
            for s in statements
        )
        return collections.Counter(out)


@pytest.fixture
def sides(logged: PostgresServer) -> Iterator[dict[str, Side]]:
    """Two databases (and roles) on the logged server: ``reuse`` and ``fresh``."""
    with _database(logged, "dbr_cra") as a, _database(logged, "dbr_crb") as b:
        yield {
            name: Side(logged, PgDatabase(logged.host, logged.port, *names))
            for name, names in (("reuse", a), ("fresh", b))
        }


def statuses(result: RunResult) -> dict[str, str]:
    return {n.unique_id: n.status for n in result.nodes}


def rows(result: RunResult) -> dict[str, int | None]:
    return {n.unique_id: n.rows_affected for n in result.nodes}


# ------------------------------------------------------------------ a staging cycle
def _load(side: Side, start: int, end: int) -> None:
    conn = side.db.connect()
    try:
        create_raw_tables(conn, "postgres")
        load_batch(conn, "postgres", start, end, orders_per_minute=6, seed=7, late_share=0.05)
    finally:
        conn.close()


def _cycle(side: Side, tmp_path: Path, reuse_on: bool) -> tuple[RunResult, RunResult]:
    """Staging built once; then one cycle (run_staging + run_tests) in a new session, as a
    fresh process runs it, counted from the log."""
    scope = "command" if reuse_on else "off"
    settings = make_settings(side.db, None, tmp_path / "state", connections={"reuse": scope})
    _load(side, T0, T0 + 7200)
    with DbtSession(settings) as session:
        assert session.run_staging().success
    _load(side, T0 + 7200, T0 + 8100)
    side.mark()
    with DbtSession(settings) as session:
        staging, tests = session.run_staging(), session.run_tests()
    assert staging.success, staging.summary()
    assert tests.success, tests.summary()
    return staging, tests


def test_a_cycle_sends_what_plain_dbt_sends_over_at_most_8_connections(
    sides: dict[str, Side], tmp_path: Path
) -> None:
    reused, fresh = sides["reuse"], sides["fresh"]
    runs = {
        name: _cycle(side, tmp_path / name, reuse_on=name == "reuse")
        for name, side in sides.items()
    }
    seen = {name: side.activity() for name, side in sides.items()}
    # the same nodes with the same outcome, the same staging tables
    for a, b in zip(runs["reuse"], runs["fresh"], strict=True):
        assert statuses(a) == statuses(b)
        assert rows(a) == rows(b)
    for table in STAGING:
        query = f"select * from stg.{table}"
        assert reused.rows(query) == fresh.rows(query), table
    # every statement dbt sent without reuse, it sent with reuse (a reset in the place of
    # the BEGIN a new connection starts with)...
    sent = reused.normalized(seen["reuse"].statements)
    plain = fresh.normalized(seen["fresh"].statements)
    assert plain - sent == collections.Counter()
    assert seen["reuse"].statements.count(reuse.RESET_IN_TRANSACTION) > 0
    # ...and nothing else but the rollback of the one transaction dbt leaves open when it
    # lists the schemas: the reuse costs one statement, and saves the opens
    assert sent - plain == collections.Counter({"ROLLBACK": 1})
    assert seen["reuse"].connections <= MAX_OPENS_PER_CYCLE < seen["fresh"].connections


# ------------------------------------------------------------------ session state
INHERITED = (
    "select node, run, tz, search_path, temp_tables, prepared, listening from {schema}.inherited"
)


def _probe(
    side: Side, tmp_path: Path, schema: str, runs: int = 2, **connections: Any
) -> dict[str, Any]:
    """Runs of the probe project in one session, one thread: every node after the
    first gets its connection from an earlier node (reuse on), or a new one (off)."""
    settings = make_settings(
        side.db,
        None,
        tmp_path / schema,
        schema=schema,
        project_dir=PROBE,
        threads=1,
        connections=connections,
    )
    with DbtSession(settings) as session:
        results = [
            session.invoke(["run", "--vars", json.dumps({"run": str(n)})])
            for n in range(1, runs + 1)
        ]
    pids = side.rows(f"select pid from {schema}.inherited")
    return {
        "statuses": tuple(statuses(r) for r in results),
        "inherited": side.rows(INHERITED.format(schema=schema)),
        "tables": [side.rows(f"select * from {schema}.probe_{m}") for m in "abcd"]
        if all(r.success for r in results)
        else None,
        "connections": len(set(pids)),
    }


def test_a_reused_connection_carries_nothing_from_the_node_before(
    sides: dict[str, Side], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    side = sides["reuse"]
    fresh = _probe(side, tmp_path, "s_fresh", reuse="off")
    reused = _probe(side, tmp_path, "s_reuse")
    nodes = {f"model.session_state.probe_{m}": "success" for m in "abcd"}
    nodes["operation.session_state.session_state-on-run-start-0"] = "success"
    assert fresh["statuses"] == (nodes, nodes)
    assert fresh["connections"] == 8  # plain dbt: one connection per node
    assert reused["connections"] < 8  # the nodes did share connections...
    # ...and found them as a new connection is: the same rows, statuses and tables
    assert reused["statuses"] == fresh["statuses"]
    assert reused["inherited"] == fresh["inherited"]
    assert reused["tables"] == fresh["tables"]
    # the probe sees a leak when there is one: the same reuse without the reset
    monkeypatch.setattr(reuse, "RESET_STATEMENT", "select 1")
    monkeypatch.setattr(reuse, "RESET_IN_TRANSACTION", "BEGIN")
    leaky = _probe(side, tmp_path, "s_leaky", runs=1)
    assert leaky["statuses"][0] != nodes  # a later node finds the first one's temp table
    assert leaky["inherited"] != [row for row in fresh["inherited"] if row[1] == "1"]


def test_a_kept_connection_the_server_ended_is_not_handed_to_dbt(
    sides: dict[str, Side], tmp_path: Path
) -> None:
    """A kept connection ended while idle (an administrator, idle_session_timeout, a
    server restart): the next command gets new connections and succeeds."""
    side = sides["reuse"]
    settings = make_settings(
        side.db,
        None,
        tmp_path / "state",
        schema="s_killed",
        project_dir=PROBE,
        threads=2,
        retry={"attempts": 1},  # a failure is not hidden by a retry
        connections={"reuse": "session"},  # kept from one command to the next
    )
    with DbtSession(settings) as session:
        assert session.invoke(["run"]).success
        assert side.backends() > 0  # kept for the next command
        side.server.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            f"where usename = '{side.db.user}'"
        )
        assert wait_until(lambda: side.backends() == 0, timeout=10)
        again = session.invoke(["run", "--vars", json.dumps({"run": "2"})])
        assert again.success, again.summary()
        assert again.attempts == 1
    first, second = (
        {pid for (pid,) in side.rows(f"select pid from s_killed.inherited where run = '{run}'")}
        for run in "12"
    )
    assert first.isdisjoint(second)


def test_kept_connections_close_with_their_command_or_after_idle_s(
    sides: dict[str, Side], tmp_path: Path
) -> None:
    """The default keeps a connection for its command only: none is left once the command
    ended, as with plain dbt. Across commands (``session``) they wait for the next command,
    then close after ``idle_s`` unused, or with the session."""
    side = sides["reuse"]

    def settings(**connections: Any) -> Settings:
        return make_settings(
            side.db,
            None,
            tmp_path / "state",
            schema="s_idle",
            project_dir=PROBE,
            threads=2,
            connections=connections,
        )

    with DbtSession(settings()) as session:
        assert session.invoke(["run"]).success
        assert wait_until(lambda: side.backends() == 0, timeout=5), "kept past the command"
    with DbtSession(settings(reuse="session", idle_s=600)) as session:
        assert session.invoke(["run"]).success
        assert side.backends() > 0
    assert wait_until(lambda: side.backends() == 0, timeout=5), "left open by close()"
    with DbtSession(settings(reuse="session", idle_s=1)) as session:
        assert session.invoke(["run"]).success
        assert wait_until(lambda: side.backends() == 0, timeout=15), "kept past idle_s"
        assert session.invoke(["run"]).success  # and the session goes on


def test_redshift_connections_are_not_kept(
    pg_server: PostgresServer,
    redshift_db: PgDatabase,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """dbt-redshift (the stand-in): Redshift has no DISCARD, so each node gets its own
    connection, as in plain dbt, and the log says why."""
    settings = make_settings(
        redshift_db,
        None,
        tmp_path / "state",
        wh_type="redshift",
        schema="s_rs",
        project_dir=PROBE,
        threads=1,
    )
    with caplog.at_level(logging.INFO, "dbt_runner"), DbtSession(settings) as session:
        result = session.invoke(["run"])
    assert result.success, result.summary()
    rows = pg_server.execute("select pid from s_rs.inherited", dbname=redshift_db.dbname)
    assert len(rows) == 4 and len(set(rows)) == 4
    assert "Amazon Redshift has no DISCARD" in caplog.text
