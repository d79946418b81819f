"""The ``dbt-runner`` command line.

Exit codes: 0 success · 1 models or tests failed (or the project does not
compile) · 2 bad configuration or credentials (settings, SSL mismatch, wrong
password, bastion host key or SSH key refused) · 3 infrastructure (tunnel,
connection, timeout) still failing after retries, or another run holds the
writer lock · 130 interrupted by SIGINT · 143 terminated by SIGTERM (after
cancelling on the server, closing the tunnel and removing the generated
profile; a second signal exits at once). The map is
:attr:`ErrorKind.exit_code`, the one source for the CLI, doctor, the examples
and the Airflow DAG.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, redirect_stdout, suppress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import click

from . import _dbt
from ._classify import classify_exception
from ._events import dbt_console_to_log
from ._exceptions import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INFRA,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    ConfigurationError,
    DbtRunnerError,
)
from ._exit import exit_now
from ._progress import PlainDisplay, choose_mode, make_display
from ._results import RunResult
from ._session import DbtSession
from ._settings import Settings
from ._signals import exit_code_of, handled_signals, signal_name
from ._steps import Step, cycle_steps, run_steps
from .logging import JsonFormatter

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INFRA",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "entry",
    "exit_code",
    "main",
]

log = logging.getLogger("dbt_runner.cli")


def exit_code(*results: RunResult) -> int:
    """The CLI exit code for a set of results (worst wins): :attr:`RunResult.exit_code`."""
    return max((result.exit_code for result in results), default=EXIT_OK)


@dataclass(frozen=True)
class _SessionOptions:
    """The options every session command shares, as one value (see :func:`_session_options`)."""

    project_dir: Path | None = None
    profiles_dir: Path | None = None
    target: str | None = None
    threads: int | None = None
    as_json: bool = False
    quiet: bool = False
    verbose: bool = False
    log_format: str = "text"


def _session_options(func: Callable[..., None]) -> Callable[..., None]:
    """Add the shared session options; the command receives them as one ``opts`` argument."""
    names = [f.name for f in fields(_SessionOptions)]

    @functools.wraps(func)
    def command(**kwargs: Any) -> None:
        opts = _SessionOptions(**{name: kwargs.pop(name) for name in names})
        func(opts, **kwargs)

    options = [
        click.option(
            "--project-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="dbt project (default: $DBT_RUNNER_PROJECT_DIR or the bundled models_sql).",
        ),
        click.option(
            "--profiles-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Directory of your own profiles.yml (default: $DBT_RUNNER_PROFILES_DIR, "
            "else a profile generated from DBT_RUNNER_WAREHOUSE__*).",
        ),
        click.option("--target", help="dbt target name (default: $DBT_RUNNER_TARGET or dev)."),
        click.option("--threads", type=click.IntRange(min=1), help="dbt threads (default: 3)."),
        click.option("--json", "as_json", is_flag=True, help="Print the RunResult as JSON."),
        click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr."),
        click.option(
            "--verbose",
            "-v",
            is_flag=True,
            help="Debug logs on stderr, including dbt's own console lines (captured otherwise).",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"]),
            default="text",
            show_default=True,
            envvar="DBT_RUNNER_LOG_FORMAT",
            help="Log lines on stderr: text, or one JSON object per event "
            "($DBT_RUNNER_LOG_FORMAT). A terminal gets a live display with text.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _parse_vars(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    """``--vars`` as dbt reads it: a YAML (or JSON) mapping."""
    if value is None:
        return None
    import yaml

    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"not YAML: {exc}") from exc
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a mapping, e.g. '{raw_schema: landing}'")
    return parsed


_vars_option = click.option(
    "--vars",
    "dbt_vars",
    callback=_parse_vars,
    help="dbt vars as YAML/JSON, e.g. '{test_window_s: 3600}'; merged over "
    "$DBT_RUNNER_VARS and $DBT_RUNNER_RAW_SCHEMA (this option wins, key by key).",
)
_exclude_option = click.option(
    "--exclude",
    help="dbt selection to leave out (dbt's --exclude; space-separated for several).",
)
_scope_option = click.option(
    "--scope",
    type=click.Choice(["recent", "full", "all"]),
    default="recent",
    show_default=True,
    help="Tests to run: recent (hourly: leaves out tag:full), full (whole tables, "
    "daily: leaves out tag:recent) or all. See docs/models.md.",
)


def _given(**values: Any) -> dict[str, Any]:
    """The keyword arguments the user gave (None: the session's default)."""
    return {k: v for k, v in values.items() if v is not None}


#: the settings a command-line option gives: field -> its flag (errors name the flag)
_SETTING_FLAGS = {
    "project_dir": "--project-dir",
    "profiles_dir": "--profiles-dir",
    "target": "--target",
    "threads": "--threads",
}


def _settings(opts: _SessionOptions) -> Settings:
    """Settings from DBT_RUNNER_* with the command line's options on top."""
    overrides: dict[str, Any] = {
        name: getattr(opts, name) for name in _SETTING_FLAGS if getattr(opts, name) is not None
    }
    settings = Settings(_flags=_SETTING_FLAGS, **overrides)
    if _embedded_by_default(settings):  # a warning: shown with -q too
        log.warning(
            "no DBT_RUNNER_WAREHOUSE__TYPE: using the embedded DuckDB file %s",
            _shown_path(settings.warehouse.path),
        )
    return settings


def _embedded_by_default(settings: Settings) -> bool:
    """Nobody chose a warehouse: the embedded DuckDB default is in use."""
    return settings.profiles_dir is None and "type" not in settings.warehouse.model_fields_set


def _shown_path(path: Path) -> str:
    return str(path) if path.is_absolute() else f"./{path}"


#: dbt's message when the bundled project's raw input is not there (DuckDB / PostgreSQL words)
_RAW_MISSING = re.compile(
    r"(schema|table)( with name)? \"?(raw|ecs_order_info|uni_tracking_info|uni_tracking_spath)\b"
    r"[^\n]*does not exist",
    re.IGNORECASE,
)


def _remove_embedded(path: Path) -> None:
    """A failed run leaves no DuckDB file nobody asked for (the default one it created)."""
    for leftover in (path, path.with_name(path.name + ".wal")):
        with suppress(FileNotFoundError):
            leftover.unlink()
    log.info("removed %s: this failed run created it", _shown_path(path))


def _hint_missing_raw(settings: Settings, results: dict[str, RunResult]) -> None:
    """On DuckDB, a run that failed for want of raw tables says how to get sample data."""
    if settings.warehouse.type != "duckdb":
        return
    messages = [r.error.message for r in results.values() if r.error is not None]
    messages += [n.message or "" for r in results.values() for n in r.failed_nodes]
    if not any(_RAW_MISSING.search(m) for m in messages):
        return
    path = _shown_path(settings.warehouse.path)
    _echo_hint(
        f"hint: the raw tables are missing from {path}. `dbt-runner demo` shows a full run on "
        f"sample data; `dbt-runner demo --path {path}` loads that data into this file. For your "
        "own warehouse set DBT_RUNNER_WAREHOUSE__TYPE and friends (docs/configuration.md)."
    )


def _echo_hint(text: str) -> None:
    """A hint on stderr: one line for a log or a pipe; at a terminal, wrapped at word
    boundaries to its width (a terminal's own wrap splits words)."""
    import shutil
    import textwrap

    if sys.stderr.isatty():
        width = shutil.get_terminal_size().columns
        text = textwrap.fill(
            text, width=max(width - 1, 40), subsequent_indent="      ", break_long_words=False
        )
    click.echo(text, err=True)


def _setup_logging(
    quiet: bool,
    log_format: str = "text",
    *,
    as_json: bool = False,
    progress: bool = False,
    verbose: bool = False,
    dbt_lines: bool = True,
) -> PlainDisplay:
    """Configure logging on stderr; return the progress display the command should use.

    ``progress``: the command shows node progress (live in a terminal, else the
    plain START/DONE log lines). ``verbose``: ``dbt_runner``'s DEBUG records too,
    among them dbt's own console lines (``dbt_runner.dbt.console``). ``dbt_lines``
    False: nothing of dbt's (the ``dbt_runner.dbt`` records: node lines, dbt's
    warnings) reaches stderr.
    """
    level = logging.WARNING if quiet else logging.INFO
    mode = choose_mode(quiet=quiet, as_json=as_json, log_format=log_format)
    display = make_display(mode if progress else "plain")
    handler_level = logging.DEBUG if verbose else level
    handler = display.log_handler(handler_level)
    if log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")
        )
    handler.setLevel(handler_level)
    if not dbt_lines:
        handler.addFilter(_not_dbts)
    logging.basicConfig(level=level, handlers=[handler])
    # other libraries stay at ``level``; only our own records get chattier
    logging.getLogger("dbt_runner").setLevel(logging.DEBUG if verbose else logging.NOTSET)
    return display


def _not_dbts(record: logging.LogRecord) -> bool:
    """A log filter: False for dbt's own lines (relayed under ``dbt_runner.dbt``)."""
    return not (record.name == "dbt_runner.dbt" or record.name.startswith("dbt_runner.dbt."))


@contextmanager
def _errors_to_exit_codes(as_json: bool = False) -> Iterator[None]:
    # with --json, stdout carries the JSON only: dbt's own console lines go to stderr
    try:
        with redirect_stdout(sys.stderr) if as_json else nullcontext():
            yield
    except DbtRunnerError as exc:  # the exception's kind decides the exit code
        click.echo(f"{exc.kind.value} error: {exc}", err=True)
        sys.exit(exc.exit_code)


def _report(
    results: dict[str, RunResult],
    as_json: bool,
    *,
    keyed: bool = False,
    display: PlainDisplay | None = None,
) -> None:
    if as_json:
        payload: Any = (
            next(iter(results.values())).to_dict()
            if len(results) == 1 and not keyed
            else {name: r.to_dict() for name, r in results.items()}
        )
        click.echo(json.dumps(payload, indent=2))
        return
    display = display or PlainDisplay()
    outputs = [r.output for r in results.values() if r.output is not None]
    if not outputs:
        display.report(results)
        return
    # the command's own value (ls lines, show rows, compiled SQL) is what stdout is for,
    # as with plain dbt; the summary goes to stderr so `dbt-runner dbt -- ls | ...` works
    with redirect_stdout(sys.stderr):
        display.report(results)
    for output in outputs:
        click.echo(_render_output(output))


def _render_output(output: Any) -> str:
    """A command's ``RunResult.output`` for a terminal: text as is, lists line by line."""
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(isinstance(line, str) for line in output):
        return "\n".join(output)
    return json.dumps(output, indent=2, default=str)


def _run_steps(steps: list[Step], opts: _SessionOptions, *, keyed: bool = False) -> None:
    """Run ``steps`` in one session (one tunnel, one parse), report, exit with the code.

    A step after a failed one is skipped (tests do not run on failed staging).
    stdout gets the result only: dbt's console lines become log records
    (``dbt_runner.dbt.console``, DEBUG: shown with ``--verbose``). SIGTERM/SIGINT
    cancel the running step on the server (:mod:`dbt_runner._signals`): the
    results so far are reported, one line says what was interrupted, and the exit
    code is 143 / 130.
    """
    display = _setup_logging(
        opts.quiet, opts.log_format, as_json=opts.as_json, progress=True, verbose=opts.verbose
    )
    results: dict[str, RunResult] = {}
    running: list[DbtSession] = []
    where = ["opening the session"]

    def each(label: str) -> Any:
        where[0] = label
        return display.invocation(label)

    def waiting(label: str) -> None:
        where[0] = f"the wait for the writer lock ({label})"

    def cancel_running(signum: int) -> bool:
        return bool(running) and running[0].cancel()

    settings: Settings | None = None
    with _interruptions(where, cancel_running) as received:
        with _errors_to_exit_codes(), display, dbt_console_to_log():
            settings = _settings(opts)
            created = _embedded_by_default(settings) and not settings.warehouse.path.exists()
            try:
                with DbtSession(settings, callbacks=display.callbacks) as session:
                    running.append(session)
                    run_steps(session, steps, each=each, results=results, waiting=waiting)
                    running.clear()
            finally:
                # failed: a step failed, or none finished (an exception, an interrupt)
                if created and not (results and all(r.success for r in results.values())):
                    _remove_embedded(settings.warehouse.path)
        _report(results, opts.as_json, keyed=keyed, display=display)
        if settings is not None:
            _hint_missing_raw(settings, results)
    if received:
        _say_interrupted(received[0], where[0], results.get(where[0]), settings)
        sys.exit(128 + received[0])
    sys.exit(exit_code(*results.values()))


@contextmanager
def _interruptions(
    where: list[str], on_first: Callable[[int], bool] | None = None
) -> Iterator[list[int]]:
    """SIGTERM/SIGINT handled (:mod:`dbt_runner._signals`) in the block; an interrupt that
    unwinds it (nothing was running to cancel) ends in one line and exit 143 / 130."""
    with handled_signals(on_first) as received:
        try:
            yield received
        except BaseException as exc:
            code = exit_code_of(exc)
            if code is None:
                raise
            _say_interrupted(code - 128, where[0], None)
            sys.exit(code)


def _say_interrupted(
    signum: int, where: str, result: RunResult | None, settings: Settings | None = None
) -> None:
    """The one line an interrupted command prints on stderr: what ran, and what was
    cleaned up (as far as ``settings`` tell: a tunnel only with a bastion, a generated
    profile only without the user's own; no settings: only that it was cleaned up)."""
    what = "stopped"
    if result is not None and result.nodes:
        counts = {"committed": 0, "cancelled": 0, "skipped": 0}
        for node in result.nodes:
            if not node.failed:
                counts["committed"] += 1
            elif node.status == "skipped":
                counts["skipped"] += 1
            else:
                counts["cancelled"] += 1
        what = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    code = 128 + signum
    click.echo(
        f"dbt-runner: interrupted by {signal_name(signum)} during {where} ({what}); "
        f"{_cleaned_up(settings)} (exit {code})",
        err=True,
    )


def _cleaned_up(settings: Settings | None) -> str:
    if settings is None:
        return "cleaned up"
    embedded = settings.profiles_dir is None and settings.warehouse.type == "duckdb"
    done = ["running statements cancelled" + ("" if embedded else " on the server")]
    if settings.ssh.enabled:
        done.append("tunnel closed")
    if settings.profiles_dir is None:
        done.append("generated profile removed")
    return ", ".join(done)


def entry() -> None:
    """The ``dbt-runner`` console script: :func:`main`, then a fast process exit.

    Once the result is on stdout, the exit handlers ran and every log line is
    flushed, the process ends without the interpreter's final teardown (a
    garbage collection of dbt's whole heap, ~1 s of a fresh cycle), see
    :mod:`dbt_runner._exit`. Its heap is frozen out of the garbage collector's way
    once dbt is imported (:func:`dbt_runner._dbt.own_process`). Only here, never in
    library calls: ``main`` itself (click's test runner) exits normally.
    """
    _dbt.own_process()  # the imports' objects (now, and dbt's): out of the collector's way
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): print it, exit 1
        print(code, file=sys.stderr)
        code = 1
    exit_now(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dbt-runner")
def main() -> None:
    """Run dbt in-process: staging models, tests, one tunnel per session.

    Settings come from DBT_RUNNER_* environment variables (see docs/configuration.md);
    each command's own options override them: dbt-runner COMMAND --help lists them.
    """


_resume_option = click.option(
    "--resume",
    metavar="RUN_ID",
    help="The orchestrator's run id (the same for each try, e.g. Airflow's {{ run_id }}): a "
    "later try of the run re-runs only what failed in the previous one. Needs "
    "DBT_RUNNER_ARTIFACT_CACHE.",
)


@main.command()
@_session_options
@click.option(
    "--select",
    help="dbt selection (default: $DBT_RUNNER_STAGING_SELECT, else tag:staging).",
)
@_exclude_option
@click.option("--full-refresh", is_flag=True, help="Rebuild the incremental models from scratch.")
@_vars_option
@_resume_option
def staging(
    opts: _SessionOptions,
    select: str | None,
    exclude: str | None,
    full_refresh: bool,
    dbt_vars: dict[str, Any] | None,
    resume: str | None,
) -> None:
    """Run the staging models (dbt run)."""
    kwargs = _given(select=select, exclude=exclude, vars=dbt_vars, resume=resume)
    if full_refresh:
        kwargs["full_refresh"] = True
    _run_steps([Step("run_staging", kwargs)], opts)


@main.command("test")
@_session_options
@click.option(
    "--select",
    help="dbt selection (default: $DBT_RUNNER_TESTS_SELECT, else tag:staging).",
)
@_exclude_option
@_scope_option
@_vars_option
@_resume_option
def test_(
    opts: _SessionOptions,
    select: str | None,
    exclude: str | None,
    scope: str,
    dbt_vars: dict[str, Any] | None,
    resume: str | None,
) -> None:
    """Run the data tests (dbt test)."""
    kwargs = _given(select=select, exclude=exclude, vars=dbt_vars, resume=resume)
    _run_steps([Step("run_tests", {**kwargs, "scope": scope})], opts)


@main.command()
@_session_options
@click.option(
    "--select",
    help="dbt selection of both steps (default: $DBT_RUNNER_STAGING_SELECT and "
    "$DBT_RUNNER_TESTS_SELECT, else tag:staging).",
)
@click.option(
    "--tests/--no-tests", default=True, show_default=True, help="Run the tests after staging."
)
@_exclude_option
@click.option(
    "--build",
    is_flag=True,
    help="One 'dbt build' (models and their tests) instead of run + test: fewer "
    "statements, but a failed test skips the models downstream of it (result key 'build').",
)
@_scope_option
@_vars_option
@_resume_option
def cycle(
    opts: _SessionOptions,
    select: str | None,
    exclude: str | None,
    tests: bool,
    build: bool,
    scope: str,
    dbt_vars: dict[str, Any] | None,
    resume: str | None,
) -> None:
    """Staging, then its tests, in one session (one tunnel, one parse).

    Tests are skipped when staging failed. With --build, one 'dbt build' does both.
    """
    if build and not tests:
        raise click.UsageError("--build runs the tests: it cannot go with --no-tests")
    steps = cycle_steps(
        tests=tests,
        build=build,
        select=select,
        exclude=exclude,
        scope=scope,
        vars=dbt_vars,
        resume=resume,
    )
    _run_steps(steps, opts, keyed=True)  # same JSON shape whether or not tests ran


@main.command("dbt", context_settings={"ignore_unknown_options": True})
@_session_options
@click.argument("dbt_args", nargs=-1, type=click.UNPROCESSED, required=True)
def dbt_(
    opts: _SessionOptions,
    dbt_args: tuple[str, ...],
) -> None:
    """Any dbt command through a session: dbt-runner dbt -- build --select tag:staging.

    Your arguments win (dbt's own semantics); the session adds the tunnel, retries,
    progress, the JSON result (--json) and the exit codes.
    """
    _run_steps([Step("invoke", args=tuple(dbt_args))], opts)


@main.command()
@_session_options
def deps(
    opts: _SessionOptions,
) -> None:
    """Install the project's packages (dbt deps), without parsing the project first."""
    _run_steps([Step("invoke", args=("deps",))], opts)


@main.command()
@click.option(
    "--path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("dbt_runner_demo.duckdb"),
    show_default=True,
    help="DuckDB file to create (an existing one is overwritten).",
)
@click.option("--threads", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Also log every node start/finish on stderr, and dbt's own console lines.",
)
def demo(path: Path, threads: int, verbose: bool) -> None:
    """Load synthetic data into DuckDB and run two staging cycles (no services needed).

    The demo prints its own per-model table; node-level log lines are shown with --verbose.
    """
    from .demo import run_demo

    _setup_logging(quiet=not verbose, verbose=verbose)
    out = sys.stdout  # the demo's own lines; dbt's console lines go to the log
    # Ctrl-C: the running session cancels and re-raises; the demo stops there (exit 130)
    with _interruptions(["the demo"]), _errors_to_exit_codes(), dbt_console_to_log():
        code = run_demo(path, threads=threads, echo=lambda line: click.echo(line, file=out))
    sys.exit(code)


@main.command("sample-data")
@click.option(
    "--batches",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="15-minute batches to load, consecutive, ending at the last full quarter hour.",
)
@click.option("--orders-per-minute", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--start", "start_ts", type=int, help="Epoch seconds of the first batch's start.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--replace", is_flag=True, help="Drop and recreate the raw tables first.")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
def sample_data(
    batches: int,
    orders_per_minute: int,
    start_ts: int | None,
    seed: int,
    replace: bool,
    quiet: bool,
) -> None:
    """Load synthetic raw data into the configured warehouse, to try a first cycle.

    Writes the raw tables of the staging project's input contract into
    $DBT_RUNNER_RAW_SCHEMA (default raw) with the same DBT_RUNNER_* settings
    as every other command, through the SSH tunnel when a bastion is set.
    DuckDB, PostgreSQL or Redshift (plain multi-row INSERTs: no COPY, no S3).
    See docs/getting-started.md.
    """
    from .synthetic import load_sample_data

    _setup_logging(quiet)
    with _errors_to_exit_codes():
        settings = Settings()
        try:
            counts = load_sample_data(
                settings,
                batches=batches,
                orders_per_minute=orders_per_minute,
                start_ts=start_ts,
                seed=seed,
                replace=replace,
                echo=(lambda _line: None) if quiet else click.echo,
            )
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
        except DbtRunnerError:
            raise
        except Exception as exc:  # the warehouse driver's own error, classified like dbt's
            kind = classify_exception(exc)
            click.echo(f"{kind.value} error: {type(exc).__name__}: {exc}".rstrip(), err=True)
            sys.exit(kind.exit_code)  # the one kind -> exit code map
    schema = settings.dbt_vars.get("raw_schema", "raw")
    detail = ", ".join(f"{schema}.{table} {n:,}" for table, n in counts.items())
    click.echo(f"loaded {sum(counts.values()):,} raw rows ({detail})")


@main.command()
@click.argument("result_file", metavar="RESULT.json", type=click.File("r"))
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("timeline.html"),
    show_default=True,
    help="HTML file to write (self-contained, opens offline); the chart also goes to a .svg "
    "beside it.",
)
@click.option("--title", help="Chart title (default: a summary of each result).")
def report(result_file: Any, out: Path, title: str | None) -> None:
    """Draw a timeline of a saved result: node bars per thread slot of each phase over time.

    RESULT.json is what dbt-runner cycle --json printed ({"staging": ..., "tests": ...})
    or what dbt-runner staging, test or dbt printed with --json (one result); "-" reads
    stdin.
    """
    try:
        data = json.load(result_file)
        results = _load_results(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.BadParameter(
            f"not a dbt-runner result ({type(exc).__name__}: {exc})", param_hint="RESULT.json"
        ) from exc
    from ._timeline import write_timeline_html

    path = write_timeline_html(results, out, title=title)
    click.echo(
        f"timeline of {sum(len(r.nodes) for r in results.values())} nodes: {path} "
        f"(and {path.with_suffix('.svg')})"
    )


def _load_results(data: Any) -> dict[str, RunResult]:
    """One saved RunResult, or a mapping of name to RunResult (``cycle --json``)."""
    if isinstance(data, dict) and "command" in data and "nodes" in data:
        return {str(data["command"]): RunResult.from_dict(data)}
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        return {str(name): RunResult.from_dict(value) for name, value in data.items()}
    raise ValueError("expected a RunResult object or a mapping of them")


@main.command()
@click.option("--target", help="dbt target name (default: $DBT_RUNNER_TARGET or dev).")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="dbt threads to diagnose for (default: $DBT_RUNNER_THREADS or 3).",
)
@click.option(
    "--connections",
    "-n",
    type=click.IntRange(min=1),
    help="Connections to open at once (default: threads + 1, what dbt holds).",
)
@click.option(
    "--hold",
    "hold_s",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds to hold all connections open together.",
)
@click.option(
    "--project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="dbt project to check (default: $DBT_RUNNER_PROJECT_DIR or the bundled one).",
)
@click.option(
    "--profiles-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Your profiles.yml's dir (default: $DBT_RUNNER_PROFILES_DIR or a generated one).",
)
@click.option("--no-parse", is_flag=True, help="Skip the check that the project parses.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="dbt's own lines too (its console and warnings, e.g. deprecations), and debug logs.",
)
def doctor(
    target: str | None,
    threads: int | None,
    connections: int | None,
    hold_s: float,
    project_dir: Path | None,
    profiles_dir: Path | None,
    no_parse: bool,
    as_json: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Diagnose failures layer by layer (SSH, channel, TCP, auth, query, parse).

    Opens the session's tunnel, then as many warehouse connections at once as
    dbt would (threads + 1), runs a trivial query on each, holds them together
    and prints what succeeded and the exact error where not, with the settings
    that matter (threads, the role's connection limit, timeouts); then checks
    that the project parses. With your own profiles.yml it connects to your
    target. Exit code 0 when every layer is fine, 2 when a login or the
    bastion's host key/key is refused (or the project's profile or packages are
    wrong), 1 when the project does not compile, 3 for any other failing layer.
    dbt's own output while it parses (its console, its deprecation warnings) is
    shown with --verbose only: the report says whether the project parses.
    See docs/troubleshooting.md.
    """
    from ._doctor import run_doctor

    _setup_logging(quiet, verbose=verbose, dbt_lines=verbose)
    with _errors_to_exit_codes(as_json), dbt_console_to_log():
        settings = _settings(
            _SessionOptions(
                project_dir=project_dir, profiles_dir=profiles_dir, target=target, threads=threads
            )
        )
        report = run_doctor(settings, connections=connections, hold_s=hold_s, parse=not no_parse)
    click.echo(report.to_json(indent=2) if as_json else report.render())
    code = max((kind.exit_code for kind in report.failed_kinds), default=EXIT_OK)
    if not report.ok and code == EXIT_OK:  # a failed layer always has a kind; be safe
        code = EXIT_INFRA
    sys.exit(code)


@main.command()
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Unix socket to listen on (default: <state dir>/worker.sock; created 0600).",
)
@click.option(
    "--max-requests",
    type=click.IntRange(min=1),
    help="Exit after this many requests (default: serve until stopped).",
)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
def serve(socket_path: Path | None, max_requests: int | None, quiet: bool) -> None:
    """A warm worker: import dbt once, run each request in a forked child.

    Clients (dbt_runner.WorkerClient, the example DAG's worker_socket) send
    run_staging / run_tests / cycle / invoke and get the same RunResult back,
    in a fraction of a fresh process's start-up. See docs/performance.md.
    """
    from ._worker import Worker

    _setup_logging(quiet)
    # SIGTERM/SIGINT: passed on to the running child, then the socket is removed (143 / 130)
    with _interruptions(["serving"]), _errors_to_exit_codes():
        worker = Worker(_settings(_SessionOptions()), socket_path)
        worker.serve_forever(max_requests=max_requests)


if __name__ == "__main__":  # pragma: no cover
    entry()
