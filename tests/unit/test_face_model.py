"""The face descriptor rebuilt from face-api, with alignment and quality gates, on real photos.

The photos come out of registry packages (tests/data/face_photos.yaml). Only Obama has several
different photos; the others are one photo each, so these tests show the network separates
these faces at the chosen thresholds, not a false-match rate (models/dlib_resnet_face.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.video.detectors.retinaface import RetinaFace, RetinaFaceConfig
from edge.video.face.align import TEMPLATE, similarity
from edge.video.face.embedder import EmbedderConfig, FaceEmbedder
from edge.video.face.quality import QualityConfig, judge, pose
from edge.video.face.store import DEFAULT_LISTS
from tests import face_photos


@pytest.fixture(scope="module")
def detector() -> RetinaFace:
    return RetinaFace(RetinaFaceConfig())


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder()


def describe(detector: RetinaFace, embedder: FaceEmbedder, name: str) -> np.ndarray:
    image = face_photos.image(name)
    faces = detector.detect(image)
    assert len(faces) == 1, name
    assert faces.landmarks is not None
    return embedder.embed([embedder.align(image, faces.landmarks[0])])[0]


def test_the_template_is_dlibs_face_chip_eyes_nose_and_mouth():
    # Eyes level, symmetric about the middle of the 150-pixel chip, nose between, mouth below.
    left, right, nose, mouth_l, _mouth_r = TEMPLATE
    assert left[1] == pytest.approx(right[1])
    assert (left[0] + right[0]) / 2 == pytest.approx(75, abs=1.5)
    assert left[1] < nose[1] < mouth_l[1]
    assert right[0] - left[0] == pytest.approx(52.9, abs=0.5)


def test_similarity_recovers_a_known_rotation_scale_and_shift():
    angle = np.radians(20)
    m = 1.7 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = TEMPLATE.astype(np.float64)
    dst = src @ m.T + [12.0, -5.0]
    got = similarity(src, dst)
    assert np.allclose(got[:, :2], m, atol=1e-9)
    assert np.allclose(got[:, 2], [12.0, -5.0], atol=1e-9)


@pytest.mark.parametrize("model", ["mobilefacenet", "dlib_resnet_face"])
def test_three_photos_of_one_person_are_closer_than_any_two_people(detector, model):
    """Both descriptor models rebuilt under models/ separate these faces; MobileFaceNet (the
    default) by a much wider gap (models/mobilefacenet.md)."""
    embedder = FaceEmbedder(EmbedderConfig(model=model))
    obama = [describe(detector, embedder, n) for n in ("obama", "obama2", "obama3")]
    others = [describe(detector, embedder, n) for n in ("biden", "astronaut", "tom_hanks")]
    same = [float(a @ b) for i, a in enumerate(obama) for b in obama[i + 1:]]
    different = [float(a @ b) for a in obama for b in others]
    gap = min(same) - max(different)
    assert gap > (0.4 if model == "mobilefacenet" else 0.05), (same, different)


def test_three_photos_of_one_person_match_and_other_people_do_not(detector, embedder):
    obama = [describe(detector, embedder, n) for n in ("obama", "obama2", "obama3")]
    others = [describe(detector, embedder, n) for n in ("biden", "astronaut", "tom_hanks")]
    strictest = max(p.threshold for p in DEFAULT_LISTS.values())
    loosest = min(p.threshold for p in DEFAULT_LISTS.values())
    for i in range(3):
        for j in range(i + 1, 3):
            assert float(obama[i] @ obama[j]) >= strictest
    for face in obama:
        for other in others:
            assert float(face @ other) < loosest
    assert np.allclose([np.linalg.norm(v) for v in obama + others], 1.0, atol=1e-5)


def test_the_same_face_mirrored_or_grey_still_matches_itself(detector, embedder):
    image = face_photos.image("obama")
    faces = detector.detect(image)
    assert faces.landmarks is not None
    reference = embedder.embed([embedder.align(image, faces.landmarks[0])])[0]
    grey = np.repeat(image.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    grey_faces = detector.detect(grey)
    assert grey_faces.landmarks is not None
    again = embedder.embed([embedder.align(grey, grey_faces.landmarks[0])])[0]
    assert float(reference @ again) > max(p.threshold for p in DEFAULT_LISTS.values())


def test_quality_gates_give_the_reason(detector, embedder):
    config = QualityConfig()
    group = face_photos.image("t1")
    faces = detector.detect(group)
    assert faces.landmarks is not None
    reasons = [judge(config, float(faces.confidence[i]), faces.landmarks[i],
                     embedder.align(group, faces.landmarks[i]))[0]
               for i in range(len(faces))]
    # Six people; the one turned almost in profile is refused for pose.
    assert len(faces) == 6
    assert "pose" in reasons
    image = face_photos.image("obama")
    big = detector.detect(image)
    assert big.landmarks is not None
    chip = embedder.align(image, big.landmarks[0])
    assert judge(config, float(big.confidence[0]), big.landmarks[0], chip)[0] is None
    assert judge(config, 0.5, big.landmarks[0], chip)[0] == "confidence"
    small = big.landmarks[0] / 8  # the same face at an eighth of the size
    assert judge(config, 0.99, small, chip)[0] == "size"
    blurred = np.full_like(chip, 128)
    assert judge(config, 0.99, big.landmarks[0], blurred)[0] == "blur"


def test_pose_from_landmarks():
    frontal = TEMPLATE.copy()
    p = pose(frontal)
    assert abs(p.yaw) < 0.02
    assert abs(p.roll_deg) < 0.5
    assert 0.3 < p.pitch < 0.7
    turned = frontal.copy()
    turned[2, 0] = frontal[1, 0]  # nose tip over the right-of-picture eye
    assert pose(turned).yaw == pytest.approx(1.0, abs=0.02)


def test_the_pipeline_counts_why_faces_were_skipped_and_keeps_nothing_of_strangers(tmp_path):
    """Six people at once, nobody enrolled: every face is counted (matched, unmatched or the
    gate that stopped it) and no track holds a crop."""
    from edge.video.face.config import FaceConfig
    from edge.video.face.pipeline import FacePipeline, WatchlistSource
    from edge.video.face.store import WatchlistStore
    from edge.video.motion import Box

    store = WatchlistStore(tmp_path)
    image = face_photos.image("astronaut")
    faces = RetinaFace(RetinaFaceConfig()).detect(image)
    assert faces.landmarks is not None
    embedder = FaceEmbedder()
    store.enrol(person="P-1", list_name="police", consent="c", entered_by="t", photos=[],
                embeddings=embedder.embed([embedder.align(image, faces.landmarks[0])]),
                model=embedder.model)
    pipeline = FacePipeline(FaceConfig(), WatchlistSource(store, reload_s=5))
    group = face_photos.image("t1")
    h, w = group.shape[:2]
    matches = pipeline.process(group, [Box(0, 0, w, h)], t_ms=0)
    counts = pipeline.counts
    assert matches == []
    assert counts.faces == 6
    assert counts.skipped["pose"] >= 1
    assert counts.matched == 0
    assert counts.unmatched + sum(counts.skipped.values()) == 6
    assert all(track.best == [] for track in pipeline.tracker.tracks)
    # The tracks end when nobody is seen for track_timeout_ms, and nothing of them remains.
    pipeline.process(np.zeros_like(group), [], t_ms=FaceConfig().track_timeout_ms + 1)
    assert pipeline.tracker.tracks == []
