"""Fresh processes on a 300-model project: warm artifact cache vs none vs a kept ``target/``.

Not a test: figures for docs/performance.md (issue 25's first goal). Run from the
repository root::

    python -m benchmarks.artifact_cache --rounds 5            # ~10 min on 2 cores
    python -m benchmarks.artifact_cache --rounds 1 --models 60 --no-s3   # a quick look

Set-up (untimed): :mod:`benchmarks.bigproject` writes the project (``--models``,
default 300: refs, tests, macros, seeds); one process seeds an embedded DuckDB file
and runs the whole project once; one process per cache fills the cache (a local
directory and, unless ``--no-s3``, S3 on a loopback moto server).

Contenders, each a **new process in a new empty working directory**, alternating
within each round (``cold target cache-local cache-s3 ...``):

* ``cold``: an empty state dir and no cache: dbt parses the whole project;
* ``target``: today's warm container: the state dir (with ``target/``) of this
  contender's previous process, no cache: dbt's partial parse finds nothing to do;
* ``cache-local`` / ``cache-s3``: an empty state dir and ``DBT_RUNNER_ARTIFACT_CACHE``
  warm: the cached manifest is used, dbt does not parse.

Each process runs ``dbt <--command>`` (default ``run``: every model) with
``--threads``. Figures per process: ``import`` (``import dbt_runner`` and dbt's
modules), ``open->first node`` (``DbtSession.open()`` until dbt starts the first
node: the goal's "starts"), ``command`` (open until the session closed) and
``wall`` (process start to exit). Ratios are taken within each round, then their
median: ``cold / cache`` of open->first node (goal >= 5x) and ``cache / target``
of the command (goal <= 1.2x). The 1-minute load average is printed with every
round: the machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.bigproject import generate

REPO = Path(__file__).resolve().parent.parent
BUCKET = "bench-artifacts"
CHILD_TIMEOUT_S = 1800
RESULT_TAG = "BENCH_RESULT "

_CHILD = """
import json, sys, time
started = time.monotonic()
config = json.loads(sys.argv[1])
from dbt_runner import DbtSession, Settings
from dbt_runner import _dbt
_dbt.warm_up("duckdb")  # dbt's own imports, outside the session's figures
imported = time.monotonic()
first = []
def on_node(event):
    if event.event == "node_start" and not first:
        first.append(time.monotonic())
settings = Settings(**config["settings"])
opened = time.monotonic()
with DbtSession(settings, callbacks=[on_node]) as session:
    result = session.invoke(config["args"], threads=config["threads"])
    parses = session.parse_count
    full = list(session._relay.full_parse_reasons)
closed = time.monotonic()
print("BENCH_RESULT " + json.dumps({
    "success": result.success,
    "nodes": len(result.nodes),
    "import_s": imported - started,
    "first_node_s": (first[0] - opened) if first else None,
    "command_s": closed - opened,
    "parse_count": parses,
    "full_parse_reasons": full,
}))
"""


class BenchError(RuntimeError):
    """A contender did not do what it stands for: no figure is better than a wrong one."""


def _load() -> float:
    return os.getloadavg()[0]


def run_child(
    settings: dict[str, Any], args: list[str], threads: int, cwd: Path, env: dict[str, str]
) -> dict[str, Any]:
    payload = json.dumps({"settings": settings, "args": args, "threads": threads})
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, payload],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    wall = time.monotonic() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise BenchError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_TAG) :])
    result["wall_s"] = wall
    if not result["success"]:
        raise BenchError(f"dbt {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return result


@contextlib.contextmanager
def s3_location(enabled: bool) -> Iterator[tuple[str | None, dict[str, str]]]:
    """An S3 cache location on a loopback moto server (or None) and its environment."""
    if not enabled:
        yield None, {}
        return
    import boto3

    from testbed.moto_server import MotoServer

    with MotoServer() as server:
        env = server.env()
        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}/bench", env


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--command", default="run", help="the dbt command each process runs")
    parser.add_argument("--no-s3", action="store_true", help="leave out the S3 (moto) cache")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 50:
        parser.error("--rounds must be 1..50")
    work = Path(tempfile.mkdtemp(prefix="dbr-cache-bench-"))
    try:
        return _bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, work: Path) -> int:
    out = print
    project = generate(work / "project", models=args.models)
    db = work / "warehouse.duckdb"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
    base_env["PYTHONPATH"] = str(REPO)
    counter = iter(range(1, 10_000))

    def fresh(name: str) -> Path:
        path = work / f"{name}-{next(counter)}"
        path.mkdir()
        return path

    def settings(state: Path, cache: str | None) -> dict[str, Any]:
        values: dict[str, Any] = {
            "project_dir": str(project),
            "state_dir": str(state),
            "warehouse": {"type": "duckdb", "path": str(db)},
        }
        if cache is not None:
            values["artifact_cache"] = cache
        return values

    command = [args.command]
    with s3_location(not args.no_s3) as (s3, s3_env):
        caches: dict[str, tuple[str, dict[str, str]]] = {
            "cache-local": (str(work / "shared-cache"), {})
        }
        if s3 is not None:
            caches["cache-s3"] = (s3, s3_env)
        out(
            f"project: {args.models} models (benchmarks/bigproject.py), dbt {' '.join(command)} "
            f"--threads {args.threads}, {args.rounds} rounds, load average {_load():.2f}"
        )
        seed_dir = fresh("setup")
        run_child(settings(seed_dir / "state", None), ["seed"], args.threads, seed_dir, base_env)
        target_state = fresh("target-state")
        run_child(settings(target_state, None), command, args.threads, seed_dir, base_env)
        for name, (location, env) in caches.items():
            warm = fresh(f"warm-{name}")
            run_child(
                settings(warm / "state", location), command, args.threads, warm, base_env | env
            )
        contenders = ["cold", "target", *caches]
        rows: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
        ratios: dict[str, list[float]] = {}
        for rnd in range(1, args.rounds + 1):
            this: dict[str, dict[str, Any]] = {}
            for name in contenders:
                cwd = fresh(name)
                if name == "cold":
                    res = run_child(
                        settings(cwd / "state", None), command, args.threads, cwd, base_env
                    )
                    _expect(name, res, parses=1, full=True)
                elif name == "target":
                    res = run_child(
                        settings(target_state, None), command, args.threads, cwd, base_env
                    )
                    _expect(name, res, parses=1, full=False)
                else:
                    location, env = caches[name]
                    res = run_child(
                        settings(cwd / "state", location),
                        command,
                        args.threads,
                        cwd,
                        base_env | env,
                    )
                    _expect(name, res, parses=0, full=False)
                res["load"] = _load()
                rows[name].append(res)
                this[name] = res
            line = [f"round {rnd}:"]
            for name, res in this.items():
                line.append(
                    f"{name} first={res['first_node_s']:.2f}s cmd={res['command_s']:.2f}s "
                    f"wall={res['wall_s']:.2f}s"
                )
            for name in caches:
                first = this["cold"]["first_node_s"] / this[name]["first_node_s"]
                whole = this[name]["command_s"] / this["target"]["command_s"]
                ratios.setdefault(f"cold/{name} open->first node", []).append(first)
                ratios.setdefault(f"{name}/target command", []).append(whole)
                wall = this["cold"]["wall_s"] / this[name]["wall_s"]
                ratios.setdefault(f"cold/{name} process wall", []).append(wall)
            line.append(f"load {_load():.2f}")
            out("  ".join(line))

    out("")
    out(f"{'contender':<12} {'import':>8} {'open->1st node':>15} {'command':>9} {'wall':>8}")
    for name, rs in rows.items():
        out(
            f"{name:<12} {median([r['import_s'] for r in rs]):>7.2f}s "
            f"{median([r['first_node_s'] for r in rs]):>14.2f}s "
            f"{median([r['command_s'] for r in rs]):>8.2f}s "
            f"{median([r['wall_s'] for r in rs]):>7.2f}s"
        )
    out("")
    out("ratios (per round, then the median; min-max):")
    for name, xs in ratios.items():
        out(f"  {name:<40} {median(xs):5.2f}x  ({min(xs):.2f}-{max(xs):.2f})")
    out(f"load average at the end: {_load():.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min)")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "ratios": ratios}, indent=2))
    return 0


def _expect(name: str, res: dict[str, Any], *, parses: int, full: bool) -> None:
    """The contender took the path it stands for (else its figure would mislead)."""
    full_parse = any("saved manifest not found" in r for r in res["full_parse_reasons"])
    if res["parse_count"] != parses or full_parse != full or res["first_node_s"] is None:
        raise BenchError(
            f"{name}: parse_count {res['parse_count']} (expected {parses}), "
            f"full parse reasons {res['full_parse_reasons']}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
