"""A watchlist match in Debian's Chromium: the duty person sees the track's crops beside the
enrolled reference photo (a placeholder while the photo cannot be had), the list in words and
the score, and confirms it; the station's officer rejects another, with the reason."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from cloud.server import CloudServer
from tests.browser.conftest import log_in, screenshots
from tests.browser.test_accessibility import violations
from tests.conftest import api_config, running_cloud
from tests.evidence_media import attach, jpeg_snapshot
from tests.integration.people import PASSWORD, Client, add_people
from tests.integration.test_watchlist_confirm import EXAMPLE, add_hit

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def _board(browser: Browser, url: str, user: str) -> Page:
    page = await (await browser.new_context(viewport={"width": 1400, "height": 1000})).new_page()
    await page.goto(url)
    await log_in(page, user, PASSWORD)
    await expect(page.locator("#alerts tbody tr")).to_have_count(1)
    return page


async def _hit_with_crops(cloud: CloudServer, tmp_path: Path, watchlist: str,
                          person: str) -> dict[str, str]:
    hit = await add_hit(cloud, watchlist=watchlist, person=person)
    for i, size in enumerate(("112x112", "96x120")):
        await attach(cloud, hit, await jpeg_snapshot(tmp_path / f"{watchlist}-{i}.jpg", size),
                     "image/jpeg", device=hit["device"])
    return hit


async def test_the_duty_worker_sees_the_crops_beside_the_reference_and_confirms(
    browser: Browser, sqlite_url: str, tmp_path: Path
) -> None:
    config = api_config(sqlite_url, evidence={"dir": str(tmp_path / "blobs")},
                        escalation={"file": str(EXAMPLE), "poll_s": 60})
    async with running_cloud(config) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        hit = await _hit_with_crops(cloud, tmp_path, "missing_elder", "r-a1")
        page = await _board(browser, f"http://127.0.0.1:{cloud.http_port}/", "worker-a")
        row = page.locator("#alerts tbody tr")
        # On the board: to be checked, and no acknowledging before that.
        await expect(row.locator("td.state")).to_have_text("待核实")
        await expect(row.locator("button.ack")).to_have_count(0)
        await row.click()
        match = page.locator("#detail .match")
        await expect(match).to_contain_text("走失老人")
        await expect(match).to_contain_text("0.71")
        await expect(match).to_contain_text("r-a1")
        # The two crops, loaded, beside the reference: its endpoint is not there yet, so the
        # placeholder says so rather than a broken image.
        crops = match.locator(".compare figure.crop img")
        await expect(crops).to_have_count(2)
        await page.wait_for_function("""() => [...document.querySelectorAll(
            '#detail .match figure.crop img')].every((i) => i.complete && i.naturalWidth > 0)""")
        await expect(match.locator(".no-reference")).to_have_text("参考照片不可用")
        await expect(match.locator("img.reference")).to_have_count(0)
        actions = page.locator("#detail .actions button")
        await expect(actions).to_have_text(["确认是本人", "否认（误报）"])
        assert await violations(page) == []
        await page.locator("#detail").screenshot(
            path=str(screenshots(tmp_path) / "dashboard-watchlist.png"))
        await page.fill("#note", "是她，穿蓝外套")
        await page.click("#detail .do-confirm")
        await expect(match).to_contain_text("worker-a")
        await expect(page.locator("#detail ol.timeline")).to_contain_text("核实：是本人")
        # Now an ordinary case: the worker may acknowledge it.
        await expect(page.locator("#detail .do-ack")).to_be_visible()
        admin = await Client.login(http, cloud, "admin")
        alert = (await admin.get(f"/api/alerts/{hit['id']}")).body
        assert alert["confirmed"]["by"] == "worker-a"
        assert alert["resident"] == "r-a1"


async def test_the_station_officer_rejects_a_false_match_with_the_reason(
    browser: Browser, sqlite_url: str, tmp_path: Path
) -> None:
    config = api_config(sqlite_url, evidence={"dir": str(tmp_path / "blobs")},
                        escalation={"file": str(EXAMPLE), "poll_s": 60})
    async with running_cloud(config) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        hit = await _hit_with_crops(cloud, tmp_path, "police", "P-0042")
        # The grid worker sees the gate but is not the police list's confirmer: no buttons.
        worker = await _board(browser, f"http://127.0.0.1:{cloud.http_port}/", "worker-a")
        await worker.locator("#alerts tbody tr").click()
        await expect(worker.locator("#detail .match")).to_contain_text("公安布控")
        await expect(worker.locator("#detail .actions button")).to_have_count(0)

        page = await _board(browser, f"http://127.0.0.1:{cloud.http_port}/", "police-a")
        await page.locator("#alerts tbody tr").click()
        await expect(page.locator("#detail .match .compare figure.crop img")).to_have_count(2)
        await page.click("#detail .do-reject")  # without a reason: asked for one
        await expect(page.locator("#action-error")).to_contain_text("原因")
        await page.fill("#note", "不是同一人：年龄不符")
        await page.click("#detail .do-reject")
        await expect(page.locator("#detail header .state")).to_have_text("误报")
        await expect(page.locator("#detail ol.timeline")).to_contain_text("不是同一人：年龄不符")
        # The worker's board follows (a closed case leaves the open list), and the count an
        # operator tunes the threshold with has it.
        await expect(worker.locator("#alerts tbody tr")).to_have_count(0)
        admin = await Client.login(http, cloud, "admin")
        counts = (await admin.get("/api/watchlists/false-matches")).body["counts"]
        assert counts == [{"list": "police", "camera": hit["device"], "hits": 1,
                           "confirmed": 0, "false_matches": 1, "awaiting": 0}]
