"""EventRelay: dbt's node events become NodeEvents, log lines and callbacks — safely."""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from dbt_runner import NodeEvent
from dbt_runner._dbt.events import translating
from dbt_runner._events import PARSE_EVENT, EventRelay, dbt_console_to_log


class Relay:
    """The session's relay as dbt calls it: dbt's messages through the _dbt seam."""

    def __init__(self, callbacks: Any = ()) -> None:
        self.relay = EventRelay(callbacks)
        self._callback = translating(self.relay)

    def __call__(self, msg: Any) -> None:
        self._callback(msg)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.relay, name)


LOGGER = "dbt_runner.dbt"


def _info(uid: str, resource_type: str = "model", status: str = "") -> SimpleNamespace:
    return SimpleNamespace(
        unique_id=uid,
        node_name=uid.rsplit(".", 1)[-1],
        resource_type=resource_type,
        node_status=status,
    )


def start(uid: str, thread: str = "Thread-1 (worker)", resource_type: str = "model") -> Any:
    return SimpleNamespace(
        info=SimpleNamespace(name="NodeStart", thread=thread),
        data=SimpleNamespace(node_info=_info(uid, resource_type)),
    )


def finish(
    uid: str,
    status: str = "success",
    *,
    thread: str = "Thread-1 (worker)",
    elapsed: float = 1.5,
    rows: Any = 42,
    message: str = "OK",
    resource_type: str = "model",
) -> Any:
    response = {} if rows is None else {"rows_affected": rows, "_message": "INSERT 0 42"}
    return SimpleNamespace(
        info=SimpleNamespace(name="NodeFinished", thread=thread),
        data=SimpleNamespace(
            node_info=_info(uid, resource_type, status),
            run_result=SimpleNamespace(
                status=status, execution_time=elapsed, message=message, adapter_response=response
            ),
        ),
    )


def test_node_start_becomes_an_event_and_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    got: list[NodeEvent] = []

    Relay([got.append])(start("model.mini.part_1", thread="Thread-2 (worker)"))

    assert len(got) == 1
    event = got[0]
    assert (event.event, event.unique_id, event.name) == (
        "node_start",
        "model.mini.part_1",
        "part_1",
    )
    assert event.resource_type == "model"
    assert event.thread == "Thread-2 (worker)"
    assert event.status is None
    assert "START model part_1 [Thread-2 (worker)]" in caplog.text


def test_node_finish_carries_status_elapsed_and_rows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    got: list[NodeEvent] = []

    Relay([got.append])(finish("model.mini.part_1", elapsed=1.2345, rows=42))

    event = got[0]
    assert event.event == "node_finish"
    assert event.status == "success"
    assert event.elapsed_s == 1.234  # rounded to ms
    assert event.rows_affected == 42
    assert event.message == "OK"
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.INFO
    assert "DONE  model part_1 success in 1.23s rows=42 [Thread-1 (worker)]" in record.getMessage()


def test_failed_node_logs_a_warning_with_the_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    relay = Relay()

    relay(finish("model.mini.broken", "error", rows=None, message="Catalog Error: no table x"))

    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert "broken error" in text
    assert "Catalog Error: no table x" in text
    assert "rows=" not in text


def test_test_node_pass_is_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    Relay()(finish("test.mini.unique_part_1_part", "pass", resource_type="test", rows=None))
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.INFO
    assert "DONE  test unique_part_1_part pass" in record.getMessage()


@pytest.mark.parametrize("resource_type", ["saved_query", "exposure"])
def test_a_no_op_is_info_not_a_warning(
    caplog: pytest.LogCaptureFixture, resource_type: str
) -> None:
    """dbt build "runs" saved queries and exposures as NO-OPs, at INFO: not a warning."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    uid = f"{resource_type}.shop.daily_takings"
    Relay()(finish(uid, "no-op", resource_type=resource_type, rows=None, message="NO-OP"))
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.INFO
    assert f"DONE  {resource_type} daily_takings no-op" in record.getMessage()


@pytest.mark.parametrize("rows", [-1, "n/a", None])
def test_unknown_row_counts_are_none(rows: Any) -> None:
    """Redshift reports -1 for DDL; some adapters report nothing."""
    got: list[NodeEvent] = []
    Relay([got.append])(finish("model.mini.part_1", rows=rows))
    assert got[0].rows_affected is None


def test_real_dbt_event_messages_are_understood() -> None:
    from dbt.events.types import NodeFinished, NodeStart
    from dbt_common.events.base_types import msg_from_base_event

    node_info = {
        "unique_id": "model.mini.part_3",
        "node_name": "part_3",
        "resource_type": "model",
        "node_status": "success",
    }
    got: list[NodeEvent] = []
    relay = Relay([got.append])

    relay(msg_from_base_event(NodeStart(node_info=node_info)))
    relay(
        msg_from_base_event(
            NodeFinished(
                node_info=node_info,
                run_result={
                    "status": "success",
                    "execution_time": 0.5,
                    "message": "OK",
                    "adapter_response": {"rows_affected": 7, "_message": "OK"},
                },
            )
        )
    )

    assert [(e.event, e.name) for e in got] == [("node_start", "part_3"), ("node_finish", "part_3")]
    assert got[1].status == "success"
    assert got[1].rows_affected == 7
    assert got[1].elapsed_s == 0.5


def test_parse_events_are_counted() -> None:
    relay = Relay()
    parse = SimpleNamespace(info=SimpleNamespace(name=PARSE_EVENT, thread="MainThread"))
    relay(parse)
    relay(parse)
    relay(SimpleNamespace(info=SimpleNamespace(name="MainReportVersion", thread="MainThread")))
    assert relay.parse_events == 2


def test_a_raising_callback_is_logged_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    got: list[NodeEvent] = []

    def broken(event: NodeEvent) -> None:
        raise RuntimeError("progress bar exploded")

    relay = Relay([broken, got.append])
    relay(start("model.mini.part_1"))  # does not raise into dbt
    relay(finish("model.mini.part_1"))

    assert [e.event for e in got] == ["node_start", "node_finish"]
    failures = [r for r in caplog.records if "callback" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.levelno == logging.ERROR for r in failures)
    assert all(r.exc_info and "progress bar exploded" in str(r.exc_info[1]) for r in failures)


def test_a_malformed_event_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    malformed = SimpleNamespace(info=SimpleNamespace(name="NodeFinished", thread="t"), data=None)
    Relay()(malformed)
    assert "could not relay dbt event NodeFinished" in caplog.text


def test_events_from_many_threads_are_each_delivered_once() -> None:
    n_threads, per_thread = 8, 200
    lock = threading.Lock()
    delivered: Counter[tuple[str, str]] = Counter()

    def collect(event: NodeEvent) -> None:
        with lock:
            delivered[(event.event, event.unique_id)] += 1

    relay = Relay([collect])
    barrier = threading.Barrier(n_threads)

    def fire(t: int) -> None:
        barrier.wait(timeout=10)
        for i in range(per_thread):
            uid = f"model.mini.m_{t}_{i}"
            thread = f"Thread-{t} (worker)"
            relay(start(uid, thread=thread) if i % 2 == 0 else finish(uid, thread=thread))

    threads = [threading.Thread(target=fire, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)

    expected = {
        ("node_start" if i % 2 == 0 else "node_finish", f"model.mini.m_{t}_{i}")
        for t in range(n_threads)
        for i in range(per_thread)
    }
    assert set(delivered) == expected
    assert set(delivered.values()) == {1}
    assert relay.threads_seen == {f"Thread-{t} (worker)" for t in range(n_threads)}


def test_a_passing_test_logs_no_row_count(caplog: pytest.LogCaptureFixture) -> None:
    """dbt's adapter response for a test counts the rows of its query (1): not rows written."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    got: list[NodeEvent] = []

    Relay([got.append])(
        finish("test.mini.not_null_part_1_part", "pass", resource_type="test", rows=1)
    )

    assert got[0].rows_affected is None
    assert "rows=" not in caplog.text
    assert "DONE  test not_null_part_1_part pass in 1.50s [Thread-1 (worker)]" in caplog.text


def _deprecation(name: str, text: str) -> Any:
    return SimpleNamespace(info=SimpleNamespace(name=name, msg=text), data=SimpleNamespace())


def test_deprecation_warnings_and_each_summary_are_relayed_as_dbt_fires_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """dbt fires each deprecation once per command and one summary at its end (the session
    makes its process-wide counts per command, tests/test_deprecations.py): the relay logs
    each as one WARNING line, every command, as plain dbt prints them."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    relay = Relay()  # one per session
    for command in ("staging", "tests"):
        relay(_deprecation("CustomKeyInConfigDeprecation", "Custom key `x` found in\n`config`"))
        # a deprecation event whose name does not end in "Deprecation"
        relay(_deprecation("SourceFreshnessProjectHooksNotRun", f"hooks not run ({command})"))
        relay(
            _deprecation(
                "DeprecationsSummary",
                "[WARNING]: Summary of encountered deprecations:\n\n"
                "- CustomKeyInConfigDeprecation: 1 occurrence",
            )
        )
    relay(_deprecation("Note", "not a deprecation"))

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 6, warnings
    assert all("\n" not in w for w in warnings)  # one log line each
    assert warnings[0] == "dbt deprecation: Custom key `x` found in `config`"
    assert warnings[1] == "dbt deprecation: hooks not run (staging)"
    summaries = [w for w in warnings if "Summary of encountered deprecations" in w]
    assert len(summaries) == 2 and all("1 occurrence" in s for s in summaries)


def test_dbt_console_lines_become_debug_records_not_output(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="dbt_runner.dbt.console")

    def worker(n: int) -> None:
        print(f"{n} of 4 START sql table model stg.part_{n}")

    with dbt_console_to_log():
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(1, 5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sys.stdout.write("Encountered an error:\n  Runtime Error")  # no trailing newline

    assert capsys.readouterr().out == ""
    lines = sorted(r.getMessage() for r in caplog.records if r.name == "dbt_runner.dbt.console")
    assert lines == sorted(
        [f"{n} of 4 START sql table model stg.part_{n}" for n in range(1, 5)]
        + ["Encountered an error:", "  Runtime Error"]
    )
    assert {r.levelno for r in caplog.records if r.name == "dbt_runner.dbt.console"} == {
        logging.DEBUG
    }
