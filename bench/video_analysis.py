"""Cost of motion gating and camera health per frame, against what a camera costs anyway.

Frames: a 25 fps clip at 720p and at 1080p made from real photos (scikit-image's astronaut and
coffee cup), with sensor noise and a person-sized block walking across, encoded with libx264
(veryfast, CRF 23, a key frame every 2 s) in memory. All times are CPU time of this process
(`time.process_time`), median of `--rounds`, on one thread (OpenCV and onnxruntime limited to
one), so a figure is what one camera's worker costs one core.

Table 1, microseconds per analysed frame, the analysers given the full-size grey frame (the Y
plane PyAV decodes into, which costs nothing to take). Baseline in the same run: the bare
`cv2.cvtColor` BGR→grey plus `cv2.resize` to 640 wide that any analysis of a BGR frame pays.

Table 2, the issue's budget: decode-only of the same H.264 clip with PyAV (one thread) against
decode plus, at the `detect` rate (every 5th frame of 25 fps), shrinking the Y plane to the
640-wide detect frame and motion and health on it, in CPU ms per second of video per camera.
Target: health and motion add at most 15 %. (Skipped with a note when PyAV is not installed;
the camera workers bring it.)

Table 3: the RetinaFace detector (one onnxruntime thread) per call, for the model card.

    .venv/bin/python bench/video_analysis.py --seconds 8 --rounds 5
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import skimage.data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.video.detectors.registry import create  # noqa: E402
from edge.video.frames import shrink  # noqa: E402
from edge.video.health import CameraHealth  # noqa: E402
from edge.video.motion import MotionDetector  # noqa: E402

FPS = 25
DETECT_EVERY = 5  # detect at 5 fps
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def scene(width: int, height: int, n: int) -> list[np.ndarray]:
    """n BGR frames: a still view with noise and a block walking across it."""
    astronaut = cv2.resize(skimage.data.astronaut(), (400, 400), interpolation=cv2.INTER_AREA)
    coffee = cv2.resize(skimage.data.coffee(), (600, 400), interpolation=cv2.INTER_AREA)
    view = cv2.cvtColor(np.hstack([astronaut, coffee[:, :312]]), cv2.COLOR_RGB2BGR)
    view = cv2.resize(view, (width, height), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 3, (16, height, width, 3)).astype(np.int16)
    frames = []
    bw, bh = width // 16, height // 4
    for i in range(n):
        f = view.copy()
        x = int((i * width / n) % (width - bw))
        f[height // 2 : height // 2 + bh, x : x + bw] = (60, 70, 200)
        shifted = np.roll(noise[i % 16], i * 7, axis=(0, 1))  # fresh noise in every frame
        frames.append(np.clip(f.astype(np.int16) + shifted, 0, 255).astype(np.uint8))
    return frames


def encode(frames: list[np.ndarray]) -> bytes:
    import av  # the camera workers' dependency; only table 2 needs it

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        # A camera's bit rate (about 2 Mbit/s at 720p, 4.5 at 1080p): decoding cost follows it.
        stream.bit_rate = 2_000_000 * stream.width * stream.height // (1280 * 720)
        stream.options = {"preset": "veryfast", "g": str(2 * FPS)}
        stream.codec_context.time_base = Fraction(1, FPS)
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def cpu(fn: Callable[[], None], rounds: int) -> tuple[float, float, float]:
    """Median, min and max CPU seconds of fn over rounds."""
    times = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times), min(times), max(times)


def per_frame_table(seconds: float, rounds: int) -> None:
    n = int(seconds * FPS / DETECT_EVERY)  # the frames a camera analyses in that time
    print(f"\nTable 1: CPU µs per analysed frame, one thread, median of {rounds} "
          f"({n} frames each)\n")
    print("| step | " + " | ".join(SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    results: dict[str, list[str]] = {}
    for w, h in SIZES.values():
        bgr = scene(w, h, n)
        grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in bgr]

        def baseline(bgr: list[np.ndarray] = bgr, w: int = w, h: int = h) -> None:
            for f in bgr:
                cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (640, 640 * h // w),
                           interpolation=cv2.INTER_AREA)

        def motion(grey: list[np.ndarray] = grey, w: int = w, h: int = h) -> None:
            m = MotionDetector(w, h)
            for f in grey:
                m.detect(f)

        def health(grey: list[np.ndarray] = grey) -> None:
            hc = CameraHealth()
            for i, f in enumerate(grey):
                hc.update(f, i * 200)

        def both(grey: list[np.ndarray] = grey, w: int = w, h: int = h) -> None:
            m, hc = MotionDetector(w, h), CameraHealth()
            for i, f in enumerate(grey):
                m.detect(f)
                hc.update(f, i * 200)

        def detect_frame(grey: list[np.ndarray] = grey, w: int = w, h: int = h) -> None:
            for f in grey:
                shrink(f, (640, 640 * h // w))

        def both_small(grey: list[np.ndarray] = grey, w: int = w, h: int = h) -> None:
            m, hc = MotionDetector(w, h), CameraHealth()
            for i, f in enumerate(grey):
                small = shrink(f, (640, 640 * h // w))
                m.detect(small)
                hc.update(small, i * 200)

        for name, fn in [
            ("baseline: cvtColor BGR→grey + resize to 640 wide", baseline),
            ("motion (`MotionDetector.detect`, full grey frame in)", motion),
            ("health (`CameraHealth.update`, full grey frame in, judged 1/s)", health),
            ("motion + health, full grey frame in", both),
            ("`shrink` grey to the 640-wide detect frame", detect_frame),
            ("shrink to 640 wide, then motion + health on it", both_small),
        ]:
            med, lo, hi = cpu(fn, rounds)
            results.setdefault(name, []).append(
                f"{med / n * 1e6:,.0f} ({lo / n * 1e6:,.0f}–{hi / n * 1e6:,.0f})"
            )
    for name, cells in results.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


def budget_table(seconds: float, rounds: int) -> None:
    try:
        import av
    except ImportError:
        print("\nTable 2 skipped: PyAV is not installed (the camera workers add it).")
        return
    print(f"\nTable 2: CPU ms per second of 25 fps video per camera, PyAV one thread, "
          f"analysis every {DETECT_EVERY}th frame, median of {rounds} rounds in rotation "
          "(added: median and range of the rounds)\n")
    print("| stream | bit rate | decode only | decode + shrink + motion + health | added |")
    print("|---|---|---|---|---|")
    for label, (w, h) in SIZES.items():
        clip = encode(scene(w, h, int(seconds * FPS)))

        def run(analyse: bool, clip: bytes = clip, w: int = w, h: int = h) -> None:
            m, hc = MotionDetector(w, h), CameraHealth()
            with av.open(io.BytesIO(clip)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "NONE"
                stream.codec_context.thread_count = 1
                for i, frame in enumerate(container.decode(stream)):
                    if analyse and i % DETECT_EVERY == 0:
                        plane = frame.planes[0]
                        y = np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)[:, :w]
                        small = shrink(y, (640, 640 * h // w))
                        m.detect(small)
                        hc.update(small, i * 1000 // FPS)

        # In rotation, so a neighbour's load on this shared machine hits both alike; the added
        # share is taken per round (each analysis run against the decode run beside it).
        decodes, fulls, added = [], [], []
        for _ in range(rounds):
            decode = cpu(lambda run=run: run(False), 1)[0]
            full = cpu(lambda run=run: run(True), 1)[0]
            decodes.append(decode)
            fulls.append(full)
            added.append((full - decode) / decode * 100)
        kbits = len(clip) * 8 / seconds / 1000
        print(f"| {label}25 | {kbits:,.0f} kbit/s | "
              f"{statistics.median(decodes) / seconds * 1e3:.1f} | "
              f"{statistics.median(fulls) / seconds * 1e3:.1f} | "
              f"{statistics.median(added):+.1f} % ({min(added):+.1f} to {max(added):+.1f}) |")


def detector_table(rounds: int) -> None:
    print("\nTable 3: RetinaFace mnet0.25, CPU ms per call (one onnxruntime thread), median of "
          f"{rounds}×20 calls on a 1280×720 frame\n")
    print("| input_size | ms per call |")
    print("|---|---|")
    frame = scene(1280, 720, 1)[0]
    for size in (320, 640):
        d = create({"type": "retinaface", "input_size": size, "threads": 1})
        d.warm_up()
        med, lo, hi = cpu(lambda d=d: [d.detect(frame) for _ in range(20)], rounds)
        print(f"| {size} | {med / 20 * 1e3:.1f} ({lo / 20 * 1e3:.1f}–{hi / 20 * 1e3:.1f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of 25 fps video")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    per_frame_table(args.seconds, args.rounds)
    budget_table(args.seconds, args.rounds)
    detector_table(args.rounds)


if __name__ == "__main__":
    main()
