"""Unit tests of dbt_runner._tunnel: no sshd, no network.

The real tunnel is tested against a real OpenSSH server in
tests/integration/test_tunnel.py.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import logging
import socket
from pathlib import Path

import paramiko
import pytest
import sshtunnel
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dbt_runner import ConfigurationError, HostKeyError, SSHAuthError, SSHSettings, TunnelError
from dbt_runner._tunnel import (
    PORT_CANDIDATES,
    PORT_RANGE,
    HostKeyVerifier,
    Tunnel,
    _Attempt,
    _HostKeyRejected,
    derive_local_port,
    local_port_candidates,
    map_tunnel_errors,
    parse_host_key,
    read_known_hosts,
    sha256_fingerprint,
    translate_error,
)

# --------------------------------------------------------------------- helpers


def _ed25519_key() -> paramiko.PKey:
    """A fresh ed25519 public key as paramiko sees a server's host key."""
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    blob = _ssh_string(b"ssh-ed25519") + _ssh_string(raw)
    return paramiko.PKey.from_type_string("ssh-ed25519", blob)


def _ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def _hashed(name: str) -> str:
    salt = b"0123456789abcdefghij"
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


@pytest.fixture
def private_key(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519"
    path.write_text("not read by these tests\n")
    path.chmod(0o600)
    return path


def _ssh(private_key: Path, **overrides: object) -> SSHSettings:
    values: dict[str, object] = {
        "host": "bastion.example.com",
        "port": 2222,
        "user": "tunnel",
        "private_key": private_key,
        "host_key": "SHA256:" + "A" * 43,
    }
    values.update(overrides)
    return SSHSettings(**values)  # type: ignore[arg-type]


def _attempt() -> _Attempt:
    return _Attempt(
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


# ------------------------------------------------------------------- host keys


def test_parse_pinned_public_key_line() -> None:
    key = _ed25519_key()
    for text in (_line(key), f"{_line(key)} root@bastion", f"[bastion]:2222 {_line(key)}"):
        pinned = parse_host_key(text)
        assert pinned.key_type == "ssh-ed25519"
        assert pinned.blob == key.asbytes()
        assert pinned.fingerprint == key.fingerprint  # paramiko's OpenSSH-style SHA256
        assert pinned.matches(key.asbytes())
        assert not pinned.matches(_ed25519_key().asbytes())


def test_parse_pinned_fingerprint_with_or_without_padding() -> None:
    key = _ed25519_key()
    fingerprint = sha256_fingerprint(key.asbytes())
    assert fingerprint == key.fingerprint
    for text in (fingerprint, fingerprint + "=", "sha256:" + fingerprint[7:], f"  {fingerprint} "):
        pinned = parse_host_key(text)
        assert pinned.key_type is None
        assert pinned.fingerprint == fingerprint
        assert pinned.matches(key.asbytes())
        assert not pinned.matches(_ed25519_key().asbytes())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SHA256:tooshort",
        "SHA256:" + "!" * 43,
        "MD5:aa:bb:cc",
        "ssh-ed25519",
        "ssh-ed25519 not-base64!!",
        # the blob says ssh-ed25519, the type says ssh-rsa: a copy/paste slip
        pytest.param("ssh-rsa " + _ed25519_key().get_base64(), id="type-mismatch"),
    ],
)
def test_parse_host_key_rejects_garbage(text: str) -> None:
    with pytest.raises(ConfigurationError, match="HOST_KEY"):
        parse_host_key(text)


def test_read_known_hosts_forms(tmp_path: Path) -> None:
    mine, other, revoked, wildcard = (_ed25519_key() for _ in range(4))
    path = tmp_path / "known_hosts"
    path.write_text(
        "\n".join(
            [
                "# comment",
                "",
                f"bastion {_line(other)}",  # port 22 entry: not ours (we use port 2222)
                f"[bastion]:2222,10.0.0.1 {_line(mine)} a comment",
                f"{_hashed('[bastion]:2222')} {_line(mine)}",
                f"@revoked [bastion]:2222 {_line(revoked)}",
                f"@cert-authority *.example.com {_line(other)}",
                f"[bast*]:2222,![bastion.evil]:2222 {_line(wildcard)}",
                "[bastion]:2222 ssh-ed25519 !!!notbase64",
                f"[bastion]:22222 {_line(other)}",
            ]
        )
    )
    trusted, revoked_keys = read_known_hosts(path, "bastion", 2222)
    blobs = [k.blob for k in trusted]
    assert blobs.count(mine.asbytes()) == 2
    assert wildcard.asbytes() in blobs
    assert other.asbytes() not in blobs
    assert [k.blob for k in revoked_keys] == [revoked.asbytes()]

    trusted22, _ = read_known_hosts(path, "BASTION", 22)  # host names are case-insensitive
    assert [k.blob for k in trusted22] == [other.asbytes()]
    excluded, _ = read_known_hosts(path, "bastion.evil", 2222)
    assert wildcard.asbytes() not in [k.blob for k in excluded]


def _verifier(private_key: Path, **overrides: object) -> HostKeyVerifier:
    return HostKeyVerifier(_ssh(private_key, **overrides))


def test_verify_accepts_the_pinned_key_and_rejects_another(private_key: Path) -> None:
    good, bad = _ed25519_key(), _ed25519_key()
    verifier = _verifier(private_key, host_key=_line(good))
    trusted, revoked = verifier.expected()
    verifier.verify(good, trusted, revoked)
    with pytest.raises(_HostKeyRejected) as info:
        verifier.verify(bad, trusted, revoked)
    message = str(info.value)
    assert bad.fingerprint in message  # what the bastion presented
    assert good.fingerprint in message  # what we expected
    assert "SSH__HOST_KEY" in message


def test_verify_unknown_host_says_what_to_add(private_key: Path, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[elsewhere]:2222 {_line(_ed25519_key())}\n")
    verifier = _verifier(private_key, host_key=None, known_hosts=known_hosts)
    key = _ed25519_key()
    with pytest.raises(_HostKeyRejected) as info:
        verifier.verify(key, *verifier.expected())
    message = str(info.value)
    assert "unknown" in message
    assert key.fingerprint in message
    assert f"[bastion.example.com]:2222 {_line(key)}" in message  # the line to add
    assert str(known_hosts) in message


def test_verify_refuses_a_revoked_key(private_key: Path, tmp_path: Path) -> None:
    key = _ed25519_key()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[bastion.example.com]:2222 {_line(key)}\n@revoked * {_line(key)}\n")
    verifier = _verifier(private_key, host_key=None, known_hosts=known_hosts)
    with pytest.raises(_HostKeyRejected, match="revoked"):
        verifier.verify(key, *verifier.expected())


def test_insecure_skip_accepts_anything_loudly(
    private_key: Path, caplog: pytest.LogCaptureFixture
) -> None:
    verifier = _verifier(private_key, host_key=None, insecure_skip_host_key_check=True)
    key = _ed25519_key()
    with caplog.at_level(logging.WARNING, logger="dbt_runner.tunnel"):
        verifier.verify(key, *verifier.expected())
    assert "INSECURE_SKIP_HOST_KEY_CHECK" in caplog.text
    assert key.fingerprint in caplog.text


def test_restrict_algorithms_asks_for_the_pinned_key_type(private_key: Path) -> None:
    verifier = _verifier(private_key, host_key=_line(_ed25519_key()))
    transport = paramiko.Transport(socket.socket())
    try:
        verifier.restrict_algorithms(transport, verifier.expected()[0])
        assert list(transport.get_security_options().key_types) == ["ssh-ed25519"]
    finally:
        transport.close()


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
        (_HostKeyRejected("the bastion is unknown"), "host_key", HostKeyError, "unknown"),
        (
            paramiko.BadHostKeyException("bastion", _ed25519_key(), _ed25519_key()),
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
    ssh = _ssh(private_key, private_key_passphrase="s3cret-passphrase")
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
        Tunnel(_ssh(private_key, host_key="not a key"), "warehouse.internal", 5439)
