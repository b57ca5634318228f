"""One camera's analysis, frame by frame: the same code for the live worker and for a file.

Cheap before dear: every frame is decoded (H.264 needs it), but only `detect.fps` frames a
second are analysed, each scaled to `detect.width` and made grey by FFmpeg's scaler (no colour
conversion of the full frame), privacy masks blacked out first. Motion runs on each analysed
frame; camera health (tamper) judges one a second; analytics (face: a later issue) run
only where and when something moved. The exception is `throw`: a falling object crosses a
floor in a few frames, so the thrown-object detector (edge/video/throw/) sees every frame, on
the luma plane the decoder already has, cropped to the façade; motion and tamper still run at
`detect.fps`. Events carry the stream time `t_ms`, never the wall
clock, so `shouwang video analyze` on a file gives the events the daemon would have.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.video.config import CameraConfig
from edge.video.events import CameraEvent
from edge.video.frames import polygon_mask, scaled_size
from edge.video.health import CameraHealth, is_colour
from edge.video.motion import Box, MotionDetector
from edge.video.throw.calibration import Facade
from edge.video.throw.detector import ThrowDetector

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Analysed:
    """What one analysed frame gave."""

    t_ms: int
    events: list[CameraEvent] = field(default_factory=list)
    motion: list[Box] = field(default_factory=list)
    detected: bool = False  # motion and tamper ran on this frame (detect.fps of them a second)


class Analyzer:
    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        self.interval_ms = 1000.0 / config.detect.fps
        self.size: tuple[int, int] | None = None  # the source frames' (width, height)
        self.analysed = 0
        self.resolution_changes = 0
        self._next_ms: float | None = None
        self._motion: MotionDetector | None = None
        self._health = CameraHealth(config.health, camera=config.id)
        self._mask: np.ndarray | None = None
        self._work: tuple[int, int] = (0, 0)
        self.every_frame = "throw" in config.analytics
        self.throw: ThrowDetector | None = None
        self.facade_problem: str | None = None  # the façade does not fit this stream's frame

    def due(self, t_ms: int) -> bool:
        """Whether the frame at `t_ms` is one to analyse: every frame for a `throw` camera,
        else detect.fps of them a second."""
        return self.every_frame or self._detect_due(t_ms)

    def _detect_due(self, t_ms: int) -> bool:
        return self._next_ms is None or t_ms >= self._next_ms

    def analyse(self, frame: Any, t_ms: int) -> Analysed:
        """Analyse a decoded frame (av.VideoFrame) taken at stream time `t_ms`."""
        size = (int(frame.width), int(frame.height))
        if size != self.size:
            self._resize(size)
        out = Analysed(t_ms)
        if self.throw is not None:
            out.events.extend(self.throw.update(luma(frame), t_ms))
        if self._detect_due(t_ms):
            self._detect(frame, t_ms, out)
        return out

    def _detect(self, frame: Any, t_ms: int, out: Analysed) -> None:
        """Motion and tamper, detect.fps frames a second."""
        out.detected = True
        self._next_ms = (self._next_ms or t_ms) + self.interval_ms
        if self._next_ms <= t_ms:  # fell behind (a slow frame, a gap): do not catch up
            self._next_ms = t_ms + self.interval_ms
        w, h = self._work
        grey = frame.reformat(width=w, height=h, format="gray").to_ndarray()
        if self._mask is not None:
            grey[self._mask > 0] = 0
        tiny = frame.reformat(width=64, height=36, format="bgr24").to_ndarray()
        self.analysed += 1
        assert self._motion is not None
        out.motion = self._motion.detect(grey)
        events = self._health.update(grey, t_ms, colour=is_colour(tiny))
        # One tamper alert per camera whatever the causes: it clears when the last one does.
        active = self._health.active
        out.events.extend(e for e in events if e.type != "tamper_cleared" or not active)

    def _resize(self, size: tuple[int, int]) -> None:
        """A new stream size (first frame, or the camera changed it mid-stream)."""
        if self.size is not None:
            self.resolution_changes += 1
            log.warning("camera %s: resolution changed from %sx%s to %sx%s; relearning",
                        self.config.id, *self.size, *size)
            self._health.relearn()
        self.size = size
        width = min(self.config.detect.width, size[0])
        self._work = scaled_size(size[0], size[1], to_width=width - width % 2)
        masks = self.config.privacy_masks
        self._mask = polygon_mask(masks, size[0], size[1], self._work, grow=1)
        # Motion works in analysed-frame pixels: masks scaled to the same frame.
        sx, sy = self._work[0] / size[0], self._work[1] / size[1]
        scaled = [[(round(x * sx), round(y * sy)) for x, y in poly] for poly in masks]
        self._motion = MotionDetector(*self._work, self.config.motion, masks=scaled)
        if self.every_frame:
            self._start_throw(size)

    def _start_throw(self, size: tuple[int, int]) -> None:
        """The thrown-object detector for this frame size; without a façade that fits the
        frame, it runs uncalibrated (floor unknown) and says why once."""
        facade = None
        calibration = self.config.facade
        self.facade_problem = None if calibration is None else calibration.outside(*size)
        if calibration is not None and self.facade_problem is None:
            facade = Facade(calibration)
        elif self.facade_problem:
            log.error("camera %s: %s; thrown objects are detected with the floor unknown",
                      self.config.id, self.facade_problem)
        full_mask = polygon_mask(self.config.privacy_masks, size[0], size[1], size, grow=1)
        self.throw = ThrowDetector(self.config.throw, size[0], size[1], facade, full_mask)

    def scale_box(self, box: Box) -> Box:
        """A motion box from analysed-frame pixels to the source frame's."""
        assert self.size is not None
        sx, sy = self.size[0] / self._work[0], self.size[1] / self._work[1]
        return Box(int(box.x1 * sx), int(box.y1 * sy), int(box.x2 * sx), int(box.y2 * sy))


def luma(frame: Any) -> np.ndarray:
    """The frame's grey image without a conversion: the Y plane of a YUV frame (a view of the
    decoder's buffer, valid until the next frame), else FFmpeg's grey conversion."""
    if frame.format.name in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "nv12"):
        plane = frame.planes[0]
        rows: np.ndarray = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
        return rows[:, : frame.width]
    grey: np.ndarray = frame.to_ndarray(format="gray")
    return grey
