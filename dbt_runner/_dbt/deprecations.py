"""dbt's deprecation warnings per command, as plain ``dbt`` gives them.

dbt counts the deprecations it meets in a module-level dict
(``dbt.deprecations.active_deprecations``): it warns at the first occurrence of
each, counts the rest, and prints "Summary of encountered deprecations" with
the counts at the end of a command (``show_deprecations_summary``, called by
``dbt.cli.requires.postflight``). Nothing resets that dict but a new process:
in a long-lived session the counts added up across commands (8, 16, ... 56
where plain dbt said 8 each time) and a deprecation met in one command was
never warned about again. dbt-core 1.10 and 1.11 keep that state the same way
(1.11 only adds deprecations).

One library command can be two dbt invocations: the session's own ``dbt
parse`` (when its cached manifest is stale, see ``DbtSession._manifest_for``),
then the command with the parsed manifest. Plain dbt does both in one
invocation, so :class:`CommandDeprecations` makes the pair look like one:

* each dbt invocation of a command starts from the command's own counts (the
  first from none): nothing leaks from earlier commands;
* the parse's summary is held back and its counts carried into the command,
  so a deprecation already warned about is not warned about again, and the
  summary appears once, at the command's end, with parse and command counts;
* deprecations dbt meets before it parses (its flags and ``dbt_project.yml``:
  counted up to :data:`~dbt_runner._dbt.events.PARSE_EVENT`) are met again when
  the command's own invocation starts; they are counted once, as plain dbt does;
* a parse that fails shows its summary itself (no command follows).

A dbt invocation that is not inside :func:`CommandDeprecations.invocation` (a
user's own ``dbtRunner`` in the same process) sees dbt's behaviour unchanged.
:data:`HOOK_POINTS` names the dbt internals used; a test checks each exists.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .events import PARSE_EVENT

__all__ = ["HOOK_POINTS", "CommandDeprecations"]

#: (module, attribute) of every dbt internal used here
HOOK_POINTS: tuple[tuple[str, str], ...] = (
    ("dbt.deprecations", "active_deprecations"),
    ("dbt.deprecations", "show_deprecations_summary"),
    ("dbt.cli.requires", "show_deprecations_summary"),
)

_INSTALL_LOCK = threading.Lock()
_installed = False
#: the invocation running now under :meth:`CommandDeprecations.invocation`
_current: _Invocation | None = None


def _counts() -> Any:
    """dbt's process-wide ``defaultdict(int)``: deprecation name -> occurrences."""
    from dbt import deprecations

    return deprecations.active_deprecations


def _show_summary() -> None:
    """dbt's own summary (the original function, whatever the hook did to the name)."""
    from dbt import deprecations

    deprecations.show_deprecations_summary()


def _install() -> None:
    """Route postflight's summary through :func:`_summary_hook` (idempotent)."""
    global _installed
    with _INSTALL_LOCK:
        if _installed:
            return
        from dbt.cli import requires

        setattr(requires, "show_deprecations_summary", _summary_hook)  # noqa: B010
        _installed = True


def _summary_hook() -> None:
    """What ``dbt.cli.requires.postflight`` calls at the end of every dbt invocation."""
    invocation = _current
    if invocation is None:
        _show_summary()
        return
    invocation.at_summary()


class _Invocation:
    """One dbt invocation of a command: the session's parse, or the command itself."""

    def __init__(self, command: CommandDeprecations, parse: bool, live: bool) -> None:
        self.command = command
        self.parse = parse
        #: dbt's CLI is loaded (else a fake runner stands in for dbt: nothing to count)
        self.live = live
        #: the parse succeeded (set by the caller): else its summary is shown at its end
        self.ok = True

    def on_event(self, msg: Any) -> None:
        """A dbt callback: when the parse begins, what dbt counted so far came from its
        flags and project (met again when the command's own invocation starts)."""
        if not (self.live and self.parse):
            return
        if getattr(getattr(msg, "info", None), "name", None) == PARSE_EVENT:
            self.command._before_parse = dict(_counts())

    def at_summary(self) -> None:
        """dbt's postflight wants to show the summary."""
        counts = _counts()
        if self.parse:  # held back: shown with the command's own summary
            self.command._carried = dict(counts)
            return
        for name, n in self.command._before_parse.items():
            left = counts.get(name, 0) - n
            if left > 0:
                counts[name] = left
            else:
                counts.pop(name, None)
        _show_summary()


class CommandDeprecations:
    """dbt's deprecation counts for one library command (a new one per attempt).

    >>> deprecations = CommandDeprecations()
    >>> with deprecations.invocation(parse=True) as parse:        # doctest: +SKIP
    ...     parse.ok = dbt_parse().success
    >>> with deprecations.invocation():                           # doctest: +SKIP
    ...     dbt_command()
    """

    def __init__(self) -> None:
        #: the parse's counts, carried into the command's invocation
        self._carried: dict[str, int] = {}
        #: what the parse counted before it parsed (flags, dbt_project.yml)
        self._before_parse: dict[str, int] = {}

    @contextlib.contextmanager
    def invocation(self, *, parse: bool = False) -> Iterator[_Invocation]:
        """Around one dbt invocation of the command, in the thread that runs dbt (after
        ``dbtRunner`` was made: dbt's CLI is loaded then).

        ``parse``: the session's own parse before the command; set ``.ok = False`` on
        the yielded value when it failed, so that its summary is shown after all.
        """
        global _current
        current = _Invocation(self, parse, live="dbt.cli.requires" in sys.modules)
        if current.live:
            _install()
            counts = _counts()
            counts.clear()
            if parse:
                self._carried, self._before_parse = {}, {}
            else:
                counts.update(self._carried)
        _current = current
        try:
            yield current
        finally:
            _current = None
            if current.live and parse and not current.ok:  # no command follows: show it now
                self._carried, self._before_parse = {}, {}
                _show_summary()
