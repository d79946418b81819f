"""Exceptions raised by dbt_runner, and the error kinds results carry.

The hierarchy::

    DbtRunnerError                  .kind                 exit code
    ├── ConfigurationError          configuration         2   bad settings; never retried
    ├── SessionStateError           configuration         2   used before open / after close, busy
    ├── TunnelError                 tunnel                3   bastion unreachable, tunnel dropped
    │   ├── HostKeyError            auth                  2   host key unknown/changed; no retry
    │   └── SSHAuthError            auth                  2   bastion refused our key; no retry
    ├── CredentialsError            auth / connection     2/3 Redshift IAM: AWS refused the
    │                                                         temporary login (never retried)
    │                                                         or was unreachable (transient)
    ├── DbtInvocationError          (classified)          ... dbt could not run
    ├── DbtRunFailed                model_failure         1   one or more models failed
    │                               stale_source          1   (or sources are stale: freshness)
    └── DbtTestsFailed              test_failure          1   one or more tests failed

Every exception carries its :class:`ErrorKind`; the kind alone decides whether
a failure is retried (:attr:`ErrorKind.is_transient`) and the exit code of the
CLI, the examples and the Airflow DAG (:attr:`ErrorKind.exit_code`): this
module is the one map. The original exception is always kept as ``__cause__``.

Exit codes: 0 success · 1 models or tests failed · 2 bad configuration or
credentials · 3 infrastructure still failing after retries, or ``locked`` ·
130 interrupted (SIGINT, a cancel) · 143 terminated by SIGTERM.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._results import RunResult

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INFRA",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "ConfigurationError",
    "CredentialsError",
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


#: exit codes of the ``dbt-runner`` CLI (and the examples): success, models/tests
#: failed, bad configuration or credentials, infrastructure still failing after retries
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INFRA = 0, 1, 2, 3
#: interrupted by SIGINT (or cancelled), terminated by SIGTERM: 128 + the signal number
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143


class ErrorKind(str, Enum):
    """What went wrong, in words a runbook can switch on.

    Each kind knows whether a retry can cure it and which exit code it means:

    >>> ErrorKind("too_many_connections").is_transient, ErrorKind.TOO_MANY_CONNECTIONS.exit_code
    (True, 3)
    >>> ErrorKind.AUTH.is_transient, ErrorKind.AUTH.exit_code
    (False, 2)
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
    #: a setting is wrong (SSL mode, missing password, unknown database): never retried
    CONFIGURATION = "configuration"
    #: a cancel, a signal or an orchestrator's termination stopped it: never retried
    CANCELLED = "cancelled"
    #: another run holds the target's writer lock: not retried within the run
    LOCKED = "locked"
    #: ``dbt source freshness`` found a source older than its ``error_after``: the data
    #: did not arrive (dbt's ERROR STALE); never retried, exit 1 as in plain dbt
    STALE_SOURCE = "stale_source"

    @property
    def is_transient(self) -> bool:
        """True for kinds a retry can cure (timeout only when the policy says so)."""
        return self in _TRANSIENT

    @property
    def is_infrastructure(self) -> bool:
        """True for tunnel/connection/limit/conflict/timeout/locked: the platform, not the
        models (an orchestrator's own retry may cure it)."""
        return self.exit_code == EXIT_INFRA

    @property
    def exit_code(self) -> int:
        """The CLI exit code of a failure of this kind: 1, 2, 3 or 130 (module docstring)."""
        return _EXIT_CODES[self]

    def __str__(self) -> str:
        return self.value


_TRANSIENT = frozenset(
    {ErrorKind.TUNNEL, ErrorKind.CONNECTION, ErrorKind.TOO_MANY_CONNECTIONS, ErrorKind.CONFLICT}
)
_EXIT_CODES: dict[ErrorKind, int] = {
    ErrorKind.MODEL_FAILURE: EXIT_FAILED,
    ErrorKind.TEST_FAILURE: EXIT_FAILED,
    ErrorKind.STALE_SOURCE: EXIT_FAILED,
    ErrorKind.COMPILATION: EXIT_FAILED,
    ErrorKind.AUTH: EXIT_CONFIG,
    ErrorKind.CONFIGURATION: EXIT_CONFIG,
    ErrorKind.TUNNEL: EXIT_INFRA,
    ErrorKind.CONNECTION: EXIT_INFRA,
    ErrorKind.TOO_MANY_CONNECTIONS: EXIT_INFRA,
    ErrorKind.CONFLICT: EXIT_INFRA,
    ErrorKind.TIMEOUT: EXIT_INFRA,
    ErrorKind.LOCKED: EXIT_INFRA,
    ErrorKind.CANCELLED: EXIT_INTERRUPTED,
}


class DbtRunnerError(Exception):
    """Base class of every error dbt_runner raises; ``kind`` says what went wrong."""

    kind: ErrorKind = ErrorKind.MODEL_FAILURE

    @property
    def exit_code(self) -> int:
        """The CLI exit code for this error (from its :attr:`kind`)."""
        return self.kind.exit_code


class ConfigurationError(DbtRunnerError, ValueError):
    """The settings are wrong; nothing was connected. Never retried."""

    kind = ErrorKind.CONFIGURATION


class SessionStateError(DbtRunnerError, RuntimeError):
    """A session was used before it was opened, after it was closed, or while busy."""

    kind = ErrorKind.CONFIGURATION


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
    """The bastion's host key is unknown or does not match the pinned one (never retried)."""

    kind = ErrorKind.AUTH


class SSHAuthError(TunnelError):
    """The bastion refused our user key (never retried)."""

    kind = ErrorKind.AUTH


class CredentialsError(DbtRunnerError):
    """Redshift IAM (``WAREHOUSE__METHOD=iam``): the temporary database login could not be
    had from AWS. ``kind`` is ``auth`` when AWS refused it (denied, expired or unknown AWS
    credentials, unknown cluster or workgroup: never retried) and ``connection`` when the
    AWS endpoint could not be reached (transient)."""

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.AUTH) -> None:
        super().__init__(message)
        self.kind = kind


class DbtInvocationError(DbtRunnerError):
    """dbt could not run the command (compile error, connection failure, ...)."""

    def __init__(self, message: str, kind: ErrorKind, result: RunResult | None = None) -> None:
        super().__init__(f"[{kind.value}] {message}")
        self.kind = kind
        self.result = result


class _NodesFailed(DbtRunnerError):
    def __init__(self, message: str, result: RunResult, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        self.result = result
        if kind is not None:
            self.kind = kind


class DbtRunFailed(_NodesFailed):
    """One or more models failed (or, with kind ``stale_source``, sources are stale);
    ``.result`` lists them."""

    kind = ErrorKind.MODEL_FAILURE


class DbtTestsFailed(_NodesFailed):
    """One or more tests failed or errored; ``.result`` lists them."""

    kind = ErrorKind.TEST_FAILURE
