"""A thrown object's evidence pictures: the track drawn where the object was, the candidate
windows outlined where the calibration puts them, the launch area enlarged around the first
sighting; without a calibration the track alone."""

from __future__ import annotations

import numpy as np
import pytest

from edge.video.throw.calibration import Facade, FacadeConfig
from edge.video.throw.detector import ThrowConfig, ThrowDetector
from edge.video.throw.evidence import BEST, LAUNCH_WIDTH, TRACK, cell, launch_area, mark

CORNERS = ((412.0, 38.0), (905.0, 61.0), (889.0, 690.0), (430.0, 702.0))
FACADE = Facade(FacadeConfig(corners=CORNERS, floors=(3, 18), columns=6))
# A body leaving floor 12, column 3 and falling (full-frame pixels, as the detector gives).
START = FACADE.image_points(np.array([[2.5, 12 - 3 + 0.3]]))[0]
TRACK_PTS = [[3040 + 40 * k, float(START[0]) + 0.3 * k, float(START[1]) + 1.6 * k * k]
             for k in range(12)]
FIELDS = {"floor": 12, "column": 3, "confidence": 0.9,
          "candidates": [[12, 3, 0.71], [13, 3, 0.18], [11, 3, 0.06]], "track": TRACK_PTS}


def wall() -> np.ndarray:
    return np.full((720, 1280, 3), 128, np.uint8)


def is_colour(pixel: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - colour) < 40))


def test_the_track_and_the_best_window_are_drawn_where_they_are() -> None:
    out = mark(wall(), FIELDS, FACADE)
    for _t, x, y in TRACK_PTS[4:]:  # the first ones are inside the launch ring
        assert is_colour(out[round(y), round(x)], TRACK), (x, y)
    # The best window's outline: the middle of its top edge.
    top = cell(FACADE, 12, 3)[:2].mean(axis=0)
    assert is_colour(out[round(top[1]), round(top[0])], BEST)
    # Nothing drawn far from the track and the candidates (the wall is untouched there).
    assert (out[700, 20] == 128).all()
    assert (out[20, 1260] == 128).all()


def test_the_cell_of_a_window_is_where_the_calibration_maps_it() -> None:
    corners = cell(FACADE, 12, 3).astype(float)
    uv = FACADE.facade_points(corners)
    np.testing.assert_allclose(uv, [[2, 10], [3, 10], [3, 9], [2, 9]], atol=0.02)  # corners rounded to whole pixels


def test_the_launch_area_is_enlarged_around_the_first_sighting() -> None:
    out = launch_area(wall(), FIELDS, FACADE)
    assert out.shape == (LAUNCH_WIDTH * 3 // 4, LAUNCH_WIDTH, 3)
    assert (np.abs(out.astype(int) - TRACK).max(axis=2) < 40).sum() > 200  # the track is there
    assert (np.abs(out.astype(int) - BEST).max(axis=2) < 40).sum() > 200  # the window too


def test_without_a_calibration_only_the_track_is_drawn() -> None:
    out = mark(wall(), {**FIELDS, "floor": None, "column": None, "candidates": []}, None)
    assert (np.abs(out.astype(int) - BEST).max(axis=2) < 40).sum() == 0
    _t, x, y = TRACK_PTS[5]
    assert is_colour(out[round(y), round(x)], TRACK)
    assert launch_area(wall(), {**FIELDS, "candidates": []}, None).shape[1] == LAUNCH_WIDTH
    with pytest.raises(ValueError, match="no launch area"):
        launch_area(wall(), {**FIELDS, "track": []}, None)


def test_a_marked_clip_frame_shows_the_track_only_as_far_as_seen() -> None:
    early = mark(wall(), FIELDS, FACADE, until_ms=TRACK_PTS[3][0])
    _t, x, y = TRACK_PTS[-1]
    assert not is_colour(early[round(y), round(x)], TRACK)  # not yet there
    late = mark(wall(), FIELDS, FACADE, until_ms=TRACK_PTS[-1][0])
    assert is_colour(late[round(TRACK_PTS[-1][2]), round(TRACK_PTS[-1][1])], TRACK)
    before = mark(wall(), FIELDS, FACADE, until_ms=TRACK_PTS[0][0] - 40)
    assert (np.abs(before.astype(int) - TRACK).max(axis=2) < 40).sum() == 0  # no track at all
    assert (np.abs(before.astype(int) - BEST).max(axis=2) < 40).sum() > 200  # the windows are


def test_the_detector_keeps_a_bounded_ring_of_facade_frames_for_the_launch_picture() -> None:
    config = ThrowConfig(launch_ring_s=1.0, launch_ring_mb=1.0)
    detector = ThrowDetector(config, 1280, 720, FACADE)
    x1, y1, x2, y2 = detector.box
    for n in range(100):  # 4 s at 25 fps
        luma = np.full((720, 1280), n, np.uint8)
        detector.update(luma, 40 * n)
    kept = detector.frame_at(40 * 99)
    assert kept is not None
    crop, origin = kept
    assert origin == (x1, y1)
    assert crop.shape == (y2 - y1, x2 - x1)
    assert crop[0, 0] == 99
    assert detector.frame_at(40 * 50) is None  # older than launch_ring_s
    assert detector.frame_at(40 * 99 + 1) is None  # no such frame
    # At most launch_ring_mb of them, whatever the seconds say.
    frames = sum(detector.frame_at(40 * n) is not None for n in range(100))
    assert frames * crop.nbytes <= 2**20
    assert frames == min(26, 2**20 // crop.nbytes)
