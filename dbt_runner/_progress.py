"""What a person watching an invocation sees: a live display, or plain lines.

Three modes, chosen by :func:`choose_mode`:

* ``live`` (stdout and stderr are a terminal): a `rich <https://rich.readthedocs.io>`_
  display on stderr, redrawn a few times a second — one row per node with its
  status, thread and elapsed time, and a bar per invocation — replaced at the
  end by a summary table per result on stdout.
* ``plain`` (not a terminal: Airflow logs, CI, a pipe, ``--json``): nothing
  drawn; the ``dbt_runner.dbt`` log records are the lines, one per node start
  and finish, without control characters::

      12:00:01 INFO    START model part_1 [Thread-1 (worker)]
      12:00:01 INFO    DONE  model part_1 success in 0.23s [Thread-1 (worker)]

* ``off`` (``--quiet``): only warnings and errors.

The display learns about nodes through a :class:`DbtSession
<dbt_runner.DbtSession>` callback. dbt calls it from its worker threads, so it
only records the event under a lock; drawing happens on rich's refresh thread.
rich is imported only in ``live`` mode.

>>> display = make_display("live")                                  # doctest: +SKIP
>>> with display, DbtSession(settings, callbacks=display.callbacks) as session:  # doctest: +SKIP
...     with display.invocation("staging"):
...         result = session.run_staging(threads=3)
>>> display.report({"staging": result})                             # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal

from ._events import NodeCallback, NodeEvent
from .logging import EVENT_KEY

if TYPE_CHECKING:
    from ._results import NodeResult, RunResult

__all__ = ["LiveDisplay", "NodeBoard", "PlainDisplay", "choose_mode", "make_display"]

Mode = Literal["live", "plain", "off"]

_OK = frozenset({"success", "pass"})
_WARN = frozenset({"warn", "skipped", "partial success"})
_STATUS_STYLE = {"success": "green", "pass": "green", "warn": "yellow", "skipped": "dim"}


def choose_mode(
    *,
    quiet: bool,
    as_json: bool,
    log_format: str,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> Mode:
    """``off`` when quiet; ``live`` only when both streams are a terminal; else ``plain``.

    ``--json`` and ``--log-format json`` are for machines: never ``live``.

    >>> import io
    >>> choose_mode(quiet=False, as_json=False, log_format="text", stdout=io.StringIO())
    'plain'
    """
    if quiet:
        return "off"
    if as_json or log_format == "json":
        return "plain"
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    return "live" if _is_terminal(out) and _is_terminal(err) else "plain"


def _is_terminal(stream: IO[str]) -> bool:
    import os

    try:
        return bool(stream.isatty()) and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def make_display(mode: Mode, *, console: Any = None, out_console: Any = None) -> PlainDisplay:
    """The display for ``mode`` (``console``/``out_console``: rich consoles, for tests)."""
    if mode == "live":
        try:
            return LiveDisplay(console=console, out_console=out_console)
        except ImportError:  # rich is a dependency; a broken or trimmed install still runs
            print(
                "dbt-runner: no live display (rich is not importable: pip install rich); "
                "plain lines follow",
                file=sys.stderr,
            )
    return PlainDisplay()


# --------------------------------------------------------------------------- state
@dataclass
class _Row:
    key: tuple[int, str]
    name: str
    resource_type: str
    thread: str
    invocation: str
    started: float
    attempt: int = 1
    status: str | None = None  # None while running
    elapsed_s: float | None = None
    rows_affected: int | None = None


@dataclass
class _Invocation:
    label: str
    started: float
    nodes_started: int = 0
    nodes_finished: int = 0
    nodes_failed: int = 0
    done: bool = False
    keys: set[str] = field(default_factory=set)


class NodeBoard:
    """Thread-safe record of node events: the session callback behind the live display.

    >>> board = NodeBoard()
    >>> board.begin("staging")
    >>> board(NodeEvent("node_start", "model.p.a", "a", "model", "Thread-1", "2026-01-01T00:00:00"))
    >>> [(r.name, r.status) for r in board.rows()]
    [('a', None)]
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[int, str], _Row] = {}
        self._invocations: list[_Invocation] = []

    def begin(self, label: str) -> None:
        """A new invocation starts: the nodes that follow belong to it."""
        with self._lock:
            self._invocations.append(_Invocation(label, time.monotonic()))

    def end(self) -> None:
        """The current invocation has returned."""
        with self._lock:
            if self._invocations:
                self._invocations[-1].done = True

    def __call__(self, event: NodeEvent) -> None:
        """Record one event (called on dbt's worker threads: cheap, never raises)."""
        now = time.monotonic()
        with self._lock:
            if not self._invocations:
                self._invocations.append(_Invocation("dbt", now))
            index = len(self._invocations) - 1
            inv = self._invocations[index]
            key = (index, event.unique_id)
            row = self._rows.get(key)
            if event.event == "node_start":
                if row is None:
                    self._rows[key] = _Row(
                        key,
                        event.name,
                        event.resource_type,
                        event.thread,
                        inv.label,
                        now,
                    )
                    inv.nodes_started += 1
                else:  # a retry runs the node again
                    if row.status is not None and row.status not in _OK:
                        inv.nodes_failed -= 1
                        inv.nodes_finished -= 1
                    row.attempt += 1
                    row.started, row.thread, row.status, row.elapsed_s = (
                        now,
                        event.thread,
                        None,
                        None,
                    )
                inv.keys.add(event.unique_id)
            elif event.event == "node_finish":
                if row is None:
                    row = self._rows[key] = _Row(
                        key, event.name, event.resource_type, event.thread, inv.label, now
                    )
                    inv.nodes_started += 1
                if row.status is None:
                    inv.nodes_finished += 1
                    if (event.status or "") not in _OK:
                        inv.nodes_failed += 1
                row.status = event.status or "?"
                row.elapsed_s = event.elapsed_s
                row.rows_affected = event.rows_affected

    def rows(self) -> list[_Row]:
        """A snapshot of the rows (copies), in start order."""
        with self._lock:
            return [_Row(**vars(r)) for r in self._rows.values()]

    def invocations(self) -> list[_Invocation]:
        """A snapshot of the invocations (copies)."""
        with self._lock:
            return [
                _Invocation(
                    i.label,
                    i.started,
                    i.nodes_started,
                    i.nodes_finished,
                    i.nodes_failed,
                    i.done,
                    set(i.keys),
                )
                for i in self._invocations
            ]


# --------------------------------------------------------------------------- displays
class PlainDisplay:
    """No drawing: the log records are the progress lines; the summary is plain text."""

    mode: Mode = "plain"

    @property
    def callbacks(self) -> Sequence[NodeCallback]:
        """Callbacks to hand to :class:`~dbt_runner.DbtSession` (none here)."""
        return ()

    def log_handler(self, level: int) -> logging.Handler | None:
        """A handler that prints log records without breaking the display (None: default)."""
        return None

    @contextmanager
    def invocation(self, label: str) -> Iterator[None]:
        """Wrap one invocation (``staging``, ``tests``...)."""
        yield

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def report(self, results: Mapping[str, RunResult]) -> None:
        """Print the final summary on stdout (one line per failed node)."""
        import click

        for result in results.values():
            click.echo(result.summary())


class LiveDisplay(PlainDisplay):
    """The rich live display (stderr) and summary tables (stdout)."""

    mode: Mode = "live"

    def __init__(self, *, console: Any = None, out_console: Any = None, max_rows: int = 20) -> None:
        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True)
        self.out_console = out_console if out_console is not None else Console()
        self.board = NodeBoard()
        self.max_rows = max_rows
        self._live: Any = None

    @property
    def callbacks(self) -> Sequence[NodeCallback]:
        """The board: records node events for the next redraw."""
        return (self.board,)

    def log_handler(self, level: int) -> logging.Handler | None:
        """Log records printed above the display; node start/finish lines are in the table."""
        from rich.logging import RichHandler

        handler = RichHandler(
            console=self.console,
            level=level,
            show_path=False,
            markup=False,
            rich_tracebacks=False,
            log_time_format="%H:%M:%S",
        )
        handler.setFormatter(logging.Formatter("%(message)s"))  # RichHandler adds time, level
        handler.addFilter(_drop_routine_node_lines)
        return handler

    def __enter__(self) -> LiveDisplay:
        from rich.live import Live

        self._live = Live(
            console=self.console,
            get_renderable=self.renderable,
            refresh_per_second=8,
            transient=True,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    @contextmanager
    def invocation(self, label: str) -> Iterator[None]:
        """Add a bar for ``label`` until the invocation returns."""
        self.board.begin(label)
        try:
            yield
        finally:
            self.board.end()

    # -- drawing --------------------------------------------------------------------
    def renderable(self) -> Any:
        """What the live display shows now (a rich renderable)."""
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        bars = Table.grid(padding=(0, 1))
        for inv in self.board.invocations():
            total = max(inv.nodes_started, 1)
            state = "done" if inv.done else "running"
            counts = f"{inv.nodes_finished}/{inv.nodes_started} nodes"
            if inv.nodes_started == 0 and not inv.done:
                counts = "setting up (parse, connect)…"
            if inv.nodes_failed:
                counts += f", {inv.nodes_failed} failed"
            bars.add_row(
                Text(inv.label, style="bold"),
                ProgressBar(
                    total=total,
                    completed=inv.nodes_finished,
                    width=30,
                    pulse=not inv.done and inv.nodes_started == 0,
                ),
                Text(counts),
                Text(f"{now - inv.started:5.1f}s {state}", style="dim"),
            )

        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("status", "node", "type", "thread", "elapsed", "attempt"):
            table.add_column(
                column,
                justify="right" if column == "elapsed" else "left",
                overflow="fold",  # a long name wraps; it is never cut to "stg_uni…"
            )
        rows = self.board.rows()
        running = [r for r in rows if r.status is None]
        finished = [r for r in rows if r.status is not None]
        room = max(self.max_rows - len(running), 0)
        hidden = len(finished) - room
        shown = sorted(running + finished[max(hidden, 0) :], key=lambda r: r.started)
        for row in shown:
            if row.status is None:
                status = Text("running", style="cyan")
                elapsed = now - row.started
            else:
                status = Text(row.status, style=_style(row.status))
                elapsed = row.elapsed_s or 0.0
            table.add_row(
                status,
                Text(row.name),
                Text(row.resource_type, style="dim"),
                Text(row.thread),
                Text(f"{elapsed:.1f}s"),
                Text(str(row.attempt) if row.attempt > 1 else "", style="yellow"),
            )
        parts: list[Any] = [bars, table]
        if hidden > 0:
            parts.append(Text(f"… {hidden} more finished", style="dim"))
        return Group(*parts)

    def report(self, results: Mapping[str, RunResult]) -> None:
        """Per result on stdout: a title, a table of its nodes, then each failed node's error.

        Readable at any terminal width: a node's name is never cut (when the table cannot
        hold the longest name on one line, each node is stacked: its name on a line of its
        own, its details under it), and each error sits under its node's full name,
        wrapped at word boundaries.
        """
        from rich.console import Group

        console = self.out_console
        for label, result in results.items():
            nodes = sorted(result.nodes, key=lambda n: n.started_at or "~")
            fits = _table_width(result, nodes) <= console.width
            parts: list[Any] = [_report_title(label, result)]
            parts.append(_node_table(result, nodes) if fits else _stacked_nodes(result, nodes))
            parts += _error_blocks(result, nodes)
            console.print(Group(*parts))


#: lines of a node's message shown under its name (the full message: --json)
_ERROR_LINES = 12


def _report_title(label: str, result: RunResult) -> Any:
    from rich.text import Text

    from ._timeline import peak_parallelism

    outcome = Text("OK", style="green") if result.success else Text("FAILED", style="red")
    return Text.assemble(
        (f"{label}: ", "bold"),
        f"dbt {result.command} ",
        outcome,
        f" — {len(result.nodes)} nodes, threads={result.threads}, "
        f"up to {peak_parallelism(result)} at once, {result.elapsed_s:.1f}s, "
        f"{result.attempts} attempt(s)",
    )


def _node_cells(result: RunResult, node: NodeResult) -> dict[str, Any]:
    """The cells of one node's row, by column."""
    from rich.text import Text

    t0 = _seconds(result.started_at)
    start = _seconds(node.started_at)
    return {
        "node": Text(node.name),
        "type": Text(node.resource_type, style="dim"),
        "status": Text(node.status, style=_style(node.status)),
        "thread": Text(node.thread or ""),
        "start": "" if start is None or t0 is None else f"+{start - t0:.1f}s",
        "elapsed": f"{node.elapsed_s:.2f}s",
        "attempt": str(node.attempt),
    }


def _columns(nodes: Sequence[NodeResult]) -> list[str]:
    """The table's columns: ``attempt`` only when a retry ran a node again."""
    columns = ["node", "type", "status", "thread", "start", "elapsed"]
    return columns + (["attempt"] if any(n.attempt > 1 for n in nodes) else [])


def _table_width(result: RunResult, nodes: Sequence[NodeResult]) -> int:
    """The narrowest :func:`_node_table` that cuts no cell: every column as wide as its
    widest cell, the thread as its longest word (it wraps at its space), three
    characters between columns (padding, the box's blank divider, padding)."""
    from rich.cells import cell_len

    widths = []
    for column in _columns(nodes):
        cells = [str(_node_cells(result, n)[column]) for n in nodes]
        if column == "thread":
            cells = [word for cell in cells for word in cell.split()]
        widths.append(max(cell_len(cell) for cell in [column, *cells]))
    return sum(widths) + 3 * (len(widths) - 1)


def _node_table(result: RunResult, nodes: Sequence[NodeResult]) -> Any:
    """One row per node; names on one line (never cut), the thread may wrap at its space."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold", pad_edge=False)
    for column in _columns(nodes):
        table.add_column(
            column,
            justify="right" if column in ("start", "elapsed") else "left",
            no_wrap=column != "thread",
        )
    for node in nodes:
        cells = _node_cells(result, node)
        table.add_row(*(cells[c] for c in _columns(nodes)))
    return table


def _stacked_nodes(result: RunResult, nodes: Sequence[NodeResult]) -> Any:
    """Each node's full name on a line of its own, its details indented under it (a
    terminal too narrow for the table)."""
    from rich.console import Group
    from rich.padding import Padding
    from rich.text import Text

    lines: list[Any] = []
    for node in nodes:
        cells = _node_cells(result, node)
        details = Text("  ").join(
            [
                cells["type"],
                cells["status"],
                cells["thread"],
                Text(cells["start"]),
                Text(cells["elapsed"]),
            ]
            + ([Text(f"attempt {node.attempt}")] if node.attempt > 1 else [])
        )
        lines += [Text(node.name, style="bold"), Padding(details, (0, 0, 0, 2))]
    return Group(*lines)


def _error_blocks(result: RunResult, nodes: Sequence[NodeResult]) -> list[Any]:
    """Each failed node of ``nodes`` (in their order): its name and kind, its message under
    it, wrapped at word boundaries."""
    from rich.padding import Padding
    from rich.text import Text

    blocks: list[Any] = []
    for node in nodes:
        if not node.failed or (node.error is None and not node.message):
            continue
        kind = node.error.kind.value if node.error else node.status
        blocks.append(Text.assemble((node.name, "bold"), " ", (f"[{kind}]", "red")))
        lines = [line.rstrip() for line in (node.message or "").strip("\n").splitlines()]
        lines = [line for line in lines if line.strip()]
        if len(lines) > _ERROR_LINES:
            lines = [*lines[:_ERROR_LINES], f"… {len(lines) - _ERROR_LINES} more lines (--json)"]
        if lines:
            blocks.append(Padding(Text("\n".join(lines), style="red"), (0, 0, 0, 4)))
    if not result.success and result.error and not result.failed_nodes:
        blocks.append(
            Padding(
                Text(f"[{result.error.kind.value}] {result.error.message}", style="red"),
                (0, 0, 0, 2),
            )
        )
    return blocks


def _style(status: str) -> str:
    if status in _STATUS_STYLE:
        return _STATUS_STYLE[status]
    return "yellow" if status in _WARN else "red"


def _seconds(iso: str | None) -> float | None:
    from ._results import parse_time

    parsed = parse_time(iso)
    return None if parsed is None else parsed.timestamp()


def _drop_routine_node_lines(record: logging.LogRecord) -> bool:
    """The live table already shows node starts and successful finishes."""
    event = getattr(record, EVENT_KEY, None)
    routine = isinstance(event, Mapping) and event.get("event") in ("node_start", "node_finish")
    return not (record.levelno <= logging.INFO and routine)
