"""`Detections`: the one record every model adapter converts its output into.

Shaped like supervision's `Detections` (supervision/detection/core.py): parallel numpy arrays,
one row per detection, so filtering is indexing and nothing downstream (trackers, rules,
evidence) ever sees a model's raw tensors. Coordinates are pixels of the frame the adapter was
given, never of the model's input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(eq=False)
class Detections:
    xyxy: np.ndarray  # (n, 4) float32: x1, y1, x2, y2 in frame pixels
    confidence: np.ndarray  # (n,) float32 in [0, 1]
    class_id: np.ndarray  # (n,) int32; the adapter's class list names them
    landmarks: np.ndarray | None = None  # (n, k, 2) float32 points, e.g. 5 per face
    tracker_id: np.ndarray | None = None  # (n,) int64, set by a tracker
    data: dict[str, np.ndarray] = field(default_factory=dict)  # more per-row arrays (n, ...)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.confidence = _column("confidence", self.confidence, n, np.float32)
        self.class_id = _column("class_id", self.class_id, n, np.int32)
        if self.tracker_id is not None:
            self.tracker_id = _column("tracker_id", self.tracker_id, n, np.int64)
        if self.landmarks is not None:
            self.landmarks = np.asarray(self.landmarks, dtype=np.float32)
            if self.landmarks.ndim != 3 or self.landmarks.shape[0] != n or (
                self.landmarks.shape[2] != 2
            ):
                raise ValueError(
                    f"landmarks must be ({n}, k, 2), got shape {self.landmarks.shape}"
                )
        for key, values in self.data.items():
            if len(values) != n:
                raise ValueError(f"data[{key!r}] has {len(values)} rows, expected {n}")

    @classmethod
    def empty(cls, landmarks: int | None = None) -> Detections:
        """No detections (with an empty landmark array of `landmarks` points, if given)."""
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros(0, np.float32),
            class_id=np.zeros(0, np.int32),
            landmarks=None if landmarks is None else np.zeros((0, landmarks, 2), np.float32),
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Detections:
        """The rows picked by an index, slice, list of indices or boolean mask."""
        if isinstance(index, int):
            index = [index]
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            landmarks=None if self.landmarks is None else self.landmarks[index],
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
            data={k: np.asarray(v)[index] for k, v in self.data.items()},
        )

    @property
    def area(self) -> np.ndarray:
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        result: np.ndarray = wh[:, 0] * wh[:, 1]
        return result

    def __repr__(self) -> str:
        rows = [f"{c:.2f}@{b.round(1).tolist()}" for c, b in zip(self.confidence, self.xyxy,
                                                                 strict=True)]
        return f"Detections({len(self)}: {', '.join(rows[:5])}{', …' if len(rows) > 5 else ''})"


def _column(name: str, values: Any, n: int, dtype: type) -> np.ndarray:
    array: np.ndarray = np.asarray(values, dtype=dtype).reshape(-1)
    if len(array) != n:
        raise ValueError(f"{name} has {len(array)} rows, expected {n} (one per box)")
    return array


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one xyxy box with each of `boxes`."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    result: np.ndarray = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
    return result


def nms(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        order = rest[box_iou(xyxy[best], xyxy[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
