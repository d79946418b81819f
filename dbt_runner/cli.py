"""The ``dbt-runner`` command line.

Exit codes: 0 success · 1 models or tests failed (or the project does not
compile) · 2 bad configuration · 3 infrastructure (tunnel, connection,
timeout) still failing after retries.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from ._exceptions import ConfigurationError, DbtRunnerError, ErrorKind, TunnelError
from ._results import RunResult
from ._session import DbtSession
from ._settings import Settings

__all__ = ["exit_code", "main"]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INFRA = 0, 1, 2, 3

_INFRA = frozenset(
    {
        ErrorKind.TUNNEL,
        ErrorKind.CONNECTION,
        ErrorKind.TOO_MANY_CONNECTIONS,
        ErrorKind.CONFLICT,
        ErrorKind.TIMEOUT,
    }
)

F = TypeVar("F", bound=Callable[..., Any])


def exit_code(*results: RunResult) -> int:
    """The CLI exit code for a set of results (worst wins)."""
    code = EXIT_OK
    for result in results:
        if result.success:
            continue
        kind = result.error.kind if result.error else ErrorKind.MODEL_FAILURE
        if kind is ErrorKind.AUTH:
            code = max(code, EXIT_CONFIG)
        elif kind in _INFRA:
            code = max(code, EXIT_INFRA)
        else:
            code = max(code, EXIT_FAILED)
    return code


def _session_options(func: F) -> F:
    options = [
        click.option(
            "--project-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="dbt project (default: $DBT_RUNNER_PROJECT_DIR or the bundled models_sql).",
        ),
        click.option("--target", help="dbt target name (default: $DBT_RUNNER_TARGET or dev)."),
        click.option("--threads", type=click.IntRange(min=1), help="dbt threads (default: 3)."),
        click.option("--json", "as_json", is_flag=True, help="Print the RunResult as JSON."),
        click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _settings(project_dir: Path | None, target: str | None, threads: int | None) -> Settings:
    overrides: dict[str, Any] = {}
    if project_dir is not None:
        overrides["project_dir"] = project_dir
    if target is not None:
        overrides["target"] = target
    if threads is not None:
        overrides["threads"] = threads
    return Settings(**overrides)


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


@contextmanager
def _errors_to_exit_codes() -> Iterator[None]:
    try:
        yield
    except ConfigurationError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except TunnelError as exc:
        click.echo(f"tunnel error: {exc}", err=True)
        sys.exit(EXIT_INFRA)
    except DbtRunnerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)


def _report(results: dict[str, RunResult], as_json: bool) -> None:
    if as_json:
        payload: Any = (
            next(iter(results.values())).to_dict()
            if len(results) == 1
            else {name: r.to_dict() for name, r in results.items()}
        )
        click.echo(json.dumps(payload, indent=2))
    else:
        for result in results.values():
            click.echo(result.summary())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dbt-runner")
def main() -> None:
    """Run dbt in-process: staging models, tests, one tunnel per session.

    Settings come from DBT_RUNNER_* environment variables (see docs/configuration.md);
    the options below override them.
    """


@main.command()
@_session_options
@click.option("--select", default="tag:staging", show_default=True, help="dbt selection.")
@click.option("--full-refresh", is_flag=True, help="Rebuild the incremental models from scratch.")
def staging(
    project_dir: Path | None,
    target: str | None,
    threads: int | None,
    as_json: bool,
    quiet: bool,
    select: str,
    full_refresh: bool,
) -> None:
    """Run the staging models (dbt run)."""
    _setup_logging(quiet)
    with _errors_to_exit_codes():
        settings = _settings(project_dir, target, threads)
        with DbtSession(settings) as session:
            result = session.run_staging(select=select, full_refresh=full_refresh)
    _report({"staging": result}, as_json)
    sys.exit(exit_code(result))


@main.command("test")
@_session_options
@click.option("--select", default="tag:staging", show_default=True, help="dbt selection.")
def test_(
    project_dir: Path | None,
    target: str | None,
    threads: int | None,
    as_json: bool,
    quiet: bool,
    select: str,
) -> None:
    """Run the data tests (dbt test)."""
    _setup_logging(quiet)
    with _errors_to_exit_codes():
        settings = _settings(project_dir, target, threads)
        with DbtSession(settings) as session:
            result = session.run_tests(select=select)
    _report({"tests": result}, as_json)
    sys.exit(exit_code(result))


@main.command()
@_session_options
@click.option("--select", default="tag:staging", show_default=True, help="dbt selection.")
@click.option(
    "--tests/--no-tests", default=True, show_default=True, help="Run the tests after staging."
)
def cycle(
    project_dir: Path | None,
    target: str | None,
    threads: int | None,
    as_json: bool,
    quiet: bool,
    select: str,
    tests: bool,
) -> None:
    """Staging, then its tests, in one session (one tunnel, one parse).

    Tests are skipped when staging failed.
    """
    _setup_logging(quiet)
    results: dict[str, RunResult] = {}
    with _errors_to_exit_codes():
        settings = _settings(project_dir, target, threads)
        with DbtSession(settings) as session:
            results["staging"] = session.run_staging(select=select)
            if tests and results["staging"].success:
                results["tests"] = session.run_tests(select=select)
    _report(results, as_json)
    sys.exit(exit_code(*results.values()))


@main.command()
@click.option(
    "--path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("dbt_runner_demo.duckdb"),
    show_default=True,
    help="DuckDB file to create (overwritten).",
)
@click.option("--threads", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
def demo(path: Path, threads: int, quiet: bool) -> None:
    """Load synthetic data into DuckDB and run two staging cycles (no services needed)."""
    from .demo import run_demo

    _setup_logging(quiet)
    with _errors_to_exit_codes():
        code = run_demo(path, threads=threads, echo=click.echo)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
