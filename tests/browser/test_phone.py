"""A grid worker on a phone (390×844): the board is cards, the detail a full screen with large
buttons, nothing scrolls sideways (issue 15, "A worker's phone").

Seen before: the table was 828 px wide at 390 px and 详情 seemed to do nothing because the
panel opened below the board, off-screen.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import log_in
from tests.conftest import api_config, running_cloud
from tests.integration.people import PASSWORD, add_alert, add_people

pytestmark = [pytest.mark.integration, pytest.mark.browser]
PHONE = {"width": 390, "height": 844}
TOUCH_PX = 44  # the smallest comfortable touch target


async def sideways(page: Page) -> int:
    """How far the page scrolls sideways (0: not at all)."""
    extra: int = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    return extra


async def test_a_worker_handles_an_alert_on_a_phone(browser: Browser, sqlite_url: str, tmp_path) -> None:
    async with running_cloud(api_config(sqlite_url)) as cloud:
        await add_people(cloud)
        for n in range(3):
            await add_alert(cloud, type=("sos", "fall", "gas_leak")[n])
        context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{cloud.http_port}/")
        await log_in(page, "worker-a", PASSWORD)
        rows = page.locator("#alerts tbody tr")
        await expect(rows).to_have_count(3)
        assert await sideways(page) == 0
        card = rows.first
        box = await card.bounding_box()
        assert box
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= PHONE["width"]
        # Each card says who, where and who handles it in words, with labels.
        await expect(card.locator("td.handler")).to_have_text("无人处理")
        label = await card.locator("td.handler").evaluate(
            "td => getComputedStyle(td, '::before').content")
        assert "处理人" in label
        ack = card.locator("button.ack")
        assert (await ack.bounding_box() or {"height": 0})["height"] >= TOUCH_PX

        await card.locator("button.detail").click()
        detail = page.locator("#detail")
        await expect(detail).to_be_visible()
        await expect(detail.locator("h2")).to_be_visible()
        shown = await detail.bounding_box()
        assert shown
        assert shown["x"] == 0
        assert shown["y"] == 0
        assert shown["width"] == PHONE["width"]
        assert await sideways(page) == 0
        for button in await detail.locator(".buttons button").all():
            assert (await button.bounding_box() or {"height": 0})["height"] >= TOUCH_PX
        await detail.locator("button.close").click()
        await expect(detail).to_be_hidden()
        assert await sideways(page) == 0
