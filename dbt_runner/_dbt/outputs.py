"""The command's own value (``RunResult.output``): what a dbt command prints or writes.

One function per command turns dbt's return value into plain JSON, in one
place. The shapes (see docs/own-project.md, "The command's own value"):

=====================  ==============================================================
``ls`` / ``list``      ``list[str]``: the lines plain ``dbt ls`` prints (``--output``
                       and ``--output-keys`` respected)
``show``               one previewed node (``--inline`` or one selected node): its rows
                       ``list[dict]``; several: ``{unique_id: rows}``
``compile``            one node: its compiled SQL ``str``; several: ``{unique_id: sql}``
``run-operation``      the macro's return value (JSON-able, else ``str``), None if none
``source freshness``   ``list[dict]``: unique_id, source_name, table_name, status,
                       max_loaded_at, snapshotted_at, age_s, error
``docs generate``      ``{"catalog_path": str, "nodes": int, "sources": int}``
anything else          None
=====================  ==============================================================

"Previewed" follows dbt's own console: ``show`` and ``compile`` print the nodes
whose name occurs in the first ``--select`` value (tests that indirect
selection adds are run, not printed; ``--select a b`` prints only ``a``). When
dbt prints none (``compile`` without a selection, ``--select tag:x``), the
output holds every node dbt ran, by unique_id.

dbt (1.8 to 1.11) does not return a ``run-operation`` macro's value: its task
discards what ``adapter.execute_macro`` returned. :func:`capture_macro_return`
wraps that one call for the duration of an invocation to keep it.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["MacroReturn", "capture_macro_return", "command_output", "json_value"]

#: JSON as this module hands it out
JSON = Any


def json_value(value: Any) -> JSON:
    """One value from the warehouse (an agate cell) as JSON.

    Dates and times as ISO strings, a ``Decimal`` as a float when the float says
    the same number (else its exact text), bytes as hex, NULL as None.

    >>> from decimal import Decimal
    >>> json_value(Decimal("10.50")), json_value(Decimal("12345678901234567890.12"))
    (10.5, '12345678901234567890.12')
    >>> json_value(dt.date(2026, 1, 2)), json_value(b"\\x01\\xff"), json_value(None)
    ('2026-01-02', '01ff', None)
    """
    if value is None or isinstance(value, (bool, int, str)):
        return str(value) if isinstance(value, str) and type(value) is not str else value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_value(v) for v in value]
    return str(value)


def _is_json(value: Any) -> bool:
    """True when ``value`` is JSON already (str keys, no exotic types, finite floats)."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def table_rows(table: Any) -> list[dict[str, JSON]]:
    """An agate table (what dbt fetched) as a list of ``{column: value}`` rows."""
    names = [str(n) for n in table.column_names]
    return [
        {name: json_value(cell) for name, cell in zip(names, row, strict=False)}
        for row in table.rows
    ]


# ---------------------------------------------------------------------- per command
def ls_output(result: Any) -> list[str]:
    """``dbt ls``: dbt returns exactly the lines it prints."""
    return [str(line) for line in result or ()]


def _dbt_args(result: Any) -> Mapping[str, Any]:
    args = getattr(result, "args", None)
    return args if isinstance(args, Mapping) else {}


def _printed(result: Any) -> list[Any]:
    """The node results dbt prints for ``show``/``compile`` (its own matching rule)."""
    results = list(getattr(result, "results", None) or ())
    args = _dbt_args(result)
    if args.get("inline"):
        return [r for r in results if getattr(r.node, "name", None) == "inline_query"]
    select = args.get("select") or ()
    if isinstance(select, str):
        select = (select,)
    first = str(select[0]) if select else ""
    printed = [r for r in results if first and str(getattr(r.node, "name", "")) in first]
    # dbt prints nothing without a selection or when no name matches (--select tag:x):
    # then every node it ran is the output
    return printed or results


def _one_or_many(pairs: list[tuple[str, JSON]]) -> JSON:
    """One node: its value; several: by unique_id; none (dbt failed first): None."""
    if not pairs:
        return None
    return pairs[0][1] if len(pairs) == 1 else dict(pairs)


def show_output(result: Any) -> JSON:
    """``dbt show``: the previewed rows (``--limit`` is applied by dbt's query)."""
    pairs = [
        (str(r.node.unique_id), table_rows(r.agate_table))
        for r in _printed(result)
        if getattr(r, "agate_table", None) is not None
    ]
    return _one_or_many(pairs)


def compile_output(result: Any) -> JSON:
    """``dbt compile``: the compiled SQL of the printed node(s)."""
    pairs = [
        (str(r.node.unique_id), str(r.node.compiled_code))
        for r in _printed(result)
        if getattr(r.node, "compiled_code", None) is not None
    ]
    return _one_or_many(pairs)


def run_operation_output(captured: MacroReturn | None) -> JSON:
    """``dbt run-operation``: the macro's ``return()`` value, as JSON or as ``str``.

    A macro without ``return()`` yields its rendered text (Jinja semantics): None
    when that text is blank.
    """
    if captured is None or not captured.set:
        return None
    value = captured.value
    if isinstance(value, str):
        text = str(value)  # Jinja's Markup -> plain str
        return text if text.strip() else None
    if isinstance(value, tuple):
        value = list(value)
    return value if _is_json(value) else str(value)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.isoformat() if isinstance(value, (dt.datetime, dt.date)) else str(value)


def freshness_output(result: Any) -> list[dict[str, JSON]]:
    """``dbt source freshness``: one entry per source table."""
    out: list[dict[str, JSON]] = []
    for r in getattr(result, "results", None) or ():
        node = r.node
        status = str(getattr(r.status, "value", r.status))
        age = getattr(r, "age", None)
        failed = status in ("error", "runtime error")
        message = getattr(r, "message", None)
        out.append(
            {
                "unique_id": str(node.unique_id),
                "source_name": str(node.source_name),
                "table_name": str(node.name),
                "status": status,
                "max_loaded_at": _iso(getattr(r, "max_loaded_at", None)),
                "snapshotted_at": _iso(getattr(r, "snapshotted_at", None)),
                "age_s": None if age is None else float(age),
                "error": (str(message) if message else status) if failed else None,
            }
        )
    return out


def docs_generate_output(result: Any, target_dir: Path) -> dict[str, JSON] | None:
    """``dbt docs generate``: where the catalog is and how much it holds."""
    if result is None or not hasattr(result, "nodes"):
        return None
    return {
        "catalog_path": str(target_dir / "catalog.json"),
        "nodes": len(result.nodes or {}),
        "sources": len(getattr(result, "sources", None) or {}),
    }


def command_words(args: Sequence[str]) -> tuple[str, ...]:
    """The dbt command of ``args``: ``("ls",)``, ``("source", "freshness")``..."""
    words: list[str] = []
    for arg in args:
        if arg.startswith("-") or len(words) == 2:
            break
        words.append(arg)
    if words and words[0] not in ("source", "docs"):
        words = words[:1]
    return tuple(words)


def command_output(
    args: Sequence[str],
    dbt_result: Any,
    *,
    target_dir: Path,
    macro_return: MacroReturn | None = None,
) -> JSON:
    """The command's own value for one dbt invocation (None for commands without one).

    ``dbt_result`` is ``dbtRunnerResult.result``; never raises (a shape dbt changed
    gives None rather than losing the invocation's result).
    """
    words = command_words(args)
    if words == ("retry",):  # dbt's retry re-ran the previous command: shape it as that one
        which = _dbt_args(dbt_result).get("which")
        words = command_words(str(which).split()) if which else words
    try:
        if words in (("ls",), ("list",)):
            return ls_output(dbt_result)
        if words == ("show",):
            return show_output(dbt_result)
        if words == ("compile",):
            return compile_output(dbt_result)
        if words == ("run-operation",):
            return run_operation_output(macro_return)
        if words == ("source", "freshness"):
            return freshness_output(dbt_result)
        if words == ("docs", "generate"):
            return docs_generate_output(dbt_result, target_dir)
    except Exception:  # pragma: no cover - dbt's objects changed shape
        import logging

        logging.getLogger("dbt_runner.session").warning(
            "could not read the output of dbt %s", " ".join(words), exc_info=True
        )
    return None


# ---------------------------------------------------------------------- run-operation
class MacroReturn:
    """What the ``run-operation`` macro returned (``set`` False: it did not finish)."""

    def __init__(self) -> None:
        self.set = False
        self.value: Any = None


_CAPTURE_LOCK = threading.Lock()


@contextmanager
def capture_macro_return() -> Iterator[MacroReturn]:
    """Keep the value the ``run-operation`` macro returns during the ``with`` block.

    dbt's ``RunOperationTask.run`` calls ``_run_unsafe`` (which returns
    ``adapter.execute_macro(...)``) and drops the value; this wraps that method
    for the block only. Without it (dbt moved it) the value stays unset.
    """
    box = MacroReturn()
    try:
        from dbt.task.run_operation import RunOperationTask
    except ImportError:  # pragma: no cover - dbt without run-operation
        yield box
        return
    original = RunOperationTask.__dict__.get("_run_unsafe")
    if original is None:  # pragma: no cover - dbt renamed it
        yield box
        return

    def _run_unsafe(self: Any, *args: Any, **kwargs: Any) -> Any:
        value = original(self, *args, **kwargs)
        box.value, box.set = value, True
        return value

    with _CAPTURE_LOCK:
        RunOperationTask._run_unsafe = _run_unsafe  # type: ignore[method-assign]
        try:
            yield box
        finally:
            RunOperationTask._run_unsafe = original  # type: ignore[method-assign]
