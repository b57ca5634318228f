"""`shouwang certs`: a small certificate authority for the two MQTT brokers and their clients.

One directory holds the CA (`ca.crt`, `ca.key`) and every certificate it issued as
`NAME.crt` / `NAME.key`. Running it again is safe: what is valid stays as it is; a
certificate that expires within `renew_within_days`, whose hosts changed, or that this CA did
not sign is issued again. The CA is renewed with its own key, so what it signed before keeps
verifying against the new `ca.crt` (and the old `ca.crt` keeps verifying what it signs next).
Private keys are mode 0600 and written atomically (docs/security.md#tls).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import pwd
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shouwang.broker_accounts import ProvisionError, write_private
from shouwang.files import write_atomically

CA_DAYS = 3650
LEAF_DAYS = 825
RENEW_WITHIN_DAYS = 30
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

Host = ipaddress.IPv4Address | ipaddress.IPv6Address | str


class CertError(Exception):
    """A bad argument, or a file of the authority's directory that cannot be used."""


@dataclass(frozen=True)
class Issued:
    name: str
    cert: Path
    key: Path
    action: str  # "created", "kept", "renewed" (expiring), "reissued" (hosts or CA changed)
    not_after: datetime.datetime

    def line(self) -> str:
        return f"{self.cert.name}: {self.action} (valid until {self.not_after:%Y-%m-%d})"


def check_name(name: str) -> str:
    if not _NAME.match(name) or name in ("ca", "ca.crt"):
        raise CertError(
            f"bad certificate name {name!r}: letters, digits, '.', '_', '-' (not 'ca'), "
            "at most 64 characters"
        )
    return name


def parse_host(text: str) -> Host:
    """An IP address, or a DNS name (a leading `*.` allowed)."""
    text = text.strip()
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    labels = text.removeprefix("*.").rstrip(".").split(".")
    if (not text or len(text) > 253 or not all(_LABEL.match(label) for label in labels)
            or labels[-1].isdigit()):  # 10.0.0.300 is a mistyped address, not a name
        raise CertError(f"bad host {text!r}: give an IP address or a DNS name")
    return text.lower().rstrip(".")


def parse_server(spec: str) -> tuple[str, list[Host]]:
    """`NAME=HOST[,HOST...]` of the command line."""
    name, sep, hosts = spec.partition("=")
    if not sep or not hosts.strip():
        raise CertError(f"--server {spec!r}: expected NAME=HOST[,HOST...]")
    return check_name(name.strip()), [parse_host(h) for h in hosts.split(",")]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class Authority:
    """The CA of one deployment, kept in `directory`."""

    def __init__(self, directory: Path, *, name: str = "Shouwang CA",
                 days: int = LEAF_DAYS, renew_within_days: int = RENEW_WITHIN_DAYS,
                 ca_days: int = CA_DAYS, key_owner: str | None = None) -> None:
        if days <= renew_within_days:
            raise CertError(f"--days {days} must be more than --renew-within-days "
                            f"{renew_within_days}, or every run would issue again")
        self.directory = directory
        self.name = name
        self.days = days
        self.ca_days = ca_days
        self.renew_within = datetime.timedelta(days=renew_within_days)
        # Who reads the servers' keys: Mosquitto may read them after dropping to its user.
        if key_owner is not None:
            try:
                pwd.getpwnam(key_owner)
            except KeyError as err:
                raise CertError(f"--broker-user {key_owner}: no such user on this machine") from err
        self.key_owner = key_owner
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._cert: x509.Certificate | None = None

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key_file(self) -> Path:
        return self.directory / "ca.key"

    # --- the CA ---------------------------------------------------------------------------

    def ensure_ca(self) -> str:
        """Create the CA, or renew its certificate (same key, same name) when it expires soon;
        "created", "renewed" or "kept"."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.ca_key_file.exists():
            if self.ca_file.exists():
                raise CertError(f"{self.ca_file} exists without {self.ca_key_file}: restore the "
                                "key, or move ca.crt away to start a new CA")
            self._key = ec.generate_private_key(ec.SECP256R1())
            write_private(self.ca_key_file, _pem(self._key))
            self._cert = self._sign_ca()
            return "created"
        self._key = self._load_key(self.ca_key_file)
        cert = self._load_cert(self.ca_file) if self.ca_file.exists() else None
        if (cert is None or cert.public_key() != self._key.public_key()
                or self._expiring(cert, self.ca_days)):
            self._cert = self._sign_ca()
            return "renewed"
        self._cert = cert
        return "kept"

    def _sign_ca(self) -> x509.Certificate:
        assert self._key is not None
        now = _now()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        public = self._key.public_key()
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=self.ca_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        write_atomically(self.ca_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cert

    # --- what it issues -------------------------------------------------------------------

    def server(self, name: str, hosts: list[Host]) -> Issued:
        """A broker's certificate, valid for each of `hosts` (IP addresses, DNS names; as
        text or as `ipaddress` objects)."""
        if not hosts:
            raise CertError(f"server {name}: at least one host")
        parsed = [parse_host(h) if isinstance(h, str) else h for h in hosts]
        return self._issue(check_name(name), parsed, server=True)

    def client(self, name: str) -> Issued:
        """A client's certificate (mutual TLS), its name as the common name."""
        return self._issue(check_name(name), [], server=False)

    def _issue(self, name: str, hosts: list[Host], *, server: bool) -> Issued:
        if self._key is None:
            self.ensure_ca()
        cert_file, key_file = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        action = "created"
        if cert_file.exists() and key_file.exists():
            old = self._load_cert(cert_file)
            why = self._why_reissue(old, self._load_key(key_file), hosts)
            if why is None:
                return Issued(name, cert_file, key_file, "kept", old.not_valid_after_utc)
            action = why
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign_leaf(name, key.public_key(), hosts, server=server)
        write_private(key_file, _pem(key), self.key_owner if server else None)
        write_atomically(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return Issued(name, cert_file, key_file, action, cert.not_valid_after_utc)

    def _why_reissue(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                     hosts: list[Host]) -> str | None:
        assert self._key is not None
        if cert.public_key() != key.public_key():
            return "reissued"
        try:
            cert.verify_directly_issued_by(self._certificate)
        except (ValueError, TypeError, InvalidSignature):
            return "reissued"  # signed by another CA (this one was started anew)
        if _hosts(cert) != set(hosts):
            return "reissued"
        if self._expiring(cert, self.days):
            return "renewed"
        return None

    def _sign_leaf(self, name: str, public: ec.EllipticCurvePublicKey, hosts: list[Host],
                   *, server: bool) -> x509.Certificate:
        assert self._key is not None
        now = _now()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._certificate.subject)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
        )
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(h) if not isinstance(h, str) else x509.DNSName(h)
                 for h in hosts]), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    # --- reading what is there ------------------------------------------------------------

    @property
    def _certificate(self) -> x509.Certificate:
        assert self._cert is not None
        return self._cert

    def _expiring(self, cert: x509.Certificate, days: int) -> bool:
        # Renew within a window that never exceeds a third of the lifetime.
        window = min(self.renew_within, datetime.timedelta(days=days) / 3)
        return cert.not_valid_after_utc - _now() < window

    @staticmethod
    def _load_cert(path: Path) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as err:
            raise CertError(f"{path}: not a readable PEM certificate ({err}); "
                            "delete it to issue it again") from err

    @staticmethod
    def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as err:
            raise CertError(f"{path}: not a readable unencrypted PEM key ({err})") from err
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertError(f"{path}: not an EC key (this tool issues P-256 keys)")
        return key


def _hosts(cert: x509.Certificate) -> set[Host]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    found: set[Host] = set(san.get_values_for_type(x509.DNSName))
    found.update(ip for ip in san.get_values_for_type(x509.IPAddress)
                 if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address))
    return found


def issue(authority: Authority, servers: dict[str, list[Host]],
          clients: list[str]) -> tuple[str, list[Issued]]:
    """Everything the command line asks for, in one call: the CA's state and each issue."""
    ca = authority.ensure_ca()
    issued = [authority.server(n, hosts) for n, hosts in servers.items()]
    issued += [authority.client(n) for n in clients]
    return ca, issued


def cmd_certs(args: argparse.Namespace) -> int:
    try:
        servers: dict[str, list[Host]] = {}
        for spec in args.server:
            name, hosts = parse_server(spec)
            if name in servers:
                raise CertError(f"--server {name} given twice")
            servers[name] = hosts
        clients = [check_name(c) for c in args.client]
        both = set(servers) & set(clients)
        if both or len(set(clients)) != len(clients):
            raise CertError(f"a name given twice: {sorted(both) or clients}")
        if not servers and not clients and not args.ca_only:
            raise CertError("nothing to issue: give --server NAME=HOST[,HOST...] and/or "
                            "--client NAME (or --ca-only)")
        authority = Authority(args.dir, days=args.days,
                              renew_within_days=args.renew_within_days,
                              key_owner=args.broker_user)
        ca, issued = issue(authority, servers, clients)
    except (CertError, ProvisionError) as err:
        print(f"shouwang certs: {err}", file=sys.stderr)
        return 2
    print(f"ca.crt: {ca}")
    for i in issued:
        print(i.line())
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "certs", help="issue TLS certificates for the brokers and their clients "
        "(idempotent; docs/security.md#tls)")
    p.add_argument("--dir", type=Path, required=True,
                   help="the CA's directory: ca.crt, ca.key, NAME.crt, NAME.key")
    p.add_argument("--server", action="append", default=[], metavar="NAME=HOST[,HOST...]",
                   help="a broker's certificate valid for each HOST (IP address or DNS "
                   "name); repeatable")
    p.add_argument("--client", action="append", default=[], metavar="NAME",
                   help="a client certificate (mutual TLS) named NAME; repeatable")
    p.add_argument("--ca-only", action="store_true", help="only create or renew the CA")
    p.add_argument("--days", type=int, default=LEAF_DAYS,
                   help=f"validity of issued certificates (default {LEAF_DAYS})")
    p.add_argument("--renew-within-days", type=int, default=RENEW_WITHIN_DAYS,
                   help="issue again what expires within this many days "
                   f"(default {RENEW_WITHIN_DAYS})")
    p.add_argument("--broker-user", default=None,
                   help="give the servers' keys to this user (Mosquitto reads them as it)")
    p.set_defaults(fn=cmd_certs)
