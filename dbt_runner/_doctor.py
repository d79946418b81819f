"""``dbt-runner doctor``: every layer between dbt and the warehouse, N connections at once.

What a user runs when parallel runs fail (the ``threads: 3`` story, see
``docs/troubleshooting.md``). :func:`run_doctor` opens the session's tunnel
(the same :class:`~dbt_runner.Tunnel` a :class:`~dbt_runner.DbtSession`
opens), then ``N`` warehouse connections **at the same time** (default
``threads + 1``: one per dbt thread plus dbt's own), runs ``select 1`` on
each, holds them all open together for ``hold_s`` seconds and queries each
again. Each layer is reported with what succeeded and, where not, the exact
error:

============  ==============================================================
layer         what is checked
============  ==============================================================
iam           Redshift IAM (``WAREHOUSE__METHOD=iam``): where the AWS
              credentials come from (environment, profile, role), whose
              they are (``sts:GetCallerIdentity``: the ARN, never a key),
              and that the temporary login is issued (``GetClusterCredentials``
              / Serverless ``GetCredentials``: its user and expiry, never the
              password); the connections below log in with it
ssh_session   TCP to the bastion, SSH handshake, host key, key accepted
channel_open  the bastion opens forwarded connections to the warehouse
tcp           each connection reaches a PostgreSQL-protocol server
              (an ``SSLRequest`` the server must answer; no login yet)
auth          each connection logs in with the warehouse's driver
              (psycopg2 for postgres, redshift_connector for redshift,
              as dbt does) — connection limits refuse logins here
query         ``select 1`` on each, and again after holding them together
parse         the project parses (``dbt parse`` in a session, packages as
              ``DBT_RUNNER_INSTALL_DEPS`` says), else dbt's own message
============  ==============================================================

With ``DBT_RUNNER_PROFILES_DIR`` the connections are the ones of the chosen
target of the user's own ``profiles.yml`` (``DBT_RUNNER_TARGET``, else the
profile's default), its values rendered as dbt renders them (in memory only).

It also reads the settings that matter: threads, timeouts, retry policy, and
from the server the role's connection limit, its open sessions,
``max_connections``, ``lock_timeout`` and ``statement_timeout`` where they
can be read. Secrets never appear in the report.

>>> from dbt_runner import Settings
>>> report = run_doctor(Settings())                 # doctest: +SKIP
>>> print(report.render())                          # doctest: +SKIP
>>> report.ok, report.to_dict()["layers"][0]        # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ._aws import AUTH_HINT
from ._classify import diagnose, diagnose_message
from ._exceptions import ConfigurationError, CredentialsError, ErrorKind, TunnelError
from ._settings import ENV_PREFIX, Settings, SSHSettings
from ._warehouse import as_warehouse as _as_warehouse
from ._warehouse import connect as connect_warehouse
from ._warehouse import routed as _warehouse_routed

__all__ = ["LAYERS", "ConnectionCheck", "DoctorReport", "LayerCheck", "run_doctor"]

log = logging.getLogger("dbt_runner.doctor")

#: The layers, outermost first.
LAYERS: tuple[str, ...] = ("iam", "ssh_session", "channel_open", "tcp", "auth", "query", "parse")

Status = Literal["ok", "failed", "skipped"]

#: PostgreSQL's SSLRequest code: every PostgreSQL/Redshift server answers it with one byte.
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
#: Extra seconds the connections get beyond their own timeouts before they count as hung.
_GRACE_S = 5.0


# ------------------------------------------------------------------------------ report
@dataclass(frozen=True)
class LayerCheck:
    """The verdict on one layer: ``ok``, ``failed`` or ``skipped`` (not reached / not used)."""

    layer: str
    status: Status
    detail: str
    #: the exact error messages seen at this layer, each once, in order
    errors: tuple[str, ...] = ()
    kind: ErrorKind | None = None
    elapsed_s: float | None = None

    @property
    def failed(self) -> bool:
        """True when this layer failed."""
        return self.status == "failed"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "layer": self.layer,
            "status": self.status,
            "detail": self.detail,
            "errors": list(self.errors),
            "kind": self.kind.value if self.kind else None,
            "elapsed_s": self.elapsed_s,
        }


@dataclass(frozen=True)
class ConnectionCheck:
    """What happened to one of the N concurrent connections."""

    number: int
    #: the last layer this connection passed: "" (none), "tcp", "auth", "query" or "held"
    reached: str
    failed_layer: str | None = None
    error: str | None = None
    kind: ErrorKind | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the connection logged in, answered, and survived being held."""
        return self.reached == "held"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "number": self.number,
            "reached": self.reached,
            "failed_layer": self.failed_layer,
            "error": self.error,
            "kind": self.kind.value if self.kind else None,
            "elapsed_s": self.elapsed_s,
        }


@dataclass(frozen=True)
class DoctorReport:
    """The doctor's findings: per layer, per connection, the settings that matter, hints.

    >>> report = DoctorReport(target="duckdb x.duckdb", connections_requested=1,
    ...     hold_s=0.0, layers=(LayerCheck("query", "ok", "select 1 answered"),))
    >>> report.ok, report.to_dict()["layers"][0]["status"]
    (True, 'ok')
    """

    target: str
    connections_requested: int
    hold_s: float
    layers: tuple[LayerCheck, ...]
    connections: tuple[ConnectionCheck, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    hints: tuple[str, ...] = ()
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no layer failed."""
        return not any(layer.failed for layer in self.layers)

    def layer(self, name: str) -> LayerCheck:
        """The check of layer ``name`` (one of :data:`LAYERS`)."""
        for check in self.layers:
            if check.layer == name:
                return check
        raise KeyError(name)

    @property
    def failed_kinds(self) -> tuple[ErrorKind, ...]:
        """The error kinds of the failed layers, outermost first."""
        return tuple(x.kind for x in self.layers if x.failed and x.kind is not None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (``dbt-runner doctor --json``)."""
        return {
            "ok": self.ok,
            "target": self.target,
            "connections_requested": self.connections_requested,
            "hold_s": self.hold_s,
            "elapsed_s": self.elapsed_s,
            "layers": [x.to_dict() for x in self.layers],
            "connections": [c.to_dict() for c in self.connections],
            "settings": self.settings,
            "hints": list(self.hints),
        }

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), **kwargs)

    def render(self) -> str:
        """The human-readable report ``dbt-runner doctor`` prints."""
        lines = [
            f"dbt-runner doctor: {self.target}",
            f"{self.connections_requested} connection(s) at once, held together "
            f"{self.hold_s:g}s; {'all layers OK' if self.ok else 'FAILED'} "
            f"({self.elapsed_s:.1f}s)",
            "",
        ]
        for check in self.layers:
            mark = {"ok": "OK", "failed": "FAILED", "skipped": "skipped"}[check.status]
            kind = f" [{check.kind.value}]" if check.failed and check.kind else ""
            lines.append(f"  {check.layer:<13} {mark:<8}{check.detail}{kind}")
            for error in check.errors:
                first, *rest = error.splitlines() or [""]
                lines.append(f"  {'':<13} {'':<8}  {first}")
                lines.extend(
                    f"  {'':<13} {'':<8}    {line.strip()}" for line in rest if line.strip()
                )
        lines += ["", "settings that matter:"]
        lines += [f"  {name:<38} {_show(value)}" for name, value in _flatten(self.settings)]
        if self.hints:
            lines += ["", "what to do:"]
            lines += [f"  - {hint}" for hint in self.hints]
        return "\n".join(lines)


def _flatten(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _show(value: Any) -> str:
    return "(not readable)" if value is None else str(value)


# ------------------------------------------------------------------------ connections
def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _tcp_probe(host: str, port: int, timeout: float, tunnelled: bool) -> str:
    """Reach the server and have it answer an SSLRequest (no login); its answer as text."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(_SSL_REQUEST)
        answer = sock.recv(64)  # a PostgreSQL server sends exactly one byte, then waits
    if answer in (b"S", b"N"):
        return "TLS offered" if answer == b"S" else "no TLS"
    if not answer:
        where = (
            "the tunnel closed it: the bastion could not open the forwarded connection, "
            "or the warehouse closed it"
            if tunnelled
            else "the server closed it"
        )
        raise ConnectionError(f"connection closed before the server answered ({where})")
    raise ConnectionError(
        f"unexpected answer {answer[:24]!r} to an SSLRequest: is {host}:{port} a PostgreSQL or "
        "Redshift endpoint?"
    )


def _scalar(conn: Any, sql: str) -> Any:
    cursor = conn.cursor()
    try:
        cursor.execute(sql)
        row = cursor.fetchone()
    finally:
        cursor.close()
    return row[0] if row else None


class _Probe(threading.Thread):
    """One of the N connections: tcp, auth, query; then hold until released; query again."""

    def __init__(
        self,
        number: int,
        settings: Settings,
        host: str,
        port: int,
        tunnelled: bool,
        start: threading.Event,
        release: threading.Event,
        timeout_s: float,
    ) -> None:
        super().__init__(name=f"dbt_runner-doctor-{number}", daemon=True)
        self.number = number
        self._settings = settings
        self._host, self._port = host, port
        self._tunnelled = tunnelled
        self._start = start
        self._release = release
        self._timeout_s = timeout_s
        self.stage = "tcp"  # the layer being tried right now
        self.reached = ""
        self.error: str | None = None
        self.kind: ErrorKind | None = None
        self.conn: Any = None
        self.ready = threading.Event()  # set once logged in and queried, or failed
        self.t0 = time.monotonic()
        self.elapsed_s = 0.0

    def run(self) -> None:
        t0 = self.t0 = time.monotonic()
        try:
            self._start.wait(self._timeout_s)
            _tcp_probe(
                self._host, self._port, self._settings.warehouse.connect_timeout_s, self._tunnelled
            )
            self.reached, self.stage = "tcp", "auth"
            # by the warehouse's name (TLS verifies it), through the route when tunnelled
            self.conn = connect_warehouse(self._settings)
            self.reached, self.stage = "auth", "query"
            _scalar(self.conn, "select 1")
            self.reached = "query"
        except Exception as exc:
            self._fail(exc)
        finally:
            self.elapsed_s = round(time.monotonic() - t0, 3)
            self.ready.set()
        if self.error is not None:
            self.close()
            return
        self._release.wait(self._timeout_s)
        try:
            _scalar(self.conn, "select 1")
            self.reached = "held"
        except Exception as exc:
            self._fail(exc, prefix="after being held open together with the others: ")
        finally:
            self.elapsed_s = round(time.monotonic() - t0, 3)
            self.close()

    def _fail(self, exc: BaseException, prefix: str = "") -> None:
        self.error = prefix + _message(exc)
        self.kind = _kind_of(exc)

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing to release
                log.debug("closing connection %d", self.number, exc_info=True)

    def check(self) -> ConnectionCheck:
        if self.error is None and self.reached != "held":  # still stuck somewhere
            waited = time.monotonic() - self.t0
            return ConnectionCheck(
                self.number,
                self.reached,
                self.stage,
                f"no answer after {waited:.1f}s (stuck at the {self.stage} layer: a stalled "
                "network, bastion or server)",
                ErrorKind.TIMEOUT,
                round(waited, 3),
            )
        return ConnectionCheck(
            self.number,
            self.reached,
            self.stage if self.error else None,
            self.error,
            self.kind,
            self.elapsed_s,
        )


def _kind_of(exc: BaseException) -> ErrorKind:
    """A probe's failure: the one diagnosis, with ``connection`` when nothing else is known
    (a probe runs no SQL of a model: an unknown driver error is the connection's)."""
    return diagnose(exc, default=ErrorKind.CONNECTION).kind


def _is_channel_failure(exc: TunnelError) -> bool:
    """The SSH session was up; the bastion could not open a channel to the warehouse."""
    return exc.stage == "forward"


def _host_key_check(settings: Settings) -> str:
    ssh = settings.ssh
    if ssh.insecure_skip_host_key_check:
        return "DISABLED (SSH__INSECURE_SKIP_HOST_KEY_CHECK)"
    how = []
    if ssh.known_hosts is not None:
        how.append(f"known_hosts {ssh.known_hosts}")
    if ssh.host_key:
        how.append("pinned SSH__HOST_KEY")
    return " + ".join(how)


def _open_tunnel(settings: Settings) -> tuple[Any, LayerCheck, LayerCheck]:
    """Open the session's tunnel: (tunnel or None, ssh_session check, channel_open check)."""
    from ._warehouse import tunnel as warehouse_tunnel

    ssh, wh = settings.ssh, settings.warehouse
    assert wh.host is not None and wh.effective_port is not None
    bastion = f"{ssh.user}@{ssh.host}:{ssh.port}"
    remote_host, remote_port = ssh.remote_end(wh.host, wh.effective_port)
    remote = f"{remote_host}:{remote_port}"
    tunnel = warehouse_tunnel(settings)
    t0 = time.monotonic()
    try:
        tunnel.open()
    except TunnelError as exc:
        elapsed = round(time.monotonic() - t0, 3)
        tunnel.close()
        if _is_channel_failure(exc):
            return (
                None,
                LayerCheck(
                    "ssh_session",
                    "ok",
                    f"{bastion}: connected, host key verified ({_host_key_check(settings)}), "
                    "key accepted",
                    elapsed_s=elapsed,
                ),
                LayerCheck(
                    "channel_open",
                    "failed",
                    f"the bastion could not open a connection to {remote}",
                    (_message(exc),),
                    ErrorKind.TUNNEL,
                    elapsed,
                ),
            )
        kind = exc.kind  # auth for a host key or SSH key refused (exit 2), else tunnel
        return (
            None,
            LayerCheck(
                "ssh_session",
                "failed",
                f"could not open the SSH session to {bastion}",
                (_message(exc),),
                kind,
                elapsed,
            ),
            LayerCheck("channel_open", "skipped", "not reached (no SSH session)"),
        )
    elapsed = round(time.monotonic() - t0, 3)
    return (
        tunnel,
        LayerCheck(
            "ssh_session",
            "ok",
            f"{bastion}: connected, host key verified ({_host_key_check(settings)}), key accepted",
            elapsed_s=elapsed,
        ),
        LayerCheck(
            "channel_open",
            "ok",
            f"the bastion forwards {tunnel.local_host}:{tunnel.local_port} -> {remote}",
            elapsed_s=elapsed,
        ),
    )


# ------------------------------------------------------------------- server settings
_ROLE_QUERIES: dict[str, tuple[str, ...]] = {
    "role_connection_limit": (
        "select rolconnlimit from pg_catalog.pg_roles where rolname = current_user",
        "select useconnlimit from pg_catalog.pg_user_info where usename = current_user",
    ),
    "role_sessions_now": (
        "select count(*) from pg_catalog.pg_stat_activity where usename = current_user",
        "select count(*) from stv_sessions where user_name = current_user",
    ),
    "max_connections": ("show max_connections",),
    "superuser_reserved_connections": ("show superuser_reserved_connections",),
    "lock_timeout": ("show lock_timeout",),
    "statement_timeout": ("show statement_timeout",),
}


def _server_settings(conn: Any) -> dict[str, Any]:
    """What the server says about limits and timeouts (None where it cannot be read)."""
    found: dict[str, Any] = {}
    for name, queries in _ROLE_QUERIES.items():
        found[name] = None
        for sql in queries:
            try:
                value = _scalar(conn, sql)
            except Exception as exc:
                log.debug("doctor: %s unreadable with %r: %s", name, sql, exc)
                continue
            if value is not None:
                found[name] = value
                break
    limit = found["role_connection_limit"]
    if isinstance(limit, int) and limit < 0:
        found["role_connection_limit"] = "unlimited"
    elif isinstance(limit, str) and limit.strip().isdigit():
        found["role_connection_limit"] = int(limit.strip())
    elif isinstance(limit, str):
        found["role_connection_limit"] = limit.strip().lower()
    return found


def _settings_that_matter(settings: Settings, n: int) -> dict[str, Any]:
    s, wh, ssh = settings, settings.warehouse, settings.ssh
    data: dict[str, Any] = {
        "threads": s.threads,
        "connections_dbt_needs": s.threads + 1,
        "connections_opened_here": n,
        "warehouse": {
            "type": wh.type,
            "host": wh.host,
            "port": wh.effective_port,
            "dbname": wh.dbname,
            "user": wh.user,
            "sslmode": wh.effective_sslmode,
            "sslrootcert": str(wh.sslrootcert) if wh.sslrootcert is not None else None,
            "connect_timeout_s": wh.connect_timeout_s,
        },
        "timeout_s": s.timeout_s if s.timeout_s is not None else "none (no watchdog)",
        "retry": {
            "attempts": s.retry.attempts,
            "max_wait_s": s.retry.max_wait_s,
            "degrade_threads": s.retry.degrade_threads
            if s.retry.degrade_threads is not None
            else "off",
            "retry_timeouts": s.retry.retry_timeouts,
        },
    }
    if wh.type == "duckdb":
        data["warehouse"] = {"type": "duckdb", "path": str(wh.path)}
    if wh.is_iam:
        data["iam"] = {
            "cluster_id": wh.cluster_id,
            "workgroup": wh.workgroup,
            "region": wh.region or "AWS default (AWS_REGION / profile)",
            "db_user": wh.db_user,
            "db_groups": ",".join(wh.db_groups) or None,
            "auto_create": wh.auto_create,
            "iam_profile": wh.iam_profile or "default AWS credential chain",
        }
    if ssh.enabled:
        data["ssh"] = {
            "host": ssh.host,
            "port": ssh.port,
            "user": ssh.user,
            "remote_host": ssh.remote_host or wh.host,
            "host_key_check": _host_key_check(settings),
            "connect_timeout_s": ssh.connect_timeout_s,
            "keepalive_s": ssh.keepalive_s,
        }
    return data


# ------------------------------------------------------------------------- the run
def run_doctor(
    settings: Settings,
    *,
    connections: int | None = None,
    hold_s: float = 1.0,
    parse: bool = True,
) -> DoctorReport:
    """Check each layer with ``connections`` concurrent connections (default threads + 1).

    With ``parse`` (default) the last layer checks that the project parses.
    Never raises for what it diagnoses (an unreachable bastion, a refused login,
    a project that does not parse...): those are the report. Raises
    :class:`~dbt_runner.ConfigurationError` for bad input.
    """
    if hold_s < 0:
        raise ConfigurationError(f"hold_s must be >= 0, got {hold_s}")
    if connections is not None and connections < 1:
        raise ConfigurationError(f"connections must be >= 1, got {connections}")
    t0 = time.monotonic()
    parse_check = _parse_check(settings) if parse else _NOT_PARSED
    settings, other = _as_warehouse(settings)
    n = settings.threads + 1 if connections is None else connections
    report = _connection_report(settings, n, hold_s, other)
    layers = {x.layer: x for x in report.layers}
    layers["parse"] = parse_check
    ordered = tuple(layers[name] for name in LAYERS if name in layers)
    hints = report.hints
    if parse_check.failed:
        hints += (
            "the project does not parse: dbt's message is under 'parse'; fix the project, "
            f"its profile or packages ({ENV_PREFIX}INSTALL_DEPS) before anything else",
        )
    elapsed = round(time.monotonic() - t0, 3)
    return replace(report, layers=ordered, hints=hints, elapsed_s=elapsed)


_NOT_PARSED = LayerCheck("parse", "skipped", "not checked (parse=False)")


def _parse_check(settings: Settings) -> LayerCheck:
    """``dbt parse`` of the session's project in a session of its own, without the tunnel.

    Parsing needs no warehouse connection, so the bastion is left out; packages are
    installed as ``DBT_RUNNER_INSTALL_DEPS`` says, as a session would.
    """
    from ._session import DbtSession

    t0 = time.monotonic()
    project = settings.resolved_project_dir
    try:
        direct = settings.model_copy(update={"ssh": SSHSettings.model_validate({})})
        with DbtSession(direct) as session:
            result = session.invoke(["parse"])
    except Exception as exc:  # the session could not open (deps failed, bad profile...)
        kind = getattr(exc, "kind", None)
        return LayerCheck(
            "parse",
            "failed",
            f"could not prepare {project} for parsing",
            (_message(exc),),
            kind if isinstance(kind, ErrorKind) else ErrorKind.CONFIGURATION,
            round(time.monotonic() - t0, 3),
        )
    elapsed = round(time.monotonic() - t0, 3)
    if result.success:
        return LayerCheck("parse", "ok", f"{project} parses", elapsed_s=elapsed)
    error = result.error
    return LayerCheck(
        "parse",
        "failed",
        f"{project} does not parse",
        (error.message if error else "dbt could not parse the project",),
        error.kind if error else ErrorKind.COMPILATION,
        elapsed,
    )


def _iam_check(settings: Settings) -> tuple[Settings, LayerCheck]:
    """The ``iam`` layer: the AWS credentials, their identity, the temporary login.

    Returns the settings the connections log in with (the login's user and password)
    and the check; with ``METHOD=password`` the settings unchanged and ``skipped``.
    """
    wh = settings.warehouse
    if not wh.is_iam:
        reason = f"{ENV_PREFIX}WAREHOUSE__METHOD=password: no AWS credentials involved"
        return settings, LayerCheck("iam", "skipped", reason)
    from ._aws import caller_identity, describe_target
    from ._warehouse import fetch_login, with_login

    t0 = time.monotonic()
    found: list[str] = []
    try:
        identity = caller_identity(wh, wh._aws_keys)
        found.append(f"AWS credentials from {identity.source}, identity {identity.arn}")
        login = fetch_login(settings)
    except (ConfigurationError, CredentialsError) as exc:
        detail = "; ".join(found) or "no usable AWS credentials"
        elapsed = round(time.monotonic() - t0, 3)
        return settings, LayerCheck("iam", "failed", detail, (str(exc),), exc.kind, elapsed)
    found.append(
        f"{describe_target(wh)}: temporary login for {login.user} until "
        f"{login.expiration.isoformat(timespec='seconds')}"
    )
    elapsed = round(time.monotonic() - t0, 3)
    return with_login(settings, login), LayerCheck("iam", "ok", "; ".join(found), (), None, elapsed)


def _connection_report(
    settings: Settings, n: int, hold_s: float, other: str | None
) -> DoctorReport:
    """The connection layers: tunnel, then ``n`` connections at once."""
    t0 = time.monotonic()
    if other is not None:
        reason = f"{other}: the doctor checks connections to postgres, redshift and duckdb"
        skipped = {name: LayerCheck(name, "skipped", reason) for name in LAYERS[:-1]}
        info = {"threads": settings.threads, "target": other}
        return _finish(settings, other, n, hold_s, skipped, (), info, t0)
    if settings.warehouse.type == "duckdb":
        return _duckdb_report(settings, hold_s, t0)

    layers: dict[str, LayerCheck] = {}
    settings, layers["iam"] = _iam_check(settings)
    wh = settings.warehouse
    assert wh.host is not None and wh.effective_port is not None
    who = wh.user or wh.db_user or "(IAM identity)"  # no login yet when the iam layer failed
    target = f"{wh.type} {who}@{wh.host}:{wh.effective_port}/{wh.dbname}"
    info = _settings_that_matter(settings, n)
    if layers["iam"].failed:
        for name in ("ssh_session", "channel_open", "tcp", "auth", "query"):
            layers[name] = LayerCheck(name, "skipped", "not reached (no temporary login)")
        return _finish(settings, target, n, hold_s, layers, (), info, t0)
    host, port = wh.host, wh.effective_port
    tunnel: Any = None
    if settings.ssh.enabled:
        target += f" via bastion {settings.ssh.user}@{settings.ssh.host}:{settings.ssh.port}"
        tunnel, layers["ssh_session"], layers["channel_open"] = _open_tunnel(settings)
        if tunnel is None:
            for name in ("tcp", "auth", "query"):
                layers[name] = LayerCheck(name, "skipped", "not reached (no tunnel)")
            return _finish(settings, target, n, hold_s, layers, (), info, t0)
        host, port = tunnel.local_host, tunnel.local_port
    else:
        reason = f"no bastion ({ENV_PREFIX}SSH__HOST unset): dbt connects directly"
        layers["ssh_session"] = LayerCheck("ssh_session", "skipped", reason)
        layers["channel_open"] = LayerCheck("channel_open", "skipped", reason)

    failures_before = len(tunnel.channel_failures) if tunnel is not None else 0
    probes: list[_Probe] = []
    try:
        # the probes connect by the warehouse's name, as dbt does; the bytes take the tunnel
        with _warehouse_routed(settings, tunnel) if tunnel is not None else nullcontext():
            _run_probes(settings, host, port, tunnel is not None, n, hold_s, info, probes)
        checks = tuple(p.check() for p in probes)
        refused = tunnel.channel_failures[failures_before:] if tunnel is not None else []
    finally:
        # a stuck probe's connection cannot be closed from here (its driver holds it while
        # waiting); closing the tunnel cuts it, else it ends with its (daemon) thread
        if tunnel is not None:
            tunnel.close()
        for probe in probes:
            if not probe.is_alive():
                probe.close()

    layers.update(_connection_layers(checks, hold_s))
    if refused:
        layers["channel_open"] = LayerCheck(
            "channel_open",
            "failed",
            f"the bastion failed to open {len(refused)} forwarded connection(s) "
            f"to {wh.host}:{wh.effective_port}",
            tuple(dict.fromkeys(str(failure) for failure in refused)),
            ErrorKind.TUNNEL,
        )
    return _finish(settings, target, n, hold_s, layers, checks, info, t0)


def _run_probes(
    settings: Settings,
    host: str,
    port: int,
    tunnelled: bool,
    n: int,
    hold_s: float,
    info: dict[str, Any],
    probes: list[_Probe],
) -> None:
    """Start ``n`` probes (appended to ``probes``) at once, hold them together, finish them."""
    connect_budget = settings.warehouse.connect_timeout_s * 2 + _GRACE_S
    if tunnelled:
        connect_budget += settings.ssh.connect_timeout_s
    start, release = threading.Event(), threading.Event()
    probes.extend(
        _Probe(i + 1, settings, host, port, tunnelled, start, release, connect_budget + hold_s)
        for i in range(n)
    )
    for probe in probes:
        probe.start()
    start.set()  # all at once, like dbt's threads
    deadline = time.monotonic() + connect_budget
    for probe in probes:
        probe.ready.wait(max(0.0, deadline - time.monotonic()))
    held_since = time.monotonic()
    live = [p for p in probes if p.ready.is_set() and p.error is None and p.conn is not None]
    if live:  # read on a held connection (its probe waits for `release`), bounded
        reader = threading.Thread(
            target=lambda: info.__setitem__("server", _server_settings(live[0].conn)),
            name="dbt_runner-doctor-settings",
            daemon=True,
        )
        reader.start()
        reader.join(settings.warehouse.connect_timeout_s + _GRACE_S)
        if reader.is_alive():
            info["server"] = {"error": "no answer to the settings queries (stalled)"}
    release.wait(max(0.0, hold_s - (time.monotonic() - held_since)))  # hold them together
    release.set()
    deadline = time.monotonic() + settings.warehouse.connect_timeout_s + _GRACE_S
    for probe in probes:
        probe.join(max(0.0, deadline - time.monotonic()))


def _summarise(failures: list[ConnectionCheck]) -> tuple[tuple[str, ...], ErrorKind]:
    counts = Counter(f.error or "" for f in failures)
    errors = tuple(f"{c}x {m}" if c > 1 else m for m, c in counts.items())
    kinds = Counter(f.kind for f in failures if f.kind is not None)
    kind = kinds.most_common(1)[0][0] if kinds else ErrorKind.CONNECTION
    return errors, kind


def _connection_layers(checks: tuple[ConnectionCheck, ...], hold_s: float) -> dict[str, LayerCheck]:
    order = ("", "tcp", "auth", "query", "held")
    out: dict[str, LayerCheck] = {}
    words = {
        "tcp": "reached the server (it answered an SSLRequest)",
        "auth": "logged in",
        "query": f"answered select 1, before and after being held open together {hold_s:g}s",
    }
    for layer in ("tcp", "auth", "query"):
        tried = [c for c in checks if c.failed_layer == layer or _passed(c, layer, order)]
        failed = [c for c in checks if c.failed_layer == layer]
        if not tried:
            out[layer] = LayerCheck(layer, "skipped", "not reached (an earlier layer failed)")
            continue
        passed = len(tried) - len(failed)
        detail = f"{passed}/{len(tried)} connection(s) {words[layer]}"
        if not failed:
            out[layer] = LayerCheck(layer, "ok", detail)
            continue
        errors, kind = _summarise(failed)
        out[layer] = LayerCheck(layer, "failed", detail, errors, kind)
    return out


def _passed(check: ConnectionCheck, layer: str, order: tuple[str, ...]) -> bool:
    needed = "held" if layer == "query" else layer
    return order.index(check.reached) >= order.index(needed)


def _finish(
    settings: Settings,
    target: str,
    n: int,
    hold_s: float,
    layers: dict[str, LayerCheck],
    checks: tuple[ConnectionCheck, ...],
    info: dict[str, Any],
    t0: float,
) -> DoctorReport:
    ordered = tuple(layers[name] for name in LAYERS if name in layers)
    return DoctorReport(
        target=target,
        connections_requested=n,
        hold_s=hold_s,
        layers=ordered,
        connections=checks,
        settings=info,
        hints=_hints(settings, ordered, checks, info),
        elapsed_s=round(time.monotonic() - t0, 3),
    )


# ----------------------------------------------------------------------------- hints
_NO_RETRY = "; dbt_runner never retries this"


def _hints(
    settings: Settings,
    layers: tuple[LayerCheck, ...],
    checks: tuple[ConnectionCheck, ...],
    info: dict[str, Any],
) -> tuple[str, ...]:
    hints: list[str] = []
    threads = settings.threads
    server = info.get("server") or {}
    limit = server.get("role_connection_limit")
    failed = {x.layer: x for x in layers if x.failed}
    refused = [c for c in checks if c.kind is ErrorKind.TOO_MANY_CONNECTIONS]
    if refused:
        known = f" (the role's limit reads {limit})" if limit is not None else ""
        hints.append(
            f"{len(refused)} of {len(checks)} logins were refused by a connection limit{known}. "
            f"dbt with threads={threads} holds up to {threads + 1} connections at once (one "
            "per thread plus its own), on top of the role's other sessions. Raise the limit "
            f"(ALTER USER {settings.warehouse.user} CONNECTION LIMIT n), end idle sessions of "
            f"the role, lower {ENV_PREFIX}THREADS, or set {ENV_PREFIX}RETRY__DEGRADE_THREADS "
            "so a retry falls back to fewer threads. This is the usual cause of the "
            "'threads: 3' failure."
        )
    elif isinstance(limit, int) and limit < threads + 1:
        hints.append(
            f"the role's connection limit is {limit} but dbt with threads={threads} needs "
            f"{threads + 1}: expect too_many_connections from dbt"
        )
    iam = failed.get("iam")
    if iam is not None:
        if iam.kind is ErrorKind.CONNECTION:
            hints.append(
                "the AWS API could not be reached (or throttled us): check the network path "
                "to AWS (a proxy, a VPC endpoint, AWS_ENDPOINT_URL); dbt_runner retries this"
            )
        else:
            hints.append(AUTH_HINT + _NO_RETRY)
    if "ssh_session" in failed:
        if failed["ssh_session"].kind is ErrorKind.AUTH:
            hints.append(
                "the bastion was reached but not trusted or did not accept our key: the error "
                "above says which setting to fix; dbt_runner never retries this"
            )
        else:
            hints.append(
                f"the bastion could not be reached: check {ENV_PREFIX}SSH__HOST/PORT, the "
                "network path and firewalls; dbt_runner retries this as kind 'tunnel'"
            )
    if "channel_open" in failed:
        hints.append(
            "the bastion is up but cannot open connections to the warehouse: check "
            f"{ENV_PREFIX}WAREHOUSE__HOST/PORT as seen from the bastion, its security group, "
            "and sshd's AllowTcpForwarding / PermitOpen / MaxSessions"
        )
    if "tcp" in failed:
        hints.append(
            "the warehouse port did not answer: check the endpoint, that the cluster is "
            "available (not paused or resizing), and the network path"
        )
    for layer in failed.values():  # SSL mismatch, no password, unknown database: the fix
        if layer.kind is ErrorKind.CONFIGURATION:
            for error in layer.errors:
                text = error.split("x ", 1)[1] if error.split("x ", 1)[0].isdigit() else error
                hint = diagnose_message(text, ErrorKind.CONFIGURATION).hint
                if hint is not None and hint + _NO_RETRY not in hints:
                    hints.append(hint + _NO_RETRY)
    auth = failed.get("auth")
    if auth is not None and auth.kind is ErrorKind.AUTH:
        hints.append(
            f"the warehouse refused the login: check {ENV_PREFIX}WAREHOUSE__USER/PASSWORD/"
            "DBNAME; dbt_runner never retries this"
        )
    if "query" in failed:
        hints.append(
            "connections were dropped or stalled after logging in: look for idle/session "
            "timeouts, WLM or connection-killing rules, and unstable network or bastion"
        )
    return tuple(hints)


# --------------------------------------------------------------------------- duckdb
def _duckdb_report(settings: Settings, hold_s: float, t0: float) -> DoctorReport:
    path = settings.warehouse.path.expanduser()
    reason = "embedded DuckDB: no network layers"
    layers: dict[str, LayerCheck] = {
        name: LayerCheck(name, "skipped", reason)
        for name in ("iam", "ssh_session", "channel_open", "tcp")
    }
    layers["auth"] = LayerCheck("auth", "skipped", "embedded DuckDB: no login")
    if not path.exists():
        layers["query"] = LayerCheck(
            "query", "skipped", f"{path} does not exist yet: dbt creates it on the first run"
        )
    else:
        import duckdb

        try:
            conn = duckdb.connect(str(path), read_only=True)
            try:
                conn.execute("select 1").fetchone()
            finally:
                conn.close()
            layers["query"] = LayerCheck("query", "ok", f"{path} opened, select 1 answered")
        except Exception as exc:
            layers["query"] = LayerCheck(
                "query",
                "failed",
                f"cannot open {path}",
                (_message(exc),),
                _kind_of(exc),
            )
    return _finish(
        settings,
        f"duckdb {path}",
        1,
        0.0,
        layers,
        (),
        _settings_that_matter(settings, 1),
        t0,
    )
