"""One camera's analysis, frame by frame: the same code for the live worker and for a file.

Cheap before dear: every frame is decoded (H.264 needs it), but only `detect.fps` frames a
second are analysed. An analysed frame's grey picture is the decoder's own Y (luma) plane,
taken without conversion and shrunk to `detect.width` by OpenCV (`frames.shrink`), its video
range (16–235) stretched to full range on the small frame; privacy masks blacked out then.
Motion runs on each analysed frame; camera health (tamper) judges one a second, and only for
that frame is a tiny colour copy made (is the camera in its IR mode?) by an FFmpeg scaler kept
for the camera. Analytics run only where and when something moved: `face`
(edge/video/face/) looks for faces in the moving regions of the full-resolution frame and
matches them against the gateway's watchlist. The exception is `throw`: a falling object
crosses a floor in a few frames, so the thrown-object detector (edge/video/throw/) sees every
frame, on the luma plane the decoder already has, cropped to the façade; motion, tamper and
faces still run at `detect.fps`. A frame that is not planar YUV (a test's BGR
frame) is made grey by a kept FFmpeg scaler. Making a new scaler per frame, as
`VideoFrame.reformat` does, cost 2.8 ms of a 720p frame (bench/video.py, docs/video.md
"Benchmark"); the Y plane and `shrink` take 0.16 ms.

Events carry the stream time `t_ms`, never the wall clock, so `shouwang video analyze` on a
file gives the events the daemon would have.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from edge.video.config import CameraConfig
from edge.video.events import CameraEvent
from edge.video.face.pipeline import FaceMatch, FacePipeline, WatchlistSource
from edge.video.frames import polygon_mask, scaled_size, shrink
from edge.video.health import CameraHealth, is_colour
from edge.video.motion import Box, MotionDetector
from edge.video.throw.calibration import Facade
from edge.video.throw.detector import ThrowDetector

log = logging.getLogger(__name__)
# Decoded formats whose first plane is the luma (grey) picture, 8 bits a pixel.
LUMA_FIRST = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p",
                        "nv12", "nv21", "gray"})
FULL_RANGE = frozenset({"yuvj420p", "yuvj422p", "yuvj444p", "gray"})
AVCOL_RANGE_JPEG = 2  # FFmpeg's colour range of a full-range (0–255) frame
# Video range (16–235 luma) to full range (0–255), as FFmpeg's scaler makes grey.
VIDEO_TO_FULL = np.clip((np.arange(256) - 16) * 255 / 219 + 0.5, 0, 255).astype(np.uint8)
CHROMA_TO_FULL = np.clip((np.arange(256) - 128) * 255 / 224 + 128.5, 0, 255).astype(np.uint8)
TINY = (64, 36)  # the colour copy that tells day (colour) from IR (grey)


@dataclass(slots=True)
class Analysed:
    """What one analysed frame gave."""

    t_ms: int
    events: list[CameraEvent] = field(default_factory=list)
    motion: list[Box] = field(default_factory=list)
    faces: list[FaceMatch] = field(default_factory=list)  # its events are in `events` too
    detected: bool = False  # motion and tamper ran on this frame (detect.fps of them a second)


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
        # Kept scalers: FFmpeg builds one per (size, format) once, not once per frame.
        self._tiny = VideoReformatter()
        self._grey = VideoReformatter()
        self.face: FacePipeline | None = None
        if "face" in config.analytics:
            source = watchlist or WatchlistSource(None, config.face.reload_s,
                                                  config.face.embedder.model)
            self.face = FacePipeline(config.face, source)
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
        grey = self.grey(frame)
        if self._mask is not None:
            grey[self._mask > 0] = 0
        self.analysed += 1
        assert self._motion is not None
        out.motion = self._motion.detect(grey)
        colour = None
        if self._health.due(t_ms):  # a judged frame: is the camera in colour or in IR?
            colour = is_colour(self.tiny_colour(frame))
        events = self._health.update(grey, t_ms, colour=colour)
        # One tamper alert per camera whatever the causes: it clears when the last one does.
        active = self._health.active
        out.events.extend(e for e in events if e.type != "tamper_cleared" or not active)
        if self.face is not None:
            motion = [self.scale_box(b) for b in out.motion]
            if motion or self.face.tracker.tracks:
                out.faces = self.face.process(self._colour(frame), motion, t_ms)
                out.events += [f.event for f in out.faces]

    def tiny_colour(self, frame: Any) -> np.ndarray:
        """A TINY BGR copy of the frame, enough to tell colour from IR. From a YUV 4:2:0
        frame of even size (every camera's), its planes are averaged down and converted by
        OpenCV, closer to the picture and faster than FFmpeg's scaler, used for the rest."""
        name = frame.format.name
        w, h = int(frame.width), int(frame.height)
        if name not in ("yuv420p", "yuvj420p") or w % 2 or h % 2:  # odd: planes misalign
            tiny: np.ndarray = self._tiny.reformat(
                frame, width=TINY[0], height=TINY[1], format="bgr24").to_ndarray()
            return tiny
        cw, ch = w // 2, h // 2
        y, u, v = (_plane(frame, i, *dims) for i, dims in enumerate(((w, h), (cw, ch),
                                                                      (cw, ch))))
        ty, tu, tv = (shrink(p, TINY, last=cv2.INTER_AREA) for p in (y, u, v))
        if name not in FULL_RANGE and getattr(frame, "color_range", 0) != AVCOL_RANGE_JPEG:
            ty = cv2.LUT(ty, VIDEO_TO_FULL)
            tu, tv = cv2.LUT(tu, CHROMA_TO_FULL), cv2.LUT(tv, CHROMA_TO_FULL)
        bgr: np.ndarray = cv2.cvtColor(cv2.merge([ty, tv, tu]), cv2.COLOR_YCrCb2BGR)
        return bgr

    def _colour(self, frame: Any) -> np.ndarray:
        """The full-resolution BGR frame, privacy masks blacked out (faces are looked for
        there: at the analysed width a face at the gate is too small to recognise)."""
        bgr: np.ndarray = frame.to_ndarray(format="bgr24")
        for polygon in self.config.privacy_masks:
            cv2.fillPoly(bgr, [np.array(polygon, np.int32)], (0, 0, 0))
        return bgr

    def grey(self, frame: Any) -> np.ndarray:
        """The frame as a full-range grey picture of the analysed size, a new array (never a
        view of the decoder's buffer, which it may still use as a reference)."""
        w, h = self._work
        name = frame.format.name
        if name not in LUMA_FIRST:
            grey: np.ndarray = self._grey.reformat(frame, width=w, height=h,
                                                   format="gray").to_ndarray()
            return grey
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
        small = shrink(luma[:, : frame.width], (w, h))
        if name in FULL_RANGE or getattr(frame, "color_range", 0) == AVCOL_RANGE_JPEG:
            return small.copy() if np.may_share_memory(small, luma) else small
        full: np.ndarray = cv2.LUT(small, VIDEO_TO_FULL)
        return full

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


def _plane(frame: Any, index: int, width: int, height: int) -> np.ndarray:
    """Plane `index` of a planar frame as a (height, width) view of the decoder's buffer."""
    plane = frame.planes[index]
    rows: np.ndarray = np.frombuffer(plane, np.uint8).reshape(height, plane.line_size)
    return rows[:, :width]


LUMA_PLANE = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "nv12"})


def is_full_range(frame: Any) -> bool:
    """Whether `luma(frame)` spans 0-255 (else 16-235, video range: the Y plane of most
    cameras' streams)."""
    return bool(frame.format.name not in LUMA_PLANE or frame.format.name in FULL_RANGE
                or getattr(frame, "color_range", 0) == AVCOL_RANGE_JPEG)


def luma(frame: Any) -> np.ndarray:
    """The frame's grey image without a conversion: the Y plane of a YUV frame (a view of the
    decoder's buffer, valid until the next frame), else FFmpeg's grey conversion."""
    if frame.format.name in LUMA_PLANE:
        plane = frame.planes[0]
        rows: np.ndarray = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
        return rows[:, : frame.width]
    grey: np.ndarray = frame.to_ndarray(format="gray")
    return grey
