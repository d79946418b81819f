"""Unit tests of dbt_runner._ssh.tunnel (ports, the error seam, the object): no sshd, no network.

Host-key verification is tested in tests/test_hostkeys.py; the real tunnel
against a real OpenSSH server in tests/integration/test_tunnel.py.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import paramiko
import pytest
import sshtunnel

from dbt_runner import ConfigurationError, HostKeyError, SSHAuthError, TunnelError
from dbt_runner._ssh.errors import _OpenAttempt, map_tunnel_errors, translate_error
from dbt_runner._ssh.hostkeys import HostKeyRejected
from dbt_runner._ssh.tunnel import (
    PORT_CANDIDATES,
    PORT_RANGE,
    Tunnel,
    derive_local_port,
    local_port_candidates,
)
from tests._ssh_keys import ed25519_key, private_key, ssh_settings

__all__ = ["private_key"]  # a fixture, used by name

# --------------------------------------------------------------------- helpers


def _attempt() -> _OpenAttempt:
    return _OpenAttempt(
        host="bastion.example.com",
        port=2222,
        user="tunnel",
        remote="warehouse:5439",
        timeout_s=10.0,
        key_path="/keys/id_ed25519",
        local_ports=[24000, 24001, 0],
    )


# ----------------------------------------------------------------------- ports


def test_derived_port_is_stable_and_in_range() -> None:
    args = ("bastion.example.com", 22, "tunnel", "warehouse.internal", 5439)
    port = derive_local_port(*args)
    assert port == derive_local_port(*args)
    assert PORT_RANGE[0] <= port < PORT_RANGE[1]
    # below Linux's ephemeral range, so no outgoing connection holds it
    assert port < 32768


def test_derived_port_depends_on_every_setting() -> None:
    base = ("bastion.example.com", 22, "tunnel", "warehouse.internal", 5439)
    variants = [
        ("other-bastion", 22, "tunnel", "warehouse.internal", 5439),
        ("bastion.example.com", 2222, "tunnel", "warehouse.internal", 5439),
        ("bastion.example.com", 22, "other", "warehouse.internal", 5439),
        ("bastion.example.com", 22, "tunnel", "other-warehouse", 5439),
        ("bastion.example.com", 22, "tunnel", "warehouse.internal", 5432),
    ]
    ports = {derive_local_port(*v) for v in variants}
    assert derive_local_port(*base) not in ports
    assert len(ports) == len(variants)


def test_derived_ports_spread_over_the_range() -> None:
    ports = {derive_local_port("b", 22, "u", f"db{i}", 5439) for i in range(500)}
    assert len(ports) > 480  # few collisions among 10000 slots
    assert all(PORT_RANGE[0] <= p < PORT_RANGE[1] for p in ports)


def test_port_candidates_previous_first_then_derived_then_any() -> None:
    assert local_port_candidates(25000) == [25000, 25001, 25002, 25003, 0]
    assert local_port_candidates(25000, previous=21000)[:2] == [21000, 25000]
    assert local_port_candidates(25000, previous=25000) == [25000, 25001, 25002, 25003, 0]
    wrapped = local_port_candidates(PORT_RANGE[1] - 1)
    assert wrapped[:PORT_CANDIDATES] == [
        PORT_RANGE[1] - 1,
        *range(PORT_RANGE[0], PORT_RANGE[0] + 3),
    ]


# ------------------------------------------------------------------ the seam


@pytest.mark.parametrize(
    ("exc", "stage", "expected", "words"),
    [
        (socket.gaierror(-2, "Name or service not known"), "connect", TunnelError, "resolve"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connect", TunnelError, "PORT"),
        (TimeoutError("timed out"), "connect", TunnelError, "CONNECT_TIMEOUT_S"),
        (TimeoutError("timed out"), "connect", TunnelError, "no answer"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "connect", TunnelError, "HOST/PORT"),
        (EOFError(), "handshake", TunnelError, "handshake"),
        (
            paramiko.SSHException("Error reading SSH protocol banner"),
            "handshake",
            TunnelError,
            "handshake",
        ),
        (HostKeyRejected("the bastion is unknown"), "host_key", HostKeyError, "unknown"),
        (
            paramiko.BadHostKeyException("bastion", ed25519_key(), ed25519_key()),
            "handshake",
            HostKeyError,
            "bastion",
        ),
        (OSError(errno.ENOENT, "No such file"), "host_key", HostKeyError, "KNOWN_HOSTS"),
        (
            paramiko.SSHException("Incompatible ssh peer (no acceptable host key)"),
            "handshake",
            HostKeyError,
            "no host key of the type",
        ),
        (
            paramiko.PasswordRequiredException("Private key file is encrypted"),
            "key",
            SSHAuthError,
            "PASSPHRASE",
        ),
        (paramiko.SSHException("Invalid key"), "key", SSHAuthError, "PRIVATE_KEY"),
        (ValueError("bad padding"), "key", SSHAuthError, "PASSPHRASE"),
        (
            TypeError("Key is password-protected, but password was not provided."),
            "key",
            SSHAuthError,
            "is encrypted",
        ),
        (paramiko.AuthenticationException("no key"), "key", SSHAuthError, "PRIVATE_KEY"),
        (
            paramiko.AuthenticationException("Authentication failed."),
            "auth",
            SSHAuthError,
            "refused the key",
        ),
        (
            paramiko.BadAuthenticationType("Bad authentication type", ["password"]),
            "auth",
            SSHAuthError,
            "password",
        ),
        (paramiko.AuthenticationException("Authentication timeout."), "auth", TunnelError, "retry"),
        (
            paramiko.AuthenticationException(
                "Authentication failed: transport shut down or saw EOF"
            ),
            "auth",
            TunnelError,
            "retry",
        ),
        (paramiko.ChannelException(2, "Connect failed"), "forward", TunnelError, "WAREHOUSE__HOST"),
        (paramiko.SSHException("Timeout opening channel."), "forward", TunnelError, "warehouse"),
        (
            sshtunnel.HandlerSSHTunnelForwarderError("An error occurred while opening tunnels."),
            "bind",
            TunnelError,
            "LOCAL_PORT",
        ),
        (
            sshtunnel.BaseSSHTunnelForwarderError("Could not establish session to SSH gateway"),
            "bind",
            TunnelError,
            "listen",
        ),
        (OSError(errno.EADDRINUSE, "Address already in use"), "bind", TunnelError, "24000"),
    ],
)
def test_every_known_error_maps_with_its_cause(
    exc: BaseException, stage: str, expected: type[TunnelError], words: str
) -> None:
    with pytest.raises(TunnelError) as info, map_tunnel_errors(_attempt(), stage):  # type: ignore[arg-type]
        raise exc
    assert type(info.value) is expected
    assert info.value.__cause__ is exc
    assert words in str(info.value)
    assert info.value.stage == stage  # doctor reads the stage, not the message


def test_auth_errors_name_the_user_and_key() -> None:
    error = translate_error(
        paramiko.AuthenticationException("Authentication failed."), _attempt(), "auth"
    )
    assert isinstance(error, SSHAuthError)
    assert "'tunnel'" in str(error)
    assert "/keys/id_ed25519" in str(error)


def test_sshtunnel_generic_error_keeps_the_real_cause() -> None:
    """sshtunnel logs why it failed and raises a generic error: the seam uses the captured one."""
    attempt = _attempt()
    real = OSError(errno.EADDRINUSE, "Address already in use")
    attempt.captured.append(real)
    generic = sshtunnel.HandlerSSHTunnelForwarderError("An error occurred while opening tunnels.")
    with pytest.raises(TunnelError) as info, map_tunnel_errors(attempt, "bind"):
        raise generic
    assert info.value.__cause__ is real
    assert "Address already in use" in str(info.value)


def test_unknown_errors_are_not_swallowed() -> None:
    assert translate_error(KeyError("x"), _attempt(), "auth") is None
    with pytest.raises(KeyError), map_tunnel_errors(_attempt(), "auth"):
        raise KeyError("x")


def test_our_own_errors_pass_through_unchanged() -> None:
    original = HostKeyError("already ours")
    with pytest.raises(HostKeyError) as info, map_tunnel_errors(_attempt(), "auth"):
        raise original
    assert info.value is original


# ---------------------------------------------------------------- the object


def test_tunnel_repr_has_no_secrets(private_key: Path) -> None:
    ssh = ssh_settings(private_key, private_key_passphrase="s3cret-passphrase")
    tunnel = Tunnel(ssh, "warehouse.internal", 5439)
    text = repr(tunnel)
    assert "s3cret" not in text
    assert "tunnel@bastion.example.com:2222" in text
    assert "warehouse.internal:5439" in text
    assert not tunnel.is_healthy()
    tunnel.close()  # closing an unopened tunnel is fine
    tunnel.close()


def test_tunnel_rejects_a_bad_pin_before_connecting(private_key: Path) -> None:
    with pytest.raises(ConfigurationError, match="HOST_KEY"):
        Tunnel(ssh_settings(private_key, host_key="not a key"), "warehouse.internal", 5439)


@pytest.mark.parametrize(
    ("exc", "reason", "code"),
    [
        (paramiko.ChannelException(2, "Connect failed"), "refused", 2),
        (paramiko.SSHException("Timeout opening channel."), "timeout", None),
        (paramiko.SSHException("SSH session not active"), "session", None),
        (EOFError(), "session", None),
    ],
)
def test_channel_open_failures_are_values(exc: Exception, reason: str, code: int | None) -> None:
    """What doctor and the session read of a refused forward: a value, not log text."""
    from dbt_runner._ssh.forwarder import channel_failure

    failure = channel_failure(exc)
    assert (failure.reason, failure.code) == (reason, code)
    assert reason in str(failure)
