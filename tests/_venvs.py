"""Virtual environments that tests build for themselves, cached for the run.

Some claims are about an install that is *not* the test venv: the CLI with only
the base install, the example DAG under Airflow 2. :func:`cached_venv` builds
such a venv once under ``.cache/venvs/`` in the repository (git-ignored; CI
keeps the clone for its whole run) and reuses it while the package's sources
and the requested packages are unchanged. Creation is bounded in time, and a
lock file makes a second caller (another pytest worker, or CI building it in
the background meanwhile: ``python -m tests._venvs airflow2``) wait for the
first instead of building it twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "venvs"

#: the venvs the tests use, by name
REQUIREMENTS = {
    # what docs/getting-started.md installs: no extras
    "base": ["."],
    # the Airflow 2 line many deployments run (pytest: the DAG test's child imports it)
    "airflow2": ["apache-airflow==2.10.5", ".[postgres]", "pytest>=8"],
}


def _sources_digest() -> str:
    """What a ``pip install .`` depends on: the package, the bundled project, pyproject."""
    digest = hashlib.sha256()
    files = [ROOT / "pyproject.toml", ROOT / "README.md"]
    for folder in ("dbt_runner", "models_sql"):
        files += sorted(
            p
            for p in (ROOT / folder).rglob("*")
            if p.is_file()
            and "__pycache__" not in p.parts
            and not {"target", "logs", "dbt_packages"} & set(p.parts)
        )
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cached_venv(name: str, requirements: Sequence[str], *, timeout_s: float = 600) -> Path:
    """A venv with ``requirements`` installed (``"."`` is this repository); its ``bin`` dir.

    Reused when it was built from the same sources and requirements; rebuilt
    otherwise. Raises :class:`subprocess.TimeoutExpired` past ``timeout_s``.
    """
    key = hashlib.sha256(
        "\n".join([sys.version, _sources_digest(), *requirements]).encode()
    ).hexdigest()[:16]
    home = CACHE / f"{name}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _build(home, name, requirements, timeout_s)


def _build(home: Path, name: str, requirements: Sequence[str], timeout_s: float) -> Path:
    ready = home / ".ready"
    if ready.is_file():
        return home / "bin"
    for stale in CACHE.glob(f"{name}-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=120)
    proc = subprocess.run(
        [str(home / "bin" / "python"), "-m", "pip", "install", "-q", *requirements],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if proc.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        raise RuntimeError(f"pip install {' '.join(requirements)} failed:\n{proc.stderr[-4000:]}")
    ready.write_text("\n".join(requirements) + "\n")
    return home / "bin"


if __name__ == "__main__":  # CI: build a venv ahead of the tests, e.g. in the background
    for venv_name in sys.argv[1:]:
        print(cached_venv(venv_name, REQUIREMENTS[venv_name]))
