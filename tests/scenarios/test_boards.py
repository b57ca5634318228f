"""What the duty officer's open board shows and sounds (issue 12, findings 3, 7 and 8).

In Debian's headless Chromium, logged in as the station's duty officer with the sound on:
a daughter's "seen" and a worker's acknowledgement, with who, as they happen; a gas leak
that gets worse (high, then critical) seen and heard without a reload; an SOS pressed while
the cloud was down, seen and heard when the board reconnects by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from edge.config import DeviceBinding, EdgeConfig
from shouwang.services import Mosquitto
from tests.browser.conftest import log_in
from tests.conftest import LOCATION, eventually
from tests.integration.people import PASSWORD
from tests.scenarios.site import Site, community
from tests.scenarios.test_one_truth import open_alert

pytestmark = [pytest.mark.integration, pytest.mark.browser]
GAS = "gas-0001"


async def duty_board(browser: Browser, site: Site) -> Page:
    """The duty officer's board, live, with the sound switched on."""
    page = await (await browser.new_context(viewport={"width": 1400, "height": 820})).new_page()
    await page.goto(site.url)
    await log_in(page, "police-wang", PASSWORD)
    await expect(page.locator("#conn")).to_have_class("conn up")
    await page.click("#sound")
    await expect(page.locator("#sound")).to_have_attribute("aria-pressed", "true")
    return page


def with_gas_detector(config: EdgeConfig) -> EdgeConfig:
    gas = DeviceBinding(id=GAS, profile="gas_detector", location=LOCATION)
    return config.model_copy(update={"devices": [*config.devices, gas]})


async def test_the_board_shows_a_daughters_seen_and_who_acknowledged(
    browser: Browser, make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    async with community(make_broker, tmp_path) as site:
        board = await duty_board(browser, site)
        await site.press()
        alert = await open_alert(site, "sos")
        row = board.locator(f"#alerts tbody tr[data-id='{alert['id']}']")
        await expect(row).to_have_attribute("data-state", "open")
        await site.act("daughter-r1", alert["id"], "ack")
        # Still open, and the board says she has seen it.
        await expect(row).to_contain_text("daughter-r1 已查看")
        await expect(row).to_have_attribute("data-state", "open")
        await site.act("worker-li", alert["id"], "ack")
        await expect(row).to_have_attribute("data-state", "acknowledged")
        await expect(row.locator("td.state")).to_have_text("已确认")
        await expect(row.locator("td.handler")).to_have_text("worker-li")
        await row.click()
        detail = board.locator("#detail")
        await expect(detail.locator(".who")).to_contain_text("worker-li (网格员)")
        await expect(detail.locator(".who")).to_contain_text("daughter-r1")
        await expect(detail.locator("ol.timeline")).to_contain_text("已查看（不停止逐级通知）")


async def test_a_gas_leak_that_gets_worse_is_seen_and_heard_on_an_open_board(
    browser: Browser, make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    async with community(make_broker, tmp_path, change_edge=with_gas_detector) as site:
        board = await duty_board(browser, site)
        beeps = board.locator("#sound")
        await site.send(GAS, {"lel": 25.0}, kind="telemetry")
        leak = await open_alert(site, "gas_leak")
        assert leak["severity"] == "high"
        row = board.locator(f"#alerts tbody tr[data-id='{leak['id']}']")
        await expect(row.locator("td.sev")).to_have_text("高")
        await expect(beeps).to_have_attribute("data-beeps", "0")  # high: no cue yet
        await site.send(GAS, {"lel": 60.0}, kind="telemetry")
        # The same alert, now critical, on the open board and out loud, without a reload.
        await expect(row.locator("td.sev")).to_have_text("紧急", timeout=30_000)
        await expect(beeps).to_have_attribute("data-beeps", "1")
        await expect(board.locator("#critical")).to_contain_text("告警升级为紧急")
        assert len(await site.alerts("gas_leak")) == 1


async def test_an_sos_pressed_while_the_cloud_was_down_is_heard_when_the_board_reconnects(
    browser: Browser, make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    async with community(make_broker, tmp_path) as site:
        board = await duty_board(browser, site)
        await expect(board.locator("#empty")).to_be_visible()
        await site.stop_cloud()
        await expect(board.locator("#conn")).to_have_class("conn down")
        await site.press()  # the gateway keeps it until the cloud is back
        await eventually(lambda: site.edge.outbox.depth(), timeout=10)
        await site.start_cloud()
        # The board reconnects by itself; the SOS is there, with the banner and the sound.
        await expect(board.locator("#conn")).to_have_class("conn up", timeout=30_000)
        await expect(board.locator("#alerts tbody tr")).to_have_count(1, timeout=30_000)
        await expect(board.locator("#alerts tbody tr")).to_contain_text("一键求助")
        await expect(board.locator("#sound")).to_have_attribute("data-beeps", "1")
        await expect(board.locator("#critical")).to_contain_text("一键求助")
