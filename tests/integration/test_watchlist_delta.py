"""A change to a gateway's watchlist goes as the change, not the whole list (issue 16), through
the real brokers: a delta on top of the version the gateway acknowledged; a gateway that holds
another version asks for, and gets, the whole list."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from shouwang.services import Mosquitto
from tests.conftest import eventually
from tests.integration.test_watchlists import as_, delete, enrol, gateway_people, keyed, photo
from tests.scenarios.site import Site, community

pytestmark = pytest.mark.integration


async def acked(site: Site) -> bool:
    got = await (await as_(site, "police-wang")).get("/api/watchlists/police/people")
    return bool(got.body["sites"]) and all(
        g["acked_version"] == g["version"] for g in got.body["sites"])


async def test_changes_go_as_deltas_on_top_of_the_acknowledged_version(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    edge, cloud = keyed(tmp_path)
    async with community(make_broker, tmp_path, change_edge=edge, change_cloud=cloud) as site:
        gateway = site.edge.watchlists
        reply = await enrol(site, "police-wang", "police", "P-1", [photo("obama")])
        assert reply.status == 201, reply.body
        assert await eventually(lambda: gateway_people(site) == [("P-1", "police")])
        assert await eventually(lambda: acked(site))
        assert gateway.deltas == 0  # it held nothing: the whole list
        reply = await enrol(site, "police-wang", "police", "P-2", [photo("biden")])
        assert reply.status == 201, reply.body
        assert await eventually(
            lambda: gateway_people(site) == [("P-1", "police"), ("P-2", "police")])
        assert await eventually(lambda: acked(site))
        assert gateway.deltas == 1
        assert await delete(site, "police-wang", "/api/watchlists/police/people/P-1") == 204
        assert await eventually(lambda: gateway_people(site) == [("P-2", "police")])
        assert gateway.deltas == 2
        assert site.edge.metrics.rejected_count("watchlist_delta_base") == 0
