"""Is the bastion the one we expect? Host-key verification, pure and security critical.

Inputs are settings (``SSH__KNOWN_HOSTS``, ``SSH__HOST_KEY``,
``SSH__INSECURE_SKIP_HOST_KEY_CHECK``); output is a verdict on the key the
bastion presented: accept, or :class:`HostKeyRejected` with a message that
says what was expected, what was seen and what to do (the tunnel's error seam
turns it into :class:`~dbt_runner.HostKeyError`). No sockets here: the
transport calls :meth:`HostKeyVerifier.verify` after the key exchange and
before any authentication or channel.

Understood: OpenSSH known_hosts files (hashed names, ``*``/``?`` wildcards,
``!`` negation, ``[host]:port``, ``@revoked``), a pinned public key or its
``SHA256:`` fingerprint, and the Airflow SSH provider's bare base64 key
(:func:`host_key_line`).

>>> parse_host_key("SHA256:abc/DEF+123=").fingerprint
'SHA256:abc/DEF+123'
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import logging
import re
from pathlib import Path

import paramiko

from .._exceptions import ConfigurationError
from .._settings import ENV_PREFIX, SSHSettings

__all__ = [
    "HostKeyRejected",
    "HostKeyVerifier",
    "PinnedKey",
    "host_key_line",
    "known_hosts_name",
    "parse_host_key",
    "read_known_hosts",
    "sha256_fingerprint",
]

log = logging.getLogger("dbt_runner.tunnel")

_SSH = f"{ENV_PREFIX}SSH__"


def sha256_fingerprint(blob: bytes) -> str:
    """OpenSSH's fingerprint of a public key blob: ``SHA256:`` + unpadded base64."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


@dataclasses.dataclass(frozen=True)
class PinnedKey:
    """One acceptable host key: a full public key, or only its SHA256 fingerprint."""

    fingerprint: str
    key_type: str | None = None
    blob: bytes | None = None

    def matches(self, blob: bytes) -> bool:
        """True when the server key ``blob`` is this key."""
        if self.blob is not None:
            return hmac.compare_digest(self.blob, blob)
        return hmac.compare_digest(self.fingerprint, sha256_fingerprint(blob))

    def describe(self) -> str:
        """``"ssh-ed25519 SHA256:..."`` (or just the fingerprint)."""
        return f"{self.key_type} {self.fingerprint}" if self.key_type else self.fingerprint


_KEY_TYPE = re.compile(r"^(ssh|ecdsa|sk)-[A-Za-z0-9@.+-]+$")


def _blob_key_type(blob: bytes) -> str | None:
    """The key type an SSH public key blob names first (``"ssh-ed25519"``), or None."""
    if len(blob) < 4:
        return None
    try:
        return blob[4 : 4 + int.from_bytes(blob[:4], "big")].decode("ascii") or None
    except UnicodeDecodeError:
        return None


def host_key_line(value: str) -> str:
    """``"TYPE BASE64"`` for a bare base64 key blob (the type is read from the blob).

    Anything else (already ``"TYPE BASE64"``, a ``SHA256:`` fingerprint, or not a
    key at all) is returned as it is, for :func:`parse_host_key` to accept or reject.

    >>> host_key_line("SHA256:abc")
    'SHA256:abc'
    """
    text = value.strip()
    if len(text.split()) >= 2 or text[:7].upper() == "SHA256:":
        return text
    try:
        key_type = _blob_key_type(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        return text
    return f"{key_type} {text}" if key_type else text


def _key_from_fields(key_type: str, b64: str) -> PinnedKey:
    """A :class:`PinnedKey` from ``"ssh-ed25519"``, ``"AAAA..."``; ValueError if inconsistent."""
    try:
        blob = base64.b64decode(b64, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the {key_type} key is not valid base64") from exc
    # A key blob starts with its own type as an SSH string: catches copy/paste slips.
    if _blob_key_type(blob) != key_type:
        raise ValueError(f"the key data does not hold a {key_type} key")
    return PinnedKey(sha256_fingerprint(blob), key_type, blob)


def parse_host_key(value: str) -> PinnedKey:
    """Parse ``SSH__HOST_KEY``: ``"ssh-ed25519 AAAA... [comment]"`` or ``"SHA256:..."``.

    A known_hosts line (``"[host]:port ssh-ed25519 AAAA..."``) is accepted too.
    Raises :class:`~dbt_runner.ConfigurationError` for anything else.

    >>> parse_host_key("SHA256:abc/DEF+123=").fingerprint
    'SHA256:abc/DEF+123'
    """
    text = value.strip()
    if text[:7].upper() == "SHA256:":
        b64 = text[7:].strip().rstrip("=")
        try:
            raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
        except binascii.Error:
            raw = b""
        if len(raw) != hashlib.sha256().digest_size:
            raise ConfigurationError(
                f"{_SSH}HOST_KEY: {text!r} is not a SHA256 fingerprint like "
                "'SHA256:4Kf...' (see: ssh-keygen -lf <host key>.pub)"
            )
        return PinnedKey(f"SHA256:{b64}")
    fields = text.split()
    for i, field in enumerate(fields[:-1]):
        if _KEY_TYPE.match(field):
            try:
                return _key_from_fields(field, fields[i + 1])
            except ValueError as exc:
                raise ConfigurationError(f"{_SSH}HOST_KEY: {exc}") from None
    raise ConfigurationError(
        f"{_SSH}HOST_KEY must be the bastion's public key ('ssh-ed25519 AAAA...', "
        "e.g. the content of /etc/ssh/ssh_host_ed25519_key.pub) or its fingerprint "
        "('SHA256:...')"
    )


def known_hosts_name(host: str, port: int) -> str:
    """How OpenSSH names a server in known_hosts: ``host``, or ``[host]:port`` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):  # hashed entry: |1|base64(salt)|base64(hmac-sha1(salt, name))
        try:
            _, _, salt_b64, hash_b64 = pattern.split("|")
            salt, expected = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
        except (ValueError, binascii.Error):
            return False
        return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), expected)
    # Only * and ? are wildcards; "[host]:port" brackets are literal.
    regex = re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, name.lower()) is not None


def _host_matches(patterns: str, name: str) -> bool:
    matched = False
    for pattern in patterns.split(","):
        if pattern.startswith("!"):
            if _pattern_matches(pattern[1:], name):
                return False  # a negated match excludes the line
        elif _pattern_matches(pattern, name):
            matched = True
    return matched


def read_known_hosts(path: Path, host: str, port: int) -> tuple[list[PinnedKey], list[PinnedKey]]:
    """The keys a known_hosts file trusts for ``host:port``, and those it marks ``@revoked``.

    Understands hashed names, ``*``/``?`` wildcards, ``!`` negation and the
    ``[host]:port`` form. ``@cert-authority`` lines are ignored.
    """
    name = known_hosts_name(host, port)
    trusted: list[PinnedKey] = []
    revoked: list[PinnedKey] = []
    with path.expanduser().open(encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, 1):
            if raw.lstrip().startswith("#"):
                continue
            fields = raw.split()
            marker = fields.pop(0) if fields and fields[0].startswith("@") else None
            if len(fields) < 3 or not _host_matches(fields[0], name):
                continue
            try:
                key = _key_from_fields(fields[1], fields[2])
            except ValueError as exc:
                log.debug("known_hosts %s line %d ignored: %s", path, lineno, exc)
                continue
            if marker == "@revoked":
                revoked.append(key)
            elif marker is None:
                trusted.append(key)
    return trusted, revoked


class HostKeyRejected(Exception):
    """Our verdict on the bastion's host key; :func:`map_tunnel_errors` makes it a HostKeyError."""


# Which host key algorithms to offer for a key type (RSA keys sign with SHA-2 variants).
_ALGORITHMS_FOR_TYPE = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


class HostKeyVerifier:
    """Decides whether the bastion's host key is the expected one (settings -> verdict).

    Built from ``SSH__HOST_KEY`` (a pinned key or fingerprint), ``SSH__KNOWN_HOSTS``
    (read at each connection), or ``SSH__INSECURE_SKIP_HOST_KEY_CHECK``.
    """

    def __init__(self, ssh: SSHSettings) -> None:
        self._ssh = ssh
        self.pinned = parse_host_key(ssh.host_key) if ssh.host_key else None
        self.known_hosts = ssh.known_hosts.expanduser() if ssh.known_hosts else None
        self.insecure = ssh.insecure_skip_host_key_check
        if self.pinned is None and self.known_hosts is None and not self.insecure:
            raise ConfigurationError(
                f"the bastion's host key must be verified: set {_SSH}KNOWN_HOSTS or {_SSH}HOST_KEY"
            )

    def expected(self) -> tuple[list[PinnedKey], list[PinnedKey]]:
        """The trusted and revoked keys for this bastion, right now."""
        trusted = [self.pinned] if self.pinned else []
        revoked: list[PinnedKey] = []
        if self.known_hosts is not None:
            assert self._ssh.host is not None
            file_trusted, revoked = read_known_hosts(
                self.known_hosts, self._ssh.host, self._ssh.port
            )
            trusted += file_trusted
        return trusted, revoked

    def describe(self, trusted: list[PinnedKey]) -> str:
        """The expected keys and where they come from, for messages."""
        source = f"{_SSH}HOST_KEY" if self.known_hosts is None else f"{_SSH}KNOWN_HOSTS"
        if self.known_hosts is not None:
            source += f" ({self.known_hosts})"
        keys = ", ".join(k.describe() for k in trusted) or "no key"
        return f"{keys} from {source}"

    def restrict_algorithms(self, transport: paramiko.Transport, trusted: list[PinnedKey]) -> None:
        """Ask the server for a host key of a type we can check (like OpenSSH does)."""
        if not trusted or any(k.key_type is None for k in trusted):
            return  # a bare fingerprint: any type may match
        wanted: list[str] = []
        for key in trusted:
            assert key.key_type is not None
            wanted += _ALGORITHMS_FOR_TYPE.get(key.key_type, (key.key_type,))
        options = transport.get_security_options()
        offered = [alg for alg in options.key_types if alg in wanted]
        if offered:
            options.key_types = offered

    def verify(
        self, key: paramiko.PKey, trusted: list[PinnedKey], revoked: list[PinnedKey]
    ) -> None:
        """Accept ``key`` or raise (translated to :class:`~dbt_runner.HostKeyError`)."""
        ssh = self._ssh
        assert ssh.host is not None
        blob = key.asbytes()
        seen = f"{key.get_name()} {sha256_fingerprint(blob)}"
        where = f"bastion {ssh.host}:{ssh.port}"
        line = f"{known_hosts_name(ssh.host, ssh.port)} {key.get_name()} {key.get_base64()}"
        if self.insecure:
            log.warning(
                "%sINSECURE_SKIP_HOST_KEY_CHECK is set: accepting the %s host key %s WITHOUT "
                "verification; pin it with %sHOST_KEY=%s",
                _SSH,
                where,
                seen,
                _SSH,
                sha256_fingerprint(blob),
            )
            return
        if any(k.matches(blob) for k in revoked):
            raise HostKeyRejected(
                f"the {where} presented host key {seen}, which {_SSH}KNOWN_HOSTS "
                f"({self.known_hosts}) marks @revoked: refusing to connect"
            )
        if any(k.matches(blob) for k in trusted):
            return
        if self.pinned is not None and self.known_hosts is None:
            raise HostKeyRejected(
                f"host key verification failed: the {where} presented {seen}, but "
                f"{_SSH}HOST_KEY pins {self.pinned.describe()}. Someone may be intercepting "
                "the connection; if the bastion's key was really changed, check the new "
                f"fingerprint out of band and update {_SSH}HOST_KEY"
            )
        sources = f"{_SSH}KNOWN_HOSTS ({self.known_hosts})"
        if self.pinned is not None:
            sources += f" or {_SSH}HOST_KEY"
        if not trusted:
            raise HostKeyRejected(
                f"the {where} is unknown: no key for {known_hosts_name(ssh.host, ssh.port)} in "
                f"{sources}. It presented {seen}; after checking that fingerprint out of band, "
                f"add this line to the known_hosts file: {line}"
            )
        expected = ", ".join(k.describe() for k in trusted)
        raise HostKeyRejected(
            f"host key verification failed: the {where} presented {seen}, but {sources} "
            f"expects {expected}. Someone may be intercepting the connection; if the bastion's "
            f"key was really changed, check it out of band and replace the entry with: {line}"
        )
