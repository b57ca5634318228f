"""A gate scene composed from real photos: people walk past a camera, one after the other.

`gate_clip(path, [("obama2", 1.0, 4.0), ("biden", 5.0, 8.0)])` writes a real H.264 MP4 in
which each photo's head and shoulders cross the view from left to right during its interval,
over a still background, as a passer-by does under a gate camera. The head is scaled so the
eyes are about `eye_px` pixels apart (a 1280×720 camera at two or three metres).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import av
import cv2
import numpy as np

from edge.video.detectors.retinaface import RetinaFace, RetinaFaceConfig
from tests import face_photos


@cache
def _detector() -> RetinaFace:
    return RetinaFace(RetinaFaceConfig())


def background(width: int, height: int) -> np.ndarray:
    """A gate: grey wall, darker door frame, a bright sign (fixed, so motion is only people)."""
    image = np.full((height, width, 3), (118, 124, 128), np.uint8)
    ramp = np.linspace(-20, 20, height, dtype=np.float32)[:, None, None]
    image = np.clip(image.astype(np.float32) + ramp, 0, 255).astype(np.uint8)
    cv2.rectangle(image, (width // 5, height // 8), (width * 4 // 5, height), (70, 66, 60), 18)
    cv2.rectangle(image, (width // 3, 20), (width * 2 // 3, 70), (220, 230, 235), -1)
    return image


def person(name: str, eye_px: float) -> np.ndarray:
    """The photo's head and shoulders, scaled so its eyes are `eye_px` apart."""
    image = face_photos.image(name)
    faces = _detector().detect(image)
    assert len(faces) == 1, name
    assert faces.landmarks is not None
    x1, y1, x2, y2 = faces.xyxy[0]
    w, h = x2 - x1, y2 - y1
    top, bottom = max(0, int(y1 - 0.4 * h)), min(image.shape[0], int(y2 + 0.6 * h))
    left, right = max(0, int(x1 - 0.4 * w)), min(image.shape[1], int(x2 + 0.4 * w))
    eyes = float(np.hypot(*(faces.landmarks[0][1] - faces.landmarks[0][0])))
    scale = eye_px / eyes
    crop = image[top:bottom, left:right]
    return cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def gate_clip(path: Path, walkers: list[tuple[str, float, float]], *, seconds: float = 10.0,
              width: int = 1280, height: int = 720, fps: int = 10, eye_px: float = 60.0) -> Path:
    back = background(width, height)
    patches = [(person(name, eye_px), start, end) for name, start, end in walkers]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.options = {"preset": "ultrafast", "bframes": "0", "crf": "20"}
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            t = i / fps
            frame = back.copy()
            for patch, start, end in patches:
                if not start <= t < end:
                    continue
                ph, pw = patch.shape[:2]
                x = int((width * 0.15) + (t - start) / (end - start) * (width * 0.7 - pw))
                y = max(0, (height - ph) // 2)
                x = min(max(0, x), width - pw)
                frame[y:y + ph, x:x + pw] = patch[: height - y]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
