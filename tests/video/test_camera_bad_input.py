"""Bad input on the camera road: a clear error naming the camera and the cause, counted, and
never a crashed daemon or a camera that notices another's trouble.

Corrupt H.264 on one camera, a 4K stream where the gateway expects at most 1080p on another,
a wrong URL in the site file, a resolution change mid-stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import orjson
import pytest
from sqlalchemy import select

from cloud.schema import readings
from edge.config import EdgeConfig
from edge.video.analysis import Analyzer
from edge.video.config import CameraConfig
from shouwang.config import ConfigError, validate
from shouwang.services import Mosquitto
from simulators.camera import CameraSimulator, CameraSpec
from tests.conftest import eventually
from tests.scenarios.site import Site, community
from tests.video.test_camera_road import (
    GATE,
    YARD,
    alerts_of,
    one_alert,
    streaming,
    with_cameras,
)

pytestmark = pytest.mark.integration


async def test_corrupt_h264_is_counted_and_the_stream_goes_on_and_4k_is_refused_by_name(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path,
    camera_sim: Callable[..., CameraSimulator],
) -> None:
    # Started off the event loop: drawing a 4K scene takes seconds.
    sim = await asyncio.to_thread(camera_sim, [
        CameraSpec(id=GATE, width=640, height=360, username="viewer", password="viewer-secret"),
        CameraSpec(id=YARD, width=3840, height=2160, username="viewer",
                   password="viewer-secret", bitrate_kbps=2000),
    ])
    async with community(make_broker, tmp_path,
                         change_edge=with_cameras(sim, tmp_path, GATE, YARD)) as site:
        await eventually(lambda: streaming(site, GATE), timeout=60)
        sim.fault(GATE, "corrupt")
        gate_log = tmp_path / "edge" / "video" / GATE / "worker.log"
        # The 4K camera: refused by name, once, and lost with the reason.
        lost = await one_alert(site, "stream_lost", "open", YARD)
        assert lost["detail"]["why"]["data"]["reason"] == "unsupported"
        yard_log = (tmp_path / "edge" / "video" / YARD / "worker.log").read_text()
        assert yard_log.count("stream is 3840x2160, wider than max_width 1920") == 1
        await eventually(lambda: "corrupt H.264" in gate_log.read_text(), timeout=60)
        await eventually(lambda: _damage_reported(site), timeout=120)
        sim.restore(GATE, "corrupt")
        # The corrupt stream was never lost, its worker never restarted, nor the daemon.
        assert await alerts_of(site, "stream_lost", GATE) == []
        video = site.edge.video
        assert video is not None
        assert video.restarts == {GATE: 0, YARD: 0}
        assert "Traceback" not in gate_log.read_text()


async def _damage_reported(site: Site) -> bool:
    """The gate camera's telemetry, stored in the cloud, counts the damaged frames."""
    assert site.cloud.store is not None
    async with site.cloud.store.engine.connect() as conn:
        rows = (
            await conn.execute(select(readings.c.vals).where(readings.c.device == GATE))
        ).scalars().all()
    values = [v if isinstance(v, dict) else orjson.loads(v) for v in rows]
    return any(v.get("dropped_frames", 0) > 0 for v in values)


def test_a_url_that_is_not_rtsp_is_refused_at_load_with_the_key() -> None:
    raw = {"site": "s", "edge_broker": {}, "cloud_broker": {},
           "cameras": [{"id": "cam-1", "url": "http://192.0.2.10/stream"}]}
    with pytest.raises(ConfigError, match=r"cameras\.0\.url: .*rtsp://"):
        validate(raw, EdgeConfig, source="site.yaml")
    raw["cameras"] = [{"id": "cam-1", "url": "rtsp://viewer:pw@192.0.2.10/s"}]
    with pytest.raises(ConfigError, match="must not hold credentials"):
        validate(raw, EdgeConfig, source="site.yaml")
    raw["cameras"] = [{"id": "cam-1", "url": "rtsp://192.0.2.10/s", "detect": {"fsp": 5}}]
    with pytest.raises(ConfigError, match=r"cameras\.0\.detect\.fsp: unknown key"):
        validate(raw, EdgeConfig, source="site.yaml")


def test_a_resolution_change_mid_stream_is_taken_and_the_view_relearned() -> None:
    analyzer = Analyzer(CameraConfig(id="cam-1", health={"learn_s": 1}))  # type: ignore[arg-type]
    rng = np.random.default_rng(1)
    for i, (w, h) in enumerate([(1280, 720)] * 20 + [(640, 360)] * 20):
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        analyzer.analyse(av.VideoFrame.from_ndarray(image, format="bgr24"), i * 200)
    assert analyzer.size == (640, 360)
    assert analyzer.resolution_changes == 1
