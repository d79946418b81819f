"""The smallest dbt_runner job: staging, then its tests, in one session.

Copy it into a cron job, a Prefect flow or a Dagster op. Settings come from
``DBT_RUNNER_*`` environment variables (see docs/configuration.md), e.g.::

    export DBT_RUNNER_WAREHOUSE__TYPE=redshift DBT_RUNNER_WAREHOUSE__HOST=... (etc.)
    python plain_python.py; echo "exit code $?"

Exit codes, the same as the ``dbt-runner`` CLI (both read ``ErrorKind.exit_code``):
0 success · 1 models or tests failed · 2 bad configuration or credentials
(SSL mismatch, wrong password, bastion host key or SSH key refused) ·
3 infrastructure (tunnel, connection, timeout) still failing after retries.
In Prefect or Dagster, call ``run_cycle()`` and ``raise_for_status()`` the
results instead of exiting.
"""

from __future__ import annotations

import logging
import sys

from dbt_runner import DbtRunnerError, DbtSession, RunResult, Settings


def run_cycle() -> list[RunResult]:
    """One session (one SSH tunnel, one parse): staging, then tests if staging passed."""
    with DbtSession(Settings()) as session:
        results = [session.run_staging(threads=3)]
        if results[0].success:
            results.append(session.run_tests())
    return results


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        results = run_cycle()
    except DbtRunnerError as exc:  # opening failed: bad settings, bastion unreachable or refused
        print(f"{exc.kind.value} error: {exc}", file=sys.stderr)
        return exc.exit_code
    for result in results:
        print(result.summary())
    return max(result.exit_code for result in results)


if __name__ == "__main__":
    sys.exit(main())
