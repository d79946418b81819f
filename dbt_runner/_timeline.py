"""A timeline (Gantt chart) of node executions per thread, drawn with plotly.

One row per dbt thread, one bar per node execution from its start to its end,
coloured by status. Bars of a retry (attempt 2 and later) are hatched, results
a retry replaced are faded, and a dashed line marks where each attempt began —
so "did ``threads=3`` really run in parallel?" is answered at a glance (the
title also says how many nodes ran at once at most).

plotly is an optional extra (``pip install 'dbt-runner[timeline]'``) imported
only when a chart is drawn. The HTML embeds plotly.js, so the file opens
offline.

>>> from dbt_runner import RunResult
>>> result.to_timeline()                               # doctest: +SKIP
>>> result.timeline_html("timeline.html")              # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._results import NodeResult, RunResult

__all__ = ["max_concurrency", "peak_parallelism", "timeline_figure", "write_timeline_html"]

INSTALL_HINT = "the timeline needs plotly: pip install 'dbt-runner[timeline]'"

#: bar colour per node status (the rest: _OTHER)
STATUS_COLOURS = {
    "success": "#2ca02c",
    "pass": "#2ca02c",
    "warn": "#e6a700",
    "error": "#d62728",
    "runtime error": "#d62728",
    "fail": "#ff7f0e",
    "partial success": "#bcbd22",
    "skipped": "#7f7f7f",
}
_OTHER = "#1f77b4"
_ROW_HEIGHT_PX = 70


@dataclass(frozen=True)
class _Bar:
    label: str  # the invocation it belongs to
    node: NodeResult
    start: datetime
    end: datetime
    superseded: bool


def _plotly() -> Any:
    try:
        return importlib.import_module("plotly.graph_objects")
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    if value.endswith("Z"):  # run_results.json; Python 3.10 cannot parse "Z"
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _axis_time(value: datetime) -> str:
    """UTC wall time in the form plotly.js reads on a date axis (no offset)."""
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")


def _labelled(
    results: RunResult | Sequence[RunResult] | Mapping[str, RunResult],
) -> list[tuple[str, RunResult]]:
    if isinstance(results, Mapping):
        return [(str(name), r) for name, r in results.items()]
    if isinstance(results, Sequence):
        return [(r.command, r) for r in results]
    return [(results.command, results)]


def max_concurrency(nodes: Iterable[NodeResult]) -> int:
    """The most nodes that were running at the same instant (0 without timings).

    >>> from dbt_runner import NodeResult
    >>> def n(a, b):
    ...     return NodeResult("m." + a, a, "model", "success", f"2026-01-01T00:00:0{a}",
    ...                       f"2026-01-01T00:00:0{b}", 1.0, "T", None, None)
    >>> max_concurrency([n("1", "4"), n("2", "3"), n("5", "6")])
    2
    """
    edges: list[tuple[datetime, int]] = []
    for node in nodes:
        start, end = _parse(node.started_at), _parse(node.completed_at)
        if start is not None and end is not None:
            edges += [(start, 1), (end, -1)]
    running = best = 0
    for _, step in sorted(edges):  # an end sorts before a start at the same instant
        running += step
        best = max(best, running)
    return best


def peak_parallelism(result: RunResult) -> int:
    """The most nodes of ``result`` running at once, in any attempt (retried ones too)."""
    return max_concurrency((*result.superseded_nodes, *result.nodes))


def _bars(labelled: list[tuple[str, RunResult]]) -> tuple[list[_Bar], list[NodeResult]]:
    bars: list[_Bar] = []
    untimed: list[NodeResult] = []
    for label, result in labelled:
        superseded = result.superseded_nodes
        for node, old in [*((n, True) for n in superseded), *((n, False) for n in result.nodes)]:
            start, end = _parse(node.started_at), _parse(node.completed_at)
            if start is None or end is None:
                if not old:
                    untimed.append(node)
                continue
            bars.append(_Bar(label, node, start, max(end, start), old))
    return bars, untimed


def _attempt_marks(result: RunResult) -> list[tuple[int, datetime, str]]:
    """Where each attempt's nodes began (its dbt setup — parse, connect — comes before)."""
    attempts = [(a.number, a.started_at, a.nodes) for a in result.attempt_log]
    if not attempts:
        attempts = [(1, result.started_at, result.nodes)]
    marks = []
    for number, started_at, nodes in attempts:
        began = _parse(started_at)
        starts = [t for t in (_parse(n.started_at) for n in nodes) if t is not None]
        first = min(starts) if starts else began
        if first is None:
            continue
        hover = f"attempt {number}"
        if began is not None:
            hover += f" began {_axis_time(began)} UTC"
            if starts:
                setup = (first - began).total_seconds()
                hover += f"; first node {setup:.1f}s later (dbt setup: parse, connect)"
        marks.append((number, first, hover))
    return marks


def _thread_order(threads: Iterable[str]) -> list[str]:
    def key(name: str) -> tuple[str, int, str]:
        digits = "".join(c for c in name.split("(")[0] if c.isdigit())
        return (name.split("-")[0], int(digits) if digits else -1, name)

    return sorted(set(threads), key=key)


def _title(labelled: list[tuple[str, RunResult]]) -> str:
    parts = []
    for label, result in labelled:
        outcome = "OK" if result.success else "FAILED"
        retries = f", {result.attempts} attempts" if result.attempts > 1 else ""
        parts.append(
            f"{label}: {outcome}, {len(result.nodes)} nodes, threads={result.threads}, "
            f"up to {peak_parallelism(result)} at once, {result.elapsed_s:.1f}s{retries}"
        )
    return "dbt timeline — " + " · ".join(parts)


def timeline_figure(
    results: RunResult | Sequence[RunResult] | Mapping[str, RunResult],
    *,
    title: str | None = None,
) -> Any:
    """A plotly ``Figure``: node executions per thread over time.

    ``results`` is one :class:`~dbt_runner.RunResult`, several, or a mapping
    ``{"staging": r1, "tests": r2}`` (the shape ``dbt-runner cycle --json`` prints).

    >>> fig = timeline_figure({"staging": staging, "tests": tests})   # doctest: +SKIP
    >>> fig.show()                                                     # doctest: +SKIP
    """
    go = _plotly()
    labelled = _labelled(results)
    bars, untimed = _bars(labelled)
    threads = _thread_order(b.node.thread or "?" for b in bars)

    fig = go.Figure()
    statuses = sorted({b.node.status for b in bars}, key=lambda s: (s not in STATUS_COLOURS, s))
    for status in statuses:
        group = [b for b in bars if b.node.status == status]
        colour = STATUS_COLOURS.get(status, _OTHER)
        fig.add_trace(
            go.Bar(
                name=status,
                orientation="h",
                y=[b.node.thread or "?" for b in group],
                base=[_axis_time(b.start) for b in group],
                x=[(b.end - b.start).total_seconds() * 1000.0 for b in group],
                text=[
                    b.node.name + (f" ↻{b.node.attempt}" if b.node.attempt > 1 else "")
                    for b in group
                ],
                textposition="inside",
                insidetextanchor="middle",
                marker={
                    "color": colour,
                    "opacity": [0.45 if b.superseded else 1.0 for b in group],
                    "line": {"color": "#333333", "width": 1},
                    "pattern": {
                        "shape": ["/" if b.node.attempt > 1 else "" for b in group],
                        "fgcolor": "#ffffff",
                        "solidity": 0.25,
                    },
                },
                customdata=[
                    [
                        b.label,
                        b.node.unique_id,
                        b.node.attempt,
                        b.node.elapsed_s,
                        "" if b.node.rows_affected is None else b.node.rows_affected,
                        "replaced by a retry" if b.superseded else "final",
                        _axis_time(b.start),
                        _axis_time(b.end),
                        (b.node.message or "")[:200],
                    ]
                    for b in group
                ],
                hovertemplate=(
                    "<b>%{text}</b> (%{customdata[1]})<br>"
                    f"status: {status} · attempt %{{customdata[2]}} (%{{customdata[5]}})<br>"
                    "%{customdata[0]} on %{y}<br>"
                    "%{customdata[6]} → %{customdata[7]} UTC<br>"
                    "dbt execution time: %{customdata[3]:.2f}s · rows: %{customdata[4]}<br>"
                    "%{customdata[8]}<extra></extra>"
                ),
            )
        )

    for label, result in labelled:
        for number, at, hover in _attempt_marks(result):
            text = f"{label}" if number == 1 else f"{label} retry (attempt {number})"
            fig.add_shape(
                type="line",
                xref="x",
                yref="paper",
                x0=_axis_time(at),
                x1=_axis_time(at),
                y0=0,
                y1=1,
                line={"color": "#d62728" if number > 1 else "#555555", "dash": "dash", "width": 1},
            )
            fig.add_annotation(
                x=_axis_time(at),
                y=1,
                xref="x",
                yref="paper",
                text=text,
                showarrow=False,
                xanchor="left",
                yanchor="bottom",
                font={"size": 11, "color": "#d62728" if number > 1 else "#555555"},
                hovertext=hover,
            )
    if untimed:
        names = ", ".join(f"{n.name} ({n.status})" for n in untimed[:12])
        more = f" and {len(untimed) - 12} more" if len(untimed) > 12 else ""
        fig.add_annotation(
            text=f"not on the chart (no timing): {names}{more}",
            xref="paper",
            yref="paper",
            x=0,
            y=-0.25,
            showarrow=False,
            xanchor="left",
            font={"size": 11, "color": "#555555"},
        )

    fig.update_layout(
        title={"text": title or _title(labelled), "font": {"size": 14}},
        barmode="overlay",
        bargap=0.3,
        height=220 + _ROW_HEIGHT_PX * max(1, len(threads)),
        template="plotly_white",
        showlegend=True,
        legend={"title": {"text": "status"}},
        uniformtext={"minsize": 9, "mode": "hide"},
        margin={"l": 140, "r": 30, "t": 90, "b": 70},
    )
    fig.update_xaxes(type="date", title_text="time (UTC)", showgrid=True)
    fig.update_yaxes(
        title_text="dbt thread",
        type="category",
        categoryorder="array",
        categoryarray=threads,
        autorange="reversed",
    )
    return fig


def write_timeline_html(
    results: RunResult | Sequence[RunResult] | Mapping[str, RunResult],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Write :func:`timeline_figure` to ``path`` as one self-contained HTML file.

    plotly.js is embedded (``include_plotlyjs=True``): no network needed to open it.
    """
    fig = timeline_figure(results, title=title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(
        str(out),
        include_plotlyjs=True,
        full_html=True,
        config={"displaylogo": False, "responsive": True},
    )
    return out
