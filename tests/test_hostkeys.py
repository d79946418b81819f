"""Unit tests of dbt_runner._ssh.hostkeys: is the bastion's host key the expected one (pure)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import paramiko
import pytest

from dbt_runner import ConfigurationError
from dbt_runner._ssh.hostkeys import (
    HostKeyRejected,
    HostKeyVerifier,
    host_key_line,
    parse_host_key,
    read_known_hosts,
    sha256_fingerprint,
)
from tests._ssh_keys import ed25519_key, hashed, key_line, private_key, ssh_settings

__all__ = ["private_key"]  # a fixture, used by name


def test_parse_pinned_public_keykey_line() -> None:
    key = ed25519_key()
    for text in (key_line(key), f"{key_line(key)} root@bastion", f"[bastion]:2222 {key_line(key)}"):
        pinned = parse_host_key(text)
        assert pinned.key_type == "ssh-ed25519"
        assert pinned.blob == key.asbytes()
        assert pinned.fingerprint == key.fingerprint  # paramiko's OpenSSH-style SHA256
        assert pinned.matches(key.asbytes())
        assert not pinned.matches(ed25519_key().asbytes())


def test_parse_pinned_fingerprint_with_or_without_padding() -> None:
    key = ed25519_key()
    fingerprint = sha256_fingerprint(key.asbytes())
    assert fingerprint == key.fingerprint
    for text in (fingerprint, fingerprint + "=", "sha256:" + fingerprint[7:], f"  {fingerprint} "):
        pinned = parse_host_key(text)
        assert pinned.key_type is None
        assert pinned.fingerprint == fingerprint
        assert pinned.matches(key.asbytes())
        assert not pinned.matches(ed25519_key().asbytes())


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
        pytest.param("ssh-rsa " + ed25519_key().get_base64(), id="type-mismatch"),
    ],
)
def test_parse_host_key_rejects_garbage(text: str) -> None:
    with pytest.raises(ConfigurationError, match="HOST_KEY"):
        parse_host_key(text)


def test_read_known_hosts_forms(tmp_path: Path) -> None:
    mine, other, revoked, wildcard = (ed25519_key() for _ in range(4))
    path = tmp_path / "known_hosts"
    path.write_text(
        "\n".join(
            [
                "# comment",
                "",
                f"bastion {key_line(other)}",  # port 22 entry: not ours (we use port 2222)
                f"[bastion]:2222,10.0.0.1 {key_line(mine)} a comment",
                f"{hashed('[bastion]:2222')} {key_line(mine)}",
                f"@revoked [bastion]:2222 {key_line(revoked)}",
                f"@cert-authority *.example.com {key_line(other)}",
                f"[bast*]:2222,![bastion.evil]:2222 {key_line(wildcard)}",
                "[bastion]:2222 ssh-ed25519 !!!notbase64",
                f"[bastion]:22222 {key_line(other)}",
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
    return HostKeyVerifier(ssh_settings(private_key, **overrides))


def test_verify_accepts_the_pinned_key_and_rejects_another(private_key: Path) -> None:
    good, bad = ed25519_key(), ed25519_key()
    verifier = _verifier(private_key, host_key=key_line(good))
    trusted, revoked = verifier.expected()
    verifier.verify(good, trusted, revoked)
    with pytest.raises(HostKeyRejected) as info:
        verifier.verify(bad, trusted, revoked)
    message = str(info.value)
    assert bad.fingerprint in message  # what the bastion presented
    assert good.fingerprint in message  # what we expected
    assert "SSH__HOST_KEY" in message


def test_verify_unknown_host_says_what_to_add(private_key: Path, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[elsewhere]:2222 {key_line(ed25519_key())}\n")
    verifier = _verifier(private_key, host_key=None, known_hosts=known_hosts)
    key = ed25519_key()
    with pytest.raises(HostKeyRejected) as info:
        verifier.verify(key, *verifier.expected())
    message = str(info.value)
    assert "unknown" in message
    assert key.fingerprint in message
    assert f"[bastion.example.com]:2222 {key_line(key)}" in message  # the line to add
    assert str(known_hosts) in message


def test_verify_refuses_a_revoked_key(private_key: Path, tmp_path: Path) -> None:
    key = ed25519_key()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        f"[bastion.example.com]:2222 {key_line(key)}\n@revoked * {key_line(key)}\n"
    )
    verifier = _verifier(private_key, host_key=None, known_hosts=known_hosts)
    with pytest.raises(HostKeyRejected, match="revoked"):
        verifier.verify(key, *verifier.expected())


def test_insecure_skip_accepts_anything_loudly(
    private_key: Path, caplog: pytest.LogCaptureFixture
) -> None:
    verifier = _verifier(private_key, host_key=None, insecure_skip_host_key_check=True)
    key = ed25519_key()
    with caplog.at_level(logging.WARNING, logger="dbt_runner.tunnel"):
        verifier.verify(key, *verifier.expected())
    assert "INSECURE_SKIP_HOST_KEY_CHECK" in caplog.text
    assert key.fingerprint in caplog.text


def test_restrict_algorithms_asks_for_the_pinned_key_type(private_key: Path) -> None:
    verifier = _verifier(private_key, host_key=key_line(ed25519_key()))
    transport = paramiko.Transport(socket.socket())
    try:
        verifier.restrict_algorithms(transport, verifier.expected()[0])
        assert list(transport.get_security_options().key_types) == ["ssh-ed25519"]
    finally:
        transport.close()


def test_host_key_line_reads_the_type_from_a_bare_blob() -> None:
    key = ed25519_key()
    assert host_key_line(key.get_base64()) == key_line(key)
    assert host_key_line(f"  {key_line(key)} comment ") == f"{key_line(key)} comment"
    assert host_key_line("SHA256:abc") == "SHA256:abc"
    assert host_key_line("not base64!") == "not base64!"  # parse_host_key rejects it
