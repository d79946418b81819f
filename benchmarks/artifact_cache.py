"""Fresh processes on a 300-model project: warm artifact cache vs none vs a kept ``target/``.

Not a test: figures for docs/performance.md (issue 25's first goal). Run from the
repository root::

    python -m benchmarks.artifact_cache --rounds 5 [--library]   # ~10 min on 2 cores
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
``--threads`` in a ``DbtSession``, set up as the ``dbt-runner`` console script sets up
its process (``dbt_runner._dbt.own_process``: the heap frozen out of the garbage
collector's way once dbt is imported). With ``--library``, ``lib-cold`` and
``lib-cache-local`` are the same as ``cold`` and ``cache-local`` in a process the
library does not own (an Airflow task, a notebook: the collector untouched). Figures
per process: ``import`` (``import dbt_runner`` and dbt's modules, before the session),
``open->first node`` (``DbtSession.open()`` until dbt starts the first node: the goal's
"starts"), ``command`` (open until the session closed) and ``wall`` (process start to
exit).
Ratios are taken within each round, then their median: ``cold / cache`` of
open->first node (goal >= 5x) and ``cache / target`` of the command (goal <= 1.2x).
The 1-minute load average is printed with every round: the machine is shared.

:class:`CacheBench` is the same contenders on any warehouse: ``benchmarks.matrix``
runs them on the bench's PostgreSQL through its bastion, with the staging cycle.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks._harness import exit_on_sigterm
from benchmarks.bigproject import generate

REPO = Path(__file__).resolve().parent.parent
BUCKET = "bench-artifacts"
CHILD_TIMEOUT_S = 1800
RESULT_TAG = "BENCH_RESULT "
CONTENDERS = ("cold", "target", "cache-local", "cache-s3")

_CHILD = """
import json, sys, time
started = time.monotonic()
config = json.loads(sys.argv[1])
from dbt_runner import DbtSession, Settings
from dbt_runner import _dbt
_dbt.warm_up(config["adapter"])  # dbt's own imports, outside the session's figures
if config["console"]:
    _dbt.own_process()  # the console script's process once dbt is imported: heap frozen
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
    settings: dict[str, Any],
    args: list[str],
    threads: int,
    cwd: Path,
    env: dict[str, str],
    adapter: str = "duckdb",
    console: bool = True,
) -> dict[str, Any]:
    payload = json.dumps(
        {
            "settings": settings,
            "args": args,
            "threads": threads,
            "adapter": adapter,
            "console": console,
        }
    )
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


class CacheBench:
    """``cold``, ``target`` and a warm cache per entry of ``caches``, each a new process
    in a new empty directory, on the generated ``project``, in the console script's
    process; with ``library``, also ``lib-cold`` and ``lib-cache-<the first cache>`` in a
    library host's process (its collector untouched).

    ``settings``: the session's settings besides project, state dir and cache (a DuckDB
    ``warehouse``, or nothing when ``env``'s ``DBT_RUNNER_*`` variables name the
    warehouse); ``activity``: the warehouse server's (statements, connection opens) so
    far, read around each process (None: an embedded warehouse, no server log).
    """

    def __init__(
        self,
        work: Path,
        project: Path,
        *,
        settings: dict[str, Any],
        env: dict[str, str],
        caches: dict[str, tuple[str, dict[str, str]]],
        adapter: str = "duckdb",
        library: bool = False,
        command: list[str] | None = None,
        threads: int = 4,
        out: Callable[[str], None] = print,
        activity: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.work = work
        self.project = project
        self.settings = settings
        self.env = env
        self.caches = {f"cache-{name}": value for name, value in caches.items()}
        self.adapter = adapter
        self.command = command or ["run"]
        self.threads = threads
        self.out = out
        self.activity = activity
        self.contenders = ["cold", "target", *self.caches]
        if library and not self.caches:
            raise ValueError("library: the lib-cold / lib-cache pair needs a cache")
        #: the library host's pair: the goal's ratio in a process the library does not own
        self.library = ["lib-cold", f"lib-{next(iter(self.caches))}"] if library else []
        self.contenders += self.library
        self.rows: dict[str, list[dict[str, Any]]] = {c: [] for c in self.contenders}
        self.ratios: dict[str, list[float]] = {}
        self._counter = iter(range(1, 100_000))
        self._target_state = self.work / "target-state"

    def _fresh(self, name: str) -> Path:
        path = self.work / f"{name}-{next(self._counter)}"
        path.mkdir(parents=True)
        return path

    def _settings(self, state: Path, cache: str | None) -> dict[str, Any]:
        values: dict[str, Any] = {
            **self.settings,
            "project_dir": str(self.project),
            "state_dir": str(state),
        }
        if cache is not None:
            values["artifact_cache"] = cache
        return values

    def _child(
        self,
        state: Path,
        cache: str | None,
        cwd: Path,
        args: list[str] | None = None,
        console: bool = True,
    ) -> dict[str, Any]:
        env = self.env
        if cache is not None:
            env = env | self.caches[cache][1]
        location = self.caches[cache][0] if cache is not None else None
        return run_child(
            self._settings(state, location),
            args or self.command,
            self.threads,
            cwd,
            env,
            self.adapter,
            console,
        )

    def setup(self) -> None:
        """Untimed: seed, a first run with a kept state dir (``target``), each cache filled."""
        seed_dir = self._fresh("setup")
        self._child(seed_dir / "state", None, seed_dir, ["seed"])
        self._target_state.mkdir(parents=True, exist_ok=True)
        self._child(self._target_state, None, seed_dir)
        for name in self.caches:
            warm = self._fresh(f"warm-{name}")
            self._child(warm / "state", name, warm)
        shutil.rmtree(seed_dir, ignore_errors=True)

    def run_round(self, rnd: int) -> dict[str, dict[str, Any]]:
        """Every contender once, in turn; prints the round's line with the load average."""
        this: dict[str, dict[str, Any]] = {}
        for name in self.contenders:
            cwd = self._fresh(name)
            before = self.activity() if self.activity is not None else None
            try:
                kind = name.removeprefix("lib-")
                console = kind == name
                if kind == "target":
                    res = self._child(self._target_state, None, cwd)
                else:
                    cache = kind if kind != "cold" else None
                    res = self._child(cwd / "state", cache, cwd, console=console)
            finally:
                shutil.rmtree(cwd, ignore_errors=True)
            if before is not None and self.activity is not None:
                after = self.activity()
                res["statements"] = after[0] - before[0]
                res["connections"] = after[1] - before[1]
            expect_path(
                name,
                res["parse_count"],
                res["full_parse_reasons"],
                kind == "cold",
                parses=1 if kind in ("cold", "target") else 0,
            )
            if res["first_node_s"] is None:
                raise BenchError(f"{name}: dbt started no node")
            res["load"] = _load()
            self.rows[name].append(res)
            this[name] = res
        line = [f"round {rnd}:"]
        for name, res in this.items():
            counts = f" {res['statements']}st/{res['connections']}co" if "statements" in res else ""
            line.append(
                f"{name} first={res['first_node_s']:.2f}s cmd={res['command_s']:.2f}s "
                f"wall={res['wall_s']:.2f}s{counts}"
            )
        for name in self.caches:
            first = this["cold"]["first_node_s"] / this[name]["first_node_s"]
            whole = this[name]["command_s"] / this["target"]["command_s"]
            self.ratios.setdefault(f"cold/{name} open->first node", []).append(first)
            self.ratios.setdefault(f"{name}/target command", []).append(whole)
            wall = this["cold"]["wall_s"] / this[name]["wall_s"]
            self.ratios.setdefault(f"cold/{name} process wall", []).append(wall)
        if self.library:
            cold, cache = self.library
            first = this[cold]["first_node_s"] / this[cache]["first_node_s"]
            self.ratios.setdefault(f"{cold}/{cache} open->first node", []).append(first)
        line.append(f"load {_load():.2f}")
        self.out("  ".join(line))
        return this

    def report(self) -> dict[str, Any]:
        """Prints the medians and the per-round ratios; returns every figure."""
        out = self.out
        counted = self.activity is not None
        out("")
        out(
            f"{'contender':<15} {'import':>8} {'open->1st node':>15} {'command':>9} {'wall':>8}"
            + (f" {'statements':>11} {'opens':>6}" if counted else "")
        )
        for name, rs in self.rows.items():
            counts = ""
            if counted:
                counts = (
                    f" {median([r['statements'] for r in rs]):>11.0f}"
                    f" {median([r['connections'] for r in rs]):>6.0f}"
                )
            out(
                f"{name:<15} {median([r['import_s'] for r in rs]):>7.2f}s "
                f"{median([r['first_node_s'] for r in rs]):>14.2f}s "
                f"{median([r['command_s'] for r in rs]):>8.2f}s "
                f"{median([r['wall_s'] for r in rs]):>7.2f}s" + counts
            )
        out("")
        out("ratios (per round, then the median; min-max; per round):")
        for name, xs in self.ratios.items():
            rounds = " ".join(f"{x:.2f}" for x in xs)
            out(f"  {name:<40} {median(xs):5.2f}x  ({min(xs):.2f}-{max(xs):.2f})  {rounds}")
        return {
            "rows": self.rows,
            "ratios": {
                name: {"per_round": xs, "median": median(xs)} for name, xs in self.ratios.items()
            },
        }


def expect_path(
    name: str, parse_count: int, reasons: list[str], full: bool, *, parses: int | None = None
) -> None:
    """The contender took the path it stands for (else its figure would mislead): a full
    parse when ``full`` (dbt found no saved manifest), none at all on a cache hit
    (``parses`` 0: the default unless ``full``)."""
    if parses is None:
        parses = 1 if full else 0
    full_parse = any("saved manifest not found" in r for r in reasons)
    if parse_count != parses or full_parse != full:
        raise BenchError(
            f"{name}: parse_count {parse_count} (expected {parses}), "
            f"full parse reasons {reasons} (expected {'a' if full else 'no'} full parse)"
        )


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--command", default="run", help="the dbt command each process runs")
    parser.add_argument("--no-s3", action="store_true", help="leave out the S3 (moto) cache")
    parser.add_argument(
        "--library",
        action="store_true",
        help="also lib-cold and lib-cache-local (a library host's process)",
    )
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
    project = generate(work / "project", models=args.models)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
    base_env["PYTHONPATH"] = str(REPO)
    with s3_location(not args.no_s3) as (s3, s3_env):
        caches: dict[str, tuple[str, dict[str, str]]] = {"local": (str(work / "shared-cache"), {})}
        if s3 is not None:
            caches["s3"] = (s3, s3_env)
        bench = CacheBench(
            work,
            project,
            settings={"warehouse": {"type": "duckdb", "path": str(work / "warehouse.duckdb")}},
            env=base_env,
            caches=caches,
            command=[args.command],
            threads=args.threads,
            library=args.library,
        )
        print(
            f"project: {args.models} models (benchmarks/bigproject.py), dbt {args.command} "
            f"--threads {args.threads}, {args.rounds} rounds, load average {_load():.2f}"
        )
        bench.setup()
        for rnd in range(1, args.rounds + 1):
            bench.run_round(rnd)
    figures = bench.report()
    print(f"load average at the end: {_load():.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min)")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
