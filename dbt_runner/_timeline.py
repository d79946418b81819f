"""A timeline (Gantt chart) of node executions: one row per thread slot in each phase.

Each phase (``staging``, ``tests``...) gets as many rows as it had nodes running
at once (its thread slots 1..N: a retry reuses the slots, so 3 threads are 3
rows however often dbt restarted its workers). One bar per node execution from
its start to its end, coloured by status, labelled with the node's name
(:attr:`NodeResult.name <dbt_runner.NodeResult.name>`) where it fits and with
its number in the side list where it does not. Hovering a bar shows its
status, rows, attempt and error kind. Bars of a retry (attempt 2 and later)
are hatched and marked ``↻2``, results a retry replaced are faded, and a
dashed line marks where each retry began.

Two outputs:

* :func:`write_timeline_html` / :func:`timeline_svg`: a self-contained SVG
  (inline in an HTML page with the side list, and as a ``.svg`` file beside
  it). No dependency, a few KB, opens offline.
* :func:`timeline_figure`: the same rows as an interactive plotly figure for
  notebooks (``pip install 'dbt-runner[timeline]'``).

>>> from dbt_runner import RunResult
>>> result.timeline_html("timeline.html")              # doctest: +SKIP
PosixPath('timeline.html')
"""

from __future__ import annotations

import html
import importlib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._results import parse_time as _parse

if TYPE_CHECKING:
    from ._results import NodeResult, RunResult

__all__ = [
    "max_concurrency",
    "peak_parallelism",
    "timeline_figure",
    "timeline_svg",
    "write_timeline_html",
]

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


# --------------------------------------------------------------------------- slots
@dataclass(frozen=True)
class _Placed:
    bar: _Bar
    slot: int  # 1-based, within the bar's phase
    number: int  # its line in the side list

    @property
    def row(self) -> str:
        return f"{self.bar.label} · slot {self.slot}"


def _place(bars: list[_Bar], labelled: list[tuple[str, RunResult]]) -> list[_Placed]:
    """Each bar in the lowest thread slot of its phase that is free when it starts.

    A phase needs as many slots as it had nodes running at once, so the rows
    say how parallel it was and stay the same through a retry.
    """
    placed: list[_Placed] = []
    for label, _ in labelled:
        ends: list[datetime] = []  # per slot: when its last bar ended
        phase = sorted((b for b in bars if b.label == label), key=lambda b: (b.start, b.end))
        for bar in phase:
            slot = next((i for i, end in enumerate(ends) if end <= bar.start), len(ends))
            if slot == len(ends):
                ends.append(bar.end)
            else:
                ends[slot] = bar.end
            placed.append(_Placed(bar, slot + 1, len(placed) + 1))
    return placed


def _rows_in_order(placed: list[_Placed], labelled: list[tuple[str, RunResult]]) -> list[str]:
    rows: list[str] = []
    for label, _ in labelled:
        slots = max((p.slot for p in placed if p.bar.label == label), default=0)
        rows += [f"{label} · slot {n}" for n in range(1, slots + 1)]
    return rows


def _status_colour(status: str) -> str:
    return STATUS_COLOURS.get(status, _OTHER)


def _shows_rows(node: NodeResult) -> bool:
    """Rows written mean something for models; a test's count is of failing rows."""
    return node.rows_affected is not None and node.resource_type != "test"


def _hover(p: _Placed) -> str:
    node = p.bar.node
    lines = [
        f"{node.name} ({node.resource_type})",
        f"status: {node.status} · attempt {node.attempt}"
        + (" (replaced by a retry)" if p.bar.superseded else ""),
        f"{p.row} · dbt thread {node.thread or '?'}",
        f"{_axis_time(p.bar.start)} → {_axis_time(p.bar.end)} UTC"
        f" · dbt execution {node.elapsed_s:.2f}s",
    ]
    if _shows_rows(node):
        lines.append(f"rows: {node.rows_affected}")
    if node.error is not None:
        lines.append(f"error kind: {node.error.kind.value}")
    if node.message and node.failed:
        lines.append((node.message or "")[:300])
    lines.append(node.unique_id)
    return "\n".join(lines)


def _nice_step(span_s: float, ticks: int = 8) -> float:
    raw = max(span_s / ticks, 1e-3)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return float(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# --------------------------------------------------------------------------- SVG
_W, _LEFT, _RIGHT, _TOP, _ROW_H, _BAR_H, _CHAR_W = 1180, 190, 20, 78, 34, 22, 6.6


def timeline_svg(
    results: RunResult | Sequence[RunResult] | Mapping[str, RunResult],
    *,
    title: str | None = None,
) -> str:
    """The timeline as one self-contained SVG document (no scripts, no network).

    Hover a bar for its details (an SVG ``<title>``); every label is real text.

    >>> svg = timeline_svg({"staging": staging, "tests": tests})   # doctest: +SKIP
    """
    labelled = _labelled(results)
    bars, untimed = _bars(labelled)
    placed = _place(bars, labelled)
    rows = _rows_in_order(placed, labelled)
    row_y = {row: float(_TOP + i * _ROW_H) for i, row in enumerate(rows)}
    height = _TOP + max(len(rows), 1) * _ROW_H + 60
    t0 = min((b.start for b in bars), default=None)
    t1 = max((b.end for b in bars), default=None)
    span = max((t1 - t0).total_seconds(), 1e-3) if t0 is not None and t1 is not None else 1.0
    plot_w = _W - _LEFT - _RIGHT

    def x_of(at: datetime) -> float:
        assert t0 is not None
        return _LEFT + (at - t0).total_seconds() / span * plot_w

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
        f'viewBox="0 0 {_W} {height}" font-family="sans-serif" font-size="11">',
        '<defs><pattern id="retry" patternUnits="userSpaceOnUse" width="7" height="7" '
        'patternTransform="rotate(45)"><rect width="2.5" height="7" fill="#ffffff" '
        'fill-opacity="0.6"/></pattern></defs>',
        f'<rect width="{_W}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="22" font-size="14" font-weight="bold">'
        f"{_e(title or _title(labelled))}</text>",
    ]
    legend_x = 10.0
    for status in sorted({b.node.status for b in bars}):
        out.append(
            f'<rect x="{legend_x:.0f}" y="34" width="11" height="11" '
            f'fill="{_status_colour(status)}"/><text x="{legend_x + 15:.0f}" y="44">'
            f"{_e(status)}</text>"
        )
        legend_x += 30 + _CHAR_W * len(status)
    if any(b.node.attempt > 1 for b in bars):
        out.append(
            f'<rect x="{legend_x:.0f}" y="34" width="11" height="11" fill="#777777"/>'
            f'<rect x="{legend_x:.0f}" y="34" width="11" height="11" fill="url(#retry)"/>'
            f'<text x="{legend_x + 15:.0f}" y="44">retry (↻n: attempt n; faded: replaced)</text>'
        )
    if t0 is not None:
        out.append(
            f'<text x="{_LEFT}" y="{_TOP - 8}" fill="#555555">seconds after '
            f"{_e(_axis_time(t0))} UTC</text>"
        )
        step = _nice_step(span)
        tick = 0.0
        bottom = _TOP + len(rows) * _ROW_H
        while tick <= span + 1e-9:
            x = _LEFT + tick / span * plot_w
            out.append(
                f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{bottom}" stroke="#e5e5e5"/>'
                f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle" fill="#555555">'
                f"{tick:g}s</text>"
            )
            tick += step
    previous_phase = None
    for row in rows:
        y = row_y[row]
        phase = row.split(" · ")[0]
        if phase != previous_phase and previous_phase is not None:
            out.append(f'<line x1="0" y1="{y}" x2="{_W}" y2="{y}" stroke="#999999"/>')
        previous_phase = phase
        out.append(
            f'<text x="{_LEFT - 8}" y="{y + _ROW_H / 2 + 4:.0f}" text-anchor="end">{_e(row)}</text>'
        )
    for p in placed:
        node, y = p.bar.node, row_y[p.row] + (_ROW_H - _BAR_H) / 2.0
        x = x_of(p.bar.start)
        w = max(x_of(p.bar.end) - x, 2.0)
        retry = f" ↻{node.attempt}" if node.attempt > 1 else ""
        label = next(
            (
                t
                for t in (node.name + retry, f"#{p.number}{retry}", f"#{p.number}")
                if len(t) * _CHAR_W + 6 <= w
            ),
            "",
        )
        opacity = ' fill-opacity="0.4" stroke-dasharray="3 2"' if p.bar.superseded else ""
        out.append(
            f'<g class="node" data-name="{_e(node.name)}" data-status="{_e(node.status)}">'
            f"<title>{_e(_hover(p))}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{_BAR_H}" '
            f'fill="{_status_colour(node.status)}" stroke="#333333" stroke-width="0.6"{opacity}/>'
        )
        if node.attempt > 1:
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{_BAR_H}" '
                'fill="url(#retry)"/>'
            )
        if label:
            out.append(
                f'<text x="{x + w / 2:.1f}" y="{y + _BAR_H / 2 + 4:.1f}" text-anchor="middle" '
                f'fill="#ffffff" font-weight="bold">{_e(label)}</text>'
            )
        out.append("</g>")
    for label, result in labelled:
        phase_rows = [row_y[r] for r in rows if r.split(" · ")[0] == label]
        if not phase_rows or t0 is None:
            continue
        for number, at, hover in _attempt_marks(result):
            if number == 1:
                continue
            x = x_of(max(at, t0))
            top, end = min(phase_rows), max(phase_rows) + _ROW_H
            out.append(
                f'<g><title>{_e(hover)}</title><line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" '
                f'y2="{end}" stroke="#d62728" stroke-dasharray="5 3" stroke-width="1.5"/>'
                f'<text x="{x + 3:.1f}" y="{top + 10}" fill="#d62728">'
                f"{_e(label)} retry (attempt {number})</text></g>"
            )
    if untimed:
        names = ", ".join(f"{n.name} ({n.status})" for n in untimed[:12])
        more = f" and {len(untimed) - 12} more" if len(untimed) > 12 else ""
        out.append(
            f'<text x="10" y="{height - 12}" fill="#555555">'
            f"not on the chart (no timing): {_e(names + more)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _side_list(labelled: list[tuple[str, RunResult]]) -> str:
    """An HTML table of every node: the names a narrow bar has no room for."""
    bars, untimed = _bars(labelled)
    cells = []
    for p in _place(bars, labelled):
        node = p.bar.node
        cells.append(
            [
                f"#{p.number}",
                p.bar.label,
                str(p.slot),
                node.name,
                node.resource_type,
                node.status + (" (replaced by a retry)" if p.bar.superseded else ""),
                str(node.attempt),
                f"{node.elapsed_s:.2f}s",
                str(node.rows_affected) if _shows_rows(node) else "",
                node.error.kind.value if node.error else "",
                (node.message or "")[:200] if node.failed else "",
            ]
        )
    for node in untimed:
        cells.append(
            [
                "",
                "",
                "",
                node.name,
                node.resource_type,
                node.status,
                str(node.attempt),
                "no timing",
                "",
                node.error.kind.value if node.error else "",
                (node.message or "")[:200] if node.failed else "",
            ]
        )
    head = [
        "#",
        "phase",
        "slot",
        "node",
        "type",
        "status",
        "attempt",
        "elapsed",
        "rows",
        "error kind",
        "message",
    ]
    lines = ["<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>"]
    lines.append("<tbody>")
    for row in cells:
        lines.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def timeline_figure(
    results: RunResult | Sequence[RunResult] | Mapping[str, RunResult],
    *,
    title: str | None = None,
) -> Any:
    """A plotly ``Figure`` (for notebooks): node executions per thread slot over time.

    ``results`` is one :class:`~dbt_runner.RunResult`, several, or a mapping
    ``{"staging": r1, "tests": r2}`` (the shape ``dbt-runner cycle --json`` prints).

    >>> fig = timeline_figure({"staging": staging, "tests": tests})   # doctest: +SKIP
    >>> fig.show()                                                     # doctest: +SKIP
    """
    go = _plotly()
    labelled = _labelled(results)
    bars, untimed = _bars(labelled)
    placed = _place(bars, labelled)
    rows = _rows_in_order(placed, labelled)
    row_of = {id(p.bar): p.row for p in placed}

    fig = go.Figure()
    statuses = sorted({b.node.status for b in bars}, key=lambda s: (s not in STATUS_COLOURS, s))
    for status in statuses:
        group = [b for b in bars if b.node.status == status]
        colour = STATUS_COLOURS.get(status, _OTHER)
        fig.add_trace(
            go.Bar(
                name=status,
                orientation="h",
                y=[row_of[id(b)] for b in group],
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
                        b.node.thread or "?",
                    ]
                    for b in group
                ],
                hovertemplate=(
                    "<b>%{text}</b> (%{customdata[1]})<br>"
                    f"status: {status} · attempt %{{customdata[2]}} (%{{customdata[5]}})<br>"
                    "%{y} · dbt thread %{customdata[9]}<br>"
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
        height=220 + _ROW_HEIGHT_PX * max(1, len(rows)),
        template="plotly_white",
        showlegend=True,
        legend={"title": {"text": "status"}},
        uniformtext={"minsize": 9, "mode": "hide"},
        margin={"l": 140, "r": 30, "t": 90, "b": 70},
    )
    fig.update_xaxes(type="date", title_text="time (UTC)", showgrid=True)
    fig.update_yaxes(
        title_text="phase · thread slot",
        type="category",
        categoryorder="array",
        categoryarray=rows,
        autorange="reversed",
    )
    return fig


def write_timeline_html(
    results: RunResult | Sequence[RunResult] | Mapping[str, RunResult],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Write the timeline to ``path`` as one small self-contained HTML page, and beside it
    the same chart as a static ``.svg`` file (for an e-mail, a wiki, a notebook).

    The page holds the SVG inline (hover a bar for its details) and a side list
    of every node: no script, no network, a few KB however many nodes.

    >>> write_timeline_html({"staging": staging, "tests": tests}, "timeline.html")  # doctest: +SKIP
    PosixPath('timeline.html')
    """
    labelled = _labelled(results)
    svg = timeline_svg(results, title=title)
    heading = title or _title(labelled)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(heading)}</title>
<style>
body {{ font-family: sans-serif; margin: 10px; color: #222; }}
svg g.node:hover rect {{ stroke-width: 2; }}
table {{ border-collapse: collapse; font-size: 12px; margin-top: 12px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: left; }}
</style></head>
<body>
{svg}
{_side_list(labelled)}
</body></html>
"""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    out.with_suffix(".svg").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n", encoding="utf-8"
    )
    return out
