"""A face enrolled through the cloud API is recognised at the gate: API → downlink → camera worker.

The station's officer enrols a person on the police list with one photo (`obama.jpg`); the
cloud sends the gateway its list on `site/{site}/down/watchlist`; the camera worker reloads
the sealed store and, when the person walks past in another photo (`obama2.jpg`), raises one
`watchlist_hit` for the id the officer entered. Nothing was enrolled on the gateway itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from cloud.config import CloudConfig
from cloud.watchlist_store import CommunityList
from edge.config import EdgeConfig
from edge.video.face.store import WatchlistStore
from shouwang.services import Mosquitto
from simulators.camera import CameraSimulator, CameraSpec
from tests.conftest import eventually
from tests.face_scene import gate_clip
from tests.integration.test_watchlists import b64, keyed, photo
from tests.scenarios.site import COMMUNITY, Site, community
from tests.video.test_face_road import GATE, watchlist_alerts, with_face_camera

pytestmark = pytest.mark.integration


@asynccontextmanager
async def officer_enrols_at_the_gate(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path,
    camera_sim: Callable[..., CameraSimulator], walkers: list[tuple[str, float, float]],
    *, user: str = "police-wang", list_name: str = "police",
    lists: dict[str, CommunityList] | None = None,
) -> AsyncIterator[tuple[Site, dict[str, Any]]]:
    """A community whose gate camera loops `walkers` (tests/face_scene.py), with the cloud's
    watchlist keys (and its own `lists`); the station's officer (or `user`) enrols P-0042 on
    the police list (or `list_name`) with `obama.jpg` through the API. Yields the site and
    the enrolment as the API answered it."""
    clip = await asyncio.to_thread(gate_clip, tmp_path / "gate.mp4", walkers)
    sim = camera_sim([CameraSpec(id=GATE, kind="file", file=clip)])
    keyed_edge, keyed_cloud = keyed(tmp_path)
    camera = with_face_camera(sim)

    def change_edge(config: EdgeConfig) -> EdgeConfig:
        return keyed_edge(camera(config))

    def change_cloud(config: CloudConfig) -> CloudConfig:
        config = keyed_cloud(config)
        assert config.watchlists is not None
        return config.model_copy(update={"watchlists": config.watchlists.model_copy(
            update={"lists": lists or {}})})

    async with community(make_broker, tmp_path, evidence=True, change_edge=change_edge,
                         change_cloud=change_cloud) as site:
        assert WatchlistStore(site.edge.config.data_dir).load() == []
        officer = await site.as_(user)
        reply = await officer.post(f"/api/watchlists/{list_name}/people", {
            "person": "P-0042", "consent": "CF-2026-0099", "photos": [b64(photo("obama"))]})
        assert reply.status == 201, reply.body
        yield site, reply.body


async def test_a_face_enrolled_through_the_cloud_is_one_watchlist_hit_at_the_gate(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path,
    camera_sim: Callable[..., CameraSimulator],
) -> None:
    async with officer_enrols_at_the_gate(make_broker, tmp_path, camera_sim,
                                          [("obama2", 1.0, 4.0), ("biden", 5.0, 8.0)]) as (
            site, enrolment):
        async def one() -> dict[str, Any] | None:
            found = await watchlist_alerts(site)
            return found[0] if len(found) == 1 else None

        alert = await eventually(one, timeout=120)
        why = alert["detail"]["why"]["data"]
        assert (why["person"], why["watchlist"]) == ("P-0042", "police")
        [held] = WatchlistStore(site.edge.config.data_dir).load()
        assert (held.origin, held.id) == ("cloud", enrolment["id"])


async def test_a_community_list_declared_only_in_the_cloud_matches_at_the_gate(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path,
    camera_sim: Callable[..., CameraSimulator],
) -> None:
    """The list's tier travels in the signed message: the gateway has no `lists.yaml` naming
    `no_entry`, yet matches the person its community's worker enrolled on it."""
    no_entry = CommunityList(description="禁止入内（法院禁令）", retention_days=14,
                             community=COMMUNITY, threshold=0.62, margin=0.15, hits=3,
                             cooldown_s=900)
    async with officer_enrols_at_the_gate(
            make_broker, tmp_path, camera_sim, [("obama2", 1.0, 4.0), ("biden", 5.0, 8.0)],
            user="worker-li", list_name="no_entry", lists={"no_entry": no_entry}) as (
            site, _):
        assert not (site.edge.config.data_dir / "face" / "lists.yaml").exists()

        async def one() -> dict[str, Any] | None:
            found = await watchlist_alerts(site)
            return found[0] if len(found) == 1 else None

        alert = await eventually(one, timeout=120)
        why = alert["detail"]["why"]["data"]
        assert (why["person"], why["watchlist"]) == ("P-0042", "no_entry")
        listing = await (await site.as_("worker-li")).get("/api/watchlists/no_entry/people")
        assert [(s["site"], s["refused"]) for s in listing.body["sites"]] == [
            (site.edge.config.site, None)]
