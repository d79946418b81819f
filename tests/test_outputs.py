"""The command's own value: one shaping function per dbt command, on fake dbt objects."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dbt_runner._dbt.outputs import (
    MacroReturn,
    capture_macro_return,
    command_output,
    command_words,
    json_value,
)

UTC = dt.timezone.utc


class _Table:
    """The two attributes of an agate table that the rows are read from."""

    def __init__(self, names: list[str], rows: list[tuple[Any, ...]]) -> None:
        self.column_names = names
        self.rows = rows


def _node(unique_id: str, **extra: Any) -> SimpleNamespace:
    return SimpleNamespace(unique_id=unique_id, name=unique_id.split(".")[-1], **extra)


def _executed(results: list[Any], **args: Any) -> SimpleNamespace:
    return SimpleNamespace(results=results, args=args)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (7, 7),
        ("x", "x"),
        (0.25, 0.25),
        (float("nan"), "nan"),
        (Decimal("10.50"), 10.5),
        (Decimal("0.1"), 0.1),
        (Decimal("12345678901234567890.12"), "12345678901234567890.12"),
        (dt.date(2026, 1, 2), "2026-01-02"),
        (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05+00:00"),
        (dt.datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05"),
        (b"\x01\xff", "01ff"),
        ({"a": [Decimal("1.5"), None]}, {"a": [1.5, None]}),
    ],
)
def test_a_warehouse_value_becomes_json_without_losing_its_number(
    value: Any, expected: Any
) -> None:
    got = json_value(value)
    assert got == expected
    json.dumps(got, allow_nan=False)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["ls", "--select", "x"], ("ls",)),
        (["source", "freshness", "--select", "source:raw"], ("source", "freshness")),
        (["docs", "generate"], ("docs", "generate")),
        (["run-operation", "my_macro", "--args", "{}"], ("run-operation",)),
        (["show", "--inline", "select 1"], ("show",)),
    ],
)
def test_the_command_is_read_from_its_leading_words(args: list[str], words: tuple[str]) -> None:
    assert command_words(args) == words


def test_ls_output_is_the_printed_lines(tmp_path: Path) -> None:
    lines = ["shop.orders", "source:shop.raw.orders"]
    assert command_output(["ls"], lines, target_dir=tmp_path) == lines
    assert command_output(["list", "--output", "json"], ['{"name": "x"}'], target_dir=tmp_path) == [
        '{"name": "x"}'
    ]


def test_show_of_one_node_gives_its_rows_and_drops_indirectly_selected_tests(
    tmp_path: Path,
) -> None:
    model = SimpleNamespace(
        node=_node("model.shop.orders"),
        agate_table=_Table(
            ["id", "amount", "day"], [(1, Decimal("10.50"), dt.date(2026, 1, 1)), (2, None, None)]
        ),
    )
    test = SimpleNamespace(
        node=_node("test.shop.not_null_orders_amount"), agate_table=_Table(["amount"], [])
    )
    out = command_output(
        ["show", "--select", "orders"],
        _executed([model, test], select=("orders",)),
        target_dir=tmp_path,
    )
    assert out == [
        {"id": 1, "amount": 10.5, "day": "2026-01-01"},
        {"id": 2, "amount": None, "day": None},
    ]


def test_show_of_several_nodes_gives_rows_by_unique_id(tmp_path: Path) -> None:
    a = SimpleNamespace(node=_node("model.shop.orders"), agate_table=_Table(["n"], [(1,)]))
    b = SimpleNamespace(node=_node("model.shop.order_totals"), agate_table=_Table(["n"], [(2,)]))
    out = command_output(
        ["show", "--select", "tag:nightly"],
        _executed([a, b], select=("tag:nightly",)),
        target_dir=tmp_path,
    )
    assert out == {"model.shop.orders": [{"n": 1}], "model.shop.order_totals": [{"n": 2}]}


def test_show_of_two_selected_names_previews_the_first_as_dbt_prints(tmp_path: Path) -> None:
    a = SimpleNamespace(node=_node("model.shop.orders"), agate_table=_Table(["n"], [(1,)]))
    b = SimpleNamespace(node=_node("model.shop.order_totals"), agate_table=_Table(["n"], [(2,)]))
    out = command_output(
        ["show", "--select", "orders", "order_totals"],
        _executed([a, b], select=("orders", "order_totals")),
        target_dir=tmp_path,
    )
    assert out == [{"n": 1}]


def test_show_inline_gives_the_inline_query_rows(tmp_path: Path) -> None:
    inline = SimpleNamespace(
        node=_node("sql_operation.shop.inline_query"), agate_table=_Table(["a"], [(1,)])
    )
    out = command_output(
        ["show", "--inline", "select 1 as a"],
        _executed([inline], inline="select 1 as a"),
        target_dir=tmp_path,
    )
    assert out == [{"a": 1}]


def test_compile_gives_the_sql_of_one_node_or_of_every_node(tmp_path: Path) -> None:
    orders = SimpleNamespace(node=_node("model.shop.orders", compiled_code="select 1"))
    totals = SimpleNamespace(node=_node("model.shop.order_totals", compiled_code="select 2"))
    one = command_output(
        ["compile", "--select", "orders"],
        _executed([orders], select=("orders",)),
        target_dir=tmp_path,
    )
    assert one == "select 1"
    every = command_output(["compile"], _executed([orders, totals]), target_dir=tmp_path)
    assert every == {"model.shop.orders": "select 1", "model.shop.order_totals": "select 2"}


def test_a_failed_show_has_no_output(tmp_path: Path) -> None:
    assert command_output(["show", "--select", "x"], None, target_dir=tmp_path) is None


def _returned(value: Any) -> MacroReturn:
    box = MacroReturn()
    box.value, box.set = value, True
    return box


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"answer": 42, "items": [1, 2]}, {"answer": 42, "items": [1, 2]}),
        (("a", 1), ["a", 1]),
        ("\n   \n", None),  # a macro without return(): its (blank) rendered text
        ("some text", "some text"),
        ({1: Decimal("1")}, "{1: Decimal('1')}"),  # not JSON: its str()
    ],
)
def test_run_operation_output_is_the_macro_return(
    value: Any, expected: Any, tmp_path: Path
) -> None:
    out = command_output(
        ["run-operation", "m"], object(), target_dir=tmp_path, macro_return=_returned(value)
    )
    assert out == expected


def test_run_operation_that_did_not_return_has_no_output(tmp_path: Path) -> None:
    out = command_output(
        ["run-operation", "m"], object(), target_dir=tmp_path, macro_return=MacroReturn()
    )
    assert out is None


def test_capture_sees_what_dbt_run_operation_task_discards() -> None:
    from dbt.task.run_operation import RunOperationTask

    original = RunOperationTask.__dict__["_run_unsafe"]
    task = object.__new__(RunOperationTask)
    calls: list[Any] = []

    def fake(self: Any, package: Any, macro: Any) -> Any:
        calls.append((package, macro))
        return {"rows": 3}

    RunOperationTask._run_unsafe = fake  # type: ignore[method-assign]
    try:
        with capture_macro_return() as box:
            assert task._run_unsafe(None, "m") == {"rows": 3}  # dbt still gets its value
        assert box.set and box.value == {"rows": 3}
        assert RunOperationTask.__dict__["_run_unsafe"] is fake  # restored
    finally:
        RunOperationTask._run_unsafe = original  # type: ignore[method-assign]
    assert calls == [(None, "m")]


def test_freshness_output_has_one_entry_per_source(tmp_path: Path) -> None:
    ok = SimpleNamespace(
        node=_node("source.shop.raw.orders", source_name="raw"),
        status=SimpleNamespace(value="warn"),
        max_loaded_at=dt.datetime(2026, 1, 3, 12, tzinfo=UTC),
        snapshotted_at=dt.datetime(2026, 1, 4, 12, tzinfo=UTC),
        age=86400.0,
        message=None,
    )
    broken = SimpleNamespace(
        node=_node("source.shop.raw.gone", source_name="raw"),
        status="runtime error",
        message="Catalog Error: Table with name gone does not exist!",
    )
    out = command_output(
        ["source", "freshness"], SimpleNamespace(results=[ok, broken]), target_dir=tmp_path
    )
    assert out == [
        {
            "unique_id": "source.shop.raw.orders",
            "source_name": "raw",
            "table_name": "orders",
            "status": "warn",
            "max_loaded_at": "2026-01-03T12:00:00+00:00",
            "snapshotted_at": "2026-01-04T12:00:00+00:00",
            "age_s": 86400.0,
            "error": None,
        },
        {
            "unique_id": "source.shop.raw.gone",
            "source_name": "raw",
            "table_name": "gone",
            "status": "runtime error",
            "max_loaded_at": None,
            "snapshotted_at": None,
            "age_s": None,
            "error": "Catalog Error: Table with name gone does not exist!",
        },
    ]


def test_docs_generate_output_names_the_catalog_and_counts_it(tmp_path: Path) -> None:
    catalog = SimpleNamespace(nodes={"model.a": 1, "seed.b": 2}, sources={"source.c": 3})
    out = command_output(["docs", "generate"], catalog, target_dir=tmp_path)
    assert out == {"catalog_path": str(tmp_path / "catalog.json"), "nodes": 2, "sources": 1}


@pytest.mark.parametrize("args", [["run"], ["seed"], ["deps"], ["debug"], ["build"]])
def test_other_commands_have_no_output(args: list[str], tmp_path: Path) -> None:
    assert command_output(args, SimpleNamespace(results=[]), target_dir=tmp_path) is None


def test_a_retry_is_shaped_as_the_command_it_re_ran(tmp_path: Path) -> None:
    orders = SimpleNamespace(node=_node("model.shop.orders", compiled_code="select 1"))
    retried = _executed([orders], select=("orders",), which="compile")
    assert command_output(["retry"], retried, target_dir=tmp_path) == "select 1"
    operation = SimpleNamespace(results=[], args={"which": "run-operation"})
    out = command_output(
        ["retry"], operation, target_dir=tmp_path, macro_return=_returned({"ok": True})
    )
    assert out == {"ok": True}
