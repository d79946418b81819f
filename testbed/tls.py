"""A throwaway certificate authority for the test bed's TLS servers.

Production warehouses speak TLS (every Redshift connection does), so the
PostgreSQL fixture and the Redshift stand-in do too. ``TestPKI`` makes, once
per test process, a CA and two server certificates signed by it:

- the **loopback** certificate (``127.0.0.1`` / ``localhost``), which the shared
  fixture servers present;
- the **named** certificate for :data:`WAREHOUSE_NAME` (``warehouse.test``, a name
  that resolves nowhere) and nothing else, which the ``named_*`` fixtures present:
  ``verify-full`` through a bastion succeeds only if the client checks that name
  while its bytes go to 127.0.0.1.

- PostgreSQL gets ``server.crt``/``server.key`` (``ssl = on``); clients use
  ``sslmode=require`` (no verification, like dbt-postgres by default) or
  ``verify-full`` with :attr:`TestPKI.ca_path`.
- redshift_connector always verifies the server against the *default* trust
  store plus its bundled Redshift CAs. :attr:`TestPKI.bundle_path` is the
  system bundle plus our CA; point ``SSL_CERT_FILE`` at it (only in tests that
  talk to the stand-in) and dbt-redshift's default ``sslmode`` works unchanged.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["WAREHOUSE_NAME", "TestPKI", "test_pki"]

#: the DNS name of the named certificate (``.test`` is reserved: it never resolves)
WAREHOUSE_NAME = "warehouse.test"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class TestPKI:
    """A CA and one server certificate for loopback, written to a temp dir."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dbr-tls-"))
        now = datetime.datetime.now(datetime.timezone.utc)
        start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("dbt_runner test CA"))
            .issuer_name(_name("dbt_runner test CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        self.ca_path = self.dir / "ca.crt"
        self.ca_path.write_bytes(ca_cert.public_bytes(pem))

        def server_cert(
            common_name: str, names: list[x509.GeneralName], stem: str
        ) -> tuple[bytes, bytes, Path, Path]:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = (
                x509.CertificateBuilder()
                .subject_name(_name(common_name))
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start)
                .not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                    critical=False,
                )
                .sign(ca_key, hashes.SHA256())
            )
            cert_pem = cert.public_bytes(pem)
            key_pem = key.private_bytes(
                pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            )
            cert_path, key_path = self.dir / f"{stem}.crt", self.dir / f"{stem}.key"
            cert_path.write_bytes(cert_pem)
            key_path.write_bytes(key_pem)
            key_path.chmod(0o600)
            return cert_pem, key_pem, cert_path, key_path

        loopback = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        self.cert_pem, self.key_pem, self.cert_path, self.key_path = server_cert(
            "127.0.0.1", loopback, "server"
        )
        #: the certificate for WAREHOUSE_NAME only (no IP address, no localhost)
        self.named_cert_pem, self.named_key_pem, self.named_cert_path, self.named_key_path = (
            server_cert(WAREHOUSE_NAME, [x509.DNSName(WAREHOUSE_NAME)], "named")
        )
        system = ssl.get_default_verify_paths().cafile
        system_pem = Path(system).read_bytes() if system and Path(system).is_file() else b""
        self.bundle_path = self.dir / "bundle.crt"
        self.bundle_path.write_bytes(system_pem + b"\n" + self.ca_path.read_bytes())

    def server_context(self, *, named: bool = False) -> ssl.SSLContext:
        """A server-side TLS context presenting the loopback certificate (``named``: the
        one for :data:`WAREHOUSE_NAME`)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if named:
            ctx.load_cert_chain(self.named_cert_path, self.named_key_path)
        else:
            ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx


@cache
def test_pki() -> TestPKI:
    """The test process's PKI (made once)."""
    return TestPKI()


test_pki.__test__ = False  # type: ignore[attr-defined]
