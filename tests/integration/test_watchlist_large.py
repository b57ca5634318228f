"""A community's watchlist of 5,000 people reaches the gateway through the real brokers (1 MiB
packets at most): in signed parts, applied whole (issue 16; docs/face.md, Limits)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cloud.watchlist_store import site_messages, site_versions, watchlist_changes, watchlist_people
from edge.video.face.store import WatchlistStore
from shouwang.services import Mosquitto
from shouwang.watchlist_message import MAX_MESSAGE_BYTES
from tests.conftest import eventually
from tests.integration.test_watchlists import keyed
from tests.scenarios.site import COMMUNITY, community

pytestmark = pytest.mark.integration
PEOPLE = 5000


async def test_five_thousand_people_reach_the_gateway_in_parts(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    edge, cloud = keyed(tmp_path)
    async with community(make_broker, tmp_path, change_edge=edge, change_cloud=cloud) as site:
        store, keys = site.cloud.store, site.cloud.watchlist_keys
        assert store is not None
        assert keys is not None
        rng = np.random.default_rng(5000)
        rows = []
        for i in range(PEOPLE):  # as enrolments through the API leave them, without photos
            row_id = str(uuid.uuid4())
            vector = [round(float(v), 6) for v in rng.standard_normal(192) / np.sqrt(192)]
            rows.append({
                "id": row_id, "list": "police", "person": f"P-{i:05d}", "scope": COMMUNITY,
                "consent": f"CF-2026-{i:05d}", "entered_by": "police-wang",
                "entered_ms": 1, "until_ms": 4_000_000_000_000, "model": "mobilefacenet",
                "photo_hashes": [f"{i:064x}"], "photo_type": "image/jpeg",
                "embeddings": keys.seal_embeddings([vector], row_id),
                "photo": keys.seal_photo(b"not kept here", row_id)})
        async with store.engine.begin() as conn:
            await conn.execute(watchlist_people.insert(), rows)
            await conn.execute(watchlist_changes.insert().values(
                ts=1, action="enrol", list="police", person="P-00000", scope=COMMUNITY))
        site.cloud._watchlists_changed()
        me = site.edge.config.site
        version = (await site_versions(store))[me][1]
        assert await eventually(lambda: site.edge.watchlists.held == version, timeout=60)
        held = WatchlistStore(site.edge.config.data_dir).load()
        assert sorted(e.person for e in held) == [f"P-{i:05d}" for i in range(PEOPLE)]
        assert site.edge.metrics.rejected_count("watchlist_bad_format") == 0
        # It went in parts, each within the broker's packet limit, applied as one.
        assert site.edge.watchlists.applied == 1
        parts = await site_messages(store, keys, me, COMMUNITY, version, site.cloud.clock.now_ms())
        assert parts is not None
        assert len(parts) == 7
        assert max(len(p) for p in parts) <= MAX_MESSAGE_BYTES
