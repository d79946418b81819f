"""The timeline: a self-contained Gantt chart of node executions per thread."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dbt_runner import Attempt, DbtSession, ErrorInfo, ErrorKind, NodeResult, RunResult, Settings
from dbt_runner._timeline import max_concurrency, timeline_figure
from dbt_runner.cli import main

pytest.importorskip("plotly", reason="pip install 'dbt-runner[timeline]'")

MINI = Path(__file__).parent / "fixtures" / "mini_project"


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


def figure_in_html(html: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The traces and layout that the HTML file hands to ``Plotly.newPlot``."""
    decoder = json.JSONDecoder()

    def value_after(pos: int) -> tuple[Any, int]:
        while html[pos] in " \n\r\t,":
            pos += 1
        return decoder.raw_decode(html, pos)

    at = html.rindex("Plotly.newPlot(") + len("Plotly.newPlot(")
    _div_id, at = value_after(at)
    data, at = value_after(at)
    layout, _ = value_after(at)
    return data, layout


def bars_of(data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per drawn bar: name, thread, start, duration, attempt, faded, hatched."""
    bars = []
    for trace in data:
        assert trace["type"] == "bar" and trace["orientation"] == "h"
        marker = trace["marker"]
        for i, text in enumerate(trace["text"]):
            bars.append(
                {
                    "status": trace["name"],
                    "text": text,
                    "thread": trace["y"][i],
                    "start": trace["base"][i],
                    "ms": trace["x"][i],
                    "attempt": trace["customdata"][i][2],
                    "faded": marker["opacity"][i] < 1,
                    "hatched": marker["pattern"]["shape"][i] == "/",
                }
            )
    return bars


def test_real_three_thread_run_draws_one_bar_per_node_on_three_threads(
    staging: RunResult, tmp_path: Path
) -> None:
    path = staging.timeline_html(tmp_path / "out" / "timeline.html")
    html = path.read_text(encoding="utf-8")
    # self-contained: plotly.js inside, nothing fetched
    assert "<script src" not in html and "<link" not in html
    assert len(html) > 1_000_000 and "plotly.js" in html
    data, layout = figure_in_html(html)
    bars = bars_of(data)
    assert sorted(b["text"] for b in bars) == ["part_1", "part_2", "part_3"]
    assert {b["thread"] for b in bars} == {n.thread for n in staging.nodes}
    assert len({b["thread"] for b in bars}) == 3
    assert layout["yaxis"]["categoryarray"] == sorted({n.thread for n in staging.nodes})
    for bar in bars:
        node = next(n for n in staging.nodes if n.name == bar["text"])
        start = datetime.fromisoformat(node.started_at or "").astimezone(timezone.utc)
        end = datetime.fromisoformat(node.completed_at or "").astimezone(timezone.utc)
        assert bar["start"] == start.replace(tzinfo=None).isoformat(sep=" ")
        assert bar["ms"] == pytest.approx((end - start).total_seconds() * 1000)
        assert bar["status"] == "success" and not bar["hatched"] and not bar["faded"]
    assert "up to 3 at once" in layout["title"]["text"]  # they overlapped
    assert max_concurrency(staging.nodes) == 3


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


def test_retries_are_marked(retried: RunResult) -> None:
    fig = timeline_figure(retried)
    bars = bars_of([trace.to_plotly_json() for trace in fig.data])
    by_text = {b["text"]: b for b in bars}
    assert set(by_text) == {"part_1", "part_1 ↻2", "part_2"}
    assert by_text["part_1"]["faded"] and by_text["part_1"]["status"] == "error"
    assert by_text["part_1 ↻2"]["hatched"] and by_text["part_1 ↻2"]["attempt"] == 2
    assert not by_text["part_2"]["faded"] and not by_text["part_2"]["hatched"]
    notes = [a.text for a in fig.layout.annotations]
    assert notes == ["run", "run retry (attempt 2)"]
    assert "2 attempts" in fig.layout.title.text
    assert "up to 2 at once" in fig.layout.title.text  # attempt 1 ran part_1 and part_2 together


def test_retries_survive_the_json_round_trip(retried: RunResult, tmp_path: Path) -> None:
    saved = retried.to_dict()
    assert [n["attempt"] for n in saved["superseded_nodes"]] == [1]
    again = RunResult.from_dict(json.loads(json.dumps(saved)))
    assert again == retried
    assert again.attempt_log == retried.attempt_log
    data, _ = figure_in_html(again.timeline_html(tmp_path / "t.html").read_text())
    assert len(bars_of(data)) == 3


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
    fig = timeline_figure(result)
    assert sum(len(trace.x) for trace in fig.data) == 1
    assert any("no timing): c (skipped)" in a.text for a in fig.layout.annotations)


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
    assert len(bars_of(figure_in_html(out.read_text())[0])) == 3

    out = tmp_path / "cycle.html"
    res = runner.invoke(main, ["report", "-", "-o", str(out)], input=cycle.read_text())
    assert res.exit_code == 0, res.output
    data, layout = figure_in_html(out.read_text())
    assert len(bars_of(data)) == 6 and "staging: OK" in layout["title"]["text"]


def test_report_command_rejects_what_is_not_a_result(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a result"}')
    res = CliRunner().invoke(main, ["report", str(bad), "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 2 and "not a dbt-runner result" in res.output
    bad.write_text("{")
    res = CliRunner().invoke(main, ["report", str(bad), "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 2
    assert not (tmp_path / "x.html").exists()


def test_without_plotly_the_report_says_what_to_install(
    staging: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install 'dbt-runner\[timeline\]'"):
        staging.to_timeline()
    saved = tmp_path / "r.json"
    saved.write_text(staging.to_json())
    res = CliRunner().invoke(main, ["report", str(saved), "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 2
    assert "dbt-runner[timeline]" in res.output


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
    [trace] = timeline_figure(result).data
    assert trace.base == ("2026-01-01 00:00:01.500000",) and trace.x == (1500.0,)
