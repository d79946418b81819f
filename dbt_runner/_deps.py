"""Packages: when a session runs ``dbt deps`` before its first command (and parse).

A session whose first command is ``deps`` lets that command install them (once, as
plain dbt); ``clean`` needs none (``DbtSession._install_deps``).

``DBT_RUNNER_INSTALL_DEPS``:

- ``auto`` (default): when the project has a ``packages.yml`` or
  ``dependencies.yml`` and its packages are not installed as declared — the
  install path (``packages-install-path``, default ``dbt_packages``) or a
  package named in ``package-lock.yml`` is missing, or ``packages.yml`` /
  ``dependencies.yml`` / ``package-lock.yml`` changed since a session last
  installed them (a hash kept in the install path). Packages installed by
  plain ``dbt deps`` (every locked package present, no hash yet) are trusted
  as they are and become the baseline. A project without packages costs two
  ``stat`` calls.
- ``always``: in every session.
- ``never``: not at all; a project whose packages are missing then fails to
  parse with dbt's own message (kind ``configuration``).

>>> deps_reason(bundled_project_dir(), "auto") is None      # doctest: +SKIP
True
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import yaml

__all__ = ["deps_reason", "record_installed"]

_SPEC_FILES = ("packages.yml", "dependencies.yml")
_LOCK = "package-lock.yml"
#: kept in the install path; dbt deps empties that dir, so it goes with the packages
_MARKER = ".dbt_runner_deps.sha256"


def _load(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _install_path(project_dir: Path) -> Path | None:
    """The project's ``packages-install-path``, or None when it is jinja (unknown here)."""
    project = _load(project_dir / "dbt_project.yml")
    value = project.get("packages-install-path") if isinstance(project, dict) else None
    if value is None:
        return project_dir / "dbt_packages"
    text = str(value)
    if "{{" in text or "{%" in text:
        return None
    path = Path(text).expanduser()
    return path if path.is_absolute() else project_dir / path


def _fingerprint(project_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in (*_SPEC_FILES, _LOCK):
        path = project_dir / name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"(absent)")
        digest.update(b"\0")
    return digest.hexdigest()


def _locked_names(project_dir: Path) -> list[str]:
    lock = _load(project_dir / _LOCK)
    packages = lock.get("packages") if isinstance(lock, dict) else None
    if not isinstance(packages, list):
        return []
    return [str(p["name"]) for p in packages if isinstance(p, dict) and p.get("name")]


def _declares_packages(project_dir: Path) -> bool:
    for name in _SPEC_FILES:
        path = project_dir / name
        if path.is_file():
            spec = _load(path)
            # dependencies.yml may hold only `projects:` (dbt Mesh): nothing to install
            if not isinstance(spec, dict) or spec.get("packages"):
                return True
    return False


def deps_reason(project_dir: Path, mode: str) -> str | None:
    """Why ``dbt deps`` must run now under ``mode`` (auto/always/never), or None."""
    if mode == "never":
        return None
    if mode == "always":
        return "DBT_RUNNER_INSTALL_DEPS=always"
    if not _declares_packages(project_dir):
        return None
    install = _install_path(project_dir)
    if install is None:
        return "packages-install-path is templated: cannot tell what is installed"
    if not install.is_dir():
        return f"{install} does not exist"
    locked = _locked_names(project_dir)
    missing = [n for n in locked if not (install / n).is_dir()]
    if missing:
        return f"package(s) {', '.join(missing)} missing from {install}"
    marker = install / _MARKER
    try:
        recorded = marker.read_text().strip()
    except OSError:
        if not locked:
            return f"no {_LOCK} says which packages {install} should hold"
        # installed by plain `dbt deps` (or baked into an image): every locked package is
        # there, so trust it and take it as the baseline instead of reinstalling
        record_installed(project_dir)
        return None
    if recorded != _fingerprint(project_dir):
        return "packages.yml, dependencies.yml or package-lock.yml changed since the last install"
    return None


def record_installed(project_dir: Path) -> None:
    """Remember what ``dbt deps`` just installed (after it succeeded)."""
    install = _install_path(project_dir)
    if install is None or not install.is_dir():
        return
    # a read-only install path: auto then runs deps at each open
    with contextlib.suppress(OSError):
        (install / _MARKER).write_text(_fingerprint(project_dir) + "\n")
