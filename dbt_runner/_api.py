"""Convenience functions: each opens a short :class:`DbtSession` and delegates."""

from __future__ import annotations

from typing import Any

from ._results import RunResult
from ._session import DbtSession
from ._settings import Settings

__all__ = ["run_staging", "run_tests"]


def run_staging(
    *,
    select: str | None = None,
    exclude: str | None = None,
    threads: int | None = None,
    vars: dict[str, Any] | None = None,
    full_refresh: bool = False,
    settings: Settings | None = None,
) -> RunResult:
    """Run the staging models in a session of their own: :meth:`DbtSession.run_staging`.

    >>> import dbt_runner
    >>> dbt_runner.run_staging(threads=3).raise_for_status()   # doctest: +SKIP
    """
    with DbtSession(settings) as session:
        return session.run_staging(
            select=select, exclude=exclude, threads=threads, vars=vars, full_refresh=full_refresh
        )


def run_tests(
    *,
    select: str | None = None,
    exclude: str | None = None,
    threads: int | None = None,
    vars: dict[str, Any] | None = None,
    scope: str = "recent",
    settings: Settings | None = None,
) -> RunResult:
    """Run the data tests in a session of their own: :meth:`DbtSession.run_tests`.

    >>> import dbt_runner
    >>> dbt_runner.run_tests().raise_for_status()   # doctest: +SKIP
    """
    with DbtSession(settings) as session:
        return session.run_tests(
            select=select, exclude=exclude, threads=threads, vars=vars, scope=scope
        )
