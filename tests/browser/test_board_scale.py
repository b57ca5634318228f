"""The board with 1,000 open alerts: the first page renders, paging reaches the last alert, the
DOM holds one page. Times are measured in the browser and printed, never asserted."""

from __future__ import annotations

import statistics
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import log_in
from tests.conftest import api_config, running_cloud
from tests.integration.people import HOME_A, HOME_B, PASSWORD, add_alert, add_people

pytestmark = [pytest.mark.integration, pytest.mark.browser]
OPEN_ALERTS = 1000
PAGE_SIZE = 50  # cloud/dashboard/js/board.js
SEVERITIES = ("critical", "high", "medium", "low")


async def shown(page: Page) -> list[str]:
    ids: list[str] = await page.evaluate(
        "[...document.querySelectorAll('#alerts tbody tr')].map(r => r.dataset.id)")
    return ids


async def after_load(page: Page, action: Any) -> dict[str, Any]:
    """Do `action`, wait until the board has rendered what it asked for; its timing."""
    n = await page.evaluate("window.shouwang.board.timings.length")
    await action()
    await page.wait_for_function("n => window.shouwang.board.timings.length > n "
                                 "&& document.body.dataset.board === 'ready'", arg=n)
    timing: dict[str, Any] = await page.evaluate("window.shouwang.board.timings.at(-1)")
    return timing


async def page_through(page: Page) -> tuple[list[str], list[float]]:
    ids, times = await shown(page), []
    while await page.locator("#pager .next").is_enabled():
        timing = await after_load(page, lambda: page.click("#pager .next"))
        times.append(timing["ms"])
        rows = await shown(page)
        assert 0 < len(rows) <= PAGE_SIZE
        ids += rows
    return ids, times


async def test_a_thousand_open_alerts_page_by_page(browser: Browser, sqlite_url: str) -> None:
    async with running_cloud(api_config(sqlite_url)) as cloud:
        await add_people(cloud)
        alerts = [
            await add_alert(cloud, location=f"{HOME_A[:-3]}{100 + i % 40}",
                            severity=SEVERITIES[i % 4], type=("sos", "fall")[i % 2])
            for i in range(OPEN_ALERTS)
        ]
        for _ in range(20):  # another station's: never on this board
            await add_alert(cloud, location=HOME_B, resident="r-b1")
        newest_first = sorted(alerts, key=lambda a: (a["ts"], a["id"]), reverse=True)
        # The board's order (all are open): critical first, then high..., newest first within.
        urgent = [a["id"] for a in sorted(newest_first, key=lambda a: SEVERITIES.index(a["severity"]))]
        critical = [a["id"] for a in newest_first if a["severity"] == "critical"]

        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{cloud.http_port}/")
        await log_in(page, "police-a", PASSWORD)
        await expect(page.locator("#alerts tbody tr")).to_have_count(PAGE_SIZE)
        first: dict[str, Any] = await page.evaluate("window.shouwang.board.timings[0]")
        assert (first["reason"], first["rows"]) == ("initial", PAGE_SIZE)
        assert await shown(page) == urgent[:PAGE_SIZE]
        await expect(page.locator("#pager .where")).to_have_text("第 1 页 · 1–50 条")

        # A live alert on a full first page: on top, the page still 50 rows, the one it
        # pushed off the page first on the next.
        live = await add_alert(cloud, location=HOME_A, severity="critical")
        await expect(page.locator("#alerts tbody tr").first).to_have_attribute("data-id", live["id"])
        assert await shown(page) == [live["id"], *urgent[:PAGE_SIZE - 1]]
        urgent.insert(0, live["id"])
        critical.insert(0, live["id"])

        filtered = await after_load(page, lambda: page.select_option("#f-severity", "critical"))
        assert await page.locator("#alerts tbody tr:not(.sev-critical)").count() == 0
        critical_ids, critical_pages = await page_through(page)
        assert critical_ids == critical

        await after_load(page, lambda: page.select_option("#f-severity", ""))
        all_ids, pages = await page_through(page)
        assert all_ids == urgent  # every open alert of the station, once, in order
        assert len(pages) == OPEN_ALERTS // PAGE_SIZE  # 1,001 alerts: 21 pages
        await expect(page.locator("#pager .where")).to_have_text("第 21 页 · 1001–1001 条")
        back = await after_load(page, lambda: page.click("#pager .prev"))
        assert await shown(page) == urgent[-1 - PAGE_SIZE:-1]
        await context.close()

    print(f"\nboard with {OPEN_ALERTS} open alerts, Chromium, ms (request + render of one page):")
    print(f"  first render after login   {first['ms']:8.1f}")
    print(f"  filter change (critical)   {filtered['ms']:8.1f}")
    print(f"  next page, critical (n={len(critical_pages)})  median {statistics.median(critical_pages):.1f}"
          f"  max {max(critical_pages):.1f}")
    print(f"  next page, all (n={len(pages)})      median {statistics.median(pages):.1f}"
          f"  max {max(pages):.1f}")
    print(f"  previous page              {back['ms']:8.1f}")
