"""``DBT_RUNNER_INSTALL_DEPS``: dbt deps before a session's first command (auto / always /
never).

A DuckDB project with two ``local:`` packages (the dbt hub is not reachable here).
``dbt deps`` empties the install path before installing, so a file left in it shows
whether deps ran.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import DbtSession, ErrorKind, Settings
from dbt_runner._deps import deps_reason
from dbt_runner._settings import bundled_project_dir

SENTINEL = "left_by_the_test"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DBT_RUNNER_"):
            monkeypatch.delenv(name)


def write_package(root: Path, directory: str, name: str, macro: str, value: int) -> None:
    package = root / directory
    (package / "macros").mkdir(parents=True)
    (package / "dbt_project.yml").write_text(f"name: {name}\nversion: '1.0'\nconfig-version: 2\n")
    (package / "macros" / f"{macro}.sql").write_text(
        f"{{% macro {macro}() %}}{value}{{% endmacro %}}\n"
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project using a macro from each of two local packages."""
    write_package(tmp_path, "pkg_a", "pkg_a", "a_value", 1)
    write_package(tmp_path, "pkg_a_v2", "pkg_a", "a_value", 2)  # the same package, newer
    write_package(tmp_path, "pkg_b", "pkg_b", "b_value", 10)
    project = tmp_path / "with_packages"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: with_packages\nversion: '1.0'\nconfig-version: 2\nprofile: with_packages\n"
        "models:\n  with_packages:\n    +materialized: table\n"
    )
    (project / "packages.yml").write_text(packages_yml("pkg_a"))
    (project / "models" / "uses_packages.sql").write_text(
        "select {{ pkg_a.a_value() }} as a, {{ pkg_b.b_value() }} as b\n"
    )
    return project


def packages_yml(a_dir: str) -> str:
    return f"packages:\n  - local: ../{a_dir}\n  - local: ../pkg_b\n"


def settings(project: Path, **extra: Any) -> Settings:
    return Settings(
        project_dir=project,
        warehouse={"type": "duckdb", "path": str(project.parent / "wh.duckdb")},
        retry={"attempts": 1},
        **extra,
    )


def run_model(project: Path, **extra: Any) -> tuple[int, int]:
    """Open a session (deps per the setting), run the model, return its row."""
    with DbtSession(settings(project, **extra)) as session:
        result = session.invoke(["run"])
        assert result.success, result.summary()
    import duckdb

    conn = duckdb.connect(str(project.parent / "wh.duckdb"), read_only=True)
    try:
        row = conn.execute("select a, b from staging.uses_packages").fetchone()
    finally:
        conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


def leave_sentinel(project: Path) -> Path:
    path = project / "dbt_packages" / SENTINEL
    path.write_text("deps would remove me\n")
    return path


def test_auto_installs_missing_packages_once(project: Path) -> None:
    assert run_model(project) == (1, 10)  # deps ran at open: both packages are there
    assert (project / "dbt_packages" / "pkg_a").is_dir()
    assert (project / "dbt_packages" / "pkg_b").is_dir()
    assert (project / "package-lock.yml").is_file()

    sentinel = leave_sentinel(project)
    assert run_model(project) == (1, 10)
    assert sentinel.exists()  # installed and unchanged: no second deps


def test_auto_reinstalls_a_missing_package(project: Path) -> None:
    run_model(project)
    shutil.rmtree(project / "dbt_packages" / "pkg_b", ignore_errors=True)
    (project / "dbt_packages" / "pkg_b").unlink(missing_ok=True)  # a symlink to ../pkg_b
    assert run_model(project) == (1, 10)
    assert (project / "dbt_packages" / "pkg_b").is_dir()


def test_auto_follows_a_changed_lock(project: Path) -> None:
    run_model(project)
    lock = project / "package-lock.yml"
    # a `git pull` brings the new package version: packages.yml and its lock together
    (project / "packages.yml").write_text(packages_yml("pkg_a_v2"))
    lock.write_text(lock.read_text().replace("../pkg_a\n", "../pkg_a_v2\n"))
    assert run_model(project) == (2, 10)

    # the lock alone changed (regenerated elsewhere): installed again
    sentinel = leave_sentinel(project)
    lock.write_text(lock.read_text() + "# regenerated\n")
    assert run_model(project) == (2, 10)
    assert not sentinel.exists()


def test_packages_installed_by_plain_dbt_deps_are_trusted(project: Path) -> None:
    run_model(project)
    (project / "dbt_packages" / ".dbt_runner_deps.sha256").unlink()  # as plain `dbt deps` left it
    sentinel = leave_sentinel(project)
    assert run_model(project) == (1, 10)
    assert sentinel.exists()


def test_always_runs_deps_at_every_open(project: Path) -> None:
    run_model(project, install_deps="always")
    sentinel = leave_sentinel(project)
    assert run_model(project, install_deps="always") == (1, 10)
    assert not sentinel.exists()


def test_never_leaves_missing_packages_to_dbts_own_error(project: Path) -> None:
    with DbtSession(settings(project, install_deps="never")) as session:
        result = session.invoke(["run"])
    assert not result.success
    assert result.error is not None
    assert result.error.kind is ErrorKind.CONFIGURATION  # not a model failure: exit code 2
    assert "dbt deps" in result.error.message  # dbt's own words
    assert "DBT_RUNNER_INSTALL_DEPS" in result.error.message  # and the fix
    assert not (project / "dbt_packages").exists()


def test_never_from_the_environment(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBT_RUNNER_INSTALL_DEPS", "never")
    assert Settings().install_deps == "never"
    assert deps_reason(project, "never") is None


def test_projects_without_packages_need_nothing(tmp_path: Path) -> None:
    bundled = bundled_project_dir()
    assert deps_reason(bundled, "auto") is None
    assert not (bundled / "dbt_packages").exists()
    # dependencies.yml with only dbt Mesh projects installs nothing either
    (tmp_path / "dbt_project.yml").write_text("name: x\nprofile: x\n")
    (tmp_path / "dependencies.yml").write_text("projects:\n  - name: upstream\n")
    assert deps_reason(tmp_path, "auto") is None


def test_a_failing_deps_raises_at_the_first_command_and_is_tried_again(project: Path) -> None:
    from dbt_runner import DbtInvocationError, SessionState

    (project / "packages.yml").write_text("packages:\n  - local: ../no_such_package\n")
    with DbtSession(settings(project)) as session:
        for _ in range(2):  # not installed: the next command tries again
            with pytest.raises(DbtInvocationError) as info:
                session.invoke(["run"])
            assert "no_such_package" in str(info.value)
        assert session.state is SessionState.OPEN


def test_a_first_deps_command_installs_the_packages_once(project: Path) -> None:
    """Plain ``dbt deps`` installs once; so does a session whose first command is deps
    (it does not install them first, then again), and it remembers what it installed."""
    with DbtSession(settings(project)) as session:
        assert session.invoke(["deps"]).success
        sentinel = leave_sentinel(project)
        assert session.invoke(["run"]).success  # installed: nothing to do before it
    log = (project / "logs" / "dbt.log").read_text()
    assert log.count("Installed from <local @ ../pkg_a>") == 1
    assert sentinel.exists()
    assert deps_reason(project, "auto") is None  # installed as declared, recorded


def test_an_unknown_install_deps_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dbt_runner import ConfigurationError

    monkeypatch.setenv("DBT_RUNNER_INSTALL_DEPS", "sometimes")
    with pytest.raises(ConfigurationError, match="DBT_RUNNER_INSTALL_DEPS"):
        Settings()


def test_dbt_runner_deps_installs_the_packages_once(project: Path) -> None:
    """``dbt-runner deps`` ran dbt deps twice: at the session's open, then as the command."""
    from click.testing import CliRunner

    from dbt_runner.cli import main

    env = {"DBT_RUNNER_WAREHOUSE__PATH": str(project.parent / "wh.duckdb")}
    result = CliRunner().invoke(main, ["deps", "--json", "--project-dir", str(project)], env=env)
    assert result.exit_code == 0, result.output
    log = (project / "logs" / "dbt.log").read_text()
    assert log.count("Running with dbt=") == 1  # one dbt invocation in all
    assert log.count("Installed from <local @ ../pkg_b>") == 1
    assert (project / "dbt_packages" / "pkg_b").is_dir()
