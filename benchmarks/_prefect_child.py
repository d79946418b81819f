"""The ``prefect`` contender's body: prefect-dbt's ``PrefectDbtRunner``, run + test.

Runs under the benchmark-only venv that has prefect-dbt (never a dependency of
dbt_runner; see benchmarks/README.md), outside a Prefect flow (no Prefect API
server, and a placeholder client so none is started: the cheapest way to use the
runner). Prints one ``BENCH_RESULT`` line.
"""

from __future__ import annotations

import json
import sys
import time

RESULT_TAG = "BENCH_RESULT "


def main(argv: list[str]) -> int:
    project_dir, profiles_dir, target_path = argv[:3]
    t0 = time.monotonic()
    from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings

    t_import = time.monotonic()
    runner = PrefectDbtRunner(
        settings=PrefectDbtSettings(
            project_dir=project_dir, profiles_dir=profiles_dir, target_path=target_path
        ),
        raise_on_failure=False,
        # the runner keeps its client but never uses it outside a flow; get_client() would
        # start Prefect's ephemeral API server (seconds, and a timeout on a loaded machine)
        client=object(),  # type: ignore[arg-type]
    )
    out: dict[str, object] = {"import_s": t_import - t0}
    ok = True
    for name, args in (
        ("run", ["run", "--threads", "3", "--select", "tag:staging"]),
        ("test", ["test", "--threads", "3", "--select", "tag:staging", "--exclude", "tag:full"]),
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
