"""The 15-minute staging cycle: old job vs dbt_runner vs the warehouse floor.

Run from the repository root (as root, or a user that can start PostgreSQL and sshd)::

    python -m benchmarks.cycle --size 2m --rounds 5
    python -m benchmarks.cycle --sizes 1m,4m,15m --rounds 3 --adapters postgres \\
        --contenders new,floor,new7d

Contenders (per adapter, run alternately: old new floor old new floor ...; a
new 15-minute raw batch is appended before *every* cycle, so each one does
real incremental work on the same staging tables):

* ``old``   the old Airflow job without its pip install. Task 1: an OpenSSH
  ``ssh -N -L`` tunnel subprocess, ``dbt debug``, ``dbt run --threads 1``
  (subprocesses), tunnel closed; task 2: another ``ssh -N -L`` tunnel,
  ``dbt test``, closed.
* ``dbtcli`` plain dbt CLI, the best a shell script can do: one ``ssh -N -L``
  tunnel, ``dbt run --threads 3`` then ``dbt test`` (subprocesses), closed.
* ``new``   one child process: ``DbtSession`` (one sshtunnel tunnel),
  ``run_staging(threads=3)`` + ``run_tests()``. Its peak RSS is read with
  ``wait4()``.
* ``warm``  a ``dbt-runner serve`` worker (started once per adapter, not timed)
  and one ``WorkerClient.cycle()`` per cycle: a forked child of a parent that
  already imported dbt opens its own tunnel and session.
* ``newnr``, ``warmnr`` ``new`` and ``warm`` with ``DBT_RUNNER_CONNECTIONS__REUSE=off``:
  a new warehouse connection per node and command step, as plain dbt; ``newss``,
  ``warmss`` with ``=session`` (kept from ``run`` to ``test``). The warm variants have
  a worker each.
* ``floor`` the SQL dbt executed in ``new``'s last cycle (``target/compiled`` +
  ``target/run``: temp table, delete, insert per model) replayed on 3 parallel
  direct connections, then the test queries on 3: the warehouse alone.
* ``new7d`` (optional) ``new`` with ``--vars '{source_lookback_s: 604800,
  delete_window_s: 604800}'``: the old 7-day scan.

Every contender runs the same hourly test scope, ``TEST_SCOPE`` (what
``run_tests()`` selects by default: the daily ``tag:full`` variants left out).
After the rounds, each adapter's staging tables are compared row for row with a
full refresh of the same raw data (``<schema>_fr``); the run exits 1 when they
differ.

Prints figures; it is not a pass/fail test.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROJECT_DIR = REPO / "models_sql"
MODELS = ("stg_ecs_order_info", "stg_uni_tracking_info", "stg_uni_tracking_spath")
VARS_7D = {"source_lookback_s": 604800, "delete_window_s": 604800}
RESULT_TAG = "BENCH_RESULT "
#: the hourly test scope every contender runs: what ``run_tests()`` selects by default
#: (``tag:full`` marks the daily whole-table variants; see docs/models.md)
TEST_SCOPE = ("--select", "tag:staging", "--exclude", "tag:full")
ALL_CONTENDERS = (
    "old",
    "dbtcli",
    "prefect",
    "new",
    "newcold",
    "newcache",
    "news3",
    "newnr",
    "newss",
    "warm",
    "warmnr",
    "warmss",
    "warmnpc",
    "warmbuild",
    "warmlean",
    "floor",
    "new7d",
)
#: the prefect contender's interpreter: a venv with prefect-dbt (benchmarks/README.md)
PREFECT_PYTHON = Path(
    os.environ.get("BENCH_PREFECT_PYTHON")
    or Path(__file__).resolve().parent.parent / ".cache" / "prefect-venv" / "bin" / "python"
)
SESSION_STEPS = ("open", "staging", "tests", "close")
STEP_TIMEOUT_S = 1800  # no single subprocess may run longer than this
#: warm variants with a worker of their own: DBT_RUNNER_CONNECTIONS__REUSE for it
_REUSE_VARIANTS = {"nr": "off", "ss": "session"}


class BenchError(RuntimeError):
    """A contender failed: the benchmark stops rather than report a bogus figure."""


# ====================================================================== child: new
def child_main(argv: Sequence[str]) -> int:
    """``new`` contender body, run in its own process (settings from DBT_RUNNER_* env)."""
    t_start = time.monotonic()
    p = argparse.ArgumentParser()
    p.add_argument("--vars", default=None)
    p.add_argument("--full-refresh", action="store_true")
    a = p.parse_args(argv)
    variables = json.loads(a.vars) if a.vars else None

    import dbt.cli.main  # noqa: F401  (dbt's import cost, timed on its own)

    from dbt_runner import DbtSession, Settings

    t_import = time.monotonic()
    out: dict[str, Any] = {"import_s": t_import - t_start}
    session = DbtSession(Settings())
    session.open()
    t_open = time.monotonic()
    out["open_s"] = t_open - t_import
    try:
        staging = session.run_staging(threads=3, full_refresh=a.full_refresh, vars=variables)
        t_run = time.monotonic()
        out["staging_s"] = t_run - t_open
        out["staging_ok"] = staging.success
        out["rows"] = {n.name: n.rows_affected for n in staging.nodes}
        out["model_s"] = {n.name: n.elapsed_s for n in staging.nodes}
        if not staging.success:
            out["error"] = staging.summary()
        if a.full_refresh:
            tests = None
        else:
            tests = session.run_tests(vars=variables)
            out["tests_ok"] = tests.success
            out["tests"] = len(tests.nodes)
            if not tests.success:
                out["error"] = tests.summary()
        out["tests_s"] = time.monotonic() - t_run
        out["parses"] = session.parse_count
        out["full_parse_reasons"] = list(session._relay.full_parse_reasons)
    finally:
        t_close = time.monotonic()
        session.close()
        out["close_s"] = time.monotonic() - t_close
    out["ok"] = bool(out.get("staging_ok")) and (tests is None or tests.success)
    print(RESULT_TAG + json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


# ====================================================================== measurements
@dataclass
class Sample:
    contender: str
    adapter: str
    round: int
    wall_s: float
    steps: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    batch_rows: int = 0
    load1: float = 0.0


def run_child_rusage(
    args: list[str],
    env: dict[str, str],
    timeout: float = STEP_TIMEOUT_S,
    cwd: Path = REPO,
) -> tuple[float, int, str, float, float]:
    """Run a subprocess (in ``cwd``) reaped with ``os.wait4``.

    Returns (wall s, exit code, output, peak RSS MB, user+sys CPU s).
    """
    import tempfile

    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            args, env=env, cwd=cwd, stdin=devnull, stdout=out, stderr=subprocess.STDOUT
        )
        deadline = t0 + timeout
        status, rusage = 0, None
        for _ in range(int(timeout / 0.01) + 2):  # bounded poll
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                raise BenchError(f"{args[:4]} timed out after {timeout}s")
            time.sleep(0.01)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    rss_mb = rusage.ru_maxrss / 1024 if rusage is not None else 0.0  # Linux: KiB
    cpu_s = rusage.ru_utime + rusage.ru_stime if rusage is not None else 0.0
    return wall, proc.returncode, text, rss_mb, cpu_s


def _child_result(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])  # type: ignore[no-any-return]
    raise BenchError("the child printed no result:\n" + text[-3000:])


# ---------------------------------------------------------------------- old
class SshTunnel:
    """``ssh -N -L 127.0.0.1:PORT:host:port`` as a subprocess (what the old DAG's bash did)."""

    def __init__(self, bed: Any, remote: tuple[str, int], local_port: int) -> None:
        self.cmd = [
            "ssh",
            "-N",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"IdentityFile={bed.sshd.private_key_path}",
            "-o",
            f"UserKnownHostsFile={bed.sshd.known_hosts_path}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "LogLevel=ERROR",
            "-p",
            str(bed.sshd.port),
            "-L",
            f"127.0.0.1:{local_port}:{remote[0]}:{remote[1]}",
            f"{bed.sshd.user}@{bed.sshd.host}",
        ]
        self.local_port = local_port
        self.proc: subprocess.Popen[bytes] | None = None

    def open(self, timeout: float = 15.0) -> None:
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.005) + 1):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise BenchError(f"ssh -L exited {self.proc.returncode}: {err}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.local_port), timeout=0.5),
            ):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        self.close()
        raise BenchError(f"ssh -L did not listen on {self.local_port} within {timeout}s")

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()


def write_old_profile(
    bed: Any, adapter: str, schema: str, local_port: int, directory: Path, delayed: bool = True
) -> None:
    """The old job's profiles.yml: target ``dev``, ``threads: 1``, through the tunnel port."""
    import yaml

    ep = bed.endpoint(adapter, delayed)
    output: dict[str, Any] = {
        "type": adapter,
        "host": "127.0.0.1",
        "port": local_port,
        "user": ep.user,
        "password": "{{ env_var('DBT_BENCH_PASSWORD') }}",
        "dbname": ep.dbname,
        "schema": schema,
        "threads": 1,
        "sslmode": bed.sslmode if adapter == "postgres" else "disable",
        "connect_timeout": 10,
    }
    if adapter == "redshift":
        output.update({"method": "database", "ra3_node": True})
    directory.mkdir(parents=True, exist_ok=True)
    doc = {"dbt_runner": {"target": "dev", "outputs": {"dev": output}}}
    (directory / "profiles.yml").write_text(yaml.safe_dump(doc))


@dataclass
class Contenders:
    """Everything a contender needs for one adapter phase."""

    bed: Any
    adapter: str
    schema: str
    workdir: Path
    old_port: int
    base_env: dict[str, str]
    #: through the bed's delaying proxy when it has one (False: the no-latency lane)
    delayed: bool = True
    #: the artifact caches of ``newcache`` and ``news3``: name -> (location, environment)
    caches: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.old_dir = self.workdir / f"old_{self.adapter}"
        write_old_profile(
            self.bed, self.adapter, self.schema, self.old_port, self.old_dir, self.delayed
        )
        self._fresh_dirs = iter(range(1, 100_000))
        self._filled: set[str | None] = set()
        self.new_state = self.workdir / f"new_{self.adapter}"
        self.new7d_state = self.workdir / f"new7d_{self.adapter}"
        #: the warm workers by variant ("" or "nr"): (process, client)
        self._workers: dict[str, tuple[subprocess.Popen[bytes], Any]] = {}
        self._prefect_server: subprocess.Popen[bytes] | None = None
        self._prefect_api = ""

    # -- old
    def old(self) -> tuple[float, dict[str, float], float]:
        dbt = str(Path(sys.executable).parent / "dbt")
        env = dict(
            self.base_env,
            DBT_BENCH_PASSWORD=self.bed.password,
            DBT_TARGET_PATH=str(self.old_dir / "target"),  # `dbt debug` has no --target-path
            DBT_LOG_PATH=str(self.old_dir / "logs"),
        )
        common = ["--project-dir", str(PROJECT_DIR), "--profiles-dir", str(self.old_dir)]
        remote = (self.endpoint().host, self.endpoint().port)
        steps: dict[str, float] = {}
        rss = 0.0
        t0 = time.monotonic()

        def step(name: str, fn: Callable[[], Any]) -> Any:
            ts = time.monotonic()
            value = fn()
            steps[name] = steps.get(name, 0.0) + time.monotonic() - ts
            return value

        def dbt_cmd(name: str, args: list[str]) -> None:
            nonlocal rss
            wall, code, text, peak, cpu = run_child_rusage([dbt, *args, *common], env)
            steps["client_cpu"] = steps.get("client_cpu", 0.0) + cpu
            steps[name] = wall
            rss = max(rss, peak)
            if code != 0:
                raise BenchError(f"old: dbt {args[0]} exited {code}:\n{text[-3000:]}")

        for task, commands in (
            (
                1,
                [
                    ("debug", ["debug"]),
                    ("run", ["run", "--threads", "1", "--select", "tag:staging"]),
                ],
            ),
            (2, [("test", ["test", *TEST_SCOPE])]),
        ):
            tunnel = SshTunnel(self.bed, remote, self.old_port)
            step(f"tunnel{task}_open", tunnel.open)
            try:
                for name, args in commands:
                    dbt_cmd(name, args)
            finally:
                step(f"tunnel{task}_close", tunnel.close)
        return time.monotonic() - t0, steps, rss

    def endpoint(self) -> Any:
        """The warehouse as this lane's contenders reach it (:meth:`Bed.endpoint`)."""
        return self.bed.endpoint(self.adapter, self.delayed)

    def runner_env(self, state: Path) -> dict[str, str]:
        return dict(self.bed.runner_env(self.adapter, self.schema, state, delayed=self.delayed))

    # -- new
    def newcold(self) -> tuple[float, dict[str, float], float]:
        return self.fresh(None)

    def newcache(self) -> tuple[float, dict[str, float], float]:
        return self.fresh("local")

    def news3(self) -> tuple[float, dict[str, float], float]:
        return self.fresh("s3")

    def fresh(self, cache: str | None) -> tuple[float, dict[str, float], float]:
        """``new`` in a new empty working directory with an empty state dir (a fresh
        container): without an artifact cache (``newcold``: dbt parses everything) or
        with a warm one (``newcache``, ``news3``: no parse). The child's parse count and
        full-parse reasons must say it took that path, else the figure would mislead."""
        from benchmarks.artifact_cache import expect_path

        name = {None: "newcold", "local": "newcache", "s3": "news3"}[cache]
        cwd = self.workdir / f"{name}-{next(self._fresh_dirs)}"
        cwd.mkdir(parents=True)
        extra: dict[str, str] = {}
        if cache is not None:
            location, env = self.caches[cache]
            extra = dict(env, DBT_RUNNER_ARTIFACT_CACHE=location)
        try:
            wall, steps, rss, result = self._new_child(cwd / "state", cwd=cwd, extra_env=extra)
        finally:
            shutil.rmtree(cwd, ignore_errors=True)
        if cache is None or cache in self._filled:
            expect_path(name, result["parses"], result["full_parse_reasons"], cache is None)
        self._filled.add(cache)  # its first run (the warm-up) filled the cache
        return wall, steps, rss

    def newnr(self) -> tuple[float, dict[str, float], float]:
        return self.new(state=self.workdir / f"newnr_{self.adapter}", reuse="off")

    def newss(self) -> tuple[float, dict[str, float], float]:
        return self.new(state=self.workdir / f"newss_{self.adapter}", reuse="session")

    def new(
        self,
        variables: dict[str, Any] | None = None,
        *,
        full_refresh: bool = False,
        state: Path | None = None,
        reuse: str | None = None,
    ) -> tuple[float, dict[str, float], float]:
        extra = {} if reuse is None else {"DBT_RUNNER_CONNECTIONS__REUSE": reuse}
        wall, steps, rss, _ = self._new_child(
            state or self.new_state, variables, full_refresh=full_refresh, extra_env=extra
        )
        return wall, steps, rss

    def _new_child(
        self,
        state: Path,
        variables: dict[str, Any] | None = None,
        *,
        full_refresh: bool = False,
        cwd: Path = REPO,
        extra_env: dict[str, str] | None = None,
    ) -> tuple[float, dict[str, float], float, dict[str, Any]]:
        """One ``child_main`` process: (wall, steps, peak RSS, its result)."""
        env = dict(self.base_env)
        env.update(self.runner_env(state))
        env.update(extra_env or {})
        args = [sys.executable, "-m", "benchmarks.cycle", "--child"]
        if variables:
            args += ["--vars", json.dumps(variables)]
        if full_refresh:
            args.append("--full-refresh")
        wall, code, text, rss, cpu = run_child_rusage(args, env, cwd=cwd)
        result = _child_result(text)
        if code != 0 or not result.get("ok"):
            raise BenchError(f"new ({self.adapter}) failed: {result.get('error')}\n{text[-2000:]}")
        steps = {
            k: float(result[k]) for k in ("import_s", "open_s", "staging_s", "tests_s", "close_s")
        }
        steps = {k.removesuffix("_s"): v for k, v in steps.items()}
        steps["process_overhead"] = wall - sum(steps.values())
        steps["client_cpu"] = cpu  # user+sys CPU of the process (not a wall-time step)
        return wall, steps, rss, result

    # -- dbtcli
    def dbtcli(self) -> tuple[float, dict[str, float], float]:
        dbt = str(Path(sys.executable).parent / "dbt")
        env = dict(
            self.base_env,
            DBT_BENCH_PASSWORD=self.bed.password,
            DBT_TARGET_PATH=str(self.old_dir / "target_cli"),
            DBT_LOG_PATH=str(self.old_dir / "logs_cli"),
        )
        common = ["--project-dir", str(PROJECT_DIR), "--profiles-dir", str(self.old_dir)]
        ep = self.endpoint()
        steps: dict[str, float] = {"client_cpu": 0.0}
        rss = 0.0
        t0 = time.monotonic()
        tunnel = SshTunnel(self.bed, (ep.host, ep.port), self.old_port)
        tunnel.open()
        steps["tunnel_open"] = time.monotonic() - t0
        try:
            for name, args in (
                ("run", ["run", "--threads", "3", "--select", "tag:staging"]),
                ("test", ["test", "--threads", "3", *TEST_SCOPE]),
            ):
                wall, code, text, peak, cpu = run_child_rusage([dbt, *args, *common], env)
                steps[name] = wall
                steps["client_cpu"] += cpu
                rss = max(rss, peak)
                if code != 0:
                    raise BenchError(f"dbtcli: dbt {name} exited {code}:\n{text[-3000:]}")
        finally:
            tunnel.close()
        return time.monotonic() - t0, steps, rss

    # -- prefect
    def _prefect_env(self) -> dict[str, str]:
        env = dict(
            self.base_env,
            DBT_BENCH_PASSWORD=self.bed.password,
            DBT_LOG_PATH=str(self.old_dir / "logs_prefect"),
            PREFECT_HOME=str(self.old_dir / "prefect_home"),
        )
        env.pop("PYTHONPATH", None)  # its own venv: not this repository's packages
        return env

    def _start_prefect_server(self) -> None:
        """``prefect server start`` once (not timed), as a Prefect deployment has one."""
        import urllib.request

        port = _free_port()
        self._prefect_api = f"http://127.0.0.1:{port}/api"
        self._prefect_server = subprocess.Popen(
            [
                str(PREFECT_PYTHON.parent / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=self._prefect_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self._prefect_server.poll() is not None:
                raise BenchError("prefect: the Prefect API server exited")
            try:
                with urllib.request.urlopen(self._prefect_api + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise BenchError("prefect: the Prefect API server did not come up in 240 s")

    def prefect(self) -> tuple[float, dict[str, float], float]:
        if self._prefect_server is None:
            self._start_prefect_server()
        env = dict(self._prefect_env(), PREFECT_API_URL=self._prefect_api)
        ep = self.endpoint()
        t0 = time.monotonic()
        tunnel = SshTunnel(self.bed, (ep.host, ep.port), self.old_port)
        tunnel.open()
        steps: dict[str, float] = {"tunnel_open": time.monotonic() - t0}
        try:
            child = [
                str(PREFECT_PYTHON),
                str(Path(__file__).resolve().parent / "_prefect_child.py"),
                str(PROJECT_DIR),
                str(self.old_dir),
                str(self.old_dir / "target_prefect"),
                *TEST_SCOPE,
            ]
            wall, code, text, rss, cpu = run_child_rusage(child, env)
        finally:
            tunnel.close()
        result = _child_result(text)
        if code != 0 or not result.get("ok"):
            raise BenchError(f"prefect failed: {result.get('error')}\n{text[-3000:]}")
        for key in ("import_s", "run_s", "test_s"):
            steps[key.removesuffix("_s")] = float(result[key])
        steps["process_overhead"] = wall - steps["import"] - steps["run"] - steps["test"]
        steps["client_cpu"] = cpu
        return time.monotonic() - t0, steps, rss

    # -- warm
    def warmnpc(self) -> tuple[float, dict[str, float], float]:
        return self.warm("npc")

    def warmbuild(self) -> tuple[float, dict[str, float], float]:
        return self.warm("build")

    def warmlean(self) -> tuple[float, dict[str, float], float]:
        return self.warm("lean")

    def warmnr(self) -> tuple[float, dict[str, float], float]:
        return self.warm("nr")

    def warmss(self) -> tuple[float, dict[str, float], float]:
        return self.warm("ss")

    def _worker_client(self, variant: str) -> Any:
        """The client of this variant's worker (started on first use, not timed)."""
        from dbt_runner import Settings, WorkerClient

        if variant in self._workers:
            return self._workers[variant][1]
        state = self.workdir / f"warm{variant}_{self.adapter}"
        env = self.runner_env(state)
        if variant in _REUSE_VARIANTS:
            env["DBT_RUNNER_CONNECTIONS__REUSE"] = _REUSE_VARIANTS[variant]
        sock = self.workdir / f"warm{variant}_{self.adapter}.sock"
        script = str(Path(sys.executable).parent / "dbt-runner")
        worker = subprocess.Popen(
            [script, "serve", "--socket", str(sock), "--quiet"], env={**self.base_env, **env}
        )
        deadline = time.monotonic() + 120
        while not sock.exists():
            if worker.poll() is not None or time.monotonic() > deadline:
                worker.kill()
                worker.wait(30)
                raise BenchError("warm: the worker did not start")
            time.sleep(0.05)
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            client = WorkerClient(sock, settings=Settings())
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self._workers[variant] = (worker, client)
        return client

    def warm(self, variant: str = "") -> tuple[float, dict[str, float], float]:
        """``warm``: ``WorkerClient.cycle(threads=3)`` (dbt's own default,
        ``--populate-cache``); ``warmnpc``: the same two dbt commands with
        ``--no-populate-cache``; ``warmbuild``: one ``dbt build``
        (``cycle(build=True)``); ``warmlean``: that build with ``--no-write-json``
        (no run_results.json or manifest.json). They share one worker; ``warmnr`` and
        ``warmss`` (``warm`` with CONNECTIONS__REUSE off and session) have their own."""
        from dbt_runner import Step

        client = self._worker_client(variant if variant in _REUSE_VARIANTS else "")
        t0 = time.monotonic()
        if variant == "npc":
            npc = "--no-populate-cache"
            results = list(
                client.run_steps(
                    [
                        Step("invoke", {"threads": 3}, ("run", "--select", "tag:staging", npc)),
                        Step("invoke", {"threads": 3}, ("test", *TEST_SCOPE, npc)),
                    ]
                ).values()
            )
        elif variant == "lean":  # build_staging()'s command, without dbt's JSON artifacts
            build = ["build", *TEST_SCOPE, "--no-write-json"]
            results = list(
                client.run_steps([Step("invoke", {"threads": 3}, tuple(build))]).values()
            )
        else:
            results = client.cycle(threads=3, build=variant == "build")
        wall = time.monotonic() - t0
        if not client.last_ran_in_worker or not all(r.success for r in results):
            raise BenchError(f"warm ({self.adapter}) failed: {[r.summary() for r in results]}")
        steps = {r.command: r.elapsed_s for r in results}
        steps["process_overhead"] = wall - sum(steps.values())
        return wall, steps, 0.0

    def stop_worker(self) -> None:
        if self._prefect_server is not None:
            self._prefect_server.terminate()
            try:
                self._prefect_server.wait(30)
            except subprocess.TimeoutExpired:
                self._prefect_server.kill()
                self._prefect_server.wait(10)
            self._prefect_server = None
        for worker, _ in self._workers.values():
            worker.terminate()
            worker.wait(30)
        self._workers.clear()

    def new7d(self) -> tuple[float, dict[str, float], float]:
        return self.new(VARS_7D, state=self.new7d_state)

    # -- floor
    def floor(self) -> tuple[float, dict[str, float], float]:
        target = self.new_state / "target"
        models = []
        for name in MODELS:
            compiled = _node_file(target / "compiled", f"{name}.sql").read_text()
            run_sql = _node_file(target / "run", f"{name}.sql").read_text()
            m = re.search(r'"([A-Za-z0-9_]+__dbt_tmp[0-9]*)"', run_sql)
            if not m:
                raise BenchError(f"floor: no temp table in target/run of {name}")
            models.append(f'create temporary table "{m.group(1)}" as (\n{compiled}\n);\n{run_sql}')
        tests = [p.read_text() for p in sorted((target / "run").rglob("schema.yml/*.sql"))]
        if not tests:
            raise BenchError("floor: no test SQL in target/run (run 'new' first)")
        ep = self.endpoint()

        def run_model(sql: str) -> None:
            conn = ep.connect()
            try:
                conn.autocommit = False
                with conn.cursor() as cur:
                    cur.execute(sql)
                conn.commit()
            finally:
                conn.close()

        def run_test(conn: Any, sql: str) -> int:
            with conn.cursor() as cur:
                cur.execute(sql)
                return int(cur.fetchone()[0])

        steps: dict[str, float] = {}
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            list(pool.map(run_model, models))
        t1 = time.monotonic()
        steps["models"] = t1 - t0
        # 3 workers, each with its own connection, taking the next test as they
        # free up (as dbt's thread pool does)
        pending = list(reversed(tests))
        lock = threading.Lock()

        def worker() -> int:
            failing = 0
            conn = ep.connect()
            try:
                for _ in range(len(tests)):
                    with lock:
                        if not pending:
                            break
                        sql = pending.pop()
                    failing += run_test(conn, sql)
            finally:
                conn.close()
            return failing

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            failures = sum(pool.map(lambda _: worker(), range(3)))
        steps["tests"] = time.monotonic() - t1
        if failures:
            raise BenchError(f"floor: tests report {failures} failing rows")
        return time.monotonic() - t0, steps, 0.0


def _node_file(root: Path, name: str) -> Path:
    found = [p for p in root.rglob(name) if "schema.yml" not in p.parts]
    if len(found) != 1:
        raise BenchError(f"expected one {name} under {root}, found {found}")
    return found[0]


# ====================================================================== orchestration
def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


@dataclass(frozen=True)
class Lane:
    """One adapter at one added round-trip time: contenders of its own (state dirs,
    workers, the floor's replay) on the adapter's staging tables."""

    label: str
    adapter: str
    rtt_ms: float


def lanes_of(args: argparse.Namespace) -> list[Lane]:
    """Every adapter at every ``--rtt-ms`` value; labelled by adapter alone when there is
    one value (``postgres``), else with the added round trip (``postgres 20ms``)."""
    rtts: list[float] = args.rtt_list
    return [
        Lane(adapter if len(rtts) == 1 else f"{adapter} {rtt:g}ms", adapter, rtt)
        for adapter in args.adapters
        for rtt in rtts
    ]


class SizeRun:
    """One data size: its bed (PostgreSQL, proxy, sshd), staging built, then rounds.

    ``run_size`` runs one size from start to end; ``--interleave-sizes`` keeps
    every size's bed up at once and alternates the sizes round by round, so
    each round's ratio between sizes compares cycles run under the same load.
    With several ``--rtt-ms`` values the lanes (adapter x added round trip) share
    one bed and alternate within each round too.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        size_rows: int,
        out: Callable[[str], None],
    ):
        from benchmarks._harness import Bed

        self.args = args
        self.out = out
        self.contenders = [c for c in args.contenders if c in ALL_CONTENDERS]
        self.lanes = lanes_of(args)
        self.bed = Bed(
            size_rows=size_rows,
            orders_per_minute=args.orders_per_minute,
            adapters=tuple(args.adapters),
            log=out,
            rtt_ms=max(args.rtt_list),
            sslmode=args.sslmode,
        )
        self.report: dict[str, Any] = {"size_rows": size_rows, "adapters": {}}
        #: per lane label
        self.runners: dict[str, Contenders] = {}
        self.samples: dict[str, list[Sample]] = {}
        #: newcache / news3: name -> (location, environment); made on entering unless
        #: set before (benchmarks.matrix shares its own with the 300-model project)
        self.caches: dict[str, tuple[str, dict[str, str]]] | None = None
        self._stack = contextlib.ExitStack()

    @property
    def tag(self) -> str:
        return f"{self.report.get('raw_rows', self.report['size_rows']) / 1e6:.0f}M"

    def __enter__(self) -> SizeRun:
        self.bed.__enter__()
        self._stack.callback(self.bed.__exit__, None, None, None)
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        bed, out = self.bed, self.out
        if self.caches is None:
            self.caches = {}
            if "newcache" in self.contenders:
                self.caches["local"] = (str(bed.workdir / "artifact-cache"), {})
            if "news3" in self.contenders:
                from benchmarks.artifact_cache import s3_location

                location, env = self._stack.enter_context(s3_location(True))
                assert location is not None
                self.caches["s3"] = (location, env)
        out(f"\n== size {self.report['size_rows']:,} raw rows: loading ...")
        bed.load_history()
        out(
            f"   loaded {bed.raw_total:,} raw rows "
            f"({', '.join(f'{k} {v:,}' for k, v in bed.raw_counts.items())}) "
            f"over {bed.history_minutes() / 1440:.1f} days in {bed.timings['load_s']:.1f}s; "
            f"index+cluster {bed.timings['index_cluster_s']:.1f}s"
        )
        self.report["raw_rows"] = bed.raw_total
        self.report["load_s"] = bed.timings["load_s"]
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_RUNNER_")}
        base_env["PYTHONPATH"] = str(REPO)
        base_env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
        built: set[str] = set()
        for lane in self.lanes:
            schema = "stg_pg" if lane.adapter == "postgres" else "stg_rs"
            workdir = (
                bed.workdir
                if len(self.lanes) == len(self.args.adapters)
                else (bed.workdir / f"lane_{lane.adapter}_{lane.rtt_ms:g}ms")
            )
            c = Contenders(
                bed,
                lane.adapter,
                schema,
                workdir,
                _free_port(),
                base_env,
                delayed=lane.rtt_ms > 0,
                caches=self.caches,
            )
            if lane.adapter not in built:
                t0 = time.monotonic()
                c.new(full_refresh=True)
                bed.index_staging(schema)
                out(
                    f"   [{lane.adapter}] staging built (full refresh + indexes) in "
                    f"{time.monotonic() - t0:.1f}s: {bed.staging_counts(schema)}"
                )
                built.add(lane.adapter)
            self.runners[lane.label] = c
            self.samples[lane.label] = []

    def __exit__(self, *exc: object) -> None:
        for c in self.runners.values():
            c.stop_worker()
        self._stack.close()

    def phases(self) -> list[list[str]]:
        """Phase 1: old/new/floor alternate. Phase 2 (if asked): the 7-day variant alone,
        afterwards, so the millions of rows each of its cycles deletes and re-inserts
        cannot bloat the tables under the 30-minute figures."""
        phases = [
            [n for n in self.contenders if n != "new7d"],
            [n for n in self.contenders if n == "new7d"],
        ]
        return [ph for ph in phases if ph]

    def warm_up(self, phase: list[str]) -> None:
        """Not measured: catch the staging tables up, warm caches and dbt's partial-parse
        files for every contender (and fill the artifact caches of newcache and news3)."""
        for lane in self.lanes:
            for name in phase:
                self.bed.append_batch()
                getattr(self.runners[lane.label], name)()

    def run_round(self, rnd: int, phase: list[str], label: str = "") -> None:
        for lane in self.lanes:
            for name in phase:
                batch = self.bed.append_batch()
                before = self.bed.activity()
                wall, steps, rss = getattr(self.runners[lane.label], name)()
                after = self.bed.activity()
                steps["statements"] = after[0] - before[0]
                steps["connections"] = after[1] - before[1]
                s = Sample(
                    name,
                    lane.label,
                    rnd,
                    wall,
                    steps,
                    rss or None,
                    sum(batch.values()),
                    os.getloadavg()[0],
                )
                self.samples[lane.label].append(s)
                self.out(
                    f"   [{lane.label}{label}] round {rnd} {name:<6} {wall:7.2f}s  "
                    + " ".join(f"{k}={v:.2f}" for k, v in steps.items())
                    + (f"  rss={rss:.0f}MB" if name.startswith("new") else "")
                    + f"  load1={s.load1:.1f}"
                )

    def finish(self) -> dict[str, Any]:
        differing: dict[str, dict[str, int]] = {}
        for lane in self.lanes:
            self.runners[lane.label].stop_worker()
            summary = summarize(self.samples[lane.label], self.contenders, self.args.rounds)
            if lane.adapter not in differing:
                differing[lane.adapter] = self.check_against_full_refresh(lane.label)
            summary["differing_rows"] = differing[lane.adapter]
            self.report["adapters"][lane.label] = summary
            print_adapter(self.out, lane.label, summary, self.contenders)
        self.report["raw_rows_end"] = self.bed.raw_total
        if self.args.latency:
            self.report["latency_ms"] = measure_latency(self.bed, self.args, self.out)
        return self.report

    def check_against_full_refresh(self, label: str) -> dict[str, int]:
        """Rows that differ between the staging tables every contender's cycles built
        incrementally and a full refresh of the same raw data (``<schema>_fr``), per table
        (both directions, duplicates counted: ``except all``). Prints the verdict.

        One untimed ``new`` cycle first: the other adapters' rounds appended batches after
        this adapter's last cycle, which its staging tables have not seen yet."""
        from benchmarks._harness import STAGING_INDEXES

        c = self.runners[label]
        c.new()
        fresh = dataclasses.replace(c, schema=f"{c.schema}_fr", workdir=c.workdir / "full_refresh")
        fresh.new(full_refresh=True)
        differing = {}
        for table in STAGING_INDEXES:
            a, b = f"{c.schema}.{table}", f"{fresh.schema}.{table}"
            rows = self.bed.sql(
                f"select (select count(*) from (select * from {a} except all select * from {b}) x)"
                f" + (select count(*) from (select * from {b} except all select * from {a}) y)"
            )
            differing[table] = int(rows[0][0])
        verdict = "yes" if not any(differing.values()) else f"NO, rows differing: {differing}"
        label = f"   [{c.adapter}] staging == full refresh after every contender's cycles"
        self.out(f"{label}: {verdict}")
        return differing


def run_size(
    args: argparse.Namespace, size_rows: int, out: Callable[[str], None]
) -> dict[str, Any]:
    with SizeRun(args, size_rows, out) as run:
        for phase in run.phases():
            run.warm_up(phase)
            for rnd in range(1, args.rounds + 1):
                run.run_round(rnd, phase)
        return run.finish()


def run_sizes_interleaved(
    args: argparse.Namespace, sizes: list[int], out: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Every size's bed at once; each round runs every size in turn (same load for all)."""
    with contextlib.ExitStack() as stack:
        runs = [stack.enter_context(SizeRun(args, size, out)) for size in sizes]
        out("\n== rounds, sizes interleaved")
        for phase in runs[0].phases():
            for run in runs:
                run.warm_up(phase)
            for rnd in range(1, args.rounds + 1):
                for run in runs:
                    run.run_round(rnd, phase, label=f" {run.tag}")
        reports = [run.finish() for run in runs]
        for rep, run in zip(reports, runs, strict=True):
            rep["samples"] = {
                adapter: [dataclasses.asdict(s) for s in samples]
                for adapter, samples in run.samples.items()
            }
        return reports


def print_interleaved_ratios(
    out: Callable[[str], None], reports: list[dict[str, Any]], adapters: list[str]
) -> dict[str, Any]:
    """Per round, each size's ``new`` cycle (and its tests step) over the first size's."""
    ratios: dict[str, Any] = {}
    out("\n== per-round ratios to the first size (sizes interleaved: same load per round)")
    for adapter in adapters:
        first = {s["round"]: s for s in reports[0]["samples"][adapter] if s["contender"] == "new"}
        for rep in reports[1:]:
            this = {s["round"]: s for s in rep["samples"][adapter] if s["contender"] == "new"}
            rounds = sorted(set(first) & set(this))
            key = f"{rep['raw_rows']:,}/{reports[0]['raw_rows']:,}"
            entry: dict[str, Any] = {}
            for what in ("cycle", "staging", "tests"):
                per_round = [
                    (this[r]["wall_s"] / first[r]["wall_s"])
                    if what == "cycle"
                    else this[r]["steps"][what] / first[r]["steps"][what]
                    for r in rounds
                ]
                entry[what] = {"median": median(per_round), "per_round": per_round}
                out(
                    f"   [{adapter}] {key} {what:<8} median {median(per_round):.2f}x   "
                    f"per round: {' '.join(f'{x:.2f}' for x in per_round)}"
                )
            ratios[f"{adapter} {key}"] = entry
    return ratios


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summarize(samples: list[Sample], contenders: list[str], rounds: int) -> dict[str, Any]:
    by: dict[str, list[Sample]] = {c: [s for s in samples if s.contender == c] for c in contenders}
    summary: dict[str, Any] = {
        "contenders": {},
        "ratios": {},
        "load1_median": median([s.load1 for s in samples]),
    }
    for c, ss in by.items():
        walls = [s.wall_s for s in ss]
        step_names = list(dict.fromkeys(k for s in ss for k in s.steps))
        summary["contenders"][c] = {
            "median_s": median(walls),
            "min_s": min(walls),
            "max_s": max(walls),
            "walls": walls,
            "steps": {k: median([s.steps.get(k, 0.0) for s in ss]) for k in step_names},
            "peak_rss_mb": max((s.peak_rss_mb or 0.0) for s in ss) or None,
            "batch_rows": median([s.batch_rows for s in ss]),
        }
    if "new7d" in by and "new" in by:  # different phases: no per-round pairing
        m = median([x.wall_s for x in by["new7d"]]) / median([x.wall_s for x in by["new"]])
        summary["ratios"]["new7d/new"] = {"per_round": [], "median": m}
    pairs = (
        ("old", "new"),
        ("new", "floor"),
        ("old", "warm"),
        ("warm", "floor"),
        ("dbtcli", "new"),
        ("dbtcli", "warm"),
        ("prefect", "new"),
        ("prefect", "warm"),
        ("warmnpc", "warm"),
        ("warmbuild", "warm"),
        ("warmlean", "warm"),
        ("warmbuild", "floor"),
        ("warmlean", "floor"),
        ("newnr", "floor"),
        ("warmnr", "floor"),
        ("newss", "floor"),
        ("warmss", "floor"),
        ("new", "newnr"),
        ("warm", "warmnr"),
        ("newss", "newnr"),
        ("warmss", "warmnr"),
        ("newcold", "new"),
        ("newcache", "new"),
        ("news3", "new"),
        ("newcold", "newcache"),
        ("newcold", "news3"),
        ("old", "newcache"),
        ("newcache", "floor"),
    )
    for a, b in pairs:
        if a in by and b in by:
            per_round = [x.wall_s / y.wall_s for x, y in zip(by[a], by[b], strict=True)]
            summary["ratios"][f"{a}/{b}"] = {"per_round": per_round, "median": median(per_round)}
    if "new" in by and "floor" in by:
        # the session alone (open + staging + tests + close): what a long-lived worker
        # that already imported dbt pays; excludes interpreter start and imports
        session = [sum(x.steps[k] for k in SESSION_STEPS) for x in by["new"]]
        summary["contenders"]["new"]["session_median_s"] = median(session)
        per_round = [x / y.wall_s for x, y in zip(session, by["floor"], strict=True)]
        summary["ratios"]["session/floor"] = {"per_round": per_round, "median": median(per_round)}
    return summary


def print_adapter(
    out: Callable[[str], None], adapter: str, s: dict[str, Any], contenders: list[str]
) -> None:
    out(
        f"\n-- {adapter}: cycle wall time, seconds (medians over rounds; "
        f"1-min load average during the rounds: median {s['load1_median']:.1f})"
    )
    out(f"   {'contender':<10}{'median':>9}{'min':>9}{'max':>9}  breakdown (medians)")
    for c in contenders:
        d = s["contenders"][c]
        steps = " ".join(f"{k}={v:.2f}" for k, v in d["steps"].items())
        rss = f"  peak RSS {d['peak_rss_mb']:.0f} MB" if d["peak_rss_mb"] else ""
        if "session_median_s" in d:
            rss += f"  (in-session {d['session_median_s']:.2f}s)"
        out(f"   {c:<10}{d['median_s']:>9.2f}{d['min_s']:>9.2f}{d['max_s']:>9.2f}  {steps}{rss}")
    for name, r in s["ratios"].items():
        rounds = " ".join(f"{x:.2f}" for x in r["per_round"]) or "(ratio of medians)"
        out(f"   ratio {name:<13} median {r['median']:.2f}x   per round: {rounds}")


# ---------------------------------------------------------------------- latency
def measure_latency(
    bed: Any, args: argparse.Namespace, out: Callable[[str], None]
) -> dict[str, Any]:
    """Per-query latency, reusing ``benchmarks/tunnel_latency.py`` (the tunnel engineer's)."""
    import psycopg2

    from benchmarks import tunnel_latency as tl
    from dbt_runner import SSHSettings
    from dbt_runner._ssh.tunnel import Tunnel

    ssh = SSHSettings(
        host=bed.sshd.host,
        port=bed.sshd.port,
        user=bed.sshd.user,
        private_key=bed.sshd.private_key_path,
        known_hosts=bed.sshd.known_hosts_path,
    )
    q, r = args.latency_queries, 5

    def pg_connect(host: str, port: int) -> Any:
        conn = psycopg2.connect(
            host=host,
            port=port,
            user=bed.user,
            password=bed.password,
            dbname=bed.dbname,
            connect_timeout=10,
        )
        conn.autocommit = True
        return conn

    def rs_connect(host: str, port: int) -> Any:
        import redshift_connector

        conn = redshift_connector.connect(
            host=host,
            port=port,
            user=bed.user,
            password=bed.password,
            database=bed.dbname,
            ssl=False,
            timeout=10,
        )
        conn.autocommit = True
        return conn

    clients = [("psycopg2", pg_connect, "postgres")]
    if "redshift" in args.adapters:
        clients.append(("redshift_connector", rs_connect, "redshift"))
    results: dict[str, Any] = {}
    run_rounds = getattr(tl, "run_rounds", None)
    if run_rounds is None:
        out("\n-- per-query latency: benchmarks/tunnel_latency.py has no run_rounds(); skipped")
        return results
    out(
        f"\n-- per-query latency of 'select 1', ms (median of {r} rounds x {q} queries, the "
        "connections taking turns; tunnel_latency.run_rounds)"
    )
    names = ("direct", "sshtunnel", "untuned", "ssh -L")
    out(f"   {'client':<20}" + "".join(f"{n:>11}" for n in names))
    for name, connect, adapter in clients:
        ep = bed.endpoint(adapter)
        port = _free_port()
        openssh = SshTunnel(bed, (ep.host, ep.port), port)
        with contextlib.ExitStack() as stack:
            tuned = stack.enter_context(Tunnel(ssh, ep.host, ep.port))
            untuned = stack.enter_context(Tunnel(ssh, ep.host, ep.port, tune_tcp=False))
            openssh.open()
            stack.callback(openssh.close)
            conns = {
                "direct": connect(ep.host, ep.port),
                "sshtunnel": connect(tuned.local_host, tuned.local_port),
                "untuned": connect(untuned.local_host, untuned.local_port),
                "ssh -L": connect("127.0.0.1", port),
            }
            for conn in conns.values():
                stack.callback(conn.close)
            per_round = run_rounds({k: c.cursor() for k, c in conns.items()}, q, r)
        results[name] = {k: statistics.median(v) for k, v in per_round.items()}
        out(f"   {name:<20}" + "".join(f"{results[name][n]:>11.3f}" for n in names))
    out(
        "   sshtunnel = dbt_runner's Tunnel (new); untuned = Tunnel(tune_tcp=False); "
        "ssh -L = OpenSSH client (old)"
    )
    return results


# ---------------------------------------------------------------------- main
def machine() -> str:
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pg = "?"
    with contextlib.suppress(Exception):
        from testbed.postgres import postgres_bin_dir

        pg = subprocess.run(
            [str(postgres_bin_dir() / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    import importlib.metadata as md

    vers = " ".join(
        f"{p} {md.version(p)}" for p in ("dbt-core", "dbt-postgres", "dbt-redshift") if _has(p)
    )
    return (
        f"{os.cpu_count()} cpu ({cpu}), {mem_kb / 1048576:.1f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}, {pg}, {vers}"
    )


def _has(pkg: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(pkg)
        return True
    except md.PackageNotFoundError:
        return False


def print_scaling(
    out: Callable[[str], None], reports: list[dict[str, Any]], adapters: list[str]
) -> None:
    """Per size: new (and its staging/tests steps), floor, new7d; new relative to the first."""
    out("\n== scaling (medians, seconds; 'x first' = new relative to the first size)")
    out(
        f"   {'adapter':<9}{'raw rows':>12}{'new':>8}{'staging':>9}{'tests':>8}"
        f"{'floor':>8}{'fl.models':>10}{'fl.tests':>9}{'new7d':>8}{'x first':>9}"
    )
    for adapter in adapters:
        base = reports[0]["adapters"][adapter]["contenders"]["new"]["median_s"]
        for rep in reports:
            cs = rep["adapters"][adapter]["contenders"]
            new = cs["new"]
            floor = cs.get("floor")
            n7 = cs.get("new7d")

            def cell(value: float | None, width: int) -> str:
                return f"{value:>{width}.2f}" if value is not None else f"{'-':>{width}}"

            out(
                f"   {adapter:<9}{rep['raw_rows']:>12,}{cell(new['median_s'], 8)}"
                f"{cell(new['steps'].get('staging'), 9)}{cell(new['steps'].get('tests'), 8)}"
                f"{cell(floor['median_s'] if floor else None, 8)}"
                f"{cell(floor['steps'].get('models') if floor else None, 10)}"
                f"{cell(floor['steps'].get('tests') if floor else None, 9)}"
                f"{cell(n7['median_s'] if n7 else None, 8)}"
                f"{new['median_s'] / base:>8.2f}x"
            )


def _ratio_cell(ratios: dict[str, Any], key: str) -> str:
    return f"{ratios[key]['median']:.2f}x" if key in ratios else "-"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from benchmarks._harness import ADAPTERS, DEFAULT_ORDERS_PER_MINUTE

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cycle", description=__doc__.splitlines()[0]
    )
    p.add_argument("--size", default="2m", help="raw rows in all (2m, 500k, 15m, tiny)")
    p.add_argument(
        "--sizes", default=None, help="comma list: one full run per size, then a scaling table"
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--adapters", default=",".join(ADAPTERS))
    p.add_argument(
        "--contenders",
        default="old,dbtcli,new,warm,floor",
        help=f"from {','.join(ALL_CONTENDERS)}",
    )
    p.add_argument(
        "--orders-per-minute",
        type=int,
        default=None,
        help=f"order rate (default {DEFAULT_ORDERS_PER_MINUTE}; 20 for --size tiny)",
    )
    p.add_argument(
        "--rtt-ms",
        default="0",
        help="latency mode: add this round-trip time between bastion and warehouse "
        "(a delaying proxy on loopback; the floor pays it too); a comma list (0,20) runs "
        "each adapter as one lane per value, the lanes alternating within each round",
    )
    p.add_argument(
        "--sslmode",
        default="disable",
        choices=("disable", "require"),
        help="sslmode of dbt_runner's postgres sessions (new, warm, ...): require = TLS, as "
        "production's default (every connection open pays its handshake); the Redshift "
        "stand-in has no TLS",
    )
    p.add_argument("--no-latency", dest="latency", action="store_false")
    p.add_argument("--latency-queries", type=int, default=100)
    p.add_argument("--json", type=Path, default=None, help="also write every figure here")
    p.add_argument(
        "--interleave-sizes",
        action="store_true",
        help="with --sizes: all beds up at once, sizes alternating round by round, and "
        "per-round ratios between sizes (robust to a machine whose load drifts)",
    )
    a = p.parse_args(argv)
    a.adapters = [x for x in a.adapters.split(",") if x]
    a.contenders = [x for x in a.contenders.split(",") if x]
    bad = [c for c in a.contenders if c not in ALL_CONTENDERS] + [
        x for x in a.adapters if x not in ADAPTERS
    ]
    if bad or not a.contenders or not a.adapters:
        p.error(f"unknown contender/adapter: {bad}")
    if "news3" in a.contenders and not _has("moto"):
        p.error("news3 needs a moto server: pip install 'moto[server]' (the test extra)")
    if "floor" in a.contenders and "new" not in a.contenders:
        p.error("floor replays what 'new' executed: include 'new'")
    if "prefect" in a.contenders and not PREFECT_PYTHON.exists():
        print(
            f"skipping the prefect contender: no prefect-dbt interpreter at {PREFECT_PYTHON} "
            "(python3 -m venv .cache/prefect-venv && .cache/prefect-venv/bin/pip install "
            "prefect-dbt 'dbt-core>=1.10,<1.12' dbt-postgres; or set "
            "BENCH_PREFECT_PYTHON)",
            file=sys.stderr,
        )
        a.contenders.remove("prefect")
    try:
        a.rtt_list = list(dict.fromkeys(float(x) for x in str(a.rtt_ms).split(",") if x))
    except ValueError:
        p.error("--rtt-ms takes numbers: 20, or 0,20")
    if not a.rtt_list or not all(0 <= x <= 1000 for x in a.rtt_list):
        p.error("--rtt-ms must be 0..1000")
    if len([x for x in a.rtt_list if x]) > 1:
        p.error("--rtt-ms: one added round trip at most (with or without 0)")
    a.rtt_ms = max(a.rtt_list)
    if not 1 <= a.rounds <= 50:
        p.error("--rounds must be 1..50")
    a.size_list = (a.sizes or a.size).split(",")
    if a.orders_per_minute is None:
        a.orders_per_minute = 20 if a.size_list == ["tiny"] else DEFAULT_ORDERS_PER_MINUTE
    return a


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child_main(argv[1:])
    from benchmarks._harness import exit_on_sigterm, parse_size

    exit_on_sigterm()

    args = parse_args(argv)

    def out(line: str) -> None:
        print(line, flush=True)

    started = dt.datetime.now(dt.timezone.utc)
    out(f"benchmarks.cycle  {started:%Y-%m-%d %H:%M} UTC  argv: {' '.join(argv) or '(defaults)'}")
    out(f"machine: {machine()}")
    if args.rtt_ms:
        lanes = " (and lanes without it)" if 0 in args.rtt_list else ""
        out(
            f"latency mode: {args.rtt_ms:g} ms round trip added between bastion and "
            f"warehouse{lanes}"
        )
    if args.sslmode != "disable":
        out(f"postgres sessions with sslmode={args.sslmode} (TLS)")
    out(
        f"contenders {args.contenders}, adapters {args.adapters}, {args.rounds} rounds, "
        f"{args.orders_per_minute} orders/min, 15-min batch appended before every cycle"
    )
    reports = []
    labels = [lane.label for lane in lanes_of(args)]
    interleaved: dict[str, Any] = {}
    if args.interleave_sizes and len(args.size_list) > 1:
        reports = run_sizes_interleaved(args, [parse_size(s) for s in args.size_list], out)
        if "new" in args.contenders:
            interleaved = print_interleaved_ratios(out, reports, labels)
    else:
        for size in args.size_list:
            reports.append(run_size(args, parse_size(size), out))
    out("\n== summary (medians, seconds; ratios are medians of per-round ratios)")
    cols = [c for c in ALL_CONTENDERS if c in args.contenders]
    ratio_cols = (
        ("old/new", 9),
        ("new/floor", 10),
        ("old/warm", 9),
        ("warm/floor", 11),
        ("dbtcli/new", 11),
        ("dbtcli/warm", 12),
        ("session/floor", 14),
        ("new7d/new", 10),
    )
    width = max(9, *(len(label) + 1 for label in labels))
    out(
        f"   {'raw rows':>12} {'adapter':<{width}}"
        + "".join(f"{c:>10}" for c in cols)
        + "".join(f"{k:>{w}}" for k, w in ratio_cols)
        + f"{'RSS MB':>8}"
    )
    for rep in reports:
        for adapter, s in rep["adapters"].items():
            cells = "".join(f"{s['contenders'][c]['median_s']:>10.2f}" for c in cols)
            cells += "".join(f"{_ratio_cell(s['ratios'], k):>{w}}" for k, w in ratio_cols)
            rss = s["contenders"].get("new", {}).get("peak_rss_mb")
            rss_cell = f"{rss:.0f}" if rss else "-"
            out(f"   {rep['raw_rows']:>12,} {adapter:<{width}}{cells}{rss_cell:>8}")
    if "new" in args.contenders and len(reports) > 1:
        print_scaling(out, reports, labels)
    out(f"\ndone in {(dt.datetime.now(dt.timezone.utc) - started).total_seconds():.0f}s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "argv": argv,
                    "started": started.isoformat(),
                    "reports": reports,
                    "interleaved_ratios": interleaved,
                },
                indent=2,
                default=str,
            )
        )
    wrong = [
        f"{rep['raw_rows']:,} rows, {adapter}"
        for rep in reports
        for adapter, summary in rep["adapters"].items()
        if any(summary.get("differing_rows", {}).values())
    ]
    if wrong:
        out(f"\nstaging differs from a full refresh: {'; '.join(wrong)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
