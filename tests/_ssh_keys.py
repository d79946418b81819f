"""SSH key helpers shared by the unit tests of the host-key check and the tunnel."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dbt_runner import SSHSettings


def ed25519_key() -> paramiko.PKey:
    """A fresh ed25519 public key as paramiko sees a server's host key."""
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    blob = ssh_string(b"ssh-ed25519") + ssh_string(raw)
    return paramiko.PKey.from_type_string("ssh-ed25519", blob)


def ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def hashed(name: str) -> str:
    salt = b"0123456789abcdefghij"
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


@pytest.fixture
def private_key(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519"
    path.write_text("not read by these tests\n")
    path.chmod(0o600)
    return path


def ssh_settings(private_key: Path, **overrides: object) -> SSHSettings:
    values: dict[str, object] = {
        "host": "bastion.example.com",
        "port": 2222,
        "user": "tunnel",
        "private_key": private_key,
        "host_key": "SHA256:" + "A" * 43,
    }
    values.update(overrides)
    return SSHSettings(**values)  # type: ignore[arg-type]
