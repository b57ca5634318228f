"""After the alarm the detector keeps following the object down (issue 17): the alarm goes out
at once, while the object still falls, and `ThrowDetector.fall` gives the whole track so far,
for the marked clip to draw the whole fall. No second alarm for the same object, also when it
is lost for a few frames after the alarm and found again further down.

Positions are fed as candidates, 25 a second, as the frame stage would give them (no video).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge.video.events import CameraEvent
from edge.video.throw.calibration import Facade, FacadeConfig
from edge.video.throw.detector import ThrowConfig, ThrowDetector, Track

FLOOR_M = 2.9
FACADE = FacadeConfig(corners=((520, 60), (760, 60), (800, 700), (480, 700)), floors=(3, 18),
                      columns=6, floor_height_m=FLOOR_M)


def drop(floor: int, seconds: float = 3.0) -> list[tuple[float, float]]:
    """A body leaving `floor`, column 3, 1.2 m above its floor: (u columns, z metres) at 25 fps,
    with quadratic drag (terminal velocity 40 m/s)."""
    z, u, v_z = (floor - 3) * FLOOR_M + 1.2, 2.5, 1.0
    out = []
    for _ in range(int(seconds * 25)):
        out.append((u, z))
        v_z += (-9.81 - 9.81 / 40**2 * abs(v_z) * v_z) * 0.04
        u += 0.1 * 0.04
        z += v_z * 0.04
    return out


def feed(path: list[tuple[float, float]], hidden: range = range(0),
         clutter: Callable[[int], list[tuple[float, float]]] = lambda n: [],
         after: int = 10) -> tuple[
        ThrowDetector, list[tuple[int, CameraEvent]], list[tuple[int, float, float]]]:
    """Feed the path (frames in `hidden` without a sighting, heights below 0 unseen, then
    `after` frames), with the `clutter` of frame n (more façade points, not the object); the
    detector, its events with the frame time that raised them, and the object's sightings."""
    facade = Facade(FACADE)
    detector = ThrowDetector(ThrowConfig(), 1280, 720, facade)
    events: list[tuple[int, CameraEvent]] = []
    fed: list[tuple[int, float, float]] = []
    for n, (u, z) in enumerate(path + [(0.0, -1.0)] * after):
        t_ms = n * 40
        found: list[tuple[float, float]] = []
        if z >= 0 and n not in hidden:
            x, y = facade.image_points(np.array([[u, z / FLOOR_M]]))[0]
            found = [(float(x), float(y))]
            fed.append((t_ms, float(x), float(y)))
        for cu, cz in clutter(n):
            x, y = facade.image_points(np.array([[cu, cz / FLOOR_M]]))[0]
            found.append((float(x), float(y)))
        events += [(t_ms, e) for e in detector._advance(found, [4.0] * len(found), t_ms)]
    return detector, events, fed


def test_the_detector_follows_the_object_down_after_the_alarm() -> None:
    detector, events, fed = feed(drop(15))
    assert len(events) == 1, events
    alarm_ms, event = events[0]
    # The alarm is raised while the object still falls: its track ends at the alarm frame.
    assert event.fields["track"][-1][0] == alarm_ms
    assert alarm_ms < fed[-1][0] - 1000
    assert event.ref is not None
    whole = detector.fall(event.ref)
    assert whole is not None
    # Every sighting, from the first to the last before it left the façade.
    assert [t for t, _x, _y in whole] == [t for t, _x, _y in fed]
    assert whole[-1][2] > event.fields["track"][-1][2] + 200  # far below the alarm point


def test_an_object_lost_after_the_alarm_and_found_again_is_one_fall_and_one_event() -> None:
    path = drop(15)
    detector, events, fed = feed(path, hidden=range(40, 47))  # 1.6-1.84 s: lost, then found
    assert len(events) == 1, events
    alarm_ms, event = events[0]
    assert alarm_ms < 40 * 40
    assert event.ref is not None
    whole = detector.fall(event.ref)
    assert whole is not None
    times = [t for t, _x, _y in whole]
    assert times == sorted(times)
    # The sightings after the gap belong to the fall, down to the last one.
    assert times[-1] == fed[-1][0]
    assert sum(t > 47 * 40 for t in times) >= 0.8 * sum(t > 47 * 40 for t, _x, _y in fed)


def test_what_moves_below_the_object_is_not_drawn_as_its_fall() -> None:
    """New tracks that start below a falling object count as its continuation (no second
    alarm), but only the sightings that carry on its fall are its track: not a thing that
    blinks near its line, not a person walking below after the object has gone."""
    def clutter(n: int) -> list[tuple[float, float]]:
        out = []
        if n % 3 == 0 and n >= 20:
            out.append((2.7, 0.6))  # something blinking near the line of the fall
        if 75 <= n < 135:
            out.append((2.45 + 0.02 * (n - 75), 0.3))  # someone walking along the bottom
        return out

    detector, events, fed = feed(drop(15), clutter=clutter, after=60)
    assert len(events) == 1, events
    ref = events[0][1].ref
    assert ref is not None
    assert detector.fall(ref) == fed


def test_a_track_judged_the_same_fall_carries_the_drawn_fall_on() -> None:
    """A track the detector finds to be the same fall by a fit of both (the body lost and
    found, or seen as two blobs: offset by up to 30 px, more than association's gate) is
    taken whole after the fall's last sighting."""
    path = drop(15)
    detector, events, fed = feed(path, hidden=range(40, len(path)))  # lost at 1.6 s for good
    ref = events[0][1].ref
    assert ref is not None
    facade = Facade(FACADE)
    later = [(n * 40, *facade.image_points(np.array([[u, z / FLOOR_M]]))[0])
             for n, (u, z) in enumerate(path) if n >= 45 and z >= 0]
    other = Track([(t, float(x) + 25.0, float(y)) for t, x, y in later], [4.0] * len(later))
    root = next(tr for tr in detector.tracks + [tr for _, tr in detector._done] if tr.id == ref)
    detector._join(root, other)
    assert detector.fall(ref) == fed + other.points
    assert other.id == ref


def test_a_fall_is_forgotten_a_while_after_it_ended() -> None:
    detector, events, _fed = feed(drop(15))
    ref = events[0][1].ref
    assert ref is not None
    for n in range(100):  # 4 s of an empty façade
        detector._advance([], [], 5000 + n * 40)
    assert detector.fall(ref) is None
