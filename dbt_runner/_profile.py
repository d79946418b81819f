"""Generated ``profiles.yml``: private, secret-free on disk, removed on close.

The password never touches the file: the profile reads it with
``env_var('DBT_ENV_SECRET_…')`` — dbt scrubs values of ``DBT_ENV_SECRET_*``
variables from its logs — and the variable exists only while the session is
open.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ._exceptions import ConfigurationError
from ._settings import Settings

__all__ = ["GeneratedProfile", "project_profile_name"]


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

    def write(self, host: str | None = None, port: int | None = None) -> Path:
        """(Re)write the profile, pointing at ``host:port`` when given (a tunnel)."""
        output = self._output(host, port)
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

    def _output(self, host: str | None, port: int | None) -> dict[str, Any]:
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
            "host": host or wh.host,
            "port": port or wh.effective_port,
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
