"""A thrown object's evidence pictures: the snapshot with its track and candidate windows drawn,
and its launch area enlarged (issue 17, item 3).

Drawn by the camera worker, off its frame loop (the clip thread), from the whole track and the
camera's own calibration: the picture stands alone (in the dashboard, in an evidence package
for the police, in any image viewer) and does not depend on the 256-character fields of the
MQTT event or on a calibration changed later. The plain snapshot is kept beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from edge.video.throw.calibration import Facade

TRACK = (0, 0, 255)  # BGR red: the track, drawn 3 px wide
LAUNCH = (255, 255, 0)  # cyan: the first sighting
BEST = (0, 215, 255)  # amber: the most likely window
OTHER = (255, 160, 0)  # blue: the other candidates
LAUNCH_WIDTH = 480  # the launch area is enlarged to this width (4:3)


def cell(facade: Facade, floor: int, column: int) -> np.ndarray:
    """The window cell (floor, column) as its four image corners, (4, 2) int32."""
    v = floor - facade.low
    uv = np.array([[column - 1, v + 1], [column, v + 1], [column, v], [column - 1, v]], float)
    return np.round(facade.image_points(uv)).astype(np.int32)


def mark(bgr: np.ndarray, fields: dict[str, Any], facade: Facade | None) -> np.ndarray:
    """A copy of `bgr` with the candidate windows outlined (the best one thickest, each with
    its floor, column and probability) and the track drawn from its first sighting."""
    out = bgr.copy()
    scale = max(1, round(out.shape[1] / 1280))
    if facade is not None:
        for rank, (floor, column, p) in reversed(list(enumerate(fields.get("candidates") or []))):
            corners = cell(facade, int(floor), int(column))
            colour = BEST if rank == 0 else OTHER
            cv2.polylines(out, [corners], True, colour, (3 if rank == 0 else 1) * scale,
                          cv2.LINE_AA)
            if rank < 3:
                x, y = corners[:, 0].max() + 4 * scale, int(corners[:, 1].mean()) + 4 * scale
                _label(out, f"F{floor} C{column} {round(float(p) * 100)}%", (int(x), y),
                       colour, scale)
    points = _points(fields.get("track") or [])
    if len(points):
        cv2.polylines(out, [points], False, TRACK, 3 * scale, cv2.LINE_AA)
        cv2.circle(out, tuple(int(v) for v in points[0]), 7 * scale, LAUNCH, 2 * scale,
                   cv2.LINE_AA)
    return out


def launch_area(bgr: np.ndarray, fields: dict[str, Any], facade: Facade | None) -> np.ndarray:
    """The launch area enlarged to LAUNCH_WIDTH: the first sighting and the best candidate
    window with some wall around them, marked as in `mark`."""
    points = _points(fields.get("track") or [])
    h, w = bgr.shape[:2]
    if not len(points):
        raise ValueError("a thrown object without a track has no launch area")
    x0, y0 = points[0]
    xs, ys = [x0], [y0]
    best = (fields.get("candidates") or [None])[0]
    if facade is not None and best is not None:
        corners = cell(facade, int(best[0]), int(best[1]))
        xs += corners[:, 0].tolist()
        ys += corners[:, 1].tolist()
    # At least 160×120 px of wall, 4:3, around what matters, inside the frame.
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    half_w = max(80.0, (max(xs) - min(xs)) / 2 + 40, ((max(ys) - min(ys)) / 2 + 30) * 4 / 3)
    half_w = min(half_w, w / 2, h / 2 * 4 / 3)
    half_h = half_w * 3 / 4
    x1 = int(min(max(cx - half_w, 0), w - 2 * half_w))
    y1 = int(min(max(cy - half_h, 0), h - 2 * half_h))
    x2, y2 = x1 + int(2 * half_w), y1 + int(2 * half_h)
    crop = bgr[y1:y2, x1:x2]
    factor = LAUNCH_WIDTH / crop.shape[1]
    big = cv2.resize(crop, (LAUNCH_WIDTH, round(crop.shape[0] * factor)),
                     interpolation=cv2.INTER_CUBIC)
    shifted = dict(fields)
    shifted["track"] = [[t, (x - x1) * factor, (y - y1) * factor]
                        for t, x, y in fields.get("track") or []]
    if facade is not None and best is not None:
        corners = ((cell(facade, int(best[0]), int(best[1])) - (x1, y1)) * factor).astype(np.int32)
        cv2.polylines(big, [corners], True, BEST, 2, cv2.LINE_AA)
        _label(big, f"F{best[0]} C{best[1]}", (8, 22), BEST, 1)
    return mark(big, {"track": shifted["track"]}, None)


def _points(track: Sequence[Sequence[float]]) -> np.ndarray:
    return np.round(np.array([[x, y] for _t, x, y in track], float)).astype(np.int32).reshape(-1, 2)


def _label(image: np.ndarray, text: str, at: tuple[int, int], colour: tuple[int, int, int],
           scale: int) -> None:
    """Text with a dark outline: readable on a bright wall and on a dark one."""
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale
    cv2.putText(image, text, at, font, size, (0, 0, 0), 3 * scale, cv2.LINE_AA)
    cv2.putText(image, text, at, font, size, colour, scale, cv2.LINE_AA)
