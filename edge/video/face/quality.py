"""Quality gates: a face is embedded only if it is big, sharp, frontal and confident enough.

Small models are weakest on exactly the faces a gate camera sees most: small, blurred by
motion, turned away (../shared/LESSONS.md, 4). A face that fails a gate is not matched at all
(a weak face gives a confident wrong answer as easily as a right one), and the reason is
counted, so an installer can see why a camera matches nobody: `size`, `blur`, `pose`,
`confidence`.

Pose comes from the five landmarks: yaw from where the nose tip sits between the eyes (0 when
centred, ±1 when it is over one eye), pitch from where it sits between the eye line and the
mouth line, roll from the angle of the eye line. Blur is the variance of the Laplacian of the
face, measured on the aligned crop so it does not depend on the face's size in the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from shouwang.config import Strict

REASONS = ("size", "blur", "pose", "confidence")


class QualityConfig(Strict):
    min_eye_distance_px: float = Field(
        24, ge=4, le=500,
        description="Least distance between the eyes, in source-frame pixels (a 1080p gate "
        "camera gives about 60 px at 3 m): smaller faces are skipped as `size`",
    )
    min_sharpness: float = Field(
        60, ge=0, description="Least variance of the Laplacian of the aligned grey crop "
        "(0–255 grey levels); lower is blurred: skipped as `blur`",
    )
    max_yaw: float = Field(
        0.6, gt=0, le=1, description="Largest |yaw| (nose offset from the eyes' midpoint over "
        "half the eye distance): skipped as `pose`",
    )
    max_roll_deg: float = Field(30, gt=0, le=90, description="Largest tilt of the eye line")
    pitch_range: tuple[float, float] = Field(
        (0.25, 0.75), description="Where the nose tip may sit between the eye line (0) and the "
        "mouth line (1): outside, the head is bowed or raised too far: `pose`",
    )
    min_confidence: float = Field(0.9, gt=0, le=1, description="Least detector score")


@dataclass(frozen=True, slots=True)
class Pose:
    yaw: float
    pitch: float
    roll_deg: float
    eye_distance: float


def pose(landmarks: np.ndarray) -> Pose:
    """Yaw, pitch, roll and eye distance estimated from the five landmarks."""
    left_eye, right_eye, nose, mouth_l, mouth_r = np.asarray(landmarks, np.float64)
    eyes = right_eye - left_eye
    eye_distance = float(np.hypot(*eyes))
    if eye_distance < 1e-6:
        return Pose(1.0, 0.0, 0.0, 0.0)
    axis = eyes / eye_distance
    normal = np.array([-axis[1], axis[0]])  # pointing down the face
    eye_mid, mouth_mid = (left_eye + right_eye) / 2, (mouth_l + mouth_r) / 2
    yaw = float((nose - eye_mid) @ axis / (eye_distance / 2))
    span = float((mouth_mid - eye_mid) @ normal)
    pitch = float((nose - eye_mid) @ normal / span) if span > 1e-6 else 0.0
    roll = float(np.degrees(np.arctan2(eyes[1], eyes[0])))
    return Pose(yaw, pitch, roll, eye_distance)


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the crop's grey image."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def judge(config: QualityConfig, confidence: float, landmarks: np.ndarray,
          crop: np.ndarray) -> tuple[str | None, float]:
    """(the reason the face is skipped, or None) and a quality score for choosing best frames."""
    if confidence < config.min_confidence:
        return "confidence", 0.0
    p = pose(landmarks)
    if p.eye_distance < config.min_eye_distance_px:
        return "size", 0.0
    low, high = config.pitch_range
    if abs(p.yaw) > config.max_yaw or abs(p.roll_deg) > config.max_roll_deg or not (
        low <= p.pitch <= high
    ):
        return "pose", 0.0
    sharp = sharpness(crop)
    if sharp < config.min_sharpness:
        return "blur", 0.0
    # Best frames: bigger, sharper, more frontal.
    score = min(p.eye_distance / 80, 1.0) * min(sharp / 400, 1.0) * (1 - abs(p.yaw))
    return None, float(score)
