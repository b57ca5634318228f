"""A duty officer sees a building as 单元 → 楼层 → 户, the households with open alerts and
device problems lit, and goes from one to its alerts (issue 15, "Where")."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import log_in, screenshots
from tests.browser.test_accessibility import violations
from tests.conftest import api_config, running_cloud
from tests.integration.people import PASSWORD, add_alert, add_people
from tests.integration.test_building_view import BUILDING, HOMES, seed_building

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def test_the_building_lights_where_to_go(browser: Browser, sqlite_url: str, tmp_path: Path) -> None:
    async with running_cloud(api_config(sqlite_url)) as cloud:
        await add_people(cloud)
        await seed_building(cloud, tmp_path)
        fall = await add_alert(cloud, location=HOMES[0], type="fall")
        tamper = await add_alert(cloud, location=HOMES[1], type="tamper", severity="medium")
        page = await (await browser.new_context(viewport={"width": 1440, "height": 900})).new_page()
        await page.goto(f"http://127.0.0.1:{cloud.http_port}/")
        await log_in(page, "police-a", PASSWORD)
        await expect(page.locator("#alerts tbody tr")).to_have_count(2)
        # Down the place chips to the building.
        for name in BUILDING.split("/"):
            await page.locator("#places ul.places a", has_text=name).first.click()
        grid = page.locator("#places .building")
        await expect(grid.locator("table.unit")).to_have_count(2)
        await expect(grid.locator(f"a[data-path='{HOMES[0]}']")).to_have_class("home critical")
        await expect(grid.locator(f"a[data-path='{HOMES[1]}']")).to_have_class("home alert")
        await expect(grid.locator(f"a[data-path='{HOMES[2]}']")).to_have_class("home device")
        await expect(grid.locator(f"a[data-path='{HOMES[3]}']")).to_have_class("home")
        await expect(grid.locator("table.unit").first.locator("th").first).to_have_text("楼层 f10")
        assert await violations(page) == []
        await page.screenshot(path=str(screenshots(tmp_path) / "dashboard-building.png"))
        await grid.locator(f"a[data-path='{HOMES[1]}']").click()
        await expect(page.locator("#alerts tbody tr")).to_have_count(1)
        await expect(page.locator("#alerts tbody tr")).to_have_attribute("data-id", tamper["id"])
        await expect(page.locator("#places .building")).to_have_count(0)  # a household: no grid
        assert fall["id"] not in await page.locator("#alerts tbody").inner_html()
