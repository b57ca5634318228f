"""A frame is analysed at the time the camera took it, not the time the gateway decoded it.

A busy gateway (or one catching up after a network stall) decodes frames in bursts: forty
milliseconds of the camera's time can arrive two milliseconds apart. Anything that measures
motion over time, above all a falling body's acceleration, must see the camera's spacing.
The worker reads the stream's own timestamps, anchored to the gateway's clock (FrameClock).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.video.config import CameraConfig
from edge.video.stream import FrameClock, open_stream
from edge.video.worker import CameraWorker


def test_frames_decoded_in_a_burst_keep_the_cameras_spacing() -> None:
    clock = FrameClock()
    times = [clock.at(5.0 + n * 0.04, 10_000 + 2 * n) for n in range(10)]  # 10 frames in 18 ms
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert all(39 <= s <= 40 for s in steps), steps  # drawn back a fraction: it ran ahead
    # The decoder catches up: the next frames come at the camera's pace, on the same clock.
    more = [clock.at(5.0 + n * 0.04, 10_000 + 40 * n) for n in range(10, 15)]
    assert [b - a for a, b in itertools.pairwise(more)] == [40] * 4
    assert all(abs(t - (10_000 + 40 * n)) <= 3 for t, n in zip(more, range(10, 15), strict=True))


def test_a_stream_that_runs_ahead_keeps_its_spacing_and_order() -> None:
    """The first frame sat in a buffer, or a file read faster than real time: its frames are
    ahead of the gateway's clock; they keep the camera's spacing within half a percent."""
    clock = FrameClock()
    times = [clock.at(n * 0.04, 10_000 + n) for n in range(500)]  # 20 s of video in 0.5 s
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert min(steps) >= 39
    assert max(steps) <= 40
    assert abs((times[-1] - times[0]) - 499 * 40) <= 499 * 0.2 + 1


def test_timestamps_that_jump_or_lag_far_behind_are_anchored_again_and_stay_monotonic() -> None:
    clock = FrameClock(max_lag_ms=5000)
    a = clock.at(100.0, 50_000)
    b = clock.at(3.0, 50_040)  # the camera restarted its clock: back in time
    c = clock.at(3.04, 50_080)
    assert a < b < c
    assert b == 50_040
    assert c == 50_080
    d = clock.at(3.08, 60_000)  # ten seconds behind the gateway's clock: not believed
    assert d == 60_000
    e = clock.at(30.0, 60_040)  # 27 s ahead (frames skipped, a reset clock): not believed
    assert e == 60_040
    clock.restart()  # a new connection, new timestamps
    assert clock.at(0.0, 60_100) == 60_100
    assert clock.at(0.04, 60_101) == 60_140
    clock.restart()  # reconnected while ahead of the gateway's clock: forward, a frame on
    assert clock.at(0.0, 60_102) == 60_180
    assert clock.at(None, 60_200) == 60_200  # a frame without a timestamp: when it came
    assert clock.at(None, 60_150) == 60_201  # never backwards


@pytest.mark.integration
def test_a_throw_decoded_in_a_burst_is_found_at_its_floor(
    facade_clip: Callable[..., Path], tmp_path: Path,
) -> None:
    """The whole clip decoded as fast as the CPU goes (a gateway catching up): the throw is
    judged on the camera's clock and gets the floor it came from."""
    clip = facade_clip(seed=11, condition="day", throws=1, seconds=10)
    truth = json.loads(clip.with_suffix(".json").read_text())
    camera = CameraConfig.model_validate({**truth["camera"], "url": "rtsp://127.0.0.1:9/x"})
    sent: list[dict[str, Any]] = []

    def out(kind: str, body: dict[str, Any], **_: Any) -> None:
        if kind == "event" and body.get("event") == "thrown_object":
            sent.append(body)

    worker = CameraWorker(camera, out, tmp_path / "evidence")
    worker._stream(open_stream(camera, source=clip))
    worker._writer.shutdown(wait=True)
    assert len(sent) == 1, sent
    assert sent[0]["floor"] == truth["throws"][0]["floor"], sent[0]
    assert sent[0]["column"] == truth["throws"][0]["column"], sent[0]
