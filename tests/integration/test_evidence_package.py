"""The evidence package: a signed zip of an alert's clips, snapshots, record and timeline, that
anyone can check offline with `shouwang evidence verify`, exported only within scope, audited."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import shutil
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud.access import audit
from shouwang import cli
from tests.conftest import api_config, running_cloud
from tests.evidence_media import attach, h264_clip, jpeg_snapshot
from tests.integration.people import HOME_A, Client, add_alert, add_people, add_throw

pytestmark = pytest.mark.integration
WELFARE_DETAIL = {"reason": "no activity for 26 h", "signals": {"heart_rate": [72, 41]}}


def _config(database_url: str, tmp_path: Path) -> Any:
    return api_config(database_url, evidence={"dir": str(tmp_path / "blobs")})


async def _world(cloud: Any, tmp_path: Path) -> dict[str, Any]:
    """Station A's welfare alert with a clip and a snapshot, station B's alert, the people."""
    await add_people(cloud)
    alert = await add_alert(cloud, location=HOME_A, resident="r-a1", type="welfare",
                            severity="high", detail=WELFARE_DETAIL)
    other = await add_alert(cloud, location=HOME_A.replace("d1/s1/c-a", "d1/s2/c-b"),
                            resident="r-b1")
    clip = await h264_clip(tmp_path / "clip.mp4")
    snapshot = await jpeg_snapshot(tmp_path / "snapshot.jpg")
    clip_sha = await attach(cloud, alert, clip, "video/mp4", captured_ts=1_795_000_000_100)
    snap_sha = await attach(cloud, alert, snapshot, "image/jpeg", captured_ts=1_795_000_000_200)
    return {"alert": alert, "other": other, "clip": clip, "snapshot": snapshot,
            "clip_sha": clip_sha, "snap_sha": snap_sha}


async def _download(client: Client, alert_id: str) -> tuple[int, bytes, Any]:
    async with client.http.get(f"{client.base}/api/alerts/{alert_id}/package",
                               headers=client.headers) as res:
        return res.status, await res.read(), res.headers


def _verify(capsys: pytest.CaptureFixture[str], package: Path, *extra: str) -> tuple[int, str]:
    code = cli.main(["evidence", "verify", str(package), *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


async def test_a_package_holds_every_file_hashed_and_signed_by_the_served_key(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_cloud(_config(database_url, tmp_path)) as cloud, \
            aiohttp.ClientSession() as http:
        world = await _world(cloud, tmp_path)
        alert_id = world["alert"]["id"]
        police = await Client.login(http, cloud, "police-a")
        status, body, headers = await _download(police, alert_id)
        assert status == 200, body[:200]
        assert headers["Content-Type"] == "application/zip"
        assert headers["Content-Disposition"] == (
            f'attachment; filename="shouwang-evidence-{alert_id}.zip"')
        assert headers["Content-Length"] == str(len(body))
        # The public key needs no login: a court checks a package without an account.
        async with http.get(f"{police.base}/api/evidence/public-key") as res:
            assert res.status == 200
            served = await res.json()
        async with http.get(f"{police.base}/api/evidence/public-key?format=pem") as res:
            assert res.status == 200
            pem = await res.text()
        assert pem == served["pem"]
        admin = await Client.login(http, cloud, "admin")
        entries = await audit.entries(cloud.store.engine, action="evidence_package",  # type: ignore[union-attr]
                                      target=alert_id)

    zf = zipfile.ZipFile(io.BytesIO(body))
    clip_name, snap_name = f"clips/{world['clip_sha']}.mp4", f"snapshots/{world['snap_sha']}.jpg"
    assert sorted(zf.namelist()) == sorted([
        "manifest.json", "manifest.sig", "alert.json", "timeline.json", clip_name, snap_name])
    assert zf.read(clip_name) == world["clip"]
    assert zf.read(snap_name) == world["snapshot"]
    manifest_bytes = zf.read("manifest.json")
    manifest = json.loads(manifest_bytes)
    assert manifest["format"] == "shouwang-evidence-package/1"
    assert (manifest["alert"], manifest["site"]) == (alert_id, world["alert"]["site"])
    assert manifest["exported_by"] == {"username": "police-a", "role": "police",
                                       "display_name": "police-a"}
    assert isinstance(manifest["exported_ms"], int)
    assert manifest["exported_at"].endswith("Z")
    listed = {f["name"]: f for f in manifest["files"]}
    assert set(listed) == set(zf.namelist()) - {"manifest.json", "manifest.sig"}
    for name, entry in listed.items():
        data = zf.read(name)
        assert (entry["sha256"], entry["size"]) == (hashlib.sha256(data).hexdigest(), len(data))
    assert listed[clip_name] | {"sha256": 0, "size": 0} == {
        "name": clip_name, "kind": "clip", "content_type": "video/mp4", "device": "cam-door-1",
        "captured_ts": 1_795_000_000_100, "sha256": 0, "size": 0,
        "description": "clip: the video as the camera sent it"}
    assert listed[snap_name]["kind"] == "snapshot"
    assert manifest["unavailable"] == []
    # The alert as police see it: no vital signs; the timeline as the detail shows it.
    alert_json = json.loads(zf.read("alert.json"))
    assert alert_json["id"] == alert_id
    assert alert_json["detail"] == {"reason": "no activity for 26 h"}
    assert "timeline" not in alert_json
    timeline = json.loads(zf.read("timeline.json"))
    assert set(timeline) == {"timeline", "notifications", "deliveries"}
    assert [t["to_state"] for t in timeline["timeline"]] == ["open"]
    # The signature: raw 64 bytes over manifest.json, by the key the cloud serves.
    signature = zf.read("manifest.sig")
    assert len(signature) == 64
    key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(key, Ed25519PublicKey)
    key.verify(signature, manifest_bytes)  # raises if it does not verify
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert served["public_key"] == base64.b64encode(raw).decode()
    assert served["fingerprint"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert manifest["signing_key"] == {"algorithm": "Ed25519", "public_key": served["public_key"],
                                       "fingerprint": served["fingerprint"]}
    # The export is audited with who, when and which package.
    assert [(e["actor"], e["detail"]["manifest_sha256"], e["detail"]["files"]) for e in entries] \
        == [("user:police-a", hashlib.sha256(manifest_bytes).hexdigest(), 4)]
    del admin

    # The command line checks it with the served key, offline.
    package, key_file = tmp_path / "package.zip", tmp_path / "evidence-key.pem"
    package.write_bytes(body)
    key_file.write_text(pem)
    code, out = _verify(capsys, package, "--public-key", str(key_file))
    assert code == 0, out
    assert "VERIFIED" in out
    assert served["fingerprint"] in out
    for name in listed:
        assert name in out


async def test_the_public_key_is_made_once_and_kept_across_restarts(
    database_url: str, tmp_path: Path
) -> None:
    keys = []
    for _ in range(2):
        async with running_cloud(_config(database_url, tmp_path)) as cloud, \
                aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{cloud.http_port}/api/evidence/public-key") as res:
            keys.append((await res.json())["public_key"])
    assert keys[0] == keys[1]


async def test_out_of_scope_is_404_and_audited_family_may_not_export(
    database_url: str, tmp_path: Path
) -> None:
    async with running_cloud(_config(database_url, tmp_path)) as cloud, \
            aiohttp.ClientSession() as http:
        world = await _world(cloud, tmp_path)
        alert_id = world["alert"]["id"]
        police_b = await Client.login(http, cloud, "police-b")
        theirs = await _download(police_b, alert_id)
        missing = await _download(police_b, "01NOSUCHALERT00000000000000")
        assert theirs[:2] == missing[:2] == (404, b'{"error": "no such alert"}')
        for user in ("worker-a", "admin"):
            assert (await _download(await Client.login(http, cloud, user), alert_id))[0] == 200
        family = await _download(await Client.login(http, cloud, "family-a"), alert_id)
        assert family[0] == 403
        assert json.loads(family[1]) == {"error": "a family user may not export evidence packages"}
        assert cloud.store is not None
        denied = await audit.entries(cloud.store.engine, action="alert_denied", target=alert_id)
        assert [(e["actor"], e["detail"]) for e in denied] == [
            ("user:police-b", {"action": "evidence_package"})]
        exported = await audit.entries(cloud.store.engine, action="evidence_package",
                                       target=alert_id)
        assert sorted(e["actor"] for e in exported) == ["user:admin", "user:worker-a"]


async def test_a_missing_or_damaged_blob_is_named_not_packed(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_cloud(_config(database_url, tmp_path)) as cloud, \
            aiohttp.ClientSession() as http:
        world = await _world(cloud, tmp_path)
        assert cloud.evidence is not None
        damaged = cloud.evidence.path(world["clip_sha"])
        damaged.write_bytes(_one_byte(world["clip"], 100))  # a disk that flipped a bit
        cloud.evidence.path(world["snap_sha"]).unlink()  # a blob lost by hand
        police = await Client.login(http, cloud, "police-a")
        status, body, _ = await _download(police, world["alert"]["id"])
    assert status == 200
    zf = zipfile.ZipFile(io.BytesIO(body))
    assert sorted(zf.namelist()) == ["alert.json", "manifest.json", "manifest.sig",
                                     "timeline.json"]
    manifest = json.loads(zf.read("manifest.json"))
    assert sorted((u["sha256"], u["reason"]) for u in manifest["unavailable"]) == sorted([
        (world["clip_sha"], "damaged"), (world["snap_sha"], "missing")])
    package = tmp_path / "p.zip"
    package.write_bytes(body)
    code, out = _verify(capsys, package)
    assert code == 0, out  # the package is true to what it says; it says what is missing
    assert f"{world['clip_sha']}: damaged" in out
    assert f"{world['snap_sha']}: missing" in out


# --- tampering ---------------------------------------------------------------------------------


def _flip_in_place(package: Path, name: str, offset: int = 0) -> Path:
    """A copy of `package` with one byte of the stored bytes of entry `name` changed in place
    (the zip's own CRC-32 then disagrees, as after a careless edit)."""
    data = bytearray(package.read_bytes())
    info = zipfile.ZipFile(package).getinfo(name)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:
                                                    info.header_offset + 30])
    at = info.header_offset + 30 + name_len + extra_len + offset
    data[at] ^= 0x01
    out = package.with_name(f"flip-{name.replace('/', '_')}.zip")
    out.write_bytes(bytes(data))
    return out


def _rezip(package: Path, tag: str, change: dict[str, bytes | None]) -> Path:
    """A copy of `package` rebuilt with entries replaced, added or (None) removed, each with a
    correct CRC: what a careful forger would make."""
    out = package.with_name(f"rezip-{tag}.zip")
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename in change:
                continue
            dst.writestr(info, src.read(info.filename))
        for name, data in change.items():
            if data is not None:
                dst.writestr(name, data)
    return out


def _one_byte(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


async def test_verify_names_what_was_changed_added_or_removed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_cloud(_config(f"sqlite+aiosqlite:///{tmp_path}/c.sqlite", tmp_path)) \
            as cloud, aiohttp.ClientSession() as http:
        world = await _world(cloud, tmp_path)
        police = await Client.login(http, cloud, "police-a")
        status, body, _ = await _download(police, world["alert"]["id"])
        async with http.get(f"{police.base}/api/evidence/public-key?format=pem") as res:
            pem = await res.text()
    assert status == 200
    package, key_file = tmp_path / "package.zip", tmp_path / "key.pem"
    package.write_bytes(body)
    key_file.write_text(pem)
    trusted = ("--public-key", str(key_file))
    clip = f"clips/{world['clip_sha']}.mp4"
    snap = f"snapshots/{world['snap_sha']}.jpg"
    src = zipfile.ZipFile(package)
    manifest, signature = src.read("manifest.json"), src.read("manifest.sig")
    alert_json = src.read("alert.json")
    changed_alert = alert_json.replace(b'"high"', b'"higg"', 1)
    assert changed_alert != alert_json
    clip_bytes = src.read(clip)
    at = len(clip_bytes) // 2

    code, out = _verify(capsys, package, *trusted)
    assert code == 0, out

    # Each case: the package, and what the report must say of it.
    cases: list[tuple[str, Path, list[str]]] = [
        ("a byte of the clip, in place", _flip_in_place(package, clip, at), [
            f"FAIL {clip}: sha256 expected {world['clip_sha']}, actual "
            f"{hashlib.sha256(_one_byte(clip_bytes, at)).hexdigest()}",
            f"{clip}: changed inside the zip (its CRC-32 does not match)"]),
        ("a byte of the clip, re-zipped", _rezip(package, "clip", {
            clip: _one_byte(clip_bytes, at)}), [
            f"FAIL {clip}: sha256 expected {world['clip_sha']}, actual "
            f"{hashlib.sha256(_one_byte(clip_bytes, at)).hexdigest()}"]),
        ("a byte of alert.json", _rezip(package, "alert", {"alert.json": changed_alert}), [
            "FAIL alert.json: sha256 expected "
            f"{hashlib.sha256(alert_json).hexdigest()}, actual "
            f"{hashlib.sha256(changed_alert).hexdigest()}"]),
        ("a byte of the manifest", _rezip(package, "manifest", {
            "manifest.json": manifest.replace(b"police-a", b"police-b", 1)}), [
            "FAIL manifest.json / manifest.sig: the signature does not verify"]),
        ("a byte of the manifest, in place", _flip_in_place(package, "manifest.json", 10), [
            "manifest.json: changed inside the zip"]),
        ("a byte of the signature", _rezip(package, "sig", {
            "manifest.sig": _one_byte(signature, 5)}), [
            "FAIL manifest.json / manifest.sig: the signature does not verify"]),
        ("a byte of the signature, in place", _flip_in_place(package, "manifest.sig", 5), [
            "manifest.sig: changed inside the zip",
            "FAIL manifest.json / manifest.sig: the signature does not verify"]),
        ("a file added", _rezip(package, "added", {"notes.txt": b"added later"}), [
            "FAIL notes.txt: in the zip but not in the manifest"]),
        ("a file removed", _rezip(package, "removed", {snap: None}), [
            f"FAIL {snap}: in the manifest but not in the zip"]),
        ("a second copy of a name", _rezip(package, "twice", {}), []),
    ]
    # A zip may hold one name twice; a reader picks one of them. Refused, named.
    with zipfile.ZipFile(cases[-1][1], "a") as twice, pytest.warns(UserWarning, match="Duplicate name"):
        twice.writestr("alert.json", alert_json)
    cases[-1] = (cases[-1][0], cases[-1][1], ["FAIL alert.json: in the zip twice"])
    for what, tampered, expected in cases:
        code, out = _verify(capsys, tampered, *trusted)
        assert code == 1, (what, out)
        assert "NOT VERIFIED" in out, (what, out)
        for line in expected:
            assert line in out, (what, line, out)

    # Another key than the one trusted: the signature fails, both fingerprints are named.
    other = tmp_path / "other.pem"
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    code, out = _verify(capsys, package, "--public-key", str(other))
    assert code == 1, out
    assert "the signature does not verify" in out
    # Without a key: the embedded one proves integrity, not origin, and says so.
    code, out = _verify(capsys, package)
    assert code == 0, out
    assert "integrity, not origin" in out
    # Not a zip at all.
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    code, out = _verify(capsys, junk)
    assert code == 1
    assert "not a readable zip" in out


async def _can_unshare() -> bool:
    """A network namespace of its own needs root (or user namespaces); without, the command
    still runs, only the proof that it needs no network is missing."""
    if shutil.which("unshare") is None:
        return False
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--net", "true", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    return await proc.wait() == 0


async def test_the_command_verifies_offline_in_its_own_process(tmp_path: Path) -> None:
    """The installed entry point, run without any network (its own network namespace)."""
    async with running_cloud(_config(f"sqlite+aiosqlite:///{tmp_path}/c.sqlite", tmp_path)) \
            as cloud, aiohttp.ClientSession() as http:
        world = await _world(cloud, tmp_path)
        police = await Client.login(http, cloud, "police-a")
        status, body, _ = await _download(police, world["alert"]["id"])
        async with http.get(f"{police.base}/api/evidence/public-key") as res:
            served = await res.json()
    assert status == 200
    package, key_file = tmp_path / "package.zip", tmp_path / "key.json"
    package.write_bytes(body)
    key_file.write_text(json.dumps(served))  # the served JSON itself is a usable key file
    prefix = ["unshare", "--net"] if await _can_unshare() else []
    proc = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "shouwang", "evidence", "verify", str(package),
        "--public-key", str(key_file), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    assert b"VERIFIED" in out
    # openssl agrees: the signature is a plain Ed25519 signature over manifest.json's bytes.
    zf = zipfile.ZipFile(package)
    (tmp_path / "manifest.json").write_bytes(zf.read("manifest.json"))
    (tmp_path / "manifest.sig").write_bytes(zf.read("manifest.sig"))
    (tmp_path / "key.pem").write_text(served["pem"])
    proc = await asyncio.create_subprocess_exec(
        "openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "key.pem"),
        "-rawin", "-in", str(tmp_path / "manifest.json"), "-sigfile",
        str(tmp_path / "manifest.sig"), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    assert b"Signature Verified Successfully" in out


async def test_a_throws_marked_pictures_are_named_for_what_they_are_not_snapshots(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A thrown object's package: the plain snapshot and clip as sent, the marked snapshot,
    the launch crop and the marked clip named as drawn on by the camera (a court must not
    take a drawn line for something the camera saw)."""
    async with running_cloud(_config(database_url, tmp_path)) as cloud, \
            aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_throw(cloud)
        clip = await h264_clip(tmp_path / "clip.mp4")
        picture = await jpeg_snapshot(tmp_path / "snapshot.jpg")
        sent = {}
        for kind, data, content_type in (
                ("snapshot", picture, "image/jpeg"), ("marked", picture + b"\0", "image/jpeg"),
                ("launch", picture + b"\0\0", "image/jpeg"), ("clip", clip, "video/mp4"),
                ("marked_clip", clip + b"\0", "video/mp4")):
            sent[kind] = await attach(cloud, alert, data, content_type, device="cam-facade",
                                      kind=kind)
        police = await Client.login(http, cloud, "police-a")
        status, body, _ = await _download(police, alert["id"])
        assert status == 200, body[:200]
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(body)).read("manifest.json"))
    listed = {f["sha256"]: f for f in manifest["files"] if "sha256" in f and "device" in f}
    named = {kind: (listed[sha]["kind"], listed[sha]["name"].split("/")[0],
                    listed[sha]["description"].split(":")[0]) for kind, sha in sent.items()}
    assert named == {
        "snapshot": ("snapshot", "snapshots", "snapshot"),
        "marked": ("marked", "marked", "marked snapshot"),
        "launch": ("launch", "marked", "launch crop"),
        "clip": ("clip", "clips", "clip"),
        "marked_clip": ("marked_clip", "marked", "marked clip"),
    }
    package = tmp_path / "throw.zip"
    package.write_bytes(body)
    code, out = _verify(capsys, package)
    assert code == 0, out
    assert f"marked/{sent['launch']}.jpg: sha256" in out
    assert "(launch crop: the launch area at the first sighting" in out
