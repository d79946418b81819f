"""Plain ``dbt`` and a ``DbtSession`` on identical copies of a foreign project.

The differential suite (issue 12): ``tests/fixtures/foreign_project`` — another
team's project with seeds, two ``local:`` packages, selectors, a snapshot, unit
tests, an ephemeral and an incremental model, a source with freshness, a model
and a data test that fail on purpose — is copied twice. Plain ``dbt`` runs a
sequence of commands, each a process of its own, in copy A (the way a user runs it:
from the project directory, ``DBT_PROFILES_DIR`` set; forked after dbt's import,
:mod:`tests._dbt_fork`), the library runs the same
sequence through ``DbtSession.invoke`` in copy B (one long-lived session for
the whole sequence, as a notebook or a long-running orchestrator holds one),
each against its own database.
After every step each side records what a user would look at: the exit
status, the per-node statuses and failure counts of ``run_results.json`` (and
``RunResult.nodes``), the warehouse's tables and rows, and the artifacts.

Both sides write to their project's own ``target/`` and ``logs/`` (the library's
defaults for a writable project), so no path needs normalising. The sequences
run once per module (module-scoped fixtures); the tests only compare.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import DbtSession, RunResult, Settings
from tests import _dbt_fork

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PROJECT = "foreign_project"
PACKAGES = "foreign_packages"
#: one plain dbt command may take this long on a loaded 2-core machine
PLAIN_TIMEOUT_S = 240

#: what the project promises (plain dbt's outcome, checked so no comparison is vacuous)
BROKEN_MODEL = "model.foreign_shop.broken_cast"
FAILING_TEST = "test.foreign_shop.assert_orders_are_small"
UNIT_TEST = "unit_test.foreign_shop.customer_orders.counts_and_sums_orders_per_customer"
SNAPSHOT = "snapshot.foreign_shop.customers_snapshot"
PACKAGE_MODEL = "model.fx_money.fx_currencies"
INCREMENTAL = "model.foreign_shop.orders_incremental"
SOURCES = ("source.foreign_shop.shop_raw.raw_customers", "source.foreign_shop.shop_raw.raw_orders")


@dataclass(frozen=True)
class Step:
    """One command of the sequence.

    ``args`` may hold ``{state}``: the side's copy of ``target/`` saved by an
    earlier step with ``save_state=True`` (for ``clone --state``).
    """

    key: str
    args: tuple[str, ...]
    #: snapshot the warehouse after this step
    data: bool = False
    #: copy target/ to state/ after this step
    save_state: bool = False


@dataclass
class Outcome:
    """What one side saw after one step."""

    step: Step
    args: list[str]
    ok: bool
    #: unique_id -> status of run_results.json when this step wrote it, else None
    statuses: dict[str, str] | None = None
    #: unique_id -> failures of run_results.json (tests: failing rows)
    failures: dict[str, int | None] | None = None
    #: unique_id -> the whole run_results.json entry, and that file's invocation id
    results: dict[str, dict[str, Any]] | None = None
    invocation_id: str | None = None
    #: the warehouse (schema.table -> (columns, sorted rows)) when ``step.data``
    data: dict[str, Any] | None = None
    #: plain dbt's stdout (stdout + stderr)
    output: str = ""
    #: the library's result (None on the plain side)
    result: RunResult | None = None
    #: an exception the library raised instead of returning a result
    raised: BaseException | None = None
    #: unique_id -> status of target/sources.json when this step wrote it
    freshness: dict[str, str] | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)
    #: the exit code: plain dbt's process, the library's ``RunResult.exit_code``
    code: int | None = None
    #: what dbt wrote to the project's logs/dbt.log during this step
    dbt_log: str = ""
    #: the library's log records during this step: (level, logger, message)
    records: list[tuple[int, str, str]] = field(default_factory=list)


def make_copy(root: Path, project: str = PROJECT, packages: str = PACKAGES) -> Path:
    """``root/<project>`` (+ its ``local:`` packages beside it): a fresh copy."""
    root.mkdir(parents=True, exist_ok=True)
    for name in (project, packages):
        shutil.copytree(
            FIXTURES / name,
            root / name,
            ignore=shutil.ignore_patterns("target", "logs", "dbt_packages", "*.duckdb"),
        )
    return root / project


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _invocation(path: Path) -> str | None:
    data = _json(path)
    return None if data is None else data.get("metadata", {}).get("invocation_id")


Warehouse = Callable[[], dict[str, Any]]


class Side:
    """One copy of the project and how to run dbt in it."""

    name = "?"

    def __init__(self, project: Path, profiles_dir: Path, snapshot: Warehouse) -> None:
        self.project = project
        self.profiles_dir = profiles_dir
        self.snapshot = snapshot
        self.state = project.parent / "state"

    def _run(self, args: list[str]) -> Outcome:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release what the side holds after its sequence (nothing, for plain dbt)."""

    def step(self, step: Step) -> Outcome:
        args = [a.replace("{state}", str(self.state)) for a in step.args]
        target = self.project / "target"
        before = _invocation(target / "run_results.json")
        fresh_before = _invocation(target / "sources.json")
        log = self.project / "logs" / "dbt.log"
        log_offset = log.stat().st_size if log.exists() else 0
        outcome = self._run(args)
        outcome.step = step
        outcome.dbt_log = _read_from(log, log_offset)
        after = _json(target / "run_results.json")
        if after is not None and after["metadata"]["invocation_id"] != before:
            outcome.statuses = {r["unique_id"]: r["status"] for r in after["results"]}
            outcome.failures = {r["unique_id"]: r.get("failures") for r in after["results"]}
            outcome.results = {r["unique_id"]: r for r in after["results"]}
            outcome.invocation_id = after["metadata"]["invocation_id"]
        sources = _json(target / "sources.json")
        if sources is not None and sources["metadata"]["invocation_id"] != fresh_before:
            outcome.freshness = {r["unique_id"]: r["status"] for r in sources["results"]}
        outcome.artifacts = artifacts(target)
        if step.data:
            outcome.data = self.snapshot()
        if step.save_state:
            shutil.rmtree(self.state, ignore_errors=True)
            shutil.copytree(target, self.state)
        return outcome


def _read_from(path: Path, offset: int) -> str:
    """What was appended to ``path`` after ``offset`` bytes (all of it if it shrank)."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[offset:].decode(errors="replace") if len(data) >= offset else data.decode()


def artifacts(target: Path) -> dict[str, Any]:
    """The artifact facts a user reads: manifest node ids, catalog node ids."""
    facts: dict[str, Any] = {}
    manifest = _json(target / "manifest.json")
    if manifest is not None:
        facts["manifest"] = sorted(
            [*manifest["nodes"], *manifest["sources"], *manifest.get("unit_tests", {})]
        )
        facts["manifest_invocation"] = manifest["metadata"]["invocation_id"]
    catalog = _json(target / "catalog.json")
    if catalog is not None:
        facts["catalog"] = (sorted(catalog["nodes"]), sorted(catalog["sources"]))
        facts["catalog_invocation"] = catalog["metadata"]["invocation_id"]
    return facts


class PlainDbt(Side):
    """``dbt <args>`` as a process of its own from the project directory (forked after
    dbt's import: :mod:`tests._dbt_fork`)."""

    name = "plain dbt"

    def __init__(
        self, project: Path, profiles_dir: Path, snapshot: Warehouse, env: Mapping[str, str]
    ) -> None:
        super().__init__(project, profiles_dir, snapshot)
        self.env = {
            **os.environ,
            **env,
            "DBT_PROFILES_DIR": str(profiles_dir),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DBT_USE_COLORS": "false",
        }

    def _run(self, args: list[str]) -> Outcome:
        done = _dbt_fork.run(args, cwd=self.project, env=self.env, timeout=PLAIN_TIMEOUT_S)
        return Outcome(
            step=Step("", ()),
            args=args,
            ok=done.returncode == 0,
            output=done.stdout + done.stderr,
            code=done.returncode,
        )


class Library(Side):
    """``session.invoke(args)``, every step in one ``DbtSession``: what a long-lived
    orchestrator or notebook session does (one tunnel, one parse, reused manifests).
    ``close()`` ends the session after the sequence."""

    name = "dbt_runner"

    def __init__(
        self,
        project: Path,
        profiles_dir: Path,
        snapshot: Warehouse,
        settings: Callable[[], Settings],
    ) -> None:
        super().__init__(project, profiles_dir, snapshot)
        self.settings = settings
        self._session: DbtSession | None = None

    def _run(self, args: list[str]) -> Outcome:
        with _records("dbt_runner") as records:
            try:
                if self._session is None:
                    self._session = DbtSession(self.settings()).open()
                result = self._session.invoke(args)
            except Exception as exc:  # a library bug: recorded, asserted by the tests
                return Outcome(step=Step("", ()), args=args, ok=False, raised=exc)
        return Outcome(
            step=Step("", ()),
            args=args,
            ok=result.success,
            result=result,
            code=result.exit_code,
            records=records,
        )

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class _Collect(logging.Handler):
    def __init__(self, records: list[tuple[int, str, str]]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.name, record.getMessage()))


@contextlib.contextmanager
def _records(name: str) -> Iterator[list[tuple[int, str, str]]]:
    """The log records of logger ``name`` (and its children) inside the block, every level."""
    records: list[tuple[int, str, str]] = []
    logger = logging.getLogger(name)
    handler, level = _Collect(records), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def duckdb_sides(
    root: Path,
    project: str = PROJECT,
    packages: str = PACKAGES,
    path_variable: str = "FOREIGN_DUCKDB_PATH",
) -> tuple[PlainDbt, Library, dict[str, str]]:
    """Plain dbt on ``root/a``, the library on ``root/b``, each with its own DuckDB file
    (the project's DuckDB profile reads it from ``path_variable``); the library's env."""
    plain_project = make_copy(root / "a", project, packages)
    lib_project = make_copy(root / "b", project, packages)
    plain_db, lib_db = root / "a" / "warehouse.duckdb", root / "b" / "warehouse.duckdb"
    plain = PlainDbt(
        plain_project,
        plain_project / "profiles" / "duckdb",
        duckdb_snapshot(plain_db),
        {path_variable: str(plain_db)},
    )
    profiles = lib_project / "profiles" / "duckdb"
    lib = Library(
        lib_project,
        profiles,
        duckdb_snapshot(lib_db),
        lambda: library_settings(lib_project, profiles_dir=profiles),
    )
    return plain, lib, {path_variable: str(lib_db)}


def library_settings(project: Path, **values: Any) -> Settings:
    """The library's settings for copy B: no back-off waits (failures here are not transient)."""
    values.setdefault("retry", {"initial_wait_s": 0, "max_wait_s": 0})
    return Settings(project_dir=project, **values)


def run_sequence(side: Side, steps: Sequence[Step]) -> dict[str, Outcome]:
    """Run ``steps`` in order on ``side``; outcomes by step key."""
    try:
        return {step.key: side.step(step) for step in steps}
    finally:
        side.close()


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set (the in-process library reads env_var() there)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in values.items():
            mp.setenv(key, value)
        yield


# ----------------------------------------------------------------- the command sequence
#: the realistic order a team runs its project in
STEPS = (
    Step("deps", ("deps",)),
    Step("debug", ("debug",)),
    Step("parse", ("parse",)),
    Step("seed", ("seed",), data=True),
    Step("seed-ci", ("seed", "--target", "ci"), data=True),
    Step("snapshot", ("snapshot",), data=True),
    Step("run", ("run",), data=True),
    Step("retry-run", ("retry",)),
    Step("run-exclude", ("run", "--exclude", "tag:broken"), data=True, save_state=True),
    Step("test", ("test",)),
    Step("build-selector", ("build", "--selector", "nightly"), data=True),
    Step("retry-build", ("retry",)),
    Step("compile", ("compile", "--exclude", "tag:broken")),
    Step("compile-inline", ("compile", "--inline", "select * from {{ ref('stg_orders') }}")),
    Step("ls-name", ("ls", "--output", "name")),
    Step("ls-path", ("ls", "--output", "path", "--select", "tag:marts")),
    Step("ls-json", ("ls", "--output", "json", "--resource-type", "model")),
    Step("ls-selector", ("ls", "--selector", "marts_and_parents", "--output", "selector")),
    Step("show-model", ("show", "--select", "customer_orders")),
    Step("show-inline", ("show", "--inline", "select order_id from {{ ref('stg_orders') }}")),
    Step("run-operation", ("run-operation", "orders_above", "--args", "{min_cents: 1000}")),
    Step("freshness", ("source", "freshness")),
    Step("docs", ("docs", "generate")),
    Step(
        "clone",
        ("clone", "--state", "{state}", "--target", "ci", "--exclude", "tag:broken"),
        data=True,
    ),
    Step("clean", ("clean",)),
)
#: the representative subset for the PostgreSQL and tunnel paths
SUBSET = (
    "deps",
    "seed",
    "snapshot",
    "run",
    "retry-run",
    "run-exclude",
    "test",
    "build-selector",
    "retry-build",
    "ls-name",
    "show-model",
    "freshness",
)
#: the tunnel path: the subset plus the commands that connect or write artifacts (its session's
#: target is fixed when the tunnel opens, so the ``--target ci`` steps are not in it)
TUNNEL_STEPS = (*SUBSET, "debug", "parse", "compile", "run-operation", "docs")
#: PostgreSQL direct (and plain dbt's side for both PostgreSQL paths): the tunnel path's
#: steps plus the ``--target ci`` ones (the other ls/show/compile forms and clean do not
#: differ by adapter: they run on DuckDB)
POSTGRES_STEPS = (*TUNNEL_STEPS, "seed-ci", "clone")
#: commands that fail on purpose (a broken model, a failing test, stale sources)
EXPECTED_FAILURES = frozenset(
    {"run", "retry-run", "test", "build-selector", "retry-build", "freshness"}
)
#: steps whose run_results.json lists nodes
NODE_STEPS = frozenset(
    {
        "seed",
        "seed-ci",
        "snapshot",
        "run",
        "retry-run",
        "run-exclude",
        "test",
        "build-selector",
        "retry-build",
        "compile",
        "clone",
    }
)


def steps(keys: Sequence[str] | None = None) -> tuple[Step, ...]:
    """The steps named by ``keys`` (all of them when None), in the sequence's order."""
    return tuple(s for s in STEPS if keys is None or s.key in keys)


@dataclass
class Runs:
    """Both sides' outcomes of one sequence, by step key."""

    plain: dict[str, Outcome]
    lib: dict[str, Outcome]
    plain_project: Path
    lib_project: Path

    def pair(self, key: str) -> tuple[Outcome, Outcome]:
        return self.plain[key], self.lib[key]


# ----------------------------------------------------------------- warehouse snapshots
_SYSTEM_SCHEMAS = ("information_schema", "pg_catalog", "pg_toast")


def _normal(value: Any) -> Any:
    """A cell as comparable data (Decimal/datetime as their text: same on both sides)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _collect(
    cursor_execute: Callable[[str], tuple[list[str], list[tuple[Any, ...]]]],
) -> dict[str, Any]:
    _, tables = cursor_execute(
        "select table_schema, table_name from information_schema.tables "
        f"where table_schema not in {_SYSTEM_SCHEMAS!r} order by 1, 2"
    )
    data: dict[str, Any] = {}
    for schema, table in tables:
        columns, rows = cursor_execute(f'select * from "{schema}"."{table}"')
        normal = [tuple(_normal(v) for v in row) for row in rows]
        data[f"{schema}.{table}"] = (columns, sorted(normal, key=repr))
    return data


def duckdb_snapshot(path: Path) -> Warehouse:
    """Every table and view of the DuckDB file, rows sorted.

    The connection uses DuckDB's default configuration so that, in the library's
    process, it shares the database dbt-duckdb holds open (a read-only
    connection would be refused as "a different configuration").
    """

    def snapshot() -> dict[str, Any]:
        import duckdb

        if not path.exists():
            return {}
        con = duckdb.connect(str(path))
        try:

            def execute(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
                cur = con.execute(sql)
                return [d[0] for d in cur.description], cur.fetchall()

            return _collect(execute)
        finally:
            con.close()

    return snapshot


def postgres_snapshot(connect: Callable[[], Any]) -> Warehouse:
    """Every table and view of a PostgreSQL database, rows sorted."""

    def snapshot() -> dict[str, Any]:
        conn = connect()
        try:
            with conn.cursor() as cur:

                def execute(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
                    cur.execute(sql)
                    return [d[0] for d in cur.description], list(cur.fetchall())

                return _collect(execute)
        finally:
            conn.close()

    return snapshot


# ----------------------------------------------------------------- comparisons
def node_statuses(outcome: Outcome) -> dict[str, str]:
    """unique_id -> status of the library's result."""
    assert outcome.result is not None, f"the library raised: {outcome.raised!r}"
    return {n.unique_id: n.status for n in outcome.result.nodes}


def describe(outcome: Outcome) -> str:
    """What went wrong on a side, for assertion messages."""
    if outcome.raised is not None:
        return f"raised {outcome.raised!r}"
    if outcome.result is not None:
        return outcome.result.summary()
    return outcome.output[-3000:]


# ----------------------------------------------------------------- the shared checks
def parametrize_keys(metafunc: pytest.Metafunc) -> None:
    """``pytest_generate_tests`` of the warehouse modules: keys from the class's STEPS.

    ``step_key``: every step the library returns a result for; ``node_key``: steps
    with per-node results; ``data_key``: steps after which the warehouse is compared.
    """
    cls = metafunc.cls
    if cls is None or not hasattr(cls, "STEPS"):
        return
    keys = [s.key for s in cls.STEPS]
    choices = {
        "step_key": list(keys),
        "node_key": [k for k in keys if k in NODE_STEPS],
        "data_key": [s.key for s in cls.STEPS if s.data],
        "failing_key": [k for k in keys if k in ("test", "build-selector", "retry-build")],
    }
    for name, values in choices.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, values)


class SameOutcomes:
    """What both projects compare after a step (``node_key``, ``data_key`` parametrized)."""

    def test_per_node_statuses_equal_plain_dbt(self, runs: Runs, node_key: str) -> None:
        plain, lib = runs.pair(node_key)
        assert plain.statuses, f"{node_key}: plain dbt wrote no run_results.json"
        # the library's own run_results.json and its RunResult say what plain dbt's says
        assert lib.statuses == plain.statuses, describe(lib)
        assert node_statuses(lib) == plain.statuses

    def test_warehouse_holds_the_same_tables_and_rows(self, runs: Runs, data_key: str) -> None:
        plain, lib = runs.pair(data_key)
        assert plain.data, f"{data_key}: plain dbt's warehouse is empty"
        assert sorted(lib.data or {}) == sorted(plain.data)
        for table, content in plain.data.items():
            assert (lib.data or {})[table] == content, table


class DifferentialChecks(SameOutcomes):
    """The comparisons every warehouse path makes (subclass with STEPS and a ``runs`` fixture)."""

    STEPS: tuple[Step, ...] = ()

    def test_plain_dbt_does_what_the_foreign_project_promises(self, runs: Runs) -> None:
        """Guards every comparison against comparing two identical failures."""
        plain = runs.plain
        for key in plain:
            expected = key not in EXPECTED_FAILURES
            assert plain[key].ok is expected, (key, plain[key].output[-2000:])
        run = plain["run"].statuses or {}
        assert run[BROKEN_MODEL] == "error" and run[INCREMENTAL] == "success"
        assert run[PACKAGE_MODEL] == "success"  # a model of a local: package
        assert plain["retry-run"].statuses == {BROKEN_MODEL: "error"}
        test = plain["test"].statuses or {}
        assert test[FAILING_TEST] == "fail" and test[UNIT_TEST] == "pass"
        assert (plain["test"].failures or {})[FAILING_TEST] == 1
        assert (plain["snapshot"].statuses or {})[SNAPSHOT] == "success"
        built = plain["build-selector"].statuses or {}
        assert BROKEN_MODEL not in built and built[UNIT_TEST] == "pass"
        assert plain["freshness"].freshness == {SOURCES[0]: "error", SOURCES[1]: "warn"}
        assert "dev.customers_snapshot" in (plain["snapshot"].data or {})

    def test_each_command_succeeds_or_fails_like_plain_dbt(self, runs: Runs, step_key: str) -> None:
        plain, lib = runs.pair(step_key)
        assert lib.raised is None, f"{step_key}: the library raised {lib.raised!r}"
        assert lib.ok is plain.ok, f"{step_key}: plain ok={plain.ok}, library: {describe(lib)}"
        assert lib.result is not None
        assert lib.result.attempts == 1  # nothing here is transient: no blind re-runs

    def test_failing_rows_per_test_equal_plain_dbt(self, runs: Runs, failing_key: str) -> None:
        plain, lib = runs.pair(failing_key)
        assert plain.failures is not None and plain.failures[FAILING_TEST] == 1
        assert lib.failures == plain.failures

    def test_failed_nodes_are_the_ones_plain_dbt_reports(self, runs: Runs) -> None:
        plain, lib = runs.pair("build-selector")
        assert lib.result is not None
        bad = {"error", "fail", "skipped", "runtime error"}
        expected = {uid for uid, status in (plain.statuses or {}).items() if status in bad}
        assert expected == {FAILING_TEST}
        assert {n.unique_id for n in lib.result.failed_nodes} == expected
        assert lib.result.error is not None and lib.result.error.kind.value == "test_failure"
        assert lib.result.exit_code == 1

    def test_source_freshness_statuses_equal_plain_dbt(self, runs: Runs) -> None:
        plain, lib = runs.pair("freshness")
        assert plain.freshness
        assert lib.freshness == plain.freshness
        assert node_statuses(lib) == plain.freshness

    def test_deps_installs_the_same_local_packages(self, runs: Runs) -> None:
        for project in (runs.plain_project, runs.lib_project):
            lock = (project / "package-lock.yml").read_text()
            assert "fx_checks" in lock and "fx_money" in lock


# ----------------------------------------------------------------- the second foreign project
# ``tests/fixtures/bakery_project`` (issue 24): another team's project with unit tests, a
# snapshot, a semantic layer (saved queries with exports: NO-OPs in ``dbt build``, a day
# time spine), freshness rules that pass, warn, go stale and fail, and settings that make
# dbt print deprecation warnings, on every command (its flags) and while it parses. The
# suite compares dbt's own messages per command: what each side's ``logs/dbt.log`` got.
BAKERY = "bakery_project"
BAKERY_PACKAGES = "bakery_packages"
#: the first command that parses is ``seed``: in the session that is its own parse, then
#: the seed, and dbt's messages of both must read as plain dbt's one ``dbt seed``
BAKERY_STEPS = (
    Step("deps", ("deps",)),
    Step("seed", ("seed",), data=True),
    Step("build", ("build",), data=True),  # seeds again, snapshot, models, tests, NO-OPs
    Step("freshness", ("source", "freshness")),
)
BAKERY_NODE_STEPS = frozenset({"seed", "build"})
BAKERY_FAILURES = frozenset({"freshness"})  # stale and missing sources, on purpose

_SOURCE = "source.crumb_bakery.till."
#: plain dbt's freshness verdicts in target/sources.json, as the project's rules make them
BAKERY_FRESHNESS = {
    _SOURCE + "raw_orders": "error",  # last order in 2024, error_after 3 days: stale
    _SOURCE + "raw_customers": "warn",  # warn_after only
    _SOURCE + "raw_shops": "pass",  # loaded_at_query: the clock
}
#: never loaded: its check fails (dbt's "runtime error"; sources.json leaves it out)
MISSING_SOURCE = _SOURCE + "raw_deliveries"
SAVED_QUERIES = (
    "saved_query.crumb_bakery.daily_takings",
    "saved_query.crumb_bakery.spend_per_customer",
)
BAKERY_UNIT_TESTS = (
    "unit_test.crumb_bakery.stg_products.prices_are_cents_in_units",
    "unit_test.crumb_bakery.orders.baskets_flag_bread_and_drinks",
    "unit_test.crumb_bakery.customers.lifetime_spend_counts_paid_orders_only",
)
#: a test that warns on purpose (its unique_id ends in a hash)
WARNING_TEST = "crumb_kit_at_least_stg_products_unit_price__2_5"
#: met on every command (dbt reads the project's flags), while parsing, in source freshness
FLAGS_DEPRECATION = "WEOIncludeExcludeDeprecation"
PARSE_DEPRECATIONS = {
    "MissingArgumentsPropertyInGenericTestDeprecation": 2,
    "PropertyMovedToConfigDeprecation": 1,
    "MFTimespineWithoutYamlConfigurationDeprecation": 1,
}
FRESHNESS_DEPRECATION = "SourceFreshnessProjectHooksNotRun"

_SUMMARY = "Summary of encountered deprecations:"
_OCCURRENCES = re.compile(r"^- (\w+): (\d+) occurrences?$")


def deprecation_summaries(text: str) -> list[dict[str, int]]:
    """Each "Summary of encountered deprecations" in ``text`` (dbt's console, its log file
    or a relayed log line) as {deprecation: occurrences}, in order."""
    found = []
    for part in text.split(_SUMMARY)[1:]:
        counts: dict[str, int] = {}
        # a relayed log line has it on one line: "... - A: 1 occurrence - B: 2 occurrences To see"
        for line in re.split(r"\n| (?=- \w+: \d+ occurrence)", part):
            match = _OCCURRENCES.match(line.strip().split(" To see")[0].strip())
            if match:
                counts[match[1]] = int(match[2])
            elif counts and line.strip():
                break
        found.append(counts)
    return found


def relayed(outcome: Outcome, level: int = logging.WARNING) -> str:
    """The library's log lines of at least ``level`` during a step, one per line."""
    return "\n".join(message for lvl, _, message in outcome.records if lvl >= level)


def dbt_log_levels(text: str, needle: str) -> list[str]:
    """The level dbt wrote each ``logs/dbt.log`` line containing ``needle`` at."""
    return [m[1] for m in re.finditer(r"\[(\w+)\s*\] \[[^\]]*\]: .*" + re.escape(needle), text)]


def bakery_parametrize(metafunc: pytest.Metafunc) -> None:
    """``pytest_generate_tests`` of the bakery modules (see :func:`parametrize_keys`)."""
    cls = metafunc.cls
    if cls is None or not issubclass(cls, BakeryChecks):
        return
    keys = [s.key for s in cls.STEPS]
    choices = {
        "step_key": keys,
        "node_key": [k for k in keys if k in BAKERY_NODE_STEPS],
        "data_key": [s.key for s in cls.STEPS if s.data],
    }
    for name, values in choices.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, values)


def doctor_cli(
    project: Path, profiles_dir: Path, env: Mapping[str, str], *flags: str
) -> subprocess.CompletedProcess[str]:
    """``dbt-runner doctor`` on ``project`` with its own profile, as a user runs it."""
    executable = shutil.which("dbt-runner", path=str(Path(sys.executable).parent))
    if executable is None:  # pragma: no cover - the package's own script
        pytest.fail("no dbt-runner executable next to the test interpreter")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
    return subprocess.run(
        [executable, "doctor", "--hold", "0", *flags],
        cwd=project,
        env={
            **clean,
            **env,
            "DBT_RUNNER_PROJECT_DIR": str(project),
            "DBT_RUNNER_PROFILES_DIR": str(profiles_dir),
        },
        capture_output=True,
        text=True,
        timeout=PLAIN_TIMEOUT_S,
        check=False,
    )


class BakeryChecks(SameOutcomes):
    """What the second foreign project compares on every warehouse path (subclass with a
    ``runs`` fixture and a ``doctor`` fixture: the library copy's profiles dir and
    environment): outcomes as in :class:`DifferentialChecks`, and dbt's own messages."""

    STEPS: tuple[Step, ...] = BAKERY_STEPS
    #: also run the doctor with --verbose (once per engine is enough)
    DOCTOR_VERBOSE = True

    def test_plain_dbt_does_what_the_bakery_project_promises(self, runs: Runs) -> None:
        """Guards every comparison against comparing two identical absences."""
        plain = runs.plain
        for key, outcome in plain.items():
            assert outcome.ok is (key not in BAKERY_FAILURES), (key, outcome.output[-2000:])
        built = plain["build"].statuses or {}
        assert {built[uid] for uid in SAVED_QUERIES} == {"no-op"}
        assert {built[uid] for uid in BAKERY_UNIT_TESTS} == {"pass"}
        assert [s for uid, s in built.items() if uid.split(".")[2] == WARNING_TEST] == ["warn"]
        freshness = plain["freshness"]
        assert freshness.freshness == BAKERY_FRESHNESS and freshness.code == 1
        assert "ERROR STALE freshness of till.raw_orders" in freshness.output
        assert "ERROR freshness of till.raw_deliveries" in freshness.output
        # the deprecations the project makes dbt print, per command (the guard of the
        # summary comparison): all of them where dbt parsed, the flags' one elsewhere
        summaries = {key: deprecation_summaries(o.dbt_log) for key, o in plain.items()}
        assert summaries["deps"] == summaries["build"] == [{FLAGS_DEPRECATION: 1}]
        assert summaries["seed"] == [{FLAGS_DEPRECATION: 1, **PARSE_DEPRECATIONS}]
        assert summaries["freshness"] == [{FLAGS_DEPRECATION: 1, FRESHNESS_DEPRECATION: 1}]
        assert "bakery.products_snapshot" in (plain["build"].data or {})

    def test_each_command_ends_like_plain_dbt(self, runs: Runs, step_key: str) -> None:
        plain, lib = runs.pair(step_key)
        assert lib.raised is None, f"{step_key}: the library raised {lib.raised!r}"
        assert lib.result is not None
        assert (lib.ok, lib.code) == (plain.ok, plain.code), describe(lib)
        assert lib.result.attempts == 1

    def test_one_deprecation_summary_per_command_with_plain_dbts_counts(
        self, runs: Runs, step_key: str
    ) -> None:
        """dbt's own log of each side, and what the library logs for its user."""
        plain, lib = runs.pair(step_key)
        expected = deprecation_summaries(plain.dbt_log)
        assert len(expected) == 1, plain.dbt_log[-3000:]
        assert deprecation_summaries(lib.dbt_log) == expected
        assert deprecation_summaries(relayed(lib)) == expected
        # each deprecation warned about once per command, as plain dbt does
        for name in expected[0]:
            tag = f"[WARNING][{name}]" if name.endswith("Deprecation") else None
            if tag is not None:
                assert lib.dbt_log.count(tag) == plain.dbt_log.count(tag), name

    def test_a_no_op_is_not_a_warning(self, runs: Runs) -> None:
        plain, lib = runs.pair("build")
        assert lib.result is not None and lib.result.success
        # plain dbt logs each saved query's NO-OP at info
        assert dbt_log_levels(plain.dbt_log, "NO-OP saved query") == ["info", "info"]
        assert dbt_log_levels(lib.dbt_log, "NO-OP saved query") == ["info", "info"]
        done = {
            message.split()[2]: level
            for level, _, message in lib.records
            if message.startswith("DONE  saved_query ")
        }
        assert done == {"daily_takings": logging.INFO, "spend_per_customer": logging.INFO}
        warned = relayed(lib)
        assert "saved_query" not in warned and "no-op" not in warned
        # the test that warns on purpose is a warning on both sides
        assert "crumb_kit_at_least_stg_products_unit_price__2_5 warn" in warned

    def test_freshness_results_carry_dbts_statuses_and_a_stale_kind(self, runs: Runs) -> None:
        plain, lib = runs.pair("freshness")
        assert lib.freshness == plain.freshness == BAKERY_FRESHNESS
        assert lib.result is not None
        nodes = {n.unique_id: n for n in lib.result.nodes}
        statuses = {uid: n.status for uid, n in nodes.items()}
        assert statuses == {**BAKERY_FRESHNESS, MISSING_SOURCE: "runtime error"}
        stale = nodes[_SOURCE + "raw_orders"]
        assert stale.error is not None and stale.error.kind.value == "stale_source"
        assert stale.error.message.startswith("stale: last loaded ")
        assert stale.error.message.endswith("; error after 3 days")
        assert nodes[_SOURCE + "raw_customers"].error is None  # a warning: dbt exits 0 for it
        assert nodes[_SOURCE + "raw_shops"].error is None
        missing = nodes[MISSING_SOURCE].error
        assert missing is not None and missing.kind.value != "stale_source"
        summary = lib.result.summary()
        assert "raw_orders: error [stale_source] stale: last loaded" in summary
        assert "model_failure" not in summary.split("raw_orders:")[1].splitlines()[0]

    def test_deps_runs_once_like_plain_dbt(self, runs: Runs) -> None:
        plain, lib = runs.pair("deps")
        for outcome in (plain, lib):
            assert outcome.dbt_log.count("Running with dbt=") == 1, outcome.dbt_log[-2000:]
            assert outcome.dbt_log.count("Installed from <local @ ../bakery_packages") == 1
        assert "installing the project's packages" not in relayed(lib, logging.INFO)

    def test_doctor_prints_only_its_own_lines_and_dbts_with_verbose(
        self, runs: Runs, doctor: tuple[Path, dict[str, str]]
    ) -> None:
        profiles, env = doctor
        quiet = doctor_cli(runs.lib_project, profiles, env)
        assert quiet.returncode == 0, quiet.stdout + quiet.stderr
        assert "parse         OK" in quiet.stdout  # it parsed, where dbt met its deprecations
        for stream in (quiet.stdout, quiet.stderr):
            assert "Deprecated functionality" not in stream
            assert "encountered deprecations" not in stream
            assert "[WARNING]" not in stream
        if not self.DOCTOR_VERBOSE:
            return
        verbose = doctor_cli(runs.lib_project, profiles, env, "--verbose")
        assert verbose.returncode == 0, verbose.stdout + verbose.stderr
        assert "Deprecated functionality" not in verbose.stdout  # stdout is the report
        assert deprecation_summaries(verbose.stderr)  # dbt's own lines, asked for
