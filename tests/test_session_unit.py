"""DbtSession with a fake dbt runner: lifecycle, one parse, retries, concurrency, watchdog.

The fake replaces ``dbt_runner._dbt.runner.make_runner`` (the one seam where the
session builds a ``dbtRunner``) and answers like ``dbtRunnerResult``:
``success``, ``exception``, and ``result.results`` holding run_results.json
entries.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pytest_mock import MockerFixture

from dbt_runner import (
    ConfigurationError,
    DbtInvocationError,
    DbtRunFailed,
    DbtSession,
    ErrorKind,
    SessionState,
    SessionStateError,
    Settings,
)
from dbt_runner._events import PARSE_EVENT

MINI = Path(__file__).parent / "fixtures" / "mini_project"
STAGING = ["part_1", "part_2", "part_3"]
WAIT_S = 10.0  # upper bound for every wait on another thread; never reached when green


# ---------------------------------------------------------------------- the fake dbt
@dataclass
class Call:
    """One ``dbtRunner(...).invoke(args)`` the session made."""

    args: list[str]
    manifest: Any

    @property
    def command(self) -> str:
        return self.args[0]

    def option(self, flag: str) -> str | None:
        return self.args[self.args.index(flag) + 1] if flag in self.args else None

    @property
    def selected(self) -> list[str]:
        if "--select" not in self.args:
            return []
        values = []
        for arg in self.args[self.args.index("--select") + 1 :]:
            if arg.startswith("-"):
                break
            values.append(arg)
        return values


Answer = Callable[[Call], Any]


def dbt_result(success: bool, results: list[dict[str, Any]] | None, exc: Any = None) -> Any:
    return SimpleNamespace(
        success=success,
        exception=exc,
        result=None if results is None else SimpleNamespace(results=results),
    )


def nodes(**outcomes: tuple[str, str]) -> Answer:
    """Answer for the nodes the call selected: ``part_2=("error", "message")``; others pass."""

    def answer(call: Call) -> Any:
        target = Path(call.option("--target-path") or ".")
        if call.command == "retry":  # like dbt: what failed or was skipped in the last results
            previous = json.loads((target / "run_results.json").read_text())["results"]
            names = [
                r["unique_id"].split(".")[-1]
                for r in previous
                if r["status"] in ("error", "fail", "skipped")
            ]
        else:
            names = [
                n for sel in call.selected for n in (STAGING if sel == "tag:staging" else [sel])
            ]
        results = []
        for name in names:
            status, message = outcomes.get(name, ("success", "OK"))
            results.append(
                {
                    "unique_id": f"model.mini.{name}",
                    "status": status,
                    "message": message,
                    "thread_id": "Thread-1 (worker)",
                    "execution_time": 0.01,
                    "timing": [],
                    "adapter_response": {},
                }
            )
        target.mkdir(parents=True, exist_ok=True)  # dbt writes its results there
        (target / "run_results.json").write_text(json.dumps({"results": results}))
        return dbt_result(all(r["status"] == "success" for r in results), results)

    return answer


def raises(exc: BaseException) -> Answer:
    """dbt could not run: ``exception`` set, no per-node results."""
    return lambda call: dbt_result(False, None, exc)


@dataclass
class FakeDbt:
    """Records every invocation; answers parses itself and runs from ``answers``."""

    answers: list[Answer] = field(default_factory=list)
    parse_answer: Answer | None = None
    calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def make_runner(self, manifest: Any, callbacks: list[Any]) -> Any:
        return SimpleNamespace(invoke=lambda args: self._invoke(list(args), manifest, callbacks))

    def _invoke(self, args: list[str], manifest: Any, callbacks: list[Any]) -> Any:
        call = Call(args, manifest)
        with self._lock:
            self.calls.append(call)
            answer = (
                self.parse_answer
                if call.command == "parse"
                else (self.answers.pop(0) if self.answers else nodes())
            )
        if call.command == "parse" and answer is None:
            for callback in callbacks:  # dbt fires this once per project load
                callback(SimpleNamespace(info=SimpleNamespace(name=PARSE_EVENT, thread="Main")))
            # a stand-in manifest that remembers the vars it was parsed with
            manifest = SimpleNamespace(vars=call.option("--vars"))
            return SimpleNamespace(success=True, exception=None, result=manifest)
        assert answer is not None
        return answer(call)

    @property
    def parses(self) -> list[Call]:
        return [c for c in self.calls if c.command == "parse"]

    @property
    def runs(self) -> list[Call]:
        return [c for c in self.calls if c.command != "parse"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DBT_RUNNER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def fake(mocker: MockerFixture) -> FakeDbt:
    fake = FakeDbt()
    mocker.patch("dbt_runner._dbt.runner.make_runner", side_effect=fake.make_runner)
    return fake


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        retry = {"initial_wait_s": 0, "max_wait_s": 0, **overrides.pop("retry", {})}
        values: dict[str, Any] = {
            "project_dir": MINI,
            "warehouse": {"type": "duckdb", "path": str(tmp_path / "x.duckdb")},
            "state_dir": tmp_path / "state",
            "retry": retry,
            **overrides,
        }
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def session(settings: Settings, fake: FakeDbt) -> Iterator[DbtSession]:
    with DbtSession(settings) as session:
        yield session


# ---------------------------------------------------------------------- lifecycle
def test_invoke_before_open_is_a_state_error(settings: Settings, fake: FakeDbt) -> None:
    session = DbtSession(settings)
    assert session.state is SessionState.UNOPENED
    with pytest.raises(SessionStateError, match="open"):
        session.run_staging()
    assert fake.calls == []


def test_close_twice_is_fine_and_a_closed_session_stays_closed(
    settings: Settings, fake: FakeDbt
) -> None:
    session = DbtSession(settings).open()
    session.close()
    session.close()
    assert session.state is SessionState.CLOSED
    with pytest.raises(SessionStateError):
        session.open()
    with pytest.raises(SessionStateError):
        session.invoke(["run"])
    assert fake.calls == []


def test_context_manager_closes_and_removes_the_profile_on_exception(
    make_settings: Callable[..., Settings], fake: FakeDbt
) -> None:
    settings = make_settings(
        warehouse={
            "type": "postgres",
            "host": "127.0.0.1",
            "user": "dbt",
            "dbname": "d",
            "password": "pw-never-left-behind",
        }
    )
    secrets_before = {k for k in os.environ if k.startswith("DBT_ENV_SECRET_")}
    with pytest.raises(RuntimeError, match="task failed"), DbtSession(settings) as session:
        session.invoke(["debug"])
        profiles_dir = Path(fake.calls[0].option("--profiles-dir") or "")
        assert (profiles_dir / "profiles.yml").is_file()
        raise RuntimeError("task failed")
    assert session.state is SessionState.CLOSED
    assert not profiles_dir.exists()
    assert {k for k in os.environ if k.startswith("DBT_ENV_SECRET_")} == secrets_before


@pytest.mark.parametrize(("args", "threads"), [([], None), (["--select", "x"], None), (["run"], 0)])
def test_misuse_of_invoke_is_a_configuration_error(
    session: DbtSession, fake: FakeDbt, args: list[str], threads: int | None
) -> None:
    with pytest.raises(ConfigurationError):
        session.invoke(args, threads=threads)
    assert fake.calls == []


# ---------------------------------------------------------------------- one parse
def test_parse_happens_once_across_invocations(session: DbtSession, fake: FakeDbt) -> None:
    staging = session.run_staging(threads=3)
    tests = session.run_tests()
    build = session.invoke(["build", "--select", "tag:staging"])

    assert staging.success and tests.success and build.success
    assert len(fake.parses) == 1
    assert session.parse_count == 1
    manifest = fake.runs[0].manifest
    assert manifest is not None  # the parsed manifest is handed to every invocation
    assert all(run.manifest is manifest for run in fake.runs)
    assert [r.command for r in fake.runs] == ["run", "test", "build"]


def test_session_runs_the_project_with_its_profile_and_state_dir(
    session: DbtSession, fake: FakeDbt, settings: Settings
) -> None:
    session.run_staging()
    run = fake.runs[0]
    assert run.option("--project-dir") == str(MINI.resolve())
    assert run.option("--target-path") == str((settings.state_dir or Path()) / "target")
    # no --threads unless the caller gave one: the generated profile carries the setting's 3
    assert run.option("--threads") is None
    assert run.selected == ["tag:staging"]


def test_vars_lead_to_a_parse_with_those_vars(session: DbtSession, fake: FakeDbt) -> None:
    broken_vars = json.dumps({"break_compile": True}, sort_keys=True)

    session.run_staging(vars={"break_compile": True})
    session.run_staging()
    session.run_staging(vars={"break_compile": True})

    assert [p.option("--vars") for p in fake.parses] == [broken_vars, None]
    with_vars, plain, with_vars_again = fake.runs
    assert with_vars.option("--vars") == broken_vars
    assert with_vars.manifest.vars == broken_vars  # compiled with those vars
    assert plain.manifest.vars is None
    assert with_vars_again.manifest is with_vars.manifest


def test_a_project_that_does_not_parse_is_a_compilation_result(
    session: DbtSession, fake: FakeDbt
) -> None:
    from dbt_common.exceptions import CompilationError

    fake.parse_answer = raises(CompilationError("'this_macro_does_not_exist' is undefined"))

    result = session.run_staging()

    assert not result.success
    assert result.attempts == 1
    assert result.error is not None and result.error.kind is ErrorKind.COMPILATION
    assert "this_macro_does_not_exist" in result.error.message
    assert fake.runs == []  # nothing ran against a project that does not compile
    with pytest.raises(DbtInvocationError) as info:
        result.raise_for_status()
    assert info.value.kind is ErrorKind.COMPILATION


# ---------------------------------------------------------------------- retries
def test_transient_node_failure_is_retried_for_the_failed_nodes_only(
    session: DbtSession, fake: FakeDbt
) -> None:
    fake.answers = [
        nodes(
            part_2=("error", "server closed the connection unexpectedly"),
            part_3=("skipped", "SKIP relation staging.part_3"),
        ),
        nodes(),
    ]

    result = session.run_staging()

    assert result.success
    assert result.attempts == 2
    first, retry = fake.runs
    assert first.selected == ["tag:staging"]
    # dbt's own retry re-runs what failed or was skipped, from the first run's results
    assert retry.command == "retry"
    assert retry.option("--target-path") == first.option("--target-path")
    assert sorted(n.name for n in result.attempt_log[1].nodes) == ["part_2", "part_3"]
    assert result.attempt_log[1].args[0] == "retry"
    by_name = {n.name: n for n in result.nodes}
    assert {n: by_name[n].status for n in STAGING} == dict.fromkeys(STAGING, "success")
    assert (by_name["part_1"].attempt, by_name["part_2"].attempt) == (1, 2)
    assert result.attempt_log[0].error is not None
    assert result.attempt_log[0].error.kind is ErrorKind.CONNECTION


def test_connection_exception_is_retried_with_the_same_selection(
    session: DbtSession, fake: FakeDbt
) -> None:
    from dbt.adapters.exceptions import FailedToConnectError

    fake.answers = [
        raises(
            FailedToConnectError(
                'connection to server at "127.0.0.1", port 5439 failed: Connection refused'
            )
        ),
        nodes(),
    ]

    result = session.run_staging()

    assert result.success
    assert result.attempts == 2
    assert [r.selected for r in fake.runs] == [["tag:staging"], ["tag:staging"]]


def test_model_failure_is_not_retried(session: DbtSession, fake: FakeDbt) -> None:
    fake.answers = [
        nodes(part_2=("error", "Catalog Error: Table with name nope does not exist!")),
    ]

    result = session.run_staging()

    assert not result.success
    assert result.attempts == 1
    assert len(fake.runs) == 1
    assert result.error is not None and result.error.kind is ErrorKind.MODEL_FAILURE
    assert [n.name for n in result.failed_nodes] == ["part_2"]
    with pytest.raises(DbtRunFailed):
        result.raise_for_status()


def test_auth_failure_is_not_retried(session: DbtSession, fake: FakeDbt) -> None:
    from dbt.adapters.exceptions import FailedToConnectError

    fake.answers = [
        raises(
            FailedToConnectError(
                'connection to server at "10.0.0.5", port 5439 failed: '
                'FATAL:  password authentication failed for user "dbt"'
            )
        ),
        nodes(),
    ]

    result = session.run_staging()

    assert not result.success
    assert result.attempts == 1
    assert len(fake.runs) == 1
    assert result.error is not None and result.error.kind is ErrorKind.AUTH


def test_retry_attempts_one_means_no_retry(
    monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Settings], fake: FakeDbt
) -> None:
    monkeypatch.setenv("DBT_RUNNER_RETRY__ATTEMPTS", "1")
    fake.answers = [nodes(part_1=("error", "server closed the connection unexpectedly")), nodes()]

    with DbtSession(make_settings()) as session:
        result = session.run_staging()

    assert not result.success
    assert result.attempts == 1
    assert len(fake.runs) == 1
    assert result.error is not None and result.error.kind is ErrorKind.CONNECTION


def test_transient_failure_still_failing_after_all_attempts_is_a_result(
    session: DbtSession, fake: FakeDbt, settings: Settings
) -> None:
    too_many = 'FATAL:  too many connections for role "dbt"'
    fake.answers = [nodes(part_1=("error", too_many)) for _ in range(settings.retry.attempts)]

    result = session.run_staging()  # returns, does not raise

    assert not result.success
    assert result.attempts == settings.retry.attempts
    assert len(fake.runs) == settings.retry.attempts
    assert result.error is not None and result.error.kind is ErrorKind.TOO_MANY_CONNECTIONS
    with pytest.raises(DbtInvocationError) as info:
        result.raise_for_status()
    assert info.value.kind is ErrorKind.TOO_MANY_CONNECTIONS


def test_degrade_threads_lowers_threads_after_too_many_connections(
    make_settings: Callable[..., Settings], fake: FakeDbt
) -> None:
    fake.answers = [nodes(part_3=("error", 'FATAL:  too many connections for role "dbt"'))]

    with DbtSession(make_settings(retry={"degrade_threads": 1})) as session:
        result = session.run_staging(threads=3)

    assert result.success
    assert result.attempts == 2
    assert [r.option("--threads") for r in fake.runs] == ["3", "1"]
    assert result.degraded_threads == 1
    assert result.to_dict()["degraded_threads"] == 1


def test_without_degrade_threads_a_retry_keeps_its_threads(
    session: DbtSession, fake: FakeDbt
) -> None:
    fake.answers = [nodes(part_3=("error", 'FATAL:  too many connections for role "dbt"'))]

    result = session.run_staging(threads=3)

    assert result.success
    assert [r.option("--threads") for r in fake.runs] == ["3", "3"]
    assert [a.threads for a in result.attempt_log] == [3, 3]
    assert result.degraded_threads is None


# ---------------------------------------------------------------------- concurrency
def test_a_second_session_running_at_the_same_time_gets_a_state_error(
    make_settings: Callable[..., Settings], fake: FakeDbt
) -> None:
    inside, release = threading.Event(), threading.Event()

    def held(call: Call) -> Any:
        inside.set()
        assert release.wait(WAIT_S), "test never released the first invocation"
        return nodes()(call)

    fake.answers = [held]
    results: list[Any] = []

    with DbtSession(make_settings()) as first, DbtSession(make_settings()) as second:
        worker = threading.Thread(target=lambda: results.append(first.run_staging()))
        worker.start()
        try:
            assert inside.wait(WAIT_S), "first invocation never reached dbt"
            with pytest.raises(SessionStateError, match="another DbtSession"):
                second.run_staging()
        finally:
            release.set()
            worker.join(WAIT_S)
        assert not worker.is_alive()
        assert results and results[0].success
        # once the first is done, the second may run
        assert second.run_staging().success

    assert len(fake.runs) == 2


# ---------------------------------------------------------------------- watchdog
def _watchdogs() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dbt_runner-watchdog" and t.is_alive()]


def test_watchdog_cancels_a_hung_invocation(
    make_settings: Callable[..., Settings], fake: FakeDbt, mocker: MockerFixture
) -> None:
    cancelled = threading.Event()
    mocker.patch("dbt_runner._dbt.cancel_on_server", side_effect=lambda **_: cancelled.set())

    def hung(call: Call) -> Any:
        # like a query blocked on a lock: returns only once its connection is cancelled
        assert cancelled.wait(WAIT_S), "watchdog never cancelled the connections"
        return nodes(part_1=("error", "INTERRUPT Error: Interrupted!"))(call)

    fake.answers = [hung]

    with DbtSession(make_settings(timeout_s=0.2)) as session:
        result = session.run_staging()

    assert cancelled.is_set()
    assert not result.success
    assert result.attempts == 1  # timeouts are not retried unless RETRY__RETRY_TIMEOUTS
    assert result.error is not None and result.error.kind is ErrorKind.TIMEOUT
    assert "DBT_RUNNER_TIMEOUT_S" in result.error.message
    assert _watchdogs() == []


def test_watchdog_is_gone_after_an_invocation_that_finishes_in_time(
    make_settings: Callable[..., Settings], fake: FakeDbt, mocker: MockerFixture
) -> None:
    cancel = mocker.patch("dbt_runner._dbt.cancel_on_server")

    with DbtSession(make_settings(timeout_s=60)) as session:
        result = session.run_staging()

    assert result.success
    cancel.assert_not_called()
    assert _watchdogs() == []


# ---------------------------------------------------------------------- selection honesty
def test_a_building_block_that_selects_nothing_is_a_failed_result(
    make_settings: Callable[..., Settings], fake: FakeDbt
) -> None:
    nothing = lambda call: dbt_result(True, [])  # noqa: E731 - dbt: "Nothing to do"
    fake.answers = [nothing, nothing, nothing]
    with DbtSession(make_settings(staging_select="tag:nope")) as session:
        staging = session.run_staging()
        plain = session.invoke(["run", "--select", "tag:nope"])
        given = session.run_tests(select="tag:mine")
    assert fake.runs[0].selected == ["tag:nope"]  # the setting is the default selection
    assert not staging.success
    assert staging.error is not None and staging.error.kind is ErrorKind.CONFIGURATION
    assert "'tag:nope' of DBT_RUNNER_STAGING_SELECT" in staging.error.message
    assert staging.exit_code == 2
    assert plain.success  # plain invoke keeps dbt's semantics
    # a selection the caller gave is named as given, not as a setting they did not touch
    assert given.error is not None and given.error.kind is ErrorKind.CONFIGURATION
    assert given.error.message == "the selection 'tag:mine' matched no node of this project"


def test_the_relation_cache_flags_are_the_caller_s(session: DbtSession, fake: FakeDbt) -> None:
    """dbt's own default (populate the cache) unless the caller says otherwise: the
    session does not add --no-populate-cache (it changed results: docs/performance.md 8)."""
    session.run_staging()
    session.invoke(["run", "--populate-cache"])
    session.invoke(["run", "--no-populate-cache"])
    default, on, off = fake.runs
    assert "--no-populate-cache" not in default.args and "--populate-cache" not in default.args
    assert "--populate-cache" in on.args and "--no-populate-cache" not in on.args
    assert off.args.count("--no-populate-cache") == 1


# ---------------------------------------------------------------------- the cancel path
def _held_until_cancelled(cancelled: threading.Event, inside: threading.Event) -> Answer:
    """A run whose statement returns only once the server cancelled it (like a lock wait)."""

    def answer(call: Call) -> Any:
        inside.set()
        assert cancelled.wait(WAIT_S), "nobody cancelled on the server"
        return nodes(part_2=("error", "terminating connection due to administrator command"))(call)

    return answer


def test_cancel_from_another_thread_returns_a_cancelled_result(
    session: DbtSession, fake: FakeDbt, mocker: MockerFixture
) -> None:
    cancelled, inside = threading.Event(), threading.Event()
    server = mocker.patch(
        "dbt_runner._dbt.cancel_on_server", side_effect=lambda **_: cancelled.set()
    )
    fake.answers = [_held_until_cancelled(cancelled, inside)]
    assert session.cancel() is False  # nothing runs yet
    threading.Thread(target=lambda: inside.wait(WAIT_S) and session.cancel()).start()

    result = session.run_staging()

    server.assert_called_once()
    assert not result.success and result.attempts == 1  # a cancel is never retried
    assert result.error is not None and result.error.kind is ErrorKind.CANCELLED
    assert result.exit_code == 130
    by_name = {n.name: n for n in result.nodes}
    assert by_name["part_2"].error is not None
    assert by_name["part_2"].error.kind is ErrorKind.CANCELLED
    assert by_name["part_1"].status == "success" and by_name["part_1"].error is None
    assert session.run_staging().success  # the session goes on


class Interrupted(BaseException):
    """An orchestrator's exception raised from a signal handler."""


def _main_thread_waits_in(function: str) -> bool:
    """Wait (bounded) until the main thread blocks in a wait called from ``function``."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(threading.main_thread().ident or 0)
        names = []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        if names and names[0] == "wait" and function in names:
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("taken_by", ["main thread", "another thread"])
def test_a_base_exception_in_the_wait_is_cancelled_then_re_raised_unchanged(
    session: DbtSession, fake: FakeDbt, mocker: MockerFixture, taken_by: str
) -> None:
    """A process-directed signal may be taken by any thread at the C level; its Python
    handler runs in the main thread only when that thread runs, so the wait must not
    block it (an untimed wait held it until dbt ended on its own)."""
    import signal

    cancelled, inside = threading.Event(), threading.Event()
    mocker.patch("dbt_runner._dbt.cancel_on_server", side_effect=lambda **_: cancelled.set())
    fake.answers = [_held_until_cancelled(cancelled, inside)]
    raised: list[BaseException] = []
    alarm = {signal.SIGALRM}

    def handler(signum: int, frame: Any) -> None:
        raised.append(Interrupted("task terminated"))
        raise raised[-1]

    def send() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, alarm)  # this thread may take it
        if inside.wait(WAIT_S) and _main_thread_waits_in("_call"):
            os.kill(os.getpid(), signal.SIGALRM)

    previous = signal.signal(signal.SIGALRM, handler)
    if taken_by == "another thread":  # the main thread and the threads it starts block it
        signal.pthread_sigmask(signal.SIG_BLOCK, alarm)
    try:
        threading.Thread(target=send).start()
        with pytest.raises(Interrupted) as info:
            session.invoke(["run", "--select", "tag:staging"])
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, alarm)
        signal.signal(signal.SIGALRM, previous)
    assert info.value is raised[0]
    assert cancelled.is_set()  # cancelled on the server before it reached the caller
    assert session.run_staging().success


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)])
def test_a_base_exception_dbt_returns_reaches_the_caller(
    session: DbtSession, fake: FakeDbt, mocker: MockerFixture, exc: BaseException
) -> None:
    """dbtRunner catches everything and returns it: a foreign BaseException is raised."""
    mocker.patch("dbt_runner._dbt.cancel_on_server")
    fake.answers = [raises(exc)]
    with pytest.raises(type(exc)) as info:
        session.run_staging()
    assert info.value is exc
    assert session.run_staging().success


def test_the_truth_after_an_interruption() -> None:
    """Ended before the cancel: as it ended; after it or never: the cancel's kind; the
    selected nodes that never started: skipped with that kind."""
    import time as _time

    from dbt_runner._dbt.events import DbtEvent, NodeInfo
    from dbt_runner._events import NodeEnded, NodeStarted, RelaySnapshot
    from dbt_runner._invocation import interrupted_nodes
    from dbt_runner._results import NodeResult

    def info(name: str) -> NodeInfo:
        return NodeInfo(f"model.p.{name}", name, "model")

    def ended(name: str, status: str, at: float, message: str = "") -> NodeEnded:
        event = DbtEvent("NodeFinished", node=info(name), status=status, message=message)
        return NodeEnded(event, "Thread-1", "2026-01-01T00:00:00+00:00", at, 5)

    cancelled_at = _time.monotonic()
    seen = RelaySnapshot(
        started={f"model.p.{n}": NodeStarted(info(n), "Thread-1", "t") for n in "abcd"},
        finished={
            "model.p.a": ended("a", "success", cancelled_at + 1),  # committed after the cancel
            "model.p.b": ended("b", "error", cancelled_at - 1, "division by zero"),
            "model.p.c": ended("c", "error", cancelled_at + 1, "terminating connection"),
        },
    )
    reported = NodeResult("model.p.a", "a", "model", "success", None, None, 1.0, "T", 5, "OK")
    out = {
        n.name: n
        for n in interrupted_nodes(
            [reported],
            seen,
            [(f"model.p.{x}", x, "model") for x in "abcde"],
            cancelled_at,
            ErrorKind.CANCELLED,
            1,
        )
    }
    assert out["a"].status == "success" and out["a"].error is None
    assert out["b"].error is not None and out["b"].error.kind is ErrorKind.MODEL_FAILURE
    assert out["c"].error is not None and out["c"].error.kind is ErrorKind.CANCELLED
    assert out["d"].status == "error" and out["d"].error.kind is ErrorKind.CANCELLED  # type: ignore[union-attr]
    assert out["e"].status == "skipped" and out["e"].error.kind is ErrorKind.CANCELLED  # type: ignore[union-attr]
