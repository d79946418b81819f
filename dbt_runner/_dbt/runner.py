"""One dbt invocation through ``dbt.cli.main.dbtRunner``, as a plain :class:`DbtReturn`.

dbt's ``dbtRunnerResult`` has three outcomes that must stay apart: ``success``;
``exception`` (dbt could not run: a compile error, no connection, an
interrupt); ``result`` with ``success=False`` (dbt ran, some nodes failed).
``dbtRunner.invoke`` catches every ``BaseException``, even ``KeyboardInterrupt``,
and returns it in ``exception``: the caller decides what to re-raise.
"""

from __future__ import annotations

import gc
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .deprecations import CommandDeprecations
from .events import DbtEvent, translating

__all__ = [
    "DbtReturn",
    "import_dbt",
    "imported",
    "invocation_id",
    "invoke",
    "make_runner",
    "own_process",
    "warm_up",
]

log = logging.getLogger("dbt_runner.session")

#: modules a warm worker imports once (what a cycle needs), and each adapter's
_WARM_MODULES = (
    "dbt.cli.main",
    "dbt.task.run",
    "dbt.task.test",
    "dbt.task.build",
    "dbt.parser.manifest",
)
_ADAPTER_MODULES = {
    "postgres": "dbt.adapters.postgres",
    "redshift": "dbt.adapters.redshift",
    "duckdb": "dbt.adapters.duckdb",
}


@dataclass(frozen=True)
class DbtReturn:
    """What one ``dbtRunner.invoke`` gave back (dbt's own objects inside ``value``)."""

    success: bool
    exception: BaseException | None
    #: ``dbtRunnerResult.result``: a manifest (parse), a RunExecutionResult, ls lines...
    value: Any


def make_runner(manifest: Any, callbacks: list[Callable[[Any], None]]) -> Any:
    """A ``dbtRunner`` (the seam unit tests replace with a fake)."""
    from dbt.cli.main import dbtRunner

    return dbtRunner(manifest=manifest, callbacks=callbacks)


def invoke(
    args: Sequence[str],
    manifest: Any = None,
    on_event: Callable[[DbtEvent], None] | None = None,
    *,
    deprecations: CommandDeprecations | None = None,
    parse: bool = False,
) -> DbtReturn:
    """Run ``dbt <args>`` in this thread; ``on_event`` gets dbt's events as plain values.

    ``deprecations``: the command this invocation belongs to (its deprecation counts
    and summary, see :mod:`.deprecations`); ``parse``: it is the command's own parse,
    before the command itself. Without it, a fresh command of its own.
    """
    log.debug("dbt %s", " ".join(args))
    counting: list[Callable[[Any], None]] = []  # the invocation's, once it began

    def count(msg: Any) -> None:
        for callback in counting:
            callback(msg)

    callbacks: list[Callable[[Any], None]] = [count]
    if on_event is not None:
        callbacks.append(translating(on_event))
    runner = make_runner(manifest, callbacks)
    with (deprecations or CommandDeprecations()).invocation(parse=parse) as counted:
        counting.append(counted.on_event)
        res = runner.invoke(list(args))
        success = bool(getattr(res, "success", False))
        counted.ok = success
    return DbtReturn(
        success=success,
        exception=getattr(res, "exception", None),
        value=getattr(res, "result", None),
    )


def invocation_id() -> str | None:
    """The id of dbt's latest invocation in this process (dbt resets it per command)."""
    try:
        from dbt_common.invocation import get_invocation_id

        return str(get_invocation_id())
    except Exception:  # pragma: no cover - dbt_common moved it
        return None


def imported() -> bool:
    """True once this process has imported dbt (its first command pays for the import)."""
    return "dbt.cli.main" in sys.modules


def warm_up(warehouse_type: str | None) -> None:
    """Import what a cycle on ``warehouse_type`` needs (the warm worker's parent); None:
    the adapter is not known yet (a user's profile), dbt's own modules only."""
    adapter = () if warehouse_type is None else (_ADAPTER_MODULES[warehouse_type],)
    for name in (*_WARM_MODULES, *adapter):
        importlib.import_module(name)


#: a process dbt_runner owns end to end (:func:`own_process`)
_owned = False


def own_process() -> None:
    """Mark this process as dbt_runner's own: the ``dbt-runner`` console script, never a
    library call (a host's garbage collector is the host's).

    Freezes the heap so far (``gc.freeze``), and again once dbt is imported
    (:func:`import_dbt`): dbt's ~150 000 long-lived import objects (and the adapter's,
    when the session knows it before dbt reads the profile) then leave every later
    collection. Without that, each full collection while dbt builds or loads a manifest
    walks them all again (two before a 300-model project's first node). Frozen objects
    are never collected: fine for the import's modules, classes and functions, which
    live as long as the process.
    """
    global _owned
    _owned = True
    gc.freeze()


def import_dbt(warehouse_type: str | None, freeze: bool = False) -> None:
    """Import dbt (the first command of a process). In a process we own, or when the
    host asked for it (``freeze``: ``DBT_RUNNER_GC_FREEZE``), also what a command needs
    (:func:`warm_up`), then freeze that heap out of the collector's way; else dbt only
    (the host's collector is untouched)."""
    importlib.import_module("dbt.cli.main")
    if not (_owned or freeze):
        return
    warm_up(None)
    adapter = _ADAPTER_MODULES.get(warehouse_type or "")
    if adapter is not None:
        try:
            importlib.import_module(adapter)
        except ImportError:  # not installed: dbt's own error comes with the command
            log.debug("adapter %s not importable before the freeze", adapter)
    gc.freeze()
