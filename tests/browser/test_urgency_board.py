"""The duty officer's board puts what needs a person first (issue 15, "Urgency first").

Seen in the demo: an unhandled critical fall sat below three acknowledged rows; no column said
who handled an alert or how long ago it happened; the critical cue sounded once and a board in
a hidden tab said nothing.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import log_in
from tests.conftest import api_config, running_cloud
from tests.integration.people import PASSWORD, Client, add_alert, add_people

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# What a hidden tab sees: the page is not visible, and the system notifications it sends.
HIDDEN_TAB = """
Object.defineProperty(document, "visibilityState", { get: () => "hidden" });
window.__notes = [];
class FakeNotification {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.__notes.push({ title, ...options }); }
  close() {}
}
window.Notification = FakeNotification;
"""


async def ids(page: Page) -> list[str]:
    shown: list[str] = await page.evaluate(
        "[...document.querySelectorAll('#alerts tbody tr')].map(r => r.dataset.id)")
    return shown


async def test_open_critical_first_with_age_handler_and_a_count_in_the_title(
    browser: Browser, sqlite_url: str
) -> None:
    now = int(time.time() * 1000)
    async with running_cloud(api_config(sqlite_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        fall = await add_alert(cloud, ts=now - 5 * 60_000, type="fall")
        handled = [await add_alert(cloud, ts=now - 60_000 + n) for n in range(3)]
        tamper = await add_alert(cloud, ts=now - 30_000, type="tamper", severity="medium")
        worker = await Client.login(http, cloud, "worker-a")
        for a in handled:
            assert (await worker.post(f"/api/alerts/{a['id']}/ack")).status == 200

        page = await (await browser.new_context(viewport={"width": 1440, "height": 900})).new_page()
        await page.goto(f"http://127.0.0.1:{cloud.http_port}/")
        await log_in(page, "police-a", PASSWORD)
        rows = page.locator("#alerts tbody tr")
        await expect(rows).to_have_count(5)
        assert (await ids(page))[:2] == [fall["id"], tamper["id"]]
        first = rows.first
        await expect(first.locator("td.age")).to_have_text("5分钟前")
        assert await first.locator("td.age").get_attribute("title")  # the exact time on hover
        await expect(first.locator("td.handler")).to_have_text("无人处理")
        await expect(rows.nth(2).locator("td.handler")).to_have_text("worker-a")
        await expect(page).to_have_title("(1) 守望 · 告警")

        # A new critical SOS goes to the top; acknowledging the fall sinks it below the open
        # rows, and the title counts what is still unhandled.
        sos = await add_alert(cloud, ts=now - 1_000)
        await expect(rows.first).to_have_attribute("data-id", sos["id"])
        await expect(page).to_have_title("(2) 守望 · 告警")
        await rows.nth(1).locator("button.ack").click()
        await expect(rows.nth(1)).to_have_attribute("data-id", tamper["id"])
        # Among the acknowledged criticals, newest first: the fall, oldest, is last.
        await expect(rows.nth(5)).to_have_attribute("data-id", fall["id"])
        await expect(rows.nth(5).locator("td.handler")).to_have_text("police-a")
        await expect(page).to_have_title("(1) 守望 · 告警")
        await page.select_option("#lang", "en")
        await expect(page).to_have_title("(1) Shouwang · Alerts")
        await expect(rows.nth(5).locator("td.age")).to_have_text("5 minutes ago")


async def test_the_cue_repeats_until_acknowledged_and_a_hidden_tab_notifies(
    browser: Browser, sqlite_url: str
) -> None:
    async with running_cloud(api_config(sqlite_url)) as cloud:
        await add_people(cloud)
        context = await browser.new_context(viewport={"width": 1440, "height": 900})
        await context.add_init_script(HIDDEN_TAB)
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{cloud.http_port}/")
        await log_in(page, "police-a", PASSWORD)
        await expect(page.locator("#conn")).to_have_class("conn up")
        await page.click("#sound")
        await expect(page.locator("#sound")).to_have_attribute("aria-pressed", "true")

        fall = await add_alert(cloud, type="fall")
        await expect(page.locator("#sound")).to_have_attribute("data-beeps", "1")
        notes: list[dict[str, Any]] = await page.evaluate("window.__notes")
        assert [(n["title"], n["tag"], n["requireInteraction"]) for n in notes] == [
            ("守望：跌倒", fall["id"], True)]
        # Nobody has acknowledged: the cue sounds again (every 15 s), until someone does.
        await expect(page.locator("#sound")).to_have_attribute(
            "data-repeat-beeps", "1", timeout=60_000)
        await page.locator("#alerts tbody tr button.ack").click()
        await expect(page.locator("#alerts tbody tr")).to_have_attribute(
            "data-state", "acknowledged")
        repeats = await page.locator("#sound").get_attribute("data-repeat-beeps")
        await page.wait_for_timeout(20_000)  # longer than one repeat: none follows
        await expect(page.locator("#sound")).to_have_attribute("data-repeat-beeps", repeats or "")

        # A second alert, silenced from the banner instead: the repeats stop too.
        await add_alert(cloud, type="sos")
        await expect(page.locator("#sound")).to_have_attribute("data-beeps", "2")
        await page.click("#silence")
        await expect(page.locator("#critical")).to_be_hidden()
        await page.wait_for_timeout(20_000)
        await expect(page.locator("#sound")).to_have_attribute("data-repeat-beeps", repeats or "")
