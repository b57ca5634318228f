"""A community's own watchlist through the cloud API (issue 16: "community-defined lists"): its
workers and admins enrol on it, nobody else; it goes to the community's gates; its retention is
its own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import update

from cloud.config import CloudConfig
from cloud.schema import sites
from cloud.watchlist_store import CommunityList
from shouwang.config import ConfigError, load_yaml
from shouwang.services import Mosquitto
from tests.conftest import eventually
from tests.integration.test_watchlists import (
    as_,
    delete,
    enrol,
    gateway_people,
    keyed,
    photo,
)
from tests.scenarios.site import COMMUNITY, GRID, STATION, community

pytestmark = pytest.mark.integration
LIST = "no_entry"  # e.g. people a court barred from the estate
DAYS = 14
TIER = {"threshold": 0.62, "margin": 0.15, "hits": 3, "cooldown_s": 900}


async def test_a_community_list_is_enrolled_by_its_workers_and_reaches_its_gates(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    edge, keys = keyed(tmp_path)

    def cloud(c: CloudConfig) -> CloudConfig:
        c = keys(c)
        assert c.watchlists is not None
        lists = {LIST: CommunityList(description="禁止入内（法院禁令）", retention_days=DAYS,
                                     community=COMMUNITY, **TIER)}
        return c.model_copy(update={"watchlists": c.watchlists.model_copy(
            update={"lists": lists})})

    async with community(make_broker, tmp_path, change_edge=edge, change_cloud=cloud) as site:
        assert site.cloud.access is not None
        elsewhere = STATION + "/another-community"
        await site.cloud.access.add_user("worker-other", "correct horse battery", "worker",
                                         locations=[elsewhere + "/grid-1"])
        good = [photo("biden")]
        # Not the police, not a family, not a worker of another community.
        for user in ("police-wang", "daughter-r1", "worker-other"):
            reply = await enrol(site, user, LIST, "V-1", good)
            assert reply.status == 403, (user, reply.body)
        # Not beyond the community, even by one of its workers.
        reply = await enrol(site, "worker-li", LIST, "V-1", good, scope=elsewhere)
        assert reply.status == 403, reply.body
        reply = await enrol(site, "worker-li", LIST, "V-1", good, consent=None)
        assert reply.status == 400, reply.body
        # The community's grid worker: the whole community's gates watch, for its 14 days.
        reply = await enrol(site, "worker-li", LIST, "V-1", good)
        assert reply.status == 201, reply.body
        assert reply.body["scope"] == COMMUNITY
        assert reply.body["until_ms"] - reply.body["entered_ms"] == DAYS * 86_400_000
        assert await eventually(lambda: gateway_people(site) == [("V-1", LIST)])
        # An admin enrols too, on a part of the community (one grid's gates).
        reply = await enrol(site, "test-admin", LIST, "V-2", [photo("obama")], scope=GRID)
        assert reply.status == 201, reply.body
        assert reply.body["scope"] == GRID
        assert await eventually(lambda: gateway_people(site) == [("V-1", LIST), ("V-2", LIST)])
        # Seen by the community's workers and admins, as absent by anyone else; the gate
        # matches the list by the tier sent with it (`refused` would say why not).
        listing = await (await as_(site, "worker-li")).get(f"/api/watchlists/{LIST}/people")
        assert listing.status == 200, listing.body
        assert [(g["site"], g["refused"]) for g in listing.body["sites"]] == [
            (site.edge.config.site, None)]
        assert listing.body["retention_days"] == DAYS
        assert listing.body["description"] == "禁止入内（法院禁令）"
        assert [p["person"] for p in listing.body["people"]] == ["V-1", "V-2"]
        for user in ("police-wang", "worker-other"):
            got = await (await as_(site, user)).get(f"/api/watchlists/{LIST}/people")
            assert got.body["people"] == [], user
        assert await delete(site, "worker-other", f"/api/watchlists/{LIST}/people/V-1") == 404
        assert await delete(site, "police-wang", f"/api/watchlists/{LIST}/people/V-1") == 404
        # Its workers remove; the gates hear of it.
        assert await delete(site, "worker-li", f"/api/watchlists/{LIST}/people/V-1") == 204
        assert await eventually(lambda: gateway_people(site) == [("V-2", LIST)])
        # A list the cloud was not told of is still no list.
        reply = await enrol(site, "worker-li", "no_such_list", "V-3", good)
        assert reply.status == 404, reply.body
        assert LIST in reply.body["error"]
        # A gateway that could not match it says so in its report, and the API shows why
        # (once the gateway's own report of the removal is in, so as not to race it).
        async def acked() -> bool:
            got = await (await as_(site, "worker-li")).get(f"/api/watchlists/{LIST}/people")
            return all(g["acked_version"] == g["version"] for g in got.body["sites"])

        assert await eventually(acked)
        async with site.cloud.store.engine.begin() as conn:
            await conn.execute(update(sites).where(sites.c.id == site.edge.config.site).values(
                last_health={"type": "gateway", "watchlist": 1,
                             "watchlist_refused": {LIST: "no tier"}}))
        listing = await (await as_(site, "worker-li")).get(f"/api/watchlists/{LIST}/people")
        assert [g["refused"] for g in listing.body["sites"]] == ["no tier"]
        # Its match evidence is kept the list's own days, not the unknown-list default.
        assert site.cloud.retention is not None
        assert site.cloud.retention.days(LIST) == DAYS


def test_a_community_list_cannot_take_a_built_in_name_or_a_bad_one(tmp_path: Path) -> None:
    base = {"broker": {}, "watchlists": {
        "key_file": str(tmp_path / "k"), "signing_key_file": str(tmp_path / "s")}}
    for name in ("police", "No Entry", ""):
        bad = {**base, "watchlists": {**base["watchlists"], "lists": {name: {
            "description": "x", "retention_days": 7, "community": "d/s/c", **TIER}}}}
        with pytest.raises((ConfigError, ValueError)):
            CloudConfig.model_validate(bad)


def test_a_community_list_must_declare_its_tier(tmp_path: Path) -> None:
    """The gateways match a community list by the tier the cloud sends with it: a list
    without one is a start-up error naming the key, not a list that silently matches nobody."""
    path = tmp_path / "cloud.yaml"

    def refused(tier: dict[str, Any]) -> str:
        path.write_text(orjson.dumps({"broker": {}, "watchlists": {
            "key_file": str(tmp_path / "k"), "signing_key_file": str(tmp_path / "s"),
            "lists": {LIST: {"description": "x", "retention_days": 7, "community": "d/s/c",
                             **tier}}}}).decode())
        with pytest.raises(ConfigError) as err:
            load_yaml(path, CloudConfig)
        return str(err.value)

    for missing in TIER:
        why = refused({k: v for k, v in TIER.items() if k != missing})
        assert f"watchlists.lists.{LIST}.{missing}" in why, why
    why = refused({**TIER, "threshold": 1.5})
    assert f"watchlists.lists.{LIST}.threshold" in why, why
