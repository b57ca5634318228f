"""高空抛物 through `shouwang video analyze`: a generated throw from a known window prints one
line with the right floor; birds, leaves, rain, insects, lights, laundry and traffic print none;
a camera without calibration still reports the throw, with the floor unknown.

Clips come from simulators/facade.py with tuning seeds (< 100000); bench/throw.py measures on
seeds never used here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def analyze(clip: Path, tmp_path: Path, calibrated: bool = True) -> list[dict[str, Any]]:
    entry = json.loads(clip.with_suffix(".json").read_text())["camera"]
    if not calibrated:
        entry.pop("facade")
    camera_yaml = tmp_path / f"camera-{clip.stem}.yaml"
    camera_yaml.write_text(yaml.safe_dump(entry))
    done = subprocess.run(
        [sys.executable, "-m", "shouwang", "video", "analyze", "--camera", str(camera_yaml),
         str(clip)], capture_output=True, cwd=ROOT, timeout=600,
    )
    assert done.returncode == 0, done.stderr.decode()
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    return [e for e in lines if e["type"] == "thrown_object"]


@pytest.mark.parametrize(("seed", "condition"), [(11, "day"), (12, "dusk")])
def test_a_throw_is_one_line_with_its_floor_first_sighting_and_track(
    facade_clip: Callable[..., Path], tmp_path: Path, seed: int, condition: str
) -> None:
    clip = facade_clip(seed=seed, condition=condition, throws=1, seconds=10)
    truth = json.loads(clip.with_suffix(".json").read_text())["throws"][0]
    events = analyze(clip, tmp_path)
    assert len(events) == 1, events
    event = events[0]
    assert set(event) == {"type", "t_ms", "floor", "column", "confidence", "candidates", "track"}
    assert abs(event["floor"] - truth["floor"]) <= 1, (event["candidates"], truth)
    assert [event["floor"], event["column"]] == event["candidates"][0][:2]
    assert sum(p for _, _, p in event["candidates"]) <= 1.0001
    assert 0 < event["confidence"] <= 1
    # t_ms is the first sighting: the track's first point, right after the launch.
    assert event["t_ms"] == event["track"][0][0]
    assert truth["t_launch_ms"] - 100 <= event["t_ms"] <= truth["t_launch_ms"] + 500
    x, y = event["track"][0][1:]
    assert abs(x - truth["launch_xy"][0]) < 30
    assert abs(y - truth["launch_xy"][1]) < 30
    times = [t for t, _, _ in event["track"]]
    assert times == sorted(times)
    assert event["track"][-1][2] > y  # it went down


@pytest.mark.parametrize("condition", ["day", "rain"])
def test_distractors_alone_raise_nothing(
    facade_clip: Callable[..., Path], tmp_path: Path, condition: str
) -> None:
    clip = facade_clip(seed=21, condition=condition, throws=0, seconds=20)
    assert analyze(clip, tmp_path) == []


def test_without_calibration_the_throw_is_reported_with_the_floor_unknown(
    facade_clip: Callable[..., Path], tmp_path: Path
) -> None:
    clip = facade_clip(seed=11, condition="day", throws=1, seconds=10)
    events = analyze(clip, tmp_path, calibrated=False)
    assert len(events) == 1, events
    assert events[0]["floor"] is None
    assert events[0]["column"] is None
    assert events[0]["candidates"] == []
