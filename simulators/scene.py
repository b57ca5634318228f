"""Synthetic camera scenes: a static textured street view with someone walking through now and then.

Imported by both the venv's Python and Debian's (the RTSP server), so it needs numpy only.
Frames are I420 (planar Y, then U and V at half resolution), the format x264 takes as it is.
"""

from __future__ import annotations

import math

import numpy as np

# View 0 is where the camera looks; view 1 is where it looks once it has been turned away.
VIEWS = 2
NOISE_FRAMES = 4  # temporal sensor noise cycles through this many precomputed frames


def _rgb_to_yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 limited range, as cameras send it: float RGB 0..255 → uint8 Y, U, V planes."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return (
        np.clip(y, 16, 235).astype(np.uint8),
        np.clip(u, 16, 240).astype(np.uint8),
        np.clip(v, 16, 240).astype(np.uint8),
    )


def _half(plane: np.ndarray) -> np.ndarray:
    """Average 2×2 blocks (chroma subsampling)."""
    h, w = plane.shape
    return plane.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _texture(rng: np.random.Generator, h: int, w: int, cell: int, amplitude: float) -> np.ndarray:
    """Smooth value noise: random values on a coarse grid, upsampled bilinearly."""
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.uniform(-amplitude, amplitude, (gh, gw))
    ys = np.arange(h) / cell
    xs = np.arange(w) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx


# Where the horizon, the kerb and the paving start, as fractions of the height: view 0 looks
# along the street; view 1 is the camera knocked down and sideways, mostly pavement.
_LAYOUTS = ((0.42, 0.62, 0.78), (0.18, 0.34, 0.52))


def render_view(width: int, height: int, seed: int, view: int) -> np.ndarray:
    """One view as float RGB (height × width × 3): sky, buildings with windows, trees, a road
    with lane marks, paving, and fine grain so that the picture is sharp."""
    rng = np.random.default_rng(seed * VIEWS + view)
    h, w = height, width
    horizon_f, ground_f, paving_f = _LAYOUTS[view]
    img = np.zeros((h, w, 3))
    horizon, ground, road_bottom = int(h * horizon_f), int(h * ground_f), int(h * paving_f)
    # Sky: a vertical gradient; a hazy row of distant blocks below it.
    t = np.linspace(0, 1, horizon)[:, None]
    img[:horizon] = (1 - t)[..., None] * [120, 165, 215] + t[..., None] * [200, 215, 230]
    img[horizon:ground] = [150, 160, 170]
    # Buildings along the skyline, each with a grid of windows, some lit.
    x = 0
    while x < w:
        bw = int(rng.uniform(0.08, 0.2) * width)
        top = int(rng.uniform(0.2, 0.85) * horizon)
        tint = [1.0, rng.uniform(0.9, 1.0), rng.uniform(0.8, 1.0)]
        colour = rng.uniform(90, 200) * np.array(tint)
        img[top:ground, x : x + bw] = colour
        win_w, win_h = max(2, bw // 10), max(2, h // 40)
        for wy in range(top + win_h, ground - 2 * win_h, 2 * win_h):
            for wx in range(x + win_w, x + bw - win_w, 2 * win_w):
                lit = rng.random() < 0.25
                img[wy : wy + win_h, wx : wx + win_w] = [235, 220, 150] if lit else [40, 50, 60]
        x += bw + int(rng.uniform(0, 0.03) * width)
    # Road with dashed lane marks, then paving in front of it.
    img[ground:road_bottom] = [70, 72, 75]
    lane = (ground + road_bottom) // 2
    dash = max(8, width // 24)
    for dx in range(int(rng.uniform(0, dash)), w, 2 * dash):
        img[lane - max(1, h // 200) : lane + max(1, h // 200), dx : dx + dash] = [225, 225, 210]
    img[road_bottom:] = [150, 140, 125]
    tile = max(8, width // 40)
    yy, xx = np.mgrid[road_bottom:h, 0:w]
    joints = ((yy - road_bottom) % tile < 2) | (xx % tile < 2)
    img[road_bottom:][joints] = [105, 100, 92]
    # Trees: dark green discs in front of the buildings.
    for _ in range(8):
        cx, cy = rng.uniform(0, w), rng.uniform(horizon, ground)
        r = rng.uniform(0.03, 0.07) * height
        y0, y1 = int(max(0, cy - r)), int(min(h, cy + r))
        x0, x1 = int(max(0, cx - r)), int(min(w, cx + r))
        gy, gx = np.mgrid[y0:y1, x0:x1]
        disc = (gy - cy) ** 2 + (gx - cx) ** 2 < r * r
        img[y0:y1, x0:x1][disc] = [40, rng.uniform(90, 130), 45]
    # Light and shade, then fine grain: a real view is never flat, and grain is what a
    # sharpness measure (variance of the Laplacian) sees collapse when the lens is defocused.
    img += _texture(rng, h, w, max(4, width // 16), 18)[..., None]
    img += rng.normal(0, 6, (h, w))[..., None]
    return np.clip(img, 0, 255)


class Scene:
    """Renders frames of one synthetic camera at wall-clock time `t` (seconds from its start).

    Someone walks across the view for `walk_s` seconds every `walk_every_s` seconds, starting
    `walk_offset_s` into each period; in between nothing moves but sensor noise.
    """

    def __init__(
        self,
        width: int,
        height: int,
        seed: int = 0,
        *,
        walk_every_s: float = 10.0,
        walk_s: float = 4.0,
        walk_offset_s: float = 3.0,
        noise: int = 2,
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"frame size must be even, got {width}x{height}")
        self.width, self.height, self.seed = width, height, seed
        self.walk_every_s, self.walk_s, self.walk_offset_s = walk_every_s, walk_s, walk_offset_s
        # Sensor noise is baked into a few copies of each view's luma: a frame costs one copy.
        rng = np.random.default_rng(seed + 7919)
        self._y: list[list[np.ndarray]] = []
        self._u: list[np.ndarray] = []
        self._v: list[np.ndarray] = []
        for i in range(VIEWS):
            y, u, v = _rgb_to_yuv(render_view(width, height, seed, i))
            self._u.append(_half(u.astype(float)).round().astype(np.uint8))
            self._v.append(_half(v.astype(float)).round().astype(np.uint8))
            luma = y.astype(np.int16)
            copies = []
            for _ in range(NOISE_FRAMES if noise else 1):
                grain = rng.integers(-noise, noise + 1, luma.shape) if noise else 0
                copies.append(np.clip(luma + grain, 16, 235).astype(np.uint8))
            self._y.append(copies)
        self._sprite = self._walker()

    def _walker(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A person seen from the side: luma, chroma and an alpha mask, full resolution."""
        ph = int(self.height * 0.32) // 2 * 2
        pw = max(4, ph // 3) // 2 * 2
        yy, xx = np.mgrid[0:ph, 0:pw]
        head_r = pw * 0.28
        head = (yy - head_r * 1.2) ** 2 + (xx - pw / 2) ** 2 < head_r**2
        body = (yy > head_r * 2.2) & (yy < ph * 0.62) & (abs(xx - pw / 2) < pw * 0.32)
        legs = (yy >= ph * 0.62) & (abs(xx - pw / 2) < pw * 0.26)
        rgb = np.zeros((ph, pw, 3))
        rgb[head] = [205, 160, 130]
        # A yellow jacket and dark trousers: unlike the road in grey, as motion is seen.
        rgb[body] = [225, 200, 60]
        rgb[legs] = [30, 32, 45]
        y, u, v = _rgb_to_yuv(rgb)
        mask = head | body | legs
        return y, u, v, mask

    def walker_at(self, t: float) -> tuple[int, int] | None:
        """Top-left corner of the walker at time t, or None when nobody is in view."""
        period = math.floor(t / self.walk_every_s)
        into = t - period * self.walk_every_s - self.walk_offset_s
        if not 0 <= into < self.walk_s:
            return None
        ph, pw = self._sprite[0].shape
        progress = into / self.walk_s
        leftwards = (period + self.seed) % 2 == 1
        if leftwards:
            progress = 1 - progress
        x = int(-pw + progress * (self.width + pw))
        y = int(self.height * 0.62 + (period % 3) * self.height * 0.05) - ph // 2
        return x // 2 * 2, max(0, min(self.height - ph, y)) // 2 * 2

    def frame(self, t: float, view: int = 0) -> bytes:
        """One I420 frame at time t; `view` 1 is the view of a camera that was turned away."""
        index = int(t * 25) % len(self._y[view])
        y = self._y[view][index].copy()
        u = self._u[view].copy()
        v = self._v[view].copy()
        at = self.walker_at(t)
        if at is not None:
            self._paste(y, u, v, *at)
        return y.tobytes() + u.tobytes() + v.tobytes()

    def _paste(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, x: int, top: int) -> None:
        sy, su, sv, mask = self._sprite
        ph, pw = sy.shape
        x0, x1 = max(0, x), min(self.width, x + pw)
        if x0 >= x1:
            return
        m = mask[:, x0 - x : x1 - x]
        y[top : top + ph, x0:x1][m] = sy[:, x0 - x : x1 - x][m]
        cm = m[::2, ::2]
        cx0, cx1, ct = x0 // 2, x0 // 2 + cm.shape[1], top // 2
        u[ct : ct + cm.shape[0], cx0:cx1][cm] = su[::2, x0 - x : x1 - x : 2][cm]
        v[ct : ct + cm.shape[0], cx0:cx1][cm] = sv[::2, x0 - x : x1 - x : 2][cm]
