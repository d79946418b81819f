"""The configuration reference (``docs/configuration.md``), generated from :class:`Settings`
(a developer tool: not in the wheel).

Regenerate it with::

    python -m tools.configdoc > docs/configuration.md

``tests/test_configdoc.py`` fails when the file and the model disagree, and
checks that every documented environment variable really is read.

>>> rows = setting_rows()
>>> row = next(r for r in rows if r.path == "warehouse.schema")
>>> row.env_var, row.type_text, row.default_text
('DBT_RUNNER_WAREHOUSE__SCHEMA', 'string', '`staging`')
"""

from __future__ import annotations

import enum
import inspect
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from dbt_runner._settings import ENV_PREFIX, Settings

__all__ = ["SettingRow", "render", "setting_rows"]

_DELIMITER = "__"
_COMMAND = "python -m tools.configdoc > docs/configuration.md"


@dataclass(frozen=True)
class SettingRow:
    """One setting: where it lives, how it is spelled in the environment, what it means."""

    section: str  # "" for top-level settings, else the section's field name
    path: str  # attribute path on Settings, e.g. "warehouse.schema"
    env_var: str
    annotation: Any
    field: FieldInfo
    type_text: str
    default_text: str
    secret: bool

    @property
    def meaning(self) -> str:
        """The field's description, as the model states it."""
        return (self.field.description or "").strip()


def setting_rows(model: type[BaseModel] = Settings) -> list[SettingRow]:
    """Every leaf setting of ``model`` (sections flattened), in declaration order."""
    rows: list[SettingRow] = []
    for name, field in model.model_fields.items():
        section = _section_model(field.annotation)
        if section is None:
            rows.append(_row("", _key(name, field), field))
            continue
        for sub_name, sub_field in section.model_fields.items():
            rows.append(_row(name, _key(sub_name, sub_field), sub_field))
    return rows


def _row(section: str, key: str, field: FieldInfo) -> SettingRow:
    parts = [section, key] if section else [key]
    annotation = field.annotation
    return SettingRow(
        section=section,
        path=".".join(parts),
        env_var=ENV_PREFIX + _DELIMITER.join(p.upper() for p in parts),
        annotation=annotation,
        field=field,
        type_text=_type_text(annotation, field),
        default_text=_default_text(field),
        secret=SecretStr in _flatten(annotation),
    )


def _key(name: str, field: FieldInfo) -> str:
    """The name users write: the alias when there is one (``schema`` for ``schema_``)."""
    return field.alias or name


def _section_model(annotation: Any) -> type[BaseModel] | None:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _flatten(annotation: Any) -> list[Any]:
    """The non-None members of a union (or the annotation itself)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


_TYPE_NAMES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "path",
    SecretStr: "secret string",
}


def _type_text(annotation: Any, field: FieldInfo) -> str:
    parts = []
    for member in _flatten(annotation):
        if typing.get_origin(member) is dict:
            parts.append("JSON object")
        elif typing.get_origin(member) is tuple:
            parts.append("names, comma-separated")
        elif typing.get_origin(member) is Literal:
            parts.append("one of " + ", ".join(f"`{v}`" for v in typing.get_args(member)))
        elif inspect.isclass(member) and issubclass(member, enum.Enum):
            parts.append("one of " + ", ".join(f"`{m.value}`" for m in member))
        else:
            parts.append(_TYPE_NAMES.get(member, getattr(member, "__name__", str(member))))
    text = " or ".join(parts)
    bounds = _bounds(field)
    return f"{text} ({bounds})" if bounds else text


def _bounds(field: FieldInfo) -> str:
    lo: object = None
    hi: object = None
    lo_strict = hi_strict = False
    for item in field.metadata:
        if isinstance(item, Ge):
            lo = item.ge
        elif isinstance(item, Gt):
            lo, lo_strict = item.gt, True
        elif isinstance(item, Le):
            hi = item.le
        elif isinstance(item, Lt):
            hi, hi_strict = item.lt, True
    if lo is not None and hi is not None and not (lo_strict or hi_strict):
        return f"{lo} to {hi}"
    texts = []
    if lo is not None:
        texts.append(f"{'>' if lo_strict else '≥'} {lo}")
    if hi is not None:
        texts.append(f"{'<' if hi_strict else '≤'} {hi}")
    return ", ".join(texts)


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        value = value.value
    return f"`{value}`"


# ---------------------------------------------------------------------- rendering
_INTRO = f"""\
# Configuration reference

<!-- Generated from dbt_runner.Settings by `{_COMMAND}`.
     Do not edit by hand: tests/test_configdoc.py fails when this file and the model disagree. -->

Every setting of `dbt_runner.Settings` is read from an environment variable with the prefix
`{ENV_PREFIX}`; settings of a section (`warehouse`, `ssh`, `retry`) join the section and the
name with `{_DELIMITER}`, e.g. `{ENV_PREFIX}WAREHOUSE{_DELIMITER}HOST`. Keywords given to
the constructor override the environment, section by section:

```python
import os

from dbt_runner import Settings

settings = Settings(
    threads=5,
    warehouse={{"type": "postgres", "host": "db", "user": "dbt", "dbname": "analytics",
               "password": os.environ["WAREHOUSE_PASSWORD"]}},
)
```

- **Booleans** accept `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
- **Unset** means the variable is absent (an empty value is not the same as unset).
- **Secrets** (`secret string`) are `pydantic.SecretStr`: they never appear in logs, reprs,
  results, exceptions, or in files left on disk after a session.
- Bad values raise `dbt_runner.ConfigurationError` before anything connects, naming the
  variable (never its secret value) and the fix; a value the `dbt-runner` command line gave
  (`--project-dir`, `--profiles-dir`, `--target`, `--threads`) is named by its flag.
- **No unknown names**: every variable that begins with `{ENV_PREFIX}` must be one of the
  settings below (a section may also be given whole, as one JSON object:
  `{ENV_PREFIX}WAREHOUSE='{{"type": "postgres", ...}}'`) or `{ENV_PREFIX}LOG_FORMAT` (the
  CLI's `--log-format`). Any other one is a configuration error (exit 2) naming it and the
  closest setting: `{ENV_PREFIX}WAREHOUS__TYPE` → "did you mean
  `{ENV_PREFIX}WAREHOUSE__TYPE`?". A warehouse field without `{ENV_PREFIX}WAREHOUSE__TYPE`
  (`HOST` alone, say) is an error too, never the embedded DuckDB.
- **dbt vars**: `{ENV_PREFIX}VARS` (a JSON object) and `{ENV_PREFIX}RAW_SCHEMA` are passed to
  every dbt command as `--vars`, merged under the vars the command itself is given (those win,
  key by key: `run_staging(vars=...)`, `invoke([..., "--vars", ...])`, the CLI's `--vars`).
  The bundled project's vars (raw schema, windows, value domains) are described in
  [the staging models](models.md#vars).
- Not settings but read by dbt itself: `DBT_ENV_SECRET_*` variables are how a session hands the
  password to dbt; dbt_runner sets and removes them.

From Airflow, `dbt_runner.airflow.settings_from_connections()` fills the `warehouse` and `ssh`
sections from Airflow connections (see [getting started](getting-started.md#from-airflow));
the rest still comes from these variables.
"""

_SECTION_TITLES = {
    "": "General",
    "warehouse": "Warehouse",
    "ssh": "SSH bastion",
    "retry": "Retries",
    "lock": "Writer lock",
}


def render() -> str:
    """The whole ``docs/configuration.md``."""
    rows = setting_rows()
    out = [_INTRO]
    sections: dict[str, list[SettingRow]] = {}
    for row in rows:
        sections.setdefault(row.section, []).append(row)
    for section, section_rows in sections.items():
        title = _SECTION_TITLES.get(section, section.capitalize())
        out.append(f"\n## {title}\n")
        doc = _section_doc(section)
        if doc:
            out.append(f"\n{doc}\n")
        out.append("\n| env var | setting | type | default | meaning |\n")
        out.append("|---|---|---|---|---|\n")
        for row in section_rows:
            meaning = _cell(row.meaning) or "(no description)"
            out.append(
                f"| `{row.env_var}` | `{row.path}` | {_cell(row.type_text)} | "
                f"{_cell(row.default_text)} | {meaning} |\n"
            )
    return "".join(out)


def _section_doc(section: str) -> str:
    if not section:
        return "Top-level settings: `Settings(threads=...)`."
    model = _section_model(Settings.model_fields[section].annotation)
    doc = inspect.getdoc(model) or ""
    first = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    return first.replace("``", "`")


def _cell(text: str) -> str:
    """Markdown table cell: pipes escaped, no line breaks."""
    return " ".join(text.split()).replace("|", "\\|")


def main() -> None:
    """Print the reference (``python -m tools.configdoc > docs/configuration.md``)."""
    sys.stdout.write(render())


if __name__ == "__main__":  # pragma: no cover
    main()
