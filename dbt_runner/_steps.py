"""What a cycle is: :class:`Step` values, defined once.

A step names one operation of a session (``run_staging``, ``run_tests``,
``build_staging`` or ``invoke``) with its arguments and the label its result
is reported under. :func:`cycle_steps` is the one definition of "a cycle"
(staging, then its tests; or one ``dbt build``), used by the ``dbt-runner``
CLI, the warm worker, :class:`~dbt_runner.WorkerClient` and the example DAG.
:func:`run_steps` runs steps in one open session, stopping after a failed one.

>>> [s.label for s in cycle_steps()], [s.label for s in cycle_steps(build=True)]
(['staging', 'tests'], ['build'])
>>> Step.from_dict(Step("run_tests", {"scope": "full"}, label="daily").to_dict())
Step(operation='run_tests', kwargs={'scope': 'full'}, args=(), label='daily')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._exceptions import ConfigurationError

if TYPE_CHECKING:
    from ._results import RunResult
    from ._session import DbtSession

__all__ = ["OPERATIONS", "Step", "cycle_steps", "run_steps"]

#: the session methods a step may run, and the label of their result by default
OPERATIONS: dict[str, str] = {
    "run_staging": "staging",
    "run_tests": "tests",
    "build_staging": "build",
    "invoke": "",  # the dbt command itself (``ls``, ``seed``...)
}
#: the keyword arguments each operation takes (the session methods' own)
_KEYWORDS: dict[str, frozenset[str]] = {
    "run_staging": frozenset({"select", "exclude", "threads", "vars", "full_refresh", "resume"}),
    "run_tests": frozenset({"select", "exclude", "threads", "vars", "scope", "resume"}),
    "build_staging": frozenset({"select", "exclude", "threads", "vars", "scope", "resume"}),
    "invoke": frozenset({"threads", "timeout_s", "writer_lock", "resume"}),
}


@dataclass(frozen=True)
class Step:
    """One operation of a session, its arguments, and its result's label.

    ``args`` are the dbt arguments of ``invoke``; ``kwargs`` the keyword arguments
    of the session method. ``label`` defaults to ``staging``, ``tests``, ``build``
    or the dbt command.

    >>> Step("invoke", args=("seed",)).label
    'seed'
    """

    operation: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    label: str = ""

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ConfigurationError(
                f"unknown step operation {self.operation!r}; one of {sorted(OPERATIONS)}"
            )
        unknown = set(self.kwargs) - _KEYWORDS[self.operation]
        if unknown:
            raise ConfigurationError(
                f"{self.operation}() takes no {', '.join(sorted(unknown))} "
                f"(it takes {', '.join(sorted(_KEYWORDS[self.operation]))})"
            )
        if self.operation == "invoke" and not self.args:
            raise ConfigurationError("an invoke step needs dbt args, e.g. ('seed',)")
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        object.__setattr__(self, "args", tuple(str(a) for a in self.args))
        if not self.label:
            object.__setattr__(self, "label", OPERATIONS[self.operation] or self.args[0])

    @property
    def writes(self) -> bool:
        """True for a step that takes the target's writer lock (see :mod:`dbt_runner._lock`)."""
        return self.operation in ("run_staging", "build_staging") or bool(
            self.kwargs.get("writer_lock")
        )

    def run(self, session: DbtSession) -> RunResult:
        """Run this step in an open session."""
        if self.operation == "invoke":
            return session.invoke(list(self.args), **self.kwargs)
        method = getattr(session, self.operation)
        result: RunResult = method(**self.kwargs)
        return result

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (what a worker request carries)."""
        return {
            "operation": self.operation,
            "kwargs": dict(self.kwargs),
            "args": list(self.args),
            "label": self.label,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        """The inverse of :meth:`to_dict`; a malformed step is a ConfigurationError."""
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"a step is a mapping, got {type(data).__name__}")
        kwargs, args = data.get("kwargs") or {}, data.get("args") or []
        if not isinstance(kwargs, Mapping) or not isinstance(args, list):
            raise ConfigurationError(f"bad step {dict(data)!r}")
        return cls(
            str(data.get("operation")), dict(kwargs), tuple(args), str(data.get("label") or "")
        )


def cycle_steps(
    *,
    tests: bool = True,
    build: bool = False,
    select: str | None = None,
    exclude: str | None = None,
    scope: str = "recent",
    vars: Mapping[str, Any] | None = None,
    threads: int | None = None,
    resume: str | None = None,
) -> list[Step]:
    """A cycle: staging then (``tests``) its tests; ``build``: one ``dbt build`` instead.

    ``select``/``exclude``/``vars``/``threads``/``resume`` apply to every step; ``scope``
    to the tests. Options left None are the session's defaults (its settings).
    """
    given = (
        ("select", select),
        ("exclude", exclude),
        ("vars", vars),
        ("threads", threads),
        ("resume", resume),
    )
    common = {k: v for k, v in given if v is not None}
    if build:
        if not tests:
            raise ConfigurationError("a build cycle runs the tests: it cannot go without them")
        return [Step("build_staging", {**common, "scope": scope})]
    steps = [Step("run_staging", common)]
    if tests:
        steps.append(Step("run_tests", {**common, "scope": scope}))
    return steps


def run_steps(
    session: DbtSession,  # the session's writer lock is held for all steps when one writes
    steps: Sequence[Step],
    *,
    each: Callable[[str], AbstractContextManager[Any]] | None = None,
    results: dict[str, RunResult] | None = None,
    waiting: Callable[[str], None] | None = None,
) -> dict[str, RunResult]:
    """Run ``steps`` in one open session, stopping after a failed one: label -> result.

    ``each(label)``, if given, is entered around each step (the CLI's progress display);
    ``results``, if given, is filled as the steps end (and returned); ``waiting(label)``,
    if given, is called before the writer lock is taken for the step ``label`` (the CLI
    says what an interrupt stopped).
    """
    labels = [step.label for step in steps]
    if len(set(labels)) != len(labels):
        raise ConfigurationError(f"step labels must be unique, got {labels}")
    results = {} if results is None else results
    writer = next((step for step in steps if step.writes), None)
    if writer is not None and waiting is not None:
        waiting(writer.label)
    # one writer lock for every step (tests read what staging wrote), when one writes
    with session._writer_lock(writer.label) if writer is not None else nullcontext() as busy:
        if busy is not None:
            results[writer.label if writer is not None else ""] = busy
            return results
        for step in steps:
            with each(step.label) if each is not None else nullcontext():
                result = step.run(session)
            results[step.label] = result
            if not result.success or result.error is not None:  # failed, or skipped
                break
    return results
