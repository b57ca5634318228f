"""Milliseconds per face, step by step, against bare onnxruntime calls of the same models.

    .venv/bin/python bench/face.py [--rounds 50] [--enrolled 10000]

One face as the gate camera sees it: `obama2.jpg` (tests/data/face_photos.yaml) scaled so the
eyes are 60 px apart, on a 1280×720 frame, and the moving region around it that the pipeline
hands the detector. Each step runs `--rounds` times on one onnxruntime thread, pinned to one
core; the table gives the median CPU time of the calling thread (robust on a shared machine)
and the median wall time:

- detection: RetinaFace on the region, shrunk to the detector's input size as the pipeline
  does (the adapter: pad, run, decode, NMS), and the bare `session.run` of the same input;
- quality: pose from the landmarks and the sharpness of the aligned crop (numpy, OpenCV);
- alignment: the similarity transform and the warp to 150×150;
- embedding: the adapter (BGR→RGB, NCHW, run, normalise) and the bare `session.run`;
- matching against `--enrolled` people: `Watchlist.match` (one matrix product, best and next
  identity) and the bare `E @ q`;
- end to end: `FacePipeline.process` on the frame with that motion box, a watchlist of
  `--enrolled` people (a new track each round, so the embedding always runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One core: numpy's BLAS must not start threads of its own for the matching.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.video.face.config import FaceConfig  # noqa: E402
from edge.video.face.embedder import DEFAULT_MODEL, FaceEmbedder  # noqa: E402
from edge.video.face.pipeline import FacePipeline, WatchlistSource  # noqa: E402
from edge.video.face.quality import QualityConfig, judge  # noqa: E402
from edge.video.face.store import DEFAULT_LISTS, Enrolment  # noqa: E402
from edge.video.face.watchlist import Watchlist  # noqa: E402
from edge.video.motion import Box  # noqa: E402
from tests.face_scene import background, person  # noqa: E402


def timed(fn: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """(median thread CPU ms, median wall ms) of `fn`, after two warm-up calls."""
    fn()
    fn()
    cpu, wall = [], []
    for _ in range(rounds):
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        fn()
        cpu.append((time.thread_time_ns() - c0) / 1e6)
        wall.append((time.perf_counter_ns() - w0) / 1e6)
    return statistics.median(cpu), statistics.median(wall)


def enrolled(n: int, dimensions: int, rng: np.random.Generator) -> list[Enrolment]:
    vectors = rng.normal(size=(n, dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [Enrolment(id=str(i), person=f"P-{i:05d}", list="police", consent="bench",
                      entered_by="bench", entered_at="", until="", model=DEFAULT_MODEL, photos=[],
                      embeddings=[v.tolist()]) for i, v in enumerate(vectors)]


class FixedSource(WatchlistSource):
    def __init__(self, watchlist: Watchlist) -> None:
        super().__init__(None, 1.0, DEFAULT_MODEL)
        self._watchlist = watchlist


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--enrolled", type=int, default=10_000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rng = np.random.default_rng(0)
    frame = background(1280, 720)
    head = person("obama2", eye_px=60)
    y, x = (720 - head.shape[0]) // 2, 500
    frame[y:y + head.shape[0], x:x + head.shape[1]] = head
    motion = Box(x, y, x + head.shape[1], y + head.shape[0])

    config = FaceConfig()
    probe = FaceEmbedder(config.embedder)
    watchlist = Watchlist(enrolled(args.enrolled, probe.dimensions, rng), DEFAULT_LISTS,
                          DEFAULT_MODEL)
    pipeline = FacePipeline(config, FixedSource(watchlist), embedder=probe)
    pipeline.warm_up()
    region = pipeline.regions([motion], (1280, 720))
    assert region is not None
    x1, y1, x2, y2 = region
    shrink = min(1.0, config.detector.input_size / max(y2 - y1, x2 - x1))
    crop = np.ascontiguousarray(cv2.resize(frame[y1:y2, x1:x2], None, fx=shrink, fy=shrink,
                                           interpolation=cv2.INTER_LINEAR))
    detector, embedder = pipeline.detector, pipeline.embedder
    faces = detector.detect(crop)
    assert len(faces) == 1, "the bench face was not found"
    assert faces.landmarks is not None
    landmarks, confidence = faces.landmarks[0], float(faces.confidence[0])
    chip = embedder.align(crop, landmarks)
    quality = QualityConfig()
    assert judge(quality, confidence, landmarks, chip)[0] is None, "the bench face fails a gate"
    descriptor = embedder.embed([chip])[0]
    blob, _ = detector._prepare(crop)
    chip_blob = np.ascontiguousarray(chip[:, :, ::-1].astype(np.float32).transpose(2, 0, 1)[None])
    matrix = watchlist.matrix

    def end_to_end() -> None:
        pipeline.tracker.tracks.clear()  # a new face each round: embedded and matched
        pipeline.process(frame, [motion], t_ms=0)

    rows = [
        ("detection (RetinaFace on the region)", lambda: detector.detect(crop),
         lambda: detector.run(blob)),
        ("quality (pose, sharpness)", lambda: judge(quality, confidence, landmarks, chip), None),
        ("alignment (similarity, warp)", lambda: embedder.align(crop, landmarks), None),
        (f"embedding ({embedder.model})", lambda: embedder.embed([chip]),
         lambda: embedder.session.run(None, {embedder.input_name: chip_blob})),
        (f"matching against {args.enrolled:,} enrolled", lambda: watchlist.match(descriptor),
         lambda: matrix @ descriptor),
        ("end to end (FacePipeline.process)", end_to_end, None),
    ]
    region_w, region_h = x2 - x1, y2 - y1
    print(f"one face, eyes 60 px apart, region {region_w}x{region_h} of a 1280x720 frame; "
          f"detector input_size {FaceConfig().detector.input_size}; one thread, one core; "
          f"median of {args.rounds}")
    print()
    print("| step | ms per face (CPU) | wall | bare onnxruntime / numpy (CPU) | wall |")
    print("|---|---:|---:|---:|---:|")
    for name, ours, bare in rows:
        cpu, wall = timed(ours, args.rounds)
        if bare is None:
            print(f"| {name} | {cpu:.2f} | {wall:.2f} | | |")
        else:
            bcpu, bwall = timed(bare, args.rounds)
            print(f"| {name} | {cpu:.2f} | {wall:.2f} | {bcpu:.2f} | {bwall:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
