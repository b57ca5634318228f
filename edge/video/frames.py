"""Frame plumbing shared by the analysers: grey conversion, downscaling, mask polygons, errors.

Every analyser takes a grey (luma) frame. A worker decoding with PyAV gets one for free: the Y
plane of a YUV 4:2:0 frame is the grey image, so no colour conversion is paid per frame. A BGR
frame is accepted too and converted here (about as costly as the analysis itself at 1080p).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# A polygon in full-frame pixels, as written in `privacy_masks`: [[x, y], [x, y], ...].
Polygon = Sequence[Sequence[float]]


class FrameError(ValueError):
    """A frame the analyser cannot take: wrong shape or type, a timestamp that went backwards."""


def to_grey(frame: np.ndarray) -> np.ndarray:
    """The frame as 8-bit grey: a grey frame as it is, a BGR frame converted."""
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"a frame must be a numpy array, not {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise FrameError(f"a frame must be 8-bit (uint8), not {frame.dtype}")
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return frame[:, :, 0]
    raise FrameError(f"a frame must be grey (H, W) or BGR (H, W, 3), not shape {frame.shape}")


def scaled_size(width: int, height: int, *, to_height: int | None = None,
                to_width: int | None = None) -> tuple[int, int]:
    """(width, height) scaled to one target side, keeping the aspect ratio, at least 1 pixel."""
    if to_height is not None:
        return max(1, round(width * to_height / height)), to_height
    if to_width is not None:
        return to_width, max(1, round(height * to_width / width))
    raise ValueError("give to_height or to_width")


def shrink(grey: np.ndarray, size: tuple[int, int], last: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Downscale to `size` (width, height), averaging blocks of pixels.

    Averaging is what makes a small frame robust: sensor noise and the blocky artefacts of
    H.264 at low bit rates average out. OpenCV's area averaging is fast only for an exact
    factor of two, so the frame is halved that way while it is at least twice the target, and
    the last step (less than a factor of two) is bilinear: 1280×720 to 213×120 costs about
    50 µs instead of 1 ms for one area resize. `last=cv2.INTER_AREA` averages in the last
    step too (cheap when the target is tiny).
    """
    if (grey.shape[1], grey.shape[0]) == size:
        return grey
    out = grey
    while out.shape[1] >= 2 * size[0] and out.shape[0] >= 2 * size[1]:
        half = (out.shape[1] // 2, out.shape[0] // 2)
        out = cv2.resize(out[: half[1] * 2, : half[0] * 2], half, interpolation=cv2.INTER_AREA)
    if (out.shape[1], out.shape[0]) != size:
        out = cv2.resize(out, size, interpolation=last)
    return out


def polygon_mask(polygons: Sequence[Polygon], width: int, height: int,
                 size: tuple[int, int], grow: int = 0) -> np.ndarray | None:
    """A uint8 mask of `size` (width, height), 255 inside any polygon given in full-frame pixels.

    None when there are no polygons, so callers skip the masking step entirely. `grow` widens
    the mask by that many pixels of `size`: scaled down, a polygon's edge falls between pixels,
    and a privacy mask must err on the side of hiding.
    """
    if not polygons:
        return None
    sx, sy = size[0] / width, size[1] / height
    mask: np.ndarray = np.zeros((size[1], size[0]), np.uint8)
    for i, poly in enumerate(polygons):
        pts = np.asarray(poly, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
            raise ValueError(f"mask polygon {i}: needs at least 3 [x, y] points, got {poly!r}")
        scaled = np.round(pts * (sx, sy)).astype(np.int32)
        cv2.fillPoly(mask, [scaled], 255)
    if grow > 0:
        mask = cv2.dilate(mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return mask
