"""dbt_runner: run dbt in-process for orchestrators.

>>> import dbt_runner
>>> from dbt_runner import DbtSession, Settings
>>> with DbtSession(Settings()) as session:            # doctest: +SKIP
...     staging = session.run_staging(threads=3)       # one tunnel, one parse
...     tests = session.run_tests()
>>> staging.raise_for_status()                         # doctest: +SKIP
"""

from __future__ import annotations

from ._api import run_staging, run_tests
from ._events import NodeEvent
from ._exceptions import (
    ConfigurationError,
    DbtInvocationError,
    DbtRunFailed,
    DbtRunnerError,
    DbtTestsFailed,
    ErrorKind,
    HostKeyError,
    SessionStateError,
    SSHAuthError,
    TunnelError,
)
from ._results import Attempt, ErrorInfo, NodeResult, RunResult
from ._session import DbtSession, SessionState
from ._settings import RetrySettings, Settings, SSHSettings, WarehouseSettings
from ._worker import Worker, WorkerClient, run_steps

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "ConfigurationError",
    "DbtInvocationError",
    "DbtRunFailed",
    "DbtRunnerError",
    "DbtSession",
    "DbtTestsFailed",
    "ErrorInfo",
    "ErrorKind",
    "HostKeyError",
    "NodeEvent",
    "NodeResult",
    "RetrySettings",
    "RunResult",
    "SSHAuthError",
    "SSHSettings",
    "SessionState",
    "SessionStateError",
    "Settings",
    "TunnelError",
    "WarehouseSettings",
    "Worker",
    "WorkerClient",
    "__version__",
    "run_staging",
    "run_steps",
    "run_tests",
]
