"""The ``prefect`` contender's body: prefect-dbt's ``PrefectDbtRunner``, run + test.

Runs under the benchmark-only venv that has prefect-dbt (never a dependency of
dbt_runner; see benchmarks/README.md), outside a Prefect flow (no task per
node: the cheapest way to use the runner), against the Prefect API server the
bench started once (``PREFECT_API_URL``): the runner resolves profiles.yml
through the API (blocks, variables) on every invoke, and without a server it
would start an ephemeral one in every process. Prints one ``BENCH_RESULT`` line.
"""

from __future__ import annotations

import json
import sys
import time

RESULT_TAG = "BENCH_RESULT "


def main(argv: list[str]) -> int:
    """``argv``: project dir, profiles dir, target path, then the test selection args
    (``benchmarks.cycle.TEST_SCOPE``: every contender tests the same scope)."""
    project_dir, profiles_dir, target_path = argv[:3]
    test_scope = argv[3:]
    t0 = time.monotonic()
    from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings

    t_import = time.monotonic()
    runner = PrefectDbtRunner(
        settings=PrefectDbtSettings(
            project_dir=project_dir, profiles_dir=profiles_dir, target_path=target_path
        ),
        raise_on_failure=False,
    )
    out: dict[str, object] = {"import_s": t_import - t0}
    ok = True
    for name, args in (
        ("run", ["run", "--threads", "3", "--select", "tag:staging"]),
        ("test", ["test", "--threads", "3", *test_scope]),
    ):
        started = time.monotonic()
        res = runner.invoke(args)
        out[f"{name}_s"] = time.monotonic() - started
        ok = ok and bool(res.success)
        if not res.success:
            out["error"] = f"{name}: {res.exception or 'nodes failed'}"
            break
    out["ok"] = ok
    print(RESULT_TAG + json.dumps(out), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
