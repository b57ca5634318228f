"""A watchlist hit on the one road: RTSP gate camera → worker → edge → cloud alert with crops.

The gate camera (the simulator loops a scene composed from real photos, tests/face_scene.py)
shows the person enrolled from `obama.jpg` in another photo, then a person nobody enrolled.
Exactly one `watchlist_hit` alert reaches the cloud, carrying ids only (person, list, score,
track), with the track's best face crops, a snapshot and a clip as its evidence; the loop shows
the person again every ten seconds, and the list's cooldown keeps it one alert. Every face in
every picture kept on the gateway and in the cloud is the enrolled person's; none is the
stranger's.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np
import pytest

from edge.config import EdgeConfig
from edge.video.config import CameraConfig
from edge.video.detectors.retinaface import RetinaFace, RetinaFaceConfig
from edge.video.face.embedder import FaceEmbedder
from edge.video.face.store import DEFAULT_LISTS
from shouwang.services import Mosquitto
from simulators.camera import CameraSimulator, CameraSpec
from tests import face_photos
from tests.conftest import eventually
from tests.face_scene import gate_clip
from tests.scenarios.site import Site, community
from tests.video.test_face_analyze import enrol

pytestmark = pytest.mark.integration
GATE = "cam-gate-01"


def with_face_camera(sim: CameraSimulator) -> Callable[[EdgeConfig], EdgeConfig]:
    parts = urlsplit(sim.url(GATE))
    url = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port}"))

    def change(config: EdgeConfig) -> EdgeConfig:
        camera = CameraConfig(id=GATE, url=url, location=config.devices[0].location,
                              analytics=["face"], record={"pre_s": 1, "post_s": 1},  # type: ignore[arg-type]
                              stall_timeout_s=20)
        return EdgeConfig.model_validate(
            {**config.model_dump(mode="json"), "cameras": [camera.model_dump(mode="json")]}
        )

    return change


async def watchlist_alerts(site: Site) -> list[dict[str, Any]]:
    return [a for a in await site.alerts("watchlist_hit") if a["device"] == GATE]


JPEG_B64 = re.compile(rb"/9j/[A-Za-z0-9+/=]{200,}")  # a JPEG in base64, as in a JSON body


def pictures_in(data: bytes) -> list[np.ndarray]:
    """Every JPEG picture held whole anywhere in `data`: a file of its own, a message in a
    broker's store or an outbox, base64 inside JSON. (A blob a database splits over its
    pages is not put together again: evidence is kept in files, not in the databases.)"""
    def picture(raw: bytes) -> np.ndarray | None:
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        return image if image is not None and min(image.shape[:2]) >= 32 else None

    found = []
    ends = [m.end() for m in re.finditer(rb"\xff\xd9", data)]
    for start in (m.start() for m in re.finditer(rb"\xff\xd8\xff", data)):
        # The picture ends at one of the next few end markers (a thumbnail inside it ends
        # first): the longest of them that decodes.
        for end in [e for e in ends if e > start][:8][::-1]:
            if (image := picture(data[start:end])) is not None:
                found.append(image)
                break
    for m in JPEG_B64.finditer(data):
        try:
            raw = base64.b64decode(m.group() + b"=" * (-len(m.group()) % 4))
        except ValueError:
            continue
        if (image := picture(raw)) is not None:
            found.append(image)
    return found


def faces_kept(roots: list[Path], skip: frozenset[Path] = frozenset()
               ) -> list[tuple[str, float, float]]:
    """(file, similarity to the enrolled photo, to the stranger) of every face in every
    picture held in any file under `roots` (databases, outboxes and broker stores included)."""
    detector, embedder = RetinaFace(RetinaFaceConfig(score_threshold=0.6)), FaceEmbedder()

    def describe(image: np.ndarray) -> list[np.ndarray]:
        found = detector.detect(image)
        assert found.landmarks is not None
        return [embedder.embed([embedder.align(image, lm)])[0] for lm in found.landmarks]

    [enrolled] = describe(face_photos.image("obama"))
    [stranger] = describe(face_photos.image("biden"))
    out = []
    for root in roots:
        for path in root.rglob("*"):
            if not path.is_file() or path in skip or path.stat().st_size == 0:
                continue
            for image in pictures_in(path.read_bytes()):
                for face in describe(image):
                    out.append((str(path), float(face @ enrolled), float(face @ stranger)))
    return out


async def test_an_enrolled_face_at_the_gate_is_one_watchlist_hit_with_its_crops(
    make_broker: Callable[[str], Mosquitto], tmp_path: Path,
    camera_sim: Callable[..., CameraSimulator],
) -> None:
    clip = await asyncio.to_thread(gate_clip, tmp_path / "gate.mp4",
                                   [("obama2", 1.0, 4.0), ("biden", 5.0, 8.0)])
    sim = camera_sim([CameraSpec(id=GATE, kind="file", file=clip)])
    await asyncio.to_thread(enrol, tmp_path / "edge", "P-0042", "obama")
    async with community(make_broker, tmp_path, evidence=True,
                         change_edge=with_face_camera(sim)) as site:
        async def one() -> dict[str, Any] | None:
            found = await watchlist_alerts(site)
            return found[0] if len(found) == 1 else None

        alert = await eventually(one, timeout=120)
        why = alert["detail"]["why"]["data"]
        assert (why["person"], why["watchlist"]) == ("P-0042", "police")
        assert why["confidence"] >= DEFAULT_LISTS["police"].threshold
        # The crops, a snapshot and a clip reach the cloud with the alert.
        assert site.cloud.evidence is not None

        async def evidence() -> list[dict[str, Any]] | None:
            assert site.cloud.evidence is not None
            found = await site.cloud.evidence.for_alert(alert["id"])
            images = [e for e in found if e["content_type"] == "image/jpeg"]
            videos = [e for e in found if e["content_type"] == "video/mp4"]
            return found if len(images) >= 2 and videos else None

        await eventually(evidence, timeout=90)
        # Another pass of the loop: the cooldown keeps it one alert, and the stranger never
        # gives one.
        await asyncio.sleep(12)  # the loop shows both people again
        assert len(await watchlist_alerts(site)) == 1
        # Nothing of the enrolled photo's pixels or anyone's descriptor sits in clear on the
        # gateway: the store is sealed, the only images are the hit's evidence.
        enrolled = face_photos.photo("obama").read_bytes()[:4096]
        for path in site.edge.config.data_dir.rglob("*"):
            if path.is_file():
                assert enrolled not in path.read_bytes(), path
        # Every face in every picture kept anywhere, the gateway's data directory (its outbox
        # and evidence), both brokers' stores, the cloud's database and evidence, is the
        # enrolled person; nothing of the stranger is anywhere.
        faces = await asyncio.to_thread(faces_kept, [tmp_path], frozenset({clip}))
        assert len(faces) >= 2  # the crops and the snapshot at least
        for where, like_enrolled, like_stranger in faces:
            assert like_enrolled >= DEFAULT_LISTS["police"].threshold, where
            assert like_stranger < DEFAULT_LISTS["missing_elder"].threshold, where
