"""The timeline: thread-slot rows per phase, named bars, hover details, a small file."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from dbt_runner import Attempt, DbtSession, ErrorInfo, ErrorKind, NodeResult, RunResult, Settings
from dbt_runner._results import parse_time as _parse
from dbt_runner._timeline import max_concurrency, timeline_figure, timeline_svg
from dbt_runner.cli import main

MINI = Path(__file__).parent / "fixtures" / "mini_project"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def staging(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """A real ``dbt run`` of the three overlapping models on 3 threads (DuckDB)."""
    tmp = tmp_path_factory.mktemp("timeline")
    settings = Settings(
        project_dir=MINI,
        warehouse={"type": "duckdb", "path": str(tmp / "mini.duckdb"), "schema": "stg"},
        state_dir=tmp / "state",
        retry={"attempts": 1},
    )
    with DbtSession(settings) as session:
        result = session.run_staging(threads=3)
    assert result.success, result.summary()
    return result


@dataclass
class Bar:
    name: str
    status: str
    label: str  # the text drawn on the bar ("" when it has no room)
    hover: str  # the SVG <title>: what a browser shows on hover
    row: str  # "phase · slot n"
    x: float
    width: float
    faded: bool
    hatched: bool


def parse_svg(svg: str) -> tuple[ET.Element, list[Bar], list[str]]:
    """The SVG document, its bars and its row labels (in order, top to bottom)."""
    root = ET.fromstring(svg)
    texts = [t for t in root.iter(f"{SVG}text")]
    rows = [t.text or "" for t in texts if " · slot " in (t.text or "")]
    row_at = {float(t.get("y", "0")): t.text or "" for t in texts if " · slot " in (t.text or "")}
    bars = []
    for group in root.iter(f"{SVG}g"):
        if group.get("class") != "node":
            continue
        rects = group.findall(f"{SVG}rect")
        label = group.find(f"{SVG}text")
        y = float(rects[0].get("y", "0"))
        row = min(row_at.items(), key=lambda item: abs(item[0] - y - 15))[1]
        bars.append(
            Bar(
                name=group.get("data-name", ""),
                status=group.get("data-status", ""),
                label="" if label is None else label.text or "",
                hover=group.findtext(f"{SVG}title") or "",
                row=row,
                x=float(rects[0].get("x", "0")),
                width=float(rects[0].get("width", "0")),
                faded=rects[0].get("fill-opacity") is not None,
                hatched=any(r.get("fill") == "url(#retry)" for r in rects),
            )
        )
    return root, bars, rows


def svg_in_html(html: str) -> str:
    return html[html.index("<svg") : html.index("</svg>") + len("</svg>")]


def test_real_three_thread_run_draws_three_named_bars_in_three_slots(
    staging: RunResult, tmp_path: Path
) -> None:
    path = staging.timeline_html(tmp_path / "out" / "timeline.html")
    html = path.read_text(encoding="utf-8")
    # self-contained and light: no script, nothing fetched, a few KB
    assert "<script" not in html and "<link" not in html and "http" not in html.split("<svg")[0]
    assert len(html.encode()) < 50_000
    svg_file = path.with_suffix(".svg")
    assert svg_file.is_file()  # the static picture beside the page
    _, bars, rows = parse_svg(svg_file.read_text(encoding="utf-8"))
    # a slot per dbt thread, in the threads' order: the row says which thread it is
    threads = sorted({n.thread or "" for n in staging.nodes}, key=lambda t: int(t[7:].split()[0]))
    assert rows == [f"run · slot {i} · {t.split(' (')[0]}" for i, t in enumerate(threads, 1)]
    assert sorted(b.name for b in bars) == ["part_1", "part_2", "part_3"]
    assert sorted(b.label for b in bars) == ["part_1", "part_2", "part_3"]  # readable on the bar
    assert len({b.row for b in bars}) == 3  # they overlapped: one slot each
    for bar in bars:
        node = next(n for n in staging.nodes if n.name == bar.name)
        assert bar.status == "success" and not bar.hatched and not bar.faded
        assert "status: success · attempt 1" in bar.hover
        assert node.unique_id in bar.hover and (node.thread or "") in bar.hover
        assert bar.row.endswith(" · " + (node.thread or "").split(" (")[0])
    title = svg_file.read_text(encoding="utf-8")
    assert "up to 3 at once" in title
    assert max_concurrency(staging.nodes) == 3
    # the side list names every node
    for name in ("part_1", "part_2", "part_3"):
        assert f"<td>{name}</td>" in html


def test_a_real_run_records_where_its_time_before_the_first_node_went(
    staging: RunResult,
) -> None:
    """open (the session), lock (run_staging's writer lock, taken before its command),
    import (dbt, once per process), parse, connect: measured, in order, and connect ends
    where the first node starts."""
    names = [p.name for p in staging.phases]
    assert names in (
        ["open", "lock", "import", "parse", "connect"],
        ["open", "lock", "parse", "connect"],  # dbt was imported by an earlier test
    ), names
    # before the command's first attempt, or in it
    before = {"open", "import", "lock"}
    assert [p.attempt for p in staging.phases] == [
        None if p.name in before else 1 for p in staging.phases
    ]
    starts = [_parse(p.started_at) for p in staging.phases]
    assert all(a is not None for a in starts)
    assert starts == sorted(starts)  # type: ignore[type-var]
    first_node = min(_parse(n.started_at) for n in staging.nodes)  # type: ignore[type-var]
    connect = staging.phases[-1]
    end = _parse(connect.started_at) + timedelta(seconds=connect.elapsed_s)  # type: ignore[operator]
    assert abs((end - first_node).total_seconds()) < 0.002  # type: ignore[operator]
    # each phase ended before the next began (wall clock vs. monotonic: a ms of slack)
    for phase, after in zip(staging.phases, staging.phases[1:], strict=False):
        ended = _parse(phase.started_at) + timedelta(seconds=phase.elapsed_s)  # type: ignore[operator]
        assert ended <= _parse(after.started_at) + timedelta(milliseconds=2), (phase, after)  # type: ignore[operator]


def test_saved_json_loads_back_equal(staging: RunResult) -> None:
    again = RunResult.from_dict(json.loads(staging.to_json()))
    assert again == staging
    assert again.attempt_log == staging.attempt_log


def _node(name: str, attempt: int, start: int, end: int, thread: str, status: str) -> NodeResult:
    return NodeResult(
        unique_id=f"model.p.{name}",
        name=name,
        resource_type="model",
        status=status,
        started_at=f"2026-01-01T00:00:{start:02d}+00:00",
        completed_at=f"2026-01-01T00:00:{end:02d}+00:00",
        elapsed_s=float(end - start),
        thread=thread,
        rows_affected=None,
        message="could not serialize access" if status == "error" else "OK",
        attempt=attempt,
        error=ErrorInfo(ErrorKind.CONFLICT, "could not serialize") if status == "error" else None,
    )


@pytest.fixture
def retried() -> RunResult:
    """part_1 hit a serialization conflict, the retry re-ran only part_1."""
    first = Attempt(
        number=1,
        args=("run", "--select", "tag:staging"),
        threads=2,
        started_at="2026-01-01T00:00:00+00:00",
        elapsed_s=5.0,
        success=False,
        nodes=(
            _node("part_1", 1, 1, 3, "Thread-1", "error"),
            _node("part_2", 1, 1, 4, "Thread-2", "success"),
        ),
        error=ErrorInfo(ErrorKind.CONFLICT, "could not serialize"),
    )
    second = Attempt(
        number=2,
        args=("run", "--select", "part_1"),
        threads=2,
        started_at="2026-01-01T00:00:06+00:00",
        elapsed_s=3.0,
        success=True,
        nodes=(_node("part_1", 2, 7, 9, "Thread-3", "success"),),
    )
    return RunResult.merge(
        "run", [first, second], started_at="2026-01-01T00:00:00+00:00", elapsed_s=9.0
    )


def test_a_retry_reuses_the_slots_and_is_marked(retried: RunResult) -> None:
    """Three dbt threads over two attempts, at most two at once: two rows, not three."""
    _, bars, rows = parse_svg(timeline_svg(retried))
    # slot 1 ran Thread-1, then (the retry's only node) Thread-3
    assert rows == ["run · slot 1 · Thread-1, Thread-3", "run · slot 2 · Thread-2"]
    by_label = {b.label: b for b in bars}
    assert set(by_label) == {"part_1", "part_1 ↻2", "part_2"}
    first, retry = by_label["part_1"], by_label["part_1 ↻2"]
    assert first.faded and first.status == "error" and not first.hatched
    assert "replaced by a retry" in first.hover and "error kind: conflict" in first.hover
    assert retry.hatched and not retry.faded and "attempt 2" in retry.hover
    assert not by_label["part_2"].faded and not by_label["part_2"].hatched
    svg = timeline_svg(retried)
    assert "run retry (attempt 2)" in svg
    assert "2 attempts" in svg and "up to 2 at once" in svg


def test_narrow_bars_are_named_in_the_svg_itself(tmp_path: Path) -> None:
    """A 3-model + 15-test cycle: the SVG alone (no side list) names every node, and the
    page stays well under 1 MB."""
    models = tuple(_node(f"stg_model_{i}", 1, 1, 20, f"Thread-{i}", "success") for i in range(3))
    tests = tuple(
        NodeResult(
            unique_id=f"test.p.not_null_stg_model_{i % 3}_column_number_{i}.abc{i}",
            name=f"not_null_stg_model_{i % 3}_column_number_{i}",
            resource_type="test",
            status="pass",
            started_at=f"2026-01-01T00:00:{21 + i // 3:02d}+00:00",
            completed_at=f"2026-01-01T00:00:{21 + i // 3:02d}.400000+00:00",
            elapsed_s=0.4,
            thread=f"Thread-{4 + i % 3}",
            rows_affected=1,  # what dbt reports for a passing test: not a row count
            message="OK",
        )
        for i in range(15)
    )
    staging = RunResult("run", True, "2026-01-01T00:00:00+00:00", 20.0, 3, 1, models)
    tested = RunResult("test", True, "2026-01-01T00:00:20+00:00", 6.0, 3, 1, tests)

    path = tmp_path / "cycle.html"
    from dbt_runner._timeline import write_timeline_html

    write_timeline_html({"staging": staging, "tests": tested}, path)
    html = path.read_text(encoding="utf-8")
    assert len(html.encode()) <= 1_000_000
    _, bars, rows = parse_svg(svg_in_html(html))
    assert rows == [
        f"{phase} · slot {n} · Thread-{n + (3 if phase == 'tests' else -1)}"
        for phase in ("staging", "tests")
        for n in (1, 2, 3)
    ]
    assert len(bars) == 18
    # every bar carries its own name: on it, or (a short test bar) on a line under its row
    assert sorted(b.label for b in bars) == sorted(b.name for b in bars)
    test_bars = [b for b in bars if b.name.startswith("not_null")]
    for bar in test_bars:
        assert bar.name in bar.hover and "status: pass" in bar.hover
        assert "rows:" not in bar.hover  # a passing test's "1" is not a row count
        assert f"<td>{bar.name}</td>" in html  # the side list names it
    assert "rows: 1" not in html
    assert html.count("<td>0.400s</td><td></td>") == 15  # the tests' rows cell stays empty


def test_retries_survive_the_json_round_trip(retried: RunResult, tmp_path: Path) -> None:
    saved = retried.to_dict()
    assert [n["attempt"] for n in saved["superseded_nodes"]] == [1]
    again = RunResult.from_dict(json.loads(json.dumps(saved)))
    assert again == retried
    assert again.attempt_log == retried.attempt_log
    html = again.timeline_html(tmp_path / "t.html").read_text()
    assert len(parse_svg(svg_in_html(html))[1]) == 3


def test_nodes_without_timing_are_listed_not_drawn() -> None:
    skipped = NodeResult("model.p.c", "c", "model", "skipped", None, None, 0.0, None, None, None)
    result = RunResult(
        command="run",
        success=False,
        started_at="2026-01-01T00:00:00+00:00",
        elapsed_s=4.0,
        threads=1,
        attempts=1,
        nodes=(_node("a", 1, 1, 2, "Thread-1", "error"), skipped),
    )
    svg = timeline_svg(result)
    assert len(parse_svg(svg)[1]) == 1
    assert "no timing): c (skipped)" in svg


def test_report_command_draws_a_saved_result(staging: RunResult, tmp_path: Path) -> None:
    single = tmp_path / "staging.json"
    single.write_text(staging.to_json())
    cycle = tmp_path / "cycle.json"
    cycle.write_text(json.dumps({"staging": staging.to_dict(), "tests": staging.to_dict()}))
    runner = CliRunner()

    out = tmp_path / "single.html"
    res = runner.invoke(main, ["report", str(single), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"timeline of 3 nodes: {out}" in res.output
    assert len(parse_svg(out.with_suffix(".svg").read_text())[1]) == 3

    out = tmp_path / "cycle.html"
    res = runner.invoke(main, ["report", "-", "-o", str(out)], input=cycle.read_text())
    assert res.exit_code == 0, res.output
    html = out.read_text()
    _, bars, rows = parse_svg(svg_in_html(html))
    assert len(bars) == 6 and "staging: OK" in html
    assert [r.rsplit(" · ", 1)[0] for r in rows] == [
        f"{phase} · slot {n}" for phase in ("staging", "tests") for n in (1, 2, 3)
    ]


def test_report_command_rejects_what_is_not_a_result(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a result"}')
    res = CliRunner().invoke(main, ["report", str(bad), "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 2 and "not a dbt-runner result" in res.output
    bad.write_text("{")
    res = CliRunner().invoke(main, ["report", str(bad), "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 2
    assert not (tmp_path / "x.html").exists()


def test_without_plotly_the_report_still_draws(
    staging: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plotly is only for the interactive notebook figure; the report needs nothing."""
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install 'dbt-runner\[timeline\]'"):
        staging.to_timeline()
    saved = tmp_path / "r.json"
    saved.write_text(staging.to_json())
    res = CliRunner().invoke(main, ["report", str(saved), "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 0, res.output
    assert len(parse_svg((tmp_path / "x.svg").read_text())[1]) == 3


def test_run_results_json_timestamps_with_z_are_drawn() -> None:
    node = NodeResult(
        "model.p.a",
        "a",
        "model",
        "success",
        "2026-01-01T00:00:01.500000Z",  # how dbt's run_results.json writes them
        "2026-01-01T00:00:03Z",
        1.5,
        "Thread-1",
        None,
        None,
    )
    result = RunResult("run", True, "2026-01-01T00:00:00Z", 3.0, 1, 1, (node,))
    svg = timeline_svg(result)
    # the axis starts at the command's start, to the millisecond
    assert "seconds after the command's start, 2026-01-01 00:00:00.000 UTC" in svg
    [bar] = parse_svg(svg)[1]
    assert 400 < bar.width < 600  # the second half of the axis: 1.5 s to 3 s


def test_notebook_figure_uses_the_same_slot_rows(retried: RunResult) -> None:
    pytest.importorskip("plotly", reason="pip install 'dbt-runner[timeline]'")
    fig = timeline_figure(retried)
    rows = {y for trace in fig.data for y in trace.y}
    expected = ["run · slot 1 · Thread-1, Thread-3", "run · slot 2 · Thread-2"]
    assert rows == set(expected)
    texts = {t for trace in fig.data for t in trace.text}
    assert texts == {"part_1", "part_1 ↻2", "part_2"}
    assert list(fig.layout.yaxis.categoryarray) == expected
    # one legend entry per colour: a red error and a green success, no duplicate swatch
    assert sorted(trace.name for trace in fig.data) == ["error", "success"]
