"""Keyboard and screen-reader use of the board, the detail and the family page (issue 15,
"Accessibility"): axe-core (npm `axe-core`, tests/browser/axe, installed by `make test`)
finds no serious or critical violation, and a duty officer can open and acknowledge an alert
with the keyboard alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import log_in
from tests.conftest import api_config, running_cloud
from tests.integration.people import PASSWORD, add_alert, add_people
from tests.integration.test_people_api import seed

pytestmark = [pytest.mark.integration, pytest.mark.browser]
AXE = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"


async def violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings on the page as it is now (WCAG 2 A and AA)."""
    if not AXE.exists():
        pytest.fail("axe-core is missing: run `make browser-tools` (npm ci in tests/browser/axe)")
    await page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = await page.evaluate(
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"] if v["impact"] in ("serious", "critical")
    ]


async def test_no_serious_violations_and_the_board_works_by_keyboard(
    browser: Browser, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_cloud(api_config(sqlite_url)) as cloud:
        await add_people(cloud)
        await seed(cloud, tmp_path)
        fall = await add_alert(cloud, type="fall")
        await add_alert(cloud, type="gas_leak", severity="high", resident="r-x")
        for shown, viewport in ((2, {"width": 1440, "height": 900}),
                                (3, {"width": 390, "height": 844})):
            page = await (await browser.new_context(viewport=viewport)).new_page()
            await page.goto(f"http://127.0.0.1:{cloud.http_port}/")
            await expect(page.locator("#login")).to_be_visible()
            assert await violations(page) == [], ("login", viewport)
            await log_in(page, "worker-a", PASSWORD)
            await expect(page.locator("#alerts tbody tr")).to_have_count(shown)
            assert await violations(page) == [], ("board", viewport)

            # Keyboard only: Tab to the first row's 详情, Enter opens the detail and puts the
            # focus in it; Escape closes it and the focus returns to the row.
            await page.locator("#alerts tbody tr").first.locator("button.detail").focus()
            await page.keyboard.press("Enter")
            detail = page.locator("#detail")
            await expect(detail).to_be_visible()
            await expect(detail).to_be_focused()
            assert await violations(page) == [], ("detail", viewport)
            await page.keyboard.press("Escape")
            await expect(detail).to_be_hidden()
            await expect(page.locator("#alerts tbody tr").first.locator("button.detail")).to_be_focused()
            await page.keyboard.press("Tab")  # to 确认 on the same row
            await page.keyboard.press("Enter")
            row = page.locator(f"#alerts tbody tr[data-id='{fall['id']}']")
            await expect(row).to_have_attribute("data-state", "acknowledged")
            await page.context.close()
            # The next viewport starts from an open alert again.
            fall = await add_alert(cloud, type="fall")

        family = await (await browser.new_context(viewport={"width": 390, "height": 844})).new_page()
        await family.goto(f"http://127.0.0.1:{cloud.http_port}/family/")
        await log_in(family, "family-a", PASSWORD)
        await expect(family.locator("#elders article")).to_have_count(1)
        assert await violations(family) == [], "family"
