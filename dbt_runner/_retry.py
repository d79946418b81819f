"""The retry policy for transient failures, declared with tenacity.

Built from :class:`~dbt_runner.RetrySettings` at run time, so tests can set
zero waits. Which failures are transient is decided by the error kind
(:attr:`ErrorKind.is_transient`), never by a failed model or test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from ._exceptions import ErrorKind
from ._results import Attempt
from ._settings import RetrySettings
from .logging import event_extra

__all__ = ["TransientFailure", "build_retrying", "is_retryable"]

log = logging.getLogger("dbt_runner.retry")


class TransientFailure(Exception):
    """Raised inside the retry loop for an attempt that failed transiently."""

    def __init__(self, attempt: Attempt) -> None:
        kind = attempt.error.kind.value if attempt.error else "unknown"
        super().__init__(f"attempt {attempt.number} failed: [{kind}]")
        self.attempt = attempt


def is_retryable(kind: ErrorKind | None, policy: RetrySettings) -> bool:
    """True when a failure of ``kind`` is worth another try under ``policy``."""
    if kind is None:
        return False
    if kind is ErrorKind.TIMEOUT:
        return policy.retry_timeouts
    return kind.is_transient


def build_retrying(
    policy: RetrySettings,
    retry_on: type[Exception] = TransientFailure,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Retrying:
    """A tenacity ``Retrying`` for ``policy`` (attempts counts every try).

    ``retry_on``: the exception type that marks a try as transiently failed;
    ``sleep``: how the back-off waits (an invocation's ends at a cancel).
    """
    jitter = min(1.0, policy.max_wait_s)
    return Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_exponential_jitter(
            initial=policy.initial_wait_s, max=policy.max_wait_s, jitter=jitter
        ),
        retry=retry_if_exception_type(retry_on),
        before_sleep=_log_retry,
        sleep=sleep,
        reraise=True,
    )


def _log_retry(state: RetryCallState) -> None:
    """Before each retry's wait: one WARNING carrying a structured ``retry`` event."""
    failure = state.outcome.exception() if state.outcome is not None else None
    attempt = failure.attempt if isinstance(failure, TransientFailure) else None
    error = attempt.error if attempt is not None else None
    wait_s = state.next_action.sleep if state.next_action is not None else 0.0
    if error is None:  # e.g. opening the tunnel: the failure carries its kind itself
        error = getattr(failure, "error", None)
    kind = error.kind.value if error is not None else None
    log.warning(
        "attempt %d failed [%s]: retrying in %.1fs",
        state.attempt_number,
        kind,
        wait_s,
        extra=event_extra(
            "retry",
            attempt=state.attempt_number,
            next_attempt=state.attempt_number + 1,
            kind=kind,
            wait_s=round(wait_s, 3),
            failed_nodes=[n.unique_id for n in attempt.nodes if n.failed] if attempt else [],
            message=str(getattr(error, "message", error))[:500] if error is not None else None,
        ),
    )
