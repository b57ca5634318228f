"""Cameras on the one road: RTSP from the simulator → worker process → edge → cloud.

Each fault an installer or a vandal causes gives exactly one alert and one recovery in the
cloud, through the real edge daemon (which starts and supervises the camera workers), real
brokers and the cloud: a covered lens (with a snapshot and a playable clip attached), a
stalled stream (and its gap in the ledger, never read as "no detections"), refused
credentials, a worker killed. Health and recording times are shortened so a test takes
seconds, not minutes; the logic is the same.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av
import pytest
from sqlalchemy import select

from cloud.schema import events
from edge.config import EdgeConfig
from edge.video.config import CameraConfig
from shouwang.services import Mosquitto
from simulators.camera import CameraSimulator, CameraSpec
from tests.conftest import eventually
from tests.scenarios.site import Site, community

pytestmark = pytest.mark.integration
GATE, YARD = "cam-gate", "cam-yard"
STALL_S = 6
QUICK_HEALTH = {
    "learn_s": 3,
    "occluded": {"raise_after_s": 3, "clear_after_s": 2},
    "defocused": {"raise_after_s": 4, "clear_after_s": 2},
    "moved": {"raise_after_s": 4, "clear_after_s": 2},
}


def bare(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port}"))


def with_cameras(sim: CameraSimulator, tmp_path: Path, *ids: str) -> Callable[[EdgeConfig], EdgeConfig]:
    password = tmp_path / "camera.pw"
    password.write_text("viewer-secret\n")

    def change(config: EdgeConfig) -> EdgeConfig:
        cams = [
            CameraConfig(
                id=i, url=bare(sim.url(i)), username="viewer", password_file=password,
                location=f"{config.devices[0].location}", stall_timeout_s=STALL_S,
                gap_min_s=2, record={"pre_s": 2, "post_s": 2},  # type: ignore[arg-type]
                health=QUICK_HEALTH,  # type: ignore[arg-type]
            )
            for i in ids
        ]
        return EdgeConfig.model_validate(
            {**config.model_dump(mode="json"), "cameras": [c.model_dump(mode="json") for c in cams]}
        )

    return change


@pytest.fixture
def sim(camera_sim: Callable[..., CameraSimulator]) -> CameraSimulator:
    specs = [CameraSpec(id=i, width=640, height=360, username="viewer", password="viewer-secret",
                        walk_every_s=6, walk_s=2) for i in (GATE, YARD)]
    return camera_sim(specs)


async def alerts_of(site: Site, type_: str, device: str = GATE) -> list[dict[str, Any]]:
    return [a for a in await site.alerts(type_) if a["device"] == device]


async def one_alert(site: Site, type_: str, state: str, device: str = GATE) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found = await alerts_of(site, type_, device)
        return found[0] if len(found) == 1 and found[0]["state"] == state else None

    result: dict[str, Any] = await eventually(check, timeout=90)
    return result


def streaming(site: Site, camera: str = GATE) -> bool:
    state = site.edge.liveness.snapshot().get(camera, {})
    return state.get("transport") == "connected" and state.get("data") == "fresh"


async def test_a_covered_lens_is_one_tamper_alert_with_a_snapshot_and_a_clip_then_one_recovery(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, sim: CameraSimulator
) -> None:
    async with community(make_broker, tmp_path, evidence=True,
                         change_edge=with_cameras(sim, tmp_path, GATE)) as site:
        await eventually(lambda: streaming(site), timeout=60)
        await _learned(site)
        sim.fault(GATE, "cover")
        tamper = await one_alert(site, "tamper", "open")
        assert tamper["detail"]["why"]["data"] == {"cause": "occluded"}
        sim.restore(GATE, "cover")
        await one_alert(site, "tamper", "resolved")
        # The snapshot and the clip of the moment are with the alert in the cloud.
        kept = await eventually(lambda: _evidence(site, tamper["id"], 2), timeout=60)
        types = sorted(e["content_type"] for e in kept)
        assert types == ["image/jpeg", "video/mp4"]
        assert site.cloud.evidence is not None
        clip = next(e for e in kept if e["content_type"] == "video/mp4")
        with av.open(str(site.cloud.evidence.path(clip["sha256"]))) as played:
            frames = sum(1 for _ in played.decode(video=0))
        assert frames >= 25  # pre_s + post_s of a 25 fps camera, less the GOP before the key
        assert len(await alerts_of(site, "tamper")) == 1


async def test_a_stalled_stream_is_lost_once_restored_once_and_its_gap_is_in_the_ledger(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, sim: CameraSimulator
) -> None:
    async with community(make_broker, tmp_path,
                         change_edge=with_cameras(sim, tmp_path, GATE, YARD)) as site:
        await eventually(lambda: streaming(site, GATE) and streaming(site, YARD), timeout=60)
        stalled_at = time.time() * 1000
        sim.fault(GATE, "stall")
        lost = await one_alert(site, "stream_lost", "open")
        sim.restore(GATE, "stall")
        restored_at = time.time() * 1000
        await one_alert(site, "stream_lost", "resolved")
        assert lost["detail"]["why"]["data"]["reason"] == "no_frames"
        gaps = await eventually(lambda: _events_of(site, GATE, "gap"), timeout=60)
        # No frame from the stall to the restore: the ledger says so, to within the timeout.
        assert abs(min(g["start_ms"] for g in gaps) - stalled_at) <= STALL_S * 1000
        assert abs(max(g["end_ms"] for g in gaps) - restored_at) <= STALL_S * 1000
        # The other camera on the same server never noticed.
        assert await alerts_of(site, "stream_lost", YARD) == []


async def test_refused_credentials_are_one_auth_alert_not_a_silent_retry_loop(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, sim: CameraSimulator
) -> None:
    async with community(make_broker, tmp_path,
                         change_edge=with_cameras(sim, tmp_path, GATE)) as site:
        await eventually(lambda: streaming(site), timeout=60)
        sim.fault(GATE, "refuse")  # the password was changed on the camera
        refused = await one_alert(site, "camera_auth_failed", "open")
        assert refused["device"] == GATE
        sim.restore(GATE, "refuse")
        await one_alert(site, "camera_auth_failed", "resolved")
        log = (tmp_path / "edge" / "video" / GATE / "worker.log").read_text()
        assert "viewer-secret" not in log  # the password is in no log line
        assert log.count("refused the credentials") == 1


async def test_a_killed_worker_is_restarted_and_the_other_camera_does_not_notice(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, sim: CameraSimulator
) -> None:
    async with community(make_broker, tmp_path,
                         change_edge=with_cameras(sim, tmp_path, GATE, YARD)) as site:
        await eventually(lambda: streaming(site, GATE) and streaming(site, YARD), timeout=60)
        video = site.edge.video
        assert video is not None
        os.kill(video.procs[GATE].pid, signal.SIGKILL)
        await eventually(lambda: video.restarts[GATE] == 1 and GATE in video.procs, timeout=30)
        await eventually(lambda: streaming(site, GATE), timeout=60)
        assert video.restarts[YARD] == 0
        assert await alerts_of(site, "stream_lost", YARD) == []


async def _learned(site: Site, camera: str = GATE) -> None:
    """The worker has learned the camera's view (its log says so): tamper can be judged."""
    log = site.edge.config.data_dir / "video" / camera / "worker.log"
    await eventually(lambda: log.exists() and "learned its view" in log.read_text(), timeout=60)


async def _evidence(site: Site, alert_id: str, n: int) -> list[dict[str, Any]] | None:
    assert site.cloud.evidence is not None
    found = await site.cloud.evidence.for_alert(alert_id)
    return found if len(found) >= n else None


async def _events_of(site: Site, device: str, name: str) -> list[dict[str, Any]]:
    assert site.cloud.store is not None
    async with site.cloud.store.engine.connect() as conn:
        rows = (
            await conn.execute(select(events.c.body).where(events.c.device == device,
                                                           events.c.name == name))
        ).scalars().all()
    return [dict(r) for r in rows]


async def test_defocus_and_a_turned_camera_are_one_alert_each_ir_and_a_drop_are_none(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path, sim: CameraSimulator
) -> None:
    async with community(make_broker, tmp_path,
                         change_edge=with_cameras(sim, tmp_path, GATE)) as site:
        await eventually(lambda: streaming(site), timeout=60)
        await _learned(site)
        # Night falls: the camera switches to grey IR frames of the same view. Not tamper.
        sim.fault(GATE, "ir")
        await _seconds(site, 8)
        sim.restore(GATE, "ir")
        # A vandal knocks the connection down; it is back at once: a gap, not a lost stream.
        sim.fault(GATE, "drop")
        await _seconds(site, 4)
        assert await alerts_of(site, "tamper") == []
        assert await alerts_of(site, "stream_lost") == []
        # Someone smears the lens: one alert, then one recovery once it is wiped.
        for fault, cause in (("defocus", "defocused"), ("turn", "moved")):
            sim.fault(GATE, fault)
            alert = await eventually(lambda c=cause: _tamper(site, c, "open"), timeout=90)
            sim.restore(GATE, fault)
            await eventually(lambda a=alert: _state(site, a["id"], "resolved"), timeout=90)
        causes = [a["detail"]["why"]["data"]["cause"] for a in await alerts_of(site, "tamper")]
        assert sorted(causes) == ["defocused", "moved"]


async def _tamper(site: Site, cause: str, state: str) -> dict[str, Any] | None:
    found = [a for a in await alerts_of(site, "tamper")
             if a["detail"]["why"]["data"]["cause"] == cause and a["state"] == state]
    return found[0] if len(found) == 1 else None


async def _state(site: Site, alert_id: str, state: str) -> bool:
    return any(a["id"] == alert_id and a["state"] == state for a in await alerts_of(site, "tamper"))


async def _seconds(site: Site, seconds: float) -> None:
    """Let the stream run this long (the worker judges the view once a second of it)."""
    until = time.monotonic() + seconds
    await eventually(lambda: time.monotonic() >= until, timeout=seconds + 30)
