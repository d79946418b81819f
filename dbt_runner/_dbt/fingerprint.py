"""What a parse depends on besides the files' contents, read the way dbt reads it.

dbt decides on its own whether a saved partial parse (``partial_parse.msgpack``)
may be reused: same dbt version, same command-line vars, profile and target
names, same connection info, same env vars read by ``dbt_project.yml``, same
``dbt_project.yml`` of every package, and per file the same checksum and env
vars. The artifact cache (:mod:`dbt_runner._artifacts`) keys its entries on a
fingerprint of the same inputs, plus what dbt does not check because one
``target/`` never moves: the absolute project and install paths written into the
saved manifest (a seed is loaded from ``root_path``, an absolute path).

:func:`parse_inputs` renders the project and the profile with dbt's own
renderers (``env_var``, ``var`` and the rest), so a templated path or target
resolves as dbt resolves it, and returns them as plain values.
:func:`load_partial_parse` turns a saved ``partial_parse.msgpack`` into the
manifest dbt itself would hand on after a partial parse that found nothing to
re-parse.
"""

from __future__ import annotations

import contextvars
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "TOP_FILES",
    "ParseInputs",
    "load_partial_parse",
    "parse_inputs",
    "partial_parse_env_vars",
]

#: the distributions whose code or macros shape a manifest (the adapters' macros included)
_DISTRIBUTIONS = (
    "dbt-core",
    "dbt-adapters",
    "dbt-common",
    "dbt-semantic-interfaces",
    "dbt-extractor",
    "dbt-postgres",
    "dbt-redshift",
    "dbt-duckdb",
)
#: the files of a project dbt reads besides its resource paths
TOP_FILES = (
    "dbt_project.yml",
    "packages.yml",
    "dependencies.yml",
    "selectors.yml",
    "package-lock.yml",
    ".dbtignore",
)


@dataclass(frozen=True)
class ParseInputs:
    """A project's parse inputs as dbt resolves them (no secret among them).

    ``connection`` is dbt's own ``credentials.connection_info()``: the fields dbt
    hashes into its partial-parse profile check (never the password).
    ``env_vars`` are the variables ``dbt_project.yml`` and ``profiles.yml`` read,
    with their values.
    """

    versions: tuple[tuple[str, str], ...]
    install_dir: str
    project_name: str
    profile_name: str
    target_name: str
    adapter_type: str
    connection: tuple[tuple[str, str], ...]
    env_vars: tuple[tuple[str, str], ...]
    #: absolute directories dbt reads resource files from (models, macros, ..., packages)
    source_dirs: tuple[Path, ...]
    #: dbt plugins are installed: they may inject nodes a saved manifest cannot know
    plugins: tuple[str, ...]


def _versions() -> tuple[tuple[str, str], ...]:
    out = []
    for name in _DISTRIBUTIONS:
        try:
            out.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            continue
    return tuple(out)


def parse_inputs(
    project_dir: Path,
    profiles_dir: Path,
    *,
    profile: str | None,
    target: str | None,
    cli_vars: str | None,
) -> ParseInputs:
    """Render ``project_dir``'s project and its profile the way a dbt command would.

    ``profile``/``target``/``cli_vars``: the command's ``--profile``, ``--target`` and
    ``--vars`` (None: not given; dbt then reads ``DBT_PROFILE``/``DBT_TARGET`` or the
    defaults). Raises dbt's own error for a project or profile dbt could not load.
    """

    def render() -> ParseInputs:
        import dbt
        from dbt.config.profile import DEFAULT_THREADS, Profile, read_profile
        from dbt.config.project import PartialProject, load_raw_project
        from dbt.config.renderer import DbtProjectYamlRenderer, ProfileRenderer
        from dbt.config.utils import parse_cli_vars
        from dbt_common.context import set_invocation_context

        set_invocation_context(os.environ)
        variables = parse_cli_vars(cli_vars) if cli_vars else {}
        raw_project = load_raw_project(str(project_dir))
        profile_renderer = ProfileRenderer(variables)
        profile_name = (
            profile
            or os.environ.get("DBT_PROFILE")
            or profile_renderer.render_value(raw_project.get("profile"))
        )
        raw_profiles = read_profile(str(profiles_dir))
        if profile_name not in raw_profiles:
            raise ValueError(f"profile {profile_name!r} is not in {profiles_dir}/profiles.yml")
        target_name, data = Profile.render_profile(
            raw_profiles[profile_name],
            profile_name,
            target or os.environ.get("DBT_TARGET") or None,
            profile_renderer,
        )
        threads = data.pop("threads", DEFAULT_THREADS)
        credentials = Profile._credentials_from_profile(data, profile_name, target_name)
        rendered = _Target(profile_name, target_name, threads, credentials)
        project_renderer = DbtProjectYamlRenderer(rendered, variables)
        partial = PartialProject.from_project_root(str(project_dir), verify_version=False)
        config = partial.get_rendered(project_renderer).project_dict
        env = {
            **dict(profile_renderer.ctx_obj.env_vars),
            **dict(project_renderer.ctx_obj.env_vars),
        }
        root = Path(partial.project_root)
        seen: dict[Path, None] = {}
        for d in _source_dirs(config):
            seen.setdefault((root / d).resolve(), None)
        connection = tuple((str(k), repr(v)) for k, v in sorted(credentials.connection_info()))
        return ParseInputs(
            versions=_versions(),
            install_dir=str(Path(dbt.__path__[0]).resolve()),
            project_name=str(config.get("name")),
            profile_name=str(profile_name),
            target_name=str(target_name),
            adapter_type=str(credentials.type),
            connection=connection,
            env_vars=tuple(sorted((str(k), str(v)) for k, v in env.items())),
            source_dirs=tuple(seen),
            plugins=_plugins(str(config.get("name"))),
        )

    return contextvars.copy_context().run(render)


#: dbt_project.yml key (and its deprecated alias) -> dbt's default, for every path dbt
#: reads resource files from (``Project.create_project``); docs-paths defaults to them all
_PATH_KEYS: tuple[tuple[str, str | None, list[str]], ...] = (
    ("model-paths", "source-paths", ["models"]),
    ("macro-paths", None, ["macros"]),
    ("seed-paths", "data-paths", ["seeds"]),
    ("test-paths", None, ["tests"]),
    ("analysis-paths", None, ["analyses"]),
    ("snapshot-paths", None, ["snapshots"]),
    ("function-paths", None, ["functions"]),
    ("docs-paths", None, []),
)


def _source_dirs(config: dict[str, Any]) -> list[str]:
    """The directories of a rendered dbt_project.yml dbt reads files from, and its
    packages' install dir."""
    dirs: list[str] = []
    for key, alias, default in _PATH_KEYS:
        value = config.get(key)
        if value is None and alias is not None:
            value = config.get(alias)
        if isinstance(value, str):
            value = [value]
        dirs += [str(v) for v in (value or default)]
    dirs.append(str(config.get("packages-install-path") or "dbt_packages"))
    return dirs


class _Target:
    """What dbt's project renderer reads of a profile (``Profile.to_target_dict``), without
    dbt's ``Profile``, which needs the global flags of a running command."""

    def __init__(self, profile_name: str, target_name: str, threads: Any, credentials: Any):
        self.profile_name = profile_name
        self.target_name = target_name
        self.threads = threads
        self.credentials = credentials

    def to_target_dict(self) -> dict[str, Any]:
        target = dict(self.credentials.connection_info(with_aliases=True))
        target.update(
            {
                "type": self.credentials.type,
                "threads": self.threads,
                "name": self.target_name,
                "target_name": self.target_name,
                "profile_name": self.profile_name,
            }
        )
        return target


def _plugins(project_name: str) -> tuple[str, ...]:
    """The dbt plugins this process would load (``dbt_*`` modules with ``plugins``)."""
    from dbt.plugins import get_plugin_manager

    manager = get_plugin_manager(project_name)
    return tuple(sorted(str(name) for name in getattr(manager, "plugins", {}) or {}))


def load_partial_parse(data: bytes) -> Any:
    """The manifest in a saved ``partial_parse.msgpack``, as dbt would hand it on.

    What dbt does with a saved manifest whose files all match (``ManifestLoader``'s
    skip path): fresh ``generated_at`` and invocation id, then the flat graph built.
    Raises on bytes that are not a manifest of this dbt version.
    """
    from datetime import datetime, timezone

    from dbt.contracts.graph.manifest import Manifest
    from dbt.parser.manifest import extended_mashumuro_decoder
    from dbt.version import __version__ as dbt_version
    from dbt_common.invocation import get_invocation_id

    manifest: Any = Manifest.from_msgpack(data, decoder=extended_mashumuro_decoder)
    if manifest.metadata.dbt_version != dbt_version:
        raise ValueError(
            f"written by dbt {manifest.metadata.dbt_version}, this is dbt {dbt_version}"
        )
    manifest.metadata.generated_at = datetime.now(timezone.utc).replace(tzinfo=None)
    manifest.metadata.invocation_id = get_invocation_id()
    manifest.build_flat_graph()
    return manifest


def partial_parse_env_vars(manifest: Any) -> dict[str, str | None]:
    """The environment variables dbt recorded while parsing ``manifest`` (``env_var()``
    in models, macros and YAML; dbt leaves ``DBT_ENV_SECRET_*`` out), with their values;
    None for one that was unset (its ``env_var()`` default was used)."""
    from dbt.constants import DEFAULT_ENV_PLACEHOLDER

    recorded = getattr(manifest, "env_vars", None) or {}
    return {str(k): None if v == DEFAULT_ENV_PLACEHOLDER else str(v) for k, v in recorded.items()}
