"""Camera health on real-photo views: each tamper raised once and cleared once, nothing else.

Each test plays a camera at 5 frames a second (the `detect` rate) on stream timestamps: it
first watches its normal view for 20 s (it learns in the first 10), then the situation.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from edge.video.debounce import Debounce
from edge.video.frames import FrameError
from edge.video.health import CameraHealth, HealthConfig, PhaseMatch
from tests.unit import video_scenes as vs

FPS = 5
STEP_MS = 1000 // FPS
WARM_S = 20  # normal view before each situation


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


def play(health: CameraHealth, seconds: float, frame_at: Callable[[float], np.ndarray],
         fps: float = FPS, colour: bool | None = None) -> list[tuple[str, float, str]]:
    """Feed `seconds` of stream; frame_at(t in s) gives the frame. Events as (type, t s, cause)."""
    events = []
    for i in range(int(seconds * fps)):
        t_ms = round(i * 1000 / fps)
        for e in health.update(frame_at(t_ms / 1000), t_ms, colour=colour):
            events.append((e.type, e.t_ms / 1000, e.fields["cause"]))
    return events


def normal(rng: np.random.Generator) -> Callable[[], np.ndarray]:
    view = vs.grey(vs.view())
    return lambda: vs.sensor_noise(view, rng)


def scene(rng: np.random.Generator, during: tuple[float, float],
          situation: Callable[[float], np.ndarray]) -> Callable[[float], np.ndarray]:
    """The normal view, except `situation(t)` between `during` (seconds from the start)."""
    usual = normal(rng)
    return lambda t: situation(t) if during[0] <= t < during[1] else usual()


def test_a_covered_lens_is_one_occluded_after_the_debounce_and_one_clear_after(rng):
    """Someone holds a hand over the lens for 30 s, then takes it away."""
    health = CameraHealth()
    events = play(health, 70, scene(rng, (WARM_S, WARM_S + 30), lambda t: vs.covered(rng)))
    assert events == [("tamper", 30.0, "occluded"), ("tamper_cleared", 55.0, "occluded")]


def test_a_tamper_event_is_one_json_line_of_video_analyze(rng):
    """The record `shouwang video analyze` writes per event: type, t_ms, then the fields."""
    health = CameraHealth()
    usual = normal(rng)
    lines = []
    for i in range(40 * FPS):
        t_ms = i * STEP_MS
        frame = vs.covered(rng) if t_ms >= WARM_S * 1000 else usual()
        lines += [e.as_json() for e in health.update(frame, t_ms)]
    assert lines == [{"type": "tamper", "t_ms": 30000, "cause": "occluded"}]


def test_a_black_picture_is_occluded(rng):
    """The picture goes black (spray paint, a cap, a dead sensor) and stays so."""
    health = CameraHealth()
    events = play(health, 45, scene(rng, (WARM_S, 99), lambda t: np.zeros((vs.H, vs.W), np.uint8)))
    assert events == [("tamper", 30.0, "occluded")]
    assert health.active == ["occluded"]


def test_a_camera_covered_from_the_start_is_occluded_and_does_not_learn_the_cover(rng):
    """A camera installed with its cap still on; the cap comes off after a minute."""
    health = CameraHealth()
    usual = normal(rng)
    events = play(health, 100, lambda t: vs.covered(rng) if t < 60 else usual())
    assert events == [("tamper", 10.0, "occluded"), ("tamper_cleared", 65.0, "occluded")]
    assert health.learned  # it learned the real view after the cap came off


def test_a_defocused_lens_is_one_defocused(rng):
    """Someone turns the focus ring (or smears the dome) and later it is put right."""
    health = CameraHealth()
    view = vs.grey(vs.view())
    blurred = vs.defocused(view, 4.0)
    events = play(health, 90, scene(rng, (WARM_S, WARM_S + 40),
                                    lambda t: vs.sensor_noise(blurred, rng)))
    assert events == [("tamper", 40.0, "defocused"), ("tamper_cleared", 70.0, "defocused")]
    assert view.shape == blurred.shape


def test_a_camera_nudged_aside_is_one_moved(rng):
    """The camera is knocked 24 px sideways and 6 px down (about 4 % of its view), and stays."""
    health = CameraHealth()
    turned = vs.grey(vs.view(24, 6))
    events = play(health, 60, scene(rng, (WARM_S, 99), lambda t: vs.sensor_noise(turned, rng)))
    assert events == [("tamper", 40.0, "moved")]


def test_a_camera_turned_to_another_place_is_moved_and_clears_when_turned_back(rng):
    """Vandals turn the camera to face a wall with a cat poster; the installer turns it back."""
    health = CameraHealth()
    elsewhere = vs.grey(vs.other_place())
    events = play(health, 80, scene(rng, (WARM_S, WARM_S + 40),
                                    lambda t: vs.sensor_noise(elsewhere, rng)))
    assert events == [("tamper", 40.0, "moved"), ("tamper_cleared", 70.0, "moved")]


def test_a_camera_turned_to_face_something_close_is_moved_not_defocused(rng):
    """Turned to face a poster a metre away: blurred because it is too close for the focus.
    What happened is that the camera moved; its sharpness is another view's and is not judged."""
    health = CameraHealth()
    close_up = vs.grey(vs.defocused(vs.other_place(), 4.0))
    events = play(health, 60, scene(rng, (WARM_S, 99), lambda t: vs.sensor_noise(close_up, rng)))
    assert events == [("tamper", 40.0, "moved")]


def test_an_installer_re_aims_the_camera_and_relearns(rng):
    """The camera is re-aimed on purpose: `moved` is raised, then relearning accepts the view."""
    health = CameraHealth()
    new_view = vs.grey(vs.view(60, 0))
    usual = normal(rng)
    events = play(health, 45, lambda t: vs.sensor_noise(new_view, rng) if t >= WARM_S else usual())
    assert events == [("tamper", 40.0, "moved")]
    health.relearn()
    later = []
    for i in range(125):
        t_ms = 45_000 + i * STEP_MS
        later += [(e.type, e.t_ms) for e in health.update(vs.sensor_noise(new_view, rng), t_ms)]
    # learned by 55 s, judged once a second from 56 s on, cleared after 10 s of match
    assert later == [("tamper_cleared", 66_000)]


def test_the_ir_switch_is_not_tamper(rng):
    """Dusk: the camera switches to infrared; the same view turns grey, flat and noisy."""
    health = CameraHealth()
    colour_view = vs.view()
    events = play(health, 120, lambda t: vs.sensor_noise(colour_view, rng) if t < WARM_S
                  else vs.infrared(colour_view, rng))
    assert events == []


def test_the_ir_switch_with_the_mode_known_learns_the_night_separately(rng):
    """The worker passes BGR frames; night frames are grey in three channels, so the camera
    learns a night baseline of its own. A defocus at night is still found against it."""
    health = CameraHealth()
    day = vs.view()

    def frame(t: float) -> np.ndarray:
        if t < WARM_S:
            return vs.sensor_noise(day, rng)
        night = vs.infrared(day, rng)
        if t >= 60:
            night = vs.sensor_noise(vs.defocused(night, 5.0), rng, 2.0)
        return np.dstack([night] * 3)

    events = play(health, 100, frame)
    assert events == [("tamper", 80.0, "defocused")]


def test_a_person_passing_close_to_the_lens_is_not_tamper(rng):
    """Someone walks past right in front of the lens, hiding most of the view for 3 s."""
    health = CameraHealth()
    events = play(health, 60, scene(rng, (WARM_S, WARM_S + 3), lambda t: vs.person_near_lens(
        vs.grey(vs.view()), int(-200 + (t - WARM_S) * 350))))
    assert events == []


def test_a_person_standing_in_front_of_the_lens_for_a_while_is_not_tamper(rng):
    """Someone stands right in front of the camera for 8 s (less than any debounce)."""
    health = CameraHealth()
    blocked = vs.person_near_lens(vs.grey(vs.view()), 320)
    events = play(health, 60, scene(rng, (WARM_S, WARM_S + 8),
                                    lambda t: vs.sensor_noise(blocked, rng)))
    assert events == []


def test_headlights_sweeping_the_view_are_not_tamper(rng):
    """A car turns in at night: its headlights sweep across the view in 4 s."""
    health = CameraHealth()
    view = vs.grey(vs.view())
    events = play(health, 60, scene(rng, (WARM_S, WARM_S + 4), lambda t: vs.sensor_noise(
        vs.headlights(view, int(-200 + (t - WARM_S) * 260)), rng)))
    assert events == []


def test_a_flash_is_not_tamper(rng):
    """A flash (or lightning) whites out one frame."""
    health = CameraHealth()
    events = play(health, 40, scene(rng, (WARM_S, WARM_S + 0.2),
                                    lambda t: np.full((vs.H, vs.W), 250, np.uint8)))
    assert events == []


def test_rain_is_not_tamper(rng):
    """A minute of rain: bright streaks all over every frame."""
    health = CameraHealth()
    view = vs.grey(vs.view())
    events = play(health, 80, scene(rng, (WARM_S, 99),
                                    lambda t: vs.rain(vs.sensor_noise(view, rng), rng)))
    assert events == []


def test_slow_dusk_is_not_tamper(rng):
    """Half an hour of dusk without IR: the light falls to 12 % (one frame a second here)."""
    health = CameraHealth()
    view = vs.grey(vs.view())
    events = play(health, 1800, lambda t: vs.sensor_noise(
        vs.dimmed(view, max(0.12, 1 - t / 1500)), rng, 2.0), fps=1)
    assert events == []


def test_tamper_timing_follows_the_stream_time_not_the_frame_count(rng):
    """A 2 fps and a 10 fps camera covered at the same moment raise at the same stream time."""
    raised = []
    for fps in (2, 10):
        health = CameraHealth()
        events = play(health, 45, scene(rng, (WARM_S, 99), lambda t: vs.covered(rng)), fps=fps)
        raised.append(events)
    assert raised == [[("tamper", 30.0, "occluded")]] * 2


def test_a_shorter_debounce_from_config_raises_sooner(rng):
    config = HealthConfig.model_validate({"occluded": {"raise_after_s": 2, "clear_after_s": 1}})
    health = CameraHealth(config)
    events = play(health, 30, scene(rng, (WARM_S, WARM_S + 4), lambda t: vs.covered(rng)))
    assert events == [("tamper", 22.0, "occluded"), ("tamper_cleared", 25.0, "occluded")]


def test_the_view_is_judged_once_a_second_whatever_the_frame_rate(rng):
    """At 5 fps four frames in five cost nothing; `interval_s: 0` judges every frame."""
    view = vs.grey(vs.view())
    health = CameraHealth()
    judged = []
    for t_ms in range(0, 3000, STEP_MS):
        before = health.measures
        health.update(view, t_ms)
        if health.measures is not before:
            judged.append(t_ms)
    assert judged == [0, 1000, 2000]
    every = CameraHealth(HealthConfig(interval_s=0))
    for t_ms in range(0, 600, STEP_MS):
        before = every.measures
        every.update(view, t_ms)
        assert every.measures is not before


def test_a_frame_time_going_backwards_is_a_clear_error(rng):
    health = CameraHealth(camera="cam-gate-01")
    health.update(vs.grey(vs.view()), 5000)
    with pytest.raises(FrameError, match="cam-gate-01: frame time 4800 ms is before the previous"):
        health.update(vs.grey(vs.view()), 4800)


def test_a_frame_of_another_shape_is_a_clear_error(rng):
    """The stream switched from 16:9 to 4:3 mid-stream."""
    health = CameraHealth(camera="cam-gate-01")
    health.update(vs.grey(vs.view()), 0)
    health.update(np.zeros((720, 1280), np.uint8), 1000)  # same shape, other size: fine
    with pytest.raises(FrameError, match=r"cam-gate-01: frame is 640x480"):
        health.update(np.zeros((480, 640), np.uint8), 2000)


def test_unknown_config_keys_are_refused():
    with pytest.raises(ValueError, match="extra"):
        HealthConfig.model_validate({"occluded": {"raise_after": 3}})


def test_phase_match_finds_a_shift_and_ignores_light_but_not_another_scene(rng):
    """The `moved` measure itself: 1.0 for the same picture whatever its brightness and
    contrast, the displacement of a shifted one to a fraction of a pixel, low for another."""
    small = cv2.resize(vs.grey(vs.view()), (128, 72), interpolation=cv2.INTER_AREA)
    small = small.astype(np.float32)
    match = PhaseMatch(small)
    same, dx, dy = match(small * 0.4 + 90)
    assert same > 0.99
    assert (abs(dx), abs(dy)) < (0.1, 0.1)
    big = cv2.resize(vs.grey(vs.view(-20, -10)), (256, 144), interpolation=cv2.INTER_AREA)
    shifted = big[5 + 3 : 5 + 3 + 72, 10 + 5 : 10 + 5 + 128].astype(np.float32)
    reference = big[5 : 5 + 72, 10 : 10 + 128].astype(np.float32)
    score, dx, dy = PhaseMatch(reference)(shifted)
    assert score > 0.8
    assert (round(abs(dx)), round(abs(dy))) == (5, 3)
    elsewhere = cv2.resize(vs.grey(vs.other_place()), (128, 72), interpolation=cv2.INTER_AREA)
    assert match(elsewhere.astype(np.float32))[0] < 0.2


def test_debounce_raises_once_clears_once_and_ignores_unjudged_frames():
    d = Debounce(raise_after_ms=1000, clear_after_ms=500)
    timeline = [(0, True), (400, None), (900, True), (1000, True), (1200, True), (1300, False),
                (1500, None), (1700, False), (1800, False), (1900, True), (2000, False),
                (2499, False), (2500, False)]
    changes = [(t, d.update(c, t)) for t, c in timeline]
    assert [(t, c) for t, c in changes if c] == [(1000, "raise"), (1800, "clear")]
    assert d.active is False


def test_a_view_learned_soft_is_not_judged_for_defocus(rng):
    """A façade in rain or haze (tests/video: simulators/facade.py, rain) learns a sharpness
    near the defocus level, mostly sensor noise and rain streaks, that swings by half with
    the light: it cannot tell a defocus from the weather, and must not cry tamper for it."""
    health = CameraHealth()
    view = vs.grey(vs.view())
    hazy, softer = vs.defocused(view, 2.5), vs.defocused(view, 6.0)
    events = play(health, 90, lambda t: vs.sensor_noise(softer if 20 <= t < 70 else hazy, rng))
    assert events == []
    base = next(iter(health._baselines.values()))
    assert base.sharpness is not None
    assert base.sharpness < health.config.defocused.min_learned
