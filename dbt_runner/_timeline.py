"""A timeline (Gantt chart) of a command: its phases, then node executions per thread slot.

The axis starts at the command's start. Each result (``staging``, ``tests``...)
first gets a row of its :class:`~dbt_runner.Phase` s — the session opening, the
writer lock, dbt's import, parse and connect: where the time before the first
node went — then one row per thread slot: a slot per dbt thread, slot 1 the
lowest-numbered one, titled with the thread(s) that ran in it (a retry's new
threads reuse the slots, so 3 threads are 3 rows however often dbt restarted its
workers). One bar per node execution from its start to its end, coloured by
status (one legend entry per colour: ``success / pass``), named on the bar when
it fits and on a line under its row when it does not (short test bars), so the
SVG alone names every node. Hovering a bar shows its status, rows, attempt,
error kind and message (cut at a word boundary). Bars of a retry (attempt 2 and
later) are hatched and marked ``↻2``, results a retry replaced are faded, and a
dashed line marks where each retry began. Failed nodes and their errors are
listed under the chart. Times are shown to the millisecond.

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
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._results import Phase
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
    """UTC wall time to the millisecond, in the form plotly.js reads on a date axis."""
    utc = value.astimezone(timezone.utc).replace(tzinfo=None)
    return utc.isoformat(sep=" ", timespec="milliseconds")


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
    slot: int  # 1-based, within the bar's invocation

    @property
    def row(self) -> str:
        return f"{self.bar.label} · slot {self.slot}"


def _thread_order(thread: str | None) -> tuple[int, str]:
    """dbt's threads in their number's order (``Thread-2 (worker)`` before ``Thread-10``)."""
    digits = "".join(c for c in (thread or "").split(" ")[0] if c.isdigit())
    return (int(digits) if digits else 1 << 30, thread or "")


def _short_thread(thread: str | None) -> str:
    """``Thread-3 (worker)`` as ``Thread-3`` (the part that tells threads apart)."""
    return (thread or "?").split(" (")[0]


def _place(bars: list[_Bar], labelled: list[tuple[str, RunResult]]) -> list[_Placed]:
    """Each bar in a thread slot of its invocation: a slot per dbt thread, in the threads'
    order (slot 1 holds the lowest-numbered thread), so a row is one thread at a time.

    A retry's new threads reuse the slots (3 threads are 3 rows however often dbt
    restarted its workers); a bar whose thread's slot is busy (no thread, or timings
    that overlap) goes to the lowest free slot.
    """
    placed: list[_Placed] = []
    for label, _ in labelled:
        ends: list[datetime] = []  # per slot: when its last bar ended
        mine = [b for b in bars if b.label == label]
        for attempt in sorted({b.node.attempt for b in mine}):
            group = sorted(
                (b for b in mine if b.node.attempt == attempt), key=lambda b: (b.start, b.end)
            )
            threads = sorted({b.node.thread for b in group if b.node.thread}, key=_thread_order)
            slot_of = {thread: i for i, thread in enumerate(threads)}
            for bar in group:
                slot = slot_of.get(bar.node.thread or "", -1)
                if slot < 0 or (slot < len(ends) and ends[slot] > bar.start):
                    slot = next((i for i, end in enumerate(ends) if end <= bar.start), len(ends))
                while slot >= len(ends):
                    ends.append(bar.start)
                ends[slot] = max(ends[slot], bar.end)
                placed.append(_Placed(bar, slot + 1))
    return placed


def _rows_in_order(placed: list[_Placed], labelled: list[tuple[str, RunResult]]) -> list[str]:
    rows: list[str] = []
    for label, _ in labelled:
        slots = max((p.slot for p in placed if p.bar.label == label), default=0)
        rows += [f"{label} · slot {n}" for n in range(1, slots + 1)]
    return rows


def _row_titles(placed: list[_Placed]) -> dict[str, str]:
    """Each slot row's title: the slot and the dbt thread(s) that ran in it."""
    threads: dict[str, list[str]] = {}
    for p in sorted(placed, key=lambda p: p.bar.start):
        seen = threads.setdefault(p.row, [])
        name = _short_thread(p.bar.node.thread)
        if name not in seen:
            seen.append(name)
    return {row: f"{row} · {', '.join(names)}" for row, names in threads.items()}


def _status_colour(status: str) -> str:
    return STATUS_COLOURS.get(status, _OTHER)


def _legend(statuses: Iterable[str]) -> list[tuple[str, str]]:
    """(colour, label) per colour: statuses drawn alike share one entry ("success / pass")."""
    entries: dict[str, list[str]] = {}
    order = list(STATUS_COLOURS)
    for status in sorted(
        set(statuses), key=lambda s: (s not in order, order.index(s) if s in order else 0, s)
    ):
        entries.setdefault(_status_colour(status), []).append(status)
    return [(colour, " / ".join(names)) for colour, names in entries.items()]


def _shows_rows(node: NodeResult) -> bool:
    """Rows written mean something for models; a test's count is of failing rows."""
    return node.rows_affected is not None and node.resource_type != "test"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, with "…".

    >>> shorten('LINE 15:     from "dbt_runner"."raw"."ecs_order_info"', 30)
    'LINE 15: from …'
    """
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: max(limit - 1, 1)]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + " …"


def _hover(p: _Placed, titles: Mapping[str, str]) -> str:
    node = p.bar.node
    lines = [
        f"{node.name} ({node.resource_type})",
        f"status: {node.status} · attempt {node.attempt}"
        + (" (replaced by a retry)" if p.bar.superseded else ""),
        f"{titles.get(p.row, p.row)} · dbt thread {node.thread or '?'}",
        f"{_axis_time(p.bar.start)} → {_axis_time(p.bar.end)} UTC"
        f" · dbt execution {node.elapsed_s:.3f}s",
    ]
    if _shows_rows(node):
        lines.append(f"rows: {node.rows_affected}")
    if node.error is not None:
        lines.append(f"error kind: {node.error.kind.value}")
    if node.message and node.failed:
        lines.append(shorten(node.message, 300))
    lines.append(node.unique_id)
    return "\n".join(lines)


def _nice_step(span_s: float, ticks: int = 8) -> float:
    raw = max(span_s / ticks, 1e-3)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return float(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# --------------------------------------------------------------------------- phases
#: fill of each phase's bar (text on them is dark)
PHASE_COLOURS = {
    "open": "#c5b0d5",
    "lock": "#c49c94",
    "import": "#9edae5",
    "parse": "#aec7e8",
    "connect": "#dbdb8d",
}
_PHASE_OTHER = "#dddddd"
_PHASE_MEANING = {
    "open": "the session (profile, tunnel, deps)",
    "lock": "the writer lock",
    "import": "Python importing dbt",
    "parse": "dbt parsing the project",
    "connect": "dbt's start until its first node",
}


@dataclass(frozen=True)
class _PhaseBar:
    label: str  # the invocation it belongs to
    phase: Phase
    start: datetime
    end: datetime

    @property
    def row(self) -> str:
        return f"{self.label} · before the nodes"


def _phase_bars(labelled: list[tuple[str, RunResult]]) -> list[_PhaseBar]:
    out = []
    for label, result in labelled:
        for phase in result.phases:
            start = _parse(phase.started_at)
            if start is not None:
                out.append(
                    _PhaseBar(label, phase, start, start + timedelta(seconds=phase.elapsed_s))
                )
    return out


def _origin(
    labelled: list[tuple[str, RunResult]], bars: list[_Bar], phases: list[_PhaseBar]
) -> datetime | None:
    """The command's start: its first phase (the session opening), its invocation's start,
    or its first node, whichever came first."""
    starts = [b.start for b in bars] + [p.start for p in phases]
    starts += [t for t in (_parse(r.started_at) for _, r in labelled) if t is not None]
    return min(starts, default=None)


# --------------------------------------------------------------------------- SVG
_W, _LEFT_MIN, _RIGHT, _ROW_H, _BAR_H, _CHAR_W = 1180, 150, 20, 34, 22, 6.6
_CALLOUT_H = 13  # one line of names under a row, for bars too narrow to hold theirs


@dataclass(frozen=True)
class _Drawn:
    """One bar as drawn: where, what it says, and its label (on it, or in a callout)."""

    row: str
    x: float
    w: float
    text: str  # the name (and retry mark) to show
    inside: bool  # True: on the bar; False: on a callout line under the row
    line: int = 0  # the callout line (1..) when not inside


def _callouts(items: list[tuple[str, float, float, str]], right_edge: float) -> list[_Drawn]:
    """Labels for ``(row, x, w, text)`` bars: on the bar when it is wide enough, else on
    the first callout line under its row where it overlaps no other label (a staircase;
    a label that would pass the right edge ends at its bar instead)."""
    drawn: list[_Drawn] = []
    taken: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for row, x, w, text in sorted(items, key=lambda i: (i[0], i[1])):
        width = len(text) * _CHAR_W + 6
        if width <= w:
            drawn.append(_Drawn(row, x, w, text, True))
            continue
        left = x if x + width <= right_edge else max(x + w - width, 4.0)
        span = (left - 3, left + width + 3)
        line = 1
        while any(a < span[1] and span[0] < b for a, b in taken.get((row, line), [])):
            line += 1
        taken.setdefault((row, line), []).append(span)
        drawn.append(_Drawn(row, x, w, text, False, line))
    return drawn


def _title_lines(title: str, chars: int = int((_W - 20) / 8.2)) -> list[str]:
    """The title on as many lines as the chart's width needs, broken after a " · "
    (between results), else at a space."""
    lines: list[str] = []
    for part in title.split(" · "):
        joined = f"{lines[-1]} · {part}" if lines else part
        if lines and len(joined) <= chars:
            lines[-1] = joined
        else:
            lines.append(part)
    return [wrapped for line in lines for wrapped in textwrap.wrap(line, chars) or [""]]


def timeline_svg(
    results: RunResult | Sequence[RunResult] | Mapping[str, RunResult],
    *,
    title: str | None = None,
) -> str:
    """The timeline as one self-contained SVG document (no scripts, no network).

    Readable on its own (attached to a ticket): the axis starts at the command's start
    and shows its phases (session open, writer lock, dbt's import, parse, connect)
    before the nodes; every node is named on its bar, or under its row when the bar
    is too short (tests); each row is a thread slot titled with its dbt thread; the
    legend has one entry per colour; failed nodes' errors are listed at the bottom.
    Hover a bar for its details (an SVG ``<title>``); every label is real text.

    >>> svg = timeline_svg({"staging": staging, "tests": tests})   # doctest: +SKIP
    """
    labelled = _labelled(results)
    bars, untimed = _bars(labelled)
    placed = _place(bars, labelled)
    phases = _phase_bars(labelled)
    titles = _row_titles(placed)
    rows: list[str] = []
    for label, _ in labelled:
        rows += sorted({ph.row for ph in phases if ph.label == label})
        rows += [r for r in _rows_in_order(placed, [(label, _)])]
    for ph in phases:
        titles[ph.row] = ph.row
    left = max(_LEFT_MIN, 16 + _CHAR_W * max((len(t) for t in titles.values()), default=0))
    plot_w = _W - left - _RIGHT
    t0 = _origin(labelled, bars, phases)
    t1 = max([b.end for b in bars] + [ph.end for ph in phases], default=t0)
    span = max((t1 - t0).total_seconds(), 1e-3) if t0 is not None and t1 is not None else 1.0

    def x_of(at: datetime) -> float:
        assert t0 is not None
        return left + (at - t0).total_seconds() / span * plot_w

    # the legend: one entry per colour, on as many lines as it needs
    entries: list[tuple[str, str, str]] = [  # (class, swatch, text)
        ("legend", f'fill="{colour}"', text)
        for colour, text in _legend(b.node.status for b in bars)
    ]
    if any(b.node.attempt > 1 for b in bars):
        entries.append(("legend", "retry", "retry (↻n: attempt n; faded: replaced)"))
    for name in [n for n in PHASE_COLOURS if any(ph.phase.name == n for ph in phases)]:
        entries.append(
            ("legend phase", f'fill="{PHASE_COLOURS[name]}"', f"{name}: {_PHASE_MEANING[name]}")
        )
    legend: list[str] = []
    heading = _title_lines(title or _title(labelled))
    legend_x, legend_y = 10.0, 34.0 + 18 * (len(heading) - 1)
    for cls, swatch, text in entries:
        width = 30 + _CHAR_W * len(text)
        if legend_x > 10 and legend_x + width > _W - 10:
            legend_x, legend_y = 10.0, legend_y + 16
        box = f'x="{legend_x:.0f}" y="{legend_y:.0f}" width="11" height="11"'
        rects = (
            f'<rect {box} fill="#777777"/><rect {box} fill="url(#retry)"/>'
            if swatch == "retry"
            else f"<rect {box} {swatch}/>"
        )
        legend.append(
            f'<g class="{cls}">{rects}<text x="{legend_x + 15:.0f}" y="{legend_y + 10:.0f}">'
            f"{_e(text)}</text></g>"
        )
        legend_x += width
    top = legend_y + 44  # the axis note, then the rows

    # labels first: a row is as tall as its callout lines need
    items = [
        (
            ph.row,
            x_of(ph.start),
            max(x_of(ph.end) - x_of(ph.start), 2.0),
            f"{ph.phase.name} {ph.phase.elapsed_s:.1f}s",
        )
        for ph in phases
    ]
    for p in placed:
        retry = f" ↻{p.bar.node.attempt}" if p.bar.node.attempt > 1 else ""
        items.append(
            (
                p.row,
                x_of(p.bar.start),
                max(x_of(p.bar.end) - x_of(p.bar.start), 2.0),
                p.bar.node.name + retry,
            )
        )
    labels = _callouts(items, _W - _RIGHT)
    label_of = {(d.row, round(d.x, 3), d.text): d for d in labels}
    lines_in = {row: max((d.line for d in labels if d.row == row), default=0) for row in rows}
    row_y: dict[str, float] = {}
    y = float(top)
    for row in rows:
        row_y[row] = y
        y += _ROW_H + lines_in[row] * _CALLOUT_H
    bottom = y
    failed = [
        p
        for p in placed
        if p.bar.node.failed and not p.bar.superseded and (p.bar.node.message or p.bar.node.error)
    ]
    errors_h = (22 + 15 * len(failed)) if failed else 0
    height = int(bottom + 30 + errors_h + (20 if untimed else 0) + 10)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
        f'viewBox="0 0 {_W} {height}" font-family="sans-serif" font-size="11">',
        '<defs><pattern id="retry" patternUnits="userSpaceOnUse" width="7" height="7" '
        'patternTransform="rotate(45)"><rect width="2.5" height="7" fill="#ffffff" '
        'fill-opacity="0.6"/></pattern></defs>',
        f'<rect width="{_W}" height="{height}" fill="#ffffff"/>',
        *(
            f'<text class="title" x="10" y="{22 + 18 * i}" font-size="14" font-weight="bold">'
            f"{_e(line)}</text>"
            for i, line in enumerate(heading)
        ),
    ]
    for item in legend:
        out.append(item)
    if t0 is not None:
        out.append(
            f'<text x="{left}" y="{top - 8}" fill="#555555">seconds after the command\'s start, '
            f"{_e(_axis_time(t0))} UTC</text>"
        )
        step = _nice_step(span)
        tick = 0.0
        while tick <= span + 1e-9:
            x = left + tick / span * plot_w
            out.append(
                f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#e5e5e5"/>'
                f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle" fill="#555555">'
                f"{tick:g}s</text>"
            )
            tick += step
    previous = None
    for row in rows:
        y = row_y[row]
        invocation = row.split(" · ")[0]
        if invocation != previous and previous is not None:
            out.append(f'<line x1="0" y1="{y}" x2="{_W}" y2="{y}" stroke="#999999"/>')
        previous = invocation
        out.append(
            f'<text class="row" x="{left - 8}" y="{y + _ROW_H / 2 + 4:.0f}" '
            f'text-anchor="end">{_e(titles.get(row, row))}</text>'
        )

    def label_svg(d: _Drawn, y: float, colour: str) -> str:
        if d.inside:
            return (
                f'<text class="label" x="{d.x + d.w / 2:.1f}" y="{y + _BAR_H / 2 + 4:.1f}" '
                f'text-anchor="middle" fill="{colour}" font-weight="bold">{_e(d.text)}</text>'
            )
        width = len(d.text) * _CHAR_W + 6
        lx = d.x if d.x + width <= _W - _RIGHT else max(d.x + d.w - width, 4.0)
        ly = y + _BAR_H + 4 + (_ROW_H - _BAR_H) / 2 + d.line * _CALLOUT_H - 3
        mid = d.x + d.w / 2
        return (
            f'<line x1="{mid:.1f}" y1="{y + _BAR_H:.1f}" x2="{mid:.1f}" y2="{ly - 9:.1f}" '
            'stroke="#888888" stroke-width="0.6"/>'
            f'<text class="label" x="{lx + 3:.1f}" y="{ly:.1f}" fill="#222222">{_e(d.text)}</text>'
        )

    for ph in phases:
        y = row_y[ph.row] + (_ROW_H - _BAR_H) / 2.0
        x, w = x_of(ph.start), max(x_of(ph.end) - x_of(ph.start), 2.0)
        text = f"{ph.phase.name} {ph.phase.elapsed_s:.1f}s"
        hover = (
            f"{ph.phase.name} ({_PHASE_MEANING.get(ph.phase.name, 'phase')}) · "
            f"{ph.phase.elapsed_s:.3f}s\n{_axis_time(ph.start)} → {_axis_time(ph.end)} UTC"
            + (f"\nattempt {ph.phase.attempt}" if ph.phase.attempt else "")
        )
        out.append(
            f'<g class="phase" data-name="{_e(ph.phase.name)}"><title>{_e(hover)}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{_BAR_H}" '
            f'fill="{PHASE_COLOURS.get(ph.phase.name, _PHASE_OTHER)}" stroke="#555555" '
            'stroke-width="0.6"/>'
            + label_svg(label_of[(ph.row, round(x, 3), text)], y, "#222222")
            + "</g>"
        )
    for p in placed:
        node, y = p.bar.node, row_y[p.row] + (_ROW_H - _BAR_H) / 2.0
        x = x_of(p.bar.start)
        w = max(x_of(p.bar.end) - x, 2.0)
        retry = f" ↻{node.attempt}" if node.attempt > 1 else ""
        opacity = ' fill-opacity="0.4" stroke-dasharray="3 2"' if p.bar.superseded else ""
        out.append(
            f'<g class="node" data-name="{_e(node.name)}" data-status="{_e(node.status)}">'
            f"<title>{_e(_hover(p, titles))}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{_BAR_H}" '
            f'fill="{_status_colour(node.status)}" stroke="#333333" stroke-width="0.6"{opacity}/>'
        )
        if node.attempt > 1:
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{_BAR_H}" '
                'fill="url(#retry)"/>'
            )
        out.append(label_svg(label_of[(p.row, round(x, 3), node.name + retry)], y, "#ffffff"))
        out.append("</g>")
    for label, result in labelled:
        phase_rows = [row_y[r] for r in rows if r.split(" · ")[0] == label and " · slot " in r]
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
    y = bottom + 34
    if failed:
        out.append(f'<text x="10" y="{y}" font-weight="bold">failed:</text>')
        limit = int((_W - 30) / _CHAR_W)
        for p in failed:
            y += 15
            node = p.bar.node
            kind = node.error.kind.value if node.error else node.status
            line = shorten(f"{node.name} [{kind}] {node.message or ''}", limit)
            out.append(f'<text class="error" x="20" y="{y}" fill="#a01010">{_e(line)}</text>')
        y += 8
    if untimed:
        names = ", ".join(f"{n.name} ({n.status})" for n in untimed[:12])
        more = f" and {len(untimed) - 12} more" if len(untimed) > 12 else ""
        out.append(
            f'<text x="10" y="{y + 12}" fill="#555555">'
            f"not on the chart (no timing): {_e(names + more)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _side_list(labelled: list[tuple[str, RunResult]]) -> str:
    """An HTML table of every node, with the phase, slot and thread it ran in."""
    bars, untimed = _bars(labelled)
    placed = _place(bars, labelled)
    titles = _row_titles(placed)
    cells = []
    for p in placed:
        node = p.bar.node
        cells.append(
            [
                p.bar.label,
                titles.get(p.row, p.row).split(" · ", 1)[1],
                node.name,
                node.resource_type,
                node.status + (" (replaced by a retry)" if p.bar.superseded else ""),
                str(node.attempt),
                f"{node.elapsed_s:.3f}s",
                str(node.rows_affected) if _shows_rows(node) else "",
                node.error.kind.value if node.error else "",
                shorten(node.message or "", 200) if node.failed else "",
            ]
        )
    for node in untimed:
        cells.append(
            [
                "",
                "",
                node.name,
                node.resource_type,
                node.status,
                str(node.attempt),
                "no timing",
                "",
                node.error.kind.value if node.error else "",
                shorten(node.message or "", 200) if node.failed else "",
            ]
        )
    head = [
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
    titles = _row_titles(placed)
    phases = _phase_bars(labelled)
    rows: list[str] = []
    for label, result in labelled:
        rows += sorted({ph.row for ph in phases if ph.label == label})
        rows += [titles.get(r, r) for r in _rows_in_order(placed, [(label, result)])]
    row_of = {id(p.bar): titles.get(p.row, p.row) for p in placed}

    fig = go.Figure()
    for name in [n for n in PHASE_COLOURS if any(ph.phase.name == n for ph in phases)]:
        group_phases = [ph for ph in phases if ph.phase.name == name]
        fig.add_trace(
            go.Bar(
                name=f"{name}: {_PHASE_MEANING[name]}",
                orientation="h",
                y=[ph.row for ph in group_phases],
                base=[_axis_time(ph.start) for ph in group_phases],
                x=[ph.phase.elapsed_s * 1000.0 for ph in group_phases],
                text=[f"{name} {ph.phase.elapsed_s:.1f}s" for ph in group_phases],
                textposition="inside",
                insidetextanchor="middle",
                marker={"color": PHASE_COLOURS[name], "line": {"color": "#555555", "width": 1}},
                hovertemplate=f"{name}: %{{x:.0f}} ms<extra></extra>",
            )
        )
    for colour, legend_text in _legend(b.node.status for b in bars):
        group = [b for b in bars if _status_colour(b.node.status) == colour]
        fig.add_trace(
            go.Bar(
                name=legend_text,
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
                        shorten(b.node.message or "", 200) if b.node.failed else "",
                        b.node.thread or "?",
                        b.node.status,
                    ]
                    for b in group
                ],
                hovertemplate=(
                    "<b>%{text}</b> (%{customdata[1]})<br>"
                    "status: %{customdata[10]} · attempt %{customdata[2]} (%{customdata[5]})<br>"
                    "%{y} · dbt thread %{customdata[9]}<br>"
                    "%{customdata[6]} → %{customdata[7]} UTC<br>"
                    "dbt execution time: %{customdata[3]:.3f}s · rows: %{customdata[4]}<br>"
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
        title_text="invocation · thread slot · dbt thread",
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
