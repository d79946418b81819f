"""The package's layers: dbt only behind ``dbt_runner/_dbt/``, SSH only behind ``_ssh/``,
AWS only in ``_aws.py``, OpenLineage only in ``_openlineage.py``, Airflow only in ``airflow.py``.

A dbt upgrade or a paramiko change then touches one folder. The check reads every
module's imports (top level and inside functions) with ``ast``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dbt_runner"

#: top-level import name -> the only folder of the package allowed to import it
OWNERS = {
    "dbt": "_dbt",
    "dbt_common": "_dbt",
    "paramiko": "_ssh",
    "sshtunnel": "_ssh",
    # Redshift IAM: AWS's SDK behind one module (its errors judged there: _aws.kind_of)
    "boto3": "_aws.py",
    "botocore": "_aws.py",
    # optional features: imported by their own module only, and only when used
    "openlineage": "_openlineage.py",
    "airflow": "airflow.py",
}


def _imports(path: Path) -> set[str]:
    """The top-level names a module imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value.split(".")[0])
    return names


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "models_sql" not in p.parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_dbt_and_ssh_libraries_are_imported_only_behind_their_seam(path: Path) -> None:
    folder = path.relative_to(PACKAGE).parts[0]
    wrong = {
        name: owner for name in _imports(path) if (owner := OWNERS.get(name)) and owner != folder
    }
    assert wrong == {}, f"{path.name} imports {sorted(wrong)}: only dbt_runner/{{{wrong}}} may"


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from dbt.cli.main import dbtRunner\n    import paramiko\n")
    assert _imports(module) >= {"dbt", "paramiko"}


def test_every_dbt_internal_the_hooks_wrap_exists() -> None:
    """The hooks of ``_dbt.cancel`` and ``_dbt.reuse`` name dbt internals: a dbt release
    that moves one fails here, not in the middle of a production cancel or cycle."""
    from dbt_runner._dbt import cancel, reuse

    for module, cls, attribute in (*cancel.HOOK_POINTS, *reuse.HOOK_POINTS):
        owner = getattr(importlib.import_module(module), cls)
        assert callable(getattr(owner, attribute, None)), f"{module}.{cls}.{attribute}"


@pytest.mark.parametrize("hooks", ["routes", "connect_timeout"])
def test_every_driver_internal_the_driver_hooks_replace_exists(hooks: str) -> None:
    """The routes (``_dbt.routes``) replace a name of dbt-postgres and a method of
    redshift_connector, ``_dbt.connect_timeout`` wraps redshift_connector's connection:
    a release that moves one fails here, not in a tunnelled or long run."""
    points = importlib.import_module(f"dbt_runner._dbt.{hooks}").HOOK_POINTS
    for module, owner, attribute in points:
        target = importlib.import_module(module)
        if owner:
            target = getattr(target, owner)
        assert hasattr(target, attribute), f"{module}.{owner}.{attribute}"


def test_redshift_connector_keeps_its_timeout_on_the_socket_the_hook_clears() -> None:
    """``_dbt.connect_timeout`` clears ``Connection._usock``'s timeout, which
    redshift_connector sets from its ``timeout`` parameter."""
    import inspect

    import redshift_connector.core

    # the module's text: once a session installed the hook, __init__ is the wrapper
    assert "self._usock.settimeout(timeout)" in inspect.getsource(redshift_connector.core)


def test_every_dbt_internal_the_deprecation_counts_use_exists() -> None:
    """``_dbt.deprecations`` resets dbt's deprecation counts per command and holds back the
    summary of the session's own parse: the names it uses exist in the installed dbt."""
    from dbt_runner._dbt.deprecations import HOOK_POINTS

    for module, attribute in HOOK_POINTS:
        assert hasattr(importlib.import_module(module), attribute), f"{module}.{attribute}"
    from dbt import deprecations

    assert isinstance(deprecations.active_deprecations, dict)  # a defaultdict(int)
