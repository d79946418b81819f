"""Airflow: ``DbtRunnerOperator`` for any dbt project, and settings from Airflow connections.

Install with ``pip install 'dbt-runner[airflow]'``. Nothing in the core package
imports Airflow; this module imports it only when it has to look a connection
up by id or when ``DbtRunnerOperator`` is first used (built then on the installed
Airflow's ``BaseOperator``, 2.10 or 3). The operator, its parameters, its asset
events and OpenLineage: docs/airflow.md.

* the **warehouse** connection is a ``redshift`` or ``postgres`` connection:
  host, port, login, password, and *Schema* as the database name (that is how
  Airflow's Redshift and PostgreSQL connections use it); extras ``sslmode``,
  ``sslrootcert`` (postgres: the CA file, as libpq takes it), ``connect_timeout``.
  A Redshift connection with the Amazon provider's IAM extras (``"iam": true``,
  ``cluster_identifier``, ``db_user``, ``region``, ``profile``; Serverless:
  ``is_serverless``, ``serverless_work_group``) becomes
  ``WAREHOUSE__METHOD=iam`` (:func:`warehouse_values`): temporary logins from AWS,
  with the worker's AWS credentials (its role) or the ``profile``.
* the **bastion** is an ``ssh`` connection: host, port, login, and the extras
  of Airflow's SSH provider: ``key_file`` (a path on the worker) or
  ``private_key`` (the key text), ``private_key_passphrase``, ``host_key``
  (``"ssh-ed25519 AAAA..."``) or ``no_host_key_check``, ``conn_timeout``,
  ``look_for_keys``. ``known_hosts`` (a path) is a dbt_runner extra; without
  any of these, ``~/.ssh/known_hosts`` is used when it exists, as the SSH
  provider does.

Interruptions: inside :func:`dbt_session` the session is cancelled on the
server when Airflow stops the task. ``execution_timeout`` raises
``AirflowTaskTimeout`` (a ``BaseException``) from its alarm handler: the
session cancels, closes the tunnel and lets it through, unchanged. Marking a
task failed or a worker's shutdown sends SIGTERM, on which Airflow calls the
operator's ``on_kill`` (Airflow 3) and raises ``AirflowTaskTerminated``
(Airflow 2): :func:`dbt_session` chains a SIGTERM handler in front of
Airflow's that cancels the session first.

Everything else (target schema, threads, retries, timeout, the raw schema and
dbt vars: ``DBT_RUNNER_RAW_SCHEMA``, ``DBT_RUNNER_VARS``...) still comes from
``DBT_RUNNER_*`` environment variables or from keyword overrides, e.g.
``dbt_session("redshift_default", raw_schema="landing", vars={"test_window_s": 3600})``.

>>> from dbt_runner.airflow import dbt_session
>>> with dbt_session("redshift_default", ssh_conn_id="bastion") as session:  # doctest: +SKIP
...     staging = session.run_staging(threads=3)
...     tests = session.run_tests()
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shlex
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ._events import NodeCallback
from ._exceptions import ConfigurationError, DbtRunnerError
from ._lineage import Location, target_location, written_nodes
from ._results import RunResult
from ._session import DbtSession
from ._settings import Settings
from ._steps import Step, cycle_steps
from ._worker import WorkerClient

__all__ = [
    "BUILDING_BLOCKS",
    "Cancellable",
    "ConnectionLike",
    "DbtRunnerOperator",  # noqa: F822 - built on first use (module __getattr__)
    "asset_events",
    "cancel_on_sigterm",
    "command_steps",
    "cycle_is_due",
    "dbt_session",
    "get_connection",
    "settings_from_connections",
    "ssh_values",
    "warehouse_values",
]

log = logging.getLogger("dbt_runner.airflow")

C = TypeVar("C", bound="Cancellable")

_WAREHOUSE_TYPES = {"redshift": "redshift", "postgres": "postgres", "postgresql": "postgres"}
#: SSH provider extras that only tune its own paramiko client: nothing to map
_IGNORED_SSH_EXTRAS = frozenset({"compress", "cmd_timeout", "ciphers", "disabled_algorithms"})


class ConnectionLike(Protocol):
    """What is read from an Airflow ``Connection`` (``airflow.sdk.Connection`` fits)."""

    conn_id: str | None
    conn_type: str | None
    host: str | None
    port: int | None
    login: str | None
    password: str | None
    schema: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """The connection's extras as a dict."""
        ...


def get_connection(conn_id: str) -> ConnectionLike:
    """Look an Airflow connection up by id (metadata DB, ``AIRFLOW_CONN_*``, secrets backend).

    Raises :class:`~dbt_runner.ConfigurationError` when Airflow is not installed
    or the connection is not defined.
    """
    hook = _base_hook()
    try:
        conn: ConnectionLike = hook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException, or a secrets backend failing
        raise ConfigurationError(
            f"Airflow connection {conn_id!r} could not be read ({type(exc).__name__}): define it "
            f"in Airflow (UI, CLI, or an AIRFLOW_CONN_{conn_id.upper()} environment variable)"
        ) from exc
    return conn


# ---------------------------------------------------------------------- mapping
def warehouse_values(conn: ConnectionLike, *, warehouse_type: str | None = None) -> dict[str, Any]:
    """``Settings(warehouse=...)`` values from a ``redshift``/``postgres`` connection.

    ``warehouse_type`` overrides the connection type (for a Redshift cluster
    stored as a ``postgres`` connection).

    >>> from types import SimpleNamespace as C
    >>> conn = C(conn_id="wh", conn_type="redshift", host="cluster.example.com", port=5439,
    ...          login="dbt", password="s3cret", schema="analytics", extra_dejson={})
    >>> values = warehouse_values(conn)
    >>> values["type"], values["dbname"], values["user"]
    ('redshift', 'analytics', 'dbt')

    With the Amazon provider's IAM extras (login and password are not used then):

    >>> conn.extra_dejson = {"iam": True, "cluster_identifier": "analytics",
    ...                      "db_user": "dbt", "region": "eu-west-1"}
    >>> values = warehouse_values(conn)
    >>> values["method"], values["cluster_id"], values["db_user"], "password" in values
    ('iam', 'analytics', 'dbt', False)
    """
    name = _name(conn)
    kind = warehouse_type or _WAREHOUSE_TYPES.get((conn.conn_type or "").lower())
    if kind not in ("redshift", "postgres"):
        raise ConfigurationError(
            f"Airflow connection {name} has type {conn.conn_type!r}: the warehouse needs a "
            "'redshift' or 'postgres' connection (or pass warehouse_type=...)"
        )
    extra = _extras(conn)
    iam = _truthy(extra.get("iam"))
    values: dict[str, Any] = {"type": kind}
    for key, value in (
        ("host", conn.host),
        ("port", conn.port),
        ("user", None if iam else conn.login),
        ("password", None if iam else conn.password),
        ("dbname", conn.schema or extra.get("database") or extra.get("dbname")),
    ):
        if value not in (None, ""):
            values[key] = value
    if iam:
        if kind != "redshift":
            raise ConfigurationError(
                f"Airflow connection {name} asks for IAM authentication (extra 'iam'): "
                "dbt_runner supports it for Redshift connections only"
            )
        values.update(_iam_values(conn, extra, name))
    if extra.get("sslmode"):
        values["sslmode"] = str(extra["sslmode"])
    elif "ssl" in extra and not _truthy(extra["ssl"]):  # redshift_connector's ssl=False
        values["sslmode"] = "disable"
    if extra.get("sslrootcert"):  # libpq's CA file (WAREHOUSE__SSLROOTCERT)
        values["sslrootcert"] = str(extra["sslrootcert"])
    if extra.get("connect_timeout") not in (None, ""):
        values["connect_timeout_s"] = _int(extra["connect_timeout"], name, "connect_timeout")
    required = _REQUIRED_WAREHOUSE_IAM if iam else _REQUIRED_WAREHOUSE
    missing = [label for key, label in required if key not in values]
    if missing:
        raise ConfigurationError(f"Airflow connection {name} has no {', '.join(missing)}")
    return values


_REQUIRED_WAREHOUSE = (("host", "Host"), ("user", "Login"), ("dbname", "Schema (database name)"))
_REQUIRED_WAREHOUSE_IAM = (("host", "Host"), ("dbname", "Schema (database name)"))


def _iam_values(conn: ConnectionLike, extra: dict[str, Any], name: str) -> dict[str, Any]:
    """``WAREHOUSE__METHOD=iam`` values from a Redshift connection with ``"iam": true``.

    Read as the Amazon provider's Redshift connection documents them: provisioned
    clusters by ``cluster_identifier`` (else the first label of Host, as its hook does)
    and ``db_user`` (else Login); Serverless by ``is_serverless`` and
    ``serverless_work_group`` (the database user is the IAM identity: Login is not
    used); ``region``, ``profile``; and redshift_connector's ``db_groups`` and
    ``auto_create``. The password, if any, is not used (the temporary one replaces
    it). The AWS credentials are the worker's default chain (its role) or ``profile``.
    """
    values: dict[str, Any] = {"method": "iam"}
    for key in ("access_key_id", "secret_access_key", "session_token"):
        if extra.get(key):
            raise ConfigurationError(
                f"Airflow connection {name}: extra {key!r}: dbt_runner takes the AWS "
                "credentials from the worker's default chain (its role, AWS_* variables) or "
                "an AWS profile (extra 'profile'), not from the Redshift connection"
            )
    from ._aws import DURATION_S

    duration = extra.get("serverless_token_duration_seconds")
    if duration not in (None, "") and (
        _int(duration, name, "serverless_token_duration_seconds") != DURATION_S
    ):
        raise ConfigurationError(
            f"Airflow connection {name}: extra 'serverless_token_duration_seconds': dbt_runner "
            f"always asks for {DURATION_S} s (and a new login at half of it): remove it"
        )
    if _truthy(extra.get("is_serverless")):
        workgroup = extra.get("serverless_work_group")
        if not workgroup:
            raise ConfigurationError(
                f"Airflow connection {name} is Redshift Serverless (extra 'is_serverless'): "
                "set extra 'serverless_work_group'"
            )
        values["workgroup"] = str(workgroup)
    else:
        cluster = extra.get("cluster_identifier") or (conn.host or "").split(".", 1)[0]
        if not cluster:
            raise ConfigurationError(
                f"Airflow connection {name} asks for IAM: set extra 'cluster_identifier' (or Host)"
            )
        values["cluster_id"] = str(cluster)
        db_user = extra.get("db_user") or conn.login
        if db_user:
            values["db_user"] = str(db_user)
        groups = extra.get("db_groups")
        if groups:
            values["db_groups"] = groups if isinstance(groups, str) else tuple(groups)
        if "auto_create" in extra:
            values["auto_create"] = _truthy(extra["auto_create"])
    if extra.get("region"):
        values["region"] = str(extra["region"])
    if extra.get("profile"):
        values["iam_profile"] = str(extra["profile"])
    return values


def ssh_values(conn: ConnectionLike, *, key_dir: Path | None = None) -> dict[str, Any]:
    """``Settings(ssh=...)`` values from an ``ssh`` connection.

    A ``private_key`` extra (the key text) is written to a file of mode 0600
    in ``key_dir``, which the caller creates and removes (see
    :func:`settings_from_connections`, which does both).

    >>> from types import SimpleNamespace as C
    >>> conn = C(conn_id="bastion", conn_type="ssh", host="bastion.example.com", port=None,
    ...          login="tunnel", password=None, schema=None,
    ...          extra_dejson={"key_file": "/secrets/id_ed25519", "no_host_key_check": "false",
    ...                        "host_key": "SHA256:4Kf0aW8d5hQp0m1WZ1kq5yH8Gm3v3JqLw1f1m9bXyZ0"})
    >>> values = ssh_values(conn)
    >>> values["host"], values["port"], str(values["private_key"]), values["host_key"][:7]
    ('bastion.example.com', 22, '/secrets/id_ed25519', 'SHA256:')
    """
    name = _name(conn)
    if conn.conn_type and conn.conn_type.lower() != "ssh":
        raise ConfigurationError(
            f"Airflow connection {name} has type {conn.conn_type!r}: the bastion needs an "
            "'ssh' connection"
        )
    if not conn.host:
        raise ConfigurationError(f"Airflow connection {name} has no Host")
    if not conn.login:
        raise ConfigurationError(f"Airflow connection {name} has no Login (the bastion user)")
    extra = _extras(conn)
    values: dict[str, Any] = {"host": conn.host, "port": conn.port or 22, "user": conn.login}

    # -- the key
    key_file, key_text = extra.get("key_file"), extra.get("private_key")
    if key_file and key_text:
        raise ConfigurationError(
            f"Airflow connection {name} sets both extras 'key_file' and 'private_key': keep one"
        )
    if key_file:
        values["private_key"] = Path(str(key_file)).expanduser()
    elif key_text:
        if key_dir is None:
            raise ConfigurationError(
                f"Airflow connection {name} carries the key text (extra 'private_key'): use "
                "settings_from_connections(), which writes it to a private file for the session"
            )
        values["private_key"] = _write_key(key_dir, str(key_text), name)
    elif _truthy(extra.get("look_for_keys")):
        pass  # keys found in ~/.ssh, set below
    elif conn.password:
        raise ConfigurationError(
            f"Airflow connection {name} has a password but no key: password authentication "
            "to the bastion is not supported; set the extra 'key_file' or 'private_key'"
        )
    else:
        raise ConfigurationError(
            f"Airflow connection {name} has no key: set the extra 'key_file' (a path on the "
            "worker) or 'private_key' (the key text)"
        )
    if _truthy(extra.get("look_for_keys")):  # opt-in, unlike the SSH provider's default
        values["look_for_keys"] = True
    passphrase = extra.get("private_key_passphrase")
    if passphrase in (None, "") and "private_key" in values:
        passphrase = conn.password  # paramiko decrypts a key with the password, too
    if passphrase not in (None, ""):
        values["private_key_passphrase"] = str(passphrase)

    # -- the bastion's host key
    host_key = extra.get("host_key")
    skip = extra.get("no_host_key_check", extra.get("ignore_hostkey_verification"))
    if host_key:
        if _truthy(skip):
            raise ConfigurationError(
                f"Airflow connection {name} sets 'host_key' and no_host_key_check=true: "
                "the host key must be checked when it is given"
            )
        from ._ssh import host_key_line

        values["host_key"] = host_key_line(str(host_key))
    if extra.get("known_hosts"):
        values["known_hosts"] = Path(str(extra["known_hosts"])).expanduser()
    if "host_key" not in values and "known_hosts" not in values:
        if _truthy(skip):
            log.warning(
                "Airflow connection %s sets no_host_key_check=true: the bastion's host key "
                "is NOT verified (DBT_RUNNER_SSH__INSECURE_SKIP_HOST_KEY_CHECK)",
                name,
            )
            values["insecure_skip_host_key_check"] = True
        else:
            system = Path("~/.ssh/known_hosts").expanduser()
            if not system.is_file():
                raise ConfigurationError(
                    f"Airflow connection {name} gives no way to verify the bastion's host key: "
                    "set the extra 'host_key' (\"ssh-ed25519 AAAA...\") or 'known_hosts' (a "
                    "file), or knowingly no_host_key_check=true"
                )
            values["known_hosts"] = system
    if _truthy(extra.get("allow_host_key_change")):
        log.warning(
            "Airflow connection %s: extra allow_host_key_change is ignored; dbt_runner always "
            "verifies the bastion's host key",
            name,
        )

    # -- tuning
    if extra.get("conn_timeout") not in (None, ""):
        values["connect_timeout_s"] = float(_int(extra["conn_timeout"], name, "conn_timeout"))
    ignored = sorted(_IGNORED_SSH_EXTRAS.intersection(extra))
    if ignored:
        log.debug("Airflow connection %s: extras %s do not apply to dbt_runner", name, ignored)
    return values


# ---------------------------------------------------------------------- settings and session
@contextlib.contextmanager
def settings_from_connections(
    warehouse_conn: str | ConnectionLike | None,
    ssh_conn: str | ConnectionLike | None = None,
    *,
    warehouse_type: str | None = None,
    **overrides: Any,
) -> Iterator[Settings]:
    """:class:`~dbt_runner.Settings` from Airflow connections (ids or ``Connection`` objects).

    ``warehouse_conn=None``: the warehouse is not an Airflow connection (your own
    ``profiles.yml``: ``profiles_dir=...``, or ``DBT_RUNNER_WAREHOUSE__*``); a bastion
    connection may still tunnel to it. Other settings come from ``DBT_RUNNER_*``
    environment variables;
    ``overrides`` (``Settings`` keywords, e.g. ``threads=3`` or
    ``warehouse={"schema": "staging"}``) win over both. A key given as text
    lives in a private temporary file (0600 in a 0700 directory) until the
    ``with`` block ends.

    >>> with settings_from_connections("redshift_default", "bastion") as settings:  # doctest: +SKIP
    ...     print(settings.warehouse.host)
    """
    key_dir = Path(tempfile.mkdtemp(prefix="dbt_runner_airflow_"))
    try:
        values: dict[str, Any] = {}
        if warehouse_conn is not None:
            warehouse = _resolve(warehouse_conn)
            values["warehouse"] = warehouse_values(warehouse, warehouse_type=warehouse_type)
        if ssh_conn is not None:
            values["ssh"] = ssh_values(_resolve(ssh_conn), key_dir=key_dir)
        yield Settings(**_deep_merge(values, overrides))
    finally:
        shutil.rmtree(key_dir, ignore_errors=True)


@contextlib.contextmanager
def dbt_session(
    warehouse_conn_id: str | ConnectionLike | None,
    ssh_conn_id: str | ConnectionLike | None = None,
    *,
    warehouse_type: str | None = None,
    callbacks: Sequence[NodeCallback] = (),
    **overrides: Any,
) -> Iterator[DbtSession]:
    """An open :class:`~dbt_runner.DbtSession` (one tunnel) built from Airflow connections.

    >>> with dbt_session("redshift_default", "bastion") as session:  # doctest: +SKIP
    ...     staging = session.run_staging(threads=3)
    ...     tests = session.run_tests()
    """
    with (
        settings_from_connections(
            warehouse_conn_id, ssh_conn_id, warehouse_type=warehouse_type, **overrides
        ) as settings,
        DbtSession(settings, callbacks=callbacks) as session,
        cancel_on_sigterm(session),
    ):
        yield session


class Cancellable(Protocol):
    """What :func:`cancel_on_sigterm` cancels: a session, or a :class:`~dbt_runner.WorkerClient`."""

    def cancel(self) -> bool:
        """Cancel what runs now; True if something was running."""
        ...


@contextlib.contextmanager
def cancel_on_sigterm(session: C) -> Iterator[C]:
    """Inside the block, SIGTERM first cancels ``session`` (a :class:`~dbt_runner.DbtSession`
    or a :class:`~dbt_runner.WorkerClient`, on the server), then runs the
    handler Airflow installed (``on_kill``; Airflow 2 then raises ``AirflowTaskTerminated``,
    which the session lets through after its clean-up).

    Only where a handler is installed to chain to, and only in the main thread (Python
    runs signal handlers there); elsewhere it changes nothing.

    >>> with DbtSession(settings) as s, cancel_on_sigterm(s):      # doctest: +SKIP
    ...     s.run_staging()
    """
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield session
        return

    def handler(signum: int, frame: Any) -> None:
        if session.cancel():
            log.warning("SIGTERM: the dbt command of this task was cancelled on the server")
        previous(signum, frame)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield session
    finally:
        signal.signal(signal.SIGTERM, previous)


def cycle_is_due(when: datetime, every_minutes: int, cycle_minutes: int = 15) -> bool:
    """True when the ``cycle_minutes`` cycle starting at ``when`` should also run a job
    scheduled every ``every_minutes`` (0 = never), counted from midnight.

    With the default 15-minute cycle and ``every_minutes=60`` that is the cycle
    starting each hour (xx:00-xx:14).

    >>> from datetime import datetime
    >>> [cycle_is_due(datetime(2026, 1, 1, 10, m), 60) for m in (0, 14, 15, 45)]
    [True, True, False, False]
    >>> cycle_is_due(datetime(2026, 1, 1, 10, 15), 15), cycle_is_due(datetime(2026, 1, 1, 10, 0), 0)
    (True, False)
    """
    if every_minutes <= 0:
        return False
    if cycle_minutes <= 0:
        raise ConfigurationError(f"cycle_minutes must be > 0, got {cycle_minutes}")
    slot_start = (when.hour * 60 + when.minute) // cycle_minutes * cycle_minutes
    return slot_start % every_minutes < cycle_minutes


# ---------------------------------------------------------------------- the operator
#: the building blocks a ``command`` may name (anything else is dbt's own arguments)
BUILDING_BLOCKS = ("cycle", "run_staging", "run_tests", "build_staging")
#: the operator's template fields (Jinja: ``"{{ params.select }}"``)
TEMPLATE_FIELDS = (
    "project_dir",
    "profiles_dir",
    "warehouse_conn_id",
    "ssh_conn_id",
    "command",
    "select",
    "exclude",
    "target",
    "vars",
    "threads",
    "scope",
    "worker_socket",
)

StepsArg = Sequence["Step | Mapping[str, Any]"] | Callable[[Any], Sequence[Any]] | None


def command_steps(
    command: str | Sequence[str],
    *,
    select: str | None = None,
    exclude: str | None = None,
    vars: Mapping[str, Any] | None = None,
    threads: int | None = None,
    scope: str = "recent",
) -> list[Step]:
    """The :class:`~dbt_runner.Step` s of a command: a building block (``cycle``,
    ``run_staging``, ``run_tests``, ``build_staging``) or any dbt command's arguments.

    ``select``/``exclude``/``vars`` become dbt's ``--select``/``--exclude``/``--vars``
    of a dbt command unless its arguments already give them (the caller's flags win).

    >>> [s.label for s in command_steps("cycle", select="tag:nightly")]
    ['staging', 'tests']
    >>> command_steps("build --select tag:marts", exclude="tag:broken", threads=4)[0].args
    ('build', '--select', 'tag:marts', '--exclude', 'tag:broken')
    """
    common: dict[str, Any] = {
        k: v
        for k, v in (("select", select), ("exclude", exclude), ("vars", vars), ("threads", threads))
        if v not in (None, "", {})
    }
    if isinstance(command, str) and command in BUILDING_BLOCKS:
        if command == "cycle":
            return cycle_steps(scope=scope, **common)
        if command == "run_staging":
            return [Step("run_staging", common)]
        return [Step(command, {**common, "scope": scope})]
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if not args:
        raise ConfigurationError("command is empty: name a building block or dbt's arguments")
    for flag, value in (("--select", select), ("--exclude", exclude)):
        short = {"--select": "-s", "--exclude": None}[flag]
        given = any(a == flag or a.startswith(flag + "=") or (short and a == short) for a in args)
        if value and not given:
            args += [flag, value]
    if vars and not any(a == "--vars" or a.startswith("--vars=") for a in args):
        args += ["--vars", json.dumps(dict(vars), sort_keys=True)]
    return [Step("invoke", {"threads": threads} if threads else {}, tuple(args))]


def asset_events(
    results: Mapping[str, RunResult], location: Location
) -> list[tuple[str, dict[str, Any]]]:
    """(asset URI, event extra) of each relation the results wrote, in order, once each.

    >>> from dbt_runner import NodeResult, RunResult
    >>> node = NodeResult("model.shop.orders", "orders", "model", "success", None, None, 1.0,
    ...                   "Thread-1", 3, None, relation_name='"db"."stg"."orders"')
    >>> result = RunResult("run", True, "", 1.0, 1, 1, (node,))
    >>> asset_events({"staging": result}, Location("postgres", "pg", 5432, None))
    [('postgres://pg:5432/db/stg/orders', {'dbt_unique_id': 'model.shop.orders', \
'dbt_command': 'run', 'dbt_invocation_id': None, 'rows_affected': 3})]
    """
    events: dict[str, dict[str, Any]] = {}
    for result in results.values():
        for node in written_nodes(result.nodes):
            uri = location.asset_uri(node.relation_name)
            if uri is None:
                continue
            # flat and hashable: Airflow 2.10 keys alias events by frozenset(extra.items())
            events[uri] = {
                "dbt_unique_id": node.unique_id,
                "dbt_command": result.command,
                "dbt_invocation_id": node.invocation_id,
                "rows_affected": node.rows_affected,
            }
    return list(events.items())


_OPERATOR: Any = None


def _operator_class() -> Any:
    """``DbtRunnerOperator``, built on the installed Airflow's ``BaseOperator`` (2.10 or 3)."""
    global _OPERATOR
    if _OPERATOR is not None:
        return _OPERATOR
    airflow = _airflow_names()

    class DbtRunnerOperator(airflow.BaseOperator):  # type: ignore[misc,name-defined]
        """Runs dbt in-process for any dbt project; one session (one tunnel) per task.

        ``command``: a building block (``"cycle"``, ``"run_staging"``, ``"run_tests"``,
        ``"build_staging"``) or any dbt command (``"build --select tag:nightly"``, or a
        list of arguments); ``steps``: :class:`~dbt_runner.Step` s instead (or a callable
        that returns them from the task's context). The warehouse: your own
        ``profiles_dir`` (any dbt adapter you installed) or Airflow connections
        (``warehouse_conn_id``, and ``ssh_conn_id`` for a bastion, with either).
        ``worker_socket``: run in a warm ``dbt-runner serve`` worker when one answers.

        The results go to XCom as ``{label: RunResult.to_dict()}``; each relation a
        model, seed or snapshot wrote becomes an asset event (Airflow 3 ``Asset``,
        2.10 ``Dataset``) through the task's ``AssetAlias``/``DatasetAlias`` outlet.
        See docs/airflow.md.

        >>> DbtRunnerOperator(task_id="nightly", project_dir="/dags/shop",   # doctest: +SKIP
        ...                   profiles_dir="/dags/shop", command="build --select tag:nightly")
        """

        template_fields = TEMPLATE_FIELDS
        ui_color = "#ff694b"

        def __init__(
            self,
            *,
            project_dir: str | os.PathLike[str] | None = None,
            profiles_dir: str | os.PathLike[str] | None = None,
            warehouse_conn_id: str | None = None,
            ssh_conn_id: str | None = None,
            warehouse_type: str | None = None,
            command: str | Sequence[str] = "cycle",
            steps: StepsArg = None,
            select: str | None = None,
            exclude: str | None = None,
            target: str | None = None,
            vars: Mapping[str, Any] | str | None = None,
            threads: int | str | None = None,
            scope: str = "recent",
            worker_socket: str | os.PathLike[str] | None = None,
            settings: Mapping[str, Any] | None = None,
            asset_alias: str | None = None,
            outlets: Sequence[Any] | None = None,
            **kwargs: Any,
        ) -> None:
            alias = asset_alias
            if alias is None:
                dag = kwargs.get("dag")
                if dag is None:
                    dag = _current_dag()
                dag_id = getattr(dag, "dag_id", None)
                task_id = kwargs.get("task_id")
                alias = f"dbt_runner/{dag_id}/{task_id}" if dag_id else f"dbt_runner/{task_id}"
            self.asset_alias = alias
            super().__init__(outlets=[*(outlets or ()), airflow.AssetAlias(name=alias)], **kwargs)
            self.project_dir = None if project_dir is None else str(project_dir)
            self.profiles_dir = None if profiles_dir is None else str(profiles_dir)
            self.warehouse_conn_id = warehouse_conn_id
            self.ssh_conn_id = ssh_conn_id
            self.warehouse_type = warehouse_type
            self.command = command
            self.steps = steps
            self.select = select
            self.exclude = exclude
            self.target = target
            self.vars = vars
            self.threads = threads
            self.scope = scope
            self.worker_socket = None if worker_socket is None else str(worker_socket)
            self.settings = dict(settings or {})
            self._running: Cancellable | None = None

        # -- what runs
        def steps_for(self, context: Any) -> list[Step]:
            """The steps of this run: ``steps`` (called with the context when callable),
            else those of ``command`` with the selection, vars, threads and scope."""
            if callable(self.steps):
                given: Sequence[Any] = self.steps(context)
            elif self.steps is not None:
                given = self.steps
            else:
                return command_steps(
                    self.command,
                    select=_opt(self.select),
                    exclude=_opt(self.exclude),
                    vars=_vars(self.vars),
                    threads=_threads(self.threads),
                    scope=self.scope,
                )
            return [s if isinstance(s, Step) else Step.from_dict(s) for s in given]

        def session_overrides(self) -> dict[str, Any]:
            """``Settings`` keywords of this task (``settings`` plus the named parameters)."""
            overrides = dict(self.settings)
            for key, value in (
                ("project_dir", _opt(self.project_dir)),
                ("profiles_dir", _opt(self.profiles_dir)),
                ("target", _opt(self.target)),
            ):
                if value is not None:
                    overrides[key] = value
            return overrides

        def execute(self, context: Any) -> dict[str, Any]:
            conns = (_opt(self.warehouse_conn_id), _opt(self.ssh_conn_id))
            overrides = self.session_overrides()

            def session() -> contextlib.AbstractContextManager[DbtSession]:
                return dbt_session(*conns, warehouse_type=self.warehouse_type, **overrides)

            try:
                steps = self.steps_for(context)  # a bad step is a ConfigurationError: no retry
                log.info("dbt steps: %s", ", ".join(f"{s.label} ({s.operation})" for s in steps))
                socket_path = _opt(self.worker_socket)
                if socket_path:  # a warm `dbt-runner serve` worker runs them, if it answers
                    with settings_from_connections(
                        *conns, warehouse_type=self.warehouse_type, **overrides
                    ) as settings:  # the task's own: where the worker is expected to write
                        where = _location(settings)
                    client = WorkerClient(socket_path, fallback=session)
                    self._running = client
                    with cancel_on_sigterm(client):
                        results = client.run_steps(steps)
                else:
                    with session() as opened:
                        self._running = opened
                        results = opened.run_steps(steps)
                        where = _location(opened.settings)
            except DbtRunnerError as exc:  # opening failed: its kind says whether to retry
                if exc.kind.is_infrastructure:
                    raise
                raise _fail_now(f"{type(exc).__name__}: {exc}") from exc
            finally:
                self._running = None

            payload = {label: result.to_dict() for label, result in results.items()}
            failed = {label: r for label, r in results.items() if not r.success}
            for label, result in results.items():
                (log.error if label in failed else log.info)("%s\n%s", label, result.summary())
            if not failed:
                if where is not None:
                    self.record_assets(context, asset_events(results, where))
                return payload
            context["ti"].xcom_push(key="dbt_results", value=payload)
            message = "\n".join(result.summary() for result in failed.values())
            if any(r.error is not None and r.error.kind.is_infrastructure for r in failed.values()):
                raise RuntimeError(message)  # Airflow retries the task
            raise _fail_now(message)

        def record_assets(self, context: Any, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
            """One asset event per written relation, through this task's alias outlet."""
            accessor = context["outlet_events"][airflow.AssetAlias(name=self.asset_alias)]
            for uri, extra in events:
                accessor.add(airflow.Asset(uri=uri), extra=extra)
            if events:
                log.info(
                    "asset events (alias %s): %s", self.asset_alias, ", ".join(u for u, _ in events)
                )

        def on_kill(self) -> None:
            """Airflow stops the task: cancel the dbt command on the server."""
            running = self._running
            if running is not None and running.cancel():
                log.warning("on_kill: the dbt command of this task was cancelled on the server")

    DbtRunnerOperator.__module__ = __name__
    _OPERATOR = DbtRunnerOperator
    return _OPERATOR


def __getattr__(name: str) -> Any:
    if name == "DbtRunnerOperator":
        return _operator_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _AirflowNames:
    def __init__(self, base: Any, asset: Any, alias: Any) -> None:
        self.BaseOperator, self.Asset, self.AssetAlias = base, asset, alias


def _airflow_names() -> _AirflowNames:
    """BaseOperator, Asset, AssetAlias of Airflow 3 (``airflow.sdk``), else 2.10's
    BaseOperator, Dataset, DatasetAlias."""
    try:
        sdk = importlib.import_module("airflow.sdk")
        return _AirflowNames(sdk.BaseOperator, sdk.Asset, sdk.AssetAlias)
    except (ImportError, AttributeError):
        pass
    try:
        base = importlib.import_module("airflow.models.baseoperator").BaseOperator
        datasets = importlib.import_module("airflow.datasets")
        return _AirflowNames(base, datasets.Dataset, datasets.DatasetAlias)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            "DbtRunnerOperator needs Apache Airflow 2.10 or 3: pip install 'dbt-runner[airflow]'"
        ) from exc


def _current_dag() -> Any:
    """The DAG being defined (``with DAG(...)`` / ``@dag``), else None."""
    for module in ("airflow.sdk.definitions._internal.contextmanager", "airflow.models.dag"):
        try:
            context = importlib.import_module(module).DagContext
        except (ImportError, AttributeError):
            continue
        current = getattr(context, "get_current", None) or context.get_current_dag  # 3 | 2.10
        return current()
    return None


def _location(settings: Settings) -> Location | None:
    """Where the assets live; None (with a log line) when the target's address is unknown."""
    try:
        where = target_location(settings)
    except ConfigurationError as exc:
        log.warning("no asset events: %s", exc)
        return None
    if where.namespace is None:
        log.warning(
            "no asset events: dbt_runner knows no address for a %r target (no host)", where.type
        )
        return None
    return where


def _fail_now(message: str) -> Exception:
    """An exception that fails the task without using its retries."""
    try:
        exceptions = importlib.import_module("airflow.sdk.exceptions")
        return exceptions.AirflowFailException(message)  # type: ignore[no-any-return]
    except (ImportError, AttributeError):  # Airflow 2.10, 3.0
        exceptions = importlib.import_module("airflow.exceptions")
        return exceptions.AirflowFailException(message)  # type: ignore[no-any-return]


def _opt(value: Any) -> str | None:
    """A rendered optional text ("" or "None" from a template: not given)."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ("", "None") else text


def _threads(value: Any) -> int | None:
    text = _opt(value)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigurationError(f"threads must be a number, got {text!r}") from None


def _vars(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, Mapping):
        return dict(value) if value else None
    text = _opt(value)
    if text is None:
        return None
    import yaml

    loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"vars must be a mapping, got {text!r}")
    return loaded


# ---------------------------------------------------------------------- helpers
def _base_hook() -> Any:
    """Airflow's ``BaseHook``: ``airflow.sdk`` from 3.1 on, else ``airflow.hooks.base`` (2.x)."""
    error: ImportError | None = None
    for module in ("airflow.sdk", "airflow.hooks.base"):
        try:
            return importlib.import_module(module).BaseHook
        except ImportError as exc:
            error = exc
        except AttributeError:
            continue
    raise ConfigurationError(
        "dbt_runner.airflow needs Apache Airflow 2.10 or 3: pip install 'dbt-runner[airflow]'"
    ) from error


def _resolve(conn: str | ConnectionLike) -> ConnectionLike:
    return get_connection(conn) if isinstance(conn, str) else conn


def _name(conn: ConnectionLike) -> str:
    return repr(getattr(conn, "conn_id", None) or "<unnamed>")


def _extras(conn: ConnectionLike) -> dict[str, Any]:
    try:
        extra = conn.extra_dejson
    except Exception as exc:  # malformed JSON in the connection's extra
        raise ConfigurationError(
            f"Airflow connection {_name(conn)} has extras that are not valid JSON"
        ) from exc
    return dict(extra or {})


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"true", "1", "yes", "on"}


def _int(value: Any, name: str, field: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"Airflow connection {name}: extra {field!r} must be a number of seconds"
        ) from None


def _write_key(key_dir: Path, text: str, name: str) -> Path:
    if "\n" not in text.strip() and "\\n" in text:  # pasted with escaped newlines
        text = text.replace("\\n", "\n")
    if len(text.strip().splitlines()) < 2:
        raise ConfigurationError(
            f"Airflow connection {name}: extra 'private_key' must be the whole key, with its "
            "BEGIN and END lines on lines of their own"
        )
    path = key_dir / "bastion_key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text.strip() + "\n")
    return path


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
