"""A thrown object on the one road: façade clip → RTSP simulator → camera worker → edge → cloud.

The clip (simulators/facade.py, a tuning seed) holds one throw from a known window among birds,
leaves, insects, lights, laundry and traffic; the simulator loops it, so the throw comes again
every 12 s. The cloud must hold exactly one `thrown_object` alert, critical, from that camera,
with the floor the object left from, however many times it was seen.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import pytest

from edge.config import EdgeConfig
from edge.video.config import CameraConfig
from shouwang.services import Mosquitto
from simulators.camera import CameraSimulator, CameraSpec
from tests.conftest import eventually
from tests.scenarios.site import Site, community

pytestmark = pytest.mark.integration
CAMERA = "cam-facade"


async def thrown(site: Site) -> list[dict[str, Any]]:
    return [a for a in await site.alerts("thrown_object") if a["device"] == CAMERA]


async def test_a_generated_throw_is_one_critical_alert_with_its_floor_in_the_cloud(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path,
    camera_sim: Callable[..., CameraSimulator], facade_clip: Callable[..., Path],
) -> None:
    # The throw comes 5 s into each loop: the camera is streaming by then (a stream joined
    # mid-flight starts at its next key frame, and a throw seen from halfway is traced back
    # less surely: tests/unit/test_throw_physics.py).
    clip = await asyncio.to_thread(facade_clip, seed=11, condition="day", throws=1,
                                   seconds=12, lead_s=5.0)
    truth = json.loads(clip.with_suffix(".json").read_text())
    sim = camera_sim([CameraSpec(id=CAMERA, kind="file", file=clip)])

    def change(config: EdgeConfig) -> EdgeConfig:
        camera = CameraConfig.model_validate({
            **truth["camera"], "url": sim.url(CAMERA),
            "location": config.devices[0].location, "record": {"pre_s": 2, "post_s": 2},
        })
        return EdgeConfig.model_validate({**config.model_dump(mode="json"),
                                          "cameras": [camera.model_dump(mode="json")]})

    async with community(make_broker, tmp_path, evidence=True, change_edge=change) as site:
        async def one() -> dict[str, Any] | None:
            found = await thrown(site)
            return found[0] if found else None

        alert = await eventually(one, timeout=180)
        assert alert["severity"] == "critical"
        data = alert["detail"]["why"]["data"]
        assert data["floor"] == truth["throws"][0]["floor"], data
        assert data["column"] == truth["throws"][0]["column"], data
        assert data["candidates"].startswith(f"{data['floor']}:{data['column']}:")
        # Its evidence: the snapshot as seen, the snapshot marked (track, candidate windows), the
        # launch area enlarged, the clip as the camera sent it and the clip with the track drawn.
        async def kinds() -> dict[str, dict[str, Any]] | None:
            assert site.cloud.evidence is not None
            found = {e["kind"]: e for e in await site.cloud.evidence.for_alert(alert["id"])}
            wanted = {"snapshot", "marked", "launch", "clip", "marked_clip"}
            return found if wanted <= set(found) else None

        kept = await eventually(kinds, timeout=120)
        assert site.cloud.evidence is not None
        for kind in ("snapshot", "marked", "launch"):
            assert kept[kind]["content_type"] == "image/jpeg"
        marked = cv2.imread(str(site.cloud.evidence.path(kept["marked"]["sha256"])))
        plain = cv2.imread(str(site.cloud.evidence.path(kept["snapshot"]["sha256"])))
        assert marked.shape == plain.shape
        # The track is drawn red where the object was seen (the plain snapshot is not red there).
        track = [[int(v) for v in p.split(",")[1:]] for p in data["track"].split(";")]
        # Beyond the ring that marks the first sighting.
        points = [(x, y) for x, y in track if abs(x - track[0][0]) + abs(y - track[0][1]) > 17]
        red = [_red(marked[y, x]) for x, y in points]
        assert len(red) >= 3, track
        assert sum(red) >= 0.8 * len(red), (red, track)
        assert not all(_red(plain[y, x]) for x, y in points)
        for kind in ("clip", "marked_clip"):
            assert kept[kind]["content_type"] == "video/mp4"
        with av.open(str(site.cloud.evidence.path(kept["marked_clip"]["sha256"]))) as played:
            frames = [f.to_ndarray(format="bgr24") for f in played.decode(video=0)]
        assert len(frames) >= 25  # pre_s + post_s: 4 s at 25 fps, from a keyframe
        assert sum(_red(frames[-1][y, x]) for x, y in points) >= 0.8 * len(points)
        # Seen again on the next loops of the clip: still one alert.
        await eventually(lambda: _loops(sim), timeout=120)
        assert len(await thrown(site)) == 1


def _red(bgr: Any) -> bool:
    b, g, r = (int(v) for v in bgr)
    return r > 170 and g < 100 and b < 100


def _loops(sim: CameraSimulator) -> bool:
    return sim.frames_sent(CAMERA) >= 2 * 300 + 50
