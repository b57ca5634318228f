"""Watchlists through the cloud API and down to the gateway (issue 16, items 3 and 4).

A family member enrols their elder on `missing_elder` through the API with a real photo; the
gateway's sealed watchlist file gains the person (opened with the gateway's key, ids checked);
a removal empties it again. Scope and consent refusals, bad photos refused with the reason,
the cloud's copy unreadable without the cloud's key, a gateway away during an enrolment
catching up when it is back, and forged or foreign watchlist messages refused with nothing
applied.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.config import CloudConfig
from cloud.schema import complete_metadata
from cloud.watchlist_store import WatchlistsConfig, cloud_keys, watchlist_people
from edge.config import EdgeConfig
from edge.daemon import EdgeDaemon
from edge.video.face.store import WatchlistError, WatchlistStore
from shouwang.mqtt import MqttClient
from shouwang.protocol import site_down_topic
from shouwang.services import Mosquitto
from shouwang.watchlist_message import fingerprint, sign
from tests import face_photos
from tests.conftest import TEST_ADMIN, TEST_PASSWORD, eventually, unique
from tests.integration.people import Client
from tests.scenarios.site import GRID, STATION, Site, community

pytestmark = pytest.mark.integration
ELDER = "r-1"  # the community's resident (tests/conftest.py), daughter-r1's mother


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def photo(name: str) -> bytes:
    return face_photos.photo(name).read_bytes()


def keyed(tmp_path: Path, database_url: str | None = None) -> tuple[
        Callable[[EdgeConfig], EdgeConfig], Callable[[CloudConfig], CloudConfig]]:
    """The cloud's watchlist keys (made as on its first start) and the gateway told the
    public half of the signing key, as an installer copies it."""
    conf = WatchlistsConfig(key_file=tmp_path / "cloud-keys" / "watchlist.key",
                            signing_key_file=tmp_path / "cloud-keys" / "watchlist-signing.pem")
    keys = cloud_keys(conf)
    public = tmp_path / "watchlist-signing.pub.pem"
    public.write_bytes(keys.public_pem)

    def edge(c: EdgeConfig) -> EdgeConfig:
        return c.model_copy(update={"cloud_watchlist_key": public})

    def cloud(c: CloudConfig) -> CloudConfig:
        return c.model_copy(update={"watchlists": conf,
                                    "database_url": database_url or c.database_url})

    return edge, cloud


async def as_(site: Site, user: str) -> Client:
    if user == TEST_ADMIN and user not in site.clients:
        site.clients[user] = await Client.login(site.http, site.cloud, user, TEST_PASSWORD)
    return await site.as_(user)


def gateway_people(site: Site) -> list[tuple[str, str]] | None:
    try:
        found = WatchlistStore(site.edge.config.data_dir).load()
    except WatchlistError:
        return None
    return sorted((e.person, e.list) for e in found)


async def enrol(site: Site, user: str, list_name: str, person: str, photos: list[bytes],
                consent: str | None = "CF-2026-0042", **extra: Any) -> Any:
    body: dict[str, Any] = {"person": person, "photos": [b64(p) for p in photos], **extra}
    if consent is not None:
        body["consent"] = consent
    client = await as_(site, user)
    return await client.post(f"/api/watchlists/{list_name}/people", body)


async def delete(site: Site, user: str, path: str) -> int:
    client = await site.as_(user)
    # Like every state-changing request, with a JSON object (docs/security.md).
    async with client.http.delete(client.base + path, json={}, headers=client.headers) as res:
        return res.status


async def test_enrolment_reaches_the_gateway_and_removal_too(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, database_url: str
) -> None:
    edge, cloud = keyed(tmp_path, database_url)
    async with community(make_broker, tmp_path, change_edge=edge, change_cloud=cloud) as site:
        reply = await enrol(site, "daughter-r1", "missing_elder", ELDER, [photo("obama")])
        assert reply.status == 201, reply.body
        entry = reply.body
        assert entry["person"] == ELDER
        assert entry["list"] == "missing_elder"
        assert entry["consent"] == "CF-2026-0042"
        assert entry["entered_by"] == "daughter-r1"
        assert entry["until_ms"] - entry["entered_ms"] == 30 * 86400 * 1000
        again = await enrol(site, "worker-li", "missing_elder", ELDER, [photo("obama2")])
        assert again.status == 409, again.body
        # The gateway's sealed file, opened with the gateway's own key, holds the person.
        assert await eventually(lambda: gateway_people(site) == [(ELDER, "missing_elder")])
        held = WatchlistStore(site.edge.config.data_dir).load()
        assert held[0].id == entry["id"]
        assert len(held[0].embeddings) == 1
        assert len(held[0].embeddings[0]) == 192
        assert held[0].origin == "cloud"
        # ... and the gateway said so: the cloud knows which version it applied.
        listing = await (await site.as_("worker-li")).get("/api/watchlists/missing_elder/people")
        assert listing.status == 200
        assert [p["person"] for p in listing.body["people"]] == [ELDER]
        version = listing.body["version"]

        async def acknowledged() -> bool:
            got = await (await as_(site, "test-admin")).get("/api/watchlists/missing_elder/people")
            return bool(got.body["sites"] and got.body["sites"][0]["acked_version"] == version)

        assert await eventually(acknowledged)
        # The reference photo, for the worker who confirms a hit, and nobody out of scope.
        path = f"/api/watchlists/missing_elder/people/{ELDER}/photo"
        worker = await site.as_("worker-li")
        async with worker.http.get(worker.base + path, headers=worker.headers) as res:
            assert res.status == 200
            assert res.content_type == "image/jpeg"
            assert await res.read() == photo("obama")
        police = await site.as_("police-wang")
        assert (await police.get(path)).status == 404
        assert (await police.get("/api/watchlists/missing_elder/people")).body["people"] == []
        # A police enrolment in the station's jurisdiction goes to the gate too.
        reply = await enrol(site, "police-wang", "police", "P-0042", [photo("biden")])
        assert reply.status == 201, reply.body
        assert await eventually(lambda: gateway_people(site) == [
            ("P-0042", "police"), (ELDER, "missing_elder")])
        # Removed: gone from the gateway.
        assert await delete(site, "daughter-r1", f"/api/watchlists/missing_elder/people/{ELDER}") == 204
        assert await eventually(lambda: gateway_people(site) == [("P-0042", "police")])
        assert await delete(site, "daughter-r1", f"/api/watchlists/missing_elder/people/{ELDER}") == 404
        # Every enrolment, removal and photo view is in the audit log.
        admin = await as_(site, "test-admin")
        actions = [(e["action"], e["actor"]) for e in
                   (await admin.get("/api/audit?limit=50")).body["entries"]
                   if e["action"].startswith("watchlist_")]
        assert ("watchlist_enrol", "user:daughter-r1") in actions
        assert ("watchlist_enrol", "user:police-wang") in actions
        assert ("watchlist_remove", "user:daughter-r1") in actions
        assert ("watchlist_photo_read", "user:worker-li") in actions
        assert ("watchlist_photo_denied", "user:police-wang") in actions


async def test_roles_scope_consent_and_bad_photos(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    edge, cloud = keyed(tmp_path)
    async with community(make_broker, tmp_path, change_edge=edge, change_cloud=cloud) as site:
        assert site.cloud.access is not None
        await site.cloud.access.add_user("worker-far", "correct horse battery", "worker",
                                         locations=[GRID + "-far"])
        await site.cloud.access.add_user("daughter-r9", "correct horse battery", "family",
                                         residents=["r-9"])
        good = [photo("obama")]
        refusals = {
            ("police-wang", "missing_elder", ELDER): 403,  # police enter their own list only
            ("daughter-r1", "police", "P-1"): 403,  # family: their own elder, nothing else
            ("daughter-r9", "missing_elder", ELDER): 403,  # someone else's mother
            ("worker-far", "missing_elder", ELDER): 403,  # a resident of another grid
            ("test-admin", "no_such_list", ELDER): 404,
        }
        for (user, list_name, person), status in refusals.items():
            reply = await enrol(site, user, list_name, person, good)
            assert reply.status == status, (user, list_name, reply.body)
        reply = await enrol(site, "worker-li", "missing_elder", ELDER, good, consent=None)
        assert reply.status == 400
        assert "consent" in reply.body["error"]
        reply = await enrol(site, "worker-li", "missing_elder", ELDER, good, consent="  ")
        assert reply.status == 400
        assert "consent" in reply.body["error"]

        obama = cv2.imread(str(face_photos.photo("obama")))
        tiny = cv2.resize(obama, None, fx=0.12, fy=0.12)
        blurred = cv2.GaussianBlur(obama, (0, 0), 6)
        huge = np.zeros((6000, 8000), np.uint8)  # 48 megapixels of nothing, a small PNG
        bad = {
            "not an image": b"%PDF-1.4 this is no photo",
            "no face found": cv2.imencode(".png", np.full((400, 400, 3), 128, np.uint8))[1],
            "faces; a reference photo must show one person only": photo("t1"),
            "too small": cv2.imencode(".jpg", tiny)[1],
            "blurred": cv2.imencode(".jpg", blurred)[1],
            "a huge image": cv2.imencode(".png", huge)[1],
        }
        for reason, data in bad.items():
            reply = await enrol(site, "worker-li", "missing_elder", ELDER,
                                [photo("obama"), bytes(data)])
            assert reply.status == 400, (reason, reply.body)
            assert reason in reply.body["error"], reply.body
            assert "photos[1]" in reply.body["error"], reply.body
        # Nothing of the refused was kept; a good one by the grid's worker is.
        listing = await (await as_(site, "test-admin")).get("/api/watchlists/missing_elder/people")
        assert listing.body["people"] == []
        reply = await enrol(site, "worker-li", "missing_elder", ELDER, good)
        assert reply.status == 201, reply.body
        assert await eventually(lambda: gateway_people(site) == [(ELDER, "missing_elder")])
        # A worker of another grid of the community sees her (she is watched for at their
        # gate, and they may be on duty there) but does not remove her; police do neither.
        far = await as_(site, "worker-far")
        listed = await far.get("/api/watchlists/missing_elder/people")
        assert [p["person"] for p in listed.body["people"]] == [ELDER]
        path = f"/api/watchlists/missing_elder/people/{ELDER}"
        assert await delete(site, "worker-far", path) == 403
        assert await delete(site, "police-wang", path) == 404
        assert await delete(site, "daughter-r9", path) == 404
        assert gateway_people(site) == [(ELDER, "missing_elder")]
        # Police scope a police enrolment to their own jurisdiction, not another's.
        reply = await enrol(site, "police-wang", "police", "P-7", [photo("biden")],
                            scope="other-district")
        assert reply.status == 403, reply.body
        assert STATION  # the station's scope is the default for its officer


def sqlite_files(where: Path) -> bytes:
    return b"".join(f.read_bytes() for f in where.glob("cloud.sqlite*"))  # -wal, -shm too


async def everything(engine: AsyncEngine) -> bytes:
    """Every value of every table of the cloud's database, as bytes."""
    out = bytearray()
    async with engine.connect() as conn:
        for table in complete_metadata().sorted_tables:
            for row in (await conn.execute(select(table))).all():
                for value in row:
                    out += value if isinstance(value, bytes) else repr(value).encode()
                    out += b"\n"
    return bytes(out)


async def test_cloud_copy_unreadable_without_the_key(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, database_url: str
) -> None:
    edge, cloud = keyed(tmp_path, database_url)
    async with community(make_broker, tmp_path, change_edge=edge, change_cloud=cloud) as site:
        original = photo("obama")
        reply = await enrol(site, "daughter-r1", "missing_elder", ELDER, [original])
        assert reply.status == 201, reply.body
        assert await eventually(lambda: gateway_people(site) == [(ELDER, "missing_elder")])
        held = WatchlistStore(site.edge.config.data_dir).load()[0]
        descriptor = np.asarray(held.embeddings[0], np.float32)
        assert site.cloud.store is not None
        engine = site.cloud.store.engine
        async with engine.connect() as conn:
            (sealed_embeddings, sealed_photo), = (await conn.execute(select(
                watchlist_people.c.embeddings, watchlist_people.c.photo))).all()
        dump = await everything(engine)
        if database_url.startswith("sqlite"):  # and the file itself, free pages and all
            dump += sqlite_files(tmp_path)
        lowered = dump.lower()
        # Neither the photo nor the descriptor (as float32, float64 or text) is in the rows,
        # nor anywhere in the database.
        for needle in (original[:64], original[2000:2064], descriptor.tobytes()[:32],
                       descriptor.astype(np.float64).tobytes()[:32],
                       orjson.dumps([held.embeddings])[:40]):  # the plaintext sealed
            assert needle not in sealed_photo
            assert needle not in sealed_embeddings
            assert needle not in dump
            assert needle.hex().encode() not in lowered
        assert not sealed_photo.startswith(b"\xff\xd8")  # no JPEG
        # With the key file they open; with another key they do not.
        keys = cloud_keys(site.cloud_config.watchlists)  # type: ignore[arg-type]
        assert keys.open_photo(sealed_photo, reply.body["id"]) == original
        other = tmp_path / "other.key"
        other.write_bytes(b"k" * 32)
        other.chmod(0o600)
        stranger = cloud_keys(WatchlistsConfig(
            key_file=other, signing_key_file=tmp_path / "cloud-keys" / "watchlist-signing.pem"))
        with pytest.raises(ValueError, match="does not open"):
            stranger.open_photo(sealed_photo, reply.body["id"])
        # The key is nowhere in the database.
        key = (tmp_path / "cloud-keys" / "watchlist.key").read_bytes()
        assert key not in dump
        assert key.hex().encode() not in dump
        assert b64(key).encode() not in dump


async def test_a_gateway_away_gets_the_current_version_when_back(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    edge, cloud = keyed(tmp_path)
    async with community(make_broker, tmp_path, change_edge=edge, change_cloud=cloud) as site:
        config = site.edge.config
        await site.edge.stop()
        reply = await enrol(site, "daughter-r1", "missing_elder", ELDER, [photo("obama")])
        assert reply.status == 201, reply.body
        reply = await enrol(site, "police-wang", "police", "P-0042", [photo("biden")])
        assert reply.status == 201, reply.body
        assert await delete(site, "police-wang", "/api/watchlists/police/people/P-0042") == 204
        # A broker restart in between (its sessions persist, as deployed). The cloud must have
        # seen it go before its `wait_connected` means anything: until then its clients still
        # count themselves up, and a gateway report published before the cloud's data stream
        # subscribed again is dropped with Mosquitto 2.0's shared subscriptions (it comes again
        # only after the edge's `ack_timeout_s`, docs/decisions.md).
        site.cloud_broker.stop()
        assert await eventually(lambda: not any(c.connected for c in site.cloud.streams),
                                timeout=30)
        site.cloud_broker.start()
        await site.cloud.wait_connected(20)
        site.edge = EdgeDaemon(config)
        await site.edge.start()
        try:
            await site.edge.cloud_mqtt.wait_connected(20)
            assert await eventually(lambda: gateway_people(site) == [(ELDER, "missing_elder")],
                                    timeout=30)
        finally:
            await site.edge.stop()
        # A gateway replaced (its disk wiped): nothing waits for it at the broker, the cloud
        # sent everything long ago; its first report, holding version 0, brings the list.
        for f in (config.data_dir / "face").iterdir():
            f.unlink()
        site.edge = EdgeDaemon(config)
        await site.edge.start()
        try:
            await site.edge.cloud_mqtt.wait_connected(20)
            assert await eventually(lambda: gateway_people(site) == [(ELDER, "missing_elder")],
                                    timeout=30)
        finally:
            await site.edge.stop()


async def test_forged_stale_and_foreign_messages_are_refused(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    edge, cloud = keyed(tmp_path)
    async with community(make_broker, tmp_path, change_edge=edge, change_cloud=cloud) as site:
        reply = await enrol(site, "daughter-r1", "missing_elder", ELDER, [photo("obama")])
        assert reply.status == 201, reply.body
        assert await eventually(lambda: gateway_people(site) == [(ELDER, "missing_elder")])
        store = WatchlistStore(site.edge.config.data_dir)
        before = store.path.read_bytes()
        keys = cloud_keys(site.cloud_config.watchlists)  # type: ignore[arg-type]
        me = site.edge.config.site
        good: dict[str, Any] = {"v": 1, "site": me, "version": 10**6, "entries": []}
        forger = keys.__class__(keys.aead_key, _other_signer())
        cases: dict[str, bytes] = {
            "not_json": b"\x00not json",
            # Signed by a key the gateway does not trust; or naming the cloud's key, forged.
            "key_untrusted": forger.signed(good),
            "bad_signature": sign({**good, "kid": fingerprint(keys.public_pem)},
                                  forger.signer),
            "unsupported_version": keys.signed({**good, "v": 99}),  # a future format
            "wrong_site": keys.signed({**good, "site": "another-site"}),
            "stale_version": keys.signed({**good, "version": 0}),
            "bad_format": keys.signed({**good, "entries": [{"id": "x"}]}),
        }
        # With the cloud's own watchlist account (under SHOUWANG_TEST_BROKER_ACL=1 nobody else
        # may publish there): the signature must stop what the broker lets through.
        client = MqttClient(site.cloud_config.broker_for("watchlist_downlink"),
                            client_id=unique("forger"))
        await client.start()
        try:
            await client.wait_connected(10)
            for reason, payload in cases.items():
                await client.publish(site_down_topic(me, "watchlist"), payload, qos=1)

                def counted(reason: str = reason) -> bool:
                    return site.edge.metrics.rejected_count(f"watchlist_{reason}") >= 1

                assert await eventually(counted), reason
        finally:
            await client.close()
        assert store.path.read_bytes() == before  # nothing half-applied, nothing applied
        assert gateway_people(site) == [(ELDER, "missing_elder")]


def _other_signer() -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()



async def test_a_gateway_without_the_clouds_key_applies_nothing_and_counts_it(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    _, cloud = keyed(tmp_path)  # the cloud keeps watchlists; the gateway was not given its key
    async with community(make_broker, tmp_path, change_cloud=cloud) as site:
        reply = await enrol(site, "daughter-r1", "missing_elder", ELDER, [photo("obama")])
        assert reply.status == 201, reply.body
        assert await eventually(
            lambda: site.edge.metrics.rejected_count("watchlist_no_key") >= 1)
        assert not WatchlistStore(site.edge.config.data_dir).path.exists()
