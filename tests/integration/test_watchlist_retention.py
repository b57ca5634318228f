"""Watchlist data is kept for its list's retention, then deleted, each deletion audited (issue 16,
item 4): on the gateway, enrolments past their `until` leave the sealed file; in the cloud, a
match's evidence (crops, snapshot, clip) goes when its list's retention has passed (missing
elder 30 days, police 90). Both run by themselves in the daemons, on the injected clock."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
import orjson
import pytest
from sqlalchemy import select

from cloud.access import audit
from cloud.config import CloudConfig
from cloud.evidence import EvidenceConfig, EvidenceStore
from cloud.store import Store
from cloud.watchlist_retention import EvidenceRetention, RetentionConfig
from cloud.watchlist_store import (
    WatchlistsConfig,
    cloud_keys,
    latest,
    site_versions,
    watchlist_people,
)
from cloud.watchlist_store import enrol as enrol_row
from edge.daemon import EdgeDaemon
from edge.video.face.store import WatchlistStore
from shouwang.clock import ManualClock
from shouwang.services import Mosquitto
from tests.conftest import api_config, edge_config, eventually, running_cloud
from tests.evidence_media import attach, h264_clip, jpeg_snapshot
from tests.integration.people import HOME_A, Client, add_alert, add_people
from tests.integration.test_watchlist_confirm import add_hit
from tests.integration.test_watchlists import ELDER, enrol, gateway_people, keyed, photo
from tests.scenarios.site import community

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000


async def test_a_matchs_evidence_is_deleted_at_its_lists_retention_and_each_deletion_audited(
    database_url: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    config = api_config(database_url, evidence={"dir": str(tmp_path / "blobs")},
                        watchlist_retention={"poll_s": 0.05})
    async with running_cloud(config, clock=clock) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        assert cloud.evidence is not None
        elder = await add_hit(cloud, watchlist="missing_elder")
        suspect = await add_hit(cloud, watchlist="police", person="P-1")
        sos = await add_alert(cloud, location=HOME_A)
        crop = await attach(cloud, elder, await jpeg_snapshot(tmp_path / "c.jpg", "112x112"),
                            "image/jpeg", device=elder["device"])
        snapshot = await jpeg_snapshot(tmp_path / "s.jpg", "640x360")
        snap = await attach(cloud, elder, snapshot, "image/jpeg", device=elder["device"])
        clip = await attach(cloud, elder, await h264_clip(tmp_path / "v.mp4", seconds=1),
                            "video/mp4", device=elder["device"])
        # The same picture is also another alert's evidence: that one keeps it.
        await attach(cloud, sos, snapshot, "image/jpeg")
        police_crop = await attach(cloud, suspect,
                                   await jpeg_snapshot(tmp_path / "p.jpg", "100x120"),
                                   "image/jpeg", device=suspect["device"])
        async def admin() -> Client:  # a session lasts hours; this clock jumps months
            return await Client.login(http, cloud, "admin")

        async def evidence_of(alert_id: str) -> list[str]:
            reply = await (await admin()).get(f"/api/alerts/{alert_id}")
            assert reply.status == 200, reply.body
            return [e["sha256"] for e in reply.body["evidence"]]

        async def deletions(alert_id: str) -> list[tuple[str, str]]:
            reply = await (await admin()).get(
                f"/api/audit?action=evidence_deleted&target={alert_id}")
            return sorted((e["actor"], e["detail"]["sha256"]) for e in reply.body["entries"])

        assert cloud.retention is not None
        clock.set(elder["received_ms"] + 29 * DAY_MS)
        await cloud.retention.round()
        assert sorted(await evidence_of(elder["id"])) == sorted([crop, snap, clip])
        # Past 30 days: the loop deletes the missing elder's evidence by itself.
        clock.set(elder["received_ms"] + 31 * DAY_MS)

        async def elder_gone() -> bool:
            return await evidence_of(elder["id"]) == []

        await eventually(elder_gone)
        assert not cloud.evidence.path(crop).exists()
        assert not cloud.evidence.path(clip).exists()
        assert cloud.evidence.path(snap).exists()  # still the other alert's
        assert await evidence_of(sos["id"]) == [snap]
        assert await deletions(elder["id"]) == sorted(
            ("system:retention", h) for h in (crop, snap, clip))
        entry = (await (await admin()).get(
            f"/api/audit?action=evidence_deleted&target={elder['id']}")).body["entries"][0]
        assert entry["detail"]["list"] == "missing_elder"
        assert entry["detail"]["retention_days"] == 30
        # The police list keeps its match's evidence 90 days.
        assert await evidence_of(suspect["id"]) == [police_crop]
        clock.set(suspect["received_ms"] + 91 * DAY_MS)

        async def suspect_gone() -> bool:
            return await evidence_of(suspect["id"]) == []

        await eventually(suspect_gone)
        assert not cloud.evidence.path(police_crop).exists()
        assert await deletions(suspect["id"]) == [("system:retention", police_crop)]
        # Each deletion is audited once, however many rounds ran since.
        await cloud.retention.round()
        assert len(await deletions(elder["id"])) == 3
        # The alerts themselves stay: the case record, ids and score only.
        assert (await (await admin()).get(f"/api/alerts/{elder['id']}")).status == 200


async def test_the_gateway_removes_enrolments_past_their_until_and_audits_each(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    clock = ManualClock()
    config = edge_config(make_broker("edge"), make_broker("cloud"), tmp_path / "edge")
    store = WatchlistStore(config.data_dir)
    start = dt.datetime.fromtimestamp(clock.now_ms() / 1000, dt.UTC)
    descriptor = np.full((1, 192), 1 / np.sqrt(192))
    for person, list_name in (("r-1", "missing_elder"), ("P-0042", "police")):
        store.enrol(person=person, list_name=list_name, consent="CF-2026-0042",
                    entered_by="grid-worker-3", photos=["ab" * 32], embeddings=descriptor,
                    model="mobilefacenet", now=start)

    def enrolled() -> list[str]:
        return sorted(e.person for e in store.load())

    daemon = EdgeDaemon(config, clock=clock)
    await daemon.start()
    try:
        checks = daemon.face_expiry.checks
        clock.advance(29 * DAY_MS)
        await eventually(lambda: daemon.face_expiry.checks > checks)
        assert enrolled() == ["P-0042", "r-1"]
        clock.advance(2 * DAY_MS)  # the missing elder's 30 days are over
        await eventually(lambda: enrolled() == ["P-0042"])
        clock.advance(60 * DAY_MS)  # and the police list's 90
        await eventually(lambda: enrolled() == [])
    finally:
        await daemon.stop()
    lines = [orjson.loads(line) for line in
             (await asyncio.to_thread(store.audit_path.read_bytes)).splitlines()]
    expired = [(x["action"], x["person"], x["list"], x["by"]) for x in lines
               if x["action"] == "expire"]
    assert expired == [("expire", "r-1", "missing_elder", "retention"),
                       ("expire", "P-0042", "police", "retention")]
    # The audit line says when the retention ran out, on the gateway's (injected) clock.
    assert [x["at"][:10] for x in lines if x["action"] == "expire"] == [
        (start + dt.timedelta(days=31)).date().isoformat(),
        (start + dt.timedelta(days=91)).date().isoformat()]


async def test_the_clouds_enrolment_is_deleted_at_its_until_and_the_gateway_told(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    """The cloud's own copy (row, sealed descriptors and reference photo) goes at `until`,
    audited, and the site's version moves so the gateway gets its list without the person
    (the gateway's own clock is not moved here: it is the cloud's message that removes her)."""
    clock = ManualClock()
    edge, cloud = keyed(tmp_path)

    def retained(c: CloudConfig) -> CloudConfig:
        return cloud(c).model_copy(update={"watchlist_retention": RetentionConfig(poll_s=0.05)})

    async with community(make_broker, tmp_path, change_edge=edge, change_cloud=retained,
                         cloud_clock=clock) as site:
        assert site.cloud.store is not None
        engine = site.cloud.store.engine
        reply = await enrol(site, "daughter-r1", "missing_elder", ELDER, [photo("obama")])
        assert reply.status == 201, reply.body
        reply = await enrol(site, "police-wang", "police", "P-0042", [photo("biden")])
        assert reply.status == 201, reply.body
        assert await eventually(lambda: gateway_people(site) == [
            ("P-0042", "police"), (ELDER, "missing_elder")])
        version = (await site_versions(site.cloud.store))[site.edge.config.site][1]

        async def rows() -> list[str]:
            async with engine.connect() as conn:
                return sorted((await conn.execute(select(watchlist_people.c.person))).scalars())

        clock.advance(29 * DAY_MS)
        assert site.cloud.retention is not None
        await site.cloud.retention.round()
        assert await rows() == ["P-0042", ELDER]
        clock.advance(2 * DAY_MS)  # the missing elder's 30 days are over

        async def only_police() -> bool:
            return await rows() == ["P-0042"]

        await eventually(only_police)
        assert await eventually(lambda: gateway_people(site) == [("P-0042", "police")])
        after = (await site_versions(site.cloud.store))[site.edge.config.site][1]
        assert after > version
        # Audited once, by the retention, with the consent reference and the list's days.
        await site.cloud.retention.round()
        expired = await audit.entries(engine, action="watchlist_expire")
        assert [(e["actor"], e["target"]) for e in expired] == [
            ("system:retention", f"missing_elder:{ELDER}")]
        assert expired[0]["detail"]["consent"] == "CF-2026-0042"
        assert expired[0]["detail"]["retention_days"] == 30
        # The police list keeps its own 90 days.
        clock.advance(60 * DAY_MS)

        async def none_left() -> bool:
            return await rows() == []

        await eventually(none_left)
        assert await eventually(lambda: gateway_people(site) == [])


async def test_two_workers_expire_an_enrolment_once(database_url: str, tmp_path: Path) -> None:
    """Every worker with alert duties runs the round: on SQLite and PostgreSQL the row goes
    once, with one change and one audit row, however many rounds race for it."""
    clock = ManualClock()
    keys = cloud_keys(WatchlistsConfig(key_file=tmp_path / "k" / "watchlist.key",
                                       signing_key_file=tmp_path / "k" / "signing.pem"))
    store = await Store.connect(database_url)
    try:
        now = clock.now_ms()
        for person, days in (("r-1", 30), ("P-1", 90)):
            row = {"id": person + "-id", "list": "missing_elder" if days == 30 else "police",
                   "person": person, "scope": "d/s/c", "consent": "CF-1", "entered_by": "u",
                   "entered_ms": now, "until_ms": now + days * DAY_MS, "model": "m",
                   "photo_hashes": [], "photo_type": "image/jpeg"}
            await enrol_row(store, keys, row, b"photo", [[0.5] * 192], remote=None)
        before = await latest(store)
        workers = [EvidenceRetention(store, EvidenceStore(EvidenceConfig(dir=tmp_path / "b"),
                                                          store), clock, RetentionConfig())
                   for _ in range(3)]
        clock.advance(30 * DAY_MS)
        counts = await asyncio.gather(*(w.enrolments_round() for w in workers))
        assert sorted(counts) == [0, 0, 1]
        assert await latest(store) == before + 1
        expired = await audit.entries(store.engine, action="watchlist_expire")
        assert [e["target"] for e in expired] == ["missing_elder:r-1"]
        async with store.engine.connect() as conn:
            left = (await conn.execute(select(watchlist_people.c.person))).scalars().all()
        assert left == ["P-1"]
    finally:
        await store.close()
