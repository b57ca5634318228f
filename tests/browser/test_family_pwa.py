"""The family PWA in Debian's headless Chromium: the service worker registers and turns a push
into a notification."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, expect

from cloud.api import DASHBOARD_DIR
from cloud.notify import NotifyConfig, build_notify
from cloud.notify.config import WebPushConfig
from cloud.notify.message import AlertSummary, Message
from cloud.notify.routes import family_routes, push_routes
from cloud.store import Store
from shouwang.clock import ManualClock
from shouwang.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def _nobody(request: web.Request) -> str | None:
    return None


@pytest.fixture
async def family_site(tmp_path: Path) -> AsyncIterator[str]:
    store = await Store.connect(f"sqlite+aiosqlite:///{tmp_path}/cloud.sqlite")
    dispatcher = build_notify(
        NotifyConfig(webpush=WebPushConfig(allow_http_endpoints=True)), store, ManualClock()
    )
    app = web.Application()
    push_routes(app, _nobody, dispatcher)
    family_routes(app)
    app.router.add_static("/static", DASHBOARD_DIR)  # the shared modules (i18n, api)
    runner = web.AppRunner(app, access_log=None)
    try:
        await dispatcher.start(run=False)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await dispatcher.stop()
        await store.close()


async def test_service_worker_registers_and_shows_a_push_as_a_notification(
    browser: Browser, family_site: str
) -> None:
    context = await browser.new_context(viewport={"width": 390, "height": 800})
    await context.grant_permissions(["notifications"], origin=family_site)
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    registrations: list[dict[str, str]] = []
    cdp.on("ServiceWorker.workerRegistrationUpdated",
           lambda e: registrations.extend(e["registrations"]))
    await cdp.send("ServiceWorker.enable")

    await page.goto(f"{family_site}/family/")
    await expect(page.locator("body")).to_have_attribute("data-sw", "active")
    await expect(page.locator("#status")).to_have_text("本机未开启提醒。")
    await expect(page.locator("#enable")).to_be_enabled()
    manifest = await page.evaluate(
        "fetch(document.querySelector('link[rel=manifest]').href).then(r => r.json())"
    )
    assert manifest["start_url"] == "/family/"
    for icon in manifest["icons"]:
        status = await page.evaluate(f"fetch({json.dumps(icon['src'])}).then(r => r.status)")
        assert status == 200, icon["src"]
    assert await page.evaluate("fetch('/api/push/vapid-public-key').then(r => r.status)") == 200

    # The push service's part: hand the worker the payload the cloud would encrypt.
    summary = AlertSummary(id="A1", type="sos", severity="critical", life_safety=True,
                           ts=1_767_225_600_000, site="site-1", location="bldg-1/101")
    message = Message(title=summary.title(), body=summary.line(),
                      url=f"{family_site}/family/#alert=A1", critical=True, alerts=(summary,))
    [registration_id] = {
        r["registrationId"] for r in registrations if r["scopeURL"] == f"{family_site}/family/"
    }
    await cdp.send("ServiceWorker.deliverPushMessage", {
        "origin": family_site,
        "registrationId": registration_id,
        "data": json.dumps(message.push_payload()),
    })
    shown = await page.wait_for_function(
        """async () => {
            const reg = await navigator.serviceWorker.ready;
            const list = await reg.getNotifications();
            return list.length ? list.map(n => ({title: n.title, body: n.body, tag: n.tag,
                                                 sticky: n.requireInteraction})) : null;
        }"""
    )
    assert await shown.json_value() == [{
        "title": "[紧急] 一键求助 · SOS",
        "body": "[紧急] 一键求助 · SOS: bldg-1/101 (alert A1)",
        "tag": "alert-A1",
        "sticky": True,
    }]
    await context.close()
