"""Tunnel soak: drops per 100 fresh-process cycles, production-shaped (issue 11).

Not a test: a long measurement to run by hand (as root or a user that can start
sshd and PostgreSQL, see ``testbed/``)::

    python benchmarks/tunnel_soak.py [--cycles 200] [--busy 2] [--max-minutes 90]

Starts PostgreSQL with SSL on, the Redshift stand-in (TLS, CA-verified), an
OpenSSH bastion and ``--busy`` busy-loop processes, loads an hour of synthetic
raw data, then runs ``dbt-runner cycle`` in a new process again and again,
alternating dbt-postgres (``sslmode=require``) and dbt-redshift (default
``verify-ca``), each through its own tunnel. Prints one line per cycle and the
drops / re-opens / failures per 100 cycles at the end. The suite's
``tests/integration/test_tunnel_soak.py`` runs 30 such cycles.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbt_runner.synthetic import create_raw_tables, load_batch
from testbed.cpu_load import cpu_load
from testbed.postgres import PostgresServer
from testbed.redshift_proxy import RedshiftProxy, install_redshift_stubs
from testbed.soak import CycleOutcome, cycle_env, run_cycles
from testbed.sshd import SshdServer
from testbed.tls import test_pki

T0 = 1_700_000_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes (CPU load)")
    parser.add_argument("--max-minutes", type=float, default=90.0)
    args = parser.parse_args()
    deadline_s = args.max_minutes * 60

    with contextlib.ExitStack() as stack:
        pg = PostgresServer()  # ssl = on
        pg.start()
        stack.callback(pg.close)
        proxy = RedshiftProxy.for_server(pg)  # TLS to its clients
        stack.callback(proxy.close)
        sshd = SshdServer()
        sshd.start()
        stack.callback(sshd.close)
        os.environ["SSL_CERT_FILE"] = str(test_pki().bundle_path)  # trust the stand-in's CA
        state = Path(tempfile.mkdtemp(prefix="dbr-soak-"))
        ssh = {
            "host": sshd.host,
            "port": sshd.port,
            "user": sshd.user,
            "private_key": sshd.private_key_path,
            "known_hosts": sshd.known_hosts_path,
        }
        envs = {}
        for adapter, port, sslmode in (
            ("postgres", pg.port, "require"),
            ("redshift", proxy.port, "verify-ca"),
        ):
            dbname, password = f"soak_{adapter}", "soak-password-" + adapter
            pg.create_role(dbname, password)
            pg.create_database(dbname, owner=dbname)
            if adapter == "redshift":
                install_redshift_stubs(pg, dbname)
            conn = pg.connect(dbname=dbname, user=dbname, password=password)
            create_raw_tables(conn, "postgres")
            load_batch(conn, "postgres", T0, T0 + 3600, orders_per_minute=6)
            conn.close()
            warehouse = {
                "type": adapter,
                "host": "127.0.0.1",
                "port": port,
                "user": dbname,
                "password": password,
                "dbname": dbname,
                "sslmode": sslmode,
                "schema": "stg",
            }
            envs[adapter] = cycle_env(warehouse, ssh, state / adapter)

        outcomes: list[CycleOutcome] = []
        with cpu_load(processes=args.busy, max_s=deadline_s + 60):
            for i in range(args.cycles):
                adapter = "postgres" if i % 2 == 0 else "redshift"
                found = list(run_cycles(envs[adapter], cycles=1, deadline_s=deadline_s))
                if not found or sum(o.seconds for o in outcomes) > deadline_s:
                    print("time is up")
                    break
                outcome = found[0]
                outcomes.append(outcome)
                flags = [
                    f for f, on in (("DROP", outcome.dropped), ("REOPEN", outcome.reopened)) if on
                ]
                print(
                    f"{i + 1:4d} {adapter:<8} exit={outcome.exit_code} "
                    f"{outcome.seconds:5.1f}s {' '.join(flags)}",
                    flush=True,
                )
                if not outcome.clean:
                    print(outcome.stderr_tail[-800:], flush=True)

    n = len(outcomes)
    if not n:
        return 1
    per100 = 100 / n
    drops = sum(o.dropped for o in outcomes)
    reopens = sum(o.reopened for o in outcomes)
    failed = sum(o.exit_code != 0 for o in outcomes)
    median_s = statistics.median(o.seconds for o in outcomes)
    print(
        f"{n} cycles (busy loops: {args.busy}), median {median_s:.1f}s: "
        f"drops {drops * per100:.1f} / 100 cycles, re-opens {reopens * per100:.1f} / 100, "
        f"non-zero exits {failed * per100:.1f} / 100"
    )
    return 0 if drops == reopens == failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
