"""The artifact cache (``DBT_RUNNER_ARTIFACT_CACHE``): dbt's parse and last results, shared.

Many deployments start every task in a fresh container: there is no ``target/``
from the last run, so each task parses the whole project again, and an
orchestrator's retry finds no ``run_results.json`` for ``dbt retry``. The cache
is a directory (a shared volume) or ``s3://bucket/prefix`` that sessions share:

``parse/<fingerprint>.zip``
    what dbt's parse wrote (``partial_parse.msgpack``, ``manifest.json``,
    ``semantic_manifest.json``), under a fingerprint of everything the parse
    depends on (:func:`fingerprint`). A session that finds its fingerprint there
    hands that manifest to dbt and does not parse at all (``DbtSession.parse_count``
    stays 0); it puts the files in its ``target/`` as dbt's parse would have, so a
    later parse in that container is partial.
``parse/<project>.latest.json``
    what the last entry written for the project was keyed on: on a miss, the
    log line says which input changed.
``results/<target>/latest.zip``
    ``run_results.json`` and ``manifest.json`` of the target's last command,
    what a kept ``target/`` would hold: ``dbt retry`` in a new container reads it.
``results/<target>/<selection>.zip``
    the same per command and selection, with the orchestrator's run id it was given
    (``resume=<run id>``): a later try of the *same* run re-runs only the nodes that
    did not succeed; another run's results are never resumed from.

Every entry is one zip (``header.json`` + the files; each file's sha256 in the
header, and zip's own CRC): written whole to a temporary file and renamed in the
same directory, or one S3 ``PUT`` of the complete object. Two writers of one key
leave one of the two complete entries; a reader never sees half of one. An entry
that does not open, whose header names another fingerprint or format, or whose
files do not match their checksums is skipped with a warning and counts as a
miss; the session then parses and writes a good entry over it.

The cache changes what dbt runs only when asked (``resume``): a miss parses as
without a cache, and a store that cannot be reached is a warning, not a failed run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from ._exceptions import ConfigurationError
from .logging import event_extra

__all__ = [
    "FORMAT",
    "ArtifactCache",
    "Fingerprint",
    "LocalStore",
    "S3Store",
    "Store",
    "fingerprint",
    "open_store",
]

log = logging.getLogger("dbt_runner.cache")

#: the entry format; a reader skips entries of any other
FORMAT = 1
#: the extra that brings boto3 for an s3:// cache
S3_EXTRA = "s3"
#: no entry read is larger than this (a foreign object is not read into memory whole)
MAX_ENTRY_BYTES = 512 * 1024 * 1024
#: no walk of a project hashes more files than this
_MAX_FILES = 200_000
#: directories a project walk never enters
_SKIP_DIRS = frozenset({".git", "__pycache__", ".venv", "node_modules"})
_PARTIAL_PARSE = "partial_parse.msgpack"
#: what dbt's parse leaves in target/ besides its partial parse (restored on a hit)
_PARSE_ARTIFACTS = ("manifest.json", "semantic_manifest.json")
_RUN_RESULTS = "run_results.json"
_MANIFEST = "manifest.json"


# ---------------------------------------------------------------------- stores
class Store(Protocol):
    """Where entries live: whole objects by key, atomically replaced."""

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none (other failures raise)."""

    def put(self, key: str, data: bytes) -> None:
        """Write the complete object (a reader sees the old one or this one)."""

    def describe(self, key: str) -> str:
        """Where ``key`` lives, for log lines."""


class LocalStore:
    """A directory (a volume the containers share); temp file + rename in the same dir."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_ENTRY_BYTES + 1)
        except FileNotFoundError:
            return None
        if len(data) > MAX_ENTRY_BYTES:
            raise ValueError(f"larger than {MAX_ENTRY_BYTES} bytes")
        return data

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def describe(self, key: str) -> str:
        return str(self._path(key))


class S3Store:
    """``s3://bucket/prefix`` through boto3 (its default credential chain and
    ``AWS_ENDPOINT_URL``); one ``PUT`` per entry, never a multipart upload."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client: Any = None
        self._pid = -1
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Store('s3://{self.bucket}/{self.prefix}')"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def client(self) -> Any:
        """The boto3 client of this process (a forked child makes its own)."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                from ._aws import s3_client

                self._client = s3_client()
                self._pid = os.getpid()
            return self._client

    def get(self, key: str) -> bytes | None:
        client = self.client()
        try:
            response = client.get_object(Bucket=self.bucket, Key=self._key(key))
        except client.exceptions.NoSuchKey:
            return None
        if int(response.get("ContentLength") or 0) > MAX_ENTRY_BYTES:
            response["Body"].close()
            raise ValueError(f"larger than {MAX_ENTRY_BYTES} bytes")
        data: bytes = response["Body"].read()
        return data

    def put(self, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def open_store(location: str) -> Store:
    """The store ``DBT_RUNNER_ARTIFACT_CACHE`` names (a directory is created if missing).

    >>> open_store("/mnt/shared/dbt-cache")                         # doctest: +SKIP
    LocalStore('/mnt/shared/dbt-cache')
    """
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://") :].partition("/")
        from ._aws import boto3_installed

        if not boto3_installed():
            raise ConfigurationError(
                f"DBT_RUNNER_ARTIFACT_CACHE={location} needs boto3: install the "
                f"{S3_EXTRA!r} extra (pip install 'dbt-runner[{S3_EXTRA}]'; "
                "dbt-redshift brings boto3 too)"
            )
        return S3Store(bucket, prefix)
    root = Path(location).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"DBT_RUNNER_ARTIFACT_CACHE={location}: cannot create the directory ({exc})"
        ) from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigurationError(f"DBT_RUNNER_ARTIFACT_CACHE={location}: directory not writable")
    return LocalStore(root)


# ---------------------------------------------------------------------- entries
def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def pack(header: dict[str, Any], files: dict[str, bytes]) -> bytes:
    """One entry: ``header.json`` (with each file's sha256) and the files, zipped."""
    header = {**header, "format": FORMAT, "files": {n: _sha(d) for n, d in files.items()}}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("header.json", json.dumps(header, sort_keys=True))
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


class BadEntry(Exception):
    """An entry that is corrupt, foreign or of another format (skipped, never used)."""


def unpack(data: bytes, **expect: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The header and files of an entry whose header has the ``expect`` ed values."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            header = json.loads(zf.read("header.json"))
            if not isinstance(header, dict):
                raise BadEntry("its header is not a JSON object")
            if header.get("format") != FORMAT:
                raise BadEntry(f"format {header.get('format')!r}, this reader knows {FORMAT}")
            for name, value in expect.items():
                if header.get(name) != value:
                    raise BadEntry(f"its header names {name} {header.get(name)!r}, not {value!r}")
            sums = header.get("files")
            if not isinstance(sums, dict):
                raise BadEntry("its header lists no files")
            files = {str(n): zf.read(str(n)) for n in sums}
    except BadEntry:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as exc:
        raise BadEntry(f"not a readable entry ({type(exc).__name__}: {exc})") from exc
    for name, data_ in files.items():
        if _sha(data_) != sums[name]:
            raise BadEntry(f"{name} does not match its checksum")
    return header, files


# ---------------------------------------------------------------------- fingerprint
@dataclass(frozen=True)
class Fingerprint:
    """A parse's inputs (``components``, readable) and their digest (the entry's key)."""

    digest: str
    components: dict[str, str]
    #: project-relative path -> sha256 of every file the parse could read
    files: dict[str, str] = field(repr=False)
    project: str = ""

    @property
    def short(self) -> str:
        return self.digest[:16]


def fingerprint(
    inputs: Any,
    project_dir: Path,
    cli_vars: str | None,
    exclude: Iterable[Path] = (),
) -> Fingerprint:
    """The fingerprint of a parse (``inputs``: :class:`~dbt_runner._dbt.ParseInputs`).

    Everything dbt's own partial-parse check compares — dbt version, vars, profile
    and target names, connection info, env vars read by the project and profile
    files, every file's content — plus what it does not, because a ``target/``
    never moves: the absolute project and dbt install paths (written into the
    saved manifest; seeds load from them), the adapters' versions and dbt plugins.
    The env vars read by models and YAML are known only after a parse: the entry's
    header records them and :meth:`ArtifactCache.load_parse` compares them.
    """
    from ._dbt import TOP_FILES

    files: dict[str, str] = {}
    for name in TOP_FILES:
        _hash_into(project_dir / name, project_dir, files)
    skip = {p.resolve() for p in exclude}
    for directory in inputs.source_dirs:
        _walk_hash(Path(directory), project_dir, skip, files)
    listing = "".join(f"{p}\0{h}\n" for p, h in sorted(files.items()))
    components = {
        "format": str(FORMAT),
        "dbt": ", ".join(f"{n} {v}" for n, v in inputs.versions),
        "install_dir": inputs.install_dir,
        "project_dir": str(project_dir),
        "profile": f"{inputs.profile_name}/{inputs.target_name} ({inputs.adapter_type})",
        "connection": _sha(json.dumps(inputs.connection)),
        "vars": _sha(_normal_vars(cli_vars)),
        "project_env_vars": _sha(json.dumps(inputs.env_vars)),
        "plugins": ", ".join(inputs.plugins),
        "files": _sha(listing),
    }
    digest = _sha(json.dumps(components, sort_keys=True))
    return Fingerprint(digest, components, files, project=inputs.project_name)


def _normal_vars(cli_vars: str | None) -> str:
    """``--vars`` as canonical JSON (its YAML mapping, keys sorted), else as given."""
    if not cli_vars:
        return "{}"
    import yaml

    try:
        value = yaml.safe_load(cli_vars)
        return json.dumps(value, sort_keys=True, default=str)
    except (yaml.YAMLError, TypeError, ValueError):
        return cli_vars


def _hash_into(path: Path, root: Path, out: dict[str, str]) -> None:
    try:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return
    try:
        name = str(path.relative_to(root))
    except ValueError:
        name = str(path)
    out[name] = digest.hexdigest()


def _walk_hash(top: Path, root: Path, skip: set[Path], out: dict[str, str]) -> None:
    stack = [top]
    while stack:
        current = stack.pop()
        if current in skip:
            continue
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            path = Path(entry.path)
            if entry.is_dir():
                if entry.name not in _SKIP_DIRS:
                    stack.append(path)
                continue
            _hash_into(path, root, out)
            if len(out) > _MAX_FILES:
                raise OverflowError(f"more than {_MAX_FILES} files under {top}")


def _explain(old: dict[str, Any], new: Fingerprint) -> str:
    """Why ``new`` differs from the last fingerprint written for the project."""
    components = old.get("components") or {}
    labels = {
        "format": "the cache's entry format changed",
        "dbt": "dbt or adapter versions changed",
        "install_dir": "dbt is installed elsewhere",
        "project_dir": "the project directory differs",
        "profile": "profile, target or adapter changed",
        "connection": "the target's connection settings changed",
        "vars": "--vars changed",
        "project_env_vars": "env vars read by dbt_project.yml or profiles.yml changed",
        "plugins": "installed dbt plugins changed",
    }
    reasons = []
    for key, label in labels.items():
        before, now = components.get(key), new.components.get(key)
        if before != now:
            shown = key in ("dbt", "project_dir", "install_dir", "profile", "plugins")
            reasons.append(f"{label} ({before} -> {now})" if shown else label)
    if components.get("files") != new.components.get("files"):
        old_files = old.get("files") or {}
        changed = sorted(
            p for p in set(old_files) | set(new.files) if old_files.get(p) != new.files.get(p)
        )
        more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
        listed = ", ".join(changed[:3]) + more
        reasons.append(f"project files changed: {listed}" if changed else "project files changed")
    return "; ".join(reasons) or "an input changed"


# ---------------------------------------------------------------------- the cache
@dataclass
class ParseHit:
    """A usable parse entry: the manifest and the files dbt's parse wrote (for ``target/``)."""

    manifest: Any
    files: dict[str, bytes]

    @property
    def size(self) -> int:
        return sum(len(d) for d in self.files.values())


class ArtifactCache:
    """The session's view of a :class:`Store`: parse entries and retry state.

    >>> cache = ArtifactCache(open_store("/mnt/shared/dbt-cache"))   # doctest: +SKIP
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"ArtifactCache({self.store!r})"

    # ------------------------------------------------------------------ reading/writing
    def _get(self, key: str) -> bytes | None:
        """The object, None when missing; a store failure is logged and is a miss."""
        try:
            return self.store.get(key)
        except Exception as exc:
            log.warning(
                "artifact cache: cannot read %s: %s: %s",
                self.store.describe(key),
                type(exc).__name__,
                exc,
            )
            return None

    def _put(self, key: str, data: bytes) -> bool:
        try:
            self.store.put(key, data)
            return True
        except Exception as exc:
            log.warning(
                "artifact cache: cannot write %s: %s: %s",
                self.store.describe(key),
                type(exc).__name__,
                exc,
            )
            return False

    # ------------------------------------------------------------------ parse
    @staticmethod
    def parse_key(fp: Fingerprint) -> str:
        return f"parse/{fp.digest}.zip"

    @staticmethod
    def _latest_key(fp: Fingerprint) -> str:
        return f"parse/{_safe(fp.project)}.latest.json"

    def load_parse(self, fp: Fingerprint, decode: bool = True) -> tuple[ParseHit | None, str]:
        """The entry for ``fp`` (with its manifest when ``decode``), or None and why not
        (for the log line)."""
        from . import _dbt

        key = self.parse_key(fp)
        data = self._get(key)
        if data is None:
            return None, self._why_missing(fp)
        try:
            header, files = unpack(data, kind="parse", fingerprint=fp.digest)
            env = header.get("env")
            if not isinstance(env, dict) or _PARTIAL_PARSE not in files:
                raise BadEntry("it holds no partial parse")
            changed = _env_changed(env)
            if changed:
                return None, f"env var {changed} differs from the cached parse's"
            manifest = _dbt.load_partial_parse(files[_PARTIAL_PARSE]) if decode else None
        except BadEntry as exc:
            log.warning("artifact cache: skipping %s: %s", self.store.describe(key), exc)
            return None, f"the cached entry is unusable ({exc})"
        except Exception as exc:  # msgpack of another shape: dbt's decoder raised
            log.warning(
                "artifact cache: skipping %s: dbt cannot load it (%s: %s)",
                self.store.describe(key),
                type(exc).__name__,
                exc,
            )
            return None, f"the cached entry is unusable ({type(exc).__name__})"
        return ParseHit(manifest, files), ""

    def _why_missing(self, fp: Fingerprint) -> str:
        data = self._get(self._latest_key(fp))
        if data is None:
            return f"no entry for fingerprint {fp.short} (none yet for project {fp.project})"
        try:
            old = json.loads(data)
            if not isinstance(old, dict):
                raise ValueError("not an object")
        except ValueError:
            return f"no entry for fingerprint {fp.short}"
        return f"no entry for fingerprint {fp.short}: {_explain(old, fp)}"

    def save_parse(self, fp: Fingerprint, files: dict[str, bytes], manifest: Any) -> bool:
        """Write the entry for ``fp``: what dbt's parse of ``manifest`` wrote (its
        ``partial_parse.msgpack``, ``manifest.json``, ``semantic_manifest.json``)."""
        from . import _dbt

        env = {k: _env_token(v) for k, v in _dbt.partial_parse_env_vars(manifest).items()}
        header = {
            "kind": "parse",
            "fingerprint": fp.digest,
            "components": fp.components,
            "env": env,
            "written_at": _now(),
        }
        started = time.monotonic()
        data = pack(header, files)
        if not self._put(self.parse_key(fp), data):
            return False
        latest = {"fingerprint": fp.digest, "components": fp.components, "files": fp.files}
        self._put(self._latest_key(fp), json.dumps(latest, sort_keys=True).encode())
        log.info(
            "artifact cache: wrote parse %s (%d KB, %.2fs) to %s",
            fp.short,
            len(data) // 1024,
            time.monotonic() - started,
            self.store.describe(self.parse_key(fp)),
            extra=event_extra("cache_write", kind="parse", fingerprint=fp.digest),
        )
        return True

    # ------------------------------------------------------------------ retry state
    @staticmethod
    def results_key(target: str, selection: str | None) -> str:
        return f"results/{target}/{selection or 'latest'}.zip"

    def save_results(
        self,
        target: str,
        selection: str | None,
        args: Sequence[str],
        run_results: bytes,
        manifest: bytes | None,
        run_id: str | None = None,
    ) -> None:
        """The command's ``run_results.json`` (and ``manifest.json``) as the target's
        latest results and, with ``selection``, as that selection's; ``run_id``: the
        orchestrator's run they belong to (``resume``)."""
        files = {_RUN_RESULTS: run_results}
        if manifest is not None:
            files[_MANIFEST] = manifest
        header = {
            "kind": "results",
            "target": target,
            "selection": selection,
            "args": list(args),
            "run_id": run_id,
            "written_at": _now(),
        }
        started = time.monotonic()
        data = pack(header, files)
        keys = [self.results_key(target, None)]
        if selection is not None:
            keys.insert(0, self.results_key(target, selection))
        for key in keys:
            self._put(key, data)
        log.info(
            "artifact cache: saved the results of dbt %s for a retry (%d KB, %.2fs, %s)",
            args[0] if args else "?",
            len(data) // 1024,
            time.monotonic() - started,
            self.store.describe(keys[0]),
        )

    def load_results(
        self, target: str, selection: str | None
    ) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        """The saved state for ``selection`` (None: the target's latest), or None."""
        key = self.results_key(target, selection)
        data = self._get(key)
        if data is None:
            return None
        try:
            expect: dict[str, Any] = {"kind": "results", "target": target}
            if selection is not None:
                expect["selection"] = selection
            return unpack(data, **expect)
        except BadEntry as exc:
            log.warning("artifact cache: skipping %s: %s", self.store.describe(key), exc)
            return None


def _env_token(value: str | None) -> str:
    return "unset" if value is None else _sha(value)


def _env_changed(recorded: dict[str, Any]) -> str | None:
    """The first env var whose value now differs from the one a parse recorded."""
    for name in sorted(recorded):
        if _env_token(os.environ.get(name)) != recorded[name]:
            return name
    return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "project"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


# ---------------------------------------------------------------------- a session's use
#: commands whose results ``dbt retry`` re-runs (dbt's RetryTask)
RETRYABLE_COMMANDS = frozenset(
    {"run", "test", "build", "seed", "snapshot", "compile", "clone", "run-operation"}
)
#: run_results statuses dbt's retry re-runs
_RETRY_STATUSES = frozenset({"error", "fail", "skipped", "runtime error", "partial success"})


@dataclass
class ParseLookup:
    """What :meth:`SessionArtifacts.lookup_parse` found: the fingerprint (None: the
    project could not be fingerprinted) and the manifest of a hit."""

    fingerprint: Fingerprint | None
    manifest: Any = None
    hit: bool = False


class SessionArtifacts:
    """A session's use of the :class:`ArtifactCache`: its project, state dir and profile.

    ``DbtSession`` calls it around a parse (:meth:`lookup_parse`, :meth:`save_parse`)
    and around a command (:meth:`before_command`, :meth:`after_command`).
    """

    def __init__(self, cache: ArtifactCache, project_dir: Path, state_dir: Path) -> None:
        self.cache = cache
        self.project_dir = project_dir
        self.state_dir = state_dir
        self._inputs: dict[tuple[str, str | None, str | None, str | None], Any] = {}

    # ------------------------------------------------------------------ inputs
    def inputs(
        self, profiles_dir: Path, profile: str | None, target: str | None, cli_vars: str | None
    ) -> tuple[Any, str]:
        """The parse inputs (:class:`~dbt_runner._dbt.ParseInputs`) or None and why not.

        The files are read again each time (that is the point); the rendered profile
        and project are kept per (profiles dir, profile, target, vars): they change
        only with those files, whose contents the fingerprint hashes anyway.
        """
        from . import _dbt

        key = (str(profiles_dir), profile, target, cli_vars)
        if key not in self._inputs:
            try:
                self._inputs[key] = _dbt.parse_inputs(
                    self.project_dir,
                    profiles_dir,
                    profile=profile,
                    target=target,
                    cli_vars=cli_vars,
                )
            except Exception as exc:  # dbt's parse reports the real error, with its kind
                return None, f"dbt cannot load the project or profile ({type(exc).__name__})"
        return self._inputs[key], ""

    def fingerprint(
        self, profiles_dir: Path, profile: str | None, target: str | None, cli_vars: str | None
    ) -> tuple[Fingerprint | None, str]:
        inputs, why = self.inputs(profiles_dir, profile, target, cli_vars)
        if inputs is None:
            return None, why
        exclude = [self.state_dir / "target", self.state_dir / "logs"]
        try:
            return fingerprint(inputs, self.project_dir, cli_vars, exclude), ""
        except (OverflowError, OSError) as exc:
            return None, f"the project's files cannot be hashed ({exc})"

    # ------------------------------------------------------------------ parse
    def lookup_parse(
        self,
        profiles_dir: Path,
        profile: str | None,
        target: str | None,
        cli_vars: str | None,
        target_dir: Path,
        *,
        decode: bool = True,
    ) -> ParseLookup:
        """Before a parse: the cached manifest when the fingerprint has a usable entry.

        Logs ``parse: cache hit <fingerprint>`` or ``full parse: cache miss because
        <reason>`` (``parse: ...`` when ``target/`` still holds a partial parse dbt
        starts from). On a hit the entry's files (``partial_parse.msgpack``,
        ``manifest.json``...) are put in ``target_dir`` too. With dbt plugins installed
        (they may inject nodes) the hit is not handed over: dbt parses from the restored
        file and checks it itself; ``decode=False`` only restores the files (for a
        command that parses by itself).
        """
        started = time.monotonic()
        fp, why = self.fingerprint(profiles_dir, profile, target, cli_vars)
        local = (target_dir / _PARTIAL_PARSE).is_file()
        if fp is None:
            _log_miss(why, local, None)
            return ParseLookup(None)
        hit, why = self.cache.load_parse(fp, decode=decode)
        if hit is None:
            _log_miss(why, local, fp)
            return ParseLookup(fp)
        for name, body in hit.files.items():  # target/ as dbt's parse would leave it
            _write_atomic(target_dir / name, body)
        inputs, _ = self.inputs(profiles_dir, profile, target, cli_vars)
        plugins = getattr(inputs, "plugins", ())
        log.info(
            "parse: cache hit %s (%s, %d KB, %.2fs)%s",
            fp.short,
            self.cache.store.describe(self.cache.parse_key(fp)),
            hit.size // 1024,
            time.monotonic() - started,
            f"; dbt plugins installed ({', '.join(plugins)}): dbt parses from it"
            if plugins
            else ""
            if decode
            else "; restored to target/ for the command's own parse",
            extra=event_extra("parse_cache", hit=True, fingerprint=fp.digest),
        )
        return ParseLookup(fp, None if plugins else hit.manifest, hit=True)

    def save_parse(
        self,
        lookup: ParseLookup,
        profiles_dir: Path,
        profile: str | None,
        target: str | None,
        cli_vars: str | None,
        target_dir: Path,
        manifest: Any,
    ) -> None:
        """After dbt parsed on a miss: what it wrote in ``target/`` as the entry, unless
        the project changed while dbt parsed (the entry would not match its key)."""
        if lookup.fingerprint is None or lookup.hit:
            return
        files: dict[str, bytes] = {}
        for name in (_PARTIAL_PARSE, *_PARSE_ARTIFACTS):
            with contextlib.suppress(OSError):
                files[name] = (target_dir / name).read_bytes()
        if _PARTIAL_PARSE not in files:
            log.info("artifact cache: dbt wrote no %s: nothing to cache", _PARTIAL_PARSE)
            return
        after, _ = self.fingerprint(profiles_dir, profile, target, cli_vars)
        if after is None or after.digest != lookup.fingerprint.digest:
            log.info("artifact cache: the project changed while dbt parsed: not cached")
            return
        self.cache.save_parse(lookup.fingerprint, files, manifest)

    # ------------------------------------------------------------------ retry state
    @staticmethod
    def keeps_results(args: Sequence[str]) -> bool:
        """``args`` is a command whose results a retry needs, or ``dbt retry`` itself."""
        return bool(args) and (args[0] in RETRYABLE_COMMANDS or args[0] == "retry")

    def target_key(self, inputs: Any, remote: tuple[str, int] | None) -> str:
        """Which warehouse target results belong to: project, profile, target and the
        connection (the warehouse's own host and port when the session tunnels)."""
        connection = dict(inputs.connection)
        if remote is not None:
            connection["host"], connection["port"] = repr(remote[0]), repr(remote[1])
        ident = [inputs.project_name, inputs.profile_name, inputs.target_name]
        ident.append(json.dumps(sorted(connection.items())))
        return _sha(json.dumps(ident))[:20]

    @staticmethod
    def selection_key(args: Sequence[str]) -> str:
        """A command and its selection (every argument but ``--threads``)."""
        from ._invocation import without_threads

        return _sha(json.dumps(without_threads(args)))[:20]

    def before_command(
        self,
        args: Sequence[str],
        target_key: str,
        target_dir: Path,
        *,
        resume: str | None,
    ) -> tuple[bytes | None, list[str] | None]:
        """Before ``args`` runs: the run_results.json to resume from (None: run it all)
        and the arguments of the command dbt's ``retry`` will repeat (None: no retry).

        ``dbt retry`` gets the target's latest results in ``target_dir`` when they are
        newer than the ones there. ``resume`` (a run id) resumes from the results of
        the same run's previous try of this command and selection when some node did
        not succeed there.
        """
        command = args[0]
        if command == "retry":
            state = self.cache.load_results(target_key, None)
            if state is None:
                return None, None
            header, files = state
            previous = [str(a) for a in header.get("args") or []]
            if _newer(files.get(_RUN_RESULTS), target_dir / _RUN_RESULTS):
                for name, data in files.items():
                    _write_atomic(target_dir / name, data)
                log.info(
                    "dbt retry: the previous results come from the artifact cache "
                    "(dbt %s, written %s)",
                    " ".join(previous)[:200],
                    header.get("written_at"),
                )
                return None, previous
            return None, None
        if command not in RETRYABLE_COMMANDS or resume is None:
            return None, None
        described = " ".join(args)[:200]
        state = self.cache.load_results(target_key, self.selection_key(args))
        if state is None or state[0].get("run_id") != resume:
            why = f"no earlier try of run {resume!r} in the artifact cache"
        else:
            results = state[1].get(_RUN_RESULTS)
            failed = _failed_nodes(results)
            if results is not None and failed:
                log.info(
                    "resume: re-running only the %d node(s) that did not succeed in the "
                    "previous try of run %r (dbt %s, written %s)",
                    len(failed),
                    resume,
                    described,
                    state[0].get("written_at"),
                    extra=event_extra("resume", run_id=resume, nodes=failed),
                )
                return results, list(args)
            why = f"the previous try of run {resume!r} succeeded"
        log.info("resume: running all of dbt %s: %s", described, why)
        return None, None

    def after_command(
        self,
        args: Sequence[str],
        target_key: str,
        target_dir: Path,
        results: bytes | None,
        run_id: str | None,
    ) -> None:
        """After a command: its results as the target's latest and its selection's
        (with the run id it was given); after ``dbt retry``, as those of the command
        it repeated."""
        command = args[0]
        if results is None or not self.keeps_results(args):
            return
        selection: str | None = self.selection_key(args)
        if command == "retry":
            state = self.cache.load_results(target_key, None)
            header = state[0] if state is not None else {}
            selection, run_id = header.get("selection"), header.get("run_id")
            args = [str(a) for a in header.get("args") or args]
        manifest: bytes | None
        try:
            manifest = (target_dir / _MANIFEST).read_bytes()
        except OSError:
            manifest = None
        self.cache.save_results(target_key, selection, args, results, manifest, run_id)


def _failed_nodes(run_results: bytes | None) -> list[str]:
    """The unique ids dbt's retry would re-run from ``run_results``."""
    if run_results is None:
        return []
    try:
        data = json.loads(run_results)
        return [
            str(r["unique_id"])
            for r in data.get("results", [])
            if isinstance(r, dict) and str(r.get("status")) in _RETRY_STATUSES
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def _generated_at(data: bytes | None) -> str:
    try:
        return str(json.loads(data or b"{}").get("metadata", {}).get("generated_at") or "")
    except (ValueError, AttributeError):
        return ""


def _newer(stored: bytes | None, local: Path) -> bool:
    """``stored`` run_results.json is newer than the one at ``local`` (or there is none)."""
    if stored is None:
        return False
    try:
        here = local.read_bytes()
    except OSError:
        return True
    return _generated_at(stored) > _generated_at(here)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _log_miss(why: str, local: bool, fp: Fingerprint | None) -> None:
    if local:
        message = "parse: cache miss because %s; dbt parses from the partial parse in target/"
    else:
        message = "full parse: cache miss because %s"
    log.info(
        message,
        why,
        extra=event_extra(
            "parse_cache", hit=False, reason=why, fingerprint=fp.digest if fp else None
        ),
    )
