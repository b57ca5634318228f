"""Device health by building and a resident's record with vitals charts, in the browser."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from cloud.telemetry import SqlTelemetryStore
from shouwang.protocol import make_envelope
from tests.browser.conftest import log_in, screenshots
from tests.integration.people import HOME_A, PASSWORD
from tests.integration.test_residents_api import api_with_telemetry

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def test_a_grid_worker_sees_device_health_and_a_residents_vitals(
    browser: Browser, sqlite_url: str, tmp_path: Path
) -> None:
    async with api_with_telemetry(sqlite_url, tmp_path) as cloud:
        now = int(time.time() * 1000)
        await SqlTelemetryStore(cloud.store).write("s-1", [
            {"id": f"now-{k}", "device": "wear-a", "ts": now - k * 600_000,
             "values": {"heart_rate": round(74 + 8 * math.sin(k / 9)), "spo2": 96 + k % 3}}
            for k in range(100)])
        alert = await cloud.store.insert_alert(make_envelope(
            site="s-1", device="wear-a", kind="alert", ts=now, body={
                "type": "fall", "severity": "critical", "subject": "resident:r-a1",
                "dedup_key": "resident:r-a1|fall", "resident": "r-a1", "location": HOME_A,
                "life_safety": True, "detail": {"what": "wearable reported fall"}}))
        assert alert is not None
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{cloud.http_port}/")
        await log_in(page, "worker-a", PASSWORD)
        await expect(page.locator("#alerts tbody tr")).to_have_count(1)

        await page.click("#tab-devices")
        rows = page.locator("#devices table.buildings tbody tr")
        await expect(rows).to_have_count(1)
        await expect(rows.locator("td")).to_have_text([
            HOME_A.rsplit("/", 3)[0], "3", "1", "1", "1", "1"])
        await expect(page.locator("#devices table.problems tbody tr")).to_have_count(3)
        await page.click("#tab-alerts")

        await page.locator("#alerts tbody tr").click()
        await page.click("#detail button.resident")
        view = page.locator("#detail")
        await expect(view.locator("h2")).to_contain_text("王大爷")
        await expect(view.locator(".tags")).to_have_text("老人、独居")
        await expect(view.locator("figure.heart_rate")).to_have_attribute("data-points", "100")
        await expect(view.locator("figure.heart_rate polyline")).to_have_count(1)
        await expect(view.locator("figure.spo2")).to_have_attribute("data-points", "100")
        await expect(view.locator("figure.skin_temp .nodata")).to_be_visible()
        await page.click("#detail .spans button[data-span='7d']")
        await expect(view.locator("figure.heart_rate")).to_have_attribute("data-points", "100")
        await page.click("#detail .spans button[data-span='24h']")
        await expect(view.locator("figure.heart_rate")).to_have_attribute("data-points", "100")
        await page.screenshot(path=str(screenshots(tmp_path) / "dashboard-resident.png"))
        await context.close()
