"""Alignment: a face crop warped from its five landmarks onto the embedding model's template.

Each descriptor model was trained on crops made its own way:
- MobileFaceNet (and the ArcFace family): 112×112, the eyes, nose tip and mouth corners at
  insightface's fixed five points (`ARCFACE_112`, from insightface's `face_align.py`);
- dlib's ResNet: 150×150 face chips, the points where dlib's `get_face_chip_details` puts them:
  its mean face shape (68-point landmarks 17–67, normalised), with 0.25 padding; the eye
  centres are the means of the six points around each eye (`TEMPLATE`).

The transform is the least-squares similarity (rotation, uniform scale, shift: Umeyama 1991) from
the detector's five points to these, so a tilted or small face becomes the upright 150×150
crop the network was trained on.
"""

from __future__ import annotations

import cv2
import numpy as np

# dlib's mean face shape (interpolation.h, get_face_chip_details), points 17..67, in [0, 1].
_MEAN_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689,
)
_MEAN_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182,
)
PADDING = 0.25
CHIP_SIZE = 150


def five_point_template(size: int = CHIP_SIZE, padding: float = PADDING) -> np.ndarray:
    """(5, 2) target points in a `size` crop: eye, eye, nose tip, mouth corner, mouth corner,
    left of the picture first, as the detector gives them."""
    mean = np.stack([_MEAN_X, _MEAN_Y], axis=1)
    # Landmark n of 68 is row n - 17: eyes 36-41 and 42-47, nose tip 30, mouth 48 and 54.
    points = np.array([mean[19:25].mean(0), mean[25:31].mean(0), mean[13], mean[31], mean[37]])
    result: np.ndarray = ((padding + points) / (2 * padding + 1) * size).astype(np.float32)
    return result


TEMPLATE = five_point_template()
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 least-squares similarity transform taking points `src` onto `dst` (Umeyama)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1  # a reflection is not a pose: take the nearest rotation
    rotation = u @ np.diag(d) @ vt
    var = (src_c**2).sum() / len(src)
    scale = (s * d).sum() / var if var > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def align(image: np.ndarray, landmarks: np.ndarray, size: int = CHIP_SIZE,
          template: np.ndarray | None = None) -> np.ndarray:
    """The upright `size`×`size` crop of the face whose five landmarks are `landmarks`, put on
    `template` (default: dlib's chip at that size)."""
    if template is None:
        template = TEMPLATE if size == CHIP_SIZE else five_point_template(size)
    matrix = similarity(landmarks, template)
    crop: np.ndarray = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE)
    return crop
