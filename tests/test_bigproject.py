"""The benchmark's generated project (``benchmarks/bigproject.py``) is the same every time."""

from __future__ import annotations

import hashlib
from pathlib import Path

from benchmarks.bigproject import generate


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_the_generated_project_is_deterministic_and_has_the_asked_size(tmp_path: Path) -> None:
    first = _tree(generate(tmp_path / "a", models=300))
    assert first == _tree(generate(tmp_path / "b", models=300))
    models = [p for p in first if p.startswith("models/") and p.endswith(".sql")]
    assert len(models) == 300
    assert len([p for p in first if p.startswith("macros/")]) >= 10
    assert _tree(generate(tmp_path / "c", models=300, seed=1)) != first
