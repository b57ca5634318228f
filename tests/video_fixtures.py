"""Fixtures for video tests: real H.264 clips made at set-up time and simulated RTSP cameras.

Registered for every test by tests/conftest.py (`pytest_plugins`):

    def test_x(camera_clip, camera_sim):
        clip = camera_clip(width=1920, height=1080)                # cached MP4 of a scene
        sim = camera_sim([CameraSpec(id="gate", kind="file", file=clip),
                          CameraSpec(id="yard", width=1280, height=720,
                                     username="viewer", password="secret")])
        sim.url("yard")                 # rtsp://viewer:secret@127.0.0.1:PORT/yard
        sim.fault("gate", "cover")      # ... and sim.restore("gate")

For a server shared by the tests of a module, use `CameraSimulator` in a module fixture (see
tests/video/test_camera_sim.py); a test must restore the faults it caused.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.camera import CameraSimulator, CameraSpec, make_clip


@pytest.fixture(scope="session")
def camera_clip(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`camera_clip(width=1280, height=720, fps=25, seconds=10, seed=0, ...)` → the path of a
    real H.264 MP4 of a synthetic street scene (someone walks through 3–7 s into every 10 s),
    made once per session, or once for good under $SHOUWANG_CLIP_CACHE if that is set."""
    cache = os.environ.get("SHOUWANG_CLIP_CACHE")
    directory = Path(cache) if cache else tmp_path_factory.mktemp("camera-clips")

    def clip(**kwargs: Any) -> Path:
        return make_clip(directory, **kwargs)

    return clip


@pytest.fixture
def camera_sim(tmp_path: Path) -> Iterator[Callable[..., CameraSimulator]]:
    """`camera_sim(cameras, **options)` → a started CameraSimulator on a free port, stopped
    after the test. Its log is `tmp_path/camera-sim-N.log` (quoted when it fails to start)."""
    started: list[CameraSimulator] = []

    def start(cameras: list[CameraSpec], **options: Any) -> CameraSimulator:
        options.setdefault("log_path", tmp_path / f"camera-sim-{len(started) + 1}.log")
        sim = CameraSimulator(cameras, **options)
        started.append(sim)
        return sim.start()

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture(scope="session")
def facade_clip(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`facade_clip(seed=3, condition="day", throws=1, seconds=12, distractors=True,
    lead_s=1.5)` → a real
    H.264 MP4 of a façade (simulators/facade.py) with `.json` ground truth beside it (the
    camera entry with its calibration, and the throws). Tests use tuning seeds (< 1000)."""
    from simulators.facade import Scene, write_clip

    cache = os.environ.get("SHOUWANG_CLIP_CACHE")
    directory = Path(cache) if cache else tmp_path_factory.mktemp("facade-clips")

    def clip(seed: int = 3, condition: str = "day", throws: int = 1, seconds: float = 12.0,
             distractors: bool = True, lead_s: float = 1.5) -> Path:
        path = directory / (f"facade-{condition}-seed{seed}-throws{throws}-{seconds:g}s"
                            f"{'' if distractors else '-clean'}"
                            f"{'' if lead_s == 1.5 else f'-lead{lead_s:g}s'}.mp4")
        if not path.exists():
            scene = Scene(seed, condition, seconds=seconds, throws=throws,  # type: ignore[arg-type]
                          distractors=distractors, lead_s=lead_s)
            write_clip(scene, path)
        return path

    return clip
