"""The session's ``profiles.yml``: private (0700 dir, 0600 file), removed on close.

:class:`GeneratedProfile` is made from ``DBT_RUNNER_WAREHOUSE__*``. The password
never touches the file: the profile reads it with ``env_var('DBT_ENV_SECRET_…')`` —
dbt scrubs values of ``DBT_ENV_SECRET_*`` variables from its logs — and the variable
exists only while the session is open.

A user's own ``profiles.yml`` (``DBT_RUNNER_PROFILES_DIR``) is used as it is, with or
without a tunnel. Through a bastion, both keep the warehouse's own ``host``/``port``:
the session routes that address to the tunnel's local end
(:mod:`dbt_runner._dbt.routes`), so TLS verifies the warehouse's name and the profile
(and with it dbt's partial parse) never changes with the tunnel's port.

The tunnel's remote end for a user's profile is the target's own ``host``/``port``
(:func:`tunnel_target`, or ``SSH__REMOTE_HOST``); when they are jinja
(``{{ env_var('PGHOST') }}``) just those two values are rendered, with dbt's own
profile renderer.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ._exceptions import ConfigurationError
from ._settings import setting_name

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._settings import Settings

__all__ = [
    "GeneratedProfile",
    "ProfileTarget",
    "project_profile_name",
    "render_target",
    "tunnel_target",
]

_ENV = "DBT_RUNNER_"
#: ports dbt's adapters default to when a target gives none
_DEFAULT_PORTS = {"postgres": 5432, "redshift": 5439}


def project_profile_name(project_dir: Path) -> str:
    """The ``profile:`` a dbt project asks for."""
    try:
        data = yaml.safe_load((project_dir / "dbt_project.yml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read {project_dir / 'dbt_project.yml'}: {exc}") from exc
    name = (data or {}).get("profile")
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{project_dir / 'dbt_project.yml'} names no profile")
    return name


class GeneratedProfile:
    """A ``profiles.yml`` in a private temp dir (0700 dir, 0600 file)."""

    def __init__(self, settings: Settings, profile_name: str) -> None:
        self._settings = settings
        self._profile_name = profile_name
        self._secret_env = f"DBT_ENV_SECRET_DBT_RUNNER_{secrets.token_hex(6).upper()}"
        self.dir = Path(tempfile.mkdtemp(prefix="dbt_runner_profile_"))
        os.chmod(self.dir, 0o700)
        password = settings.warehouse.password
        if password is not None:
            os.environ[self._secret_env] = password.get_secret_value()

    def __repr__(self) -> str:
        return f"GeneratedProfile(dir={str(self.dir)!r}, profile={self._profile_name!r})"

    def relogin(self, settings: Settings) -> bool:
        """Log in with ``settings``' user and password from now on (a refreshed Redshift IAM
        login): the secret variable changes at once; True when the user differs, and the
        file must be written again."""
        password = settings.warehouse.password
        if password is not None:
            os.environ[self._secret_env] = password.get_secret_value()
        changed = settings.warehouse.user != self._settings.warehouse.user
        self._settings = settings
        return changed

    def write(self) -> Path:
        """Write the profile; returns its directory.

        Its ``host``/``port`` are the warehouse's own, with or without a tunnel (the
        session routes them through it), so the file is the same in every session of
        the same settings.
        """
        output = self._output()
        document = {
            self._profile_name: {
                "target": self._settings.target,
                "outputs": {self._settings.target: output},
            }
        }
        path = self.dir / "profiles.yml"
        tmp = self.dir / "profiles.yml.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(document, fh, sort_keys=True)
        os.replace(tmp, path)
        return self.dir

    def _output(self) -> dict[str, Any]:
        s = self._settings
        wh = s.warehouse
        if wh.type == "duckdb":
            return {
                "type": "duckdb",
                "path": str(wh.path.expanduser().resolve()),
                "schema": wh.schema,
                "threads": s.threads,
            }
        output: dict[str, Any] = {
            "type": wh.type,
            "host": wh.host,
            "port": wh.effective_port,
            "user": wh.user,
            "password": (
                f"{{{{ env_var('{self._secret_env}') }}}}" if wh.password is not None else ""
            ),
            "dbname": wh.dbname,
            "schema": wh.schema,
            "threads": s.threads,
            "connect_timeout": wh.connect_timeout_s,
            "sslmode": wh.effective_sslmode,
            # dbt's own connection retries stay short: our tenacity policy is the retry layer
            "retries": 1,
        }
        if wh.sslrootcert is not None:  # postgres only (checked by the settings)
            output["sslrootcert"] = str(wh.sslrootcert.expanduser().resolve())
        if wh.type == "redshift":
            output["method"] = "database"
            output["ra3_node"] = True
        else:
            output["keepalives_idle"] = 30
        return output

    def close(self) -> None:
        """Remove the file and the secret's environment variable (idempotent)."""
        os.environ.pop(self._secret_env, None)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------- the user's own profiles.yml
@dataclass(frozen=True)
class ProfileTarget:
    """The target of a user's ``profiles.yml`` that a session tunnels to."""

    #: the user's ``profiles.yml``
    path: Path
    profile: str
    target: str
    type: str
    #: the target's ``host``/``port`` (rendered when jinja): the name dbt connects to and
    #: TLS verifies; the tunnel forwards to it (or to ``SSH__REMOTE_HOST``)
    host: str
    port: int


def _read_profiles(
    profiles_dir: Path, flags: Mapping[str, str] | None = None
) -> tuple[Path, dict[str, Any]]:
    path = profiles_dir / "profiles.yml"
    given = setting_name("profiles_dir", flags)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{given}: cannot read {path}: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigurationError(f"{given}: {path} is not a YAML mapping of profiles")
    return path, document


def _chosen(
    profiles_dir: Path, project_dir: Path, target: str | None, flags: Mapping[str, str] | None
) -> tuple[Path, dict[str, Any], str, str, dict[str, Any]]:
    """(path, document, profile name, target name, target output) as dbt would choose them.

    Profile: ``DBT_PROFILE`` (dbt's own variable), else the project's ``profile:``.
    Target: ``target`` (``DBT_RUNNER_TARGET`` or ``--target``), else ``DBT_TARGET``,
    else the profile's ``target:``, else ``default`` — dbt's order. An error names
    where the missing one came from. ``flags``: see :func:`~dbt_runner._settings.flags_of`.
    """
    path, document = _read_profiles(profiles_dir, flags)
    profile = os.environ.get("DBT_PROFILE") or project_profile_name(project_dir)
    entry = document.get(profile)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(k for k in document if k != "config")) or "none"
        by = "DBT_PROFILE" if os.environ.get("DBT_PROFILE") else project_dir / "dbt_project.yml"
        raise ConfigurationError(
            f"{setting_name('profiles_dir', flags)}: {path} has no profile {profile!r} "
            f"(the one {by} names); profiles there: {known}"
        )
    if target:
        name, chose = target, setting_name("target", flags)
    elif os.environ.get("DBT_TARGET"):
        name, chose = os.environ["DBT_TARGET"], "DBT_TARGET"
    elif entry.get("target"):
        name, chose = entry["target"], f"the target: of profile {profile!r}"
    else:
        name, chose = "default", "dbt's default target"
    outputs = entry.get("outputs")
    output = outputs.get(name) if isinstance(outputs, dict) else None
    if not isinstance(output, dict):
        known = ", ".join(sorted(outputs)) if isinstance(outputs, dict) else "none"
        raise ConfigurationError(
            f"{chose}: profile {profile!r} in {path} has no target {name!r} (its targets: {known})"
        )
    return path, document, profile, str(name), output


def _render(value: Any, keypath: tuple[str, ...]) -> Any:
    """One profile value rendered the way dbt renders it (``env_var``, ``var``...)."""
    from ._dbt import render_value

    return render_value(value, keypath)


def render_target(
    profiles_dir: Path,
    project_dir: Path,
    target: str | None,
    flags: Mapping[str, str] | None = None,
) -> tuple[str, str, dict[str, Any]]:
    """(profile, target, output) of the chosen target, every value rendered.

    Secrets too, so this stays in memory: ``doctor`` uses it to connect as dbt would.
    ``flags``: which settings a command-line flag gave (errors name the flag).
    """
    path, _, profile, name, output = _chosen(profiles_dir, project_dir, target, flags)
    rendered: dict[str, Any] = {}
    for key, value in output.items():
        try:
            rendered[str(key)] = _render(value, ("outputs", name, str(key)))
        except Exception as exc:
            # the message of a failed render may quote the value: name only the key
            raise ConfigurationError(
                f"{setting_name('profiles_dir', flags)}: cannot render {key!r} of target "
                f"{name!r} in {path} "
                f"({type(exc).__name__})"
            ) from None
    return profile, name, rendered


def tunnel_target(
    profiles_dir: Path,
    project_dir: Path,
    target: str | None,
    flags: Mapping[str, str] | None = None,
) -> ProfileTarget:
    """The target a session with ``DBT_RUNNER_SSH__HOST`` tunnels to, checked.

    Raises :class:`ConfigurationError` naming the setting when the profile or the
    target is missing, the target has no host (e.g. DuckDB) or no port, or is of a
    type whose connections dbt_runner cannot route through the tunnel (only postgres
    and redshift: :mod:`dbt_runner._dbt.routes`).
    ``flags``: which settings a command-line flag gave (errors name the flag).
    """
    path, _, profile, name, output = _chosen(profiles_dir, project_dir, target, flags)
    kind = str(output.get("type", "?"))
    where = f"target {name!r} of profile {profile!r} in {path}"
    raw_host, raw_port = output.get("host"), output.get("port")
    if raw_host in (None, ""):
        raise ConfigurationError(
            f"{_ENV}SSH__HOST is set but {where} (type {kind}) has no host to tunnel to: "
            f"unset {_ENV}SSH__HOST or choose a target with a host "
            f"({setting_name('target', flags)})"
        )
    if kind not in _DEFAULT_PORTS:
        raise ConfigurationError(
            f"{_ENV}SSH__HOST is set but {where} is of type {kind}: dbt_runner tunnels "
            "postgres and redshift targets only; unset SSH__HOST (and run your own tunnel) "
            f"or choose such a target ({_ENV}TARGET)"
        )
    try:
        host = _render(raw_host, ("outputs", name, "host"))
        port = _render(raw_port, ("outputs", name, "port"))
    except Exception as exc:
        raise ConfigurationError(
            f"{_ENV}SSH__HOST: cannot render the host/port of {where} (the tunnel's remote "
            f"end): {exc}"
        ) from None
    if port in (None, ""):
        port = _DEFAULT_PORTS.get(kind)
        if port is None:
            raise ConfigurationError(
                f"{_ENV}SSH__HOST is set but {where} (type {kind}) gives no port: add port: to it"
            )
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{where}: port {port!r} is not a number") from None
    if not host or not isinstance(host, str) or not 0 < port < 65536:
        raise ConfigurationError(f"{where}: host/port {host!r}:{port!r} are not usable")
    return ProfileTarget(path, profile, name, kind, host, port)
