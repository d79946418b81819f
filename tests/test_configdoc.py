"""docs/configuration.md is generated from the Settings model, and it tells the truth."""

from __future__ import annotations

import enum
import inspect
import os
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, SecretStr

from dbt_runner import Settings
from tools.configdoc import SettingRow, render, setting_rows

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
REGENERATE = "python -m tools.configdoc > docs/configuration.md"

ROWS = setting_rows()


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if inspect.isclass(ann) and issubclass(ann, BaseModel):
            paths += _leaf_paths(ann, f"{name}.")
        else:
            paths.append(prefix + (field.alias or name))
    return paths


def test_doc_matches_the_settings_model() -> None:
    assert DOC.read_text() == render(), f"docs/configuration.md is stale: run `{REGENERATE}`"


def test_module_entry_point_prints_the_doc() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tools.configdoc"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.stdout == render()


def test_every_setting_is_documented_once_with_a_meaning() -> None:
    assert [r.path for r in ROWS] == _leaf_paths(Settings)
    text = render()
    for row in ROWS:
        assert text.count(f"| `{row.env_var}` |") == 1, row.env_var
        assert row.meaning, f"{row.path} has no description in the model"


def test_secrets_are_marked() -> None:
    secret_paths = {r.path for r in ROWS if r.secret}
    assert secret_paths == {"warehouse.password", "ssh.private_key_passphrase"}
    for row in ROWS:
        assert ("secret string" in row.type_text) is row.secret


def test_defaults_shown_are_the_runtime_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DBT_RUNNER_"):
            monkeypatch.delenv(name)
    settings = Settings()
    for row in ROWS:
        value = _get(settings, row.path)
        if row.default_text == "unset":
            assert value in (None, ()), row.path
        else:
            shown = row.default_text.strip("`")
            if isinstance(value, bool):
                assert shown == str(value).lower(), row.path
            else:
                assert shown == str(getattr(value, "value", value)), row.path


# ---------------------------------------------------------------------- the env vars work
def _sample(row: SettingRow, tmp: Path) -> tuple[str, Any]:
    """(env value, expected attribute value): valid, and different from the default."""
    default = row.field.get_default(call_default_factory=True)
    kind = row.annotation
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is Literal:
        value = next(v for v in typing.get_args(kind) if v not in (default, "redshift"))
        return str(value), value
    if inspect.isclass(kind) and issubclass(kind, enum.Enum):
        member = next(m for m in kind if m != default)
        return str(member.value), member
    if kind is bool:
        return str(not default).lower(), not default
    if kind in (int, float):
        lo, hi = _limits(row)
        value = lo + 1 if lo + 1 != default else lo + 2
        if hi is not None:
            assert value < hi
        return str(value), kind(value)
    if kind is SecretStr:
        return "s3cret-sample", "s3cret-sample"
    if kind is Path and row.path in _FILE_SAMPLES:  # a setting that takes a file
        path = tmp / _FILE_SAMPLES[row.path]
        path.write_text("sample\n")
        return str(path), path
    if kind is Path:
        return str(tmp), tmp
    if kind is str:
        return "sample_value", "sample_value"
    if typing.get_origin(kind) is dict:  # a JSON object
        return '{"sample_key": [1, "two"]}', {"sample_key": [1, "two"]}
    if typing.get_origin(kind) is tuple:  # names, comma-separated
        return "first, second", ("first", "second")
    raise AssertionError(f"no sample for {row.path}: {row.annotation!r}")  # a new type: add one


def _limits(row: SettingRow) -> tuple[int, int | None]:
    lo, hi = 0, None
    for item in row.field.metadata:
        if isinstance(item, Ge):
            lo = int(item.ge)  # type: ignore[call-overload]
        elif isinstance(item, Gt):
            lo = int(item.gt) + 1  # type: ignore[call-overload]
        elif isinstance(item, Le):
            hi = int(item.le)  # type: ignore[call-overload]
        elif isinstance(item, Lt):
            hi = int(item.lt) - 1  # type: ignore[call-overload]
    return lo, hi


def _get(settings: Settings, path: str) -> Any:
    obj: Any = settings
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


_W = "DBT_RUNNER_WAREHOUSE__"
#: Redshift IAM: METHOD=iam logs in without USER/PASSWORD (None: unset)
_IAM: dict[str, str | None] = {
    f"{_W}METHOD": "iam",
    f"{_W}USER": None,
    f"{_W}PASSWORD": None,
}
_PROVISIONED = {**_IAM, f"{_W}CLUSTER_ID": "analytics", f"{_W}DB_USER": "dbt"}
#: other settings a sample needs to be valid (e.g. a bastion host needs a user and a key)
_BASTION = {
    "DBT_RUNNER_SSH__USER": "tunnel",
    "DBT_RUNNER_SSH__ALLOW_AGENT": "true",
    "DBT_RUNNER_SSH__INSECURE_SKIP_HOST_KEY_CHECK": "true",
}
_COMPANIONS: dict[str, dict[str, str | None]] = {
    "warehouse.method": _PROVISIONED,
    "warehouse.cluster_id": _PROVISIONED,
    "warehouse.workgroup": _IAM,
    "warehouse.region": _PROVISIONED,
    "warehouse.db_user": _PROVISIONED,
    "warehouse.db_groups": _PROVISIONED,
    "warehouse.auto_create": _PROVISIONED,
    "warehouse.iam_profile": _PROVISIONED,
    "ssh.host": _BASTION,
    "ssh.remote_host": {"DBT_RUNNER_SSH__HOST": "bastion.example.com", **_BASTION},
    "warehouse.sslrootcert": {"DBT_RUNNER_WAREHOUSE__TYPE": "postgres"},  # a libpq setting
}
#: Path settings that take a file (the sample for other paths is a directory)
_FILE_SAMPLES = {"warehouse.sslrootcert": "ca.crt"}


@pytest.mark.parametrize("row", ROWS, ids=[r.env_var for r in ROWS])
def test_documented_env_var_is_read(
    row: SettingRow, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith("DBT_RUNNER_"):
            monkeypatch.delenv(name)
    # a directory that satisfies every path check (project_dir, profiles_dir)
    (tmp_path / "dbt_project.yml").write_text("name: x\n")
    (tmp_path / "profiles.yml").write_text("x: {}\n")
    base: dict[str, str | None] = {
        "DBT_RUNNER_WAREHOUSE__TYPE": "redshift",
        "DBT_RUNNER_WAREHOUSE__HOST": "wh.example.com",
        "DBT_RUNNER_WAREHOUSE__USER": "dbt",
        "DBT_RUNNER_WAREHOUSE__DBNAME": "analytics",
        "DBT_RUNNER_WAREHOUSE__PASSWORD": "pw",
        **_COMPANIONS.get(row.path, {}),
    }
    for name, value in base.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    env_value, expected = _sample(row, tmp_path)
    monkeypatch.setenv(row.env_var, env_value)

    actual = _get(Settings(), row.path)
    if isinstance(actual, SecretStr):
        actual = actual.get_secret_value()
    assert actual == expected
