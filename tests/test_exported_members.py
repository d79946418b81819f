"""The public surface is ``dbt_runner.__all__`` — and it is honest (as in httpx)."""

from __future__ import annotations
import __future__

import contextlib
import importlib
import inspect
import types
from collections.abc import Callable
from pathlib import Path

import pytest

import dbt_runner


def _exported_public_names() -> set[str]:
    """Names a user can reach on the package that are not private or plumbing.

    The package loads a few names on first use (module ``__getattr__``): they count too.
    """
    names = set(dbt_runner._LAZY)
    for name, value in vars(dbt_runner).items():
        if isinstance(value, (types.ModuleType, __future__._Feature)):
            continue  # submodules and ``from __future__ import annotations``
        if name.startswith("_") and name != "__version__":
            continue
        names.add(name)
    return names


def test_all_lists_exactly_what_the_package_exports() -> None:
    assert len(dbt_runner.__all__) == len(set(dbt_runner.__all__)), "duplicates in __all__"
    assert set(dbt_runner.__all__) == _exported_public_names()


@pytest.mark.parametrize("name", dbt_runner.__all__)
def test_every_public_name_is_importable_and_documented(name: str) -> None:
    module = importlib.import_module("dbt_runner")
    value = getattr(module, name)  # ``from dbt_runner import <name>`` works
    if name == "__version__":
        assert isinstance(value, str) and value
        return
    # its own docstring, not one inherited from a base class
    doc = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
    assert doc and doc.strip(), f"dbt_runner.{name} has no docstring"


@pytest.mark.parametrize(
    "name", ["DbtSession", "Settings", "run_staging", "run_tests", "RunResult", "NodeResult"]
)
def test_design_names_are_public(name: str) -> None:
    assert name in dbt_runner.__all__


def test_error_kinds_are_exactly_the_design_values() -> None:
    values = {kind.value for kind in dbt_runner.ErrorKind}
    # DESIGN's nine, "configuration" (issue 13), "cancelled" and "locked" (issue 21),
    # "stale_source" (issue 24: a source past its freshness error_after)
    assert values == {
        "cancelled",
        "locked",
        "stale_source",
        "configuration",
        "tunnel",
        "connection",
        "too_many_connections",
        "conflict",
        "auth",
        "compilation",
        "model_failure",
        "test_failure",
        "timeout",
    }
    # a str enum: a runbook can compare with plain strings and JSON keeps the value
    assert dbt_runner.ErrorKind.CONFLICT == "conflict"
    assert str(dbt_runner.ErrorKind.TOO_MANY_CONNECTIONS) == "too_many_connections"


def test_exception_hierarchy_matches_design() -> None:
    base = dbt_runner.DbtRunnerError
    for name in (
        "ConfigurationError",
        "TunnelError",
        "DbtInvocationError",
        "DbtRunFailed",
        "DbtTestsFailed",
        "SessionStateError",
    ):
        assert name in dbt_runner.__all__
        assert issubclass(getattr(dbt_runner, name), base), name
    # host key and SSH auth failures are tunnel errors of their own
    assert issubclass(dbt_runner.HostKeyError, dbt_runner.TunnelError)
    assert issubclass(dbt_runner.SSHAuthError, dbt_runner.TunnelError)
    # model and test failures are told apart, and neither is "dbt could not run"
    families = [dbt_runner.DbtInvocationError, dbt_runner.DbtRunFailed, dbt_runner.DbtTestsFailed]
    for a in families:
        for b in families:
            assert a is b or not issubclass(a, b), (a, b)
    assert not issubclass(dbt_runner.ConfigurationError, dbt_runner.TunnelError)


def test_one_map_gives_every_kind_its_retry_decision_and_exit_code() -> None:
    K = dbt_runner.ErrorKind
    exit_codes = {kind: kind.exit_code for kind in K}
    assert exit_codes == {
        K.MODEL_FAILURE: 1,
        K.TEST_FAILURE: 1,
        K.STALE_SOURCE: 1,  # plain `dbt source freshness` exits 1 too
        K.COMPILATION: 1,
        K.AUTH: 2,
        K.CONFIGURATION: 2,
        K.TUNNEL: 3,
        K.CONNECTION: 3,
        K.TOO_MANY_CONNECTIONS: 3,
        K.CONFLICT: 3,
        K.TIMEOUT: 3,
        K.LOCKED: 3,  # DESIGN: "3 ... or locked"
        K.CANCELLED: 130,  # interrupted (143 when the CLI was terminated by SIGTERM)
    }
    assert K.LOCKED.is_infrastructure and not K.LOCKED.is_transient  # not retried in the run
    assert not K.CANCELLED.is_transient and not K.CANCELLED.is_infrastructure
    transient = {kind for kind in K if kind.is_transient}
    assert transient == {K.TUNNEL, K.CONNECTION, K.TOO_MANY_CONNECTIONS, K.CONFLICT}
    # every exception carries its kind: host key and SSH auth failures are auth, exit 2
    assert dbt_runner.HostKeyError("x").kind is K.AUTH
    assert dbt_runner.SSHAuthError("x").exit_code == 2
    assert dbt_runner.TunnelError("x").kind is K.TUNNEL
    assert dbt_runner.ConfigurationError("x").exit_code == 2


def test_invocation_error_carries_its_kind() -> None:
    exc = dbt_runner.DbtInvocationError("no parse", dbt_runner.ErrorKind.COMPILATION)
    assert exc.kind is dbt_runner.ErrorKind.COMPILATION
    assert "compilation" in str(exc)


def test_a_cycle_does_not_import_the_lazy_modules() -> None:
    """doctor, the timeline chart and the SSH stack load only when used: a fresh cycle
    without a bastion does not pay them."""
    import subprocess
    import sys

    lazy = ("dbt_runner._doctor", "dbt_runner._timeline", "dbt_runner._ssh", "paramiko")
    code = f"import sys, dbt_runner; print(sorted(m for m in sys.modules if m in {lazy!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert dbt_runner.run_doctor.__module__ == "dbt_runner._doctor"  # and they are reachable


def test_no_doc_or_example_imports_a_private_module() -> None:
    """Users are pointed at ``dbt_runner.<public name>``, never at ``dbt_runner._module``."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    files += sorted((root / "examples").rglob("*.py")) + sorted((root / "examples").glob("*.ipynb"))
    private = re.compile(r"(from|import)\s+dbt_runner\._[a-z]|dbt_runner[/.]_[a-z]")
    # the architecture page is for the next engineer: it names the private modules
    users = [f for f in files if f.name != "architecture.md"]
    offenders = [str(f.relative_to(root)) for f in users if private.search(f.read_text())]
    assert offenders == []


@pytest.mark.parametrize("method", ["run_staging", "run_tests", "invoke"])
def test_worker_client_methods_take_what_the_session_methods_take(method: str) -> None:
    # a parameter the session has and the client lacks would be a TypeError in a DAG
    # that switches to the worker (or a typo the client passed on unchecked)
    session = inspect.signature(getattr(dbt_runner.DbtSession, method)).parameters
    client = inspect.signature(getattr(dbt_runner.WorkerClient, method)).parameters
    assert [(p.name, p.kind, p.default) for p in client.values()] == [
        (p.name, p.kind, p.default) for p in session.values()
    ]


def test_worker_client_passes_only_the_arguments_given(tmp_path: Path) -> None:
    calls: list[tuple[str, dict[str, object]]] = []

    class Recorder:  # stands in for the session the in-process fallback opens
        def __getattr__(self, op: str) -> Callable[..., object]:
            if op == "_writer_lock":  # held around writers: not an argument passed on
                return lambda label: contextlib.nullcontext(None)

            def call(*args: object, **kwargs: object) -> object:
                calls.append((op, kwargs))
                return types.SimpleNamespace(success=True, error=None)

            return call

    client = dbt_runner.WorkerClient(
        tmp_path / "no-worker.sock", fallback=lambda: contextlib.nullcontext(Recorder())
    )
    client.run_tests(exclude="tag:slow", scope="all")
    client.run_staging(threads=2, full_refresh=True)
    client.invoke(["ls"], timeout_s=5.0)
    assert not client.last_ran_in_worker  # nothing listens: it ran in-process
    assert calls == [
        ("run_tests", {"exclude": "tag:slow", "scope": "all"}),
        ("run_staging", {"threads": 2, "full_refresh": True}),
        ("invoke", {"timeout_s": 5.0}),
    ]


PUBLIC_MODULES = ("cli", "airflow", "demo", "synthetic", "logging")


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_modules_export_exactly_their_own_public_names(name: str) -> None:
    """``dbt_runner.<module>.__all__`` lists every public function and class the module
    defines, each documented; its plumbing is private (a leading underscore)."""
    module = importlib.import_module(f"dbt_runner.{name}")
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"duplicates in dbt_runner.{name}.__all__"
    own = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(v) or inspect.isclass(v))
        and getattr(v, "__module__", None) == module.__name__
    }
    assert own <= set(exported), f"public but not exported: {sorted(own - set(exported))}"
    for export in exported:
        value = getattr(module, export)  # importable
        if inspect.isfunction(value) or inspect.isclass(value):
            doc = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
            assert doc and doc.strip(), f"dbt_runner.{name}.{export} has no docstring"
