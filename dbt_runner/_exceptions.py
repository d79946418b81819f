"""Exceptions raised by dbt_runner, and the error kinds results carry.

The hierarchy::

    DbtRunnerError
    ├── ConfigurationError          bad settings; never retried
    ├── SessionStateError           session used before open / after close, or busy
    ├── TunnelError                 bastion unreachable or tunnel dropped (transient)
    │   ├── HostKeyError            bastion host key unknown or changed (never retried)
    │   └── SSHAuthError            bastion refused our key (never retried)
    ├── DbtInvocationError          dbt could not run; carries an ErrorKind
    ├── DbtRunFailed                one or more models failed
    └── DbtTestsFailed              one or more tests failed

The original exception is always kept as ``__cause__``.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._results import RunResult

__all__ = [
    "ConfigurationError",
    "DbtInvocationError",
    "DbtRunFailed",
    "DbtRunnerError",
    "DbtTestsFailed",
    "ErrorKind",
    "HostKeyError",
    "SSHAuthError",
    "SessionStateError",
    "TunnelError",
]


class ErrorKind(str, Enum):
    """What went wrong, in words a runbook can switch on.

    >>> ErrorKind("too_many_connections").is_transient
    True
    """

    TUNNEL = "tunnel"
    CONNECTION = "connection"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    CONFLICT = "conflict"
    AUTH = "auth"
    COMPILATION = "compilation"
    MODEL_FAILURE = "model_failure"
    TEST_FAILURE = "test_failure"
    TIMEOUT = "timeout"

    @property
    def is_transient(self) -> bool:
        """True for kinds a retry can cure (timeout only when the policy says so)."""
        return self in _TRANSIENT

    def __str__(self) -> str:
        return self.value


_TRANSIENT = frozenset(
    {ErrorKind.TUNNEL, ErrorKind.CONNECTION, ErrorKind.TOO_MANY_CONNECTIONS, ErrorKind.CONFLICT}
)


class DbtRunnerError(Exception):
    """Base class of every error dbt_runner raises."""


class ConfigurationError(DbtRunnerError, ValueError):
    """The settings are wrong; nothing was connected. Never retried."""


class SessionStateError(DbtRunnerError, RuntimeError):
    """A session was used before it was opened, after it was closed, or while busy."""


class TunnelError(DbtRunnerError):
    """The SSH bastion could not be reached, or the tunnel dropped (transient).

    ``stage`` says where opening the tunnel failed: ``connect``, ``handshake``,
    ``host_key``, ``key``, ``auth``, ``forward`` (the bastion could not reach the
    warehouse) or ``bind`` (no local port); None when not known.
    """

    kind = ErrorKind.TUNNEL

    def __init__(self, message: str, stage: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage


class HostKeyError(TunnelError):
    """The bastion's host key is unknown or does not match the pinned one."""


class SSHAuthError(TunnelError):
    """The bastion refused our user key."""


class DbtInvocationError(DbtRunnerError):
    """dbt could not run the command (compile error, connection failure, ...)."""

    def __init__(self, message: str, kind: ErrorKind, result: RunResult | None = None) -> None:
        super().__init__(f"[{kind.value}] {message}")
        self.kind = kind
        self.result = result


class _NodesFailed(DbtRunnerError):
    kind: ErrorKind

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


class DbtRunFailed(_NodesFailed):
    """One or more models failed; ``.result`` lists them."""

    kind = ErrorKind.MODEL_FAILURE


class DbtTestsFailed(_NodesFailed):
    """One or more tests failed or errored; ``.result`` lists them."""

    kind = ErrorKind.TEST_FAILURE
