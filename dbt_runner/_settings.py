"""Settings: every knob, read from ``DBT_RUNNER_*`` environment variables.

Constructor keywords override the environment. Invalid input raises
:class:`~dbt_runner.ConfigurationError` naming the environment variable and the
fix, before anything connects; secret values never appear in that message.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from ._exceptions import ConfigurationError

__all__ = [
    "ConnectionSettings",
    "LockSettings",
    "RetrySettings",
    "SSHSettings",
    "Settings",
    "WarehouseSettings",
    "bundled_project_dir",
]

ENV_PREFIX = "DBT_RUNNER_"

WarehouseType = Literal["duckdb", "postgres", "redshift"]
InstallDeps = Literal["auto", "always", "never"]
SSLMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

#: variables with the prefix that dbt_runner reads outside :class:`Settings`
OTHER_VARIABLES = {f"{ENV_PREFIX}LOG_FORMAT": "the CLI's --log-format"}
#: the warehouse fields that mean something on the embedded DuckDB
_DUCKDB_FIELDS = frozenset({"type", "path", "schema_", "connect_timeout_s"})

_DEFAULT_PORTS = {"postgres": 5432, "redshift": 5439}
# Secure by default: both verify-ca choices work through a tunnel (the bastion
# forwards to 127.0.0.1, which a verify-full host-name check would reject).
_DEFAULT_SSLMODE: dict[str, SSLMode] = {"postgres": "require", "redshift": "verify-ca"}


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
        None, description="sslmode (default verify-ca on redshift, require on postgres)"
    )
    path: Path = Field(Path("dbt_runner.duckdb"), description="DuckDB database file")
    connect_timeout_s: int = Field(10, ge=1, description="seconds to wait for a connection")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

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
        missing = [name for name in ("host", "user", "dbname") if not getattr(self, name)]
        if missing:
            names = ", ".join(f"{ENV_PREFIX}WAREHOUSE__{m.upper()}" for m in missing)
            raise ValueError(f"WAREHOUSE__TYPE={self.type} needs {names}")
        return self


class SSHSettings(_Section):
    """The SSH bastion: ``DBT_RUNNER_SSH__*``. The tunnel is used only when HOST is set."""

    host: str | None = Field(None, description="bastion host; unset = connect directly")
    port: int = Field(22, ge=1, le=65535, description="bastion SSH port")
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

    @model_validator(mode="after")
    def _check(self) -> SSHSettings:
        if not self.host:
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
        "SSH__HOST the session tunnels a private copy in which only the target's host/port "
        "point at the tunnel",
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
    install_deps: InstallDeps = Field(
        "auto",
        description="dbt deps when a session opens: auto = when packages.yml/dependencies.yml "
        "exists and packages are missing or the lock changed; always; never",
    )
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)  # type: ignore[arg-type]
    ssh: SSHSettings = Field(default_factory=SSHSettings)  # type: ignore[arg-type]
    retry: RetrySettings = Field(default_factory=RetrySettings)  # type: ignore[arg-type]
    lock: LockSettings = Field(default_factory=LockSettings)  # type: ignore[arg-type]
    connections: ConnectionSettings = Field(default_factory=ConnectionSettings)  # type: ignore[arg-type]

    def __init__(self, **values: Any) -> None:
        unknown = unknown_variables(os.environ)
        if unknown:
            raise ConfigurationError("invalid dbt_runner settings:\n  " + "\n  ".join(unknown))
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc)) from None
        except SettingsError as exc:  # an env var pydantic-settings cannot decode (bad JSON)
            raise ConfigurationError(_undecodable(exc)) from None

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.project_dir is not None and not (self.project_dir / "dbt_project.yml").is_file():
            raise ValueError(f"{ENV_PREFIX}PROJECT_DIR {self.project_dir} has no dbt_project.yml")
        if self.profiles_dir is not None and not (self.profiles_dir / "profiles.yml").is_file():
            raise ValueError(f"{ENV_PREFIX}PROFILES_DIR {self.profiles_dir} has no profiles.yml")
        wh = self.warehouse
        if self.profiles_dir is None and wh.type != "duckdb" and wh.password is None:
            # the generated profile logs in with a password: without one the driver would
            # fail only after dbt parsed, with "fe_sendauth: no password supplied"
            raise ValueError(
                f"WAREHOUSE__TYPE={wh.type} logs in with a password: set "
                f"{ENV_PREFIX}WAREHOUSE__PASSWORD (or use your own profiles.yml with "
                f"{ENV_PREFIX}PROFILES_DIR)"
            )
        if self.ssh.enabled and self.profiles_dir is not None:
            # the tunnel's remote end is the chosen target's own host/port
            from ._profile import tunnel_target

            tunnel_target(self.profiles_dir, self.resolved_project_dir, self.chosen_target)
        elif self.ssh.enabled and self.warehouse.type == "duckdb":
            raise ValueError(
                f"{ENV_PREFIX}SSH__HOST is set but {ENV_PREFIX}WAREHOUSE__TYPE=duckdb has nothing "
                "to tunnel to: unset the SSH host or use redshift/postgres"
            )
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


def _describe(exc: ValidationError) -> str:
    """A ValidationError as 'ENV_VAR: problem' lines, without the offending values."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(p).rstrip("_") for p in err["loc"] if not isinstance(p, int)]
        field = ENV_PREFIX + "__".join(p.upper() for p in loc) if loc else "settings"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{field}: {msg}")
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
