"""The alert board in a real browser: live arrival, acknowledge, and a second screen follows."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from shouwang.services import Mosquitto
from simulators.button import Button
from tests.conftest import (
    BUTTON,
    LOCATION,
    TEST_ADMIN,
    TEST_PASSWORD,
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


async def log_in(page: Page, username: str, password: str) -> None:
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#login button[type=submit]")


async def test_sos_appears_live_and_an_ack_shows_on_another_screen(
    browser: Browser, make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    async with (
        running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud,
        running_edge(edge_config(edge_broker, cloud_broker, tmp_path / "edge")),
    ):
        url = f"http://127.0.0.1:{cloud.http_port}/"
        assert cloud.access is not None
        station = "/".join(LOCATION.split("/")[:3])
        await cloud.access.add_user("duty-1", "duty-password-1", "police", locations=[station])
        duty = await (await browser.new_context(viewport={"width": 1280, "height": 480})).new_page()
        second = await (await browser.new_context()).new_page()
        await duty.goto(url)
        await log_in(duty, "duty-1", "not-the-password")
        await expect(duty.locator("#login-error")).to_have_text("wrong user name or password")
        await log_in(duty, "duty-1", "duty-password-1")
        await second.goto(url)
        await log_in(second, TEST_ADMIN, TEST_PASSWORD)
        for page in (duty, second):
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

        # The ack is the logged-in user's, not a claimed name.
        timeline = (await cloud.store.get_alert(await duty.locator("#alerts tbody tr").get_attribute("data-id") or ""))["timeline"]  # type: ignore[union-attr]
        assert [(t["to_state"], t["actor"]) for t in timeline] == [("open", timeline[0]["actor"]), ("acknowledged", "user:duty-1")]

        # A reload keeps the session (cookie) and shows the stored state.
        await second.reload()
        await expect(second.locator("#alerts tbody tr")).to_contain_text("acknowledged")
        # Logging out ends the session: a reload asks for the password again.
        await second.click("#logout")
        await expect(second.locator("#login")).to_be_visible()
        await second.reload()
        await expect(second.locator("#login")).to_be_visible()
        for page in (duty, second):
            await page.context.close()
