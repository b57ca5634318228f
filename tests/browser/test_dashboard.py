"""The dashboard in a real browser: an SOS from the button simulator through edge and cloud
appears live, is handled by two users of one jurisdiction, and never reaches another."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from shouwang.protocol import make_envelope
from shouwang.services import Mosquitto
from simulators.button import Button
from tests.browser.conftest import log_in, screenshots, snapshot_png
from tests.conftest import (
    BUTTON,
    LOCATION,
    broker_config,
    cloud_config,
    edge_config,
    running_cloud,
    running_edge,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]
PASSWORD = "a-long-test-password"


async def open_page(browser: Browser, url: str, user: str) -> Page:
    page = await (await browser.new_context(viewport={"width": 1400, "height": 820})).new_page()
    await page.goto(url)
    await log_in(page, user, PASSWORD)
    await expect(page.locator("#conn")).to_have_class("conn up")
    await expect(page.locator("#empty")).to_be_visible()
    return page


async def test_an_sos_is_live_handled_by_one_jurisdiction_and_unseen_by_another(
    browser: Browser, make_broker: Callable[[str], Mosquitto], tmp_path: Path
) -> None:
    edge_broker, cloud_broker = make_broker("edge"), make_broker("cloud")
    econf = edge_config(edge_broker, cloud_broker, tmp_path / "edge")
    async with running_cloud(cloud_config(cloud_broker, tmp_path)) as cloud, running_edge(econf):
        assert cloud.access is not None
        assert cloud.store is not None
        assert cloud.evidence is not None
        url = f"http://127.0.0.1:{cloud.http_port}/"
        station, grid = "/".join(LOCATION.split("/")[:3]), "/".join(LOCATION.split("/")[:4])
        await cloud.access.add_user("duty-1", PASSWORD, "police", locations=[station],
                                    display_name="值班民警")
        await cloud.access.add_user("worker-1", PASSWORD, "worker", locations=[grid],
                                    display_name="网格员")
        await cloud.access.add_user("elsewhere-1", PASSWORD, "police",
                                    locations=["other-district/other-street"])

        duty = await (await browser.new_context(viewport={"width": 1400, "height": 820})).new_page()
        await duty.goto(url)
        await log_in(duty, "duty-1", "not-the-password")
        await expect(duty.locator("#login-error")).to_have_text("wrong user name or password")
        await log_in(duty, "duty-1", PASSWORD)
        await expect(duty.locator("#conn")).to_have_class("conn up")
        worker = await open_page(browser, url, "worker-1")
        elsewhere = await open_page(browser, url, "elsewhere-1")
        await duty.click("#sound")  # the user gesture a browser needs before a page may beep
        await expect(duty.locator("#sound")).to_have_attribute("aria-pressed", "true")

        async with Button(broker_config(edge_broker), BUTTON) as button:
            await button.press()
        # Arrives without a reload on both screens of the jurisdiction, in Chinese by default.
        for page in (duty, worker):
            row = page.locator("#alerts tbody tr")
            await expect(row).to_have_count(1)
            await expect(row).to_have_attribute("data-state", "open")
            await expect(row).to_contain_text("一键求助")
            await expect(row.locator("td.sev")).to_have_text("紧急")
        await expect(duty.locator("#sound")).to_have_attribute("data-beeps", "1")
        await expect(duty.locator("#critical")).to_contain_text("一键求助")
        await expect(worker.locator("#sound")).to_have_attribute("data-beeps", "0")  # sound off
        alert_id = await duty.locator("#alerts tbody tr").get_attribute("data-id")
        assert alert_id
        # Navigation: the station's places lead down to the household, each with its count.
        await expect(duty.locator("#places .places a")).to_have_text(["test-district1"])

        # A snapshot the camera work would attach, served only through the alert.
        png = snapshot_png()
        sha = hashlib.sha256(png).hexdigest()
        cloud.evidence.path(sha).parent.mkdir(parents=True, exist_ok=True)
        cloud.evidence.path(sha).write_bytes(png)
        await cloud.evidence.insert(make_envelope(
            site=econf.site, device="cam-door-1", kind="evidence", ts=1, body={
                "sha256": sha, "size": len(png), "content_type": "image/png",
                "alert": alert_id, "captured_ts": 1_795_000_000_000}), received_ms=1)

        await duty.locator("#alerts tbody tr").click()
        detail = duty.locator("#detail")
        await expect(detail).to_be_visible()
        await expect(detail.locator(".who")).to_contain_text("r-1")
        await expect(detail.locator(".who")).to_contain_text(BUTTON)
        await expect(detail.locator(".where li")).to_have_count(8)
        await expect(detail.locator(".where li").nth(4)).to_have_text("楼栋 bldg-1")
        # Why, as a sentence, and as far as police may see it: the rule and its event, not
        # the readings (those stay under 技术细节).
        await expect(detail.locator(".why p.explain")).to_have_text("一键通按钮被按下")
        await expect(detail.locator(".why > dl dd")).to_have_text([
            re.compile(r"\d{4}/\d\d/\d\d"), re.compile(r"\d{4}/\d\d/\d\d")])
        await expect(detail.locator(".why details.technical dd")).to_have_text([
            "emergency_button reported press", "emergency_button.press", "event_alert", "press"],
            use_inner_text=False)
        await expect(detail.locator(".timeline li")).to_have_count(1)
        image = detail.locator(".evidence img")
        await expect(image).to_have_count(1)
        await duty.wait_for_function(
            "document.querySelector('#detail .evidence img').naturalWidth === 320")

        await duty.fill("#note", "已电话联系老人")
        await duty.click("#detail .do-ack")
        # The other user of the jurisdiction sees the acknowledgement live.
        await expect(worker.locator("#alerts tbody tr")).to_have_attribute(
            "data-state", "acknowledged")
        await expect(detail.locator(".timeline li")).to_have_count(2)
        await expect(detail.locator(".timeline li").nth(1)).to_contain_text("已电话联系老人")
        await expect(detail.locator("#worker option")).to_have_text(["网格员 (worker-1)"])
        await duty.set_viewport_size({"width": 1400, "height": 1150})
        await duty.evaluate("window.scrollTo(0, 0)")
        await duty.screenshot(path=str(screenshots(tmp_path) / "dashboard-alert.png"))
        await duty.click("#detail .do-dispatch")
        await expect(worker.locator("#alerts tbody tr")).to_have_attribute(
            "data-state", "dispatched")

        await worker.locator("#alerts tbody tr").click()
        # By display name (worker-1 is 网格员), not the user name.
        await expect(worker.locator("#detail .who")).to_contain_text("已派给网格员")
        await worker.fill("#note", "上门查看，误触")
        await worker.click("#detail .do-resolve")
        # The board shows alerts not yet closed: a resolved one leaves both screens...
        for page in (duty, worker):
            await expect(page.locator("#alerts tbody tr")).to_have_count(0)
        # ...and a filter brings it back.
        await duty.select_option("#f-state", "resolved")
        await expect(duty.locator("#alerts tbody tr")).to_have_attribute("data-state", "resolved")

        # The other station saw nothing, live or listed, not even the place.
        await expect(elsewhere.locator("#alerts tbody tr")).to_have_count(0)
        await elsewhere.select_option("#f-state", "")
        await expect(elsewhere.locator("#empty")).to_be_visible()
        await expect(elsewhere.locator("#places .places a")).to_have_count(0)
        assert await elsewhere.evaluate(
            f"fetch('/api/alerts/{alert_id}/evidence/{sha}').then(r => r.status)") == 404

        timeline = (await cloud.store.get_alert(alert_id))["timeline"]
        assert [(t["to_state"], t["actor"], t["note"]) for t in timeline] == [
            ("open", f"site:{econf.site}", None),
            ("acknowledged", "user:duty-1", "已电话联系老人"),
            ("dispatched", "user:duty-1", None),
            ("resolved", "user:worker-1", "上门查看，误触"),
        ]

        # English, kept over a reload (and the session too).
        await duty.select_option("#lang", "en")
        await expect(duty.locator("h1")).to_have_text("Shouwang Alerts")
        await duty.reload()
        await expect(duty.locator("#alerts tbody tr td.sev")).to_have_text("Critical")
        await expect(duty.locator("#alerts tbody tr")).to_contain_text("SOS")
        # Logging out ends the session: a reload asks for the password again.
        await duty.click("#logout")
        await expect(duty.locator("#login")).to_be_visible()
        await duty.reload()
        await expect(duty.locator("#login")).to_be_visible()
        for page in (duty, worker, elsewhere):
            await page.context.close()
