"""A façade camera's calibration: loaded from its `cameras:` entry, refused by key when it
cannot be right, and mapping image pixels to floors and window columns exactly on the wall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.video.config import CameraConfig, camera_from_file
from edge.video.throw.calibration import Facade
from shouwang.config import ConfigError

CORNERS = [[412, 38], [905, 61], [889, 690], [430, 702]]


def entry(**facade: object) -> dict[str, object]:
    return {"id": "cam-tower-3", "analytics": ["throw"],
            "facade": {"corners": CORNERS, "floors": [3, 18], "columns": 6, **facade}}


def load(tmp_path: Path, data: dict[str, object]) -> CameraConfig:
    path = tmp_path / "camera.yaml"
    path.write_text(yaml.safe_dump(data))
    return camera_from_file(path)


def test_the_issue_s_example_loads_and_its_corners_map_to_the_grid_s_corners(
    tmp_path: Path,
) -> None:
    camera = load(tmp_path, entry())
    assert camera.facade is not None
    facade = Facade(camera.facade)
    uv = facade.facade_points(np.array(CORNERS, dtype=float))
    np.testing.assert_allclose(uv, [[0, 16], [6, 16], [6, 0], [0, 0]], atol=1e-6)
    # The middle of floor 10's third window, there and back.
    middle = facade.image_points(np.array([[2.5, 10 - 3 + 0.5]]))
    back = facade.facade_points(middle)[0]
    assert (facade.floor_of(back[1]), facade.column_of(back[0])) == (10, 3)
    # Heights in metres: the façade is 16 floors of 2.9 m.
    assert facade.metres(np.array(CORNERS[:1], dtype=float))[0] == pytest.approx(16 * 2.9)


def test_a_tilted_view_maps_by_perspective_not_by_proportion(tmp_path: Path) -> None:
    """Looking up, upper floors are shorter in the image: the homography knows, a linear
    split of the rectangle would not."""
    corners = [[500, 100], [780, 100], [840, 700], [440, 700]]  # narrower at the top
    facade = Facade(load(tmp_path, {**entry(), "facade": {
        "corners": corners, "floors": [1, 20], "columns": 4}}).facade)  # type: ignore[arg-type]
    ys = facade.image_points(np.array([[2.0, k] for k in range(21)]))[:, 1]
    heights = -np.diff(ys)
    assert heights[0] > heights[-1] * 1.2  # the lowest floor looks taller than the top one


@pytest.mark.parametrize(("facade", "key", "words"), [
    ({"corners": [CORNERS[1], CORNERS[0], CORNERS[2], CORNERS[3]]}, "facade.corners",
     "not a convex quadrilateral"),
    ({"corners": [[412, 38], [905, 61], [500, 300], [430, 702]]}, "facade.corners",
     "not a convex quadrilateral"),
    ({"floors": [18, 3]}, "facade.floors", "reversed"),
    ({"columns": 0}, "facade.columns", "at least 1"),
    ({"corners": [[-20, 38], [905, 61], [889, 690], [430, 702]]}, "facade.corners",
     "outside the frame"),
    ({"corners": [[412, 38], [2905, 61], [2889, 690], [430, 702]]}, "facade.corners",
     "outside any frame"),
    ({"rows": 3}, "facade.rows", "unknown key"),
])
def test_a_calibration_that_cannot_be_right_is_refused_at_load_naming_the_key(
    tmp_path: Path, facade: dict[str, object], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, entry(**facade))
    assert key in str(err.value)
    assert words in str(err.value)
    assert str(tmp_path / "camera.yaml") in str(err.value)
