"""Thrown objects at the camera's full frame rate: small movers inside the façade, tracked, and
kept only if they fall the way a body falls under gravity seen through this camera.

Per frame (the Y plane of the decoded frame, cropped to the façade's box; no colour work):
1. background: a running average, brightness-fitted to each frame (the median offset of a
   sample), restarted on a lighting event (most of the crop changed at once);
2. candidates: pixels that differ both from the background and from the previous frame (a
   window that lights up differs from the background but, from the next frame on, not from the
   previous one), joined by one dilation, blobs of `min_area`..`max_area` pixels: down to 3 px
   objects, not an insect filling a corner of the lens;
3. association: each track's position predicted (constant acceleration), the nearest candidate
   within a gate that widens with speed, up to `max_missed` frames without one;
4. the physical test, on the track mapped through the calibration to heights in metres
   (`Facade.metres`, perspective included): a least-squares fit z(t) = c + b·t − g'·t²/2 must
   give g' within `[g_min, g_max]` (drag slows light objects, the object flies a few metres in
   front of the wall), small residuals (a fluttering leaf, a flapping bird do not fit a
   parabola), little sideways acceleration, a real drop. A rain streak, a bird, a leaf, a
   light, laundry, a car: each fails at least one.
5. back-tracking: the launch point is the first sighting (a body leaving a window is seen from
   its first frames) or, when the track starts already falling fast, the apex of the fitted
   parabola above it; mapped to (floor, column) with a Gaussian of the position's uncertainty
   over the grid, the ranked candidates and their probabilities.

Without calibration the test runs in pixels (a parabola accelerating downward) and the event
says floor and column null: "floor unknown", never a guess.

The alarm goes out when the test first passes, while the object still falls; the track is
followed on after it (`Fall`, `ThrowDetector.fall`) for the marked clip, which draws the
whole fall. The event itself carries the track up to the alarm.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from pydantic import Field

from edge.video.events import CameraEvent
from edge.video.throw.calibration import Facade
from shouwang.config import Strict

G = 9.81


class ThrowConfig(Strict):
    threshold: int = Field(
        10, ge=3, le=80, description="Grey-level difference (from background and previous "
        "frame) that makes a pixel a candidate"
    )
    min_area: int = Field(2, ge=1, description="Fewest candidate pixels of a blob (after one "
                          "dilation: a 3 px object is about 15)")
    max_area: int = Field(2500, ge=10, description="More pixels than this: not a thrown object "
                          "(an insect on the lens, a person at a window)")
    margin_px: int = Field(24, ge=0, le=400, description="Pixels around the façade also watched")
    max_missed: int = Field(4, ge=0, le=25, description="Frames a track may go without a sighting")
    min_points: int = Field(7, ge=4, le=100, description="Sightings before the physical test")
    g_min: float = Field(4.0, gt=0, description="Least fitted downward acceleration (m/s²)")
    g_max: float = Field(16.0, gt=0, description="Most fitted downward acceleration (m/s²)")
    min_drop_m: float = Field(3.5, gt=0, description="Least drop seen before an alarm (metres)")
    min_drop_residuals: float = Field(15.0, gt=0, description="Least drop seen, in pixels, "
                                      "as a multiple of the RMS distance of the sightings from "
                                      "the fitted parabola: the fall must stand clear of the "
                                      "blob's own wander (a big blob flickering in place, "
                                      "then slipping, fits a wide parabola)")
    min_duration_s: float = Field(0.6, gt=0, description="Least time a track is seen before an "
                                  "alarm (a bird's bob fits a parabola for a moment, not longer)")
    max_lateral_mps: float = Field(5.0, gt=0, description="Fastest sideways motion along the "
                                   "façade (m/s): birds cross faster, thrown objects drift")
    residual_px: float = Field(2.5, gt=0, description="Largest RMS distance of the sightings "
                               "from the fitted parabola, in pixels")
    lateral_ratio: float = Field(0.5, gt=0, description="Largest sideways acceleration as a "
                                 "share of the downward one (image pixels)")
    min_accel_px: float = Field(60.0, gt=0, description="Without calibration: least downward "
                                "acceleration in pixels/s²")
    lighting_fraction: float = Field(0.15, gt=0, le=1, description="Share of the crop changed "
                                     "at once above which it is light, not motion")
    alpha: float = Field(0.04, gt=0, le=1, description="Background learning rate per frame")
    launch_ring_s: float = Field(2.0, ge=0, le=10, description="Seconds of the façade's recent "
                                 "grey frames kept, so the launch picture shows the first "
                                 "sighting (the alarm comes 0.6-1.3 s after it)")
    launch_ring_mb: float = Field(32.0, ge=0, le=512, description="Most memory those frames "
                                  "may take (MiB); fewer seconds are kept when they would "
                                  "take more")


@dataclass(slots=True)
class Track:
    points: list[tuple[int, float, float]] = field(default_factory=list)  # t_ms, x, y (frame)
    sizes: list[float] = field(default_factory=list)  # √area of each sighting's blob, pixels
    missed: int = 0
    confirmed: bool = False
    continuation: bool = False
    id: int = 0  # set when confirmed: the alarm's `ref`, for ThrowDetector.fall
    # The prediction's fit, kept until a sighting is added: (points, t_ref, line, parabola).
    _fit: tuple[int, int, tuple[float, float], tuple[float, float, float]] | None = None

    def predict(self, t_ms: int) -> tuple[float, float]:
        """Where the object should be at `t_ms`: from 4 sightings on, a least-squares fit of
        the last 12 (x straight, y a parabola); before that, the last step's velocity."""
        pts = self.points
        x, y = pts[-1][1], pts[-1][2]
        if len(pts) < 2:
            return x, y
        if len(pts) >= 4:
            if self._fit is None or self._fit[0] != len(pts):
                self._fit = (len(pts), *_line_and_parabola(pts[-12:]))
            _, t_ref, (bx, cx), (ay, by, cy) = self._fit
            h = (t_ms - t_ref) / 1000.0
            return cx + bx * h, cy + by * h + ay * h * h
        t1, x1, y1 = pts[-1]
        t0, x0, y0 = pts[-2]
        dt = max(t1 - t0, 1)
        h = t_ms - t1
        return x + (x1 - x0) / dt * h, y + (y1 - y0) / dt * h

    def gate(self) -> float:
        """How far from the prediction a sighting may be, pixels."""
        size = self.sizes[-1] if self.sizes else 3.0
        if len(self.points) >= 4:
            return 3.0 + 0.15 * self.speed() + 0.3 * size + 3.0 * self.missed
        return 8.0 + 0.8 * self.speed() + 0.3 * size + 4.0 * self.missed

    def speed(self) -> float:
        """Pixels per frame-ish (per 40 ms) of the last step."""
        if len(self.points) < 2:
            return 0.0
        (t0, x0, y0), (t1, x1, y1) = self.points[-2], self.points[-1]
        return math.hypot(x1 - x0, y1 - y0) * 40.0 / max(t1 - t0, 1)


class Fall:
    """A confirmed track followed after its alarm, for the marked clip: its own sightings
    and, once it has lost the object, those of the tracks that continued it (`followers`)
    which carry on the fall: each the nearest of its frame within the gate of the fall's
    prediction, as association takes them; the first within a second of the loss, then at
    most `max_missed` frames apart. Not all of theirs: whatever starts below a falling object
    within 3 s counts as its continuation (no second alarm), rain or a passer-by too. A track
    found to be the same fall by its own fit (`join`) is taken whole, from where the fall
    stands. Worked out as the frames come, kept between calls."""

    def __init__(self, track: Track) -> None:
        self.track = track
        self.followers: list[Track] = []
        self.joined: list[Track] = []
        self._taken = track  # the fall as taken so far
        self._base = -1  # the track's last sighting when `_taken` was started
        self._upto = -1  # the followers' sightings are taken up to this time

    def join(self, track: Track) -> None:
        """`track` is this fall (judged so by a fit of both, not by a gate): its sightings
        after the fall's last one are the fall's."""
        self.joined.append(track)

    def follow(self, frame_ms: float, max_missed: int, before: int | None = None) -> Track:
        """The fall so far as a track, its followers' sightings taken up to `before`
        (exclusive: the frame being associated) or all of them."""
        track = self.track
        if not self.followers and not self.joined:
            return track
        end = track.points[-1][0]
        if self._base != end:  # the first time, or the track found the object again
            self._taken = Track(list(track.points), list(track.sizes))
            self._base = self._upto = end
        fall, upto = self._taken, self._upto
        # (sighting, size, 0 joined or 1 follower): at one time a joined track's comes first.
        later = [(p, size, kind) for kind, tracks in ((0, self.joined), (1, self.followers))
                 for f in tracks if f.points[-1][0] > upto
                 for p, size in zip(f.points, f.sizes, strict=True)
                 if p[0] > upto and (before is None or p[0] < before)]
        later.sort(key=lambda psk: (psk[0][0], psk[2]))
        for t_ms, group in itertools.groupby(later, key=lambda psk: psk[0][0]):
            gap = t_ms - fall.points[-1][0]
            fall.missed = max(0, round(gap / frame_ms) - 1)
            px, py = fall.predict(t_ms)
            (_t, x, y), size, kind = min(group, key=lambda psk: (
                psk[2], math.hypot(psk[0][1] - px, psk[0][2] - py)))
            if kind == 0:  # joined: the same fall, whatever the gate says
                fall.points.append((t_ms, x, y))
                fall.sizes.append(size)
                continue
            lost = len(fall.points) == len(track.points)  # not found again yet
            if gap > (1000 if lost else (max_missed + 1.5) * frame_ms):
                continue
            if math.hypot(x - px, y - py) <= fall.gate():
                fall.points.append((t_ms, x, y))
                fall.sizes.append(size)
        if later:
            self._upto = later[-1][0][0]
        return fall


@dataclass(slots=True)
class Verdict:
    ok: bool
    reason: str
    score: float = 0.0
    fit: np.ndarray | None = None  # c, b, a of z(t) (metres or pixels), t in s from first


class ThrowDetector:
    """Feed every frame's luma (`update`); get `thrown_object` events."""

    def __init__(self, config: ThrowConfig, width: int, height: int,
                 facade: Facade | None = None, mask: np.ndarray | None = None) -> None:
        self.config = config
        self.facade = facade
        self.width, self.height = width, height
        if facade is not None:
            self.box = facade.bounds(width, height, grow=config.margin_px)
        else:
            self.box = (0, 0, width, height)
        x1, y1, x2, y2 = self.box
        self._mask = None if mask is None else mask[y1:y2, x1:x2] > 0
        self._bg: np.ndarray | None = None
        self._prev: np.ndarray | None = None
        self._kernel = np.ones((3, 3), np.uint8)
        self.tracks: list[Track] = []
        self._done: list[tuple[int, Track]] = []  # confirmed tracks ended recently
        self._ids = itertools.count(1)
        self._falls: dict[int, Fall] = {}  # the confirmed tracks alive or ended recently
        self.lighting_events = 0
        self.frames = 0
        self.frame_ms = 40.0  # the stream's frame interval, learned
        self._last_ms: int | None = None
        rng = np.random.default_rng(0)
        n = (y2 - y1) * (x2 - x1)
        self._sample = rng.choice(n, size=min(n, 4000), replace=False)
        # The façade crops of the last `launch_ring_s`: the ones the detector copies anyway
        # (no work per frame beyond keeping a reference), never changed once made.
        self._recent: deque[tuple[int, np.ndarray]] = deque()
        self._recent_max = int(config.launch_ring_mb * 2**20 // max(n, 1))

    # --- per frame --------------------------------------------------------------------------

    def update(self, luma: np.ndarray, t_ms: int) -> list[CameraEvent]:
        x1, y1, x2, y2 = self.box
        crop = luma[y1:y2, x1:x2].copy()  # the decoder reuses its buffer; masks write here
        if self._mask is not None:
            crop[self._mask] = 0
        self._keep(crop, t_ms)
        self.frames += 1
        if self._last_ms is not None and 0 < t_ms - self._last_ms < 1000:
            self.frame_ms += 0.05 * (t_ms - self._last_ms - self.frame_ms)
        self._last_ms = t_ms
        if self._bg is None or self._prev is None:
            self._bg, self._prev = crop.astype(np.float32), crop
            return []
        flat_bg = self._bg.reshape(-1)[self._sample]
        offset = float(np.median(crop.reshape(-1)[self._sample] - flat_bg))
        expected = cv2.convertScaleAbs(self._bg, alpha=1.0, beta=offset)
        thr = self.config.threshold
        fg = cv2.threshold(cv2.absdiff(crop, expected), thr, 255, cv2.THRESH_BINARY)[1]
        moved = cv2.threshold(cv2.absdiff(crop, self._prev), thr, 255, cv2.THRESH_BINARY)[1]
        self._prev = crop
        changed = cv2.countNonZero(fg) / fg.size
        if changed > self.config.lighting_fraction:
            self.lighting_events += 1
            self._bg = crop.astype(np.float32)
            return self._advance([], [], t_ms)
        joined = cv2.dilate(fg, self._kernel)
        n, labels, stats, centroids = cv2.connectedComponentsWithStats(joined, connectivity=8)
        if n <= 1:
            cv2.accumulateWeighted(crop, self._bg, self.config.alpha)
            return self._advance([], [], t_ms)
        # A blob is a candidate if part of it also changed since the last frame (it moves): a
        # window that lit up stays different from the background but not from the last frame.
        live = np.zeros(n, bool)
        live[np.unique(labels[cv2.bitwise_and(moved, joined) > 0])] = True
        area = stats[:, cv2.CC_STAT_AREA]
        keep = live & (area >= self.config.min_area) & (area <= self.config.max_area)
        keep[0] = False
        found = centroids[keep] + (x1, y1)
        sizes = np.sqrt(area[keep].astype(np.float64))
        cv2.accumulateWeighted(crop, self._bg, self.config.alpha, mask=cv2.bitwise_not(joined))
        return self._advance([(float(x), float(y)) for x, y in found], sizes.tolist(), t_ms)

    def _keep(self, crop: np.ndarray, t_ms: int) -> None:
        recent = self._recent
        recent.append((t_ms, crop))
        oldest = t_ms - self.config.launch_ring_s * 1000
        while recent and (recent[0][0] < oldest or len(recent) > self._recent_max):
            recent.popleft()

    def frame_at(self, t_ms: int) -> tuple[np.ndarray, tuple[int, int]] | None:
        """The façade's grey crop (privacy masks black, as the decoder gave it: video range
        unless the stream is full range) of the frame at `t_ms`, and its top-left corner in
        the frame; None when that frame is no longer kept. For the launch picture: call it
        when the event comes (the crop is never changed afterwards, any thread may read it)."""
        for t, crop in reversed(self._recent):
            if t == t_ms:
                return crop, (self.box[0], self.box[1])
            if t < t_ms:
                break
        return None

    def _adopt(self, old: Track, track: Track, t_ms: int) -> None:
        """Keep the continuation `track` of the confirmed `old` as a possible part of its
        fall (`Fall`) when the fall has lost the object within the last second and it starts
        near where the fall was expected: not every rain streak below a falling object."""
        fall = self._falls.get(old.id)
        if fall is None:
            return
        sofar = fall.follow(self.frame_ms, self.config.max_missed, before=t_ms)
        t_last = sofar.points[-1][0]
        if not 0 < t_ms - t_last <= 1000:
            return
        px, py = sofar.predict(t_ms)
        x, y = track.points[0][1], track.points[0][2]
        if math.hypot(px - x, py - y) <= 40 + 3 * (t_ms - t_last) / self.frame_ms:
            fall.followers.append(track)

    def _join(self, old: Track, track: Track) -> None:
        """`track` was found to be the same fall as the confirmed `old` by a fit of both
        (one throw, one event): its sightings after old's are the fall's, for the marked
        clip. It takes old's id, so a track found to be the same fall as it joins too."""
        fall = self._falls.get(old.id)
        if fall is not None:
            track.id = old.id
            fall.join(track)

    def fall(self, track_id: int) -> list[tuple[int, float, float]] | None:
        """The alarm `track_id`'s (its event's `ref`) whole track so far: the sightings up to
        the alarm and those after it, as the object falls on until it leaves the façade
        (continuations after a loss included, `Fall`). None once forgotten: 3 s after the
        track ended, when nothing can continue it any more."""
        fall = self._falls.get(track_id)
        if fall is None:
            return None
        return list(fall.follow(self.frame_ms, self.config.max_missed).points)

    def _advance(self, found: list[tuple[float, float]], sizes: list[float],
                 t_ms: int) -> list[CameraEvent]:
        events: list[CameraEvent] = []
        cand = np.asarray(found, dtype=np.float64).reshape(-1, 2)
        free = np.ones(len(cand), bool)
        if self.tracks and len(cand):
            pred = np.asarray([t.predict(t_ms) for t in self.tracks])
            dist = np.linalg.norm(pred[:, None, :] - cand[None, :, :], axis=2)
            gates = np.asarray([t.gate() for t in self.tracks])
            used_t = np.zeros(len(self.tracks), bool)
            # Nearest pairs first, only those within the track's gate.
            ii, jj = np.nonzero(dist <= gates[:, None])
            for k in np.argsort(dist[ii, jj], kind="stable"):
                i, j = int(ii[k]), int(jj[k])
                if used_t[i] or not free[j]:
                    continue
                used_t[i], free[j] = True, False
                self.tracks[i].points.append((t_ms, float(cand[j, 0]), float(cand[j, 1])))
                self.tracks[i].sizes.append(sizes[j])
                self.tracks[i].missed = 0
            for i, track in enumerate(self.tracks):
                if not used_t[i]:
                    track.missed += 1
        else:
            for track in self.tracks:
                track.missed += 1
        alive = []
        # Confirmed falls, to join a track that turns out to be one of them (below).
        fallen = [tr for _, tr in self._done] + [tr for tr in self.tracks if tr.confirmed]
        for track in self.tracks:
            # A track of a few sightings that loses its object is most likely noise (a rain
            # streak, a flicker): it gets one frame of grace, an established one `max_missed`.
            limit = self.config.max_missed if len(track.points) >= 4 else 1
            if track.missed > limit:
                if track.confirmed:
                    self._done.append((t_ms, track))
                continue
            alive.append(track)
            if not track.confirmed and not track.continuation and track.missed == 0 and \
                    len(track.points) >= self.config.min_points:
                verdict = self.judge_tail(track)
                if verdict.ok:
                    track.confirmed = True
                    # One throw, one event: a track of the same fall as a confirmed one (the
                    # body lost and found again, or seen as two blobs for a while) joins it.
                    same = self._same_fall(track, fallen)
                    if same is not None:
                        track.continuation = True
                        self._join(same, track)  # and the marked clip draws it as the fall
                    else:
                        events.append(self._event(track, verdict))
                    fallen.append(track)
        self._done = [(t, tr) for t, tr in self._done if t_ms - t < 3000]
        confirmed = [tr for _, tr in self._done] + [tr for tr in alive if tr.confirmed]
        if self._falls:
            kept = {tr.id for tr in confirmed}
            self._falls = {i: f for i, f in self._falls.items() if i in kept}
        for j in np.flatnonzero(free)[:200]:
            track = Track([(t_ms, float(cand[j, 0]), float(cand[j, 1]))], [sizes[j]])
            track.continuation = bool(confirmed) and self._continues(track, t_ms, confirmed)
            alive.append(track)
        # A storm of candidates (rain, snow) must not grow the tracks without bound.
        if len(alive) > 600:
            alive.sort(key=lambda tr: (tr.confirmed, len(tr.points)), reverse=True)
            alive = alive[:600]
        self.tracks = alive
        return events

    def _continues(self, track: Track, t_ms: int, confirmed: list[Track]) -> bool:
        """A new track below a confirmed one, on its line, within 3 s: the same object,
        lost for a few frames (blur, a bright window behind it) and found again."""
        x, y = track.points[0][1], track.points[0][2]
        for old in confirmed:
            t_last, _, y_last = old.points[-1]
            if t_ms - t_last > 3000 or y < y_last - 20:
                continue
            px, _ = old.predict(t_ms)
            if abs(px - x) < 40 + 0.15 * (y - y_last):
                self._adopt(old, track, t_ms)
                return True
        return False

    def _same_fall(self, track: Track, fallen: list[Track]) -> Track | None:
        """The one of `fallen` (confirmed tracks alive or ended within 3 s) whose falling
        body `track` follows: fitted together, the last second of that one and the
        whole of this one move as one body (one motion, y cubic in time: gravity slowed by
        drag; x quadratic), each track allowed its own constant offset (a blob's centroid,
        or half of a split blob), of at most 30 px plus twice the blob's size, within the
        residual a single track is allowed; None when `track` is a body of its own."""
        t_first = track.points[0][0]
        new = np.asarray(track.points, dtype=np.float64)
        size = float(np.median(track.sizes)) if track.sizes else 3.0
        for old in fallen:
            if old is track or t_first - old.points[-1][0] > 3000:
                continue
            prev = np.asarray([p for p in old.points if p[0] >= old.points[-1][0] - 1000],
                              dtype=np.float64)
            pts = np.concatenate([prev, new])
            t = (pts[:, 0] - t_first) / 1000.0
            is_new = np.r_[np.zeros(len(prev)), np.ones(len(new))]
            base = np.stack([1.0 - is_new, is_new, t, t * t], axis=1)
            ay = np.c_[base, t ** 3]
            fy, *_ = np.linalg.lstsq(ay, pts[:, 2], rcond=None)
            fx, *_ = np.linalg.lstsq(base, pts[:, 1], rcond=None)
            off = (ay @ fy - pts[:, 2]) ** 2 + (base @ fx - pts[:, 1]) ** 2
            res_px = math.sqrt(float(np.mean(off)))
            tolerance = 1.5 * (self.config.residual_px + 0.1 * size)
            shift = math.hypot(float(fx[1] - fx[0]), float(fy[1] - fy[0]))
            if res_px <= tolerance and shift <= 30 + 2 * size:
                return old
        return None

    # --- the physical test --------------------------------------------------------------------

    def judge_tail(self, track: Track) -> Verdict:
        """`judge` the whole track or, failing that, its later part: a falling object can be
        picked up by a track that held something else first (laundry at the window it left,
        a light). A tail that passes becomes the track, so its first sighting is the launch."""
        verdict = self.judge(track)
        n = len(track.points)
        if verdict.ok:
            # A body leaving a window is slow and seen frame after frame: sightings before a
            # gap of 3 or more frames near the start belong to something else the track held
            # (a streak, a curtain) when what follows the gap falls by itself.
            t = [p[0] for p in track.points[: n // 2 + 1]]
            gaps = [i for i in range(1, len(t)) if t[i] - t[i - 1] > 3.5 * self.frame_ms]
            if gaps and n - gaps[-1] >= self.config.min_points:
                tail = Track(track.points[gaps[-1]:], track.sizes[gaps[-1]:])
                later = self.judge(tail)
                if later.ok:
                    del track.points[:gaps[-1]], track.sizes[:gaps[-1]]
                    track._fit = None
                    return later
        for start in (n // 4, n // 2):
            if verdict.ok or n - start < max(self.config.min_points, 2) or start == 0:
                break
            tail = Track(track.points[start:], track.sizes[start:])
            verdict = self.judge(tail)
            if verdict.ok:
                del track.points[:start], track.sizes[:start]
                track._fit = None
        return verdict

    def judge(self, track: Track) -> Verdict:
        """Whether the track falls as a thrown or dropped body does."""
        cfg = self.config
        pts = np.asarray(track.points, dtype=np.float64)
        t = (pts[:, 0] - pts[0, 0]) / 1000.0
        if t[-1] < cfg.min_duration_s:
            return Verdict(False, f"seen {t[-1]:.2f} s")
        if len(t) < 0.75 * (t[-1] / (self.frame_ms / 1000.0) + 1):
            return Verdict(False, "sighted in too few of its frames")
        xy = pts[:, 1:3]
        design = np.stack([np.ones_like(t), t, -0.5 * t * t], axis=1)
        # Image-space shape: downward, parabolic, little sideways acceleration.
        fy, *_ = np.linalg.lstsq(design, xy[:, 1] * -1.0, rcond=None)
        fx, *_ = np.linalg.lstsq(design, xy[:, 0], rcond=None)
        ay_px = fy[2]  # downward acceleration in pixels/s² (image y grows downward)
        off = (design @ fy + xy[:, 1]) ** 2 + (design @ fx - xy[:, 0]) ** 2
        res_px = math.sqrt(float(np.mean(off)))
        if ay_px <= 0:
            return Verdict(False, "not accelerating downward")
        # A big blob's centroid wanders with its blur and shape: tolerance grows with it.
        tolerance = cfg.residual_px + 0.1 * float(np.median(track.sizes))
        if res_px > tolerance:
            return Verdict(False, f"residual {res_px:.1f} px")
        if abs(fx[2]) > cfg.lateral_ratio * ay_px:
            return Verdict(False, "sideways acceleration")
        drop_px = float(xy[-1, 1] - xy[:, 1].min())
        if drop_px < 8:
            return Verdict(False, "no drop")
        if drop_px < cfg.min_drop_residuals * res_px:
            return Verdict(False, f"drop {drop_px:.0f} px, {drop_px / res_px:.1f} residuals")
        if self.facade is None:
            # No scale: the shape alone. Accelerating downward, a real drop, and by the end
            # falling faster than it drifts sideways (a bird crosses, a body falls).
            if ay_px < cfg.min_accel_px:
                return Verdict(False, f"acceleration {ay_px:.0f} px/s²")
            if xy[-1, 1] - xy[:, 1].min() < 40:
                return Verdict(False, "drop under 40 px")
            v_down = -float(fy[1]) + ay_px * float(t[-1])
            if abs(float(fx[1])) > 0.5 * v_down:
                return Verdict(False, "drifts sideways more than it falls")
            score = 1.0 / (1.0 + res_px / tolerance)
            return Verdict(True, "falls (pixels)", score, fy * np.array([-1.0, -1.0, -1.0]))
        z = self.facade.metres(xy)
        fz, *_ = np.linalg.lstsq(design, z, rcond=None)
        g_fit = float(fz[2])
        drop = float(z.max() - z[-1])
        if drop < cfg.min_drop_m:
            return Verdict(False, f"drop {drop:.1f} m")
        if not cfg.g_min <= g_fit <= cfg.g_max:
            return Verdict(False, f"acceleration {g_fit:.1f} m/s²")
        # Sideways speed, in metres with the vertical scale (a tilted view shortens the
        # vertical, so this overstates it): a bird crosses at 5-15 m/s, a thrown object drifts.
        m_per_px = drop / max(float(xy[-1, 1] - xy[:, 1].min()), 1.0)
        lateral = abs(float(fx[1])) * m_per_px
        if lateral > cfg.max_lateral_mps:
            return Verdict(False, f"sideways at {lateral:.1f} m/s")
        score = math.exp(-((g_fit - G) / 6.0) ** 2) / (1.0 + res_px / tolerance)
        return Verdict(True, f"falls at {g_fit:.1f} m/s²", min(1.0, 0.5 + score), fz)

    # --- back-tracking ------------------------------------------------------------------------

    def _event(self, track: Track, verdict: Verdict) -> CameraEvent:
        track.id = next(self._ids)  # the alarm's `ref`: its fall is followed from here on
        self._falls[track.id] = Fall(track)
        first = track.points[0]
        fields: dict[str, Any] = {
            "floor": None, "column": None,
            "confidence": round(verdict.score, 3),
            "candidates": [],
            "track": [[t, round(x, 1), round(y, 1)] for t, x, y in track.points],
        }
        if self.facade is not None and verdict.fit is not None:
            candidates = self.launch(track, verdict.fit)
            fields["candidates"] = candidates
            if candidates:
                fields["floor"], fields["column"] = candidates[0][0], candidates[0][1]
        return CameraEvent("thrown_object", first[0], fields, ref=track.id)

    def launch(self, track: Track, fit: np.ndarray) -> list[list[Any]]:
        """Ranked [floor, column, p] where the body left the façade."""
        assert self.facade is not None
        facade = self.facade
        pts = np.asarray(track.points, dtype=np.float64)
        uv = facade.facade_points(pts[:, 1:3])
        b = float(fit[1])  # fit: c, b, g of z(t)
        # Scale at the first sighting: metres per image pixel, vertically.
        p0 = pts[0, 1:3]
        dz = facade.metres(np.stack([p0, p0 + np.array([0.0, 1.0])]))
        m_per_px = abs(float(dz[0] - dz[1])) or 0.1
        sigma_m = max(0.35, 2.5 * m_per_px)
        v0 = float(uv[0, 1])
        u0 = float(uv[0, 0])
        if b < -2.0:  # already falling fast when first seen: the apex is above, launch near it
            # Between the apex and the first sighting the body was slow, so drag had not yet
            # set in: it fell at g there, not at the fitted g (lowered by drag at the speeds
            # seen). On tuning seeds with the first 0.9 s unseen, floor exact 29/40 against
            # 24/40 with the fitted g.
            rise_m = b * b / (2 * G)
            v0 += rise_m / facade.floor_m
            sigma_m = math.hypot(sigma_m, 0.5 * rise_m)
            # The sideways position at the apex, along the fitted straight sideways motion.
            if len(uv) >= 2:
                t = (pts[:, 0] - pts[0, 0]) / 1000.0
                du = np.polyfit(t, uv[:, 0], 1)[0]
                u0 -= du * (b / -G)
        sigma_v = sigma_m / facade.floor_m
        sigma_u = 0.25 + 0.15 * sigma_v
        floors = self._cells(v0, sigma_v, facade.n_floors)
        cols = self._cells(u0, sigma_u, facade.columns)
        pairs = [(pf * pc, facade.low + i, 1 + j) for i, pf in enumerate(floors)
                 for j, pc in enumerate(cols)]
        pairs.sort(reverse=True)
        total = sum(p for p, _, _ in pairs) or 1.0
        return [[f, col, round(p / total, 3)] for p, f, col in pairs[:5] if p / total >= 0.02]

    @staticmethod
    def _cells(centre: float, sigma: float, n: int) -> list[float]:
        """Probability mass of a Gaussian over cells [k, k+1), k = 0..n-1 (ends clamped)."""
        def cdf(x: float) -> float:
            return 0.5 * (1.0 + math.erf((x - centre) / (sigma * math.sqrt(2))))
        masses = [cdf(k + 1) - cdf(k) for k in range(n)]
        masses[0] += cdf(0)
        masses[-1] += 1.0 - cdf(n)
        return masses


def wire_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A thrown_object event's fields as the camera profile carries them over MQTT: flat
    values, strings of at most 256 characters. No floor and column when unknown; candidates as
    `floor:column:p` joined by spaces; the track as `t_ms,x,y` joined by `;` (evenly thinned to
    fit: the clip has the whole of it)."""
    out: dict[str, Any] = {"confidence": fields["confidence"]}
    if fields.get("floor") is not None:
        out["floor"], out["column"] = fields["floor"], fields["column"]
    out["candidates"] = " ".join(f"{f}:{c}:{p}" for f, c, p in fields["candidates"])[:256]
    points = [f"{t},{round(x)},{round(y)}" for t, x, y in fields["track"]]
    step = 1
    while len(";".join(points[::step])) > 256:
        step += 1
    out["track"] = ";".join(points[::step])
    return out


def _line_and_parabola(
    points: list[tuple[int, float, float]],
) -> tuple[int, tuple[float, float], tuple[float, float, float]]:
    """Least-squares x = bx·h + cx and y = ay·h² + by·h + cy over `points`, h in seconds from
    the last one (plain sums: a few microseconds, where numpy's polyfit costs a hundred)."""
    t_ref = points[-1][0]
    n = len(points)
    s1 = s2 = s3 = s4 = sx = sxt = sy = syt = syt2 = 0.0
    for t_ms, x, y in points:
        h = (t_ms - t_ref) / 1000.0
        h2 = h * h
        s1 += h
        s2 += h2
        s3 += h2 * h
        s4 += h2 * h2
        sx += x
        sxt += x * h
        sy += y
        syt += y * h
        syt2 += y * h2
    det_line = n * s2 - s1 * s1
    bx = (n * sxt - s1 * sx) / det_line if det_line else 0.0
    cx = (sx - bx * s1) / n
    # Normal equations of the parabola, by Cramer's rule.
    m = ((s4, s3, s2), (s3, s2, s1), (s2, s1, float(n)))
    r = (syt2, syt, sy)
    det = _det3(m)
    if abs(det) < 1e-12:
        return t_ref, (bx, cx), (0.0, 0.0, points[-1][2])
    coef = []
    for k in range(3):
        mk = tuple(tuple(r[i] if j == k else m[i][j] for j in range(3)) for i in range(3))
        coef.append(_det3(mk) / det)
    return t_ref, (bx, cx), (coef[0], coef[1], coef[2])


def _det3(m: tuple[tuple[float, ...], ...]) -> float:
    return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))
