"""`shouwang certs`: one CA, broker certificates for their hosts, client certificates, safe to
run again; a renewed CA still verifies what it signed before."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification

from shouwang.certs import Authority
from shouwang.cli import main


def certs(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["certs", *args])
    out, err = capsys.readouterr()
    return code, out + err


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def hosts(cert: x509.Certificate) -> set[object]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*san.get_values_for_type(x509.DNSName), *san.get_values_for_type(x509.IPAddress)}


def verifies_as_server(ca_file: Path, leaf: Path, host: str) -> bool:
    """The leaf chains to `ca_file` for `host` under the Web PKI's strict rules."""
    store = verification.Store([load(ca_file)])
    subject = (x509.IPAddress(ipaddress.ip_address(host)) if host[0].isdigit()
               else x509.DNSName(host))
    verifier = verification.PolicyBuilder().store(store).build_server_verifier(subject)
    try:
        verifier.verify(load(leaf), [])
    except verification.VerificationError:
        return False
    return True


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_first_run_makes_a_ca_broker_certificates_for_their_hosts_and_private_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = certs(capsys, "--dir", str(tmp_path), "--server",
                      "edge-broker=127.0.0.1,gw.example.org", "--server", "cloud-broker=::1",
                      "--client", "gateway-1")
    assert code == 0, out
    assert "ca.crt: created" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca.crt", "ca.key", "cloud-broker.crt", "cloud-broker.key", "edge-broker.crt",
        "edge-broker.key", "gateway-1.crt", "gateway-1.key"]
    assert hosts(load(tmp_path / "edge-broker.crt")) == {
        ipaddress.ip_address("127.0.0.1"), "gw.example.org"}
    assert hosts(load(tmp_path / "cloud-broker.crt")) == {ipaddress.ip_address("::1")}
    assert verifies_as_server(tmp_path / "ca.crt", tmp_path / "edge-broker.crt", "127.0.0.1")
    assert verifies_as_server(tmp_path / "ca.crt", tmp_path / "edge-broker.crt",
                              "gw.example.org")
    assert not verifies_as_server(tmp_path / "ca.crt", tmp_path / "edge-broker.crt", "10.0.0.9")
    for path in tmp_path.iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if path.suffix == ".key" else 0o644), path.name


def test_running_again_keeps_every_valid_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--dir", str(tmp_path), "--server", "edge-broker=127.0.0.1", "--client", "gw-1")
    assert certs(capsys, *args)[0] == 0
    before = files(tmp_path)
    code, out = certs(capsys, *args)
    assert code == 0
    assert files(tmp_path) == before
    assert "ca.crt: kept" in out
    assert "edge-broker.crt: kept" in out
    assert "gw-1.crt: kept" in out


def test_changed_hosts_reissue_only_that_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs(capsys, "--dir", str(tmp_path), "--server", "edge-broker=127.0.0.1",
          "--server", "cloud-broker=127.0.0.1")
    before = files(tmp_path)
    code, out = certs(capsys, "--dir", str(tmp_path), "--server",
                      "edge-broker=127.0.0.1,192.168.10.1", "--server", "cloud-broker=127.0.0.1")
    assert code == 0
    assert "edge-broker.crt: reissued" in out
    assert "cloud-broker.crt: kept" in out
    after = files(tmp_path)
    assert after["cloud-broker.crt"] == before["cloud-broker.crt"]
    assert after["ca.crt"] == before["ca.crt"]
    assert hosts(load(tmp_path / "edge-broker.crt")) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("192.168.10.1")}


def test_a_certificate_that_expires_soon_is_renewed(tmp_path: Path) -> None:
    Authority(tmp_path, days=20, renew_within_days=5).server("edge-broker", ["edge.local"])
    again = Authority(tmp_path, renew_within_days=30).server("edge-broker", ["edge.local"])
    assert again.action == "renewed"
    left = load(again.cert).not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert left > datetime.timedelta(days=700)


def test_a_renewed_ca_keeps_its_key_so_what_it_signed_still_verifies(tmp_path: Path) -> None:
    first = Authority(tmp_path, ca_days=20)
    assert first.ensure_ca() == "created"
    old_leaf = first.server("cloud-broker", ["127.0.0.1"]).cert
    kept = tmp_path / "old" / "cloud-broker.crt"
    kept.parent.mkdir()
    shutil.copy(old_leaf, kept)
    old_ca = load(tmp_path / "ca.crt")

    renewed = Authority(tmp_path)  # the CA has 20 days left: under the 30-day window
    assert renewed.ensure_ca() == "renewed"
    new_ca = load(tmp_path / "ca.crt")
    assert new_ca.not_valid_after_utc > old_ca.not_valid_after_utc
    assert new_ca.public_key() == old_ca.public_key()
    assert verifies_as_server(tmp_path / "ca.crt", kept, "127.0.0.1")
    # And a client that still holds the old ca.crt accepts what the renewed CA issues.
    (tmp_path / "old" / "ca.crt").write_bytes(old_ca.public_bytes(Encoding.PEM))
    fresh = renewed.server("edge-broker", ["127.0.0.1"]).cert
    assert verifies_as_server(tmp_path / "old" / "ca.crt", fresh, "127.0.0.1")


def test_a_new_ca_reissues_what_the_old_one_signed(tmp_path: Path) -> None:
    Authority(tmp_path).server("edge-broker", ["127.0.0.1"])
    (tmp_path / "ca.key").unlink()
    (tmp_path / "ca.crt").unlink()
    issued = Authority(tmp_path).server("edge-broker", ["127.0.0.1"])
    assert issued.action == "reissued"
    assert verifies_as_server(tmp_path / "ca.crt", issued.cert, "127.0.0.1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "edge-broker"], "expected NAME=HOST[,HOST...]"),
        (["--server", "edge-broker="], "expected NAME=HOST[,HOST...]"),
        (["--server", "edge-broker=not a host"], "bad host 'not a host'"),
        (["--server", "edge-broker=10.0.0.300"], "bad host '10.0.0.300'"),
        (["--server", "../etc=127.0.0.1"], "bad certificate name '../etc'"),
        (["--client", "ca"], "bad certificate name 'ca'"),
        (["--server", "b=::1", "--server", "b=::1"], "--server b given twice"),
        (["--server", "b=::1", "--client", "b"], "a name given twice"),
        ([], "nothing to issue"),
        (["--client", "c", "--days", "10"], "--days 10 must be more than"),
        (["--server", "b=::1", "--broker-user", "no-such-user"], "no such user"),
    ],
)
def test_bad_arguments_are_refused_with_what_is_wrong_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out = certs(capsys, "--dir", str(tmp_path / "pki"), *args)
    assert code == 2
    assert message in out
    assert not (tmp_path / "pki").exists()


def test_a_ca_certificate_without_its_key_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Authority(tmp_path).ensure_ca()
    (tmp_path / "ca.key").unlink()
    ca = (tmp_path / "ca.crt").read_bytes()
    code, out = certs(capsys, "--dir", str(tmp_path), "--client", "c")
    assert code == 2
    assert "exists without" in out
    assert (tmp_path / "ca.crt").read_bytes() == ca
