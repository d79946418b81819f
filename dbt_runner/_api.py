"""Convenience functions: each opens a short :class:`DbtSession` and delegates."""

from __future__ import annotations

from typing import Any

from ._results import RunResult
from ._session import DbtSession
from ._settings import Settings

__all__ = ["run_staging", "run_tests"]


def run_staging(
    threads: int | None = None,
    select: str | None = None,
    *,
    settings: Settings | None = None,
    **kwargs: Any,
) -> RunResult:
    """Run the staging models in a session of their own.

    >>> import dbt_runner
    >>> dbt_runner.run_staging(threads=3).raise_for_status()   # doctest: +SKIP
    """
    with DbtSession(settings) as session:
        return session.run_staging(threads=threads, select=select, **kwargs)


def run_tests(
    select: str | None = None,
    *,
    settings: Settings | None = None,
    **kwargs: Any,
) -> RunResult:
    """Run the staging models' data tests in a session of their own.

    >>> import dbt_runner
    >>> dbt_runner.run_tests().raise_for_status()   # doctest: +SKIP
    """
    with DbtSession(settings) as session:
        return session.run_tests(select=select, **kwargs)
