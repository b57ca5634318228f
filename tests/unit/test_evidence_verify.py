"""The package format without a cloud: built by `cloud.evidence_package.build`, checked by
`shouwang.evidence_package.verify`; the key files a checker may be given."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.evidence_key import EvidenceKey
from cloud.evidence_package import Blob, build
from shouwang import cli
from shouwang.evidence_package import KeyFileError, fingerprint, load_public_key, verify

CLIP = b"\x00\x00\x00\x20ftypisom" + bytes(range(256)) * 40


def _package(tmp_path: Path, key: EvidenceKey) -> Path:
    blob = tmp_path / "blob"
    blob.write_bytes(CLIP)
    out = tmp_path / "package.zip"
    with out.open("w+b") as f:
        built = build(
            f, header={"alert": "01A", "site": "s-1", "exported_by": {
                "username": "u", "role": "police", "display_name": "U"}},
            alert_json=b'{"id": "01A"}\n', timeline_json=b'{"timeline": []}\n',
            blobs=[Blob(hashlib.sha256(CLIP).hexdigest(), len(CLIP), "video/mp4", "cam-1", 1,
                        blob)],
            key=key, exported_ms=1_795_000_000_000)
    assert built.files == 3
    return out


def test_a_built_package_verifies_and_a_size_lie_is_named(tmp_path: Path) -> None:
    key = EvidenceKey(Ed25519PrivateKey.generate())
    package = _package(tmp_path, key)
    report = verify(package, key.public_key)
    assert report.ok, report.lines()
    # A manifest re-signed by the same key but with a wrong size: the size is named.
    with zipfile.ZipFile(package) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        entries = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    clip = next(f for f in manifest["files"] if f["kind"] == "clip")
    clip["size"] += 1
    entries["manifest.json"] = json.dumps(manifest).encode()
    entries["manifest.sig"] = key.sign(entries["manifest.json"])
    lying = tmp_path / "lying.zip"
    with zipfile.ZipFile(lying, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    report = verify(lying, key.public_key)
    assert report.problems == [
        f"{clip['name']}: size expected {len(CLIP) + 1}, actual {len(CLIP)}"]


def test_an_entry_in_a_method_outside_the_format_is_named(tmp_path: Path) -> None:
    key = EvidenceKey(Ed25519PrivateKey.generate())
    package = _package(tmp_path, key)
    with zipfile.ZipFile(package, "a") as zf:
        zf.writestr("extra.txt", b"x" * 100, compress_type=zipfile.ZIP_BZIP2)
    report = verify(package, key.public_key)
    assert "extra.txt: changed inside the zip: it cannot be read (compression method 12 is " \
        "not part of the format)" in report.problems


@pytest.mark.parametrize("form", ["pem", "json", "base64"])
def test_a_public_key_file_in_each_form(tmp_path: Path, form: str) -> None:
    key = EvidenceKey(Ed25519PrivateKey.generate())
    text = {"pem": key.pem, "json": json.dumps(key.info),
            "base64": key.info["public_key"] + "\n"}[form]
    path = tmp_path / "key"
    path.write_text(text)
    assert fingerprint(load_public_key(path)) == key.info["fingerprint"]


def test_a_key_file_that_is_not_an_ed25519_key_is_refused_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = _package(tmp_path, EvidenceKey(Ed25519PrivateKey.generate()))
    rsa_like = tmp_path / "ec.pem"
    rsa_like.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    short = tmp_path / "short"
    short.write_text("AAAA")
    for path, why in ((rsa_like, "not an Ed25519 public key"), (short, "this is 3"),
                      (tmp_path / "absent", "No such file")):
        with pytest.raises(KeyFileError, match=why):
            load_public_key(path)
        assert cli.main(["evidence", "verify", str(package), "--public-key", str(path)]) == 2
        assert why in capsys.readouterr().err
