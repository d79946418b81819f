"""RunResult: merged attempts, plain JSON, and the exception each failure turns into."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from dbt_runner import (
    Attempt,
    DbtInvocationError,
    DbtRunFailed,
    DbtRunnerError,
    DbtTestsFailed,
    ErrorInfo,
    ErrorKind,
    NodeResult,
    Phase,
    RunResult,
)
from dbt_runner._dbt.results import entries
from dbt_runner._results import node_from_entry


def node_from_dbt(result: Any, attempt: int, error: Any = None, **kwargs: Any) -> Any:
    """A dbt RunResult (or a run_results.json entry) through the seam and the reader."""
    from types import SimpleNamespace

    (entry,) = entries(SimpleNamespace(results=[result]))
    return node_from_entry(entry, attempt, error, **kwargs)


T0 = "2026-01-01T00:00:00+00:00"


def _node(
    name: str,
    status: str = "success",
    *,
    resource_type: str = "model",
    attempt: int = 1,
    message: str | None = None,
    kind: ErrorKind | None = None,
) -> NodeResult:
    return NodeResult(
        unique_id=f"{resource_type}.mini.{name}",
        name=name,
        resource_type=resource_type,
        status=status,
        started_at=T0,
        completed_at=T0,
        elapsed_s=0.5,
        thread="Thread-1 (worker)",
        rows_affected=3,
        message=message,
        attempt=attempt,
        error=ErrorInfo(kind, message or "") if kind else None,
    )


def _attempt(
    number: int, *nodes: NodeResult, error: ErrorInfo | None = None, threads: int = 3
) -> Attempt:
    failed = error is not None or any(n.failed for n in nodes)
    return Attempt(
        number=number,
        args=("run", "--select", "tag:staging"),
        threads=threads,
        started_at=T0,
        elapsed_s=1.0,
        success=not failed,
        nodes=nodes,
        error=error if error or not failed else ErrorInfo(ErrorKind.MODEL_FAILURE, "failed"),
    )


def _result(*nodes: NodeResult, error: ErrorInfo | None = None, command: str = "run") -> RunResult:
    return RunResult.merge(command, [_attempt(1, *nodes, error=error)], started_at=T0, elapsed_s=1)


# ---------------------------------------------------------------------- merge
def test_merge_latest_attempt_of_a_node_wins() -> None:
    conn = ErrorInfo(ErrorKind.CONNECTION, "server closed the connection unexpectedly")
    first = _attempt(
        1,
        _node("part_1"),
        _node("part_2", "error", message=conn.message, kind=conn.kind),
        _node("part_3", "skipped"),
        error=conn,
    )
    second = _attempt(2, _node("part_2", attempt=2), _node("part_3", attempt=2), threads=1)

    result = RunResult.merge("run", [first, second], started_at=T0, elapsed_s=2.5)

    assert result.success
    assert result.error is None
    assert result.attempts == 2
    by_name = {n.name: n for n in result.nodes}
    assert set(by_name) == {"part_1", "part_2", "part_3"}
    assert {n.status for n in result.nodes} == {"success"}
    assert by_name["part_1"].attempt == 1
    assert by_name["part_2"].attempt == 2
    assert by_name["part_3"].attempt == 2
    assert result.threads == 3  # what was asked for; the retry's threads stay in attempt_log
    assert [a.threads for a in result.attempt_log] == [3, 1]


def test_merge_fails_when_a_final_node_still_failed() -> None:
    conn = ErrorInfo(ErrorKind.CONNECTION, "server closed the connection unexpectedly")
    first = _attempt(1, _node("part_1", "error", kind=conn.kind), error=conn)
    second = _attempt(2, _node("part_1", "error", attempt=2, kind=conn.kind), error=conn)

    result = RunResult.merge("run", [first, second], started_at=T0, elapsed_s=2)

    assert not result.success
    assert result.attempts == 2
    assert result.error == conn
    assert [n.name for n in result.failed_nodes] == ["part_1"]


def test_merge_fails_when_the_last_attempt_could_not_run() -> None:
    """All nodes passed once, but the retry itself failed: not a success."""
    conn = ErrorInfo(ErrorKind.CONNECTION, "Connection refused")
    result = RunResult.merge(
        "run",
        [_attempt(1, _node("part_1")), _attempt(2, error=conn)],
        started_at=T0,
        elapsed_s=1,
    )
    assert not result.success
    assert result.error == conn


# ---------------------------------------------------------------------- JSON
_PLAIN = (str, int, float, bool, type(None))


def _assert_plain(value: Any, where: str = "$") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str, f"{where}: key {key!r}"
            _assert_plain(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _assert_plain(item, f"{where}[{i}]")
    else:
        assert type(value) in _PLAIN, f"{where}: {type(value).__name__}"


def test_to_dict_and_to_json_round_trip_as_plain_data() -> None:
    conn = ErrorInfo(ErrorKind.CONNECTION, "server closed the connection unexpectedly")
    first = _attempt(1, _node("part_1"), _node("part_2", "error", kind=conn.kind), error=conn)
    second = _attempt(2, _node("part_2", attempt=2))
    result = RunResult.merge("run", [first, second], started_at=T0, elapsed_s=2, degraded_threads=1)

    data = result.to_dict()
    _assert_plain(data)  # no enums, dataclasses or dbt objects: safe for an Airflow XCom
    assert json.loads(result.to_json()) == data
    assert data["success"] is True
    assert data["attempts"] == 2
    assert data["degraded_threads"] == 1
    assert {n["name"] for n in data["nodes"]} == {"part_1", "part_2"}
    assert data["attempt_log"][0]["error"] == {"kind": "connection", "message": conn.message}


def test_failed_result_json_carries_error_kind_as_a_string() -> None:
    result = _result(error=ErrorInfo(ErrorKind.COMPILATION, "Compilation Error in model x"))
    data = json.loads(result.to_json())
    _assert_plain(result.to_dict())
    assert data["success"] is False
    assert data["error"] == {"kind": "compilation", "message": "Compilation Error in model x"}


# ---------------------------------------------------------------------- raise_for_status
def test_raise_for_status_returns_self_on_success() -> None:
    result = _result(_node("part_1"))
    assert result.raise_for_status() is result


@pytest.mark.parametrize(
    "kind", [ErrorKind.COMPILATION, ErrorKind.CONNECTION, ErrorKind.TUNNEL, ErrorKind.TIMEOUT]
)
def test_dbt_could_not_run_raises_invocation_error_with_kind(kind: ErrorKind) -> None:
    result = _result(error=ErrorInfo(kind, "it did not work"))
    with pytest.raises(DbtInvocationError) as info:
        result.raise_for_status()
    assert info.value.kind is kind
    assert info.value.result is result
    assert "it did not work" in str(info.value)


def test_failed_models_raise_run_failed() -> None:
    result = _result(
        _node("part_1"),
        _node("broken", "error", message="Catalog Error: no table", kind=ErrorKind.MODEL_FAILURE),
    )
    with pytest.raises(DbtRunFailed) as info:
        result.raise_for_status()
    assert info.value.result is result
    assert isinstance(info.value, DbtRunnerError)
    assert "broken" in str(info.value)


def test_failed_tests_raise_tests_failed() -> None:
    result = _result(
        _node("unique_part_1_part", "pass", resource_type="test"),
        _node(
            "not_null_part_1_part",
            "fail",
            resource_type="test",
            message="Got 2 results, configured to fail if != 0",
            kind=ErrorKind.TEST_FAILURE,
        ),
        command="test",
    )
    with pytest.raises(DbtTestsFailed) as info:
        result.raise_for_status()
    assert info.value.result is result
    assert "not_null_part_1_part" in str(info.value)


def test_build_with_a_failed_model_and_its_skipped_tests_raises_run_failed() -> None:
    """In ``dbt build`` a model's tests are skipped when it fails: the model is the failure."""
    result = _result(
        _node("broken", "error", message="Catalog Error", kind=ErrorKind.MODEL_FAILURE),
        _node("not_null_broken_id", "skipped", resource_type="test"),
        command="build",
    )
    with pytest.raises(DbtRunFailed):
        result.raise_for_status()


# ---------------------------------------------------------------------- summary
def test_summary_names_failed_nodes_and_their_kind() -> None:
    result = _result(
        _node("part_1"),
        _node("part_2", "error", message="deadlock detected", kind=ErrorKind.CONFLICT),
        _node("part_3", "skipped"),
    )
    text = result.summary()
    assert "FAILED" in text
    assert "part_2: error [conflict] deadlock detected" in text
    assert "part_3: skipped" in text
    assert "part_1" not in text


def test_summary_of_an_invocation_error_shows_the_message() -> None:
    result = _result(error=ErrorInfo(ErrorKind.COMPILATION, "Compilation Error in model x"))
    assert "[compilation] Compilation Error in model x" in result.summary()


def test_summary_of_success_is_one_ok_line() -> None:
    text = _result(_node("part_1"), _node("part_2")).summary()
    assert text.startswith("dbt run: OK")
    assert "\n" not in text


# ---------------------------------------------------------------------- from dbt
def test_node_from_a_run_results_entry() -> None:
    entry = {
        "unique_id": "model.mini.part_1",
        "status": "success",
        "message": "OK",
        "thread_id": "Thread-2 (worker)",
        "execution_time": 1.23456,
        "timing": [
            {
                "name": "compile",
                "started_at": "2026-01-01T00:00:01Z",
                "completed_at": "2026-01-01T00:00:02Z",
            },
            {
                "name": "execute",
                "started_at": "2026-01-01T00:00:02Z",
                "completed_at": "2026-01-01T00:00:05Z",
            },
        ],
        "adapter_response": {"_message": "INSERT 0 42", "rows_affected": 42},
    }
    node = node_from_dbt(entry, attempt=2, error=None)
    assert node.name == "part_1"
    assert node.resource_type == "model"
    assert node.status == "success"
    assert node.thread == "Thread-2 (worker)"
    assert node.elapsed_s == 1.235
    assert node.rows_affected == 42
    assert node.started_at == "2026-01-01T00:00:01Z"
    assert node.completed_at == "2026-01-01T00:00:05Z"
    assert node.attempt == 2
    assert not node.failed


@pytest.mark.parametrize("status", ["error", "fail", "skipped", "runtime error"])
def test_failing_statuses_count_as_failed(status: str) -> None:
    assert _node("x", status).failed


@pytest.mark.parametrize("status", ["success", "pass", "warn"])
def test_passing_statuses_do_not(status: str) -> None:
    assert not _node("x", status).failed


def test_a_test_from_run_results_json_keeps_its_name_not_its_hash() -> None:
    """When dbt raised mid-run, nodes come from run_results.json: ids, not names (issue 13)."""

    entry = {
        "unique_id": "test.shop.not_null_orders_order_id.1114211131",
        "status": "error",
        "message": "server closed the connection unexpectedly",
        "timing": [],
    }
    assert node_from_dbt(entry, 1).name == "not_null_orders_order_id"
    unit = {**entry, "unique_id": "unit_test.shop.orders.test_amounts_are_positive"}
    assert node_from_dbt(unit, 1).name == "test_amounts_are_positive"
    names = {entry["unique_id"]: "not_null_orders_order_id_custom"}
    assert node_from_dbt(entry, 1, names=names).name == "not_null_orders_order_id_custom"


def _dbt_result(resource_type: str, adapter_response: dict[str, Any], failures: Any) -> Any:
    """A dbt RunResult as far as node_from_dbt reads it (the seam's fake)."""
    from types import SimpleNamespace

    node = SimpleNamespace(
        unique_id=f"{resource_type}.shop.x",
        name="x",
        resource_type=resource_type,
        relation_name='"shop"."main"."x"' if resource_type == "model" else None,
        compiled_path=None,
    )
    return SimpleNamespace(
        node=node,
        timing=[],
        adapter_response=adapter_response,
        status="pass" if resource_type == "test" else "success",
        execution_time=0.1,
        thread_id="Thread-1",
        message=None,
        failures=failures,
    )


def test_a_passing_test_has_no_rows_affected_and_zero_failures() -> None:
    """PostgreSQL/Redshift report rows_affected=1 for a passing test: not rows written."""
    response = {"_message": "SELECT 1", "code": "SELECT", "rows_affected": 1}
    node = node_from_dbt(_dbt_result("test", response, 0), attempt=1, invocation_id="abc")
    assert node.rows_affected is None
    assert node.failures == 0
    assert node.adapter_response == response
    assert node.invocation_id == "abc"


def test_a_model_keeps_its_rows_relation_and_response_and_no_failures() -> None:
    response = {"_message": "INSERT 0 42", "code": "INSERT", "rows_affected": 42}
    node = node_from_dbt(_dbt_result("model", response, None), attempt=1)
    assert node.rows_affected == 42
    assert node.failures is None
    assert node.relation_name == '"shop"."main"."x"'
    assert json.loads(json.dumps(node.to_dict()))["adapter_response"] == response


def test_a_failed_test_from_run_results_json_counts_its_failing_rows() -> None:
    entry = {
        "unique_id": "test.shop.positive_amounts",
        "status": "fail",
        "failures": 3,
        "adapter_response": {"_message": "SELECT 1", "rows_affected": 1},
        "relation_name": None,
    }
    node = node_from_dbt(entry, attempt=1)
    assert (node.failures, node.rows_affected) == (3, None)


def test_new_fields_and_output_survive_the_json_round_trip() -> None:
    node = replace(
        _node("orders"),
        failures=None,
        relation_name='"shop"."main"."orders"',
        adapter_response={"_message": "OK", "rows_affected": 3},
        invocation_id="inv-2",
        compiled_path="/p/target/compiled/shop/models/orders.sql",
    )
    attempt = replace(_attempt(1, node), invocation_id="inv-2")
    result = RunResult.merge(
        "show", [attempt], started_at=T0, elapsed_s=1.0, output=[{"id": 1, "day": "2026-01-01"}]
    )
    assert result.invocation_id == "inv-2"
    back = RunResult.from_dict(json.loads(result.to_json()))
    assert back == result
    assert back.output == [{"id": 1, "day": "2026-01-01"}]
    assert back.attempt_log[0].invocation_id == "inv-2"
    assert back.nodes[0].compiled_path == node.compiled_path


def test_phases_survive_the_json_round_trip_as_plain_fields() -> None:
    phases = [
        Phase("open", "2026-01-01T00:00:00.100+00:00", 0.25),
        Phase("parse", "2026-01-01T00:00:00.400+00:00", 1.5, attempt=1),
        Phase("connect", "2026-01-01T00:00:01.900+00:00", 0.7, attempt=1),
    ]
    attempt = _attempt(1, _node("orders"))
    result = RunResult.merge("run", [attempt], started_at=T0, elapsed_s=3.0, phases=phases)
    data = json.loads(result.to_json())
    assert data["phases"][1] == {
        "name": "parse",
        "started_at": "2026-01-01T00:00:00.400+00:00",
        "elapsed_s": 1.5,
        "attempt": 1,
    }
    assert RunResult.from_dict(data) == result
    # the keys a reader of older results knew are all still there, unchanged
    before = {"command", "success", "started_at", "elapsed_s", "threads", "attempts"}
    assert before | {"nodes", "error", "attempt_log", "superseded_nodes", "output"} < set(data)


def test_a_result_stored_by_an_older_version_still_loads() -> None:
    old = _result(_node("orders")).to_dict()
    old.pop("output")
    old.pop("invocation_id")
    old.pop("phases")
    for key in ("failures", "relation_name", "adapter_response", "invocation_id", "compiled_path"):
        old["nodes"][0].pop(key)
    old["attempt_log"][0].pop("invocation_id")
    back = RunResult.from_dict(old)
    assert back.output is None and back.invocation_id is None and back.phases == ()
    assert back.nodes[0].adapter_response == {} and back.nodes[0].failures is None


# ---------------------------------------------------------------------- source freshness
def _freshness_result(name: str, status: str, age_s: float) -> Any:
    """A result of ``dbt source freshness`` (dbt's SourceFreshnessResult) as dbt returns it."""
    from datetime import datetime
    from types import SimpleNamespace

    def after(count: int, period: str) -> Any:
        return SimpleNamespace(count=count, period=SimpleNamespace(value=period))

    node = SimpleNamespace(
        unique_id=f"source.shop.till.{name}",
        name=name,
        resource_type="source",
        relation_name=f'"dev"."{name}"',
        compiled_path=None,
        freshness=SimpleNamespace(warn_after=after(12, "hour"), error_after=after(3, "day")),
    )
    return SimpleNamespace(
        node=node,
        status=status,
        timing=[],
        execution_time=0.05,
        thread_id="Thread-1 (worker)",
        message=None,  # dbt gives a freshness result no message
        adapter_response={},
        failures=None,
        max_loaded_at=datetime(2024, 3, 5, 11, 45),
        snapshotted_at=datetime(2024, 3, 15, 23, 45),
        age=age_s,
    )


def test_a_stale_source_is_named_stale_not_a_model_failure() -> None:
    """dbt says ERROR STALE: the node keeps dbt's status, its error is ``stale_source``
    with what made it stale, and the result raises DbtRunFailed of that kind (exit 1)."""
    from types import SimpleNamespace

    from dbt_runner._dbt import DbtReturn
    from dbt_runner._invocation import _outcome
    from dbt_runner._settings import RetrySettings

    results = [
        _freshness_result("raw_orders", "error", 10.5 * 86400),
        _freshness_result("raw_customers", "warn", 13 * 3600),
        _freshness_result("raw_shops", "pass", 60),
    ]
    nodes = tuple(node_from_dbt(r, 1) for r in results)
    res = DbtReturn(success=False, exception=None, value=SimpleNamespace(results=results))
    nodes, error = _outcome(res, nodes, RetrySettings())
    stale, late, fresh = nodes

    assert (stale.status, late.status, fresh.status) == ("error", "warn", "pass")
    assert stale.error is not None and stale.error.kind is ErrorKind.STALE_SOURCE
    assert stale.message == (
        "stale: last loaded 10.5 days ago (2024-03-05T11:45:00+00:00); error after 3 days"
    )
    assert late.error is None and not late.failed  # a warning, as in plain dbt (exit 0)
    assert late.message is not None and late.message.endswith("; warn after 12 hours")
    assert fresh.message is None and fresh.error is None
    assert error is not None and error.kind is ErrorKind.STALE_SOURCE

    result = RunResult.merge(
        "source",
        [Attempt(1, ("source", "freshness"), 1, T0, 1.0, False, nodes, error)],
        started_at=T0,
        elapsed_s=1.0,
    )
    assert result.exit_code == 1
    assert "raw_orders: error [stale_source] stale: last loaded 10.5 days ago" in result.summary()
    with pytest.raises(DbtRunFailed) as info:
        result.raise_for_status()
    assert info.value.kind is ErrorKind.STALE_SOURCE and info.value.exit_code == 1
