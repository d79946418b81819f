"""The ``dbt-runner`` CLI against real dbt on DuckDB (the mini fixture project)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from dbt_runner import ErrorInfo, ErrorKind, RunResult
from dbt_runner.cli import exit_code, main

MINI = Path(__file__).parent / "fixtures" / "mini_project"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DBT_RUNNER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "DBT_RUNNER_WAREHOUSE__PATH": str(tmp_path / "cli.duckdb"),
        "DBT_RUNNER_STATE_DIR": str(tmp_path / "state"),
    }


def run_cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


# ---------------------------------------------------------------------- real runs
def test_cycle_json_runs_staging_then_tests(env: dict[str, str]) -> None:
    result = run_cli(env, "cycle", "--json", "--project-dir", str(MINI))

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # stdout is the JSON and nothing else
    assert set(payload) == {"staging", "tests"}
    staging, tests = payload["staging"], payload["tests"]
    assert staging["success"] is True
    assert staging["command"] == "run"
    assert sorted(n["name"] for n in staging["nodes"]) == ["part_1", "part_2", "part_3"]
    assert {n["status"] for n in staging["nodes"]} == {"success"}
    assert tests["success"] is True
    assert tests["command"] == "test"
    assert len(tests["nodes"]) == 3
    assert {n["resource_type"] for n in tests["nodes"]} == {"test"}
    assert {n["status"] for n in tests["nodes"]} == {"pass"}


def test_cycle_build_is_one_dbt_build_of_models_and_tests(env: dict[str, str]) -> None:
    result = run_cli(env, "cycle", "--build", "--json", "--project-dir", str(MINI))

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"build"}
    build = payload["build"]
    assert build["success"] is True and build["command"] == "build"
    assert {n["resource_type"] for n in build["nodes"]} == {"model", "test"}
    assert len(build["nodes"]) == 6


def test_failing_model_exits_1_and_names_it(env: dict[str, str]) -> None:
    result = run_cli(env, "staging", "--select", "tag:broken", "--project-dir", str(MINI))

    assert result.exit_code == 1, result.output
    summary = result.stdout
    assert "FAILED" in summary
    assert "broken: error [model_failure]" in summary


def test_failed_cycle_json_is_still_pure_json_of_the_same_shape(env: dict[str, str]) -> None:
    """dbt's own console lines must not break ``--json``; tests are skipped, the shape stays."""
    result = run_cli(env, "cycle", "--json", "--select", "tag:broken", "--project-dir", str(MINI))

    assert result.exit_code == 1, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"staging"}  # tests did not run after staging failed
    staging = payload["staging"]
    assert staging["success"] is False
    assert staging["error"]["kind"] == "model_failure"
    assert [(n["name"], n["status"]) for n in staging["nodes"]] == [("broken", "error")]


# ---------------------------------------------------------------------- configuration
def test_invalid_settings_exit_2_naming_the_env_var(env: dict[str, str]) -> None:
    result = run_cli({**env, "DBT_RUNNER_THREADS": "0"}, "staging", "--project-dir", str(MINI))

    assert result.exit_code == 2
    assert "DBT_RUNNER_THREADS" in result.stderr
    assert result.stdout == ""


def test_installed_entry_point_reports_bad_configuration(env: dict[str, str]) -> None:
    script = Path(sys.executable).with_name("dbt-runner")
    if not script.exists():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    proc = subprocess.run(
        [str(script), "cycle", "--project-dir", str(MINI)],
        env={**os.environ, **env, "DBT_RUNNER_WAREHOUSE__TYPE": "redshift"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "DBT_RUNNER_WAREHOUSE__HOST" in proc.stderr


def test_project_dir_without_dbt_project_is_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli(env, "staging", "--project-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "dbt_project.yml" in result.stderr


@pytest.mark.parametrize("command", ["staging", "cycle", "dbt", "deps", "doctor"])
@pytest.mark.parametrize(
    ("flag", "variable", "bad", "says"),
    [
        ("--project-dir", "DBT_RUNNER_PROJECT_DIR", "nope", "nope has no dbt_project.yml"),
        ("--profiles-dir", "DBT_RUNNER_PROFILES_DIR", "nope", "nope has no profiles.yml"),
        ("--threads", "DBT_RUNNER_THREADS", "65", "less than or equal to 64"),
    ],
)
def test_an_error_names_the_flag_or_the_variable_the_user_gave(
    env: dict[str, str],
    tmp_path: Path,
    command: str,
    flag: str,
    variable: str,
    bad: str,
    says: str,
) -> None:
    """A typo in --project-dir is reported as --project-dir, one in the variable as the
    variable; with both, the flag wins (it is the value used) and is the one named."""
    value = bad if bad.isdigit() else str(tmp_path / bad)
    extra = ["ls"] if command == "dbt" else []
    by_flag = run_cli(env, command, flag, value, *extra)
    by_variable = run_cli({**env, variable: value}, command, *extra)
    good = "3" if bad.isdigit() else str(MINI)
    both = run_cli({**env, variable: good}, command, flag, value, *extra)
    for result, named, not_named in (
        (by_flag, flag, variable),
        (by_variable, variable, flag),
        (both, flag, variable),
    ):
        assert result.exit_code == 2, result.output
        assert f"{named}" in result.stderr and says in result.stderr, result.stderr
        assert not_named not in result.stderr, result.stderr


# ---------------------------------------------------------------------- help
@pytest.mark.parametrize(
    ("command", "options"),
    [
        (
            "staging",
            ["--project-dir", "--target", "--threads", "--json", "--quiet", "--select"],
        ),
        ("staging", ["--full-refresh"]),
        ("test", ["--project-dir", "--target", "--threads", "--json", "--quiet", "--select"]),
        ("cycle", ["--project-dir", "--threads", "--json", "--select", "--tests / --no-tests"]),
        ("demo", ["--path", "--threads", "--verbose"]),
    ],
)
def test_help_lists_the_options(command: str, options: list[str]) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.stdout, f"{command} --help lacks {option}"


def test_top_level_help_lists_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("staging", "test", "cycle", "demo", "deps", "dbt"):
        assert command in result.stdout


def _accepted(command: click.Command) -> set[str]:
    """Every option string ``command`` accepts (``--tests`` and ``--no-tests`` both)."""
    flags = {"--help", "-h"}
    for param in command.params:
        if isinstance(param, click.Option):
            flags.update(param.opts, param.secondary_opts)
    return flags


def _untrue(text: str, own: click.Command) -> list[str]:
    """What ``text`` names that does not exist: commands, options, DBT_RUNNER_* variables.

    A sentence may name another command's options ("what dbt-runner cycle --json printed"):
    an option is true when the help's own command or a command named in the same sentence
    accepts it. What follows a bare ``--`` (dbt's own arguments) is dbt's to judge.
    """
    from dbt_runner._settings import known_variables

    assert isinstance(main, click.Group)
    wrong = []
    known = known_variables()
    for name in re.findall(r"\$?(DBT_RUNNER_[A-Z0-9_]+)", text):
        family = name.endswith("__") and any(k.startswith(name) for k in known)  # SECTION__*
        if name not in known and not family:
            wrong.append(f"no variable {name}")
    own_options = _accepted(own) - {"--help", "-h", "--version"}
    if re.search(r"options below", text) and not own_options:
        wrong.append(f"'options below' but {own.name} has none of its own")
    for sentence in re.split(r"(?<=[.;])\s+|\n\s*\n", text):
        named = re.findall(r"dbt-runner ([a-z][a-z-]*)", sentence)
        commands: list[click.Command] = [own]
        for name in named:
            if name in ("COMMAND", "command"):
                continue
            if name not in main.commands:
                wrong.append(f"no command {name!r}: {sentence!r}")
            else:
                commands.append(main.commands[name])
        flags = set().union(*(_accepted(c) for c in commands))
        for flag in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*|--(?=\s))", sentence.split(" -- ")[0]):
            if flag not in flags:
                wrong.append(f"{flag} is no option of {[c.name for c in commands]}: {sentence!r}")
    return wrong


def test_every_help_names_only_commands_options_and_variables_that_exist() -> None:
    """--help tells the truth: what it promises, click accepts (top level and each command)."""
    assert isinstance(main, click.Group)
    top = CliRunner().invoke(main, ["--help"], terminal_width=200)
    assert top.exit_code == 0
    assert _untrue(top.stdout, main) == []
    listed = re.findall(r"^  ([a-z][a-z-]*)  ", top.stdout.split("Commands:")[1], re.M)
    assert listed == sorted(main.commands)
    for name, command in main.commands.items():
        result = CliRunner().invoke(main, [name, "--help"], terminal_width=200)
        assert result.exit_code == 0, result.output
        assert _untrue(result.stdout, command) == [], name


def test_the_help_check_catches_a_promise_that_is_not_kept() -> None:
    """The check above can fail: options, commands and variables that do not exist."""
    assert isinstance(main, click.Group)
    staging = main.commands["staging"]
    assert _untrue("the options below (--colour) override them.", staging) == [
        "--colour is no option of ['staging']: 'the options below (--colour) override them.'"
    ]
    assert _untrue("see dbt-runner lint.", staging) == ["no command 'lint': 'see dbt-runner lint.'"]
    assert _untrue("$DBT_RUNNER_COLOUR", staging) == ["no variable DBT_RUNNER_COLOUR"]
    # what the top-level help said before: "the options below override them", with none below
    assert _untrue("the options below override them.", main) == [
        "'options below' but main has none of its own"
    ]
    # another command's option, named with that command; dbt's own arguments after --
    assert _untrue("what dbt-runner cycle --build did; dbt-runner dbt -- ls --x", staging) == []


def test_dbt_pass_through_runs_any_command_with_the_callers_args(env: dict[str, str]) -> None:
    result = run_cli(
        env, "dbt", "--json", "--project-dir", str(MINI), "--", "run", "--select", "part_1"
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["command"] == "run"
    assert [n["name"] for n in payload["nodes"]] == ["part_1"]
    args = payload["attempt_log"][0]["args"]
    assert args[:3] == ["run", "--select", "part_1"]


def test_deps_runs_without_a_parse(env: dict[str, str]) -> None:
    result = run_cli(env, "deps", "--json", "--project-dir", str(MINI))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["command"] == "deps"


def test_a_selection_matching_nothing_exits_2_naming_where_it_came_from(
    env: dict[str, str],
) -> None:
    result = run_cli(env, "staging", "--select", "tag:nothing_here", "--project-dir", str(MINI))
    assert result.exit_code == 2, result.output
    assert "the selection 'tag:nothing_here' matched no node" in result.output
    assert "DBT_RUNNER_STAGING_SELECT" not in result.output  # the user gave --select
    env = {**env, "DBT_RUNNER_STAGING_SELECT": "tag:nothing_here"}
    result = run_cli(env, "staging", "--project-dir", str(MINI))
    assert result.exit_code == 2, result.output
    assert "'tag:nothing_here' of DBT_RUNNER_STAGING_SELECT matched no node" in result.output


# ---------------------------------------------------------------------- exit codes
def _result(kind: ErrorKind | None) -> RunResult:
    return RunResult(
        command="run",
        success=kind is None,
        started_at="2026-01-01T00:00:00+00:00",
        elapsed_s=1.0,
        threads=3,
        attempts=1,
        nodes=(),
        error=None if kind is None else ErrorInfo(kind, "x"),
    )


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (None, 0),
        (ErrorKind.MODEL_FAILURE, 1),
        (ErrorKind.TEST_FAILURE, 1),
        (ErrorKind.COMPILATION, 1),
        (ErrorKind.AUTH, 2),
        (ErrorKind.CONFIGURATION, 2),
        (ErrorKind.TUNNEL, 3),
        (ErrorKind.CONNECTION, 3),
        (ErrorKind.TOO_MANY_CONNECTIONS, 3),
        (ErrorKind.CONFLICT, 3),
        (ErrorKind.TIMEOUT, 3),
    ],
)
def test_exit_code_per_kind(kind: ErrorKind | None, code: int) -> None:
    assert exit_code(_result(kind)) == code


def test_exit_code_worst_result_wins() -> None:
    ok, failed = _result(None), _result(ErrorKind.MODEL_FAILURE)
    assert exit_code() == 0
    assert exit_code(ok, ok) == 0
    assert exit_code(ok, failed) == 1
    assert exit_code(failed, _result(ErrorKind.CONNECTION), ok) == 3


# ---------------------------------------------------------------------- no settings at all
def test_no_settings_says_what_it_uses_and_points_to_the_demo(tmp_path: Path) -> None:
    """A newcomer's first command: no DBT_RUNNER_* at all, the bundled project, no raw data."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "dbt_runner.cli", "cycle", "-q"],  # -q shows the notice too
        cwd=tmp_path,
        env={**env, "DBT_RUNNER_STATE_DIR": str(tmp_path / "state")},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.endswith(
        "no DBT_RUNNER_WAREHOUSE__TYPE: using the embedded DuckDB file ./dbt_runner.duckdb"
    ), proc.stderr
    assert not list(tmp_path.glob("*.duckdb*"))  # no file left behind by a failed first run
    hint = proc.stderr.splitlines()[-1]
    assert hint.startswith("hint: the raw tables are missing from ./dbt_runner.duckdb")
    assert "`dbt-runner demo`" in hint
    assert "hint" not in proc.stdout  # stdout is the result only


@pytest.fixture(scope="module")
def bundled_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state dir for the bundled project's runs here: dbt's partial parse carries over."""
    return tmp_path_factory.mktemp("bundled-state")


def _bare_env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
    return {**env, "DBT_RUNNER_STATE_DIR": str(state)}


def test_a_failing_pass_through_in_an_empty_dir_leaves_nothing(
    tmp_path: Path, bundled_state: Path
) -> None:
    """`cycle` is not the only command: any failed run on the embedded default cleans up."""
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [sys.executable, "-m", "dbt_runner.cli", "dbt", "-q", "--project-dir", str(MINI)]
    proc = subprocess.run(
        [*argv, "--", "run", "--select", "tag:broken"],
        cwd=empty,
        env=_bare_env(bundled_state),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr
    assert list(empty.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_an_interrupted_run_in_an_empty_dir_leaves_nothing(
    tmp_path: Path, bundled_state: Path
) -> None:
    """Ctrl-C as soon as the default DuckDB file exists: exit 130, and the file is gone."""
    import signal
    import time

    empty = tmp_path / "empty"
    empty.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-m", "dbt_runner.cli", "staging"],
        cwd=empty,
        env=_bare_env(bundled_state),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (empty / "dbt_runner.duckdb").exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the default file never appeared"
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert list(empty.iterdir()) == [], err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_wait_for_the_writer_lock_is_shown_and_an_interrupt_there_says_so(
    tmp_path: Path, bundled_state: Path
) -> None:
    """Another process holds the DuckDB file (the writer lock): the wait is logged, and
    Ctrl-C during it names the wait, not "opening the session"."""
    import signal
    import threading

    import duckdb

    path = tmp_path / "wh.duckdb"
    holder = duckdb.connect(str(path))  # this process holds the file's lock
    env = {**_bare_env(bundled_state), "DBT_RUNNER_WAREHOUSE__PATH": str(path)}
    child = subprocess.Popen(
        [sys.executable, "-m", "dbt_runner.cli", "staging"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    lines: list[str] = []
    waiting = threading.Event()

    def read() -> None:
        assert child.stderr is not None
        for line in child.stderr:
            lines.append(line)
            if "waiting for the writer lock" in line:
                waiting.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert waiting.wait(120), "".join(lines)
        child.send_signal(signal.SIGINT)
        child.wait(timeout=120)
        reader.join(30)
    finally:
        if child.poll() is None:
            child.kill()
        holder.close()
    err = "".join(lines)
    assert child.returncode == 130, err
    assert "LOCK_TIMEOUT_S" in err
    assert "interrupted by SIGINT during the wait for the writer lock (staging)" in err, err
    # what it cleaned up, and nothing it never had: no server, no tunnel
    assert "(stopped); running statements cancelled, generated profile removed (exit 130)" in err


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        (
            {"DBT_RUNNER_WAREHOUS__TYPE": "postgres", "DBT_RUNNER_WAREHOUSE__HOST": "db.example"},
            "DBT_RUNNER_WAREHOUS__TYPE is not a dbt_runner setting: "
            "did you mean DBT_RUNNER_WAREHOUSE__TYPE?",
        ),
        (
            {"DBT_RUNNER_SSH_HOST": "bastion.example"},
            "DBT_RUNNER_SSH_HOST is not a dbt_runner setting: did you mean DBT_RUNNER_SSH__HOST?",
        ),
        (
            {"DBT_RUNNER_WAREHOUSE__HOST": "db.example"},
            "DBT_RUNNER_WAREHOUSE__HOST set without DBT_RUNNER_WAREHOUSE__TYPE",
        ),
    ],
    ids=["misspelled-section", "one-underscore", "host-without-type"],
)
def test_a_setting_that_is_not_one_exits_2_before_anything_runs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
    named: str,
) -> None:
    """Never the embedded DuckDB by accident: nothing is created, the variable is named."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["staging"], env=variables)
    assert result.exit_code == 2, result.output
    assert named in result.stderr
    assert "using the embedded DuckDB" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no ./dbt_runner.duckdb, no state


@pytest.mark.parametrize(
    ("target", "named"),
    [("prodd", "does not have a target named 'prodd'"), ("envy", "NOPE_UNSET_VARIABLE")],
)
def test_an_own_profile_s_configuration_error_exits_2_as_in_plain_dbt(
    env: dict[str, str], tmp_path: Path, target: str, named: str
) -> None:
    """The target given to dbt itself (not our setting), a missing env_var(): exit 2."""
    own = tmp_path / "own_profiles"
    own.mkdir()
    (own / "profiles.yml").write_text(
        "mini:\n  target: dev\n  outputs:\n"
        f"    dev:\n      type: duckdb\n      path: '{tmp_path / 'own.duckdb'}'\n"
        "    envy:\n      type: duckdb\n      path: \"{{ env_var('NOPE_UNSET_VARIABLE') }}\"\n"
    )
    result = run_cli(
        env,
        "dbt",
        "--profiles-dir",
        str(own),
        "--project-dir",
        str(MINI),
        "--",
        "run",
        "--target",
        target,
    )
    assert result.exit_code == 2, result.output
    assert "[configuration]" in result.output and named in result.output


def test_a_chosen_warehouse_gets_no_default_notice(env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dbt_runner.cli", "staging", "--project-dir", str(MINI)],
        cwd=tmp_path,
        env={**os.environ, **env, "DBT_RUNNER_WAREHOUSE__TYPE": "duckdb"},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no DBT_RUNNER_WAREHOUSE__TYPE" not in proc.stderr
    assert "hint:" not in proc.stderr


@pytest.mark.parametrize(
    ("raised", "expected", "printed"),
    [
        (None, 0, ""),
        (SystemExit(0), 0, ""),
        (SystemExit(3), 3, ""),
        (SystemExit("boom"), 1, "boom"),
    ],
    ids=["return", "exit-0", "exit-3", "exit-message"],
)
def test_console_script_exits_with_the_command_s_code(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raised: BaseException | None,
    expected: int,
    printed: str,
) -> None:
    """The console script ends with os._exit (no teardown GC) but keeps the exit code."""
    from dbt_runner import cli

    class Exited(Exception):
        pass

    def fake_main() -> None:
        print("result on stdout")
        if raised is not None:
            raise raised

    def fake_exit(code: int) -> None:
        raise Exited(code)

    monkeypatch.setattr(cli, "main", fake_main)
    # the console script owns its process (its heap frozen once dbt is imported); this
    # test's process is pytest's: record the call instead
    owned: list[bool] = []
    monkeypatch.setattr(cli._dbt, "own_process", lambda: owned.append(True))
    exit_handlers: list[bool] = []
    monkeypatch.setattr("dbt_runner._exit.os._exit", fake_exit)
    # the real handlers are pytest's own here: record the call instead of running them
    monkeypatch.setattr(
        "dbt_runner._exit.atexit._run_exitfuncs", lambda: exit_handlers.append(True)
    )
    with pytest.raises(Exited) as info:
        cli.entry()
    assert info.value.args == (expected,)
    assert owned == [True]
    assert exit_handlers == [True]  # multiprocessing's and logging's handlers still run
    out, err = capsys.readouterr()
    assert out == "result on stdout\n"
    assert printed in err


# ---------------------------------------------------------------------- selection options
def test_exclude_leaves_models_and_their_tests_out_of_both_steps(env: dict[str, str]) -> None:
    result = run_cli(env, "cycle", "--json", "--exclude", "part_2", "--project-dir", str(MINI))
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert sorted(n["name"] for n in payload["staging"]["nodes"]) == ["part_1", "part_3"]
    tested = [n["unique_id"] for n in payload["tests"]["nodes"]]
    assert tested and not any("part_2" in uid for uid in tested)  # its test went with it
    assert "--exclude" in payload["staging"]["attempt_log"][0]["args"]


def test_profiles_dir_option_uses_the_callers_own_profile(
    env: dict[str, str], tmp_path: Path
) -> None:
    """--profiles-dir: dbt reads that profiles.yml (its DuckDB file), not a generated one."""
    import duckdb

    own = tmp_path / "own_profiles"
    own.mkdir()
    db = tmp_path / "own.duckdb"
    (own / "profiles.yml").write_text(
        f"mini:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        f"      path: '{db}'\n      threads: 2\n"
    )
    result = run_cli(
        env,
        "staging",
        "--json",
        "--select",
        "part_1",
        "--profiles-dir",
        str(own),
        "--project-dir",
        str(MINI),
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["threads"] == 2  # the profile's own threads
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*) from main.part_1").fetchone() == (1,)
    assert not Path(env["DBT_RUNNER_WAREHOUSE__PATH"]).exists()


def test_dbt_pass_through_prints_the_command_s_own_value_on_stdout(env: dict[str, str]) -> None:
    """`dbt-runner dbt -- ls` prints the node list like plain dbt; the summary is on stderr."""
    result = run_cli(
        env,
        "dbt",
        "--project-dir",
        str(MINI),
        "--",
        "ls",
        "--resource-type",
        "model",
        "--output",
        "name",
    )
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.split()) == ["broken", "part_1", "part_2", "part_3"]
    assert "ls" in result.stderr  # the one-line summary went to stderr
