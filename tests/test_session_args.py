"""The caller's arguments win: plain ``dbt`` and the library on identical copies (DuckDB).

A team's own project and ``profiles.yml`` (two targets, a ``local:`` package)
is copied twice; plain ``dbt`` runs in a process of its own (:mod:`tests._dbt_fork`)
on one copy and a ``DbtSession`` on the other, with the same arguments. What each
wrote — which target's database got the tables, the per-node statuses in
``run_results.json``, the installed packages — must be the same.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dbt_runner import DbtSession, Settings
from tests import _dbt_fork

pytestmark = pytest.mark.timeout(300)


def write_project(root: Path) -> Path:
    """A small project of another team: seed, models, a local package, two targets."""
    pkg = root / "helpers"
    (pkg / "macros").mkdir(parents=True)
    (pkg / "dbt_project.yml").write_text("name: helpers\nversion: '1.0'\nconfig-version: 2\n")
    (pkg / "macros" / "double.sql").write_text("{% macro double(x) %}({{ x }} * 2){% endmacro %}")
    project = root / "team"
    (project / "models").mkdir(parents=True)
    (project / "seeds").mkdir()
    (project / "dbt_project.yml").write_text(
        "name: team\nversion: '1.0'\nconfig-version: 2\nprofile: team\n"
        "models:\n  team:\n    +materialized: table\n"
    )
    (project / "packages.yml").write_text("packages:\n  - local: ../helpers\n")
    (project / "seeds" / "prices.csv").write_text("id,price\n1,10\n2,20\n")
    (project / "models" / "doubled.sql").write_text(
        "select id, {{ helpers.double('price') }} as price2 from {{ ref('prices') }}"
    )
    (project / "models" / "other.sql").write_text("select 1 as x")
    (project / "profiles.yml").write_text(
        "team:\n  target: dev\n  outputs:\n"
        f"    dev: {{type: duckdb, path: '{project / 'dev.duckdb'}', threads: 1}}\n"
        f"    ci: {{type: duckdb, path: '{project / 'ci.duckdb'}', threads: 2}}\n"
    )
    return project


@pytest.fixture
def copies(tmp_path: Path) -> tuple[Path, Path]:
    """(the library's copy, plain dbt's copy) of the same project."""
    lib = write_project(tmp_path / "lib")
    plain = write_project(tmp_path / "plain")
    return lib, plain


def plain_dbt(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    return _dbt_fork.run(
        [*args, "--project-dir", str(project), "--profiles-dir", str(project)],
        cwd=Path.cwd(),
        env=env,
        timeout=240,
    )


def statuses(project: Path) -> dict[str, str]:
    data = json.loads((project / "target" / "run_results.json").read_text())
    return {r["unique_id"]: r["status"] for r in data["results"]}


def tables(path: Path) -> set[str]:
    if not path.exists():
        return set()
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute("select table_name from information_schema.tables").fetchall()
        return {row[0] for row in rows}
    finally:
        con.close()


def session(project: Path, **overrides: Any) -> DbtSession:
    values: dict[str, Any] = {"project_dir": project, "profiles_dir": project}
    values.update(overrides)
    return DbtSession(Settings(**values))


def test_deps_then_seed_and_run_on_the_callers_target_like_plain_dbt(
    copies: tuple[Path, Path],
) -> None:
    lib, plain = copies
    with session(lib) as s:
        deps = s.invoke(["deps"])  # needs no manifest: no parse first (it could not parse)
        assert deps.success, deps.summary()
        assert s.parse_count == 0
        seeded = s.invoke(["seed", "--target", "ci"])
        ran = s.invoke(["run", "--target", "ci"])
    for args in (["deps"], ["seed", "--target", "ci"], ["run", "--target", "ci"]):
        done = plain_dbt(plain, *args)
        assert done.returncode == 0, done.stdout[-2000:]
        if args[0] == "seed":
            assert seeded.success, seeded.summary()
            assert {n.unique_id: n.status for n in seeded.nodes} == statuses(plain)
    assert ran.success, ran.summary()
    assert statuses(lib) == statuses(plain)
    assert sorted(p.name for p in (lib / "dbt_packages").iterdir()) == sorted(
        p.name for p in (plain / "dbt_packages").iterdir()
    )
    # --target ci went where plain dbt's went; the default target was not touched
    assert (
        tables(lib / "ci.duckdb")
        == tables(plain / "ci.duckdb")
        == {
            "prices",
            "doubled",
            "other",
        }
    )
    assert tables(lib / "dev.duckdb") == tables(plain / "dev.duckdb") == set()
    # the effective args are recorded: the caller's --target, and no second one
    assert ran.attempt_log[0].args.count("--target") == 1
    assert "ci" in ran.attempt_log[0].args


def test_threads_explicit_beats_the_profile_which_beats_the_setting(
    copies: tuple[Path, Path],
) -> None:
    lib, _ = copies
    with session(lib, threads=3) as s:
        assert s.invoke(["deps"]).success
        from_profile = s.invoke(["seed", "--target", "ci"])
        from_args = s.invoke(["run", "--target", "ci", "--threads", "1"])
        from_keyword = s.invoke(["run", "--target", "ci"], threads=2)
    assert from_profile.success and from_args.success and from_keyword.success
    assert from_profile.threads == 2  # the profile's threads, not DBT_RUNNER_THREADS=3
    assert "--threads" not in from_profile.attempt_log[0].args
    assert from_args.threads == 1
    assert from_args.attempt_log[0].args.count("--threads") == 1
    assert from_keyword.threads == 2


def test_debug_runs_without_a_parse(copies: tuple[Path, Path]) -> None:
    lib, plain = copies
    with session(lib) as s:
        result = s.invoke(["debug"])
        assert s.parse_count == 0
    assert result.success, result.summary()
    assert plain_dbt(plain, "debug").returncode == 0


def test_the_callers_log_level_reaches_dbt(
    copies: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    lib, _ = copies
    with session(lib) as s:
        assert s.invoke(["deps"]).success
        capsys.readouterr()
        assert s.invoke(["seed", "--log-level", "debug"]).success
    out = capsys.readouterr()
    assert "Acquiring new duckdb connection" in out.out + out.err


def test_dbts_log_file_keeps_its_debug_lines_under_the_quiet_console(
    copies: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session quiets dbt's console (``--log-level warn``); dbt would lower its
    ``logs/dbt.log`` to that level too, where plain dbt writes it at ``debug``."""
    for name in ("DBT_LOG_LEVEL", "DBT_LOG_LEVEL_FILE"):
        monkeypatch.delenv(name, raising=False)
    lib, _ = copies
    with session(lib) as s:
        assert s.invoke(["seed"]).success
    out = capsys.readouterr()
    assert "Acquiring new duckdb connection" not in out.out + out.err  # console: quiet
    log = (lib / "logs" / "dbt.log").read_text()
    assert "Acquiring new duckdb connection" in log  # dbt.log: as plain dbt writes it
