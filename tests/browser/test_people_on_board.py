"""Names, not ids, with one-tap numbers to call (issue 15, "People, for those allowed").

A grid worker sees 王大爷 (老人、独居) on the board and calls him or his daughter from the
detail with one tap; a duty officer sees the name and the first contact only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import log_in
from tests.conftest import api_config, running_cloud
from tests.integration.people import PASSWORD, add_alert, add_people
from tests.integration.test_people_api import seed

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def test_a_worker_reads_names_and_calls_with_one_tap(
    browser: Browser, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_cloud(api_config(sqlite_url)) as cloud:
        await add_people(cloud)
        await seed(cloud, tmp_path)
        await add_alert(cloud, type="fall")
        for user, calls in (("worker-a", 3), ("police-a", 2)):
            page = await (await browser.new_context(
                viewport={"width": 1440, "height": 900})).new_page()
            await page.goto(f"http://127.0.0.1:{cloud.http_port}/")
            await log_in(page, user, PASSWORD)
            row = page.locator("#alerts tbody tr")
            await expect(row.locator("td.who")).to_have_text("王大爷（老人、独居）")
            await row.click()
            detail = page.locator("#detail")
            await expect(detail.locator(".who")).to_contain_text("王大爷")
            links = detail.locator("ul.calls a.tel")
            await expect(links).to_have_count(calls)
            await expect(links.first).to_have_attribute("href", "tel:13800000001")
            await expect(links.nth(1)).to_have_attribute("href", "tel:+8613900000002")
            await expect(links.nth(1)).to_have_text("拨打 王芳 · 女儿")
            if user == "worker-a":
                await expect(detail.locator(".who")).to_contain_text(" 岁")
            else:
                await expect(detail.locator(".who")).not_to_contain_text(" 岁")
            await page.context.close()
