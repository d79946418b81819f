"""The one mapping of SSH failures (socket, paramiko, sshtunnel) to dbt_runner's errors.

:func:`translate_error` decides, for an exception and the stage of opening
the tunnel it happened in, which :class:`~dbt_runner.TunnelError` (transient)
or subclass (:class:`~dbt_runner.HostKeyError`,
:class:`~dbt_runner.SSHAuthError`: never retried) it is; the tunnel raises
through :func:`map_tunnel_errors`, with the original as ``__cause__``.
:func:`kind_of` gives the same verdict's kind for an SSH exception met
anywhere else (in dbt's exception chain), so the two can never disagree.

A forwarded connection the bastion could not open (at open time, or for one
of dbt's connections later) is recorded as a :class:`ChannelOpenFailure`
value on the tunnel (:class:`~.forwarder.ChannelOpenFailure`), never as a message to match.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import Iterator
from typing import Literal

import paramiko
import sshtunnel

from .._exceptions import ErrorKind, HostKeyError, SSHAuthError, TunnelError
from .._settings import ENV_PREFIX
from .forwarder import LOCAL_HOST
from .hostkeys import HostKeyRejected

__all__ = [
    "Stage",
    "kind_of",
    "map_tunnel_errors",
    "translate_error",
]

_SSH = f"{ENV_PREFIX}SSH__"

Stage = Literal["connect", "key", "handshake", "host_key", "auth", "forward", "bind"]


@dataclasses.dataclass
class _OpenAttempt:
    """What one open() is doing, for error messages (no secrets in here)."""

    host: str
    port: int
    user: str
    remote: str
    timeout_s: float
    key_path: str | None
    local_ports: list[int] = dataclasses.field(default_factory=list)
    captured: list[BaseException] = dataclasses.field(default_factory=list)
    expected_host_keys: str = ""  # "ssh-ed25519 SHA256:... (from ...)", once known


def translate_error(
    exc: BaseException, attempt: _OpenAttempt, stage: Stage | None
) -> TunnelError | None:
    """The TunnelError (or subclass) for ``exc`` raised during ``stage`` (None: after the
    tunnel opened, e.g. in dbt's exception chain); None = not ours."""
    bastion = f"the bastion {attempt.host}:{attempt.port}"
    check_addr = f"check {_SSH}HOST/PORT"
    key = f"{_SSH}PRIVATE_KEY ({attempt.key_path})" if attempt.key_path else "the offered keys"

    if isinstance(exc, HostKeyRejected | paramiko.BadHostKeyException):
        return HostKeyError(str(exc))
    if stage == "host_key" and isinstance(exc, OSError):
        return HostKeyError(f"cannot read {_SSH}KNOWN_HOSTS: {exc}")
    if isinstance(exc, paramiko.SSHException) and "no acceptable host key" in str(exc):
        # we asked only for the key types we can verify, and the bastion has none of them
        return HostKeyError(
            f"host key verification failed: {bastion} has no host key of the type we "
            f"expect ({attempt.expected_host_keys or 'see settings'}). Its key was probably "
            "replaced: check the new one out of band and update the known_hosts entry / "
            f"{_SSH}HOST_KEY"
        )
    # cryptography (under PKey.from_path) says "password-protected" with a TypeError
    if isinstance(exc, paramiko.PasswordRequiredException) or (
        stage == "key" and isinstance(exc, TypeError) and "password" in str(exc).lower()
    ):
        return SSHAuthError(f"{key} is encrypted: set {_SSH}PRIVATE_KEY_PASSPHRASE")
    if stage == "key" and isinstance(exc, paramiko.AuthenticationException):
        return SSHAuthError(f"no SSH key to offer ({exc}): set {_SSH}PRIVATE_KEY")
    if stage == "key" and isinstance(exc, paramiko.SSHException | ValueError | OSError):
        return SSHAuthError(
            f"cannot load {key}: wrong {_SSH}PRIVATE_KEY_PASSPHRASE, or not an OpenSSH/PEM "
            f"private key ({_describe(exc)})"
        )
    if isinstance(exc, paramiko.BadAuthenticationType):
        allowed = ", ".join(exc.allowed_types) or "none"
        return SSHAuthError(
            f"{bastion} does not accept public-key logins for user {attempt.user!r} "
            f"(it allows: {allowed}); check {_SSH}USER"
        )
    if isinstance(exc, paramiko.AuthenticationException):
        text = str(exc).lower()
        if "timeout" in text or "transport shut down" in text or "eof" in text:
            return TunnelError(
                f"{bastion} stopped answering during authentication "
                f"({_describe(exc)}): a network problem, retry"
            )
        return SSHAuthError(
            f"{bastion} refused the key {key} for user {attempt.user!r}: add its public key to "
            f"that user's authorized_keys on the bastion, or fix {_SSH}USER / {_SSH}PRIVATE_KEY"
        )
    if isinstance(exc, paramiko.ChannelException) or (
        stage == "forward" and isinstance(exc, paramiko.SSHException | OSError | EOFError)
    ):
        return TunnelError(
            f"{bastion} could not open a connection to the warehouse {attempt.remote}: "
            f"{_describe(exc)}. Check {ENV_PREFIX}WAREHOUSE__HOST/PORT, and that the bastion "
            "can reach it and allows TCP forwarding (AllowTcpForwarding / PermitOpen)"
        )
    if isinstance(exc, sshtunnel.BaseSSHTunnelForwarderError) or (
        stage == "bind" and isinstance(exc, OSError)
    ):
        ports = ", ".join(str(p) for p in attempt.local_ports) or "?"
        cause = attempt.captured[-1] if attempt.captured else exc
        return TunnelError(
            f"could not listen on {LOCAL_HOST} for the tunnel (tried ports {ports}): "
            f"{_describe(cause)}; unset {_SSH}LOCAL_PORT to let dbt_runner choose a free port"
        )
    if isinstance(exc, socket.gaierror):
        return TunnelError(f"cannot resolve the bastion host {attempt.host!r}: {exc}; {check_addr}")
    if isinstance(exc, ConnectionRefusedError):
        return TunnelError(
            f"{bastion} refused the connection (nothing listens there?); {check_addr}"
        )
    if isinstance(exc, TimeoutError):
        return TunnelError(
            f"no answer from {bastion} within {attempt.timeout_s:g}s ({_describe(exc)}); "
            f"{check_addr}, firewalls, or raise {_SSH}CONNECT_TIMEOUT_S"
        )
    if isinstance(exc, OSError):
        return TunnelError(f"cannot connect to {bastion}: {_describe(exc)}; {check_addr}")
    if isinstance(exc, EOFError | paramiko.SSHException):
        return TunnelError(
            f"the SSH handshake with {bastion} failed: {_describe(exc)}; is it an SSH server? "
            f"{check_addr}"
        )
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ChannelException):  # str() is its args tuple
        return f"{exc.text} (SSH channel open failure {exc.code})"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def map_tunnel_errors(attempt: _OpenAttempt, stage: Stage) -> Iterator[None]:
    """The one seam: re-raise socket/paramiko/sshtunnel errors as our own, cause attached."""
    try:
        yield
    except TunnelError:
        raise
    except Exception as exc:
        mapped = translate_error(exc, attempt, stage)
        if mapped is None:
            raise
        mapped.stage = stage
        cause: BaseException = exc
        if isinstance(exc, sshtunnel.BaseSSHTunnelForwarderError) and attempt.captured:
            cause = attempt.captured[-1]  # sshtunnel logged the real one and raised a generic one
        raise mapped from cause


_UNKNOWN = _OpenAttempt(host="?", port=0, user="?", remote="?", timeout_s=0.0, key_path=None)


def kind_of(exc: BaseException) -> ErrorKind | None:
    """The kind :func:`translate_error` gives ``exc`` outside of opening (None: not SSH's)."""
    mapped = translate_error(exc, _UNKNOWN, None)
    return mapped.kind if mapped is not None else None
