"""A thrown object's evidence pictures: the snapshot with its track and candidate windows drawn,
its launch area enlarged (from the frame of the first sighting), and the drawing on each
frame of the marked clip (the track as far as seen by that frame) (issue 17, item 3).

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


def mark(bgr: np.ndarray, fields: dict[str, Any], facade: Facade | None,
         until_ms: float | None = None) -> np.ndarray:
    """A copy of `bgr` with the candidate windows outlined (the best one thickest, each with
    its floor, column and probability) and the track drawn from its first sighting; with
    `until_ms` (a clip's frame), only the part of the track seen by then."""
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
    track = fields.get("track") or []
    if until_ms is not None:
        track = [p for p in track if p[0] <= until_ms]
    points = _points(track)
    if len(points):
        cv2.polylines(out, [points], False, TRACK, 3 * scale, cv2.LINE_AA)
        cv2.circle(out, tuple(int(v) for v in points[0]), 7 * scale, LAUNCH, 2 * scale,
                   cv2.LINE_AA)
    return out


def launch_box(fields: dict[str, Any], facade: Facade | None,
               bounds: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The part of the frame (x1, y1, x2, y2, frame pixels) the launch picture shows: the
    first sighting and the best candidate window with some wall around them, 4:3, at least
    160×120, inside `bounds` (the picture it is cut from)."""
    points = _points(fields.get("track") or [])
    if not len(points):
        raise ValueError("a thrown object without a track has no launch area")
    bx1, by1, bx2, by2 = bounds
    w, h = bx2 - bx1, by2 - by1
    x0, y0 = points[0]
    xs, ys = [x0], [y0]
    best = (fields.get("candidates") or [None])[0]
    if facade is not None and best is not None:
        corners = cell(facade, int(best[0]), int(best[1]))
        xs += corners[:, 0].tolist()
        ys += corners[:, 1].tolist()
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    half_w = max(80.0, (max(xs) - min(xs)) / 2 + 40, ((max(ys) - min(ys)) / 2 + 30) * 4 / 3)
    half_w = min(half_w, w / 2, h / 2 * 4 / 3)
    half_h = half_w * 3 / 4
    x1 = bx1 + int(min(max(cx - half_w - bx1, 0), w - 2 * half_w))
    y1 = by1 + int(min(max(cy - half_h - by1, 0), h - 2 * half_h))
    return x1, y1, x1 + int(2 * half_w), y1 + int(2 * half_h)


def launch_area(image: np.ndarray, fields: dict[str, Any], facade: Facade | None,
                origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The launch area enlarged to LAUNCH_WIDTH (`launch_box`), marked as in `mark`.
    `image` is the whole frame or, with `origin` its top-left corner in the frame, a part of
    it: the worker passes the façade's crop of the frame of the first sighting
    (ThrowDetector.frame_at), so the object is shown where it was seen, not a second later."""
    h, w = image.shape[:2]
    ox, oy = origin
    x1, y1, x2, y2 = launch_box(fields, facade, (ox, oy, ox + w, oy + h))
    crop = image[y1 - oy:y2 - oy, x1 - ox:x2 - ox]
    factor = LAUNCH_WIDTH / crop.shape[1]
    big = cv2.resize(crop, (LAUNCH_WIDTH, round(crop.shape[0] * factor)),
                     interpolation=cv2.INTER_CUBIC)
    track = [[t, (x - x1) * factor, (y - y1) * factor] for t, x, y in fields.get("track") or []]
    best = (fields.get("candidates") or [None])[0]
    if facade is not None and best is not None:
        corners = ((cell(facade, int(best[0]), int(best[1])) - (x1, y1)) * factor).astype(np.int32)
        cv2.polylines(big, [corners], True, BEST, 2, cv2.LINE_AA)
        _label(big, f"F{best[0]} C{best[1]}", (8, 22), BEST, 1)
    return mark(big, {"track": track}, None)


def _points(track: Sequence[Sequence[float]]) -> np.ndarray:
    return np.round(np.array([[x, y] for _t, x, y in track], float)).astype(np.int32).reshape(-1, 2)


def _label(image: np.ndarray, text: str, at: tuple[int, int], colour: tuple[int, int, int],
           scale: int) -> None:
    """Text with a dark outline: readable on a bright wall and on a dark one."""
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale
    cv2.putText(image, text, at, font, size, (0, 0, 0), 3 * scale, cv2.LINE_AA)
    cv2.putText(image, text, at, font, size, colour, scale, cv2.LINE_AA)
