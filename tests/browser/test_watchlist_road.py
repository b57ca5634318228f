"""A watchlist match from the gate camera, checked by the station's officer in Debian's Chromium.

The whole road, nothing inserted by hand: the officer enrols a person on the police list
through the API with one photo (`obama.jpg`); the cloud sends the gateway its list; the RTSP
gate camera shows the person in another photo (`obama2.jpg`); the camera worker raises one
`watchlist_hit` with the track's best crops. On the board the officer sees it waiting to be
checked, opens it, sees the photo the person was enrolled with (loaded from the cloud, not the
placeholder) beside the crops from the camera, and confirms it with a note.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from edge.config import EdgeConfig
from shouwang.services import Mosquitto
from simulators.camera import CameraSimulator, CameraSpec
from tests.browser.conftest import log_in
from tests.conftest import eventually
from tests.face_scene import gate_clip
from tests.integration.people import PASSWORD
from tests.integration.test_watchlists import b64, keyed, photo
from tests.scenarios.site import community
from tests.video.test_face_road import GATE, watchlist_alerts, with_face_camera

pytestmark = [pytest.mark.integration, pytest.mark.browser]

LOADED = """(selector) => [...document.querySelectorAll(selector)]
    .every((i) => i.complete && i.naturalWidth > 0)"""


async def test_the_officer_confirms_a_gate_match_beside_the_enrolled_photo(
    browser: Browser, make_broker: Callable[[str], Mosquitto], tmp_path: Path,
    camera_sim: Callable[..., CameraSimulator],
) -> None:
    clip = await asyncio.to_thread(gate_clip, tmp_path / "gate.mp4", [("obama2", 1.0, 4.0)])
    sim = camera_sim([CameraSpec(id=GATE, kind="file", file=clip)])
    keyed_edge, keyed_cloud = keyed(tmp_path)
    camera = with_face_camera(sim)

    def change_edge(config: EdgeConfig) -> EdgeConfig:
        return keyed_edge(camera(config))

    async with community(make_broker, tmp_path, evidence=True, change_edge=change_edge,
                         change_cloud=keyed_cloud) as site:
        officer = await site.as_("police-wang")
        reply = await officer.post("/api/watchlists/police/people", {
            "person": "P-0042", "consent": "CF-2026-0099", "photos": [b64(photo("obama"))]})
        assert reply.status == 201, reply.body

        async def one_with_crops() -> dict[str, Any] | None:
            found = await watchlist_alerts(site)
            if len(found) != 1 or site.cloud.evidence is None:
                return None
            pictures = [e for e in await site.cloud.evidence.for_alert(found[0]["id"])
                        if e["content_type"] == "image/jpeg"]
            return found[0] if len(pictures) >= 2 else None

        alert = await eventually(one_with_crops, timeout=180)

        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{site.cloud.http_port}/")
        await log_in(page, "police-wang", PASSWORD)
        row = page.locator(f"#alerts tbody tr[data-id='{alert['id']}']")
        await expect(row.locator("td.state")).to_have_text("待核实", timeout=30_000)
        await row.click()
        match = page.locator("#detail .match")
        await expect(match).to_contain_text("P-0042")
        # The enrolled photo, from the cloud's sealed copy, beside the camera's crops.
        await expect(match.locator("img.reference")).to_have_count(1)
        await expect(match.locator(".no-reference")).to_have_count(0)
        await expect(match.locator("figure.crop img")).not_to_have_count(0)
        await page.wait_for_function(LOADED, arg="#detail .match img", timeout=30_000)
        await page.fill("#note", "本人，已通知巡逻")
        await page.click("#detail .do-confirm")
        await expect(match).to_contain_text("police-wang")
        await expect(page.locator("#detail ol.timeline")).to_contain_text("核实：是本人")
        confirmed = (await officer.get(f"/api/alerts/{alert['id']}")).body
        assert confirmed["confirmed"]["by"] == "police-wang"
        await context.close()
