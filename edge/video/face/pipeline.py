"""One camera's face analytics: regions → faces → quality → alignment → descriptor → track → match.

Cheap before dear: faces are looked for only in the regions that moved (the Analyzer's motion
boxes) and around the faces already being tracked, widened by `region_margin`, at the camera's
detect rate. Each face passes the quality gates (edge/video/face/quality.py) or is counted by
the reason it failed; a face that passes is aligned to the model's template, described and
matched against the watchlist (edge/video/face/watchlist.py). A track raises one `face_match`
when one person has matched in `hits` of its frames (the list's tier), unless that person was
alerted on this camera within the list's cooldown. The match carries the track's best crops as
evidence; a track that matched no one ends with its crops, and only counts remain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.video.detections import Detections
from edge.video.detectors.retinaface import RetinaFace
from edge.video.events import CameraEvent
from edge.video.face.config import FaceConfig
from edge.video.face.embedder import DEFAULT_MODEL, FaceEmbedder
from edge.video.face.quality import REASONS, judge
from edge.video.face.store import WatchlistError, WatchlistStore
from edge.video.face.tracker import FaceTracker, Track
from edge.video.face.watchlist import Watchlist
from edge.video.motion import Box

log = logging.getLogger(__name__)
EVENT = "face_match"
CROP_MAX = 224  # evidence crops are scaled down to at most this many pixels a side


@dataclass(slots=True)
class FaceMatch:
    event: CameraEvent
    crops: list[bytes]  # JPEG crops of the track's best frames


@dataclass(slots=True)
class FaceCounts:
    faces: int = 0
    matched: int = 0  # faces that matched someone (frames, not alerts)
    unmatched: int = 0
    alerts: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))


class WatchlistSource:
    """The store's watchlist, reloaded when the file changes (looked at every `reload_s`).

    An unreadable store (missing key, damaged file) is logged once and counted; the last good
    watchlist stays in use, so the camera keeps running."""

    def __init__(self, store: WatchlistStore | None, reload_s: float, model: str = DEFAULT_MODEL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.model = model
        self.reload_s = reload_s
        self.clock = clock
        self.errors = 0
        self._watchlist = Watchlist([], {}, model)
        self._version: float | None = None
        self._checked = -float("inf")
        self._failing = False

    def current(self) -> Watchlist:
        if self.store is None:
            return self._watchlist
        now = self.clock()
        if now - self._checked < self.reload_s:
            return self._watchlist
        self._checked = now
        version = self.store.version()
        if version == self._version:
            return self._watchlist
        try:
            self._watchlist = Watchlist(*self.store.matching(), self.model)
        except WatchlistError as err:
            self.errors += 1
            if not self._failing:
                log.error("watchlist not loaded: %s", err)
                self._failing = True
            return self._watchlist
        self._version = version
        if self._failing:
            log.info("watchlist loaded again")
            self._failing = False
        log.info("watchlist: %d descriptors of %d people", len(self._watchlist),
                 len(self._watchlist.people))
        if self._watchlist.other_model:
            log.warning("watchlist: %d enrolments made with another descriptor model than %s "
                        "are not matched; enrol them again", self._watchlist.other_model,
                        self.model)
        return self._watchlist


class FacePipeline:
    def __init__(self, config: FaceConfig, source: WatchlistSource,
                 detector: RetinaFace | None = None, embedder: FaceEmbedder | None = None) -> None:
        self.config = config
        self.source = source
        self.detector = detector or RetinaFace(config.detector)
        self.embedder = embedder or FaceEmbedder(config.embedder, config.detector.models_dir)
        self.tracker = FaceTracker(config.track_timeout_ms)
        self.counts = FaceCounts()
        self._cooldown: dict[str, int] = {}  # person → t_ms of their last alert on this camera

    def warm_up(self) -> None:
        self.detector.warm_up()
        self.embedder.warm_up()

    def regions(self, motion: list[Box], size: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """One box around every moving region and live track, widened, in frame pixels."""
        boxes = [np.array([b.x1, b.y1, b.x2, b.y2], np.float32) for b in motion]
        boxes += self.tracker.live_boxes()
        if not boxes:
            return None
        all_boxes = np.stack(boxes)
        wh = all_boxes[:, 2:] - all_boxes[:, :2]
        grow = np.tile(wh * self.config.region_margin, 2) * np.array([-1, -1, 1, 1])
        grown = all_boxes + grow
        x1, y1 = np.floor(grown[:, :2].min(0)).astype(int)
        x2, y2 = np.ceil(grown[:, 2:].max(0)).astype(int)
        w, h = size
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if x2 - x1 < 16 or y2 - y1 < 16:
            return None
        return int(x1), int(y1), int(x2), int(y2)

    def process(self, frame: np.ndarray, motion: list[Box], t_ms: int) -> list[FaceMatch]:
        """Faces in a BGR frame (privacy masks already applied) where `motion` moved."""
        region = self.regions(motion, (frame.shape[1], frame.shape[0]))
        if region is None:
            self.tracker.update(np.zeros((0, 4), np.float32), t_ms)  # let tracks end
            return []
        x1, y1, x2, y2 = region
        crop = frame[y1:y2, x1:x2]
        # Shrink the region to the detector's size here, bilinearly: the adapter's area
        # averaging costs a third of the detection at non-integer factors (bench/face.py), and
        # a face big enough to recognise survives a bilinear shrink.
        shrink = min(1.0, self.config.detector.input_size / max(crop.shape[:2]))
        if shrink < 1.0:
            crop = cv2.resize(crop, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_LINEAR)
        faces = self.detector.detect(np.ascontiguousarray(crop))
        if len(faces):
            faces = Detections(
                xyxy=faces.xyxy / shrink + np.array([x1, y1, x1, y1], np.float32),
                confidence=faces.confidence, class_id=faces.class_id,
                landmarks=None if faces.landmarks is None
                else faces.landmarks / shrink + np.array([x1, y1], np.float32),
            )
        tracks = self.tracker.update(faces.xyxy, t_ms)
        watchlist = self.source.current()
        out: list[FaceMatch] = []
        for i, track in enumerate(tracks):
            self.counts.faces += 1
            assert faces.landmarks is not None
            landmarks = faces.landmarks[i]
            chip = self.embedder.align(frame, landmarks)
            reason, quality = judge(self.config.quality, float(faces.confidence[i]), landmarks,
                                    chip)
            if reason is not None:
                self.counts.skipped[reason] += 1
                continue
            match = watchlist.match(self.embedder.embed([chip])[0]) if len(watchlist) else None
            if match is None:
                self.counts.unmatched += 1
                continue
            self.counts.matched += 1
            track.keep_crop(quality, _crop(frame, faces.xyxy[i]), self.config.best_frames)
            track.hits[match.person] = track.hits.get(match.person, 0) + 1
            track.best_score[match.person] = max(track.best_score.get(match.person, 0.0),
                                                 match.score)
            hit = self._alert(track, match.person, match.list, watchlist, t_ms)
            if hit is not None:
                out.append(hit)
        return out

    def _alert(self, track: Track, person: str, list_name: str, watchlist: Watchlist,
               t_ms: int) -> FaceMatch | None:
        policy = watchlist.lists[list_name]
        if person in track.alerted or track.hits[person] < policy.hits:
            return None
        track.alerted.add(person)
        last = self._cooldown.get(person)
        if last is not None and t_ms - last < policy.cooldown_s * 1000:
            return None
        self._cooldown[person] = t_ms
        self.counts.alerts += 1
        event = CameraEvent(EVENT, t_ms, {
            "person": person, "list": list_name,
            "score": round(track.best_score[person], 4), "track": str(track.id),
        })
        crops = [_jpeg(crop) for _, crop in track.best]
        return FaceMatch(event, crops)


def _crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The face box widened by a quarter on each side, scaled to at most CROP_MAX."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * 0.25, (y2 - y1) * 0.25
    h, w = frame.shape[:2]
    left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
    right, bottom = min(w, int(x2 + dx)), min(h, int(y2 + dy))
    crop = frame[top:bottom, left:right]
    scale = CROP_MAX / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return crop.copy()


def _jpeg(crop: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError("face crop did not encode as JPEG")
    return bytes(data)
