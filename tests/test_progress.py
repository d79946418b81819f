"""What a person watching sees: plain lines off a terminal, a live display on one."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dbt_runner import ErrorInfo, ErrorKind, NodeEvent, NodeResult, RunResult
from dbt_runner._progress import LiveDisplay, NodeBoard, PlainDisplay, choose_mode, make_display
from tests._terminal import in_terminal

MINI = Path(__file__).parent / "fixtures" / "mini_project"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # anything but "\n"
TIME = r"\d\d:\d\d:\d\d"
THREAD = r"\[Thread-\d+ \(worker\)\]"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
    env.update(
        DBT_RUNNER_WAREHOUSE__PATH=str(tmp_path / "mini.duckdb"),
        DBT_RUNNER_WAREHOUSE__SCHEMA="stg",
        DBT_RUNNER_STATE_DIR=str(tmp_path / "state"),
        DBT_RUNNER_RETRY__ATTEMPTS="1",
        **extra,
    )
    return env


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real ``dbt-runner`` in a child process: stdout and stderr are pipes, not a TTY."""
    return subprocess.run(
        [sys.executable, "-m", "dbt_runner.cli", *args, "--project-dir", str(MINI)],
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


# ----------------------------------------------------------------------- not a TTY
def test_not_a_tty_prints_one_plain_line_per_node_start_and_finish(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "staging", "--threads", "3")
    assert proc.returncode == 0, proc.stderr
    for stream in (proc.stdout, proc.stderr):
        assert not ANSI.search(stream) and not CONTROL.search(stream), repr(stream)
    lines = proc.stderr.splitlines()
    for name in ("part_1", "part_2", "part_3"):
        start = [
            x for x in lines if re.fullmatch(rf"{TIME} INFO    START model {name} {THREAD}", x)
        ]
        done = [
            x
            for x in lines
            if re.fullmatch(rf"{TIME} INFO    DONE  model {name} success in \d+\.\d\ds {THREAD}", x)
        ]
        assert len(start) == 1 and len(done) == 1, proc.stderr
    node_lines = [x for x in lines if " START " in x or " DONE " in x]
    assert len(node_lines) == 6
    # three different threads: threads=3 really ran three workers
    assert len({re.search(r"\[(.+)\]$", x).group(1) for x in node_lines}) == 3  # type: ignore[union-attr]
    assert re.fullmatch(r"dbt run: OK \(3 nodes, [\d.]+s, 1 attempt\(s\)\)\n", proc.stdout)


def test_quiet_prints_only_warnings_and_errors(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "staging", "--quiet", "--select", "tag:broken")
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines, "the failed node must still be reported"
    assert not [x for x in lines if " INFO " in x], proc.stderr
    assert any(
        re.match(rf"{TIME} WARNING DONE  model broken error in \d+\.\d\ds {THREAD}: ", x)
        for x in lines
    ), proc.stderr
    assert "broken: error [model_failure]" in proc.stdout


def test_json_prints_only_the_result_on_stdout(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "staging", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # nothing else on stdout
    assert sorted(n["name"] for n in data["nodes"]) == ["part_1", "part_2", "part_3"]
    assert len([x for x in proc.stderr.splitlines() if " DONE  model " in x]) == 3
    assert not ANSI.search(proc.stderr)


#: a line dbt itself prints on its console ("12:00:01  1 of 3 START sql table model ...")
DBT_CONSOLE = re.compile(
    r"\d+ of \d+ (START|OK|ERROR|PASS|FAIL)|Encountered an error|Completed with"
)


def test_stdout_is_the_result_and_each_node_event_is_told_once(tmp_path: Path) -> None:
    """The documented contract: stdout = the summary, stderr = our log lines; dbt's own
    console output is captured (not printed), so a failed node is reported once."""
    proc = _cli(tmp_path, "staging", "--select", "tag:broken")
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("dbt run: FAILED (1 nodes, ")
    assert "broken: error [model_failure]" in proc.stdout
    for stream in (proc.stdout, proc.stderr):
        assert not DBT_CONSOLE.search(stream), stream
    assert " DONE " not in proc.stdout and " START " not in proc.stdout
    assert len([x for x in proc.stderr.splitlines() if "START model broken" in x]) == 1
    assert len([x for x in proc.stderr.splitlines() if "DONE  model broken" in x]) == 1
    assert proc.stderr.count("Catalog Error") == 1  # dbt's own copy is not printed


def test_verbose_shows_dbts_console_lines_on_stderr_only(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "staging", "--select", "tag:broken", "--verbose")
    assert proc.returncode == 1, proc.stderr
    assert not DBT_CONSOLE.search(proc.stdout), proc.stdout
    assert re.search(r"DEBUG +.*1 of 1 ERROR creating .*model .*broken", proc.stderr), proc.stderr


def test_passing_tests_log_no_row_count(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "cycle")
    assert proc.returncode == 0, proc.stderr
    done = [x for x in proc.stderr.splitlines() if " DONE  test " in x]
    assert len(done) == 3 and all(" pass in " in x for x in done), proc.stderr
    assert not [x for x in done if "rows=" in x], done
    assert proc.stdout.splitlines()[1].startswith("dbt test: OK (3 nodes, ")


# ----------------------------------------------------------------------- a TTY
def _assert_live_run(code: int, raw: str) -> str:
    text = ANSI.sub("", raw)
    assert code == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert ANSI.search(raw), "a terminal gets a redrawn display"
    # the live display: a bar for the invocation and a row per node
    assert re.search(r"staging .*3/3 nodes", text), text[-3000:]
    assert "setting up (parse, connect)" in text
    # the final summary table
    assert "staging: dbt run OK — 3 nodes, threads=3, up to 3 at once" in text
    for name in ("part_1", "part_2", "part_3"):
        assert re.search(rf"\n{name} +model +success +Thread-\d+ \(worker\)", text), text
    # node lines are in the table, not printed as plain log lines
    assert not re.search(r"INFO +START model", text)
    return text


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_terminal_gets_the_live_display_and_a_summary_table(tmp_path: Path) -> None:
    code, raw = in_terminal(
        [sys.executable, "-m", "dbt_runner.cli", "staging", "--project-dir", str(MINI)],
        _env(tmp_path, TERM="xterm-256color", COLUMNS="120"),
    )
    _assert_live_run(code, raw)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
@pytest.mark.timeout(900)
def test_base_install_at_a_terminal_runs_without_a_traceback(tmp_path: Path) -> None:
    """What docs/getting-started.md installs (no extras) gives the live display at a terminal."""
    from tests._venvs import REQUIREMENTS, cached_venv

    bin_dir = cached_venv("base", REQUIREMENTS["base"])  # `pip install .`: no extras
    listed = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.lower()
    assert "plotly" not in listed and "apache-airflow" not in listed  # really the base install
    env = _env(tmp_path, TERM="xterm-256color", COLUMNS="120", PWD=str(tmp_path))
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    code, raw = in_terminal(
        [str(bin_dir / "dbt-runner"), "staging", "--project-dir", str(MINI)], env
    )
    _assert_live_run(code, raw)


# ----------------------------------------------------------------------- units
class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(
    ("quiet", "as_json", "log_format", "out_tty", "err_tty", "expected"),
    [
        (False, False, "text", True, True, "live"),
        (False, False, "text", False, True, "plain"),  # piped: `dbt-runner staging | tee`
        (False, False, "text", True, False, "plain"),  # stderr to a log file
        (False, True, "text", True, True, "plain"),  # --json: for machines
        (False, False, "json", True, True, "plain"),  # --log-format json
        (True, False, "text", True, True, "off"),
    ],
)
def test_mode_follows_the_terminal_and_the_flags(
    monkeypatch: pytest.MonkeyPatch,
    quiet: bool,
    as_json: bool,
    log_format: str,
    out_tty: bool,
    err_tty: bool,
    expected: str,
) -> None:
    monkeypatch.setenv("TERM", "xterm")
    mode = choose_mode(
        quiet=quiet,
        as_json=as_json,
        log_format=log_format,
        stdout=_Stream(out_tty),
        stderr=_Stream(err_tty),
    )
    assert mode == expected


def test_dumb_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    mode = choose_mode(
        quiet=False, as_json=False, log_format="text", stdout=_Stream(True), stderr=_Stream(True)
    )
    assert mode == "plain"
    assert type(make_display("plain")) is PlainDisplay


def _event(kind: str, i: int, thread: str, status: str | None = None) -> NodeEvent:
    return NodeEvent(
        event=kind,
        unique_id=f"model.p.m{i}",
        name=f"m{i}",
        resource_type="model",
        thread=thread,
        timestamp="2026-01-01T00:00:00+00:00",
        status=status,
        elapsed_s=0.5 if status else None,
    )


def test_board_is_safe_to_call_from_many_worker_threads() -> None:
    board = NodeBoard()
    board.begin("staging")
    barrier = threading.Barrier(8)

    def worker(w: int) -> None:
        barrier.wait()
        for i in range(w, 400, 8):
            board(_event("node_start", i, f"Thread-{w}"))
            board(_event("node_finish", i, f"Thread-{w}", "error" if i % 50 == 0 else "success"))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    [inv] = board.invocations()
    assert (inv.nodes_started, inv.nodes_finished, inv.nodes_failed) == (400, 400, 8)
    assert len(board.rows()) == 400
    assert all(r.status is not None for r in board.rows())


def test_board_counts_a_retried_node_once_with_its_attempt() -> None:
    board = NodeBoard()
    board.begin("staging")
    board(_event("node_start", 1, "Thread-1"))
    board(_event("node_finish", 1, "Thread-1", "error"))
    board(_event("node_start", 1, "Thread-2"))  # the retry
    board(_event("node_finish", 1, "Thread-2", "success"))
    [row] = board.rows()
    assert (row.attempt, row.status, row.thread) == (2, "success", "Thread-2")
    [inv] = board.invocations()
    assert (inv.nodes_started, inv.nodes_finished, inv.nodes_failed) == (1, 1, 0)


def test_live_display_shows_running_and_finished_nodes() -> None:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=120, color_system=None)
    display = LiveDisplay(console=console, out_console=console, max_rows=3)
    [callback] = display.callbacks
    display.board.begin("staging")
    for i in range(5):
        callback(_event("node_start", i, f"Thread-{i % 3 + 1} (worker)"))
    for i in range(3):
        callback(_event("node_finish", i, f"Thread-{i % 3 + 1} (worker)", "success"))
    console.print(display.renderable())
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert re.search(r"staging .*3/5 nodes", text)
    assert re.search(r"running +m3 +model +Thread-1 \(worker\)", text)
    assert re.search(r"running +m4 +model +Thread-2 \(worker\)", text)
    # room for 3 rows: the 2 running ones and the latest finished one
    assert re.search(r"success +m2 +model +Thread-3 \(worker\) +0\.5s", text)
    assert "m0 " not in text and "… 2 more finished" in text


def test_live_display_starts_and_stops_around_a_run() -> None:
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    display = LiveDisplay(console=console, out_console=console)
    with display, display.invocation("staging"):
        display.callbacks[0](_event("node_start", 1, "Thread-1 (worker)"))
        display.callbacks[0](_event("node_finish", 1, "Thread-1 (worker)", "success"))
    [inv] = display.board.invocations()
    assert inv.done
    assert "\x1b[" in console.file.getvalue()  # type: ignore[attr-defined]


def test_summary_table_lists_every_node_with_thread_and_error() -> None:
    from rich.console import Console

    out = Console(file=io.StringIO(), width=160, color_system=None)
    display = LiveDisplay(console=out, out_console=out)

    def node(name: str, thread: str, start: str, end: str, status: str) -> NodeResult:
        return NodeResult(
            f"model.p.{name}",
            name,
            "model",
            status,
            f"2026-01-01T00:00:{start}+00:00",
            f"2026-01-01T00:00:{end}+00:00",
            1.0,
            thread,
            None,
            "boom" if status == "error" else "OK",
        )

    result = RunResult(
        command="run",
        success=False,
        started_at="2026-01-01T00:00:00+00:00",
        elapsed_s=4.0,
        threads=2,
        attempts=1,
        nodes=(
            node("a", "Thread-1", "01", "03", "success"),
            node("b", "Thread-2", "02", "04", "error"),
        ),
    )
    display.report({"staging": result})
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert "staging: dbt run FAILED — 2 nodes, threads=2, up to 2 at once, 4.0s" in text
    assert re.search(r"\na +model +success +Thread-1 +\+1\.0s +1\.00s\n", text), text
    assert re.search(r"\nb +model +error +Thread-2 +\+2\.0s +1\.00s\n", text), text
    assert re.search(r"\nb \[error\] *\n    boom *\n", text), text  # under its name


def _long_result(name_length: int) -> RunResult:
    """Two failed models whose names differ only at the end, a long error each."""
    message = (
        "Runtime Error in model {name} (models/staging/{name}.sql)\n  Catalog Error: Table "
        'with name "raw.uni_tracking_info" does not exist because schema "raw" does not exist.'
    )
    nodes = []
    for i, suffix in enumerate(("info", "spath")):
        name = ("stg_uni_tracking_" + "x" * name_length)[: name_length - len(suffix)] + suffix
        text = message.format(name=name)
        nodes.append(
            NodeResult(
                f"model.p.{name}",
                name,
                "model",
                "error",
                f"2026-01-01T00:00:0{i + 1}+00:00",
                f"2026-01-01T00:00:0{i + 2}+00:00",
                1.0,
                f"Thread-{i + 1} (worker)",
                None,
                text,
                error=ErrorInfo(ErrorKind.MODEL_FAILURE, text),
            )
        )
    return RunResult("run", False, "2026-01-01T00:00:00+00:00", 3.0, 2, 1, tuple(nodes))


@pytest.mark.parametrize(("width", "name_length"), [(80, 22), (80, 60), (50, 30), (120, 70)])
def test_summary_never_cuts_a_name_or_a_word(width: int, name_length: int) -> None:
    """Narrow or wide, long names or short: each name whole, each word of an error whole,
    no line wider than the terminal (the table when it fits, else one node per block)."""
    from rich.console import Console

    out = Console(file=io.StringIO(), width=width, color_system=None)
    result = _long_result(name_length)
    LiveDisplay(console=out, out_console=out).report({"staging": result})
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert all(len(line.rstrip()) <= width for line in lines)
    assert not [line for line in lines if "…" in line], lines
    text = "\n".join(lines)
    for node in result.nodes:
        assert re.search(rf"^{node.name}( |$)", text, re.M), text  # a row, or a block's head
        assert re.search(rf"^{node.name} \[model_failure\]", text, re.M), text  # above its error
        for word in (node.message or "").split():
            if len(word) <= width - 4:  # a longer one cannot be shown whole
                assert re.search(rf"(?<!\S){re.escape(word)}(?!\S)", text), word


def test_without_rich_a_terminal_gets_plain_lines_and_a_one_line_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """rich is a dependency; a trimmed install that lacks it still runs, and says why."""
    monkeypatch.setitem(sys.modules, "rich.console", None)  # import fails
    display = make_display("live")
    assert type(display) is PlainDisplay
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install rich" in err
