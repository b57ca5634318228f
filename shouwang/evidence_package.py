"""The evidence package format, and checking a package offline (`shouwang evidence verify`).

A package is a zip: `manifest.json` lists every other file with its SHA-256 and size, the
alert, the site, who exported it and when; `manifest.sig` is the raw 64-byte Ed25519 signature
over the exact bytes of `manifest.json`. The cloud builds it (cloud/evidence_package.py); this
module is all a checker needs (no network, no database), so a court or another tool can follow
docs/evidence.md without the rest of Shouwang.

Entries are read from the zip's raw bytes, not through zipfile's checked reader: a reader that
stops at a bad CRC-32 cannot say what the changed file hashes to now, and that is the answer a
person needs ("expected X, actual Y").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "shouwang-evidence-package/1"
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
ALERT, TIMELINE = "alert.json", "timeline.json"
SIGNATURE_BYTES = 64
EXTENSIONS = {"video/mp4": "mp4", "image/jpeg": "jpg", "image/png": "png"}
CHUNK = 1024 * 1024
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")


class KeyFileError(ValueError):
    """A public key file that cannot be read as an Ed25519 key; the message says why."""


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    """`sha256:` and the hex SHA-256 of the raw 32-byte public key."""
    return "sha256:" + hashlib.sha256(raw_public_key(key)).hexdigest()


def public_key_info(key: Ed25519PublicKey) -> dict[str, str]:
    """How a key is named in a manifest: algorithm, raw key in base64, fingerprint."""
    return {
        "algorithm": "Ed25519",
        "public_key": base64.b64encode(raw_public_key(key)).decode(),
        "fingerprint": fingerprint(key),
    }


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


# What each kind of evidence is (cloud/evidence.py KINDS), in the manifest's `description`:
# a picture the camera drew on is never called a snapshot.
KINDS = {
    "snapshot": "snapshot: the frame as the camera saw it",
    "clip": "clip: the video as the camera sent it",
    "marked": "marked snapshot: the frame with the thrown object's track and candidate "
              "windows drawn on it by the camera (not as seen)",
    "launch": "launch crop: the launch area at the first sighting, enlarged, with the track "
              "and the most likely window drawn on it by the camera (not as seen)",
    "marked_clip": "marked clip: the clip decoded, the track and candidate windows drawn on "
                   "its frames by the camera, and encoded again (not as sent)",
    "crop": "face crop: a face cut from a frame, as the camera saw it",
}
FOLDERS = {"snapshot": "snapshots", "clip": "clips", "marked": "marked", "launch": "marked",
           "marked_clip": "marked", "crop": "crops"}


def evidence_kind(kind: str | None, content_type: str) -> str:
    """The kind a package names a blob by: its own, or, from a gateway that did not say,
    what its type makes it (a clip or a snapshot)."""
    if kind in KINDS:
        return kind
    return "clip" if content_type.startswith("video/") else "snapshot"


def member_name(sha256: str, content_type: str, kind: str | None = None) -> str:
    """Where a blob goes in the package, named by its hash: `clips/` and `snapshots/` for
    what the camera sent as it was, `marked/` for what it drew on, `crops/` for faces."""
    folder = FOLDERS[evidence_kind(kind, content_type)]
    return f"{folder}/{sha256}.{EXTENSIONS.get(content_type, 'bin')}"


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM public key, the JSON that `GET /api/evidence/public-key` serves, or the raw
    32-byte key in base64 on a line of its own."""
    try:
        text = path.read_bytes()
    except OSError as err:
        raise KeyFileError(f"{path}: {err.strerror or err}") from err
    stripped = text.strip()
    if stripped.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(stripped)
        except ValueError as err:
            raise KeyFileError(f"{path}: not a PEM public key ({err})") from err
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path}: a {type(key).__name__}, not an Ed25519 public key")
        return key
    if stripped.startswith(b"{"):
        try:
            stripped = str(json.loads(stripped)["public_key"]).encode()
        except (ValueError, KeyError, TypeError) as err:
            raise KeyFileError(f"{path}: JSON without a `public_key` string") from err
    try:
        raw = base64.b64decode(stripped, validate=True)
    except binascii.Error as err:
        raise KeyFileError(f"{path}: neither PEM, JSON nor base64 ({err})") from err
    if len(raw) != 32:
        raise KeyFileError(f"{path}: an Ed25519 public key is 32 bytes, this is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


# --- verifying -----------------------------------------------------------------------------


@dataclass
class Report:
    """What a check found: `ok` lines, `FAIL` lines and notes, in order."""

    package: Path
    problems: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, text: str) -> None:
        self.problems.append(text)

    def lines(self) -> list[str]:
        out = [f"package: {self.package}", *self.header]
        out += [f"ok   {p}" for p in self.passed]
        out += [f"note {n}" for n in self.notes]
        out += [f"FAIL {p}" for p in self.problems]
        if self.ok:
            out.append("VERIFIED: every file is as signed")
        else:
            out.append(f"NOT VERIFIED: {len(self.problems)} problem(s) above")
        return out


@dataclass
class _Entry:
    sha256: str | None
    size: int
    data: bytes | None  # kept for the manifest and the signature only
    error: str | None
    crc_ok: bool


def _raw_chunks(f: BinaryIO, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The stored bytes of one entry, decompressed, without zipfile's CRC check."""
    if info.flag_bits & 0x1:
        raise ValueError("encrypted entries are not part of the format")
    f.seek(info.header_offset)
    header = f.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise ValueError("its local header is missing")
    name_len, extra_len = _LOCAL_HEADER.unpack(header)[-2:]
    f.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
    remaining = info.compress_size
    inflate = None
    if info.compress_type == zipfile.ZIP_DEFLATED:
        inflate = zlib.decompressobj(-15)
    elif info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"compression method {info.compress_type} is not part of the format")
    while remaining > 0:
        chunk = f.read(min(CHUNK, remaining))
        if not chunk:
            raise ValueError("the zip ends inside it")
        remaining -= len(chunk)
        yield inflate.decompress(chunk) if inflate is not None else chunk
    if inflate is not None:
        yield inflate.flush()


def _read_entry(f: BinaryIO, info: zipfile.ZipInfo, keep: bool) -> _Entry:
    digest, crc, size = hashlib.sha256(), 0, 0
    kept: list[bytes] = []
    try:
        for chunk in _raw_chunks(f, info):
            digest.update(chunk)
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            if keep:
                kept.append(chunk)
    except (ValueError, zlib.error) as err:
        return _Entry(None, size, None, f"changed inside the zip: it cannot be read ({err})",
                      False)
    return _Entry(digest.hexdigest(), size, b"".join(kept) if keep else None, None,
                  crc == info.CRC)


def verify(path: Path, public_key: Ed25519PublicKey | None = None) -> Report:
    """Check a package: the signature over the manifest (with `public_key`, else the key the
    manifest names), every listed file present with its hash and size, nothing unlisted."""
    report = Report(path)
    try:
        with path.open("rb") as f, zipfile.ZipFile(f) as zf:
            _verify_zip(report, f, zf.infolist(), public_key)
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        report.fail(f"{path}: not a readable zip file ({err})")
    return report


def _verify_zip(
    report: Report, f: BinaryIO, infos: list[zipfile.ZipInfo],
    public_key: Ed25519PublicKey | None,
) -> None:
    by_name: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if info.filename in by_name:
            report.fail(f"{info.filename}: in the zip twice (a reader would see only one)")
        by_name[info.filename] = info
    entries: dict[str, _Entry] = {}
    for name, info in by_name.items():
        entry = _read_entry(f, info, keep=name in (MANIFEST, SIGNATURE))
        entries[name] = entry
        if entry.error is not None:
            report.fail(f"{name}: {entry.error}")
        elif not entry.crc_ok:
            report.notes.append(f"{name}: changed inside the zip (its CRC-32 does not match)")
    manifest = _check_signature(report, entries, public_key)
    if manifest is None:
        return
    _check_files(report, manifest, entries)


def _check_signature(
    report: Report, entries: dict[str, _Entry], public_key: Ed25519PublicKey | None
) -> dict[str, Any] | None:
    """Verify manifest.sig; return the parsed manifest (even when the signature fails, so the
    files are still checked against it and every problem is named)."""
    manifest_entry, sig_entry = entries.get(MANIFEST), entries.get(SIGNATURE)
    for name, entry in ((MANIFEST, manifest_entry), (SIGNATURE, sig_entry)):
        if entry is None:
            report.fail(f"{name}: missing from the zip")
    if manifest_entry is None or manifest_entry.data is None:
        return None
    try:
        manifest = json.loads(manifest_entry.data)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
            raise ValueError("not an object with a `files` list")
    except ValueError as err:
        report.fail(f"{MANIFEST}: not a manifest ({err})")
        manifest = None
    if manifest is not None:
        if manifest.get("format") != FORMAT:
            report.fail(f"{MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
        by = manifest.get("exported_by") or {}
        report.header += [
            f"alert: {manifest.get('alert')}  site: {manifest.get('site')}",
            f"exported by: {by.get('username')} ({by.get('role')}) at "
            f"{manifest.get('exported_at')}",
        ]
    named = _named_key(report, manifest)
    key = public_key or named
    if key is None:
        report.fail(f"{SIGNATURE}: no public key to check it with (give --public-key)")
        return manifest
    if public_key is not None and named is not None and fingerprint(named) != fingerprint(key):
        report.notes.append(
            f"the manifest names key {fingerprint(named)}; you trust {fingerprint(key)}")
    if sig_entry is None or sig_entry.data is None:
        return manifest
    if len(sig_entry.data) != SIGNATURE_BYTES:
        report.fail(f"{SIGNATURE}: {len(sig_entry.data)} bytes; a raw Ed25519 signature is "
                    f"{SIGNATURE_BYTES}")
        return manifest
    try:
        key.verify(sig_entry.data, manifest_entry.data)
    except InvalidSignature:
        report.fail(f"{MANIFEST} / {SIGNATURE}: the signature does not verify with key "
                    f"{fingerprint(key)}: one of the two was changed, or another key signed it")
        return manifest
    if public_key is not None:
        report.passed.append(f"signature: {MANIFEST} is signed by the key you trust "
                             f"({fingerprint(key)})")
    else:
        report.passed.append(f"signature: {MANIFEST} is signed by the key it names "
                             f"({fingerprint(key)})")
        report.notes.append(
            "that key came with the package: this proves integrity, not origin. Compare the "
            "fingerprint with the key the deployment publishes (GET /api/evidence/public-key), "
            "or check again with --public-key")
    return manifest


def _named_key(report: Report, manifest: dict[str, Any] | None) -> Ed25519PublicKey | None:
    info = (manifest or {}).get("signing_key")
    if not isinstance(info, dict):
        return None
    try:
        raw = base64.b64decode(str(info.get("public_key")), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        report.fail(f"{MANIFEST}: signing_key.public_key is not a raw Ed25519 key in base64")
        return None


def _check_files(report: Report, manifest: dict[str, Any], entries: dict[str, _Entry]) -> None:
    listed: set[str] = set()
    for item in manifest["files"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            report.fail(f"{MANIFEST}: a file entry without a name: {item!r}")
            continue
        name = item["name"]
        listed.add(name)
        entry = entries.get(name)
        if entry is None:
            report.fail(f"{name}: in the manifest but not in the zip")
            continue
        if entry.error is not None:
            continue  # named already
        wrong = []
        if entry.sha256 != item.get("sha256"):
            wrong.append(f"sha256 expected {item.get('sha256')}, actual {entry.sha256}")
        if entry.size != item.get("size"):
            wrong.append(f"size expected {item.get('size')}, actual {entry.size}")
        if wrong:
            report.fail(f"{name}: {'; '.join(wrong)}")
        else:
            what = item.get("description") if isinstance(item.get("description"), str) \
                else None
            report.passed.append(f"{name}: sha256 {entry.sha256}, {entry.size} bytes"
                                 + (f" ({what})" if what else ""))
    for name in entries:
        if name not in listed and name not in (MANIFEST, SIGNATURE):
            report.fail(f"{name}: in the zip but not in the manifest")
    for item in manifest.get("unavailable") or []:
        if isinstance(item, dict):
            report.notes.append(
                f"the cloud could not include {item.get('sha256')}: {item.get('reason')} "
                f"({item.get('content_type')}, device {item.get('device')})")
