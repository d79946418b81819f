"""The arguments a session adds to a dbt command — only what the caller did not give.

dbt's semantics win: a flag the caller wrote (``--target ci``, ``--log-level
debug``, ``--threads 1``, in any of its spellings: ``-t``, ``--target=ci``,
``--no-…``) is never overridden, and a flag is added only when the command
accepts it — asked of dbt's own click command, not of a hand-kept list (so
``deps`` and ``debug`` never get ``--target-path``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

__all__ = ["accepts", "given", "with_defaults"]


@lru_cache(maxsize=64)
def _command(words: tuple[str, ...]) -> Any:
    """dbt's click command for the leading words of ``args`` (``docs generate`` too)."""
    import click
    from dbt.cli.main import cli

    command: Any = cli
    for word in words:
        if not isinstance(command, click.Group) or word not in command.commands:
            break
        command = command.commands[word]
    return command


def _leading_words(args: Sequence[str]) -> tuple[str, ...]:
    words = []
    for arg in args:
        if arg.startswith("-"):
            break
        words.append(arg)
        if len(words) == 2:  # dbt's commands are at most two words deep
            break
    return tuple(words)


def _spellings(args: Sequence[str], flag: str) -> tuple[str, ...]:
    """Every spelling of the option ``flag`` on the command of ``args`` (empty: not accepted)."""
    import click

    command = _command(_leading_words(args))
    for param in getattr(command, "params", ()):
        if isinstance(param, click.Option):
            names = (*param.opts, *param.secondary_opts)
            if flag in names:
                return tuple(names)
    return ()


def accepts(args: Sequence[str], flag: str) -> bool:
    """True when the dbt command of ``args`` has the option ``flag``.

    >>> accepts(["run"], "--target-path"), accepts(["deps"], "--target-path")  # doctest: +SKIP
    (True, False)
    """
    return bool(_spellings(args, flag))


def given(args: Sequence[str], flag: str) -> bool:
    """True when ``args`` already set the option ``flag`` (any spelling, ``--x=v`` too)."""
    names = _spellings(args, flag) or (flag,)
    for arg in args:
        for name in names:
            if arg == name or (name.startswith("--") and arg.startswith(name + "=")):
                return True
            if not name.startswith("--") and arg.startswith(name) and len(arg) > len(name):
                return True  # "-tci": a short option with its value attached
    return False


def with_defaults(args: Sequence[str], defaults: Sequence[tuple[str, str | None]]) -> list[str]:
    """``args`` plus each ``(flag, value)`` the command accepts and ``args`` lacks.

    ``value`` None adds a bare flag (``--no-use-colors``).
    """
    full = list(args)
    for flag, value in defaults:
        if not accepts(args, flag) or given(args, flag):
            continue
        full += [flag] if value is None else [flag, value]
    return full
