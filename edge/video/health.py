"""Camera health: a view covered, out of focus or turned away, judged against what it learned.

Per camera, `CameraHealth.update(frame, t_ms)` measures three things on every analysed frame:

- **texture**: the share of the picture with local contrast. A hand, a cloth, paint or a bag on
  the lens leaves a dark or flat, featureless picture: `occluded` when the frame is black, or
  when its texture falls far below what this camera normally shows.
- **sharpness**: the strength of fine edges over the same edges seen blurred (90th percentiles
  of the gradient). It is a ratio, so light, contrast, dusk and the IR switch leave it alone,
  while defocus (or a smeared lens) collapses it: `defocused` below half of the learned value.
- **match**: phase correlation (`PhaseMatch`) of a small picture against a reference learned at
  start-up and refreshed slowly while all is well. Phase correlation compares structure, not
  brightness (its spectrum is whitened), so a grey IR picture of the same view still matches; a
  view that shifted by more than `max_shift` of its width, or no longer matches, is `moved`.

Each cause is debounced on the stream's timestamps (never the wall clock): raised once after
it held `raise_after_s`, cleared once after it has been gone `clear_after_s`. A person walking
past the lens, headlights, a flash or rain last a moment and are never tamper. While the lens is
covered, sharpness and match cannot be judged and are left as they were; while the view has
moved, its sharpness is another view's and is not judged either.

The camera learns its baselines over its first `learn_s` seconds (a view that is itself black
or featureless is not learned), separately for colour and for grey (IR) pictures when the
caller says which, and lets them follow slow changes (seasons, a dirty dome) with a time
constant of `adapt_s`, only while nothing is wrong.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydantic import Field

from edge.video.debounce import Debounce
from edge.video.events import CameraEvent
from edge.video.frames import FrameError, scaled_size, shrink, to_grey
from shouwang.config import Strict

log = logging.getLogger(__name__)

CAUSES = ("occluded", "defocused", "moved")
SMALL_WIDTH = 128  # texture and match work on a picture this wide
LEARN_FRAMES_KEPT = 32  # the last frames of the learning time make the reference


class OccludedConfig(Strict):
    raise_after_s: float = Field(10.0, ge=0, description="Covered this long before `tamper`")
    clear_after_s: float = Field(5.0, ge=0, description="Uncovered this long before it clears")
    black_level: float = Field(
        12.0, ge=0, le=255, description="Mean grey level under which the picture is black"
    )
    min_texture: float = Field(
        0.03, ge=0, le=1,
        description="Share of the picture with local contrast under which it is uniform, "
        "whatever the camera learned",
    )
    texture_ratio: float = Field(
        0.3, gt=0, le=1,
        description="Covered when the textured share falls under this fraction of the learned one",
    )


class DefocusedConfig(Strict):
    raise_after_s: float = Field(20.0, ge=0, description="Blurred this long before `tamper`")
    clear_after_s: float = Field(10.0, ge=0, description="Sharp this long before it clears")
    sharpness_ratio: float = Field(
        0.5, gt=0, le=1,
        description="Defocused when sharpness falls under this fraction of the learned one "
        "(0.5: a blur of about 2 pixels sigma at 640 px wide)",
    )
    min_learned: float = Field(
        0.6, ge=0, description="A view learned softer than this (haze, rain, fog, a flat wall: "
        "its sharpness is mostly noise and swings with the light) is not judged for defocus "
        "until its baseline, adapting, rises above it; sharp views learn about 0.9",
    )


class MovedConfig(Strict):
    raise_after_s: float = Field(20.0, ge=0, description="Turned this long before `tamper`")
    clear_after_s: float = Field(10.0, ge=0, description="Back this long before it clears")
    match_ratio: float = Field(
        0.35, gt=0, le=1,
        description="Moved when the match with the reference falls under this fraction of the "
        "match learned at start-up",
    )
    max_shift: float = Field(
        0.02, gt=0, le=0.5,
        description="Moved when the view shifted by more than this share of its width",
    )
    reference_refresh_s: float = Field(
        900.0, gt=0,
        description="While all is well, the reference takes in the current view this often",
    )
    reference_weight: float = Field(
        0.2, gt=0, le=1, description="Weight of the current view at each reference refresh"
    )


class HealthConfig(Strict):
    learn_s: float = Field(
        10.0, gt=0, description="Seconds of stream over which a camera learns its baselines"
    )
    adapt_s: float = Field(
        3600.0, gt=0,
        description="Time constant with which baselines follow slow change while all is well",
    )
    work_width: int = Field(
        320, ge=160, le=1920, description="Width of the grey picture sharpness is measured on"
    )
    interval_s: float = Field(
        1.0, ge=0, le=10,
        description="Judge the view once per this many seconds of stream; frames in between "
        "cost nothing (tamper takes seconds to raise, so judging at the 5 fps `detect` rate "
        "would spend five times the CPU for the same events)",
    )
    occluded: OccludedConfig = Field(default_factory=OccludedConfig, description="Covered lens")
    defocused: DefocusedConfig = Field(
        default_factory=DefocusedConfig, description="Lens out of focus"
    )
    moved: MovedConfig = Field(default_factory=MovedConfig, description="View turned away")


@dataclass(slots=True)
class Measures:
    """What one frame showed (None: not judged on this frame)."""

    brightness: float  # mean grey level, 0–255
    texture: float  # share of the small picture with local contrast
    sharpness: float  # fine over coarse edge strength, minus 1
    match: float | None = None  # phase-correlation peak against the reference
    shift: float | None = None  # displacement from the reference, as a share of the width


@dataclass(slots=True)
class _Baseline:
    """Texture and sharpness one mode of the camera (colour, or grey IR) normally shows."""

    started_ms: int
    textures: list[float] = field(default_factory=list)
    sharpnesses: list[float] = field(default_factory=list)
    texture: float | None = None
    sharpness: float | None = None
    too_soft: bool = False  # learned too soft to judge defocus (said once)


def texture_share(small: np.ndarray) -> tuple[float, float]:
    """(mean grey level, share of pixels whose 7×7 neighbourhood has real contrast).

    "Real" scales with the light (4 % of the mean, at least 2 grey levels), so a dim dusk
    picture of the same view keeps its texture while a covered lens's sensor noise has none.
    """
    mean = float(small.mean())
    local = cv2.blur(small, (7, 7))
    local_sq = cv2.blur(small * small, (7, 7))
    spread = np.sqrt(np.maximum(local_sq - local * local, 0))
    return mean, float(np.count_nonzero(spread > max(2.0, 0.04 * mean))) / spread.size


def sharpness(work: np.ndarray) -> float:
    """90th percentile of the gradient over the same after a blur of 2 pixels sigma, minus 1.

    About 0.9 for a sharp view, 0.3 for one out of focus; a ratio, so light does not move it.
    Noise raises it (a noisy night picture looks sharp), never lowers it.
    """
    fine = _p90(_gradient(work))
    coarse = _p90(_gradient(cv2.GaussianBlur(work, (0, 0), 2.0)))
    if coarse < 1e-3:
        return 0.0  # nothing at all to see
    return fine / coarse - 1.0


def _gradient(img: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1)
    magnitude: np.ndarray = cv2.magnitude(gx, gy)
    return magnitude


def _p90(values: np.ndarray) -> float:
    """The 90th percentile, from every 4th value: as good an estimate from 58k of 230k
    gradients, at a quarter of the cost (it runs once a second per camera)."""
    flat = values.reshape(-1)[::4]
    k = int(0.9 * (flat.size - 1))
    return float(np.partition(flat, k)[k])


class PhaseMatch:
    """Band-limited phase correlation against one reference picture.

    The cross-power spectrum of reference and picture, each frequency scaled to unit size
    (so only phase, that is structure and position, counts, never brightness or contrast),
    weighted towards low frequencies (where a small picture's structure is; the highest ones
    are sensor noise, rain and the detail defocus removes), transformed back: its peak is at
    the displacement between the two, and its height is 1.0 for the same picture, near 0 for
    unrelated ones. Written out rather than `cv2.phaseCorrelate`, whose peak height changed
    between OpenCV 4 and 5 (0.2–0.6 against 1.0 for the same view): thresholds need a measure
    that means the same everywhere.
    """

    def __init__(self, reference: np.ndarray, sigma: float = 0.15) -> None:
        h, w = reference.shape
        self._window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
        fy = np.fft.fftfreq(h)[:, None]
        fx = np.fft.rfftfreq(w)[None, :]
        self._weight = np.exp(-(fx * fx + fy * fy) / (2 * sigma * sigma))
        self._peak = float(np.fft.irfft2(self._weight, s=(h, w))[0, 0])  # the same picture's
        self._reference = np.conj(self._spectrum(reference))

    def _spectrum(self, picture: np.ndarray) -> np.ndarray:
        centred = picture - float(picture.mean())
        spectrum: np.ndarray = np.fft.rfft2(centred * self._window)
        return spectrum

    def __call__(self, picture: np.ndarray) -> tuple[float, float, float]:
        """(match, dx, dy): the correlation peak's height and where it is, in pixels."""
        cross = self._spectrum(picture) * self._reference
        cross /= np.maximum(np.abs(cross), 1e-9)
        surface = np.fft.irfft2(cross * self._weight, s=picture.shape) / self._peak
        h, w = surface.shape
        iy, ix = np.unravel_index(int(np.argmax(surface)), surface.shape)
        dy = _vertex(surface[(iy - 1) % h, ix], surface[iy, ix], surface[(iy + 1) % h, ix])
        dx = _vertex(surface[iy, (ix - 1) % w], surface[iy, ix], surface[iy, (ix + 1) % w])
        # The surface wraps round: a peak past the middle is a shift the other way.
        sy = iy + dy - (h if iy > h // 2 else 0)
        sx = ix + dx - (w if ix > w // 2 else 0)
        return float(surface[iy, ix]), float(sx), float(sy)


def _vertex(left: float, centre: float, right: float) -> float:
    """Sub-pixel offset of a peak from the parabola through three samples."""
    curve = left - 2 * centre + right
    return 0.0 if curve >= 0 else float(np.clip(0.5 * (left - right) / curve, -0.5, 0.5))


def is_colour(bgr: np.ndarray, threshold: float = 6.0) -> bool:
    """Whether a BGR frame is in colour (day) rather than grey (a camera's IR night mode).

    Uses the spread of the two colour-difference signals on a tiny copy: an IR picture has
    none, a day picture of even a dull street has some.
    """
    tiny = cv2.resize(bgr, (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32)
    b, g, r = tiny[:, :, 0], tiny[:, :, 1], tiny[:, :, 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = math.hypot(float(rg.std()), float(yb.std())) + 0.3 * math.hypot(
        float(rg.mean()), float(yb.mean())
    )
    return colourfulness > threshold


class CameraHealth:
    """Tamper judgement for one camera; feed every analysed frame in stream order."""

    def __init__(self, config: HealthConfig | None = None, camera: str = "camera") -> None:
        self.config = config or HealthConfig()
        self.camera = camera
        c = self.config
        self._debounce = {
            "occluded": Debounce(_ms(c.occluded.raise_after_s), _ms(c.occluded.clear_after_s)),
            "defocused": Debounce(
                _ms(c.defocused.raise_after_s), _ms(c.defocused.clear_after_s)
            ),
            "moved": Debounce(_ms(c.moved.raise_after_s), _ms(c.moved.clear_after_s)),
        }
        self._work_size: tuple[int, int] | None = None
        self._small_size: tuple[int, int] | None = None
        self._last_ms: int | None = None
        self._judged_ms: int | None = None
        self._interval_ms = _ms(c.interval_s)
        self.measures: Measures | None = None  # the last judged frame's, for metrics and tuning
        self.relearn()

    @property
    def active(self) -> list[str]:
        """The causes currently raised."""
        return [cause for cause, d in self._debounce.items() if d.active]

    @property
    def learned(self) -> bool:
        return self._reference is not None

    def relearn(self) -> None:
        """Forget the baselines and the reference (an installer re-aimed the camera on purpose).

        A raised `moved` clears once the new view has been learned and matches itself.
        """
        self._baselines: dict[str, _Baseline] = {}
        self._reference: np.ndarray | None = None
        self._matcher: PhaseMatch | None = None
        self._match_base = 1.0
        self._learning: deque[np.ndarray] = deque(maxlen=LEARN_FRAMES_KEPT)
        self._learn_started_ms: int | None = None
        self._refreshed_ms = 0

    def due(self, t_ms: int) -> bool:
        """Whether `update` would judge a frame taken at `t_ms` (one each `interval_s`): a
        caller makes what only a judgement needs (the worker's colour copy) just then."""
        return self._judged_ms is None or t_ms - self._judged_ms >= self._interval_ms

    def update(self, frame: np.ndarray, t_ms: int, colour: bool | None = None) -> list[CameraEvent]:
        """Judge one frame taken at stream time `t_ms`; the events it completes, if any.

        A frame less than `interval_s` after the last judged one returns [] at once.

        `colour`: whether the camera is in its colour (day) mode or grey (IR); None lets a BGR
        frame tell by itself and treats a grey frame as of unknown mode.
        """
        if self._last_ms is not None and t_ms < self._last_ms:
            raise FrameError(
                f"{self.camera}: frame time {t_ms} ms is before the previous {self._last_ms} ms"
            )
        self._last_ms = t_ms
        if not self.due(t_ms):
            return []
        dt_ms = 0 if self._judged_ms is None else t_ms - self._judged_ms
        self._judged_ms = t_ms
        grey = to_grey(frame)
        if colour is None and frame.ndim == 3 and frame.shape[2] == 3:
            colour = is_colour(frame)
        work, small = self._pictures(grey)
        brightness, texture = texture_share(small)
        m = Measures(brightness, texture, sharpness(work))
        self.measures = m
        mode = {True: "colour", False: "grey", None: "any"}[colour]
        base = self._baselines.get(mode)
        if base is None:
            base = self._baselines[mode] = _Baseline(started_ms=t_ms)

        oc = self.config.occluded
        occluded = (
            m.brightness < oc.black_level
            or m.texture < oc.min_texture
            or (base.texture is not None and m.texture < oc.texture_ratio * base.texture)
        )
        if self._matcher is not None:
            match, dx, dy = self._matcher(small)
            m.match, m.shift = match, math.hypot(dx, dy) / small.shape[1]
        defocused = moved = None
        if not occluded:
            if m.match is not None and m.shift is not None:
                mc = self.config.moved
                moved = m.match < mc.match_ratio * self._match_base or m.shift > mc.max_shift
            dc = self.config.defocused
            if base.sharpness is not None and not moved:
                if base.sharpness >= dc.min_learned:
                    base.too_soft = False
                    defocused = m.sharpness < dc.sharpness_ratio * base.sharpness
                elif not base.too_soft:
                    base.too_soft = True
                    log.info("%s: view learned too soft to judge defocus (sharpness %.2f < "
                             "%.2f); not judged until it sharpens", self.camera, base.sharpness,
                             dc.min_learned)
            self._learn(base, m, small, t_ms)

        events = []
        for cause, condition in (("occluded", occluded), ("defocused", defocused),
                                 ("moved", moved)):
            change = self._debounce[cause].update(condition, t_ms)
            if change == "raise":
                log.warning("%s: tamper (%s) at %d ms", self.camera, cause, t_ms)
                events.append(CameraEvent("tamper", t_ms, {"cause": cause}))
            elif change == "clear":
                log.info("%s: tamper (%s) cleared at %d ms", self.camera, cause, t_ms)
                events.append(CameraEvent("tamper_cleared", t_ms, {"cause": cause}))
        if not (occluded or defocused or moved or self.active
                or any(d.pending for d in self._debounce.values())):
            self._adapt(base, m, small, t_ms, dt_ms)
        return events

    def _pictures(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = grey.shape
        if self._work_size is None:
            self._work_size = scaled_size(w, h, to_width=min(self.config.work_width, w))
            self._small_size = scaled_size(w, h, to_width=SMALL_WIDTH)
        assert self._small_size is not None
        expected_h = round(h * self._work_size[0] / w)
        if abs(expected_h - self._work_size[1]) > 1:
            raise FrameError(
                f"{self.camera}: frame is {w}x{h}, its shape no longer matches the "
                f"{self._work_size[0]}x{self._work_size[1]} the camera was learned at"
            )
        work = shrink(grey, self._work_size).astype(np.float32)
        small = cv2.resize(work, self._small_size, interpolation=cv2.INTER_AREA)
        return work, small

    def _learn(self, base: _Baseline, m: Measures, small: np.ndarray, t_ms: int) -> None:
        """Collect the first `learn_s` of an unobstructed view into baselines and a reference."""
        learn_ms = _ms(self.config.learn_s)
        if base.texture is None:
            if not base.textures:  # the learning time starts with the first clear view
                base.started_ms = t_ms
            base.textures.append(m.texture)
            base.sharpnesses.append(m.sharpness)
            if t_ms - base.started_ms >= learn_ms and len(base.textures) >= 3:
                base.texture = float(np.median(base.textures))
                base.sharpness = float(np.median(base.sharpnesses))
                base.textures, base.sharpnesses = [], []
                log.info("%s: learned texture %.2f, sharpness %.2f", self.camera,
                         base.texture, base.sharpness)
        if self._reference is not None:
            return
        if self._learn_started_ms is None:
            self._learn_started_ms = t_ms
        self._learning.append(small)
        if t_ms - self._learn_started_ms >= learn_ms and len(self._learning) >= 3:
            reference = np.mean(self._learning, axis=0).astype(np.float32)
            matcher = PhaseMatch(reference)
            self._match_base = float(np.median([matcher(f)[0] for f in self._learning]))
            self._reference, self._matcher = reference, matcher
            self._learning.clear()
            self._refreshed_ms = t_ms
            log.info("%s: learned its view (match %.2f)", self.camera, self._match_base)

    def _adapt(self, base: _Baseline, m: Measures, small: np.ndarray, t_ms: int,
               dt_ms: int) -> None:
        """Follow slow change while nothing is wrong: baselines with time constant `adapt_s`
        over the time since the last frame (time spent in tamper teaches nothing), the
        reference by a blend every `reference_refresh_s`."""
        if base.texture is None or base.sharpness is None or self._reference is None:
            return
        alpha = 1.0 - math.exp(-dt_ms / _ms(self.config.adapt_s))
        base.texture += alpha * (m.texture - base.texture)
        base.sharpness += alpha * (m.sharpness - base.sharpness)
        if m.match is not None:
            self._match_base += alpha * (m.match - self._match_base)
        mc = self.config.moved
        if t_ms - self._refreshed_ms >= _ms(mc.reference_refresh_s):
            w = mc.reference_weight
            self._reference = cv2.addWeighted(self._reference, 1 - w, small, w, 0.0)
            self._matcher = PhaseMatch(self._reference)
            self._refreshed_ms = t_ms


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
