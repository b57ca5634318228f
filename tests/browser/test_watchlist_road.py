"""A watchlist match from the gate camera, checked by the station's officer in Debian's Chromium.

The whole road, nothing inserted by hand: the officer enrols a person on the police list
through the API with one photo (`obama.jpg`); the cloud sends the gateway its list; the RTSP
gate camera shows the person in another photo (`obama2.jpg`); the camera worker raises one
`watchlist_hit` with the track's best crops. On the board the officer sees it waiting to be
checked, opens it, sees the photo the person was enrolled with (loaded from the cloud, not the
placeholder) beside the crops from the camera, and confirms it with a note.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from shouwang.services import Mosquitto
from simulators.camera import CameraSimulator
from tests.browser.conftest import log_in
from tests.conftest import eventually
from tests.integration.people import PASSWORD
from tests.video.test_face_cloud_road import officer_enrols_at_the_gate
from tests.video.test_face_road import watchlist_alerts

pytestmark = [pytest.mark.integration, pytest.mark.browser]

LOADED = """(selector) => [...document.querySelectorAll(selector)]
    .every((i) => i.complete && i.naturalWidth > 0)"""


async def test_the_officer_confirms_a_gate_match_beside_the_enrolled_photo(
    browser: Browser, make_broker: Callable[[str], Mosquitto], tmp_path: Path,
    camera_sim: Callable[..., CameraSimulator],
) -> None:
    async with officer_enrols_at_the_gate(make_broker, tmp_path, camera_sim,
                                          [("obama2", 1.0, 4.0)]) as (site, _):
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
        officer = await site.as_("police-wang")
        confirmed = (await officer.get(f"/api/alerts/{alert['id']}")).body
        assert confirmed["confirmed"]["by"] == "police-wang"
        await context.close()
