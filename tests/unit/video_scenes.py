"""Camera views built from real photographs (scikit-image's sample images) for video unit tests.

A camera's view is a 16:9 window on a wider canvas made of three real photos (the astronaut,
a coffee cup, a rocket on its pad), so a view has real texture, smooth areas and edges; turning
the camera is moving the window. Each helper plays one physical situation on a view.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np
import skimage.data

W, H = 640, 360  # the analysed (detect) resolution the tests use


@cache
def _canvas() -> np.ndarray:
    astronaut = cv2.resize(skimage.data.astronaut(), (400, 400), interpolation=cv2.INTER_AREA)
    coffee = cv2.resize(skimage.data.coffee(), (600, 400), interpolation=cv2.INTER_AREA)
    rgb = np.hstack([astronaut, coffee[:, :360]])  # 400 × 760
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


@cache
def _other_place() -> np.ndarray:
    cat = cv2.resize(skimage.data.chelsea(), (480, 360), interpolation=cv2.INTER_AREA)
    rocket = cv2.resize(skimage.data.rocket(), (240, 360), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(np.hstack([rocket[:, :160], cat]), cv2.COLOR_RGB2BGR)


def view(dx: int = 0, dy: int = 0) -> np.ndarray:
    """The camera's colour (BGR) view; dx, dy: the camera turned by that many pixels."""
    x0, y0 = 40 + dx, 20 + dy
    return _canvas()[y0 : y0 + H, x0 : x0 + W].copy()


def grey(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


def other_place() -> np.ndarray:
    """A different scene altogether: the camera was turned to face somewhere else."""
    return _other_place().copy()


@cache
def _noise_bank(shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian noise fields, drawn once: drawing 230k normals per frame would make the
    tests spend their time making noise."""
    rng = np.random.default_rng(12345)
    return np.round(rng.normal(0, sigma, (8, *shape))).astype(np.int16)


def sensor_noise(img: np.ndarray, rng: np.random.Generator, sigma: float = 3.0) -> np.ndarray:
    """Every real frame differs from the last by sensor noise (one of 8 fields, shifted)."""
    field = _noise_bank(img.shape, sigma)[int(rng.integers(0, 8))]
    field = np.roll(field, (int(rng.integers(0, img.shape[0])), int(rng.integers(0, 64))),
                    axis=(0, 1))
    return np.clip(img.astype(np.int16) + field, 0, 255).astype(np.uint8)


def infrared(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same view after the night switch: grey, near-infrared (red-heavy), flat and noisy."""
    nir = 0.7 * bgr[:, :, 2].astype(np.float32) + 0.3 * bgr[:, :, 1]
    flat = 0.6 * nir + 50
    return sensor_noise(np.clip(flat, 0, 255).astype(np.uint8), rng, 6.0)


def defocused(img: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    """The lens turned out of focus: a Gaussian blur of `sigma` pixels at 640×360."""
    return cv2.GaussianBlur(img, (0, 0), sigma)


@cache
def _cloth(level: int) -> np.ndarray:
    weave = np.random.default_rng(level).normal(level, 20, (H, W)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(weave, (0, 0), 25), 0, 255).astype(np.uint8)


def covered(rng: np.random.Generator, level: int = 25) -> np.ndarray:
    """A hand or a cloth on the lens: a dark, out-of-focus, almost uniform picture."""
    return sensor_noise(_cloth(level), rng)


def dimmed(img: np.ndarray, factor: float) -> np.ndarray:
    """Dusk: the same view with less light."""
    return np.clip(img.astype(np.float32) * factor, 0, 255).astype(np.uint8)


def headlights(img: np.ndarray, x: int, strength: float = 180.0) -> np.ndarray:
    """A car's headlights sweeping the view: a broad bright patch centred at column `x`."""
    yy, xx = np.mgrid[:H, :W]
    glare = strength * np.exp(-(((xx - x) / 180.0) ** 2 + ((yy - 220) / 120.0) ** 2))
    return np.clip(img.astype(np.float32) + glare.astype(np.float32), 0, 255).astype(np.uint8)


def rain(img: np.ndarray, rng: np.random.Generator, drops: int = 400) -> np.ndarray:
    """Rain seen at a distance: thin bright streaks (1 pixel wide, 7 % of the frame's height) at
    random places in each frame of any size."""
    h, w = img.shape[:2]
    streaks = np.zeros((h, w), np.float32)
    length = int(0.07 * h)
    for _ in range(drops):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.line(streaks, (x, y), (x + length // 8, y + length), 60.0, 1)
    return np.clip(img.astype(np.float32) + cv2.GaussianBlur(streaks, (3, 3), 0), 0, 255).astype(
        np.uint8
    )


def person_near_lens(img: np.ndarray, x: int) -> np.ndarray:
    """Someone walking past right in front of the lens: a dark, blurred shape 2/3 of the height."""
    shade = np.zeros((H, W), np.float32)
    cv2.ellipse(shade, (x, 260), (170, 250), 0, 0, 360, 1.0, -1)
    shade = cv2.GaussianBlur(shade, (0, 0), 15)
    out = img.astype(np.float32) * (1 - shade) + 30 * shade
    return np.clip(out, 0, 255).astype(np.uint8)
