"""The analyser's grey picture: the decoder's Y plane, as FFmpeg's grey would be, never written back.

The worker takes the analysed frame's grey picture from the Y plane without conversion
(edge/video/analysis.py); these tests hold it to what FFmpeg's scaler made before, for video
range and full range frames, and check that masking it never touches the decoded frame (the
decoder may still use it as a reference for the next ones).
"""

from __future__ import annotations

from typing import Any

import av
import cv2
import numpy as np
import pytest

from edge.video.analysis import Analyzer
from edge.video.config import CameraConfig
from edge.video.health import is_colour
from tests.unit import video_scenes as vs


def frame_of(width: int, height: int, fmt: str) -> av.VideoFrame:
    """A real-photo view as a decoder would hand it over, in `fmt`."""
    bgr = cv2.resize(vs.view(0), (width, height), interpolation=cv2.INTER_AREA)
    return av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format=fmt)


@pytest.mark.parametrize("fmt", ["yuv420p", "yuvj420p"])
@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)])
def test_the_grey_picture_is_ffmpegs_grey_of_the_analysed_size(fmt: str,
                                                               size: tuple[int, int]) -> None:
    frame = frame_of(*size, fmt)
    analyzer = Analyzer(CameraConfig(id="cam-1"))
    analyzer.analyse(frame, 0)
    grey = analyzer.grey(frame)
    ffmpeg = frame.reformat(width=640, height=360, format="gray").to_ndarray()
    assert grey.shape == ffmpeg.shape == (360, 640)
    assert grey.dtype == np.uint8
    # Same picture, same range: the scalers differ by a grey level or two, no more.
    diff = np.abs(grey.astype(np.int16) - ffmpeg.astype(np.int16))
    assert float(diff.mean()) < 2.5
    assert abs(float(grey.mean()) - float(ffmpeg.mean())) < 1.5


@pytest.mark.parametrize("width", [1280, 640])  # 640: the detect size, no shrinking at all
def test_masking_never_writes_into_the_decoded_frame(width: int) -> None:
    height = width * 9 // 16
    frame = frame_of(width, height, "yuv420p")
    before = bytes(frame.planes[0])
    mask = [[[0, 0], [width // 2, 0], [width // 2, height // 2], [0, height // 2]]]
    analyzer = Analyzer(CameraConfig(id="cam-1", privacy_masks=mask))
    analyzer.analyse(frame, 0)
    assert bytes(frame.planes[0]) == before


def test_the_colour_copy_is_made_only_for_the_frames_health_judges() -> None:
    analyzer = Analyzer(CameraConfig(id="cam-1"))  # detect 5 fps, health judged once a second
    made: list[int] = []
    keep = analyzer.tiny_colour

    def counting(frame: Any) -> np.ndarray:
        made.append(1)
        return keep(frame)

    analyzer.tiny_colour = counting  # type: ignore[method-assign]
    frame = frame_of(1280, 720, "yuv420p")
    for i in range(50):  # 10 s at 5 fps
        analyzer.analyse(frame, i * 200)
    assert analyzer.analysed == 50
    assert len(made) == 10


@pytest.mark.parametrize("fmt", ["yuv420p", "yuvj420p", "nv12", "bgr24"])
@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080), (704, 576), (703, 401)])
@pytest.mark.parametrize("ir", [False, True])
def test_the_tiny_colour_copy_is_ffmpegs_and_tells_day_from_ir(
    fmt: str, size: tuple[int, int], ir: bool,
) -> None:
    """The copy that tells colour (day) from grey (IR night) is made from the decoder's own
    planes (a few hundredths of a millisecond, where FFmpeg's scaler to 64×36 costs half a
    millisecond): the picture averaged down, at least as close to it as FFmpeg's copy, and
    the same answer."""
    bgr = cv2.resize(vs.view(0), size, interpolation=cv2.INTER_AREA)
    if ir:
        bgr = cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    truth = cv2.resize(bgr, (64, 36), interpolation=cv2.INTER_AREA).astype(np.int16)
    frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format=fmt)
    analyzer = Analyzer(CameraConfig(id="cam-1"))
    tiny = analyzer.tiny_colour(frame)
    ffmpeg = frame.reformat(width=64, height=36, format="bgr24").to_ndarray()
    assert tiny.shape == ffmpeg.shape == (36, 64, 3)
    ours_off = float(np.abs(tiny.astype(np.int16) - truth).mean())
    ffmpeg_off = float(np.abs(ffmpeg.astype(np.int16) - truth).mean())
    assert ours_off <= max(ffmpeg_off, 2.0) + 0.5, (ours_off, ffmpeg_off)
    assert is_colour(tiny) == is_colour(ffmpeg) == (not ir)
