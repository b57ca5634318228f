"""Issue 14, defect 4 in Chromium: a page on the same host and another port (the same *site*,
so SameSite=Strict sends the cookie) cannot acknowledge an alert or open the alert stream with
the duty officer's session, while the real dashboard still acknowledges it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, expect

from shouwang.services import free_port
from tests.browser.conftest import log_in
from tests.conftest import api_config, running_cloud
from tests.integration.people import PASSWORD, Client, add_alert, add_people

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# Every way a page can send a request without the target's consent: a "simple" fetch (no
# preflight) with the cookie, a form (JSON spelled as text/plain), and the WebSocket.
ATTACK = """<!doctype html><html><body>
<form id="f" method="POST" enctype="text/plain" target="sink" action="{ack}">
  <input name='{{"note": "forged", "x": "' value='"}}'></form>
<iframe name="sink"></iframe>
<script>
const results = {{}};
window.results = results;
fetch("{ack}", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}}, body: "{{}}"}})
  .then(() => results.simple = "sent", () => results.simple = "failed");
fetch("{ack}", {{method: "POST", credentials: "include",
  headers: {{"Content-Type": "application/json"}}, body: "{{}}"}})
  .then((r) => results.json = "answered " + r.status, () => results.json = "blocked");
const ws = new WebSocket("{ws}");
ws.onmessage = (m) => results.ws = "message " + m.data.slice(0, 40);
ws.onclose = (e) => results.ws = results.ws || "closed " + e.code;
document.getElementById("f").submit();
document.querySelector("iframe").onload = () => results.form = "submitted";
</script></body></html>"""


@contextlib.asynccontextmanager
async def attacker_page(html: str) -> AsyncIterator[str]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_a_page_on_another_port_cannot_ack_with_the_users_cookie(
    browser: Browser, sqlite_url: str
) -> None:
    async with running_cloud(api_config(sqlite_url)) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_alert(cloud)
        base = f"http://127.0.0.1:{cloud.http_port}"
        context = await browser.new_context(viewport={"width": 1400, "height": 820})
        dashboard = await context.new_page()
        await dashboard.goto(f"{base}/")
        await log_in(dashboard, "police-a", PASSWORD)
        await expect(dashboard.locator("#alerts tbody tr")).to_have_count(1)

        # The duty officer, still logged in, opens a link to another port of the same host.
        html = ATTACK.format(ack=f"{base}/api/alerts/{alert['id']}/ack",
                             ws=f"ws://127.0.0.1:{cloud.http_port}/api/ws")
        async with attacker_page(html) as url:
            evil = await context.new_page()
            await evil.goto(url)
            await evil.wait_for_function(
                "['simple', 'json', 'ws', 'form'].every((k) => window.results[k])",
                timeout=20_000)
            results = await evil.evaluate("window.results")
        assert results["json"] == "blocked"  # the preflight finds no CORS
        assert results["ws"].startswith("closed"), results
        police = await Client.login(http, cloud, "police-a")
        assert (await police.get(f"/api/alerts/{alert['id']}")).body["state"] == "open"
        async with http.get(f"{base}/metrics") as res:
            text = await res.text()
        # The simple fetch, the form and the WebSocket reached the server and were refused.
        assert 'shouwang_http_refused_total{reason="origin"} 3.0' in text

        await dashboard.locator("#alerts tbody tr").click()
        await dashboard.click("#detail .do-ack")
        await expect(dashboard.locator("#alerts tbody tr")).to_have_attribute(
            "data-state", "acknowledged")
        assert (await police.get(f"/api/alerts/{alert['id']}")).body["state"] == "acknowledged"
