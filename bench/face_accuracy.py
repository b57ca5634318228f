"""Open-set accuracy of the face descriptors on the real photos that ship in registry packages.

    .venv/bin/python bench/face_accuracy.py

For each descriptor model under models/ (MobileFaceNet, dlib's ResNet): every face RetinaFace
finds in the photos of tests/data/face_photos.yaml and scikit-image's astronaut is aligned and
described exactly as the camera pipeline does; the script prints the
same-person and different-person cosine similarities (all faces, and only those that pass the
camera's default quality gates), the gap between the lowest same-person and the highest
different-person score, and, for the default model, how many same-person pairs each list's
threshold accepts and how many different-person pairs it rejects. The faces of the
group photo t1.jpg are six different, unnamed people; the crops obama_partial_face* and the
copy 32bit.png of obama2.jpg are left out of the pairs, so no pair is a photo with itself.
Only one identity (Obama) has several different photos: read the numbers with that in mind.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.video.detectors.retinaface import RetinaFace, RetinaFaceConfig
from edge.video.face.embedder import (
    DEFAULT_MODEL,
    MODELS,
    EmbedderConfig,
    FaceEmbedder,
)
from edge.video.face.quality import QualityConfig, judge
from edge.video.face.store import DEFAULT_LISTS
from tests import face_photos

PHOTOS = ["obama", "obama2", "obama3", "biden", "astronaut", "t1", "tom_hanks"]


def faces(model: str) -> list[tuple[str, str, bool, np.ndarray]]:
    """(label, identity, passes the quality gates, descriptor) of every face found."""
    detector = RetinaFace(RetinaFaceConfig())
    embedder = FaceEmbedder(EmbedderConfig(model=model))  # type: ignore[arg-type]
    quality = QualityConfig()
    out = []
    for name in PHOTOS:
        image = face_photos.image(name)
        found = detector.detect(image)
        assert found.landmarks is not None
        for i in range(len(found)):
            chip = embedder.align(image, found.landmarks[i])
            reason, _ = judge(quality, float(found.confidence[i]), found.landmarks[i], chip)
            identity = face_photos.person(name) or f"{name}#{i}"
            out.append((f"{name}#{i}", identity, reason is None, embedder.embed([chip])[0]))
    return out


def summary(values: list[float]) -> str:
    if not values:
        return "none"
    a = np.array(values)
    return (f"n={len(a):3d} min {a.min():.3f} p50 {np.median(a):.3f} max {a.max():.3f}")


def main() -> int:
    for model in MODELS:
        print(f"\n## {model}" + (" (the default)" if model == DEFAULT_MODEL else ""))
        report(faces(model), lists=model == DEFAULT_MODEL)
    return 0


def report(found: list[tuple[str, str, bool, np.ndarray]], lists: bool) -> None:
    for gated in (False, True):
        rows = [f for f in found if f[2] or not gated]
        same, diff = [], []
        worst_same = worst_diff = ("", "", 0.0)
        for a, b in itertools.combinations(rows, 2):
            score = float(a[3] @ b[3])
            if a[1] == b[1]:
                same.append(score)
                if not worst_same[2] or score < worst_same[2]:
                    worst_same = (a[0], b[0], score)
            else:
                diff.append(score)
                if score > worst_diff[2]:
                    worst_diff = (a[0], b[0], score)
        title = "faces passing the quality gates" if gated else "all faces found"
        print(f"\n{title}: {len(rows)} faces of {len({r[1] for r in rows})} people")
        print(f"  same person      {summary(same)}   lowest {worst_same[0]}~{worst_same[1]}")
        print(f"  different people {summary(diff)}   highest {worst_diff[0]}~{worst_diff[1]}")
        print(f"  gap (lowest same - highest different): {min(same) - max(diff):+.3f}")
        for name, policy in DEFAULT_LISTS.items() if lists else ():
            accepted = sum(s >= policy.threshold for s in same)
            rejected = sum(s < policy.threshold for s in diff)
            print(f"  {name:14s} threshold {policy.threshold}: "
                  f"same accepted {accepted}/{len(same)}, "
                  f"different rejected {rejected}/{len(diff)}; margin to the closest different "
                  f"pair {policy.threshold - max(diff):+.3f}, to the lowest same pair "
                  f"{min(same) - policy.threshold:+.3f}")


if __name__ == "__main__":
    sys.exit(main())
