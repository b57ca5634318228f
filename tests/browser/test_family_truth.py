"""The family page tells the truth (issue 15, item 5).

Seen in the demo: the page said "老人 r-0002", headlined the newest alert (a medium tamper)
while a critical fall was unhandled, and never said who was handling it. A daughter far away
must read her father's name, the most urgent open case first, and who is on it, and "平安"
only when nothing is open, however many newer closed alerts there are.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import log_in
from tests.conftest import api_config, running_cloud
from tests.integration.people import PASSWORD, Client, add_alert, add_people
from tests.integration.test_residents_api import seed

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def test_the_most_urgent_open_case_and_who_is_on_it(
    browser: Browser, sqlite_url: str, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    async with running_cloud(api_config(sqlite_url)) as cloud, aiohttp.ClientSession() as http:
        assert cloud.store is not None
        await add_people(cloud)
        await seed(cloud.store, tmp_path)  # r-a1 is 王大爷
        fall = await add_alert(cloud, ts=now - 10 * 60_000, type="fall")
        tamper = await add_alert(cloud, ts=now - 60_000, type="tamper", severity="medium")
        for n in range(25):  # newer, closed: they must not push the fall off the page
            closed = await add_alert(cloud, ts=now - 30_000 + n, type="battery_low", severity="low")
            await cloud.store.transition(closed["id"], "resolved", actor="user:admin")

        page = await (await browser.new_context(viewport={"width": 390, "height": 844},
                                                is_mobile=True)).new_page()
        await page.goto(f"http://127.0.0.1:{cloud.http_port}/family/")
        await log_in(page, "family-a", PASSWORD)
        elder = page.locator("#elders article")
        await expect(elder.locator("h2")).to_have_text("王大爷")
        await expect(elder.locator(".status")).to_have_text("需要关注")
        await expect(elder.locator(".headline")).to_contain_text("跌倒")
        await expect(elder.locator(".handling")).to_have_text("还没有人接手 · 10分钟前")
        await expect(elder.locator(".more")).to_have_text("另有 1 件未处理")
        assert await page.locator(f"#alerts li[data-id='{fall['id']}']").count() == 1

        worker = await Client.login(http, cloud, "worker-a")
        assert (await worker.post(f"/api/alerts/{fall['id']}/ack")).status == 200
        await expect(elder.locator(".handling")).to_have_text("网格员 worker-a 已确认 · 刚刚")
        for alert in (fall, tamper):
            assert (await worker.post(f"/api/alerts/{alert['id']}/resolve")).status == 200
        await expect(elder.locator(".status")).to_have_text("平安")
        await expect(elder.locator(".more")).to_have_count(0)
        await page.select_option("#lang", "en")
        await expect(elder.locator(".status")).to_have_text("All is well")
