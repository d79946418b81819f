"""Settings from Airflow connections, so secrets stay in Airflow's connection store.

Install with ``pip install 'dbt-runner[airflow]'``. Nothing in the core package
imports Airflow; this module imports it only when it has to look a connection
up by id.

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
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ._events import NodeCallback
from ._exceptions import ConfigurationError
from ._session import DbtSession
from ._settings import Settings

__all__ = [
    "Cancellable",
    "ConnectionLike",
    "cancel_on_sigterm",
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
    warehouse_conn: str | ConnectionLike,
    ssh_conn: str | ConnectionLike | None = None,
    *,
    warehouse_type: str | None = None,
    **overrides: Any,
) -> Iterator[Settings]:
    """:class:`~dbt_runner.Settings` from Airflow connections (ids or ``Connection`` objects).

    Other settings come from ``DBT_RUNNER_*`` environment variables;
    ``overrides`` (``Settings`` keywords, e.g. ``threads=3`` or
    ``warehouse={"schema": "staging"}``) win over both. A key given as text
    lives in a private temporary file (0600 in a 0700 directory) until the
    ``with`` block ends.

    >>> with settings_from_connections("redshift_default", "bastion") as settings:  # doctest: +SKIP
    ...     print(settings.warehouse.host)
    """
    key_dir = Path(tempfile.mkdtemp(prefix="dbt_runner_airflow_"))
    try:
        warehouse = _resolve(warehouse_conn)
        values: dict[str, Any] = {
            "warehouse": warehouse_values(warehouse, warehouse_type=warehouse_type)
        }
        if ssh_conn is not None:
            values["ssh"] = ssh_values(_resolve(ssh_conn), key_dir=key_dir)
        yield Settings(**_deep_merge(values, overrides))
    finally:
        shutil.rmtree(key_dir, ignore_errors=True)


@contextlib.contextmanager
def dbt_session(
    warehouse_conn_id: str | ConnectionLike,
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
