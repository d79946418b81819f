"""Tiny dbt projects written by tests: one helper instead of a copy per module."""

from __future__ import annotations

from pathlib import Path


def write_project(
    root: Path,
    name: str,
    models: dict[str, str],
    *,
    tests: dict[str, str] | None = None,
    yml: str = "",
    selectors: str = "",
) -> Path:
    """``root/proj``: a project ``name`` (profile ``name``) of table models.

    ``models``/``tests`` map a file stem to its SQL (singular tests under tests/);
    ``yml`` is models/schema.yml, ``selectors`` the selectors.yml text.
    """
    project = root / "proj"
    (project / "models").mkdir(parents=True)
    (project / "tests").mkdir()
    (project / "dbt_project.yml").write_text(
        f"name: {name}\nversion: '1.0'\nconfig-version: 2\nprofile: {name}\n"
        "model-paths: [models]\ntest-paths: [tests]\n"
        f"models:\n  {name}:\n    +materialized: table\n"
    )
    for stem, sql in models.items():
        (project / "models" / f"{stem}.sql").write_text(sql)
    for stem, sql in (tests or {}).items():
        (project / "tests" / f"{stem}.sql").write_text(sql)
    if yml:
        (project / "models" / "schema.yml").write_text(yml)
    if selectors:
        (project / "selectors.yml").write_text(selectors)
    return project
