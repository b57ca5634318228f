"""高空抛物 in the dashboard: a thrown_object alert's detail shows the snapshot with the track
and the candidate windows drawn, the floor and column in words, the ranked candidates; the
grid worker records the flat found after investigation and sees it in the timeline (audited).

The alert is what a real throw gives: a generated façade clip (simulators/facade.py, a tuning
seed) through the real detector, its fields flattened as the worker sends them over MQTT, the
pictures drawn by the worker's own functions on the frame it alarmed on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from playwright.async_api import Browser, Page, expect

from edge.video.analysis import Analyzer
from edge.video.config import CameraConfig
from edge.video.events import CameraEvent
from edge.video.recorder import snapshot
from edge.video.throw.calibration import Facade
from edge.video.throw.detector import wire_fields
from edge.video.throw.evidence import launch_area, mark
from tests.browser.conftest import log_in, screenshots
from tests.browser.test_accessibility import violations
from tests.browser.test_phone import PHONE
from tests.conftest import api_config, running_cloud
from tests.evidence_media import attach
from tests.integration.people import PASSWORD, Client, add_people, add_throw

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def _detect(camera: CameraConfig, clip: Path) -> tuple[CameraEvent, np.ndarray]:
    """The first thrown_object the worker's analyser finds in `clip`, and the frame it
    alarmed on (what the worker snapshots)."""
    analyzer = Analyzer(camera)
    with av.open(str(clip)) as container:
        first = None
        for frame in container.decode(video=0):
            first = frame.time if first is None else first
            result = analyzer.analyse(frame, round((frame.time - first) * 1000))
            for event in result.events:
                if event.type == "thrown_object":
                    return event, frame.to_ndarray(format="bgr24")
    raise AssertionError(f"no throw found in {clip}")


async def _open(browser: Browser, url: str, user: str) -> Page:
    context = await browser.new_context(viewport={"width": 1400, "height": 1400})
    page = await context.new_page()
    await page.goto(url)
    await log_in(page, user, PASSWORD)
    await expect(page.locator("#alerts tbody tr")).to_have_count(1)
    await page.locator("#alerts tbody tr button.detail").click()
    await expect(page.locator("#detail")).to_be_visible()
    return page


RED_AT = """([selector, points]) => {
    const img = document.querySelector(selector);
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    return points.map(([x, y]) => {
        const [r, gr, b] = g.getImageData(x, y, 1, 1).data;
        return r > 170 && gr < 100 && b < 100;
    });
}"""


async def test_a_throw_shows_its_marked_snapshot_floor_and_candidates_and_takes_the_flat(
    browser: Browser, sqlite_url: str, tmp_path: Path, facade_clip: Callable[..., Path],
) -> None:
    clip = await asyncio.to_thread(facade_clip, seed=11, condition="day", throws=1, seconds=10)
    camera = CameraConfig.model_validate(json.loads(clip.with_suffix(".json").read_text())["camera"])
    assert camera.facade is not None
    event, frame = await asyncio.to_thread(_detect, camera, clip)
    facade = Facade(camera.facade)
    data: dict[str, Any] = wire_fields(dict(event.fields))
    floor, column = data["floor"], data["column"]
    config = api_config(sqlite_url, evidence={"dir": str(tmp_path / "blobs")})
    async with running_cloud(config) as cloud, aiohttp.ClientSession() as http:
        await add_people(cloud)
        alert = await add_throw(cloud, data=data)
        fields = dict(event.fields)
        for kind, picture in (("snapshot", frame), ("marked", mark(frame, fields, facade)),
                              ("launch", launch_area(frame, fields, facade))):
            await attach(cloud, alert, snapshot(picture), "image/jpeg", device="cam-facade",
                         kind=kind)
        page = await _open(browser, f"http://127.0.0.1:{cloud.http_port}/", "worker-a")
        throw = page.locator("#detail .throw")
        await expect(throw.locator(".floor")).to_have_text(f"约 {floor} 层, 第 {column} 列窗户")
        # The ranked candidates with their probabilities, the best first.
        ranked = [c.split(":") for c in data["candidates"].split()]
        items = throw.locator("ol.candidates li")
        await expect(items).to_have_count(len(ranked))
        f0, c0, p0 = ranked[0]
        await expect(items.first).to_contain_text(f"{f0} 层 第 {c0} 列")
        await expect(items.first).to_contain_text(f"{round(float(p0) * 100)}%")
        # The overlay: the marked snapshot, red along the track where the plain one is not.
        marked = throw.locator("img.marked")
        await expect(marked).to_have_count(1)
        await page.wait_for_function(
            "document.querySelector('#detail .throw img.marked').naturalWidth > 0")
        await page.wait_for_function(
            "document.querySelector('#detail .throw img.launch').naturalWidth > 0")
        track = [[int(v) for v in p.split(",")[1:]] for p in data["track"].split(";")]
        # Beyond the ring that marks the first sighting.
        points = [[x, y] for x, y in track if np.hypot(x - track[0][0], y - track[0][1]) > 12]
        assert len(points) >= 3, track
        red = await page.evaluate(RED_AT, ["#detail .throw img.marked", points])
        assert sum(red) >= 0.8 * len(red), red
        plain = page.locator("#detail .evidence figure.snapshot img")
        await expect(plain).to_have_count(1)
        await page.wait_for_function(
            "document.querySelector('#detail .evidence figure.snapshot img').naturalWidth > 0")
        assert not all(await page.evaluate(
            RED_AT, ["#detail .evidence figure.snapshot img", points]))

        # After the investigation: the flat it came from, recorded by the grid worker.
        form = throw.locator("form.flat")
        await expect(form.locator("input[name=floor]")).to_have_value(str(floor))
        await form.locator("input[name=floor]").fill(str(floor + 1))
        await form.locator("input[name=column]").fill(str(column))
        await form.locator("textarea[name=note]").fill("住户承认扔了花盆")
        await form.locator("button[type=submit]").click()
        await expect(throw.locator(".confirmed")).to_contain_text(
            f"{floor + 1} 层 第 {column} 列")
        step = page.locator("#detail .timeline li", has_text="确认抛物住户")
        await expect(step).to_have_count(1)
        await expect(step).to_contain_text(f"{floor + 1} 层 第 {column} 列")
        await expect(step).to_contain_text("worker-a")
        await expect(step.locator("blockquote")).to_have_text("住户承认扔了花盆")
        # The part is usable without sight: the pictures named, the form labelled (WCAG 2 AA).
        assert await violations(page) == []
        await page.locator("#detail").screenshot(
            path=str(screenshots(tmp_path) / "dashboard-throw.png"))
        admin = await Client.login(http, cloud, "admin")
        reply = await admin.get(f"/api/audit?action=alert_confirm_flat&target={alert['id']}")
        assert [(e["actor"], e["detail"]) for e in reply.body["entries"]] == [
            ("user:worker-a", {"floor": floor + 1, "column": column})]
        await page.context.close()


async def test_a_camera_without_calibration_says_the_floor_is_unknown(
    browser: Browser, sqlite_url: str,
) -> None:
    async with running_cloud(api_config(sqlite_url)) as cloud:
        await add_people(cloud)
        await add_throw(cloud, data={"floor": None, "column": None, "candidates": ""})
        page = await _open(browser, f"http://127.0.0.1:{cloud.http_port}/", "police-a")
        throw = page.locator("#detail .throw")
        await expect(throw.locator(".floor")).to_have_text("楼层未知（摄像头未标定）")
        await expect(throw.locator("ol.candidates")).to_have_count(0)
        # Nothing to prefill: the officer types the floor found.
        await expect(throw.locator("form.flat input[name=floor]")).to_have_value("")
        await page.context.close()


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
async def test_the_board_row_of_a_throw_says_the_floor(
    browser: Browser, sqlite_url: str, phone: bool,
) -> None:
    """Police scan the board, not every detail: a thrown object's row says the floor and
    column it came from (or that the floor is unknown), on a desk and on a phone's cards."""
    async with running_cloud(api_config(sqlite_url)) as cloud:
        await add_people(cloud)
        await add_throw(cloud, data={"floor": 12, "column": 3})
        await add_throw(cloud, device="cam-facade-2",
                        data={"floor": None, "column": None, "candidates": ""})
        options: dict[str, Any] = ({"viewport": PHONE, "is_mobile": True, "has_touch": True}
                                   if phone else {"viewport": {"width": 1400, "height": 900}})
        context = await browser.new_context(**options)
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{cloud.http_port}/")
        await log_in(page, "police-a", PASSWORD)
        rows = page.locator("#alerts tbody tr")
        await expect(rows).to_have_count(2)
        floors = rows.locator("td.type .floor")
        await expect(floors).to_have_count(2)
        for i in range(2):
            await expect(floors.nth(i)).to_be_visible()
        assert sorted(await floors.all_inner_texts()) == sorted(["约 12 层 第 3 列", "楼层未知"])
        await context.close()
