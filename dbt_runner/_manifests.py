"""Parsed manifests a long-lived session (or a worker's parent) keeps, and when to re-parse.

dbt parses a project into a manifest; a session hands that manifest to every
invocation instead of parsing again. It stays valid while the files it was
parsed from are unchanged, so before each invocation :class:`ManifestCache`
takes a :class:`ProjectFiles` snapshot — path, size and mtime (ns) of every
file dbt reads: ``dbt_project.yml``, ``packages.yml``/``dependencies.yml``/
``selectors.yml``, the model/macro/seed/snapshot/test/analysis/docs paths the
project config names, the packages install dir, and a user's own
``profiles.yml`` — and drops a manifest whose snapshot differs. The session
then runs dbt's ``parse``, whose partial parse re-reads only what changed.

The walk is a few ``os.scandir`` calls (about a millisecond for the bundled
project, docs/performance.md); it never reads file contents. What it does not
see: a file rewritten with the same size within the same nanosecond, and
environment variables read with ``env_var()`` (a process's own environment
does not change under a session; a new process parses anew anyway).
"""

from __future__ import annotations

import functools
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._dbt import TOP_FILES

__all__ = ["ManifestCache", "ProjectFiles", "project_files"]

log = logging.getLogger("dbt_runner.session")

#: dbt_project.yml key -> its default, for every path dbt parses files from
_PATH_KEYS = {
    "model-paths": ["models"],
    "macro-paths": ["macros"],
    "seed-paths": ["seeds"],
    "snapshot-paths": ["snapshots"],
    "test-paths": ["tests"],
    "analysis-paths": ["analyses"],
    "docs-paths": [],  # dbt's default is every path above; they are walked already
}
_TOP_FILES = TOP_FILES
#: manifests kept per cache (one per (target, vars) key, least recently used dropped):
#: a DAG that passes a new --vars value every cycle must not grow memory without bound
MAX_MANIFESTS = 4
#: no walk follows more than this many files (a runaway tree is reported, not walked)
_MAX_FILES = 200_000

#: A snapshot: (path, size, mtime_ns) of every watched file, sorted.
ProjectFiles = tuple[tuple[str, int, int], ...]


@functools.lru_cache(maxsize=16)
def _project_paths(project_dir: Path, size: int, mtime_ns: int) -> tuple[Path, ...]:
    """The directories dbt reads for ``project_dir``, from its dbt_project.yml (read
    again only when its size or mtime changes: YAML parsing is most of a check's cost)."""
    import yaml

    config: Any = {}
    try:
        text = (project_dir / "dbt_project.yml").read_text()
        config = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    if not isinstance(config, dict):
        config = {}
    dirs: list[str] = []
    for key, default in _PATH_KEYS.items():
        value = config.get(key, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            value = default  # templated or odd: fall back to dbt's default
        dirs += value
    install = config.get("packages-install-path", "dbt_packages")
    dirs.append(install if isinstance(install, str) else "dbt_packages")
    seen: dict[Path, None] = {}
    for d in dirs:
        seen.setdefault(project_dir / d, None)
    return tuple(seen)


def _walk(root: Path, out: list[tuple[str, int, int]]) -> None:
    stack = [str(root)]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            if entry.name.startswith(".") and entry.name != ".dbtignore":
                continue
            try:
                if entry.is_dir():
                    stack.append(entry.path)
                    continue
                st = entry.stat()
            except OSError:
                continue
            out.append((entry.path, st.st_size, st.st_mtime_ns))
            if len(out) > _MAX_FILES:
                raise OverflowError(f"more than {_MAX_FILES} files under {root}")


def project_files(project_dir: Path, extra: Iterable[Path] = ()) -> ProjectFiles:
    """Size and mtime of every file dbt would parse for ``project_dir``, plus ``extra``.

    >>> snap = project_files(Path("models_sql"))                      # doctest: +SKIP
    >>> snap == project_files(Path("models_sql"))                     # doctest: +SKIP
    True
    """
    out: list[tuple[str, int, int]] = []
    for name in _TOP_FILES:
        _stat_into(project_dir / name, out)
    for path in extra:
        _stat_into(path, out)
    config = next((f for f in out if f[0] == str(project_dir / "dbt_project.yml")), None)
    size, mtime_ns = (config[1], config[2]) if config else (-1, -1)
    try:
        for directory in _project_paths(project_dir, size, mtime_ns):
            _walk(directory, out)
    except OverflowError as exc:  # pragma: no cover - a pathological tree
        log.warning("not watching project files for changes: %s", exc)
        return ()
    return tuple(sorted(out))


def _stat_into(path: Path, out: list[tuple[str, int, int]]) -> None:
    try:
        st = path.stat()
    except OSError:
        return
    out.append((str(path), st.st_size, st.st_mtime_ns))


class ManifestCache:
    """Manifests by ``(target, vars)``, each valid while the project's files are unchanged.

    One place decides when to re-parse, for a :class:`~dbt_runner.DbtSession` and for
    the warm worker's parent alike.

    >>> cache = ManifestCache(Path("models_sql"))                     # doctest: +SKIP
    >>> files = cache.snapshot()                                      # doctest: +SKIP
    >>> cache.get(("", ""), files) is None                            # doctest: +SKIP
    True
    """

    def __init__(self, project_dir: Path, profiles_yml: Path | None = None) -> None:
        self.project_dir = project_dir
        #: a user's own profiles.yml (a generated one is the session's: not watched)
        self.profiles_yml = profiles_yml
        self._entries: OrderedDict[tuple[str, str], tuple[Any, ProjectFiles]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def snapshot(self) -> ProjectFiles:
        """The project's files as they are now (take it *before* parsing)."""
        extra = [self.profiles_yml] if self.profiles_yml is not None else []
        return project_files(self.project_dir, extra)

    def get(self, key: tuple[str, str], files: ProjectFiles) -> Any | None:
        """The manifest for ``key`` if it was parsed from exactly ``files``; else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        manifest, parsed_from = entry
        if parsed_from != files or not files:
            log.info("project files changed since the last parse: re-parsing")
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return manifest

    def put(self, key: tuple[str, str], manifest: Any, files: ProjectFiles) -> None:
        """Keep ``manifest`` (parsed from ``files``) for ``key``; the oldest beyond
        :data:`MAX_MANIFESTS` is dropped."""
        self._entries[key] = (manifest, files)
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_MANIFESTS:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every manifest."""
        self._entries.clear()
