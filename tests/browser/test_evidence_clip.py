"""An evidence clip in Debian's Chromium: it plays and seeks in the alert detail, the view is
one row of the audit log, and the exported package verifies offline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from cloud.access import audit
from shouwang.evidence_package import load_public_key, verify
from tests.browser.conftest import log_in, screenshots
from tests.conftest import api_config, running_cloud
from tests.evidence_media import attach, h264_clip, jpeg_snapshot
from tests.integration.people import HOME_A, PASSWORD, Client, add_alert, add_people

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def _open_detail(browser: Browser, url: str, user: str,
                       on_page: Callable[[Page], None] | None = None) -> Page:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000},
                                        accept_downloads=True)
    page = await context.new_page()
    if on_page is not None:
        on_page(page)
    await page.goto(url)
    await log_in(page, user, PASSWORD)
    await expect(page.locator("#alerts tbody tr")).to_have_count(1)
    await page.locator("#alerts tbody tr").click()  # also the gesture a page needs to play
    await expect(page.locator("#detail")).to_be_visible()
    return page


async def test_a_clip_plays_in_the_alert_detail_and_the_view_is_audited(
    browser: Browser, sqlite_url: str, tmp_path: Path
) -> None:
    config = api_config(sqlite_url, evidence={"dir": str(tmp_path / "blobs")})
    async with running_cloud(config) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_alert(cloud, location=HOME_A)
        # 20 s at 8 Mbit/s, about 20 MB: Chromium reads it in several range requests.
        clip = await h264_clip(tmp_path / "clip.mp4", seconds=20, size="640x360",
                               bitrate="8M")
        sha = await attach(cloud, alert, clip, "video/mp4", captured_ts=1_795_000_000_100)
        await attach(cloud, alert, await jpeg_snapshot(tmp_path / "s.jpg"), "image/jpeg",
                     captured_ts=1_795_000_000_200)
        url = f"http://127.0.0.1:{cloud.http_port}/"
        served: list[tuple[str | None, int]] = []  # (Range asked, status answered)

        def watch(page: Page) -> None:
            page.on("response", lambda r: served.append((r.request.headers.get("range"),
                                                         r.status))
                    if r.url.endswith(sha) else None)

        page = await _open_detail(browser, url, "police-a", watch)
        video = page.locator("#detail .evidence video")
        await expect(video).to_have_count(1)
        await expect(video).to_have_attribute("controls", "")
        await page.wait_for_function(
            "document.querySelector('#detail .evidence video').readyState >= 1")
        # It decodes (a frame of the size ffmpeg made) and time advances while it plays.
        assert await page.evaluate("""async () => {
            const v = document.querySelector('#detail .evidence video');
            v.muted = true;
            await v.play();
            return v.videoWidth;
        }""") == 640
        await page.wait_for_function("""() => {
            const v = document.querySelector('#detail .evidence video');
            return v.readyState >= 2 && v.currentTime > 0.5 && !v.paused;
        }""")
        # A live change (an admin acknowledges) re-renders the detail: the clip plays on.
        await page.evaluate("window.clip = document.querySelector('#detail .evidence video')")
        admin = await Client.login(http, cloud, "admin")
        assert (await admin.post(f"/api/alerts/{alert['id']}/ack")).status == 200
        await expect(page.locator("#detail .timeline li")).to_have_count(2)
        assert await page.evaluate("""() => {
            const v = document.querySelector('#detail .evidence video');
            return v === window.clip && !v.paused;
        }""")
        # Seek near the end (from what it holds, or by another range request).
        await page.evaluate("""() => new Promise((resolve) => {
            const v = document.querySelector('#detail .evidence video');
            v.addEventListener('seeked', resolve, { once: true });
            v.currentTime = 18;
        })""")
        await page.wait_for_function(
            "document.querySelector('#detail .evidence video').currentTime >= 18")
        assert await page.evaluate(
            "document.querySelector('#detail .evidence video').error") is None
        # Chromium reads media by byte ranges (one or several, as its buffer decides), and the
        # server answers them as such; two more as a player asks them, to be sure of several.
        assert served, "the page never asked for the clip"
        for start in (1000, 5_000_000):
            assert await page.evaluate(f"""() => fetch(document.querySelector(
                '#detail .evidence video').src, {{headers: {{Range: 'bytes={start}-{start + 999}'}}}})
                .then(async (r) => [r.status, (await r.arrayBuffer()).byteLength])""") == [206, 1000]
        assert all(r is not None and r.startswith("bytes=") and status == 206
                   for r, status in served), served
        await page.evaluate("document.querySelector('#detail .evidence video').pause()")
        await page.set_viewport_size({"width": 1400, "height": 1500})  # the whole detail
        await page.locator("#detail").screenshot(
            path=str(screenshots(tmp_path) / "dashboard-evidence.png"))

        # The audit log, as an admin reads it: one view of the clip by this officer.
        reply = await admin.get(f"/api/audit?action=evidence_read&target={alert['id']}")
        assert reply.status == 200
        views = [(e["actor"], e["detail"]["sha256"]) for e in reply.body["entries"]]
        assert views.count(("user:police-a", sha)) == 1, (views, served)

        # Exporting: the button downloads the package, which verifies with the served key.
        export = page.locator("#detail .export")
        await expect(export).to_have_text("导出证据包")
        async with page.expect_download() as info:
            await export.click()
        download = await info.value
        package = tmp_path / "package.zip"
        await download.save_as(package)
        async with http.get(f"{admin.base}/api/evidence/public-key?format=pem") as res:
            (tmp_path / "key.pem").write_text(await res.text())
        report = verify(package, load_public_key(tmp_path / "key.pem"))
        assert report.ok, report.lines()
        assert cloud.store is not None
        exported = await audit.entries(cloud.store.engine, action="evidence_package",
                                       target=alert["id"])
        assert [e["actor"] for e in exported] == ["user:police-a"]
        await page.context.close()

        # A family member sees the clip of their own resident, but exports nothing.
        family = await _open_detail(browser, url, "family-a")
        await expect(family.locator("#detail .evidence video")).to_have_count(1)
        await expect(family.locator("#detail .evidence img")).to_have_count(1)
        await expect(family.locator("#detail .export")).to_have_count(0)
        await family.context.close()
