"""Rendering one ``profiles.yml`` value the way dbt renders it."""

from __future__ import annotations

import contextvars
import os
from typing import Any

__all__ = ["render_value"]


def render_value(value: Any, keypath: tuple[str, ...]) -> Any:
    """``value`` rendered with dbt's profile renderer (``env_var``, ``var``...).

    dbt keeps its environment in a context variable: it is set in a copy of the
    caller's context, never for the caller.
    """
    if not isinstance(value, str) or ("{{" not in value and "{%" not in value):
        return value

    def render() -> Any:
        from dbt.config.renderer import ProfileRenderer
        from dbt_common.context import set_invocation_context

        set_invocation_context(os.environ)
        return ProfileRenderer({}).render_value(value, keypath)

    return contextvars.copy_context().run(render)
