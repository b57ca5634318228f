"""MQTT over TLS against a real Mosquitto: server verified by our CA, client certificates."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shouwang.config import BrokerConfig, TlsConfig
from shouwang.mqtt import MqttClient
from shouwang.services import Mosquitto
from tests.conftest import unique

pytestmark = pytest.mark.integration


class Pki:
    """A throw-away CA that signs a broker certificate for 127.0.0.1 and client certificates."""

    def __init__(self, directory: Path, name: str = "test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = self._sign(name, self.key.public_key(), ca=True)
        self.ca_file = self._write("ca.crt", self.cert)

    def _sign(self, cn: str, public_key: ec.EllipticCurvePublicKey, *, ca: bool = False,
              ip: str | None = None) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        issuer = subject if ca else self.cert.subject
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ip is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                critical=False,
            )
        return builder.sign(self.key, hashes.SHA256())

    def _write(self, name: str, cert: x509.Certificate) -> Path:
        path = self.directory / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def issue(self, name: str, ip: str | None = None) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert_file = self._write(f"{name}.crt", self._sign(name, key.public_key(), ip=ip))
        key_file = self.directory / f"{name}.key"
        key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
        return cert_file, key_file


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Mosquitto:
    cert, key = pki.issue("broker", ip="127.0.0.1")
    broker = Mosquitto(tmp_path / "tls-broker", name="tls broker", listener=[
        f"cafile {pki.ca_file}", f"certfile {cert}", f"keyfile {key}",
        "require_certificate true", "tls_version tlsv1.2",
    ])
    broker.start()
    yield broker  # type: ignore[misc]
    broker.stop()


def config(broker: Mosquitto, tls: TlsConfig) -> BrokerConfig:
    return BrokerConfig(host="127.0.0.1", port=broker.port, tls=tls)


async def test_a_client_with_its_certificate_talks_to_the_broker_over_tls(
    tls_broker: Mosquitto, pki: Pki
) -> None:
    cert, key = pki.issue("gateway-1")
    tls = TlsConfig(ca_file=pki.ca_file, cert_file=cert, key_file=key)
    sub = MqttClient(config(tls_broker, tls), client_id=unique("tls-sub"))
    sub.subscribe("site/s-1/up/alert", 1)
    pub = MqttClient(config(tls_broker, tls), client_id=unique("tls-pub"))
    await sub.start()
    await pub.start()
    try:
        await sub.wait_connected(10)
        await pub.wait_connected(10)
        await pub.publish("site/s-1/up/alert", b"sos", qos=1)
        message = await sub.messages()
        assert (message.topic, message.payload) == ("site/s-1/up/alert", b"sos")
    finally:
        await pub.close()
        await sub.close()


@pytest.mark.parametrize(
    ("case", "logged"),
    [
        ("no client certificate", "closed the connection before accepting it"),
        ("another CA's broker", "CERTIFICATE_VERIFY_FAILED"),
    ],
)
async def test_an_unverified_side_never_connects_and_the_log_says_why(
    tls_broker: Mosquitto, pki: Pki, tmp_path: Path, case: str, logged: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if case == "no client certificate":
        tls = TlsConfig(ca_file=pki.ca_file)
    else:  # the client trusts only another CA, so the broker's certificate fails
        other = Pki(tmp_path / "other", name="other CA")
        cert, key = other.issue("gateway-2")
        tls = TlsConfig(ca_file=other.ca_file, cert_file=cert, key_file=key)
    client = MqttClient(config(tls_broker, tls), client_id=unique("tls-bad"))
    await client.start()
    try:
        with pytest.raises(TimeoutError):
            await client.wait_connected(3)
        assert not client.connected
        assert logged in caplog.text
    finally:
        await client.close()
