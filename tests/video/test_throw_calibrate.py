"""`shouwang video calibrate`: the installer sees the floor and column grid over the camera's
own picture, and a calibration that does not fit the picture is refused by key."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge.video.config import CameraConfig
from edge.video.throw.calibration import Facade

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def shouwang(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shouwang", "video", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_the_grid_is_drawn_over_the_clip_s_first_frame_on_the_calibrated_lines(
    facade_clip: Callable[..., Path], tmp_path: Path
) -> None:
    clip = facade_clip(seed=3, throws=0, seconds=2)
    entry = json.loads(clip.with_suffix(".json").read_text())["camera"]
    camera_yaml = tmp_path / "camera.yaml"
    camera_yaml.write_text(yaml.safe_dump(entry))
    out = tmp_path / "grid.png"
    done = shouwang("calibrate", "--camera", str(camera_yaml), "--input", str(clip),
                    "--out", str(out))
    assert done.returncode == 0, done.stderr
    grid = cv2.imread(str(out))
    assert grid.shape == (720, 1280, 3)
    facade = Facade(CameraConfig.model_validate(entry).facade)  # type: ignore[arg-type]
    # Every floor line, sampled across the façade, is drawn green (the picture is grey).
    for floor in range(facade.n_floors + 1):
        for u in np.linspace(0.3, facade.columns - 0.3, 7):
            x, y = np.round(facade.image_points(np.array([[u, floor]]))[0]).astype(int)
            patch = grid[max(0, y - 1): y + 2, max(0, x - 1): x + 2].astype(int)
            green = patch[..., 1] - np.maximum(patch[..., 0], patch[..., 2])
            assert green.max() > 80, (floor, u)


def test_a_facade_outside_the_input_s_frame_is_refused_naming_the_key(
    facade_clip: Callable[..., Path], tmp_path: Path
) -> None:
    clip = facade_clip(seed=3, throws=0, seconds=2)
    camera_yaml = tmp_path / "camera.yaml"
    camera_yaml.write_text(yaml.safe_dump({"id": "cam-tower", "analytics": ["throw"], "facade": {
        "corners": [[400, 40], [1500, 60], [1490, 700], [420, 700]], "floors": [3, 18],
        "columns": 6}}))
    for args in (["calibrate", "--camera", str(camera_yaml), "--input", str(clip),
                  "--out", str(tmp_path / "grid.png")],
                 ["analyze", "--camera", str(camera_yaml), str(clip)]):
        done = shouwang(*args)
        assert done.returncode == 2, done.stderr
        assert "facade.corners" in done.stderr
        assert "1280x720" in done.stderr
