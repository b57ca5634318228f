"""The alert board in a real browser: live arrival, acknowledge, and a second screen follows."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect

from shouwang.services import Mosquitto
from simulators.button import Button
from tests.conftest import (
    BUTTON,
    broker_config,
    cloud_config,
    edge_config,
    running_cloud,
    running_edge,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]
CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once, before any I/O starts
        pytest.fail("Debian's chromium is missing: run `make deps` (apt-get install chromium)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def test_sos_appears_live_and_an_ack_shows_on_another_screen(
    browser: Browser, make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    async with (
        running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud,
        running_edge(edge_config(edge_broker, cloud_broker, tmp_path / "edge")),
    ):
        url = f"http://127.0.0.1:{cloud.http_port}/"
        duty = await (await browser.new_context(viewport={"width": 1280, "height": 480})).new_page()
        second = await (await browser.new_context()).new_page()
        for page in (duty, second):
            await page.goto(url)
            await expect(page.locator("#conn")).to_have_class("conn up")
            await expect(page.locator("#empty")).to_be_visible()

        async with Button(broker_config(edge_broker), BUTTON) as button:
            await button.press()
        # Arrives without a reload, on both screens.
        for page in (duty, second):
            row = page.locator("#alerts tbody tr")
            await expect(row).to_have_count(1)
            await expect(row).to_contain_text("sos")
            await expect(row).to_contain_text("critical")
            await expect(row).to_contain_text("open")
        # SHOUWANG_SCREENSHOTS=1 refreshes the picture in docs/; otherwise it stays in tmp.
        shots = DOCS if os.environ.get("SHOUWANG_SCREENSHOTS") == "1" else tmp_path
        await duty.screenshot(path=str(shots / "dashboard-board.png"))

        await duty.locator("button.ack").click()
        await expect(duty.locator("#alerts tbody tr")).to_contain_text("acknowledged")
        await expect(second.locator("#alerts tbody tr")).to_contain_text("acknowledged")
        await expect(second.locator("button.ack")).to_have_count(0)

        # A reload shows the stored state, not just what the page remembered.
        await second.reload()
        await expect(second.locator("#alerts tbody tr")).to_contain_text("acknowledged")
        for page in (duty, second):
            await page.context.close()
