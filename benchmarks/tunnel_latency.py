"""Per-query latency of ``select 1``: directly vs through the SSH tunnel.

Not a test: a measurement to run by hand (as root or as a user that can start
sshd and PostgreSQL, see ``testbed/``)::

    python benchmarks/tunnel_latency.py [--queries 200] [--rounds 5]

Starts a throwaway PostgreSQL (SSL on), the Redshift stand-in proxy (TLS, so
redshift_connector connects as it does to Redshift) and an OpenSSH bastion, then prints the
median per-query latency for psycopg2 and redshift_connector: direct, through
the tunnel with its TCP tuning (TCP_NODELAY on both forwarded legs, TCP_QUICKACK
on Linux), and through a tunnel without it (``Tunnel(..., tune_tcp=False)``).
The three connections take turns in each round, so machine load hits them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sshtunnel

from dbt_runner import SSHSettings
from dbt_runner._ssh.forwarder import Forwarder
from dbt_runner._ssh.tunnel import Tunnel
from testbed.postgres import PostgresServer
from testbed.sshd import SshdServer
from testbed.tls import test_pki

try:
    from testbed.redshift_proxy import RedshiftProxy
except ImportError:  # the stand-in is optional: psycopg2 only then
    RedshiftProxy = None  # type: ignore[assignment,misc]

Connect = Callable[[str, int], Any]


def run_rounds(cursors: dict[str, Any], queries: int, rounds: int) -> dict[str, list[float]]:
    """ms per ``select 1`` for each cursor, per round; the cursors take turns within a round
    so that a change of machine load hits all of them alike."""
    for cur in cursors.values():  # warm-up
        for _ in range(20):
            cur.execute("select 1")
            cur.fetchall()
    results: dict[str, list[float]] = {name: [] for name in cursors}
    for _ in range(rounds):
        for name, cur in cursors.items():
            start = time.perf_counter()
            for _ in range(queries):
                cur.execute("select 1")
                cur.fetchall()
            results[name].append((time.perf_counter() - start) / queries * 1000)
    return results


@contextlib.contextmanager
def _old_handler_tunnel(ssh: SSHSettings, host: str, port: int) -> Iterator[Tunnel]:
    """A tuned tunnel with sshtunnel's own select()-on-fileno() handler (before issue 11):
    the per-query baseline of the fix, measured in the same run. Not for real use."""
    ours = Forwarder._make_ssh_forward_handler_class
    Forwarder._make_ssh_forward_handler_class = (  # type: ignore[method-assign]
        sshtunnel.SSHTunnelForwarder._make_ssh_forward_handler_class
    )
    try:
        tunnel = Tunnel(ssh, host, port)
        tunnel.open()  # the handler class is made here
    finally:
        Forwarder._make_ssh_forward_handler_class = ours  # type: ignore[method-assign]
    try:
        yield tunnel
    finally:
        tunnel.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import psycopg2

    os.environ["SSL_CERT_FILE"] = str(test_pki().bundle_path)  # trust the stand-in's test CA
    with contextlib.ExitStack() as stack:
        pg = PostgresServer()  # ssl = on: production-shaped
        pg.start()
        stack.callback(pg.close)
        sshd = SshdServer()
        sshd.start()
        stack.callback(sshd.close)
        ssh = SSHSettings(
            host=sshd.host,
            port=sshd.port,
            user=sshd.user,
            private_key=sshd.private_key_path,
            known_hosts=sshd.known_hosts_path,
        )
        user, password = pg.superuser, pg.superuser_password

        def pg_connect(host: str, port: int) -> Any:
            conn = psycopg2.connect(
                host=host,
                port=port,
                user=user,
                password=password,
                dbname="postgres",
                sslmode="require",
            )
            conn.autocommit = True
            return conn

        clients: list[tuple[str, Connect, tuple[str, int]]] = [
            ("psycopg2", pg_connect, (pg.host, pg.port))
        ]
        if RedshiftProxy is not None:
            import redshift_connector

            proxy = RedshiftProxy.for_server(pg)
            stack.callback(proxy.close)

            def rs_connect(host: str, port: int) -> Any:
                conn = redshift_connector.connect(
                    host=host,
                    port=port,
                    user=user,
                    password=password,
                    database="postgres",
                    ssl=True,  # verify-ca against the stand-in's test CA, as on Redshift
                    timeout=10,
                )
                conn.autocommit = True
                return conn

            clients.append(("redshift_connector", rs_connect, (proxy.host, proxy.port)))
        else:
            print("testbed/redshift_proxy.py not found: psycopg2 only")

        q, r = args.queries, args.rounds
        print(f"ms per 'select 1' on loopback: median of {r} rounds x {q} queries [min-max]")
        print(
            f"{'client':<19}{'direct':>20}{'tunnel':>20}{'untuned tunnel':>20}"
            f"{'sshtunnel handler':>20}{'ratio':>7}{'vs old':>7}"
        )
        for name, connect, (host, port) in clients:
            with (
                Tunnel(ssh, host, port) as tuned,
                Tunnel(ssh, host, port, tune_tcp=False) as untuned,
                _old_handler_tunnel(ssh, host, port) as old,
            ):
                conns = {
                    "direct": connect(host, port),
                    "tunnel": connect(tuned.local_host, tuned.local_port),
                    "untuned": connect(untuned.local_host, untuned.local_port),
                    "old": connect(old.local_host, old.local_port),
                }
                try:
                    results = run_rounds({k: c.cursor() for k, c in conns.items()}, q, r)
                finally:
                    for conn in conns.values():
                        conn.close()
            medians = {k: statistics.median(v) for k, v in results.items()}
            cells = "".join(
                f"{f'{medians[k]:.3f} [{min(v):.2f}-{max(v):.2f}]':>20}" for k, v in results.items()
            )
            print(
                f"{name:<19}{cells}{medians['tunnel'] / medians['direct']:>6.1f}x"
                f"{medians['tunnel'] / medians['old']:>6.2f}x"
            )
        print("ratio = tunnel (tuned) / direct; vs old = tunnel / tunnel with sshtunnel's handler")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
