"""Motion gating: where in the frame something moved, found cheaply on a small grey frame.

Frigate's way: the frame is shrunk to about 120 pixels high (area averaging is the blur), each
frame is compared with a running-average background, the differences over a threshold are
dilated into blobs, and each blob big enough is a motion box in full-frame pixels. The detector
downstream runs only inside these boxes, and only when there are any.

What changes the whole picture at once is light, not motion: the day/night (IR) switch, the
camera's exposure, a flash, headlights filling the view. Two defences:
- before comparing, the frame's global brightness (and, after a big change, contrast) is fitted
  to the background, so a uniform change leaves nothing behind;
- if what is left still covers most of the frame (`lighting_fraction`), or is spread over most
  of it (`lighting_spread`: the IR switch changes materials' brightness unevenly, so no global
  fit explains it, but it changes something everywhere), it is a lighting event: no boxes, and
  the background restarts from this frame.
Masked areas (privacy masks, and any area the camera owner excludes) never count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
from pydantic import Field

from edge.video.frames import FrameError, Polygon, polygon_mask, scaled_size, shrink, to_grey
from shouwang.config import Strict

GRID = (6, 4)  # columns, rows of the cells that tell light spread everywhere from motion


class MotionConfig(Strict):
    frame_height: int = Field(
        120, ge=60, le=360,
        description="Height of the small grey frame motion works on (its width keeps the aspect "
        "ratio); smaller is cheaper and blurs away noise, larger sees smaller things",
    )
    threshold: int = Field(
        25, ge=1, le=255,
        description="Grey-level difference from the background that counts a pixel as changed",
    )
    min_area: int = Field(
        12, ge=1,
        description="Fewest changed pixels of the small frame that make a blob motion (12 at "
        "120 px high is about 20×20 pixels of a 720p frame)",
    )
    frame_alpha: float = Field(
        0.03, gt=0, le=1,
        description="Weight of each new frame in the running-average background",
    )
    absorb_after_frames: int = Field(
        25, ge=1, le=250,
        description="Motion in the same place for this many frames in a row (a car that parked) "
        "is taken into the background; until then moving pixels do not pollute it",
    )
    lighting_fraction: float = Field(
        0.6, gt=0, le=1,
        description="Changed share of the unmasked frame above which the change is light (IR "
        "switch, headlights, flash), not motion: no boxes, the background restarts",
    )
    lighting_spread: float = Field(
        0.75, gt=0, le=1,
        description="Share of the frame's 6×4 grid cells with some change above which the "
        "change is light: the IR switch alters most of the picture a little, motion alters a "
        "part of it",
    )
    dilate_iterations: int = Field(
        2, ge=0, le=10, description="Dilations of the changed pixels that join nearby blobs"
    )


class Box(NamedTuple):
    """A rectangle in full-frame pixels: x1, y1 inclusive, x2, y2 exclusive."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def area(self) -> int:
        return max(0, self.x2 - self.x1) * max(0, self.y2 - self.y1)


class MotionDetector:
    """Motion boxes for one camera; call `detect` once per analysed frame, in order."""

    def __init__(self, width: int, height: int, config: MotionConfig | None = None,
                 masks: Sequence[Polygon] = ()) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        self.config = config or MotionConfig()
        self.width, self.height = width, height
        self.small_size = scaled_size(width, height, to_height=self.config.frame_height)
        sw, sh = self.small_size
        self._scale_x, self._scale_y = width / sw, height / sh
        mask = polygon_mask(masks, width, height, self.small_size, grow=1)
        # `_valid` marks the pixels that may count as motion (None: all of them).
        self._valid: np.ndarray | None = None
        self._valid_count = sw * sh
        if mask is not None:
            valid: np.ndarray = cv2.bitwise_not(mask)
            self._valid_count = int(np.count_nonzero(valid))
            if self._valid_count == 0:
                raise ValueError("the masks cover the whole frame: nothing is left to watch")
            self._valid = valid
        self._grid_rows = np.linspace(0, sh, GRID[1] + 1).astype(np.int64)[:-1]
        self._grid_cols = np.linspace(0, sw, GRID[0] + 1).astype(np.int64)[:-1]
        watched_px = self._cell_counts(
            np.ones((sh, sw), np.uint8) if self._valid is None else (self._valid > 0).view(np.uint8)
        )
        full_px = self._cell_counts(np.ones((sh, sw), np.uint8))
        self._watched_cells = watched_px >= 0.25 * full_px
        self._cell_area = watched_px[self._watched_cells].astype(np.float64)
        watched = np.arange(sw * sh) if self._valid is None else np.flatnonzero(self._valid)
        # A fixed sample of about 2,000 watched pixels for the light fit's median: its
        # estimate is as good as the median of all 25k, at a tenth of the cost.
        self._sample = watched[:: max(1, watched.size // 2048)]
        self._kernel = np.ones((3, 3), np.uint8)
        self._background: np.ndarray | None = None
        # Frames in a row each pixel of the small frame moved.
        self._still_moving: np.ndarray = np.zeros((sh, sw), np.uint8)
        # What the last frame showed, for diagnostics and the worker's metrics.
        self.changed_fraction = 0.0
        self.lighting_event = False

    def reset(self) -> None:
        """Forget the background (after a gap in the stream, the scene may have changed)."""
        self._background = None
        self._still_moving[:] = 0

    def detect(self, frame: np.ndarray) -> list[Box]:
        """Motion boxes in full-frame pixels for this frame (grey or BGR, full size or smaller)."""
        small = self._small(frame)
        current = small.astype(np.float32)
        if self._background is None:
            self._background = current
            self.changed_fraction, self.lighting_event = 0.0, False
            return []
        expected = self._fit_light(current, self._background)
        delta = cv2.absdiff(current, expected)
        changed: np.ndarray = (delta > self.config.threshold).astype(np.uint8)
        if self._valid is not None:
            changed = cv2.bitwise_and(changed, self._valid)
        n_changed = int(np.count_nonzero(changed))
        self.changed_fraction = n_changed / self._valid_count
        self.lighting_event = n_changed > 0 and (
            self.changed_fraction > self.config.lighting_fraction
            or self._spread(changed) > self.config.lighting_spread
        )
        if self.lighting_event:
            self._background = current
            self._still_moving[:] = 0
            return []
        joined: np.ndarray = changed
        if self.config.dilate_iterations:
            joined = cv2.dilate(changed, self._kernel, iterations=self.config.dilate_iterations)
        boxes = self._boxes(joined, changed) if n_changed else []
        self._learn(current, joined)
        return boxes

    def _small(self, frame: np.ndarray) -> np.ndarray:
        """The small grey frame, from the full frame or any smaller copy of the same shape
        (the worker's `detect`-size frame, or the small frame itself)."""
        grey = to_grey(frame)
        h, w = grey.shape
        if w <= self.width and abs(round(w * self.height / self.width) - h) <= 1:
            return shrink(grey, self.small_size)
        raise FrameError(
            f"frame is {w}x{h}, expected {self.width}x{self.height} or a smaller copy of that "
            "shape: the stream changed resolution"
        )

    def _fit_light(self, current: np.ndarray, background: np.ndarray) -> np.ndarray:
        """The background as it would look under the current frame's light.

        Usually only the brightness moved (exposure, a cloud): the median difference is that
        offset and ignores whatever moves in less than half the frame. When the offset alone
        does not explain most pixels (the IR switch changes contrast too), fit gain and offset
        by least squares instead.
        """
        cur = current.reshape(-1)[self._sample]
        bg = background.reshape(-1)[self._sample]
        diff = cur - bg
        mid = diff.size // 2
        offset = float(np.partition(diff, mid)[mid])
        explained = np.abs(diff - offset) <= self.config.threshold
        if np.count_nonzero(explained) >= 0.5 * diff.size:
            return self._clip(background + offset)
        bg_mean, cur_mean = float(bg.mean()), float(cur.mean())
        var = float(np.mean((bg - bg_mean) ** 2))
        if var < 1.0:  # a flat background: only the offset can be fitted
            return self._clip(background + (cur_mean - bg_mean))
        gain = float(np.mean((bg - bg_mean) * (cur - cur_mean))) / var
        gain = min(max(gain, 0.25), 4.0)
        return self._clip(background * gain + (cur_mean - gain * bg_mean))

    @staticmethod
    def _clip(expected: np.ndarray) -> np.ndarray:
        # Brighter light saturates the sensor: a pixel expected above white is white.
        return np.clip(expected, 0.0, 255.0, out=expected)

    def _cell_counts(self, pixels: np.ndarray) -> np.ndarray:
        """How many nonzero pixels of a 0/1 small-frame array fall in each grid cell."""
        rows = np.add.reduceat(pixels, self._grid_rows, axis=0, dtype=np.int32)
        counts: np.ndarray = np.add.reduceat(rows, self._grid_cols, axis=1, dtype=np.int32)
        return counts

    def _spread(self, changed: np.ndarray) -> float:
        """Share of the watched grid cells (over a quarter unmasked) where over 2 % of the
        watched pixels changed."""
        share = self._cell_counts(changed)[self._watched_cells] / self._cell_area
        return float(np.count_nonzero(share > 0.02)) / self._cell_area.size

    def _boxes(self, joined: np.ndarray, changed: np.ndarray) -> list[Box]:
        """A box around each blob of `joined` holding at least `min_area` changed pixels.

        The size test counts the changed pixels themselves, not the dilated blob: dilation
        turns one noisy pixel into a 5×5 patch, which must not pass for motion.
        """
        contours, _ = cv2.findContours(joined, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        boxes = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            if cv2.countNonZero(changed[y : y + h, x : x + w]) < self.config.min_area:
                continue
            boxes.append(Box(
                int(x * self._scale_x), int(y * self._scale_y),
                min(self.width, int(np.ceil((x + w) * self._scale_x))),
                min(self.height, int(np.ceil((y + h) * self._scale_y))),
            ))
        return boxes

    def _learn(self, current: np.ndarray, changed: np.ndarray) -> None:
        """Blend the frame into the background where nothing moves (and where motion stayed)."""
        assert self._background is not None
        if not changed.any():
            self._still_moving[:] = 0
            cv2.accumulateWeighted(current, self._background, self.config.frame_alpha)
            return
        limit = self.config.absorb_after_frames
        # Count frames in a row per pixel (changed is 0/1): +1 where it moved, 0 where not.
        counted: np.ndarray = cv2.multiply(cv2.add(self._still_moving, changed), changed)
        self._still_moving = np.minimum(counted, limit).astype(np.uint8)
        held = ((self._still_moving < limit) & (changed > 0)).astype(np.uint8) * 255
        cv2.accumulateWeighted(current, self._background, self.config.frame_alpha,
                               mask=cv2.bitwise_not(held))
