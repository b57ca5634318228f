"""The Devices tab follows the gateways live over the WebSocket (issue 15, "Where"): a
wearable that goes offline appears on an open tab without a reload, and leaves it when it is
back; a station elsewhere hears nothing of it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from cloud.fleet import Fleet
from shouwang.protocol import make_envelope
from tests.browser.conftest import log_in
from tests.conftest import api_config, running_cloud
from tests.integration.people import PASSWORD, add_people
from tests.integration.test_building_view import seed_building

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def transition(device: str, new: str) -> object:
    now = int(time.time() * 1000)
    return make_envelope(site="s-1", device=device, kind="health", ts=now, body={
        "type": "device_state", "device": device, "dimension": "transport",
        "old": "connected" if new == "disconnected" else "disconnected", "new": new,
        "at_ms": now})


async def test_a_device_going_offline_shows_on_an_open_devices_tab(
    browser: Browser, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_cloud(api_config(sqlite_url)) as cloud:
        assert cloud.store is not None
        await add_people(cloud)
        await seed_building(cloud, tmp_path)  # gas-201 is faulty at HOMES[2]
        fleet = Fleet(cloud.store)
        pages = {}
        for user in ("worker-a", "police-b"):
            page = await (await browser.new_context(viewport={"width": 1440, "height": 900})).new_page()
            await page.goto(f"http://127.0.0.1:{cloud.http_port}/")
            await log_in(page, user, PASSWORD)
            await expect(page.locator("#conn")).to_have_class("conn up")
            await page.click("#tab-devices")
            await expect(page.locator("#devices")).to_have_attribute("data-loaded", "1")
            pages[user] = page
        problems = pages["worker-a"].locator("#devices table.problems tbody tr")
        await expect(problems).to_have_count(1)
        loaded = await pages["police-b"].locator("#devices").get_attribute("data-loaded")

        assert await fleet.device_state(transition("gas-201", "disconnected"))  # type: ignore[arg-type]
        await expect(problems.first.locator("td.bad")).to_have_text("离线、故障")
        assert await fleet.device_state(transition("gas-201", "connected"))  # type: ignore[arg-type]
        await expect(problems.first.locator("td.bad")).to_have_text("故障")
        # The other station's tab was never told (it reloads only on a message for it).
        assert await pages["police-b"].locator("#devices").get_attribute("data-loaded") == loaded
