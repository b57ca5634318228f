"""A thrown object's pictures as the camera worker keeps them, from a generated throw decoded
by the real worker: the launch area shows the object where it was first seen (not the empty
wall a second later, when the alarm is raised), and the marked clip draws the track as it
grows, not the whole of it from the first frame, and on down with the object after the alarm.

Pixels, not timings: the launch picture is compared with the same part of the wall before the
throw, and the clip's frames are read back with PyAV.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from edge.video.config import CameraConfig
from edge.video.stream import open_stream
from edge.video.throw.calibration import Facade
from edge.video.throw.evidence import LAUNCH_WIDTH, launch_box
from edge.video.worker import CameraWorker

pytestmark = pytest.mark.integration


def _run_worker(clip: Path, directory: Path) -> tuple[CameraConfig, list[dict[str, Any]]]:
    truth = json.loads(clip.with_suffix(".json").read_text())
    camera = CameraConfig.model_validate({**truth["camera"], "url": "rtsp://127.0.0.1:9/x",
                                          "record": {"pre_s": 2, "post_s": 2}})
    sent: list[dict[str, Any]] = []
    worker = CameraWorker(camera, lambda kind, body, **_: sent.append(body), directory)
    worker._stream(open_stream(camera, source=clip))
    worker._writer.shutdown(wait=True)  # the pictures and clips are written on its thread
    return camera, sent


def _wire(event: dict[str, Any]) -> dict[str, Any]:
    """The event's track and candidates as numbers (the MQTT fields are strings)."""
    track = [[float(v) for v in p.split(",")] for p in event["track"].split(";")]
    ranked = [[int(f), int(c), float(p)] for f, c, p in
              (x.split(":") for x in event["candidates"].split())]
    return {"track": track, "candidates": ranked}


def _red(bgr: np.ndarray) -> bool:
    b, g, r = (int(v) for v in bgr)
    return r > 170 and g < 100 and b < 100


@pytest.fixture(scope="module")
def worked(tmp_path_factory: pytest.TempPathFactory,
           facade_clip: Callable[..., Path]) -> tuple[Path, Path, CameraConfig,
                                                      list[dict[str, Any]]]:
    clip = facade_clip(seed=11, condition="day", throws=1, seconds=10)
    directory = tmp_path_factory.mktemp("throw-pictures")
    camera, sent = _run_worker(clip, directory)
    return clip, directory, camera, sent


def test_the_launch_area_shows_the_object_where_it_was_first_seen(
    worked: tuple[Path, Path, CameraConfig, list[dict[str, Any]]],
) -> None:
    clip, directory, camera, sent = worked
    events = [b for b in sent if b.get("event") == "thrown_object"]
    assert len(events) == 1, events
    fields = _wire(events[0])
    launch = [b["launch"] for b in sent if "launch" in b]
    assert len(launch) == 1, sent
    picture = cv2.imread(str(directory / f"{launch[0]}.jpg"))
    assert picture.shape[1] == LAUNCH_WIDTH
    # The same part of the wall before the throw (the clip's first frame), enlarged the same
    # way: where the two differ near the first sighting, the object is in the picture.
    assert camera.facade is not None
    facade = Facade(camera.facade)
    with av.open(str(clip)) as container:
        before = next(container.decode(video=0)).to_ndarray(format="bgr24")
    h, w = before.shape[:2]
    x1, y1, x2, y2 = launch_box(fields, facade, facade.bounds(w, h, grow=camera.throw.margin_px))
    factor = LAUNCH_WIDTH / (x2 - x1)
    wall = cv2.resize(before[y1:y2, x1:x2], (picture.shape[1], picture.shape[0]),
                      interpolation=cv2.INTER_CUBIC)
    grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY).astype(int)
    diff = np.abs(grey - cv2.cvtColor(wall, cv2.COLOR_BGR2GRAY).astype(int))
    # Pixels the marks cover (track, rings, the best window) are not the scene: left out.
    marked = (np.abs(picture.astype(int) - picture.mean(axis=2, keepdims=True)).max(axis=2)
              > 25)
    _t, x, y = fields["track"][0]
    cx, cy = (x - x1) * factor, (y - y1) * factor
    yy, xx = np.mgrid[: picture.shape[0], : picture.shape[1]]
    r = np.hypot(xx - cx, yy - cy)
    near = (r < 6 * factor) & ~marked  # the object is about 20 px across, enlarged
    far = (r > 30 * factor) & (r < 60 * factor) & ~marked
    assert near.sum() > 50
    assert far.sum() > 500
    assert (diff[near] > 40).sum() >= 0.25 * near.sum(), (diff[near].mean(), near.sum())
    # Away from it, the same wall: the picture is aligned and of the same scene.
    assert np.median(diff[far]) < 12, np.median(diff[far])


def test_the_marked_clip_draws_the_track_as_far_as_it_has_been_seen(
    worked: tuple[Path, Path, CameraConfig, list[dict[str, Any]]],
) -> None:
    _clip, directory, _camera, sent = worked
    fields = _wire(next(b for b in sent if b.get("event") == "thrown_object"))
    marked = [b["marked_clip"] for b in sent if "marked_clip" in b]
    assert len(marked) == 1, sent
    with av.open(str(directory / f"{marked[0]}.mp4")) as played:
        frames = [f.to_ndarray(format="bgr24") for f in played.decode(video=0)]
    track = fields["track"]
    first = track[0]
    # The last points, where the object was when the alarm was raised, beyond the ring that
    # marks the first sighting.
    late = [(round(x), round(y)) for _t, x, y in track[-4:]
            if abs(x - first[1]) + abs(y - first[2]) > 17]
    assert len(late) >= 2, track

    def red_late(frame: np.ndarray) -> int:
        return sum(_red(frame[y, x]) for x, y in late)

    counts = [red_late(f) for f in frames]
    # The clip starts before the throw (the ring's pre_s): nothing of the track there yet.
    assert counts[0] == 0, counts
    assert counts[-1] >= 0.8 * len(late), counts
    # It grows: once drawn at the late points, it stays.
    drawn = next(i for i, c in enumerate(counts) if c >= 0.8 * len(late))
    assert drawn > 0
    assert all(c >= 0.8 * len(late) for c in counts[drawn:]), counts


def _object_path(clip: Path) -> tuple[np.ndarray, np.ndarray]:
    """Where the generated clip's thrown object is drawn at each time: (times s, pixels)."""
    from simulators.facade import Scene

    name = clip.stem  # facade-{condition}-seed{seed}-throws{throws}-{seconds}s
    _, condition, seed, throws, seconds = name.split("-")[:5]
    scene = Scene(int(seed.removeprefix("seed")), condition,  # type: ignore[arg-type]
                  seconds=float(seconds.removesuffix("s")),
                  throws=int(throws.removeprefix("throws")))
    (mover,) = [m for m in scene.movers if m.kind == "throw"]
    return mover.times, scene.camera.project(mover.path)


def _first_frame_index(clip: Path, first: np.ndarray) -> int:
    """Which of the clip's frames the marked clip starts at (it starts at a keyframe of the
    ring): the one that looks most like its first frame."""
    small = cv2.cvtColor(cv2.resize(first, (320, 180)), cv2.COLOR_BGR2GRAY).astype(int)
    best: tuple[float, int] = (1e9, -1)
    with av.open(str(clip)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if frame.key_frame:
                grey = cv2.cvtColor(cv2.resize(frame.to_ndarray(format="bgr24"), (320, 180)),
                                    cv2.COLOR_BGR2GRAY).astype(int)
                best = min(best, (float(np.median(np.abs(grey - small))), n))
    return best[1]


@pytest.fixture(scope="module")
def from_high(tmp_path_factory: pytest.TempPathFactory,
              facade_clip: Callable[..., Path]) -> tuple[Path, Path, CameraConfig,
                                                         list[dict[str, Any]]]:
    """A throw from floor 14 of 21: after the alarm it falls for about two seconds more."""
    clip = facade_clip(seed=12, condition="day", throws=1, seconds=10)
    directory = tmp_path_factory.mktemp("throw-from-high")
    camera, sent = _run_worker(clip, directory)
    return clip, directory, camera, sent


def test_the_marked_clip_follows_the_object_down_after_the_alarm(
    from_high: tuple[Path, Path, CameraConfig, list[dict[str, Any]]],
) -> None:
    """The alarm is raised while the object still falls; the police need the whole fall: in
    the clip's frames after the alarm, the track reaches down to where the object is."""
    clip, directory, camera, sent = from_high
    events = [b for b in sent if b.get("event") == "thrown_object"]
    assert len(events) == 1, events  # one object, one alarm, however long it is followed
    fields = _wire(events[0])
    alarm_y = max(y for _t, _x, y in fields["track"])  # the lowest point known at the alarm
    marked = [b["marked_clip"] for b in sent if "marked_clip" in b]
    assert len(marked) == 1, sent
    with av.open(str(directory / f"{marked[0]}.mp4")) as played:
        frames = [f.to_ndarray(format="bgr24") for f in played.decode(video=0)]
    start = _first_frame_index(clip, frames[0])
    times, path = _object_path(clip)
    assert camera.facade is not None
    h, w = frames[0].shape[:2]
    bottom = Facade(camera.facade).bounds(w, h)[3]
    checked = []
    for k, frame in enumerate(frames):
        t = (start + k) / 25
        seen = np.flatnonzero(times <= t)
        if not len(seen) or t > times[-1]:
            continue
        x, y = path[seen[-1]]
        # Well below the alarm point, still well inside the façade (where it is watched).
        if not alarm_y + 60 < y < bottom - 30:
            continue
        step = float(np.hypot(*(path[seen[-1]] - path[np.flatnonzero(times <= t - 0.04)[-1]])))
        band = frame[int(alarm_y) + 20:int(y) + 10, max(0, int(x) - 40):int(x) + 40]
        reds = [yy for yy, xx in zip(*np.nonzero(
            (band[..., 2] > 170) & (band[..., 1] < 100) & (band[..., 0] < 100)), strict=True)]
        lowest = int(alarm_y) + 20 + max(reds) if reds else None
        checked.append((k, round(y), lowest))
        # The track drawn down to the object's last sighting: within two frames' fall of it.
        assert lowest is not None, (k, x, y, alarm_y)
        assert lowest >= y - 2 * step - 10, (k, x, y, alarm_y, lowest)
    assert len(checked) >= 5, (checked, alarm_y, bottom)
