"""dbt_runner: run dbt in-process for orchestrators.

>>> import dbt_runner
>>> from dbt_runner import DbtSession, Settings
>>> with DbtSession(Settings()) as session:            # doctest: +SKIP
...     staging = session.run_staging(threads=3)       # one tunnel, one parse
...     tests = session.run_tests()
>>> staging.raise_for_status()                         # doctest: +SKIP
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from ._api import run_staging, run_tests
from ._events import NodeEvent
from ._exceptions import (
    ConfigurationError,
    CredentialsError,
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
from ._results import Attempt, ErrorInfo, NodeResult, Phase, RunResult
from ._session import DbtSession, SessionState
from ._settings import (
    ConnectionSettings,
    LockSettings,
    OpenLineageSettings,
    RetrySettings,
    Settings,
    SSHSettings,
    WarehouseSettings,
)
from ._steps import Step, cycle_steps
from ._worker import Worker, WorkerClient

if _typing.TYPE_CHECKING:
    from ._doctor import DoctorReport, run_doctor
    from ._ssh import Tunnel

__version__ = "0.1.0"

#: public names whose modules load on first use (doctor and the tunnel are not needed
#: by every cycle; importing them up front costs every fresh process ~80 ms each)
_LAZY = {"DoctorReport": "._doctor", "run_doctor": "._doctor", "Tunnel": "._ssh"}


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Attempt",
    "ConfigurationError",
    "ConnectionSettings",
    "CredentialsError",
    "DbtInvocationError",
    "DbtRunFailed",
    "DbtRunnerError",
    "DbtSession",
    "DbtTestsFailed",
    "DoctorReport",
    "ErrorInfo",
    "ErrorKind",
    "HostKeyError",
    "LockSettings",
    "NodeEvent",
    "NodeResult",
    "OpenLineageSettings",
    "Phase",
    "RetrySettings",
    "RunResult",
    "SSHAuthError",
    "SSHSettings",
    "SessionState",
    "SessionStateError",
    "Settings",
    "Step",
    "Tunnel",
    "TunnelError",
    "WarehouseSettings",
    "Worker",
    "WorkerClient",
    "__version__",
    "cycle_steps",
    "run_doctor",
    "run_staging",
    "run_tests",
]
