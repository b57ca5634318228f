"""The family page on a phone-sized screen: only its own elder, live."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import log_in
from tests.conftest import api_config, running_cloud
from tests.integration.people import HOME_A, HOME_B, PASSWORD, add_alert, add_people

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def test_the_family_page_shows_only_its_elder_live(
    browser: Browser, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_cloud(api_config(sqlite_url)) as cloud:
        await add_people(cloud)  # family-a watches r-a1, family-b watches r-b1
        old = await add_alert(cloud, location=HOME_A, type="fall", severity="high")
        assert cloud.store is not None
        await cloud.store.transition(old["id"], "resolved", actor="user:admin")
        await add_alert(cloud, location=HOME_B, resident="r-b1")  # the neighbour's

        context = await browser.new_context(viewport={"width": 390, "height": 800},
                                            is_mobile=True, has_touch=True)
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{cloud.http_port}/family/")
        await log_in(page, "family-a", PASSWORD)
        elder = page.locator("#elders article")
        await expect(elder).to_have_count(1)
        await expect(elder).to_have_attribute("data-resident", "r-a1")
        await expect(elder.locator(".status")).to_have_text("平安")
        await expect(page.locator("#alerts li")).to_have_count(1)
        await expect(page.locator("#alerts li")).to_have_attribute("data-id", old["id"])

        # Live, through the cloud's change feed: her father's button, then the neighbour's.
        sos = await add_alert(cloud, location=HOME_A)
        await expect(page.locator("#alerts li").first).to_have_attribute("data-id", sos["id"])
        await expect(elder.locator(".status")).to_have_text("需要关注")
        await expect(elder).to_contain_text("一键求助")
        # The neighbour's family sees theirs: by then it has gone out to every screen it may.
        other = await (await browser.new_context(viewport={"width": 390, "height": 800})).new_page()
        await other.goto(f"http://127.0.0.1:{cloud.http_port}/family/")
        await log_in(other, "family-b", PASSWORD)
        await expect(other.locator("#alerts li")).to_have_count(1)
        neighbour = await add_alert(cloud, location=HOME_B, resident="r-b1")
        await expect(other.locator("#alerts li").first).to_have_attribute("data-id", neighbour["id"])

        # "我知道了" from far away is recorded as seen; the case stays open for responders.
        await page.click(f"#alerts li[data-id='{sos['id']}'] button.ack")
        item = page.locator(f"#alerts li[data-id='{sos['id']}']")
        await expect(item).to_have_attribute("data-seen", "family-a")
        await expect(item).to_have_attribute("data-state", "open")
        await expect(item.locator(".seen")).to_contain_text("网格员和民警仍会")
        await expect(item.locator("button.ack")).to_have_count(0)
        await expect(page.locator("#alerts li")).to_have_count(2)
        assert await page.locator(f"#alerts li[data-id='{neighbour['id']}']").count() == 0
        timeline = (await cloud.store.get_alert(sos["id"]))["timeline"]
        assert [(t["to_state"], t["actor"], t["note"]) for t in timeline][-1] == (
            "open", "user:family-a", "seen")

        await page.select_option("#lang", "en")
        await expect(elder.locator(".status")).to_have_text("Needs attention")
        await context.close()
        await other.context.close()
