"""One camera's analysis, frame by frame: the same code for the live worker and for a file.

Cheap before dear: every frame is decoded (H.264 needs it), but only `detect.fps` frames a
second are analysed, each scaled to `detect.width` and made grey by FFmpeg's scaler (no colour
conversion of the full frame), privacy masks blacked out first. Motion runs on each analysed
frame; camera health (tamper) judges one a second; analytics run only where and when
something moved: `face` (edge/video/face/) looks for faces in the moving regions of the
full-resolution frame and matches them against the gateway's watchlist. Events carry the
stream time `t_ms`, never the wall clock, so `shouwang video analyze` on a file gives the
events the daemon would have.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge.video.config import CameraConfig
from edge.video.events import CameraEvent
from edge.video.face.pipeline import FaceMatch, FacePipeline, WatchlistSource
from edge.video.frames import polygon_mask, scaled_size
from edge.video.health import CameraHealth, is_colour
from edge.video.motion import Box, MotionDetector

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Analysed:
    """What one analysed frame gave."""

    t_ms: int
    events: list[CameraEvent] = field(default_factory=list)
    motion: list[Box] = field(default_factory=list)
    faces: list[FaceMatch] = field(default_factory=list)  # its events are in `events` too


class Analyzer:
    def __init__(self, config: CameraConfig, watchlist: WatchlistSource | None = None) -> None:
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
        self.face: FacePipeline | None = None
        if "face" in config.analytics:
            source = watchlist or WatchlistSource(None, config.face.reload_s,
                                                  config.face.embedder.model)
            self.face = FacePipeline(config.face, source)

    def due(self, t_ms: int) -> bool:
        """Whether the frame at `t_ms` is one to analyse (detect.fps of them a second)."""
        return self._next_ms is None or t_ms >= self._next_ms

    def analyse(self, frame: Any, t_ms: int) -> Analysed:
        """Analyse a decoded frame (av.VideoFrame) taken at stream time `t_ms`."""
        self._next_ms = (self._next_ms or t_ms) + self.interval_ms
        if self._next_ms <= t_ms:  # fell behind (a slow frame, a gap): do not catch up
            self._next_ms = t_ms + self.interval_ms
        size = (int(frame.width), int(frame.height))
        if size != self.size:
            self._resize(size)
        w, h = self._work
        grey = frame.reformat(width=w, height=h, format="gray").to_ndarray()
        if self._mask is not None:
            grey[self._mask > 0] = 0
        tiny = frame.reformat(width=64, height=36, format="bgr24").to_ndarray()
        self.analysed += 1
        out = Analysed(t_ms)
        assert self._motion is not None
        out.motion = self._motion.detect(grey)
        events = self._health.update(grey, t_ms, colour=is_colour(tiny))
        # One tamper alert per camera whatever the causes: it clears when the last one does.
        active = self._health.active
        out.events = [e for e in events if e.type != "tamper_cleared" or not active]
        if self.face is not None:
            motion = [self.scale_box(b) for b in out.motion]
            if motion or self.face.tracker.tracks:
                out.faces = self.face.process(self._colour(frame), motion, t_ms)
                out.events += [f.event for f in out.faces]
        return out

    def _colour(self, frame: Any) -> np.ndarray:
        """The full-resolution BGR frame, privacy masks blacked out (faces are looked for
        there: at the analysed width a face at the gate is too small to recognise)."""
        bgr: np.ndarray = frame.to_ndarray(format="bgr24")
        for polygon in self.config.privacy_masks:
            cv2.fillPoly(bgr, [np.array(polygon, np.int32)], (0, 0, 0))
        return bgr

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

    def scale_box(self, box: Box) -> Box:
        """A motion box from analysed-frame pixels to the source frame's."""
        assert self.size is not None
        sx, sy = self.size[0] / self._work[0], self.size[1] / self._work[1]
        return Box(int(box.x1 * sx), int(box.y1 * sy), int(box.x2 * sx), int(box.y2 * sy))
