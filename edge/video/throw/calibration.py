"""A façade camera's calibration: four corners of the façade, its floors and window columns.

```yaml
analytics: [throw]
facade:
  # image pixels of the top-left, top-right, bottom-right, bottom-left corners
  corners: [[412, 38], [905, 61], [889, 690], [430, 702]]
  floors: [3, 18]        # from the bottom of floor 3 to the top of floor 18, floors of equal height
  columns: 6             # window columns of equal width, numbered 1..6 from the left
  floor_height_m: 2.9    # storey height: what turns pixels into metres for the gravity test
```

The format is an interface (docs/video.md). `Facade` maps image pixels to façade coordinates
`(u, v)` through a homography: `u` in columns from the left edge (0..columns), `v` in floors
from the bottom edge (0..number of floors). A point of the façade plane maps exactly, whatever
the camera's tilt; a body a few metres in front of the wall maps a few per cent off, which the
detector's tolerances take.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from pydantic import Field, field_validator

from shouwang.config import Strict

Corner = tuple[float, float]


class FacadeConfig(Strict):
    corners: tuple[Corner, Corner, Corner, Corner] = Field(
        description="Image pixels of the façade's top-left, top-right, bottom-right and "
        "bottom-left corners (full-frame pixels of the camera's stream)",
    )
    floors: tuple[int, int] = Field(
        description="[lowest, highest]: the rectangle spans from the bottom of the lowest floor "
        "to the top of the highest, floors of equal height",
    )
    columns: int = Field(description="Window columns of equal width, numbered 1.. from the left")
    floor_height_m: float = Field(
        2.9, gt=1.5, le=10, description="Storey height in metres (the gravity test's scale)"
    )

    @field_validator("corners")
    @classmethod
    def _convex(cls, corners: tuple[Corner, ...]) -> tuple[Corner, ...]:
        for i, (x, y) in enumerate(corners):
            if x < 0 or y < 0:
                raise ValueError(f"corner {i + 1} {[x, y]} is outside the frame (negative)")
        pts = np.asarray(corners, dtype=np.float64)
        # Going round top-left, top-right, bottom-right, bottom-left, every turn has the same
        # sign (clockwise on screen, y down) for a convex quadrilateral in that order.
        turns = []
        for i in range(4):
            a, b, c = pts[i], pts[(i + 1) % 4], pts[(i + 2) % 4]
            (ux, uy), (vx, vy) = b - a, c - b
            turns.append(float(ux * vy - uy * vx))
        if not all(t > 0 for t in turns):
            raise ValueError(
                "the corners are not a convex quadrilateral in the order top-left, top-right, "
                f"bottom-right, bottom-left: {[list(c) for c in corners]}"
            )
        if abs(cv2.contourArea(pts.astype(np.float32))) < 100:
            raise ValueError("the corners enclose less than 100 square pixels")
        return corners

    @field_validator("floors")
    @classmethod
    def _floors(cls, floors: tuple[int, int]) -> tuple[int, int]:
        low, high = floors
        if low < 1:
            raise ValueError(f"lowest floor {low} is below 1 (floors are numbered from 1)")
        if high < low:
            raise ValueError(f"floors are reversed: [{low}, {high}]; write [lowest, highest]")
        return floors

    @field_validator("columns")
    @classmethod
    def _columns(cls, columns: int) -> int:
        if columns < 1:
            raise ValueError(f"must be at least 1, got {columns}")
        if columns > 200:
            raise ValueError(f"{columns} columns is more than 200")
        return columns

    def outside(self, width: int, height: int) -> str | None:
        """Why the façade does not fit a `width`×`height` frame, or None when it does."""
        for i, (x, y) in enumerate(self.corners):
            if x > width or y > height:
                return (f"facade.corners: corner {i + 1} {[x, y]} is outside the "
                        f"{width}x{height} frame")
        return None


class Facade:
    """Image pixels ↔ façade coordinates (u in columns, v in floors from the bottom edge)."""

    def __init__(self, config: FacadeConfig) -> None:
        self.config = config
        self.low, self.high = config.floors
        self.n_floors = self.high - self.low + 1
        self.columns = config.columns
        self.floor_m = config.floor_height_m
        image = np.asarray(config.corners, dtype=np.float64)
        facade = np.asarray(
            [[0, self.n_floors], [self.columns, self.n_floors], [self.columns, 0], [0, 0]],
            dtype=np.float64,
        )
        self.to_facade = cv2.getPerspectiveTransform(image.astype(np.float32),
                                                     facade.astype(np.float32)).astype(np.float64)
        self.to_image = np.linalg.inv(self.to_facade)
        self.corners = image

    def facade_points(self, xy: np.ndarray) -> np.ndarray:
        """(n, 2) image pixels → (n, 2) façade (u columns, v floors)."""
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 1, 2)
        out: np.ndarray = cv2.perspectiveTransform(pts, self.to_facade).reshape(-1, 2)
        return out

    def image_points(self, uv: np.ndarray) -> np.ndarray:
        """(n, 2) façade (u, v) → (n, 2) image pixels."""
        pts = np.asarray(uv, dtype=np.float64).reshape(-1, 1, 2)
        out: np.ndarray = cv2.perspectiveTransform(pts, self.to_image).reshape(-1, 2)
        return out

    def metres(self, xy: np.ndarray) -> np.ndarray:
        """Image pixels → height above the façade's bottom edge, in metres (n,)."""
        heights: np.ndarray = self.facade_points(xy)[:, 1] * self.floor_m
        return heights

    def floor_of(self, v: float) -> int:
        """The floor at façade height `v` (floors from the bottom edge)."""
        return self.low + min(max(math.floor(v), 0), self.n_floors - 1)

    def column_of(self, u: float) -> int:
        return 1 + min(max(math.floor(u), 0), self.columns - 1)

    def contains(self, u: float, v: float, margin: float = 0.0) -> bool:
        return (-margin <= u <= self.columns + margin) and (-margin <= v <= self.n_floors + margin)

    def bounds(self, width: int, height: int, grow: int = 0) -> tuple[int, int, int, int]:
        """The façade's bounding box in the frame (x1, y1, x2, y2), grown and clipped."""
        x1, y1 = np.floor(self.corners.min(axis=0)).astype(int) - grow
        x2, y2 = np.ceil(self.corners.max(axis=0)).astype(int) + grow
        return max(0, int(x1)), max(0, int(y1)), min(width, int(x2)), min(height, int(y2))


def draw_grid(image: np.ndarray, facade: Facade) -> np.ndarray:
    """`image` (BGR) with the façade's floor and column lines and their numbers drawn on it."""
    out = image.copy()
    green, yellow = (0, 220, 0), (0, 220, 255)
    for k in range(facade.n_floors + 1):
        a, b = facade.image_points(np.array([[0, k], [facade.columns, k]]))
        cv2.line(out, _pt(a), _pt(b), green, 1, cv2.LINE_AA)
    for k in range(facade.columns + 1):
        a, b = facade.image_points(np.array([[k, 0], [k, facade.n_floors]]))
        cv2.line(out, _pt(a), _pt(b), green, 1, cv2.LINE_AA)
    for k in range(facade.n_floors):
        at = facade.image_points(np.array([[0, k + 0.5]]))[0]
        label = str(facade.low + k)
        cv2.putText(out, label, (int(at[0]) - 8 - 9 * len(label), int(at[1]) + 5),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, yellow, 1, cv2.LINE_AA)
    for k in range(facade.columns):
        at = facade.image_points(np.array([[k + 0.5, facade.n_floors]]))[0]
        cv2.putText(out, str(k + 1), (int(at[0]) - 4, int(at[1]) - 8),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, yellow, 1, cv2.LINE_AA)
    return out


def _pt(p: np.ndarray) -> tuple[int, int]:
    return round(float(p[0])), round(float(p[1]))
