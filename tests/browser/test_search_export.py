"""A duty officer finds an elder's alerts by name and date and exports them for the shift
report (issue 15, "Search and history")."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import log_in
from tests.conftest import api_config, running_cloud
from tests.integration.people import HOME_A, PASSWORD, add_alert, add_people
from tests.integration.test_people_api import seed

pytestmark = [pytest.mark.integration, pytest.mark.browser]
DAY = 86_400_000


async def test_search_by_name_narrow_by_date_and_export(
    browser: Browser, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_cloud(api_config(sqlite_url)) as cloud:
        await add_people(cloud)
        await seed(cloud, tmp_path)
        t0 = 1_795_000_000_000  # 2026-11-18
        wang = [await add_alert(cloud, ts=t0 + n * DAY, resident="r-a1") for n in range(3)]
        await add_alert(cloud, ts=t0, location=HOME_A, resident="r-x", type="fall")
        context = await browser.new_context(viewport={"width": 1440, "height": 900},
                                            accept_downloads=True, timezone_id="Asia/Shanghai")
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{cloud.http_port}/")
        await log_in(page, "police-a", PASSWORD)
        rows = page.locator("#alerts tbody tr")
        await expect(rows).to_have_count(4)
        await page.fill("#f-q", "王大爷")
        await expect(rows).to_have_count(3)
        await page.fill("#f-from", "2026-11-19")
        await page.locator("#f-from").dispatch_event("change")
        await expect(rows).to_have_count(2)
        await page.fill("#f-to", "2026-11-19")
        await page.locator("#f-to").dispatch_event("change")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_have_attribute("data-id", wang[1]["id"])

        async with page.expect_download() as info:
            await page.click("#export")
        download = await info.value
        saved = Path(await download.path())
        text = await asyncio.to_thread(saved.read_text, encoding="utf-8-sig")
        [row] = list(csv.DictReader(io.StringIO(text)))
        assert (row["id"], row["resident"], row["type"]) == (wang[1]["id"], "王大爷", "一键求助")
        assert row["time"].endswith("+08:00")  # the officer's own time zone
        await context.close()
