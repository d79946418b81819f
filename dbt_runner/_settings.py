"""Settings: every knob, read from ``DBT_RUNNER_*`` environment variables.

Constructor keywords override the environment. Invalid input raises
:class:`~dbt_runner.ConfigurationError` naming the setting and the fix, before
anything connects; secret values never appear in that message. A setting is named
the way the user gave it (:func:`setting_name`): a command-line flag by the flag
(the CLI passes its flags to :class:`Settings`), anything else by its environment
variable, which is the setting's name.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from ._exceptions import ConfigurationError

__all__ = [
    "ConnectionSettings",
    "LockSettings",
    "OpenLineageSettings",
    "RetrySettings",
    "SSHSettings",
    "Settings",
    "WarehouseSettings",
    "bundled_project_dir",
    "flags_of",
    "setting_name",
]

ENV_PREFIX = "DBT_RUNNER_"

WarehouseType = Literal["duckdb", "postgres", "redshift"]
InstallDeps = Literal["auto", "always", "never"]
LoginMethod = Literal["password", "iam"]
SSLMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

#: variables with the prefix that dbt_runner reads outside :class:`Settings`
OTHER_VARIABLES = {f"{ENV_PREFIX}LOG_FORMAT": "the CLI's --log-format"}
#: the warehouse fields that mean something on the embedded DuckDB
_DUCKDB_FIELDS = frozenset({"type", "path", "schema_", "connect_timeout_s"})

#: the Redshift IAM fields (``METHOD=iam``), as ``WAREHOUSE__*`` names
_IAM_FIELDS = (
    "cluster_id",
    "workgroup",
    "region",
    "db_user",
    "db_groups",
    "auto_create",
    "iam_profile",
)

_DEFAULT_PORTS = {"postgres": 5432, "redshift": 5439}
# Secure by default: the server's certificate is verified, host name included, also
# through a bastion (the drivers connect by the warehouse's name and the tunnel carries
# the bytes: dbt_runner._dbt.routes). redshift_connector verifies against the Redshift
# CAs it bundles plus the system's trust store; libpq needs a CA file
# (WAREHOUSE__SSLROOTCERT or its own ~/.postgresql/root.crt), or fails naming it.
_DEFAULT_SSLMODE: dict[str, SSLMode] = {"postgres": "verify-full", "redshift": "verify-full"}


#: the command-line flags of the :class:`Settings` being built in this context
_BUILDING_FLAGS: ContextVar[Mapping[str, str] | None] = ContextVar("dbt_runner_flags", default=None)


def setting_name(field: str, flags: Mapping[str, str] | None = None) -> str:
    """The name of setting ``field`` (``"threads"``, ``"warehouse__host"``) as the user gave it.

    The command-line flag that set it (``flags``: field -> flag, see :func:`flags_of`),
    else its environment variable. A constructor keyword is named by its variable too:
    that is the setting's name in every document. ``flags=None``: the flags of the
    :class:`Settings` being built now (its validators name fields this way).

    >>> setting_name("project_dir", {"project_dir": "--project-dir"})
    '--project-dir'
    >>> setting_name("warehouse__host", {})
    'DBT_RUNNER_WAREHOUSE__HOST'
    """
    given = _BUILDING_FLAGS.get() if flags is None else flags
    return (given or {}).get(field) or ENV_PREFIX + field.upper()


def flags_of(settings: Settings) -> Mapping[str, str]:
    """Which of ``settings``' fields a command-line flag gave: field -> flag."""
    return settings._flags


def bundled_project_dir() -> Path:
    """The staging project shipped with the package (``models_sql``).

    Inside a wheel it is ``dbt_runner/models_sql``; in a source checkout it is
    the repository's top-level ``models_sql``.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "models_sql", here.parent / "models_sql"):
        if (candidate / "dbt_project.yml").is_file():
            return candidate
    raise ConfigurationError(
        "the bundled models_sql project is missing from this installation; "
        "set DBT_RUNNER_PROJECT_DIR to your dbt project"
    )


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarehouseSettings(_Section):
    """Where dbt connects: ``DBT_RUNNER_WAREHOUSE__*``."""

    type: WarehouseType = Field("duckdb", description="redshift, postgres or duckdb (embedded)")
    host: str | None = Field(None, description="warehouse host (redshift/postgres)")
    port: int | None = Field(
        None, ge=1, le=65535, description="warehouse port (default 5439 redshift, 5432 postgres)"
    )
    user: str | None = Field(None, description="warehouse user (redshift/postgres)")
    password: SecretStr | None = Field(
        None,
        description="warehouse password (secret); required for redshift/postgres unless "
        "PROFILES_DIR is set",
    )
    dbname: str | None = Field(None, description="database name (redshift/postgres)")
    schema_: str = Field(
        "staging", alias="schema", description="schema the staging models are built in"
    )
    sslmode: SSLMode | None = Field(
        None,
        description="sslmode (default verify-full: the certificate and its host name "
        "WAREHOUSE__HOST are verified; PostgreSQL needs a CA for it, see SSLROOTCERT)",
    )
    sslrootcert: Path | None = Field(
        None,
        description="CA file the server's certificate is verified against (postgres: libpq's "
        "sslrootcert; must exist). Redshift: unset, redshift_connector trusts its bundled "
        "Redshift CAs and the system's trust store",
    )
    path: Path = Field(Path("dbt_runner.duckdb"), description="DuckDB database file")
    connect_timeout_s: int = Field(10, ge=1, description="seconds to wait for a connection")
    method: LoginMethod = Field(
        "password",
        description="how dbt logs in: password (USER/PASSWORD) or iam (Redshift: a temporary "
        "password from AWS, fetched when a session opens; see docs/production-redshift.md)",
    )
    cluster_id: str | None = Field(
        None,
        description="METHOD=iam, provisioned Redshift: the cluster identifier "
        "(redshift:GetClusterCredentials)",
    )
    workgroup: str | None = Field(
        None,
        description="METHOD=iam, Redshift Serverless: the workgroup name "
        "(redshift-serverless:GetCredentials; the database user is your IAM identity)",
    )
    region: str | None = Field(
        None,
        description="METHOD=iam: AWS region of the cluster or workgroup (unset = the AWS "
        "default: AWS_REGION / AWS_DEFAULT_REGION or the profile's region)",
    )
    db_user: str | None = Field(
        None, description="METHOD=iam with CLUSTER_ID: the database user to log in as"
    )
    db_groups: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="METHOD=iam with CLUSTER_ID: database groups the user joins for the "
        "session, comma-separated",
    )
    auto_create: bool = Field(
        False, description="METHOD=iam with CLUSTER_ID: create DB_USER if it does not exist"
    )
    iam_profile: str | None = Field(
        None,
        description="METHOD=iam: AWS profile (~/.aws/config) whose credentials ask for the "
        "temporary password; unset = the default AWS credential chain (environment, "
        "profile files, container or instance role)",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    #: METHOD=iam from a user's own profiles.yml: its explicit AWS keys (``access_key_id``
    #: / ``secret_access_key``); never a setting of its own, never in a repr
    _aws_keys: Any = PrivateAttr(default=None)

    @field_validator("db_groups", mode="before")
    @classmethod
    def _split_groups(cls, value: Any) -> Any:
        """``a,b`` (the environment's form) or a JSON list as a tuple of names."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError as exc:
                    raise ValueError(f"not a JSON list of group names ({exc})") from None
                return value
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return value

    @property
    def is_iam(self) -> bool:
        """True when dbt logs in with a temporary password from AWS (``METHOD=iam``)."""
        return self.method == "iam"

    @property
    def is_serverless(self) -> bool:
        """True for Redshift Serverless IAM (``WORKGROUP`` set)."""
        return self.is_iam and self.workgroup is not None

    @property
    def schema(self) -> str:  # type: ignore[override]
        """The target schema (``schema`` is a reserved name on pydantic models)."""
        return self.schema_

    @property
    def effective_port(self) -> int | None:
        """The configured port or the warehouse type's default."""
        return self.port or _DEFAULT_PORTS.get(self.type)

    @property
    def effective_sslmode(self) -> SSLMode | None:
        """The configured sslmode or the secure default for the type."""
        return self.sslmode or _DEFAULT_SSLMODE.get(self.type)

    @model_validator(mode="after")
    def _network_fields(self) -> WarehouseSettings:
        if self.type == "duckdb":
            stray = sorted(self.model_fields_set - _DUCKDB_FIELDS)
            if stray:
                names = ", ".join(f"{ENV_PREFIX}WAREHOUSE__{f.upper()}" for f in stray)
                if "type" in self.model_fields_set:
                    raise ValueError(f"WAREHOUSE__TYPE=duckdb takes no {names}: unset it")
                # a warehouse's fields without its type: never fall back to DuckDB
                raise ValueError(
                    f"{names} set without {ENV_PREFIX}WAREHOUSE__TYPE: set it to postgres or "
                    "redshift (unset, the embedded DuckDB is used, which takes none of these)"
                )
            return self
        required = ("host", "dbname") if self.is_iam else ("host", "user", "dbname")
        missing = [name for name in required if not getattr(self, name)]
        if missing:
            names = ", ".join(f"{ENV_PREFIX}WAREHOUSE__{m.upper()}" for m in missing)
            raise ValueError(f"WAREHOUSE__TYPE={self.type} needs {names}")
        self._check_login()
        return self

    def _check_login(self) -> None:
        """METHOD and the IAM fields agree with each other and with TYPE (names, no values)."""
        w = f"{ENV_PREFIX}WAREHOUSE__"
        given = [f for f in _IAM_FIELDS if f in self.model_fields_set]
        if not self.is_iam:
            if given:
                names = ", ".join(w + f.upper() for f in given)
                raise ValueError(
                    f"{names}: for Redshift IAM authentication only: set {w}METHOD=iam "
                    "(or unset it)"
                )
            return
        if self.type != "redshift":
            raise ValueError(
                f"{w}METHOD=iam is Redshift IAM authentication: it needs {w}TYPE=redshift "
                f"(got {self.type})"
            )
        if self.password is not None:
            raise ValueError(
                f"{w}METHOD=iam logs in with a temporary password from AWS: unset {w}PASSWORD"
            )
        if self.user is not None:
            raise ValueError(
                f"{w}METHOD=iam: the database user is {w}DB_USER (provisioned) or your IAM "
                f"identity (Serverless): unset {w}USER"
            )
        if (self.cluster_id is None) == (self.workgroup is None):
            raise ValueError(
                f"{w}METHOD=iam needs exactly one of {w}CLUSTER_ID (a provisioned cluster) "
                f"and {w}WORKGROUP (Redshift Serverless)"
            )
        if self.workgroup is not None:
            stray = [f for f in ("db_user", "db_groups", "auto_create") if f in given]
            if stray:
                names = ", ".join(w + f.upper() for f in stray)
                raise ValueError(
                    f"{names}: Redshift Serverless (WORKGROUP) takes none of these, the "
                    "database user and its roles come from your IAM identity: unset them"
                )
        elif not self.db_user:
            raise ValueError(
                f"{w}METHOD=iam with {w}CLUSTER_ID needs {w}DB_USER (the database user)"
            )


def _check_sslrootcert(kind: str, path: Path, sslmode: SSLMode | None) -> None:
    name = f"{ENV_PREFIX}WAREHOUSE__SSLROOTCERT"
    if kind == "redshift":
        # neither dbt-redshift nor redshift_connector takes a CA file
        raise ValueError(
            f"{name} is for postgres: redshift_connector (dbt-redshift's driver) takes no CA "
            "file, it verifies against the Redshift CAs it bundles plus the system's trust "
            "store. Unset it; for a private CA, add it to the system's trust store (or point "
            "OpenSSL's SSL_CERT_FILE at a bundle that includes it)"
        )
    if sslmode == "disable":
        raise ValueError(
            f"{name} is set but {ENV_PREFIX}WAREHOUSE__SSLMODE=disable uses no TLS: unset one"
        )
    if not path.expanduser().is_file():
        raise ValueError(
            f"{name} file {path} does not exist (the CA that signed the server's certificate, PEM)"
        )


class SSHSettings(_Section):
    """The SSH bastion: ``DBT_RUNNER_SSH__*``. The tunnel is used only when HOST is set."""

    host: str | None = Field(None, description="bastion host; unset = connect directly")
    port: int = Field(22, ge=1, le=65535, description="bastion SSH port")
    remote_host: str | None = Field(
        None,
        description="where the bastion connects, when that differs from the name the "
        "warehouse's certificate is for (default: WAREHOUSE__HOST; with PROFILES_DIR: the "
        "target's host). dbt still connects by that name, and TLS verifies it",
    )
    user: str | None = Field(None, description="bastion user")
    private_key: Path | None = Field(None, description="private key file (mode 0600)")
    private_key_passphrase: SecretStr | None = Field(
        None, description="passphrase of the private key (secret)"
    )
    known_hosts: Path | None = Field(None, description="known_hosts file to verify the bastion")
    host_key: str | None = Field(
        None,
        description="pinned bastion key: 'ssh-ed25519 AAAA...' or a 'SHA256:...' fingerprint",
    )
    insecure_skip_host_key_check: bool = Field(
        False, description="DANGEROUS: accept any bastion host key (logs a warning)"
    )
    allow_agent: bool = Field(False, description="also try keys from a running ssh-agent")
    look_for_keys: bool = Field(False, description="also try keys found in ~/.ssh")
    local_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="local tunnel port; unset = stable port per bastion/warehouse, free fallback",
    )
    keepalive_s: float = Field(15.0, gt=0, description="SSH keepalive interval")
    connect_timeout_s: float = Field(10.0, gt=0, description="seconds to reach the bastion")

    @property
    def enabled(self) -> bool:
        """True when a bastion is configured."""
        return bool(self.host)

    def remote_end(self, host: str, port: int) -> tuple[str, int]:
        """Where the bastion forwards connections for the warehouse ``host:port``.

        >>> SSHSettings(host="b", user="u", remote_host="10.0.0.5",
        ...             insecure_skip_host_key_check=True, allow_agent=True).remote_end(
        ...     "warehouse.example.com", 5439)
        ('10.0.0.5', 5439)
        """
        return (self.remote_host or host, port)

    @model_validator(mode="after")
    def _check(self) -> SSHSettings:
        if not self.host:
            if self.remote_host:
                raise ValueError(
                    f"{ENV_PREFIX}SSH__REMOTE_HOST is set but {ENV_PREFIX}SSH__HOST is not: "
                    "it says where the bastion connects; set SSH__HOST too, or unset it"
                )
            return self
        if not self.user:
            raise ValueError(f"SSH__HOST is set: {ENV_PREFIX}SSH__USER is required too")
        if self.private_key is None and not (self.allow_agent or self.look_for_keys):
            raise ValueError(
                f"SSH__HOST is set: give {ENV_PREFIX}SSH__PRIVATE_KEY (a key file), "
                f"or opt in to {ENV_PREFIX}SSH__ALLOW_AGENT / __LOOK_FOR_KEYS"
            )
        if self.private_key is not None:
            _check_private_key(self.private_key)
        verifiers = sum([self.known_hosts is not None, bool(self.host_key)])
        if verifiers == 0 and not self.insecure_skip_host_key_check:
            raise ValueError(
                "the bastion's host key must be verified: set "
                f"{ENV_PREFIX}SSH__KNOWN_HOSTS or {ENV_PREFIX}SSH__HOST_KEY "
                f"(or, knowingly, {ENV_PREFIX}SSH__INSECURE_SKIP_HOST_KEY_CHECK=true)"
            )
        if verifiers and self.insecure_skip_host_key_check:
            raise ValueError(
                f"{ENV_PREFIX}SSH__INSECURE_SKIP_HOST_KEY_CHECK contradicts "
                f"{ENV_PREFIX}SSH__KNOWN_HOSTS/{ENV_PREFIX}SSH__HOST_KEY: set only one"
            )
        if self.known_hosts is not None and not self.known_hosts.is_file():
            raise ValueError(f"{ENV_PREFIX}SSH__KNOWN_HOSTS file {self.known_hosts} does not exist")
        return self


def _check_private_key(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ValueError(f"{ENV_PREFIX}SSH__PRIVATE_KEY file {path} does not exist") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{ENV_PREFIX}SSH__PRIVATE_KEY {path} is not a regular file")
    if os.name == "posix" and mode & 0o077:
        raise ValueError(
            f"{ENV_PREFIX}SSH__PRIVATE_KEY {path} is readable by other users "
            f"(mode {stat.filemode(mode)}); "
            f"fix it with: chmod 600 {path}"
        )


class RetrySettings(_Section):
    """Retry policy for transient failures: ``DBT_RUNNER_RETRY__*``."""

    attempts: int = Field(3, ge=1, le=20, description="tries in all (1 = no retry)")
    max_wait_s: float = Field(30.0, ge=0, description="longest back-off between tries")
    initial_wait_s: float = Field(1.0, ge=0, description="first back-off before jitter")
    retry_timeouts: bool = Field(False, description="also retry invocations that timed out")
    degrade_threads: int | None = Field(
        None,
        ge=1,
        description="threads for a retry after too_many_connections/conflict (unset = same)",
    )


class LockSettings(_Section):
    """The writer lock: ``DBT_RUNNER_LOCK__*`` (its wait is ``DBT_RUNNER_LOCK_TIMEOUT_S``)."""

    on_busy: Literal["fail", "skip"] = Field(
        "fail",
        description="when another run still holds the target's writer lock after "
        "LOCK_TIMEOUT_S: fail (kind locked, exit 3) or skip (exit 0, one line)",
    )


class OpenLineageSettings(_Section):
    """OpenLineage run events: ``DBT_RUNNER_OPENLINEAGE__*`` (needs the ``openlineage`` extra).

    Where the events go is the OpenLineage client's own configuration
    (``OPENLINEAGE_URL``, ``OPENLINEAGE__TRANSPORT__*``, ``OPENLINEAGE_CONFIG`` or an
    ``openlineage.yml``), as for every OpenLineage integration.
    """

    enabled: bool = Field(
        False,
        description="emit OpenLineage run events (START, then COMPLETE or FAIL) for each dbt "
        "command and each model, seed and snapshot it runs, with its input and output "
        "datasets; needs pip install 'dbt-runner[openlineage]'; the transport is the "
        "OpenLineage client's own configuration (OPENLINEAGE_URL, OPENLINEAGE__TRANSPORT__*, "
        "OPENLINEAGE_CONFIG)",
    )
    namespace: str | None = Field(
        None,
        min_length=1,
        description="the jobs' namespace (unset: OPENLINEAGE_NAMESPACE, else 'default', as "
        "OpenLineage's own integrations do)",
    )


class ConnectionSettings(_Section):
    """dbt's warehouse connections within a session: ``DBT_RUNNER_CONNECTIONS__*``."""

    reuse: Literal["off", "command", "session"] = Field(
        "command",
        description="PostgreSQL: command = a connection dbt closes is kept for the command's "
        "next node, reset first with DISCARD ALL to a fresh session's state, and closed when "
        "the command ends (each command logs in anew, as plain dbt); session = also kept for "
        "the next commands, until IDLE_S unused (fewer opens; a command may then run on "
        "sessions that logged in before a change of the role's settings or connection "
        "limit); off = a new connection per node, as plain dbt. Redshift and a profile with "
        "role are never kept. docs/performance.md section 11",
    )
    idle_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="REUSE=session: close a kept connection after this many seconds unused "
        "between commands",
    )


class Settings(BaseSettings):
    """All settings of a :class:`~dbt_runner.DbtSession`.

    >>> s = Settings(warehouse={"type": "duckdb", "path": "demo.duckdb"}, threads=3)
    >>> s.warehouse.type, s.threads
    ('duckdb', 3)
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
    )

    project_dir: Path | None = Field(None, description="dbt project (default: bundled models_sql)")
    profiles_dir: Path | None = Field(
        None,
        description="use this profiles.yml; unset = generate one from WAREHOUSE__*. With "
        "SSH__HOST dbt reads it as it is and the session routes the target's host/port "
        "through the tunnel",
    )
    target: str = Field(
        "dev",
        description="dbt target name (with your own profiles.yml, unset = its default target; "
        "with SSH__HOST the only target the tunnel serves)",
    )
    threads: int = Field(3, ge=1, le=64, description="default dbt threads")
    timeout_s: float | None = Field(
        None, gt=0, description="watchdog: most seconds one invocation may take"
    )
    lock_timeout_s: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="most seconds a writer (run_staging, build_staging, cycle) waits for the "
        "target's writer lock held by another run; 0 = do not wait",
    )
    staging_select: str = Field(
        "tag:staging",
        description="dbt selection of run_staging() and `dbt-runner staging` (bundled project: "
        "tag:staging)",
    )
    tests_select: str = Field(
        "tag:staging",
        description="dbt selection of run_tests() and `dbt-runner test` (bundled project: "
        "tag:staging)",
    )
    state_dir: Path | None = Field(
        None,
        description="where dbt's target/ and logs/ go (default: your project's own dir; for the "
        "bundled project or a read-only one, ~/.cache/dbt_runner/<hash>)",
    )
    raw_schema: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_$]*$",
        description="schema of the raw source tables: the dbt var raw_schema of every command "
        "(unset = the project's default, raw)",
    )
    vars: dict[str, Any] = Field(
        default_factory=dict,
        description="dbt vars for every command, a JSON object (e.g. "
        '{"test_window_s": 3600}); vars a command passes itself win, key by key',
    )
    artifact_cache: str | None = Field(
        None,
        description="a directory (a shared volume) or s3://bucket/prefix where sessions share "
        "dbt's partial parse and the last run's results, keyed by a fingerprint: a fresh "
        "container starts without a full parse, and dbt retry / resume=True find the failed "
        "run's results (s3:// needs boto3: the 's3' extra); unset = no shared cache",
    )
    gc_freeze: bool = Field(
        False,
        description="true = when a session's command is the first to import dbt in this "
        "process, move the process's heap out of the garbage collector's way (gc.freeze), as "
        "the dbt-runner console script always does: a faster start where dbt builds or loads "
        "a large manifest, for a process that runs its task and exits (a Kubernetes pod, an "
        "Airflow task's process); frozen objects are never collected, so not for a long-lived host "
        "(a notebook, a service); false = the host's collector as it was",
    )
    install_deps: InstallDeps = Field(
        "auto",
        description="dbt deps before a session's first command (a first `deps` does it "
        "itself): auto = when packages.yml/dependencies.yml exists and packages are missing "
        "or the lock changed; always; never",
    )
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)  # type: ignore[arg-type]
    ssh: SSHSettings = Field(default_factory=SSHSettings)  # type: ignore[arg-type]
    retry: RetrySettings = Field(default_factory=RetrySettings)  # type: ignore[arg-type]
    lock: LockSettings = Field(default_factory=LockSettings)  # type: ignore[arg-type]
    openlineage: OpenLineageSettings = Field(default_factory=OpenLineageSettings)  # type: ignore[arg-type]
    connections: ConnectionSettings = Field(default_factory=ConnectionSettings)  # type: ignore[arg-type]

    #: field -> the command-line flag that gave it (errors name the flag), see flags_of()
    _flags: dict[str, str] = PrivateAttr(default_factory=dict)

    def __init__(self, _flags: Mapping[str, str] | None = None, **values: Any) -> None:
        """``_flags`` (for a command line): field -> the flag whose value ``values`` holds,
        so that an error names ``--project-dir`` rather than ``DBT_RUNNER_PROJECT_DIR``."""
        unknown = unknown_variables(os.environ)
        if unknown:
            raise ConfigurationError("invalid dbt_runner settings:\n  " + "\n  ".join(unknown))
        flags = {name: flag for name, flag in (_flags or {}).items() if name in values}
        building = _BUILDING_FLAGS.set(flags)
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc, flags)) from None
        except SettingsError as exc:  # an env var pydantic-settings cannot decode (bad JSON)
            raise ConfigurationError(_undecodable(exc)) from None
        finally:
            _BUILDING_FLAGS.reset(building)
        self._flags = flags

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.project_dir is not None and not (self.project_dir / "dbt_project.yml").is_file():
            raise ValueError(
                f"{setting_name('project_dir')} {self.project_dir} has no dbt_project.yml"
            )
        if self.profiles_dir is not None and not (self.profiles_dir / "profiles.yml").is_file():
            raise ValueError(
                f"{setting_name('profiles_dir')} {self.profiles_dir} has no profiles.yml"
            )
        wh = self.warehouse
        if (
            self.profiles_dir is None
            and wh.type != "duckdb"
            and wh.password is None
            and not (wh.is_iam)
        ):
            # the generated profile logs in with a password: without one the driver would
            # fail only after dbt parsed, with "fe_sendauth: no password supplied"
            iam = f"{ENV_PREFIX}WAREHOUSE__METHOD=iam, or " if wh.type == "redshift" else ""
            raise ValueError(
                f"WAREHOUSE__TYPE={wh.type} logs in with a password: set "
                f"{ENV_PREFIX}WAREHOUSE__PASSWORD (or use {iam}your own profiles.yml with "
                f"{ENV_PREFIX}PROFILES_DIR)"
            )
        if wh.sslrootcert is not None:
            if self.profiles_dir is not None:
                raise ValueError(
                    f"{ENV_PREFIX}WAREHOUSE__SSLROOTCERT is for the generated profile: with "
                    f"{ENV_PREFIX}PROFILES_DIR, your target's own sslrootcert applies (set it "
                    "there)"
                )
            _check_sslrootcert(wh.type, wh.sslrootcert, wh.effective_sslmode)
        if self.ssh.enabled and self.profiles_dir is not None:
            # the tunnel's remote end is the chosen target's own host/port
            from ._profile import tunnel_target

            tunnel_target(self.profiles_dir, self.resolved_project_dir, self.chosen_target)
        elif self.ssh.enabled and self.warehouse.type == "duckdb":
            raise ValueError(
                f"{ENV_PREFIX}SSH__HOST is set but {ENV_PREFIX}WAREHOUSE__TYPE=duckdb has nothing "
                "to tunnel to: unset the SSH host or use redshift/postgres"
            )
        if self.artifact_cache is not None:
            _check_artifact_cache(self.artifact_cache)
        if self.raw_schema is not None and self.vars.get("raw_schema", self.raw_schema) != (
            self.raw_schema
        ):
            raise ValueError(
                f"{ENV_PREFIX}RAW_SCHEMA and raw_schema in {ENV_PREFIX}VARS disagree: set only one"
            )
        return self

    @property
    def dbt_vars(self) -> dict[str, Any]:
        """The dbt vars every command gets: ``vars`` plus ``raw_schema`` when set.

        >>> Settings(raw_schema="landing", vars={"test_window_s": 3600}).dbt_vars
        {'test_window_s': 3600, 'raw_schema': 'landing'}
        """
        merged = dict(self.vars)
        if self.raw_schema is not None:
            merged["raw_schema"] = self.raw_schema
        return merged

    @property
    def chosen_target(self) -> str | None:
        """``target`` when it was set (env or keyword), else None: the profile's default.

        With a generated profile the target is always ``target``.
        """
        return self.target if "target" in self.model_fields_set else None

    @property
    def resolved_project_dir(self) -> Path:
        """The dbt project this session runs."""
        return (self.project_dir or bundled_project_dir()).resolve()


def _check_artifact_cache(value: str) -> None:
    """A directory or ``s3://bucket[/prefix]``; nothing else (no silent other meaning)."""
    name = f"{ENV_PREFIX}ARTIFACT_CACHE"
    if not value.strip():
        raise ValueError(f"{name} is empty: unset it, or name a directory or s3://bucket/prefix")
    scheme, sep, rest = value.partition("://")
    if not sep:
        return
    if scheme != "s3":
        raise ValueError(
            f"{name}: {scheme}:// is not supported; name a directory or s3://bucket/prefix"
        )
    bucket = rest.split("/", 1)[0]
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise ValueError(f"{name}: {bucket!r} is not an S3 bucket name (s3://bucket/prefix)")


def _describe(exc: ValidationError, flags: Mapping[str, str]) -> str:
    """A ValidationError as 'SETTING: problem' lines, without the offending values.

    The one place settings errors are worded: a field is named as the user gave it
    (:func:`setting_name`); a whole-settings check names its settings in its own words.
    """
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(p).rstrip("_") for p in err["loc"] if not isinstance(p, int)]
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{setting_name('__'.join(loc), flags)}: {msg}" if loc else msg)
    return "invalid dbt_runner settings:\n  " + "\n  ".join(lines)


def known_variables() -> set[str]:
    """Every ``DBT_RUNNER_*`` name dbt_runner reads: the settings (a section also as one
    JSON object) and :data:`OTHER_VARIABLES`.

    >>> {"DBT_RUNNER_THREADS", "DBT_RUNNER_SSH", "DBT_RUNNER_SSH__HOST"} <= known_variables()
    True
    """
    names = set(OTHER_VARIABLES)
    for name, field in Settings.model_fields.items():
        top = ENV_PREFIX + name.upper()
        names.add(top)
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            for sub, subfield in section.model_fields.items():
                names.add(f"{top}__{sub.upper()}")  # schema_ as well as its alias
                names.add(f"{top}__{(subfield.alias or sub).upper()}")
    return names


def unknown_variables(environ: Any) -> list[str]:
    """One line per ``DBT_RUNNER_*`` variable in ``environ`` that is no setting, with the
    closest known name (names only: values may be secrets).

    >>> unknown_variables({"DBT_RUNNER_SSH_HOST": "bastion", "DBT_RUNNER_THREADS": "3"})
    ['DBT_RUNNER_SSH_HOST is not a dbt_runner setting: did you mean DBT_RUNNER_SSH__HOST?']
    """
    known = known_variables()
    lines = []
    for name in sorted(environ):
        upper = name.upper()  # pydantic-settings reads them case-insensitively
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see docs/configuration.md"
        lines.append(f"{name} is not a dbt_runner setting: {hint}")
    return lines


_UNDECODABLE = re.compile(r'error parsing value for field "(?P<field>[^"]+)"')


def _undecodable(exc: SettingsError) -> str:
    """pydantic-settings' "error parsing value for field" as the variable and the JSON
    error's position (not the value: it may hold a secret)."""
    match = _UNDECODABLE.search(str(exc))
    name = ENV_PREFIX + match["field"].upper() if match else "a DBT_RUNNER_* variable"
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        why = f"not valid JSON: {cause.msg} at line {cause.lineno} column {cause.colno}"
    else:
        why = f"cannot be decoded ({type(cause).__name__ if cause else exc})"
    return f"invalid dbt_runner settings:\n  {name}: {why} (it takes a JSON object)"
