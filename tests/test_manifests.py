"""A long-lived session notices changed project files and re-parses (issue 16).

Unit tests of the snapshot and the cache, then a real DbtSession on a copy of
the mini project over DuckDB: edit a model, add one, delete one, change
nothing — and check the data and dbt's own parse count after each.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pytest

from dbt_runner import DbtSession, Settings
from dbt_runner._manifests import MAX_MANIFESTS, ManifestCache, project_files

MINI = Path(__file__).parent / "fixtures" / "mini_project"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(MINI, copy, ignore=shutil.ignore_patterns("target", "logs"))
    return copy


def _touch_later(path: Path, text: str) -> None:
    """Rewrite ``path``; its mtime moves forward even on a coarse clock."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


# ---------------------------------------------------------------------- snapshot
def test_snapshot_sees_edits_additions_deletions_and_ignores_nothing_else(project: Path) -> None:
    base = project_files(project)
    names = {Path(p).name for p, _, _ in base}
    assert {"dbt_project.yml", "part_1.sql", "schema.yml"} <= names
    assert project_files(project) == base  # nothing changed: equal

    model = project / "models" / "part_1.sql"
    _touch_later(model, model.read_text().replace("select 1 as part", "select 7 as part"))
    edited = project_files(project)
    assert edited != base and len(edited) == len(base)  # same size, newer mtime

    (project / "models" / "part_4.sql").write_text("select 4 as part")
    added = project_files(project)
    assert len(added) == len(base) + 1

    (project / "models" / "part_4.sql").unlink()
    assert project_files(project) == edited


def test_snapshot_follows_the_paths_of_dbt_project_yml(project: Path) -> None:
    (project / "dbt_project.yml").write_text(
        (project / "dbt_project.yml").read_text().replace('["models"]', '["elsewhere"]')
    )
    (project / "elsewhere").mkdir()
    (project / "elsewhere" / "m.sql").write_text("select 1")
    (project / "dbt_packages" / "pkg" / "macros").mkdir(parents=True)
    (project / "dbt_packages" / "pkg" / "macros" / "x.sql").write_text(
        "{% macro x() %}{% endmacro %}"
    )
    names = {Path(p).name for p, _, _ in project_files(project)}
    assert {"m.sql", "x.sql"} <= names
    assert "part_1.sql" not in names  # models/ is no longer a model path


def test_a_users_profiles_yml_is_watched(tmp_path: Path, project: Path) -> None:
    profiles = tmp_path / "profiles.yml"
    profiles.write_text("a: 1\n")
    cache = ManifestCache(project, profiles)
    before = cache.snapshot()
    _touch_later(profiles, "a: 2\n")
    assert cache.snapshot() != before


def test_cache_drops_stale_manifests_and_keeps_a_bounded_number(project: Path) -> None:
    cache = ManifestCache(project)
    files = cache.snapshot()
    cache.put(("", ""), "m0", files)
    assert cache.get(("", ""), files) == "m0"
    assert cache.get(("", '{"x": 1}'), files) is None
    model = project / "models" / "part_2.sql"
    _touch_later(model, model.read_text() + "\n")
    assert cache.get(("", ""), cache.snapshot()) is None  # changed files: parse again
    for i in range(MAX_MANIFESTS + 3):  # a new --vars value every cycle
        cache.put(("", str(i)), f"m{i}", files)
    assert len(cache) == MAX_MANIFESTS
    assert cache.get(("", str(MAX_MANIFESTS + 2)), files) == f"m{MAX_MANIFESTS + 2}"
    assert cache.get(("", "0"), files) is None


# ---------------------------------------------------------------------- real session
def _part(db: Path, table: str) -> list[tuple[int]]:
    # same process, same configuration as dbt-duckdb's handle: DuckDB shares the instance
    con = duckdb.connect(str(db))
    try:
        return [tuple(r) for r in con.execute(f"select part from stg.{table}").fetchall()]
    finally:
        con.close()


def test_session_reparses_after_edit_addition_and_deletion(tmp_path: Path, project: Path) -> None:
    db = tmp_path / "mini.duckdb"
    settings = Settings(
        project_dir=project,
        warehouse={"type": "duckdb", "path": str(db), "schema": "stg"},
        state_dir=tmp_path / "state",
        retry={"attempts": 1},
    )
    models = project / "models"
    with DbtSession(settings) as session:
        first = session.run_staging(select="part_1")
        assert first.success, first.summary()
        assert _part(db, "part_1") == [(1,)]
        assert session.parse_count == 1

        # unchanged: the cached manifest is used
        assert session.run_staging(select="part_1").success
        assert session.parse_count == 1

        # edit a literal (same file size): the new SQL runs
        model = models / "part_1.sql"
        _touch_later(model, model.read_text().replace("select 1 as part", "select 7 as part"))
        edited = session.run_staging(select="part_1")
        assert edited.success, edited.summary()
        assert _part(db, "part_1") == [(7,)]
        assert session.parse_count == 2

        # a new model file is found
        (models / "part_4.sql").write_text("{{ config(tags=['staging']) }}\nselect 4 as part\n")
        added = session.run_staging(select="part_4")
        assert added.success, added.summary()
        assert [n.name for n in added.nodes] == ["part_4"]
        assert _part(db, "part_4") == [(4,)]
        assert session.parse_count == 3

        # a deleted one is gone from the manifest (and its selection is empty)
        (models / "part_4.sql").unlink()
        gone = session.invoke(["run", "--select", "part_4"])
        assert gone.success and gone.nodes == ()
        assert session.parse_count == 4

        again = session.invoke(["run", "--select", "part_4"])
        assert again.nodes == ()
        assert session.parse_count == 4
