"""Face detection with RetinaFace (MobileNet-0.25): faces with five landmarks as `Detections`.

The model (models/retinaface_mnet025.md) takes a BGR image minus the channel means of its
training, any size that is a multiple of 32, and answers for every prior box of its three
feature maps (strides 8, 16, 32; two square sizes each): box offsets, face/background scores
and ten landmark offsets. This adapter resizes the frame so its long side is `input_size`, pads
it to a multiple of 32, decodes the priors (variances 0.1 and 0.2, as trained), keeps the
confident ones, suppresses overlaps and maps everything back to frame pixels.

Landmarks, in image terms: the eye on the left of the picture, the eye on the right, the nose
tip, the mouth corner on the left, the mouth corner on the right.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from edge.video.detections import Detections, nms
from edge.video.detectors.onnx_runtime import OnnxConfig, OnnxDetector
from edge.video.detectors.registry import register
from edge.video.frames import FrameError, shrink

MEAN_BGR = (104.0, 117.0, 123.0)  # channel means the network was trained with
STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE_CENTRE, VARIANCE_SIZE = 0.1, 0.2
FACE = 0  # the one class


class RetinaFaceConfig(OnnxConfig):
    type: Literal["retinaface"] = Field("retinaface", description="This detector")
    model: str = Field("retinaface_mnet025", description="Model name in models/manifest.yaml")
    input_size: int = Field(
        640, ge=128, le=1920, multiple_of=32,
        description="The frame's long side is resized to this for the network, whose smallest "
        "face is about 16 px at that scale: 640 finds faces down to about 32 px of a 1280-wide "
        "frame; 320 is three times faster and finds them down to about 64 px",
    )
    score_threshold: float = Field(0.8, gt=0, lt=1, description="Lowest face score kept")
    nms_iou: float = Field(0.4, gt=0, le=1, description="Overlap above which the weaker box goes")
    max_faces: int = Field(100, ge=1, description="Most faces reported per image")


@register
class RetinaFace(OnnxDetector):
    type_key = "retinaface"
    config_class = RetinaFaceConfig
    config: RetinaFaceConfig

    def warmup_image(self) -> np.ndarray:
        side = self.config.input_size
        return np.zeros((side * 9 // 16, side, 3), np.uint8)

    def detect(self, image: np.ndarray) -> Detections:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise FrameError("retinaface: the image must be a uint8 BGR or grey numpy array")
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        blob, scale = self._prepare(image)
        loc, conf, marks = (out[0] for out in self.run(blob))
        scores = conf[:, 1]
        keep = np.flatnonzero(scores > self.config.score_threshold)
        if keep.size == 0:
            return Detections.empty(landmarks=5)
        keep = keep[np.argsort(-scores[keep])][:5000]
        height, width = blob.shape[2], blob.shape[3]
        priors = _priors(height, width)[keep]
        centre, size = priors[:, :2], priors[:, 2:]
        box_centre = centre + loc[keep, :2] * VARIANCE_CENTRE * size
        box_size = size * np.exp(loc[keep, 2:] * VARIANCE_SIZE)
        to_pixels = np.array([width, height], np.float32) / scale
        xyxy = np.hstack([box_centre - box_size / 2, box_centre + box_size / 2])
        xyxy *= np.tile(to_pixels, 2)
        points = centre[:, None, :] + marks[keep].reshape(-1, 5, 2) * (
            VARIANCE_CENTRE * size[:, None, :]
        )
        points *= to_pixels
        kept = nms(xyxy, scores[keep], self.config.nms_iou)[: self.config.max_faces]
        h, w = image.shape[:2]
        xyxy = np.clip(xyxy[kept], 0, [w, h, w, h])
        return Detections(
            xyxy=xyxy,
            confidence=scores[keep][kept],
            class_id=np.full(len(kept), FACE, np.int32),
            landmarks=points[kept],
        )

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The network's input (1, 3, H, W) and the scale from frame to input pixels."""
        h, w = image.shape[:2]
        scale = self.config.input_size / max(h, w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        if scale < 1:  # halved by area averaging, then bilinear: a fifth of one area resize
            resized = shrink(image, (new_w, new_h))
        else:
            resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        pad_w, pad_h = -new_w % 32, -new_h % 32
        # Padding with the mean makes it zero after the subtraction: nothing for the net to see.
        padded = cv2.copyMakeBorder(resized, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT,
                                    value=MEAN_BGR)
        # Channels first by splitting the planes (numpy's strided transpose costs ten times).
        blob = np.stack(cv2.split(padded)).astype(np.float32)
        blob -= np.array(MEAN_BGR, np.float32)[:, None, None]
        return blob[None], scale


@lru_cache(maxsize=8)
def _priors(height: int, width: int) -> np.ndarray:
    """(n, 4) prior boxes cx, cy, w, h as fractions of the input, in the network's order:
    stride by stride, row by row, column by column, then each of the two sizes."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        rows, cols = -(-height // step), -(-width // step)
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        cx = ((xs.reshape(-1) + 0.5) * step / width).repeat(len(sizes))
        cy = ((ys.reshape(-1) + 0.5) * step / height).repeat(len(sizes))
        sw = np.tile(np.array(sizes, np.float32) / width, rows * cols)
        sh = np.tile(np.array(sizes, np.float32) / height, rows * cols)
        out.append(np.stack([cx, cy, sw, sh], axis=1))
    priors: np.ndarray = np.concatenate(out).astype(np.float32)
    priors.setflags(write=False)
    return priors
