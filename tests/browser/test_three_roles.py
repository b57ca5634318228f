"""A duty officer, a grid worker and a daughter, each at a desk (1440×900) and on a phone
(390×844), on one case (issue 15, acceptance): each reads the case right, by text, and no
screen scrolls sideways. The pictures are docs/screenshots/ (SHOUWANG_SCREENSHOTS=1).

Seen before: "who handles it" read `worker-li`, not 李华; the family page had no notes from
the worker and no number to call; a worker could not tell the family what was done.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from playwright.async_api import Browser, Page, expect

from cloud.admin import import_file
from tests.browser.conftest import log_in, screenshots
from tests.conftest import api_config, running_cloud
from tests.integration.people import (
    GRID_A,
    PASSWORD,
    STATION_A,
    Client,
    add_alert,
    add_people,
)
from tests.integration.test_residents_api import seed

pytestmark = [pytest.mark.integration, pytest.mark.browser]
SIZES = {"desk": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}
KEPT = "老人有点糊涂，夜里注意"  # among responders only
SHARED = "已电话联系老人，马上上门"
SHARED_FROM_PAGE = "已到家中，老人无大碍，已扶起"


async def sideways(page: Page) -> int:
    extra: int = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    return extra


async def test_three_roles_at_a_desk_and_on_a_phone(
    browser: Browser, sqlite_url: str, tmp_path: Path
) -> None:
    shots = screenshots(tmp_path) / "screenshots"
    shots.mkdir(exist_ok=True)
    now = int(time.time() * 1000)
    async with running_cloud(api_config(sqlite_url)) as cloud, aiohttp.ClientSession() as http:
        assert cloud.store is not None
        assert cloud.access is not None
        await add_people(cloud)
        await seed(cloud.store, tmp_path)  # r-a1 is 王大爷
        await cloud.access.add_user("worker-li", PASSWORD, "worker", locations=[GRID_A],
                                    display_name="李华")
        await cloud.access.add_user("police-wang", PASSWORD, "police", locations=[STATION_A],
                                    display_name="王警官")
        community = tmp_path / "community.yaml"  # a made-up number, as the demo's
        community.write_text(yaml.safe_dump(
            [{"path": "d1/s1/c-a", "label": "阳光社区", "phone": "100 0000 0110"}],
            allow_unicode=True))
        await import_file(cloud.store, "locations", community, now)
        fall = await add_alert(cloud, ts=now - 4 * 60_000, type="fall")
        await add_alert(cloud, ts=now - 2 * 60_000, type="tamper", severity="medium")
        await add_alert(cloud, ts=now - 60_000, type="battery_low", severity="low")
        worker = await Client.login(http, cloud, "worker-li")
        url = f"/api/alerts/{fall['id']}"
        assert (await worker.post(url + "/ack", {"note": SHARED, "share": True})).status == 200
        assert (await worker.post(url + "/note", {"note": KEPT})).status == 200
        assert (await worker.post(url + "/dispatch", {"worker": "worker-li"})).status == 200

        for size, viewport in SIZES.items():
            phone = size == "phone"

            async def page_for(user: str, path: str = "/",
                               viewport: dict[str, int] = viewport,
                               phone: bool = phone) -> Page:
                context = await browser.new_context(viewport=viewport, is_mobile=phone,
                                                    has_touch=phone)
                page = await context.new_page()
                await page.goto(f"http://127.0.0.1:{cloud.http_port}{path}")
                await log_in(page, user, PASSWORD)
                return page

            # The duty officer: the worker on the fall by name, and the notes among responders.
            police = await page_for("police-wang")
            await expect(police.locator("#user")).to_have_text("王警官 (民警)")
            rows = police.locator("#alerts tbody tr")
            await expect(rows).to_have_count(3)
            row = police.locator(f"#alerts tbody tr[data-id='{fall['id']}']")
            await expect(row.locator("td.handler")).to_have_text("李华")
            assert await sideways(police) == 0
            if not phone:
                await row.locator("button.detail").click()
                detail = police.locator("#detail")
                await expect(detail.locator(".who")).to_contain_text("李华")
                await expect(detail.locator("ol.timeline")).to_contain_text(KEPT)
                await expect(detail.locator("ol.timeline .shared-mark")).to_have_count(1)
                await expect(detail.locator("#share-note")).to_have_count(0)  # police: no
            await police.screenshot(path=str(shots / f"police-{size}.png"))
            assert await sideways(police) == 0
            await police.context.close()

            # The worker: the detail with the note box; at the desk a note shared from it.
            page = await page_for("worker-li")
            row = page.locator(f"#alerts tbody tr[data-id='{fall['id']}']")
            await expect(row.locator("td.handler")).to_have_text("李华")
            await row.locator("button.detail").click()
            detail = page.locator("#detail")
            await expect(detail.locator("ol.timeline")).to_contain_text("操作人 李华")
            await expect(detail.locator("#share-note")).to_have_count(1)
            if not phone:
                await detail.locator("#note").fill(SHARED_FROM_PAGE)
                await detail.locator("#share-note").check()
                await detail.locator("button.do-note").click()
                await expect(detail.locator("ol.timeline li.shared")).to_have_count(2)
                await expect(detail.locator("ol.timeline")).to_contain_text(SHARED_FROM_PAGE)
            else:
                await expect(detail.locator("ol.timeline li.shared")).to_have_count(2)
                for button in await detail.locator(".buttons button").all():
                    assert (await button.bounding_box() or {"height": 0})["height"] >= 44
            assert await sideways(page) == 0
            await page.screenshot(path=str(shots / f"worker-{size}.png"))
            await page.context.close()

            # The daughter: who is on the way by name, what they chose to tell her, the number.
            family = await page_for("family-a", "/family/")
            elder = family.locator("#elders article")
            await expect(elder.locator("h2")).to_have_text("王大爷")
            await expect(elder.locator(".status")).to_have_text("需要关注")
            await expect(elder.locator(".headline")).to_contain_text("跌倒")
            await expect(elder.locator(".handling")).to_contain_text("网格员 李华 已出发 · ")
            notes = elder.locator("ul.notes li")
            await expect(notes).to_have_count(2)
            await expect(notes.first).to_contain_text(f"李华：{SHARED}")
            await expect(notes.nth(1)).to_contain_text(f"李华：{SHARED_FROM_PAGE}")
            await expect(family.locator("body")).not_to_contain_text(KEPT)
            call = elder.locator("a.call")
            await expect(call).to_have_attribute("href", "tel:10000000110")
            await expect(call).to_have_text("致电 阳光社区")
            assert await sideways(family) == 0
            await family.screenshot(path=str(shots / f"family-{size}.png"), full_page=phone)
            await family.select_option("#lang", "en")
            await expect(elder.locator(".handling")).to_contain_text("grid worker 李华 is on the way")
            await expect(call).to_have_text("Call 阳光社区")
            await family.context.close()
