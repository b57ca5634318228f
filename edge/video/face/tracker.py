"""Face tracks across analysed frames: one track per person walking through the view.

Greedy association by overlap: a face continues the live track whose last box it overlaps
most (IoU at least `min_iou`), or whose centre is within one face width (at 5 analysed frames
a second a walking head moves about its own width). A track not seen for `timeout_ms` ends,
and with it every crop it held: nothing of a face that matched no one outlives its track.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge.video.detections import box_iou


@dataclass(slots=True)
class Track:
    id: int
    box: np.ndarray  # xyxy, source-frame pixels
    last_ms: int
    hits: dict[str, int] = field(default_factory=dict)  # person → matching frames
    best_score: dict[str, float] = field(default_factory=dict)
    alerted: set[str] = field(default_factory=set)
    best: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (quality, BGR crop)

    def keep_crop(self, quality: float, crop: np.ndarray, most: int) -> None:
        self.best.append((quality, crop))
        self.best.sort(key=lambda pair: -pair[0])
        del self.best[most:]


class FaceTracker:
    def __init__(self, timeout_ms: int, min_iou: float = 0.2) -> None:
        self.timeout_ms = timeout_ms
        self.min_iou = min_iou
        self.tracks: list[Track] = []
        self._next = 1

    def update(self, boxes: np.ndarray, t_ms: int) -> list[Track]:
        """The track of each box (in order), new ones started; ended tracks dropped."""
        self.tracks = [t for t in self.tracks if t_ms - t.last_ms <= self.timeout_ms]
        free = list(self.tracks)
        out: list[Track] = []
        for box in boxes:
            track = self._nearest(box, free)
            if track is None:
                track = Track(self._next, box.copy(), t_ms)
                self._next += 1
                self.tracks.append(track)
            else:
                free.remove(track)
                track.box, track.last_ms = box.copy(), t_ms
            out.append(track)
        return out

    def _nearest(self, box: np.ndarray, tracks: list[Track]) -> Track | None:
        if not tracks:
            return None
        ious = box_iou(box, np.stack([t.box for t in tracks]))
        best = int(np.argmax(ious))
        if ious[best] >= self.min_iou:
            return tracks[best]
        centre = (box[:2] + box[2:]) / 2
        width = box[2] - box[0]
        dist = [float(np.hypot(*(centre - (t.box[:2] + t.box[2:]) / 2))) for t in tracks]
        near = int(np.argmin(dist))
        return tracks[near] if dist[near] <= width else None

    def live_boxes(self) -> list[np.ndarray]:
        return [t.box for t in self.tracks]
