"""`Detections`: shapes checked at construction, filtering by index, greedy NMS."""

from __future__ import annotations

import numpy as np
import pytest

from edge.video.detections import Detections, box_iou, nms


def three() -> Detections:
    return Detections(
        xyxy=[[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 80]],
        confidence=[0.9, 0.8, 0.7],
        class_id=[0, 0, 1],
        landmarks=np.zeros((3, 5, 2)),
        data={"quality": np.array([0.5, 0.6, 0.7])},
    )


def test_rows_are_picked_by_mask_index_and_slice():
    d = three()
    assert len(d[d.confidence > 0.75]) == 2
    picked = d[[2]]
    assert picked.class_id.tolist() == [1]
    assert picked.landmarks is not None
    assert picked.landmarks.shape == (1, 5, 2)
    assert picked.data["quality"].tolist() == [0.7]
    assert d[1:].xyxy.tolist() == [[1, 1, 11, 11], [50, 50, 60, 80]]
    assert d[0].area.tolist() == [100.0]


def test_empty_detections_have_the_right_shapes():
    e = Detections.empty(landmarks=5)
    assert len(e) == 0
    assert e.xyxy.shape == (0, 4)
    assert e.landmarks is not None
    assert e.landmarks.shape == (0, 5, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confidence": [0.9]}, "confidence has 1 rows, expected 2"),
        ({"class_id": [0, 0, 0]}, "class_id has 3 rows, expected 2"),
        ({"landmarks": np.zeros((2, 5))}, r"landmarks must be \(2, k, 2\)"),
        ({"tracker_id": [1]}, "tracker_id has 1 rows"),
        ({"data": {"x": np.zeros(3)}}, r"data\['x'\] has 3 rows, expected 2"),
    ],
)
def test_mismatched_columns_name_the_column(kwargs, message):
    base = {"xyxy": [[0, 0, 1, 1], [2, 2, 3, 3]], "confidence": [0.5, 0.6], "class_id": [0, 0]}
    with pytest.raises(ValueError, match=message):
        Detections(**{**base, **kwargs})


def test_iou_of_identical_disjoint_and_half_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10]], np.float32)
    assert box_iou(boxes[0], boxes).tolist() == pytest.approx([1.0, 0.0, 1 / 3])


def test_nms_keeps_the_best_of_overlapping_boxes_and_every_separate_one():
    d = three()
    assert nms(d.xyxy, d.confidence, 0.4).tolist() == [0, 2]
    assert nms(d.xyxy, d.confidence, 0.9).tolist() == [0, 1, 2]
