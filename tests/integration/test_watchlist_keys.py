"""Rotating the cloud's watchlist keys (`shouwang cloud watchlist-keys`, docs/face.md): every
enrolment re-sealed under a new sealing key in one transaction, no row ever under a key that
is not on disk whatever step a crash stops it at, a running worker following the rotation, and
the signing key rotated with an overlap the gateways accept."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from cloud.access import audit
from cloud.store import Store
from cloud.watchlist_keys import RotationError, retired, retired_path, rotate_sealing
from cloud.watchlist_store import (
    CloudKeys,
    WatchlistsConfig,
    cloud_keys,
    enrol,
    load_signer,
    staged,
    watchlist_people,
)
from edge.video.face.downlink import CloudWatchlists
from edge.video.face.store import WatchlistStore
from shouwang.cli import main
from shouwang.metrics import Metrics
from shouwang.watchlist_message import fingerprint, sign

pytestmark = pytest.mark.integration
VECTOR = [0.125] * 192


def conf(tmp_path: Path) -> WatchlistsConfig:
    return WatchlistsConfig(key_file=tmp_path / "keys" / "watchlist.key",
                            signing_key_file=tmp_path / "keys" / "watchlist-signing.pem")


@contextlib.asynccontextmanager
async def enrolled(database_url: str, config: WatchlistsConfig,
                   people: int = 3) -> AsyncIterator[tuple[Store, CloudKeys]]:
    store = await Store.connect(database_url)
    keys = cloud_keys(config)  # a running worker's keys, made before any rotation
    try:
        for i in range(people):
            await add(store, keys, f"P-{i}")
        yield store, keys
    finally:
        await store.close()


async def add(store: Store, keys: CloudKeys, person: str) -> None:
    row = {"id": str(uuid.uuid4()), "list": "police", "person": person, "scope": "d1",
           "consent": "CF-1", "entered_by": "police-wang", "entered_ms": 1, "until_ms": 2**50,
           "model": "mobilefacenet", "photo_hashes": ["ab" * 32], "photo_type": "image/jpeg"}
    await enrol(store, keys, row, f"photo of {person}".encode(), [VECTOR], remote=None)


async def opened_with(store: Store, keys: CloudKeys) -> dict[str, bytes] | None:
    """Every row's photo opened with `keys`, or None when any does not open."""
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(watchlist_people.c.id, watchlist_people.c.person,
                                          watchlist_people.c.photo,
                                          watchlist_people.c.embeddings))).all()
    out = {}
    for row_id, person, photo, embeddings in rows:
        try:
            out[person] = keys.open_photo(photo, row_id)
            assert keys.open_embeddings(embeddings, row_id) == [VECTOR]
        except ValueError:
            return None
    return out


def only(key: bytes, config: WatchlistsConfig) -> CloudKeys:
    """Keys that hold this sealing key and nothing else (do not follow the files)."""
    return CloudKeys(key, load_signer(config.signing_key_file))


def photos(*people: str) -> dict[str, bytes]:
    return {p: f"photo of {p}".encode() for p in people}


async def test_rotate_reseals_every_row_and_a_running_worker_follows(
    database_url: str, tmp_path: Path
) -> None:
    config = conf(tmp_path)
    async with enrolled(database_url, config) as (store, worker):
        old = config.key_file.read_bytes()
        cloud_yaml = tmp_path / "cloud.yaml"
        cloud_yaml.write_text(yaml.safe_dump({
            "broker": {}, "database_url": database_url,
            "watchlists": {"key_file": str(config.key_file),
                           "signing_key_file": str(config.signing_key_file)}}))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = await asyncio.to_thread(
                main, ["cloud", "watchlist-keys", "--config", str(cloud_yaml), "--rotate"])
        assert code == 0, out.getvalue()
        assert "3 enrolments re-sealed" in out.getvalue()
        new = config.key_file.read_bytes()
        assert new != old
        assert len(new) == 32
        assert not staged(config.key_file).exists()
        assert config.key_file.stat().st_mode & 0o077 == 0
        # Every row opens with the new key alone, none with the old.
        assert await opened_with(store, only(new, config)) == photos("P-0", "P-1", "P-2")
        assert await opened_with(store, only(old, config)) is None
        # A worker started before the rotation reads the rows and seals a new enrolment
        # under the new key (it read the files again), not the retired one.
        assert await opened_with(store, worker) == photos("P-0", "P-1", "P-2")
        await add(store, worker, "P-3")
        assert await opened_with(store, only(new, config)) == photos("P-0", "P-1", "P-2", "P-3")
        entries = await audit.entries(store.engine, action="watchlist_key_rotate")
        assert [e["detail"]["rows"] for e in entries] == [3]
        # The signing key: a new one staged and its public half printed, not yet in use.
        printed = out.getvalue()
        pem = printed[printed.index("-----BEGIN PUBLIC KEY-----"):].encode()
        nxt = load_signer(staged(config.signing_key_file))
        assert pem == nxt.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert worker.public_pem != pem


async def test_a_crash_between_commit_and_key_swap_leaves_every_row_readable(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = conf(tmp_path)
    async with enrolled(database_url, config) as (store, worker):
        old = config.key_file.read_bytes()
        real = Path.replace

        def crash(self: Path, target: Any) -> Any:
            if Path(target) == config.key_file:
                raise OSError("power cut")
            return real(self, target)

        monkeypatch.setattr(Path, "replace", crash)
        with pytest.raises(OSError, match="power cut"):
            await rotate_sealing(store, config)
        monkeypatch.setattr(Path, "replace", real)
        # Committed under the staged key; the key file is still the old one. Nothing is
        # lost: a worker (running, or started now) opens every row with the staged key.
        pending = staged(config.key_file).read_bytes()
        assert config.key_file.read_bytes() == old
        assert await opened_with(store, only(old, config)) is None
        assert await opened_with(store, only(pending, config)) == photos("P-0", "P-1", "P-2")
        assert await opened_with(store, worker) == photos("P-0", "P-1", "P-2")
        assert await opened_with(store, cloud_keys(config)) == photos("P-0", "P-1", "P-2")
        # An enrolment meanwhile is sealed under the staged key: the one that stays.
        await add(store, worker, "P-3")
        assert await opened_with(store, only(pending, config)) is not None
        # Run again: it finishes with the same key.
        assert await rotate_sealing(store, config) == 4
        assert config.key_file.read_bytes() == pending
        assert not staged(config.key_file).exists()
        assert await opened_with(store, only(pending, config)) == photos(
            "P-0", "P-1", "P-2", "P-3")


async def test_a_crash_before_commit_changes_no_row(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = conf(tmp_path)
    async with enrolled(database_url, config) as (store, _):
        old = config.key_file.read_bytes()
        sealed = 0
        real = CloudKeys.seal_photo

        def crash(self: CloudKeys, photo: bytes, entry_id: str, key: Any = None) -> bytes:
            nonlocal sealed
            sealed += 1
            if sealed == 2:  # the second row: the first one's update is in the transaction
                raise RuntimeError("killed")
            return real(self, photo, entry_id, key)

        monkeypatch.setattr(CloudKeys, "seal_photo", crash)
        with pytest.raises(RuntimeError, match="killed"):
            await rotate_sealing(store, config)
        monkeypatch.setattr(CloudKeys, "seal_photo", real)
        assert config.key_file.read_bytes() == old
        assert await opened_with(store, only(old, config)) == photos("P-0", "P-1", "P-2")
        pending = staged(config.key_file).read_bytes()
        assert await rotate_sealing(store, config) == 3
        assert config.key_file.read_bytes() == pending
        assert await opened_with(store, only(pending, config)) == photos("P-0", "P-1", "P-2")
        # A row that opens with neither key stops the rotation with nothing changed.
        async with store.engine.begin() as conn:
            await conn.execute(watchlist_people.update().where(
                watchlist_people.c.person == "P-1").values(photo=b"\0" * 40))
        with pytest.raises(RotationError, match="nothing was re-sealed"):
            await rotate_sealing(store, config)
        assert config.key_file.read_bytes() == pending
        assert await opened_with(store, only(staged(config.key_file).read_bytes(), config)) \
            is None


async def test_signing_key_rolls_over_the_air_and_the_old_one_is_revoked(
    tmp_path: Path
) -> None:
    config = conf(tmp_path)
    worker = cloud_keys(config)
    old_signer = load_signer(config.signing_key_file)
    old_pem = worker.public_pem
    cloud_yaml = tmp_path / "cloud.yaml"
    cloud_yaml.write_text(yaml.safe_dump({
        "broker": {}, "database_url": f"sqlite+aiosqlite:///{tmp_path}/cloud.sqlite",
        "watchlists": {"key_file": str(config.key_file),
                       "signing_key_file": str(config.signing_key_file)}}))
    # Two gateways an installer gave the old public key only; one hears from the cloud while
    # the new key is staged, the other is away all that time.
    installed = tmp_path / "installed.pub.pem"
    installed.write_bytes(old_pem)

    def at(name: str) -> CloudWatchlists:
        return CloudWatchlists(WatchlistStore(tmp_path / name), "s-1", installed,
                               Metrics("edge"))

    def message(version: int) -> bytes:
        return worker.signed({"v": 1, "site": "s-1", "version": version, "entries": []})

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert await asyncio.to_thread(
            main, ["cloud", "watchlist-keys", "--config", str(cloud_yaml), "--rotate"]) == 0
    printed = out.getvalue()
    new_pem = printed[printed.index("-----BEGIN PUBLIC KEY-----"):].encode()
    old_fp, new_fp = fingerprint(old_pem), fingerprint(new_pem)
    # Staged, not in use: signed by the old key, announcing the new one, which the gateway
    # keeps (cloud_keys.json) and reports.
    listening = at("listening")
    assert await listening.handle(message(1))
    assert listening.trusted() == sorted([old_fp, new_fp])
    kept = orjson.loads((tmp_path / "listening" / "face" / "cloud_keys.json").read_bytes())
    assert kept == {"trusted": [new_pem.decode()], "revoked": []}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert await asyncio.to_thread(main, [
            "cloud", "watchlist-keys", "--config", str(cloud_yaml),
            "--activate-signing-key", "--wait", "0"]) == 0
    # The running worker signs with the new key now, revoking the old: the gateway that
    # learnt it takes the message, and trusts the old key no more although its
    # cloud_watchlist_key file still holds it.
    assert worker.public_pem == new_pem
    assert (config.signing_key_file.with_name("watchlist-signing.pub.pem").read_bytes()
            == new_pem)
    listening = at("listening")
    assert await listening.handle(message(2))
    assert listening.held == 2
    assert listening.trusted() == [new_fp]
    forged = sign({"v": 1, "site": "s-1", "version": 3, "entries": [], "kid": old_fp},
                  old_signer)
    assert not await listening.handle(forged)
    assert listening.metrics.rejected_count("watchlist_key_untrusted") == 1
    # The gateway that was away never heard of the new key: refused, counted, its list kept.
    away = at("away")
    assert not await away.handle(message(2))
    assert away.metrics.rejected_count("watchlist_key_untrusted") == 1
    with contextlib.redirect_stdout(io.StringIO()):  # nothing staged any more
        assert await asyncio.to_thread(main, [
            "cloud", "watchlist-keys", "--config", str(cloud_yaml),
            "--activate-signing-key"]) == 1


async def test_a_rotation_keeps_the_old_key_for_the_backups_made_before_it(
    database_url: str, tmp_path: Path
) -> None:
    config = conf(tmp_path)
    async with enrolled(database_url, config) as (store, _):
        first = config.key_file.read_bytes()
        # A database backup made now: the sealed rows as they are.
        async with store.engine.connect() as conn:
            backup = (await conn.execute(select(watchlist_people.c.id,
                                                watchlist_people.c.photo))).all()
        cloud_yaml = tmp_path / "cloud.yaml"
        cloud_yaml.write_text(yaml.safe_dump({
            "broker": {}, "database_url": database_url,
            "watchlists": {"key_file": str(config.key_file),
                           "signing_key_file": str(config.signing_key_file)}}))

        def run(*args: str) -> tuple[int, str]:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main(["cloud", "watchlist-keys", "--config", str(cloud_yaml), *args])
            return code, out.getvalue()

        for _ in range(2):
            code, _out = await asyncio.to_thread(run, "--rotate")
            assert code == 0
        ring = retired_path(config.key_file)
        assert ring.stat().st_mode & 0o077 == 0
        kept = [base64.b64decode(k["key"]) for k in retired(config.key_file)]
        assert kept[0] == first
        assert len(kept) == 2
        assert config.key_file.read_bytes() not in kept
        # The backup opens with the retired key, and only with it.
        old = only(first, config)
        assert sorted(old.open_photo(photo, row_id) for row_id, photo in backup) == sorted(
            photos("P-0", "P-1", "P-2").values())
        now = only(config.key_file.read_bytes(), config)
        with pytest.raises(ValueError, match="does not open"):
            now.open_photo(backup[0][1], backup[0][0])
        code, shown = await asyncio.to_thread(run)
        assert code == 0
        assert shown.count("retired sealing key") == 2
        # Purged once those backups are gone: audited; status shows none.
        code, said = await asyncio.to_thread(run, "--purge-retired")
        assert code == 0
        assert "2 retired sealing key(s) deleted" in said
        assert retired(config.key_file) == []
        entries = await audit.entries(store.engine, action="watchlist_key_purge")
        assert len(entries) == 1
        assert len(entries[0]["detail"]["keys"]) == 2
