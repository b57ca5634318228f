"""高空抛物: the thrown-object detector on generated façade clips, against a baseline.

Clips: simulators/facade.py, 1280×720 at 25 fps, H.264 (libx264 veryfast, no B-frames, a
keyframe every 2 s, 1.8 Mbit/s: a camera's bit rate), day, dusk and rain, each with every
distractor (birds, leaves and paper, insects on the lens, light changes, window lights,
laundry, people and cars below, rain streaks in rain). Per condition: clips of 20 s with two
throws (objects of 3–30 px from random windows), one with two throws of 3–6 px (small objects
are rare in the uniform sizes), and clips of 60 s with distractors only. Seeds: measured on
100000 and up (`--seeds measure`, the default); the detector was tuned on seeds below 100000
(`--seeds tune`), never on these. From the base B (100000 or 0) and the condition's index c
(day 0, dusk 1, rain 2): throw clips B+1000c+i (i < 500), distractor-only clips B+1000c+500+i
(i < 300: up to 5 camera-hours), small-throw clips B+1000c+800+i; `--variant` cameras film the
throw clips' scenes (same seeds) otherwise. Clips are made once and kept in var/bench/throw/.

Both detectors see the same decoded frames in the same run:
- ours: the `Analyzer` of a `throw` camera (edge/video/analysis.py), as the worker and
  `shouwang video analyze` run it;
- baseline: what public projects do, plain frame differencing (threshold 25) in the same
  façade box, blobs linked frame to frame, an alarm when one moves downward for N = 5 frames in
  a row; its floor and column from its first point through the same calibration.

A throw is found when an alarm's first sighting falls between its launch and the moment it
left the frame; every other alarm is false. Reported: recall (all, objects of ≥ 4 px, of
3–4 px), false alarms per camera-hour (over all the video), floor exact and within ±1, column
exact (over found throws), delay from the object leaving the frame to the alarm (negative:
raised while it was still falling), and video seconds per CPU second (decode included, one
thread; 2.0 means one 720p25 camera on half a core).

    .venv/bin/python bench/throw.py            # 4 throw clips + 60 s of distractors per condition
    .venv/bin/python bench/throw.py --throw-clips 20 --quiet-clips 10   # a bigger set
    .venv/bin/python bench/throw.py --quick    # one clip of each kind per condition
    nice .venv/bin/python bench/throw.py --quiet-hours 1 --jobs 2 --progress \
        --variant fps15 --variant fps30 --variant 1080p --variant lowrate --variant noisy \
        --variant half        # a camera-hour of distinct distractors, and other cameras

Clips are kept in var/bench/throw/, and each clip's result in var/bench/throw/results/CODE/
(CODE: a hash of the detector's files and the baseline): a rerun measures only what this code
has not yet measured. Every false alarm and missed throw is printed (clip, time) on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.video.analysis import Analyzer, luma  # noqa: E402
from edge.video.config import CameraConfig  # noqa: E402
from edge.video.throw.calibration import Facade  # noqa: E402
from simulators.facade import MEASURING_SEEDS_FROM, Scene, write_clip  # noqa: E402

CONDITIONS = ("day", "dusk", "rain")
CACHE = ROOT / "var" / "bench" / "throw"
cv2.setNumThreads(1)


@dataclass
class Alarm:
    first_ms: int
    raised_ms: int
    floor: int | None
    column: int | None
    track: list[list[float]] | None = None  # ours: the event's [t_ms, x, y] sightings


@dataclass
class Result:
    alarms: list[Alarm] = field(default_factory=list)
    cpu_s: float = 0.0


class Baseline:
    """Frame differencing + "moving downward for N frames" (the public projects' rule)."""

    def __init__(self, facade: Facade, width: int, height: int, n: int = 5) -> None:
        self.facade = facade
        self.box = facade.bounds(width, height, grow=24)
        self.n = n
        self.prev: np.ndarray | None = None
        self.tracks: list[dict[str, Any]] = []

    def update(self, y: np.ndarray, t_ms: int) -> list[Alarm]:
        x1, y1, x2, y2 = self.box
        crop = np.ascontiguousarray(y[y1:y2, x1:x2])
        prev, self.prev = self.prev, crop
        if prev is None:
            return []
        diff = cv2.threshold(cv2.absdiff(crop, prev), 25, 255, cv2.THRESH_BINARY)[1]
        diff = cv2.dilate(diff, np.ones((3, 3), np.uint8))
        _n, _, stats, cents = cv2.connectedComponentsWithStats(diff)
        points = [(float(cx) + x1, float(cy) + y1) for (cx, cy), a in
                  zip(cents[1:], stats[1:, cv2.CC_STAT_AREA], strict=True) if 2 <= a <= 2500]
        alarms = []
        used = set()
        for track in self.tracks:
            lx, ly = track["pts"][-1][1:]
            best, dist = None, 60.0
            for j, (px, py) in enumerate(points):
                d = math.hypot(px - lx, py - ly)
                if j not in used and d < dist:
                    best, dist = j, d
            if best is None:
                track["missed"] = True
                continue
            used.add(best)
            px, py = points[best]
            track["down"] = track["down"] + 1 if py > ly + 0.5 else 0
            track["pts"].append((t_ms, px, py))
            track["missed"] = False
            if track["down"] >= self.n and not track["alarmed"]:
                track["alarmed"] = True
                t0, fx, fy = track["pts"][0]
                u, v = self.facade.facade_points(np.array([[fx, fy]]))[0]
                inside = self.facade.contains(u, v)
                alarms.append(Alarm(t0, t_ms, self.facade.floor_of(v) if inside else None,
                                    self.facade.column_of(u) if inside else None))
        self.tracks = [t for t in self.tracks if not t["missed"]]
        for j, (px, py) in enumerate(points):
            if j not in used and len(self.tracks) < 500:
                self.tracks.append({"pts": [(t_ms, px, py)], "down": 0, "missed": False,
                                    "alarmed": False})
        return alarms


VARIANTS: dict[str, dict[str, Any]] = {
    # name: Scene arguments and the encoder's bit rate (kbit/s)
    "plain": {},
    "fps15": {"fps": 15},
    "fps30": {"fps": 30},
    "1080p": {"width": 1920, "height": 1080, "kbps": 4000},
    "lowrate": {"kbps": 600},
    "noisy": {"noise": 3.0},
    "half": {"distance": 0.5},
}


@dataclass(frozen=True)
class Clip:
    seed: int
    condition: str
    throws: int
    seconds: float
    sizes: tuple[float, float] = (3.0, 30.0)
    variant: str = "plain"

    @property
    def name(self) -> str:
        small = "" if self.sizes == (3.0, 30.0) else f"-{self.sizes[0]:g}to{self.sizes[1]:g}px"
        variant = "" if self.variant == "plain" else f"-{self.variant}"
        return (f"facade-{self.condition}-seed{self.seed}-throws{self.throws}-"
                f"{self.seconds:g}s{small}{variant}")

    def path(self) -> Path:
        """The clip, rendered and encoded the first time it is asked for."""
        path = CACHE / f"{self.name}.mp4"
        if not path.exists():
            args = dict(VARIANTS[self.variant])
            kbps = args.pop("kbps", 1800)
            scene = Scene(self.seed, self.condition,  # type: ignore[arg-type]
                          seconds=self.seconds, throws=self.throws, sizes=self.sizes, **args)
            write_clip(scene, path, kbps)
        return path


def run(path: Path) -> tuple[Result, Result, float, float]:
    """Ours and the baseline over one clip; decode CPU seconds; video seconds."""
    truth = json.loads(path.with_suffix(".json").read_text())
    camera = CameraConfig.model_validate(truth["camera"])
    ours, base = Result(), Result()
    analyzer = Analyzer(camera)
    assert camera.facade is not None
    baseline = Baseline(Facade(camera.facade), truth["width"], truth["height"])
    decode_s = 0.0
    first: float | None = None
    t_ms = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        stream.codec_context.thread_count = 1
        frames = container.decode(stream)
        while True:
            c0 = time.process_time()
            try:
                frame = next(frames)
            except StopIteration:
                break
            decode_s += time.process_time() - c0
            first = frame.time if first is None else first
            t_ms = round((frame.time - first) * 1000)
            c0 = time.process_time()
            for event in analyzer.analyse(frame, t_ms).events:
                if event.type == "thrown_object":
                    ours.alarms.append(Alarm(event.t_ms, t_ms, event.fields["floor"],
                                             event.fields["column"], event.fields["track"]))
            c1 = time.process_time()
            base.alarms.extend(baseline.update(luma(frame), t_ms))
            c2 = time.process_time()
            ours.cpu_s += c1 - c0
            base.cpu_s += c2 - c1
    return ours, base, decode_s, t_ms / 1000


def code_hash() -> str:
    """What the detector's results depend on: its code and the analyzer that feeds it (a
    result cached under another hash is measured again)."""
    h = hashlib.sha256()
    for rel in ("edge/video/throw/detector.py", "edge/video/throw/calibration.py",
                "edge/video/analysis.py", "edge/video/config.py"):
        h.update((ROOT / rel).read_bytes())
    h.update(inspect.getsource(Baseline).encode())
    return h.hexdigest()[:12]


def measure(clip: Clip, code: str) -> dict[str, Any]:
    """One clip through both detectors, from the result cache when this code has done it."""
    cached = CACHE / "results" / code / f"{clip.name}.json"
    if cached.exists():
        return {**json.loads(cached.read_text()), "cached": True}
    path = clip.path()
    ours, base, decode_s, video_s = run(path)
    out = {"truth": json.loads(path.with_suffix(".json").read_text()),
           "ours": asdict(ours), "base": asdict(base), "decode_s": decode_s,
           "video_s": video_s}
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial")
    partial.write_text(json.dumps(out))
    partial.replace(cached)
    return {**out, "cached": False}


def result(d: dict[str, Any]) -> Result:
    return Result([Alarm(**a) for a in d["alarms"]], d["cpu_s"])


@dataclass
class Score:
    throws: list[dict[str, Any]] = field(default_factory=list)  # truth + found alarm
    false_alarms: int = 0
    video_s: float = 0.0
    cpu_s: float = 0.0

    def add(self, truth: dict[str, Any], result: Result, decode_s: float, video_s: float) -> None:
        self.video_s += video_s
        self.cpu_s += result.cpu_s + decode_s
        left = list(result.alarms)
        for throw in truth["throws"]:
            hit = next((a for a in left
                        if throw["t_launch_ms"] - 200 <= a.first_ms <= throw["t_exit_ms"]), None)
            if hit is not None:
                left.remove(hit)
            self.throws.append({**throw, "alarm": hit})
        self.false_alarms += len(left)

    def row(self) -> dict[str, str]:
        def ratio(part: list[Any], whole: list[Any]) -> str:
            return f"{len(part) / len(whole):.2f} ({len(part)}/{len(whole)})" if whole else "-"
        big = [t for t in self.throws if t["size_px"] >= 4]
        small = [t for t in self.throws if t["size_px"] < 4]
        found = [t for t in self.throws if t["alarm"]]
        located = [t for t in found if t["alarm"].floor is not None]
        exact = [t for t in located if t["alarm"].floor == t["floor"]]
        near = [t for t in located if abs(t["alarm"].floor - t["floor"]) <= 1]
        column = [t for t in located if t["alarm"].column == t["column"]]
        delays = [(t["alarm"].raised_ms - t["t_exit_ms"]) / 1000 for t in found]
        hours = self.video_s / 3600
        return {
            "recall": ratio(found, self.throws),
            "recall ≥4px": ratio([t for t in big if t["alarm"]], big),
            "recall 3–4px": ratio([t for t in small if t["alarm"]], small),
            "false/cam-h": f"{self.false_alarms / hours:.1f} ({self.false_alarms} in "
                           f"{self.video_s / 60:.0f} min)" if hours else "-",
            "floor exact": ratio(exact, found),
            "floor ±1": ratio(near, found),
            "column exact": ratio(column, found),
            "delay median/max s": (f"{statistics.median(delays):+.2f} / {max(delays):+.2f}"
                                   if delays else "-"),
            "video s / CPU s": f"{self.video_s / self.cpu_s:.2f}" if self.cpu_s else "-",
        }


def table(rows: dict[str, dict[str, str]]) -> str:
    keys = list(next(iter(rows.values())))
    lines = ["| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(r[k] for k in keys) + " |" for name, r in rows.items()]
    return "\n".join(lines)


def plan(a: argparse.Namespace) -> list[tuple[str, Clip]]:
    """(row, clip) for this run. Seeds, from `base` (100000 measuring, 0 tuning), per condition
    index c (day 0, dusk 1, rain 2): throws base+1000c+i (i < 500), distractors only
    base+1000c+500+i (i < 300), small throws base+1000c+800+i; variants reuse the throw seeds
    (the same scene through another camera)."""
    n_throw = a.throw_clips if a.throw_clips is not None else (1 if a.quick else 4)
    n_quiet = a.quiet_clips if a.quiet_clips is not None else 1
    if a.quiet_hours is not None:
        n_quiet = math.ceil(a.quiet_hours * 60 / len(CONDITIONS))
    n_small = a.small_clips if a.small_clips is not None else (0 if a.quick else 1)
    if n_quiet > 300 or n_throw > 500:
        raise SystemExit("at most 300 quiet clips (5 camera-hours) and 500 throw clips a "
                         "condition: the seed ranges would overlap")
    base_seed = MEASURING_SEEDS_FROM if a.seeds == "measure" else 0
    wide, tiny = (3.0, 30.0), (3.0, 6.0)
    out: list[tuple[str, Clip]] = []
    seeds = {c: base_seed + 1000 * ci for ci, c in enumerate(CONDITIONS)}
    for c, seed in seeds.items():
        out += [(c, Clip(seed + i, c, 2, 20.0, wide)) for i in range(n_throw)]
        out += [(c, Clip(seed + 800 + i, c, 2, 20.0, tiny)) for i in range(n_small)]
    # Conditions in turn, so that a run cut short has measured each as much.
    out += [(c, Clip(seeds[c] + 500 + i, c, 0, 60.0, wide)) for i in range(n_quiet)
            for c in reversed(CONDITIONS)]
    for variant in a.variant:
        out += [(variant, Clip(seed + i, c, 2, 20.0, wide, variant)) for c, seed in seeds.items()
                for i in range(a.variant_clips)]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one clip of each kind per condition")
    p.add_argument("--seeds", choices=["measure", "tune"], default="measure",
                   help="measure: seeds from 100000 (never tuned on); tune: seeds from 0")
    p.add_argument("--throw-clips", type=int, default=None,
                   help="clips with 2 throws per condition (default 4, quick 1)")
    p.add_argument("--quiet-clips", type=int, default=None,
                   help="distractor-only clips of 60 s per condition (default 1, quick 1)")
    p.add_argument("--quiet-hours", type=float, default=None,
                   help="camera-hours of distinct distractor-only clips (60 s each, split "
                        "evenly over day, dusk and rain); overrides --quiet-clips")
    p.add_argument("--small-clips", type=int, default=None,
                   help="clips with 2 throws of 3-6 px per condition (default 1, quick 0)")
    p.add_argument("--variant", action="append", default=[],
                   choices=sorted(v for v in VARIANTS if v != "plain"),
                   help="also run the throw clips through this camera (repeatable): "
                   "fps15, fps30, 1080p (4 Mbit/s), lowrate (0.6 Mbit/s), noisy (sensor noise "
                   "x3), half (the camera at half the distance, tilted up more)")
    p.add_argument("--variant-clips", type=int, default=1,
                   help="throw clips per condition and variant (default 1: 6 throws)")
    p.add_argument("--jobs", type=int, default=1, help="clips measured in parallel processes")
    p.add_argument("--progress", action="store_true", help="a line per clip on stderr")
    p.add_argument("--verbose", action="store_true", help="one line per throw")
    p.add_argument("--make-only", action="store_true",
                   help="only render and encode the clips (they do not depend on the detector)")
    p.add_argument("--cached-only", action="store_true",
                   help="the table of the clips this code has already measured, no others "
                   "(a run cut short: say how much video it covers)")
    a = p.parse_args(argv)
    todo = plan(a)
    code = code_hash()
    if a.cached_only:
        todo = [(row, clip) for row, clip in todo
                if (CACHE / "results" / code / f"{clip.name}.json").exists()]
    if a.make_only:
        with ProcessPoolExecutor(max(1, a.jobs)) as pool:
            futures = {pool.submit(Clip.path, clip): clip for _, clip in todo}
            for k, future in enumerate(as_completed(futures), 1):
                future.result()
                if a.progress:
                    print(f"[{k}/{len(todo)}] {futures[future].name}", file=sys.stderr)
        return 0
    ours: dict[str, Score] = {}
    base: dict[str, Score] = {}
    started = time.monotonic()
    print(f"{len(todo)} clips, code {code}, results cached in "
          f"{CACHE.relative_to(ROOT)}/results/{code}/", file=sys.stderr)
    with ProcessPoolExecutor(max(1, a.jobs)) as pool:
        futures = {pool.submit(measure, clip, code): (row, clip) for row, clip in todo}
        for k, future in enumerate(as_completed(futures), 1):
            row, clip = futures[future]
            out = future.result()
            truth = out["truth"]
            r_ours, r_base = result(out["ours"]), result(out["base"])
            ours.setdefault(row, Score()).add(truth, r_ours, out["decode_s"], out["video_s"])
            base.setdefault(row, Score()).add(truth, r_base, out["decode_s"], out["video_s"])
            if a.progress:
                spent = time.monotonic() - started
                print(f"[{k}/{len(todo)} {spent / 60:.1f} min] {clip.name}: ours "
                      f"{len(r_ours.alarms)} alarms, baseline {len(r_base.alarms)}"
                      f"{' (cached)' if out['cached'] else ''}", file=sys.stderr)
            for t in truth["throws"]:
                if a.verbose:
                    print(f"  {clip.name}: floor {t['floor']} col {t['column']} "
                          f"{t['size_px']} px, launch {t['t_launch_ms']} ms", file=sys.stderr)
            found = Score()
            found.add(truth, r_ours, 0, 0)
            hits = [t["alarm"] for t in found.throws if t["alarm"]]
            for al in r_ours.alarms:
                if a.verbose or al not in hits:
                    kind = "found" if al in hits else "FALSE ALARM"
                    print(f"    ours {kind}: {clip.name} first {al.first_ms} ms, raised "
                          f"{al.raised_ms} ms, floor {al.floor} column {al.column}",
                          file=sys.stderr)
            for th in found.throws:
                if not th["alarm"]:
                    print(f"    ours MISSED: {clip.name} floor {th['floor']} "
                          f"{th['size_px']} px launch {th['t_launch_ms']} ms", file=sys.stderr)
    rows: dict[str, dict[str, str]] = {}
    for name, scores in (("ours", ours), ("baseline", base)):
        total = Score()
        for condition in CONDITIONS:
            s = scores.get(condition, Score())
            rows[f"{name}, {condition}"] = s.row()
            total.throws += s.throws
            total.false_alarms += s.false_alarms
            total.video_s += s.video_s
            total.cpu_s += s.cpu_s
        rows[f"**{name}, all**"] = total.row()
        for variant in a.variant:
            rows[f"{name}, {variant}"] = scores.get(variant, Score()).row()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
