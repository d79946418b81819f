"""Issue 25's benchmarks in one run: the staging cycle and a 300-model project, every
contender side by side, with and without 20 ms round trips, and the goals' verdicts.

Run from the repository root (as root, or a user that can start PostgreSQL and sshd)::

    python -m benchmarks.matrix --rounds 5                       # ~45 min on 2 cores
    python -m benchmarks.matrix --size tiny --models 30 --rounds 1   # a quick look (~6 min)

One bed (:mod:`benchmarks._harness`: PostgreSQL with 2 M raw rows, the sshd bastion,
a delaying proxy for the 20 ms lane), one loopback moto server (S3) and one local
cache directory serve both projects. Per round, in turn:

1. **the staging cycle** (:mod:`benchmarks.cycle`), each lane (``--rtt-ms 0,20``: no
   added latency, then 20 ms per round trip between bastion and warehouse) running
   every contender once: ``old``, ``dbtcli``, ``prefect``, ``new`` (fresh process, kept
   ``target/``), ``newcold`` (fresh process in an empty directory, no cache),
   ``newcache`` / ``news3`` (the same with a warm artifact cache: a directory, S3),
   ``warm`` (the worker), ``floor``;
2. **the 300-model project** (:mod:`benchmarks.bigproject` on the same PostgreSQL,
   through the bastion, no added latency; :class:`benchmarks.artifact_cache.CacheBench`):
   ``cold``, ``target``, ``cache-local``, ``cache-s3``, each a new process in a new
   empty directory running ``dbt run`` of every model, set up as the ``dbt-runner``
   console script sets up its process; then ``lib-cold`` and ``lib-cache-local``, the
   same in a process the library does not own (an Airflow task: its garbage collector
   untouched).

Every figure of a contender is taken in the same round as its baselines; ratios are
per round, then their median. Statements and connection opens per cycle (or process)
come from PostgreSQL's log. After the rounds, the staging tables are compared with a
full refresh (the run exits 1 when a row differs), then the goals of issue 25 are
printed with what this run measured.

Prints figures; it is not a pass/fail test (the smoke test runs it on a tiny size).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import cycle
from benchmarks.artifact_cache import CacheBench, s3_location
from benchmarks.bigproject import generate

#: the staging contenders of the one run (prefect is left out, with a message, when its
#: venv is missing: benchmarks/README.md)
STAGING_CONTENDERS = "old,dbtcli,prefect,new,newcold,newcache,news3,warm,floor"
BIG_SCHEMA = "big"


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, argparse.Namespace]:
    """The driver's own arguments and the staging cycle's (:func:`benchmarks.cycle.parse_args`)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.matrix", description=__doc__)
    p.add_argument("--size", default="2m", help="raw rows of the staging project (2m, tiny)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--models", type=int, default=300, help="models of the generated project")
    p.add_argument("--threads", type=int, default=4, help="dbt threads of the 300-model runs")
    p.add_argument("--rtt-ms", default="0,20", help="the staging lanes' added round trips")
    p.add_argument(
        "--sslmode",
        default="require",
        choices=("disable", "require"),
        help="of every dbt_runner and dbt session on PostgreSQL (require: TLS, as production; "
        "the floor's connections use TLS either way)",
    )
    p.add_argument("--adapters", default="postgres", help="staging adapters (redshift: optional)")
    p.add_argument("--contenders", default=STAGING_CONTENDERS, help="staging contenders")
    p.add_argument("--no-s3", action="store_true", help="leave out news3 and cache-s3")
    p.add_argument(
        "--no-warm-up",
        action="store_true",
        help="no unmeasured staging cycle per contender before the rounds (the smoke test: "
        "a first cycle's figures include cold caches, they are not for reading)",
    )
    p.add_argument("--orders-per-minute", type=int, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write every figure here")
    a = p.parse_args(argv)
    if not 1 <= a.rounds <= 50:
        p.error("--rounds must be 1..50")
    if a.models < 30:
        p.error("--models must be >= 30")
    contenders = [c for c in a.contenders.split(",") if c and not (a.no_s3 and c == "news3")]
    staging = [
        "--size",
        a.size,
        "--rounds",
        str(a.rounds),
        "--adapters",
        a.adapters,
        "--contenders",
        ",".join(contenders),
        "--rtt-ms",
        a.rtt_ms,
        "--sslmode",
        a.sslmode,
        "--no-latency",
    ]
    if a.orders_per_minute is not None:
        staging += ["--orders-per-minute", str(a.orders_per_minute)]
    return a, cycle.parse_args(staging)


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks._harness import exit_on_sigterm, parse_size

    exit_on_sigterm()

    argv = list(sys.argv[1:] if argv is None else argv)
    args, staging_args = parse_args(argv)

    def out(line: str) -> None:
        print(line, flush=True)

    started = dt.datetime.now(dt.timezone.utc)
    out(f"benchmarks.matrix  {started:%Y-%m-%d %H:%M} UTC  argv: {' '.join(argv) or '(defaults)'}")
    out(f"machine: {cycle.machine()}")
    out(
        f"staging: {staging_args.size_list[0]} raw rows, lanes {staging_args.rtt_list} ms added "
        f"round trip, contenders {staging_args.contenders}; {args.models}-model project: "
        f"dbt run --threads {args.threads}, no added latency; sslmode={args.sslmode}; "
        f"{args.rounds} rounds; load average {os.getloadavg()[0]:.2f}"
    )
    with contextlib.ExitStack() as stack:
        location, s3_env = stack.enter_context(s3_location(not args.no_s3))
        run = cycle.SizeRun(staging_args, parse_size(staging_args.size_list[0]), out)
        run.caches = {"local": (str(run.bed.workdir / "artifact-cache"), {})}
        if location is not None:
            run.caches["s3"] = (location, s3_env)
        stack.enter_context(run)
        big = big_bench(run, args, out)
        t0 = time.monotonic()
        big.setup()
        out(
            f"\n== set-up: the {args.models}-model project seeded and run, caches filled "
            f"({time.monotonic() - t0:.0f}s)"
        )
        phase = run.phases()[0]
        if not args.no_warm_up:
            t0 = time.monotonic()
            run.warm_up(phase)
            out(
                f"== set-up: one unmeasured cycle per staging contender and lane "
                f"({time.monotonic() - t0:.0f}s)"
            )
        for rnd in range(1, args.rounds + 1):
            out(f"\n== round {rnd} (load average {os.getloadavg()[0]:.2f} at its start)")
            run.run_round(rnd, phase)
            big.run_round(rnd)
        out("\n== the staging cycle (per lane: medians, per-round ratios)")
        staging = run.finish()
        out(f"\n== the {args.models}-model project (fresh processes; medians, per-round ratios)")
        big_figures = big.report()
        latency = added_latency(run, out)
    goals = print_goals(out, staging, big_figures, staging_args, args.models)
    out(f"\ndone in {(dt.datetime.now(dt.timezone.utc) - started).total_seconds():.0f}s")
    if args.json:
        samples = {k: [vars(s) for s in v] for k, v in run.samples.items()}
        args.json.write_text(
            json.dumps(
                {
                    "machine": cycle.machine(),
                    "argv": argv,
                    "started": started.isoformat(),
                    "staging": staging,
                    "staging_samples": samples,
                    "added_latency": latency,
                    "big": big_figures,
                    "goals": goals,
                },
                indent=2,
                default=str,
            )
        )
    wrong = [label for label, s in staging["adapters"].items() if any(s["differing_rows"].values())]
    return 1 if wrong else 0


def big_bench(run: cycle.SizeRun, args: argparse.Namespace, out: Callable[[str], None]) -> Any:
    """The 300-model contenders on the bed's PostgreSQL, through its bastion (no delay)."""
    bed = run.bed
    work = bed.workdir / "bigproject"
    project = generate(work / "project", models=args.models)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
    env["PYTHONPATH"] = str(cycle.REPO)
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env.update(bed.runner_env("postgres", BIG_SCHEMA, work / "unused", delayed=False))
    del env["DBT_RUNNER_STATE_DIR"]  # each process gets its own (CacheBench)
    assert run.caches is not None
    return CacheBench(
        work,
        project,
        settings={},
        env=env,
        caches=run.caches,
        adapter="postgres",
        library=True,
        threads=args.threads,
        out=lambda line: out(f"   [{args.models} models] {line}" if line else ""),
        activity=bed.activity,
    )


def added_latency(run: cycle.SizeRun, out: Callable[[str], None]) -> dict[str, Any]:
    """Per contender: its cycle in the delayed lane minus the same round's in the lane
    without added latency (the lanes alternate within each round)."""
    lanes = {lane.rtt_ms: lane for lane in run.lanes if lane.adapter == "postgres"}
    if 0 not in lanes or len(lanes) < 2:
        return {}
    slow = max(lanes)
    fast_s, slow_s = run.samples[lanes[0].label], run.samples[lanes[slow].label]
    figures: dict[str, Any] = {}
    out(f"\n== what {slow:g} ms per round trip adds to each contender's cycle (postgres)")
    out(f"   {'contender':<10}{'added s':>9}{'ratio':>8}   per round (ratio)")
    for name in run.contenders:
        pairs = [
            (b.wall_s - a.wall_s, b.wall_s / a.wall_s)
            for a, b in zip(
                [s for s in fast_s if s.contender == name],
                [s for s in slow_s if s.contender == name],
                strict=True,
            )
        ]
        if not pairs:
            continue
        added = statistics.median(p[0] for p in pairs)
        ratio = statistics.median(p[1] for p in pairs)
        figures[name] = {"added_s": added, "ratio": ratio, "per_round": [p[1] for p in pairs]}
        rounds = " ".join(f"{p[1]:.2f}" for p in pairs)
        out(f"   {name:<10}{added:>9.2f}{ratio:>7.2f}x   {rounds}")
    return figures


def _ratio(ratios: dict[str, Any], key: str) -> tuple[float, list[float]] | None:
    r = ratios.get(key)
    if r is None:
        return None
    return float(r["median"]), list(r["per_round"])


def print_goals(
    out: Callable[[str], None],
    staging: dict[str, Any],
    big: dict[str, Any],
    staging_args: argparse.Namespace,
    models: int,
) -> list[dict[str, Any]]:
    """Issue 25's goals against this run's figures: met, not met, or not measured."""
    lanes = {lane.rtt_ms: lane.label for lane in cycle.lanes_of(staging_args)}
    lanes = {
        rtt: label
        for rtt, label in lanes.items()
        if staging["adapters"].get(label, {}).get("contenders")
    }
    base = staging["adapters"].get(lanes.get(0.0, ""), {}).get("ratios", {})
    slow_rtt = max(lanes) if lanes else 0.0
    slow = staging["adapters"].get(lanes.get(slow_rtt, ""), {}).get("ratios", {})
    rows: list[dict[str, Any]] = []

    def goal(
        text: str, value: tuple[float, list[float]] | None, limit: float, at_least: bool
    ) -> None:
        if value is None:
            rows.append({"goal": text, "median": None, "met": None})
            return
        median, per_round = value
        met = median >= limit if at_least else median <= limit
        rows.append({"goal": text, "median": median, "per_round": per_round, "met": met})

    bratios = big.get("ratios", {})
    for cache in ("cache-local", "cache-s3"):
        goal(
            f"{models} models: cold / {cache}, open->first node >= 5x",
            _ratio(bratios, f"cold/{cache} open->first node"),
            5.0,
            True,
        )
        goal(
            f"{models} models: {cache} / target, whole command <= 1.2x",
            _ratio(bratios, f"{cache}/target command"),
            1.2,
            False,
        )
    goal(
        f"{models} models, library host: lib-cold / lib-cache-local, open->first node >= 5x",
        _ratio(bratios, "lib-cold/lib-cache-local open->first node"),
        5.0,
        True,
    )
    if slow_rtt:
        goal(f"{slow_rtt:g} ms: warm / floor <= 1.8x", _ratio(slow, "warm/floor"), 1.8, False)
        goal(f"{slow_rtt:g} ms: fresh (new) / floor <= 3x", _ratio(slow, "new/floor"), 3.0, False)
    goal("no added latency: old / new (fresh) >= 3x", _ratio(base, "old/new"), 3.0, True)
    equal = all(not any(s["differing_rows"].values()) for s in staging["adapters"].values())
    out("\n== goals of issue 25 (this run; medians of per-round ratios)")
    out(f"   {'goal':<52}{'measured':>10}  {'met':<13} per round")
    for row in rows:
        if row["met"] is None:
            out(f"   {row['goal']:<52}{'-':>10}  not measured")
            continue
        rounds = " ".join(f"{x:.2f}" for x in row["per_round"])
        verdict = "yes" if row["met"] else "NO"
        out(f"   {row['goal']:<52}{row['median']:>9.2f}x  {verdict:<13} {rounds}")
    verdict = "yes" if equal else "NO"
    out(f"   {'staging == a full refresh after every cycle':<52}{'':>10}  {verdict}")
    rows.append({"goal": "staging == full refresh", "met": equal})
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
