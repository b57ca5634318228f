"""The board names every alert type in the user's language and filters by what is raised.

A duty officer chose 燃气泄漏 in the type filter with a critical gas leak open and saw an empty
board: the filter sent `gas`, the detector raised `gas_leak` (issue 15, "One vocabulary").
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import log_in
from tests.conftest import api_config, running_cloud
from tests.integration.people import HOME_A, PASSWORD, add_alert, add_people

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def test_the_type_filter_finds_a_gas_leak_and_types_read_as_words(
    browser: Browser, sqlite_url: str
) -> None:
    async with running_cloud(api_config(sqlite_url)) as cloud:
        await add_people(cloud)
        leak = await add_alert(cloud, location=HOME_A, type="gas_leak")
        await add_alert(cloud, location=HOME_A, type="tamper", severity="high")
        page = await (await browser.new_context(viewport={"width": 1400, "height": 820})).new_page()
        await page.goto(f"http://127.0.0.1:{cloud.http_port}/")
        await log_in(page, "police-a", PASSWORD)
        rows = page.locator("#alerts tbody tr")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(0)).to_contain_text("燃气泄漏")  # critical above high
        await expect(rows.nth(1)).to_contain_text("摄像头被遮挡或移动")
        await page.select_option("#f-type", label="燃气泄漏")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_have_attribute("data-id", leak["id"])
        await page.select_option("#lang", "en")
        await expect(rows.first).to_contain_text("Gas leak")
        await expect(page.locator("#f-type option:checked")).to_have_text("Gas leak")
