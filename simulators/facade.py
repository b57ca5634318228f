"""A residential façade seen by a camera, with thrown objects and the things that are not.

`python -m simulators.facade OUT.mp4 --seed 7 --condition dusk --throws 2 --seconds 20` writes
an H.264 clip (libx264 through PyAV, no B-frames, a keyframe every 2 s, about 1.8 Mbit/s at
720p: what an IP camera sends) and `OUT.json` beside it: the camera's `cameras:` entry with its
façade calibration, and the ground truth of every throw (floor, column, launch time, the time
it left the frame, its size in pixels). The clip plays in the RTSP simulator as a `file`
camera (`shouwang sim camera --camera facade,file=OUT.mp4`).

The picture is physics, not a drawing of the answer: a building of `floors` storeys of
`floor_h` metres and `columns` window columns, seen through a pinhole camera standing
`distance` metres away, tilted up to frame it; each object is a body of a real size launched
from a real window with a random velocity, under gravity with quadratic air drag, drawn with
the motion blur of the shutter, a few metres in front of the wall (so perspective bends its
path the way a real camera's does). The distractors move as they do: birds flap and fly level
or climb or glide, leaves and paper flutter down slowly, rain streaks, insects cross the lens,
the light changes, windows light up, laundry sways, people and cars pass below.

Seeds: the detector is tuned on seeds below 100000 and measured (bench/throw.py) on seeds from
100000 up, never the other way round.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import av
import cv2
import numpy as np

G = 9.81
Condition = Literal["day", "dusk", "rain"]
TUNING_SEEDS = range(0, 100_000)
MEASURING_SEEDS_FROM = 100_000


@dataclass
class Camera:
    """A pinhole camera looking at the façade plane Z = 0 (X right along it, Y up, Z out)."""

    width: int
    height: int
    f: float
    position: np.ndarray  # (3,) metres
    pitch: float  # radians, up

    def project(self, p: np.ndarray) -> np.ndarray:
        """(n, 3) world points → (n, 2) pixels, and (n,) depth along the view."""
        d = np.atleast_2d(p) - self.position
        s, c = math.sin(self.pitch), math.cos(self.pitch)
        xc = d[:, 0]
        yc = -c * d[:, 1] - s * d[:, 2]
        zc = s * d[:, 1] - c * d[:, 2]
        uv: np.ndarray = np.stack([self.width / 2 + self.f * xc / zc,
                                   self.height / 2 + self.f * yc / zc], axis=1)
        return uv

    def depth(self, p: np.ndarray) -> np.ndarray:
        d = np.atleast_2d(p) - self.position
        s, c = math.sin(self.pitch), math.cos(self.pitch)
        z: np.ndarray = s * d[:, 1] - c * d[:, 2]
        return z


@dataclass
class Building:
    floors: int
    columns: int
    floor_h: float
    col_w: float

    @property
    def size(self) -> tuple[float, float]:
        return self.columns * self.col_w, self.floors * self.floor_h


@dataclass
class Mover:
    """Anything that moves: positions (world metres) at sub-frame times, how it is drawn."""

    kind: str
    times: np.ndarray  # (n,) seconds
    path: np.ndarray  # (n, 3) metres
    size_m: float
    level: float  # grey level it shows
    flap_hz: float = 0.0
    truth: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scene:
    seed: int
    condition: Condition
    width: int = 1280
    height: int = 720
    fps: int = 25
    seconds: float = 20.0
    throws: int = 1
    lead_s: float = 1.5  # seconds before the first throw
    distractors: bool = True
    sizes: tuple[float, float] = (3.0, 30.0)
    noise: float = 1.0  # the sensor noise, times the condition's own (dusk 3 grey levels)
    distance: float = 1.0  # the camera's distance, times the drawn one (0.5: closer, steeper)
    rng: np.random.Generator = field(init=False)
    _fields: tuple[float, np.ndarray] | None = field(default=None, init=False, repr=False)
    movers: list[Mover] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        r = self.rng
        self.building = Building(
            floors=int(r.integers(12, 27)), columns=int(r.integers(4, 9)),
            floor_h=float(r.uniform(2.8, 3.1)), col_w=float(r.uniform(3.2, 4.2)),
        )
        bw, bh = self.building.size
        distance = (float(r.uniform(0.9, 1.3)) * bh * 0.8 + 10) * self.distance
        eye = np.array([bw / 2 + r.uniform(-0.15, 0.15) * bw, 1.6, distance])
        # Frame the building from the ground to the roof (pitch to its middle, focal length to
        # fill 84 % of the height); the calibration starts at floor 2 (the ground floor's shops
        # and trees hide the lowest storey).
        low_floor = 2
        y0, y1 = (low_floor - 1) * self.building.floor_h, bh
        pitch = math.atan2(bh / 2 - eye[1], distance)
        cam = Camera(self.width, self.height, 1000.0, eye, pitch)
        span = cam.project(np.array([[bw / 2, bh, 0], [bw / 2, 0, 0]]))
        cam.f *= 0.84 * self.height / abs(span[1, 1] - span[0, 1])
        self.camera = cam
        self.low_floor = low_floor
        self.corners = cam.project(np.array([[0, y1, 0], [bw, y1, 0], [bw, y0, 0], [0, y0, 0]]))
        self._background()
        self._plan()

    # --- what the camera sees when nothing moves -------------------------------------------

    def _background(self) -> None:
        r, b = self.rng, self.building
        ppm = 14.0
        bw, bh = b.size
        tw, th = int(bw * ppm), int(bh * ppm)
        wall = float(r.uniform(140, 185))
        tex = np.full((th, tw), wall, np.float32)
        tex += r.normal(0, 3, tex.shape).astype(np.float32)
        self.windows: list[tuple[int, int, np.ndarray]] = []  # floor, column, image quad
        for fl in range(1, b.floors + 1):
            for col in range(1, b.columns + 1):
                x0 = (col - 1) * b.col_w + 0.6
                x1 = col * b.col_w - 0.6
                y0 = (fl - 1) * b.floor_h + 0.9
                y1 = fl * b.floor_h - 0.4
                pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
                tpts = np.stack([pts[:, 0] * ppm, th - pts[:, 1] * ppm], axis=1)
                cv2.fillConvexPoly(tex, tpts.astype(np.int32), float(r.uniform(55, 95)))
                cv2.rectangle(tex, tuple(tpts[3].astype(int)), tuple(tpts[1].astype(int)),
                              wall + 25, 2)
                # A balcony rail below each window.
                ry = th - int((fl - 1) * b.floor_h * ppm + 0.3 * ppm)
                cv2.line(tex, (int(x0 * ppm) - 4, ry), (int(x1 * ppm) + 4, ry), wall - 35, 2)
                quad = self.camera.project(np.c_[pts, np.zeros(4)])
                self.windows.append((fl, col, quad))
        # Façade texture → image: the homography of the plane Z = 0.
        src = np.array([[0, 0], [tw, 0], [tw, th], [0, th]], np.float32)
        world = np.array([[0, bh, 0], [bw, bh, 0], [bw, 0, 0], [0, 0, 0]])
        dst = self.camera.project(world).astype(np.float32)
        h = cv2.getPerspectiveTransform(src, dst)
        sky = np.linspace(215, 175, self.height, dtype=np.float32)[:, None]
        img = np.repeat(sky, self.width, axis=1)
        warped = cv2.warpPerspective(tex, h, (self.width, self.height), flags=cv2.INTER_AREA)
        inside = cv2.warpPerspective(np.ones_like(tex), h, (self.width, self.height)) > 0.5
        img[inside] = warped[inside]
        ground = self.camera.project(np.array([[-200, 0, 0], [400, 0, 0]]))
        gy = int(min(self.height, max(0.0, float(ground[:, 1].mean()))))
        img[gy:] = np.float32(r.uniform(90, 120))
        self.ground_y = gy
        self.base = img

    # --- what moves -----------------------------------------------------------------------

    def _plan(self) -> None:
        r = self.rng
        times = []
        for i in range(self.throws):
            slot = (self.seconds - self.lead_s - 4.5) / max(self.throws, 1)
            times.append(self.lead_s + i * slot + r.uniform(0, max(slot - 5.0, 0.1)))
        for t0 in times:
            self.movers.append(self._throw(t0))
        if not self.distractors:
            return
        for _ in range(int(r.integers(2, 6))):
            self.movers.append(self._bird())
        for _ in range(int(r.integers(1, 4))):
            self.movers.append(self._leaf())
        for _ in range(int(r.integers(1, 3))):
            self.movers.append(self._below())
        self.insects = [(float(r.uniform(0, self.seconds - 3)), float(r.uniform(1.5, 4)))
                        for _ in range(int(r.integers(0, 3)))]
        self.light_steps = [(float(r.uniform(0, self.seconds)), float(r.uniform(0.75, 1.3)),
                             float(r.choice([0.04, 0.6])))
                            for _ in range(int(r.integers(1, 4)))]
        self.toggles = [(float(r.uniform(0, self.seconds)), int(r.integers(len(self.windows))))
                        for _ in range(int(r.integers(2, 8)))]
        n_laundry = int(r.integers(0, 4))
        self.laundry = [(int(r.integers(len(self.windows))), float(r.uniform(0.4, 1.2)),
                         float(r.uniform(0, 6.3))) for _ in range(n_laundry)]

    def _sim(self, p0: np.ndarray, v0: np.ndarray, t0: float, vt: float,
             until: float) -> tuple[np.ndarray, np.ndarray]:
        """Ballistic flight with quadratic drag (terminal velocity `vt`) until it lands."""
        dt = 1.0 / (self.fps * 8)
        k = G / (vt * vt)
        p, v = p0.astype(np.float64).copy(), v0.astype(np.float64).copy()
        ts, ps = [t0], [p.copy()]
        t = t0
        while t < until and p[1] > 0:
            a = np.array([0.0, -G, 0.0]) - k * np.linalg.norm(v) * v
            v = v + a * dt
            p = p + v * dt
            t += dt
            ts.append(t)
            ps.append(p.copy())
        return np.asarray(ts), np.asarray(ps)

    def _throw(self, t0: float) -> Mover:
        r, b = self.rng, self.building
        floor = int(r.integers(self.low_floor + 1, b.floors + 1))
        column = int(r.integers(1, b.columns + 1))
        p0 = np.array([(column - 0.5 + r.uniform(-0.3, 0.3)) * b.col_w,
                       (floor - 1) * b.floor_h + r.uniform(0.9, 1.4), 0.4])
        v0 = np.array([r.uniform(-1.5, 1.5), r.uniform(-0.5, 2.5), r.uniform(0.5, 3.0)])
        vt = float(r.uniform(15, 60))
        ts, path = self._sim(p0, v0, t0, vt, self.seconds)
        size_px = float(r.uniform(*self.sizes))
        size_m = size_px * float(self.camera.depth(p0[None])[0]) / self.camera.f
        uv = self.camera.project(path)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < self.width) & (uv[:, 1] >= 0) & \
            (uv[:, 1] < self.height)
        exit_t = float(ts[np.flatnonzero(inside)[-1]]) if inside.any() else t0
        level = float(r.choice([r.uniform(15, 60), r.uniform(215, 250)]))
        truth = {"floor": floor, "column": column, "t_launch_ms": round(t0 * 1000),
                 "t_exit_ms": round(exit_t * 1000), "size_px": round(size_px, 1),
                 "launch_xy": [round(float(v), 1) for v in uv[0]]}
        return Mover("throw", ts, path, size_m, level, truth=truth)

    def _bird(self) -> Mover:
        r, b = self.rng, self.building
        bw, bh = b.size
        t0 = float(r.uniform(0, self.seconds - 2))
        style = r.choice(["level", "climb", "glide", "wander"])
        speed = float(r.uniform(5, 12))
        side = float(r.choice([-1.0, 1.0]))
        p0 = np.array([bw / 2 - side * (bw / 2 + 5), r.uniform(0.3, 0.95) * bh, r.uniform(2, 15)])
        vy = {"level": 0.0, "climb": r.uniform(1, 3), "glide": -r.uniform(1, 3),
              "wander": 0.0}[style]
        ts = np.arange(t0, min(self.seconds, t0 + 15), 1.0 / (self.fps * 8))
        tt = ts - t0
        path = np.stack([p0[0] + side * speed * tt,
                         p0[1] + vy * tt + 0.4 * np.sin(2 * math.pi * 1.3 * tt),
                         p0[2] + (np.sin(0.7 * tt) * 3 if style == "wander" else 0 * tt)], 1)
        size = float(r.uniform(0.25, 0.6))
        return Mover("bird", ts, path, size, float(r.uniform(20, 70)),
                     flap_hz=float(r.uniform(4, 9)))

    def _leaf(self) -> Mover:
        r, b = self.rng, self.building
        bw, bh = b.size
        t0 = float(r.uniform(0, self.seconds - 2))
        ts = np.arange(t0, self.seconds, 1.0 / (self.fps * 8))
        tt = ts - t0
        fall = float(r.uniform(0.6, 2.2))
        amp, hz = float(r.uniform(0.4, 1.6)), float(r.uniform(0.4, 1.4))
        p0 = np.array([r.uniform(0, bw), r.uniform(0.4, 1.0) * bh, r.uniform(0.5, 4)])
        path = np.stack([p0[0] + amp * np.sin(2 * math.pi * hz * tt) + 0.3 * tt,
                         p0[1] - fall * tt + 0.3 * np.abs(np.sin(2 * math.pi * hz * tt)),
                         p0[2] + 0.2 * tt], 1)
        keep = path[:, 1] > 0
        return Mover("leaf", ts[keep], path[keep], float(r.uniform(0.12, 0.35)),
                     float(r.uniform(190, 240)), flap_hz=hz * 2)

    def _below(self) -> Mover:
        r, b = self.rng, self.building
        bw = b.size[0]
        car = bool(r.random() < 0.5)
        speed = float(r.uniform(3, 8) if car else r.uniform(1, 1.6)) * float(r.choice([-1, 1]))
        t0 = float(r.uniform(0, self.seconds / 2))
        ts = np.arange(t0, self.seconds, 1.0 / (self.fps * 2))
        tt = ts - t0
        z = float(r.uniform(3, 15))
        start = -5.0 if speed > 0 else bw + 5
        path = np.stack([start + speed * tt, np.full_like(tt, 0.8), np.full_like(tt, z)], 1)
        return Mover("car" if car else "person", ts, path, 1.6 if car else 0.5,
                     float(r.uniform(30, 90)))

    # --- a frame ---------------------------------------------------------------------------

    def frame(self, n: int) -> np.ndarray:
        t = n / self.fps
        img = self.base.copy()
        if self.distractors:
            for when, index in self.toggles:
                if t >= when:
                    quad = self.windows[index][2]
                    cv2.fillConvexPoly(img, quad.astype(np.int32), 235.0)
            for index, hz, phase in self.laundry:
                quad = self.windows[index][2]
                sway = 3.0 * math.sin(2 * math.pi * hz * t + phase)
                x0, y0 = quad[0]
                w = abs(quad[1, 0] - quad[0, 0]) * 0.5
                pts = np.array([[x0 + 2, y0], [x0 + 2 + w, y0], [x0 + 2 + w + sway, y0 + w * 1.3],
                                [x0 + 2 + sway, y0 + w * 1.3]])
                cv2.fillConvexPoly(img, pts.astype(np.int32), 225.0)
        shutter = 1 / 50 if self.condition == "day" else 1 / 30
        for m in self.movers:
            self._draw(img, m, t, shutter)
        if self.distractors:
            self._lens(img, t)
        gain, haze, noise = {"day": (1.0, 0.0, 1.5), "dusk": (0.38, 0.0, 3.0),
                             "rain": (0.75, 0.3, 2.5)}[self.condition]
        if self.distractors:
            for when, step, ramp in self.light_steps:
                if t >= when:
                    gain *= 1 + (step - 1) * min(1.0, (t - when) / ramp)
        img = img * gain
        if haze:
            img = img * (1 - haze) + haze * 150 * gain
        if self.condition == "rain" and self.distractors:
            self._rain(img)
        img += self._grain(n, noise * self.noise)
        out: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
        return out

    def _grain(self, n: int, sigma: float) -> np.ndarray:
        """Frame `n`'s sensor noise (Gaussian, `sigma` grey levels): a window, at an offset
        drawn for the frame, into one of 8 noise fields drawn once per clip by OpenCV from the
        clip's seed. Every seed has its own noise, consecutive frames different noise, a frame
        is the same whatever order frames are drawn in; a fifth of the cost of fresh noise."""
        if self._fields is None or self._fields[0] != sigma:
            cv2.setRNGSeed(self.seed % 2**31)
            fields = np.empty((8, self.height + 64, self.width + 64), np.float32)
            for f in fields:
                cv2.randn(f, 0.0, sigma)
            self._fields = (sigma, fields)
        pick = np.random.default_rng((self.seed, n)).integers(0, [8, 65, 65])
        k, dy, dx = (int(v) for v in pick)
        window: np.ndarray = self._fields[1][k, dy:dy + self.height, dx:dx + self.width]
        return window

    def _draw(self, img: np.ndarray, m: Mover, t: float, shutter: float) -> None:
        if len(m.times) == 0 or t < m.times[0] or t - shutter > m.times[-1]:
            return
        sel = (m.times >= t - shutter) & (m.times <= t)
        if not sel.any():
            return
        pts = m.path[sel]
        uv = self.camera.project(pts)
        depth = self.camera.depth(pts[:1])[0]
        radius = max(0.5, 0.5 * m.size_m * self.camera.f / depth)
        if m.kind in ("car", "person"):
            w = radius * (2.5 if m.kind == "car" else 0.7)
            hgt = radius * (1.0 if m.kind == "car" else 3.4)
            x, y = uv[-1]
            cv2.rectangle(img, (int(x - w), int(y - hgt)), (int(x + w), int(y + hgt)), m.level, -1)
            return
        x1 = int(max(0, uv[:, 0].min() - radius - 3))
        x2 = int(min(self.width, uv[:, 0].max() + radius + 4))
        y1 = int(max(0, uv[:, 1].min() - radius - 3))
        y2 = int(min(self.height, uv[:, 1].max() + radius + 4))
        if x2 <= x1 or y2 <= y1:
            return
        alpha = np.zeros((y2 - y1, x2 - x1), np.float32)
        k = len(uv)
        for i, (x, y) in enumerate(uv):
            ax, ay = radius, radius
            if m.flap_hz:
                ax = radius * (0.5 + 0.5 * abs(math.sin(2 * math.pi * m.flap_hz * m.times[sel][i])))
                ay = radius * 0.45 if m.kind == "bird" else radius * 0.8
            layer = np.zeros_like(alpha)
            cv2.ellipse(layer, (round((x - x1) * 16), round((y - y1) * 16)),
                        (max(1, round(ax * 16)), max(1, round(ay * 16))), 0, 0, 360, 1.0, -1,
                        cv2.LINE_AA, 4)
            alpha += layer / k
        region = img[y1:y2, x1:x2]
        region *= 1 - alpha
        region += alpha * m.level

    def _lens(self, img: np.ndarray, t: float) -> None:
        """Insects crossing close to the lens: big, blurred, erratic."""
        for i, (t0, dur) in enumerate(self.insects):
            if not t0 <= t <= t0 + dur:
                continue
            rr = np.random.default_rng(self.seed * 31 + i)
            cx = rr.uniform(0.2, 0.8) * self.width + 200 * math.sin(3.1 * (t - t0) + i)
            cy = rr.uniform(0.2, 0.8) * self.height + 120 * math.sin(4.3 * (t - t0) + 2 * i)
            r0 = rr.uniform(25, 60)
            layer = np.zeros((self.height, self.width), np.float32)
            cv2.circle(layer, (int(cx), int(cy)), int(r0), 0.45, -1)
            layer = cv2.GaussianBlur(layer, (0, 0), r0 / 3)
            img *= 1 - layer
            img += layer * 20

    def _rain(self, img: np.ndarray) -> None:
        r = self.rng
        n = int(r.integers(150, 350))
        xs = r.uniform(0, self.width, n)
        ys = r.uniform(0, self.height, n)
        ls = r.uniform(12, 40, n)
        slant = r.uniform(-0.2, 0.1)
        for x, y, length in zip(xs, ys, ls, strict=True):
            cv2.line(img, (int(x), int(y)), (int(x + slant * length), int(y + length)),
                     float(img[int(y), int(x)]) + 22, 1, cv2.LINE_AA)

    # --- output --------------------------------------------------------------------------

    def camera_entry(self, camera_id: str = "cam-facade") -> dict[str, Any]:
        """The camera's `cameras:` entry, with the façade calibration of this view."""
        return {
            "id": camera_id,
            "analytics": ["throw"],
            "facade": {
                "corners": [[round(float(x), 1), round(float(y), 1)] for x, y in self.corners],
                "floors": [self.low_floor, self.building.floors],
                "columns": self.building.columns,
                "floor_height_m": round(self.building.floor_h, 3),
            },
        }

    def truth(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "condition": self.condition, "seconds": self.seconds,
            "width": self.width, "height": self.height, "fps": self.fps,
            "camera": self.camera_entry(),
            "throws": [m.truth for m in self.movers if m.kind == "throw"],
        }


def write_clip(scene: Scene, out: Path, bitrate_kbps: int = 1800, gop_s: float = 2.0) -> Path:
    """Encode the scene as a camera does (H.264, no B-frames); its truth beside it (.json)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=scene.fps)
        stream.width, stream.height = scene.width, scene.height
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bitrate_kbps * 1000
        stream.options = {"preset": "veryfast", "tune": "zerolatency", "bframes": "0",
                          "threads": "1", "g": str(round(scene.fps * gop_s)),
                          "maxrate": f"{bitrate_kbps}k", "bufsize": f"{bitrate_kbps * 2}k"}
        for n in range(round(scene.seconds * scene.fps)):
            frame = av.VideoFrame.from_ndarray(scene.frame(n), format="gray")
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    partial.replace(out)
    out.with_suffix(".json").write_text(json.dumps(scene.truth(), indent=1))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="MP4 to write (its truth goes to OUT.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--condition", choices=["day", "dusk", "rain"], default="day")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--throws", type=int, default=1)
    p.add_argument("--no-distractors", action="store_true")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--bitrate-kbps", type=int, default=1800)
    a = p.parse_args(argv)
    scene = Scene(a.seed, a.condition, a.width, a.height, seconds=a.seconds, throws=a.throws,
                  distractors=not a.no_distractors)
    write_clip(scene, a.out, a.bitrate_kbps)
    print(json.dumps(scene.truth()))


if __name__ == "__main__":
    main()
