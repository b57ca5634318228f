"""Frames go to a model in another process through shared memory, never pickled.

A real face photo (scikit-image's astronaut) is put in a slot of a `FrameSlots` ring; the
detector process (RetinaFace, warmed up before it says it is ready) reads it in place and
answers with one face. What crosses the queue is a slot number and a shape, never the pixels.
"""

from __future__ import annotations

import pickle
from multiprocessing import resource_tracker

import cv2
import numpy as np
import pytest
import skimage.data

from edge.video.shm import DetectorProcess, FrameSlots, Request

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, scope="module")
def _resource_tracker() -> None:
    """multiprocessing's tracker of shared-memory blocks lives as long as this process: it is
    started here, before the per-test check for leaked processes looks."""
    resource_tracker.ensure_running()


def test_a_frame_in_a_slot_is_read_in_place_by_the_detector_process() -> None:
    face = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    slots = FrameSlots(None, max_bytes=face.nbytes, slots=2)
    detector = DetectorProcess({"type": "retinaface", "threads": 1, "input_size": 320})
    try:
        slot = slots.put(face)
        assert slot is not None
        assert detector.ask(slots, "cam-gate", slot, face.shape, t_ms=1200)
        answer = detector.answer(timeout=60)
        assert (answer.camera, answer.slot, answer.t_ms, answer.error) == ("cam-gate", slot, 1200, None)
        assert answer.detections is not None
        assert len(answer.detections) == 1
        x1, y1, x2, y2 = answer.detections.xyxy[0]
        assert 150 < (x1 + x2) / 2 < 260  # her face: the middle ...
        assert 40 < (y1 + y2) / 2 < 180  # ... of the top of the picture
        # What crossed the queue: a few hundred bytes, not the 786,432 of the picture.
        request = Request("cam-gate", slots.name, slots.max_bytes, slot, face.shape, 1200)
        assert len(pickle.dumps(request)) < 500
        slots.free(slot)
    finally:
        detector.stop()
        slots.close()


def test_a_full_ring_says_so_instead_of_overwriting_a_frame_in_use() -> None:
    slots = FrameSlots(None, max_bytes=100, slots=2)
    try:
        frame = np.arange(100, dtype=np.uint8).reshape(10, 10)
        first, second = slots.put(frame), slots.put(frame + 1)
        assert (first, second) == (0, 1)
        assert slots.put(frame) is None  # both still with the detector
        assert int(slots.view(0, (10, 10))[9, 9]) == 99
        slots.free(0)
        assert slots.put(frame + 2) == 0
        with pytest.raises(ValueError, match="does not fit"):
            slots.put(np.zeros(200, np.uint8))
    finally:
        slots.close()
