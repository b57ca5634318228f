"""Motion gating on frames made from a real photo: what moves gives a box, light and noise do not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.video.frames import FrameError, shrink
from edge.video.motion import Box, MotionConfig, MotionDetector
from tests.unit import video_scenes as vs

FW, FH = 1280, 720  # a 720p camera


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def street() -> np.ndarray:
    """The camera's grey 720p view (real texture, upscaled from the test scene)."""
    return cv2.resize(vs.grey(vs.view()), (FW, FH), interpolation=cv2.INTER_LINEAR)


def with_square(img: np.ndarray, x: int, y: int, size: int = 80, level: int = 235) -> np.ndarray:
    out = img.copy()
    out[y : y + size, x : x + size] = level
    return out


def settle(detector: MotionDetector, base: np.ndarray, rng: np.random.Generator,
           frames: int = 10) -> None:
    for _ in range(frames):
        assert detector.detect(vs.sensor_noise(base, rng)) == []


def contains(box: Box, x1: int, y1: int, x2: int, y2: int) -> bool:
    return box.x1 <= x1 and box.y1 <= y1 and box.x2 >= x2 and box.y2 >= y2


def test_a_square_crossing_the_view_gives_one_box_around_it_each_frame(rng):
    """A light object (a person in a white coat) crosses a still, noisy street."""
    base, detector = street(), MotionDetector(FW, FH)
    settle(detector, base, rng)
    for step in range(12):
        x = 200 + 60 * step
        boxes = detector.detect(vs.sensor_noise(with_square(base, x, 300), rng))
        assert len(boxes) == 1, (step, boxes)
        box = boxes[0]
        assert contains(box, x, 300, x + 80, 380), (step, box)
        # Tight enough to crop for a detector: at most ~3 small-frame pixels of margin a side.
        assert (box.x1 >= x - 40, box.x2 <= x + 80 + 40) == (True, True), (step, box)
        assert (box.y1 >= 300 - 24, box.y2 <= 380 + 24) == (True, True), (step, box)


@pytest.mark.parametrize("size", [(640, 360), (213, 120)])
def test_a_smaller_copy_of_the_frame_gives_the_same_boxes_as_the_full_frame(rng, size):
    """A worker that already shrank the frame to its `detect` size (or to the motion size)
    passes that: the boxes still come in full-frame pixels."""
    base = street()
    full, small = MotionDetector(FW, FH), MotionDetector(FW, FH)
    for step in range(8):
        frame = vs.sensor_noise(with_square(base, 300 + 50 * step, 200) if step > 3 else base, rng)
        assert full.detect(frame) == small.detect(shrink(frame, size))


def test_a_bgr_frame_is_taken_too(rng):
    """A colour frame is converted to grey first; the square is found the same way."""
    base = cv2.cvtColor(street(), cv2.COLOR_GRAY2BGR)
    detector = MotionDetector(FW, FH)
    detector.detect(base)
    boxes = detector.detect(with_square(base, 500, 300))
    assert len(boxes) == 1
    assert contains(boxes[0], 500, 300, 580, 380)


@pytest.mark.parametrize("change", [+70, -60])
def test_a_sudden_global_brightness_jump_is_not_motion(rng, change):
    """The camera's exposure jumps (or a cloud passes): every pixel brighter or darker at once."""
    base, detector = street(), MotionDetector(FW, FH)
    settle(detector, base, rng)
    shifted = np.clip(base.astype(np.int16) + change, 0, 255).astype(np.uint8)
    for _ in range(5):
        assert detector.detect(vs.sensor_noise(shifted, rng)) == []


def test_the_ir_switch_is_a_lighting_event_not_motion(rng):
    """Dusk: the camera switches to infrared; the same street turns grey with other contrasts."""
    detector = MotionDetector(FW, FH)
    settle(detector, street(), rng)
    night = cv2.resize(vs.infrared(vs.view(), rng), (FW, FH))
    assert detector.detect(night) == []
    assert detector.lighting_event
    for _ in range(5):  # the background restarted from the night picture
        assert detector.detect(vs.sensor_noise(night, rng)) == []
    boxes = detector.detect(with_square(night, 600, 200))  # and motion is seen again at night
    assert len(boxes) == 1
    assert contains(boxes[0], 600, 200, 680, 280)


def test_a_flash_is_not_motion(rng):
    """A camera flash or lightning: one frame far brighter and flattened, then the normal view."""
    base, detector = street(), MotionDetector(FW, FH)
    settle(detector, base, rng)
    flash = np.clip(base.astype(np.float32) * 0.3 + 200, 0, 255).astype(np.uint8)
    assert detector.detect(flash) == []
    assert detector.detect(vs.sensor_noise(base, rng)) == []


def test_sensor_noise_and_compression_artefacts_are_not_motion(rng):
    """A still scene at night gain (strong noise) through a low H.264-like quality."""
    base, detector = street(), MotionDetector(FW, FH)
    for _ in range(40):
        noisy = vs.sensor_noise(base, rng, sigma=8)
        ok, jpeg = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 25])
        assert ok
        assert detector.detect(cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)) == []


def test_rain_streaks_are_not_motion(rng):
    """Rain at a distance: thin bright streaks at random places in every frame average away in
    the small frame. (Drops on or near the lens are big, blurred and do give motion; the detector
    behind the gate is what tells them from a person.)"""
    base, detector = street(), MotionDetector(FW, FH)
    for _ in range(20):
        assert detector.detect(vs.rain(vs.sensor_noise(base, rng), rng, drops=800)) == []


def test_motion_inside_a_privacy_mask_is_never_reported(rng):
    """A neighbour's window is masked: someone moving behind it gives nothing; outside, a box."""
    window = [[800, 100], [1200, 100], [1200, 500], [800, 500]]
    base = street()
    detector = MotionDetector(FW, FH, masks=[window])
    settle(detector, base, rng)
    for step in range(6):
        inside = with_square(base, 850 + 40 * step, 200, size=100)
        assert detector.detect(vs.sensor_noise(inside, rng)) == []
    boxes = detector.detect(vs.sensor_noise(with_square(base, 200, 300), rng))
    assert len(boxes) == 1
    assert contains(boxes[0], 200, 300, 280, 380)


def test_an_object_that_stops_is_taken_into_the_background(rng):
    """A car parks: motion while it stands there, then it becomes part of the scene."""
    config = MotionConfig(absorb_after_frames=5, frame_alpha=0.2)
    base, detector = street(), MotionDetector(FW, FH, config)
    settle(detector, base, rng)
    parked = with_square(base, 400, 300, size=120, level=20)
    seen = [bool(detector.detect(vs.sensor_noise(parked, rng))) for _ in range(40)]
    assert seen[:5] == [True] * 5
    assert seen[-10:] == [False] * 10


def test_a_resolution_change_is_a_clear_error(rng):
    """The camera's stream switched from 720p to 1080p mid-stream (reconfigured by someone)."""
    detector = MotionDetector(FW, FH)
    detector.detect(street())
    with pytest.raises(FrameError, match=r"frame is 1920x1080, expected 1280x720"):
        detector.detect(np.zeros((1080, 1920), np.uint8))
    with pytest.raises(FrameError, match=r"frame is 640x480, expected 1280x720"):
        detector.detect(np.zeros((480, 640), np.uint8))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((FH, FW), np.float32), "8-bit"),
        (np.zeros((FH, FW, 4), np.uint8), "shape"),
        ([[0, 0], [0, 0]], "numpy array"),
    ],
)
def test_a_frame_of_the_wrong_kind_is_a_clear_error(frame, message):
    with pytest.raises(FrameError, match=message):
        MotionDetector(FW, FH).detect(frame)


def test_masks_over_the_whole_frame_are_refused():
    with pytest.raises(ValueError, match="whole frame"):
        MotionDetector(FW, FH, masks=[[[0, 0], [FW, 0], [FW, FH], [0, FH]]])


def test_a_mask_with_two_points_is_refused():
    with pytest.raises(ValueError, match="mask polygon 0: needs at least 3"):
        MotionDetector(FW, FH, masks=[[[0, 0], [10, 10]]])
