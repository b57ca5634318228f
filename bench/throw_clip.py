"""高空抛物: what drawing the track on a thrown object's evidence clip costs the gateway.

A clip is normally the camera's packets remuxed (no decoding, no encoding). The marked clip
(edge/video/worker.py `_write_marked_clip`) decodes them, draws the track and the candidate
windows on every frame (edge/video/throw/evidence.py `mark`) and encodes again with libx264
ultrafast, on the worker's clip thread, after the remuxed clip is kept. This measures both on a
generated façade clip (simulators/facade.py, 1280×720 at 25 fps, 1.8 Mbit/s, a tuning seed)
of `pre_s + post_s` seconds (5 + 10 by default), with the real detector's event on it.

    .venv/bin/python bench/throw_clip.py [--seconds 15] [--rounds 3]

Prints CPU seconds (process time: every thread the encoder starts) and wall seconds per clip,
median of the rounds, and the sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.video.analysis import Analyzer
from edge.video.config import CameraConfig
from edge.video.recorder import write_clip
from edge.video.throw.calibration import Facade
from edge.video.throw.evidence import mark
from simulators.facade import Scene
from simulators.facade import write_clip as render


def _mark_at(image: Any, t_s: float | None, *, fields: dict[str, Any], facade: Facade,
             first_s: float) -> Any:
    """The track as far as seen by this frame (the analyser's times start at the first)."""
    return mark(image, fields, facade, None if t_s is None else (t_s - first_s) * 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "facade.mp4"
        render(Scene(args.seed, "day", seconds=args.seconds, throws=1), source)
        camera = CameraConfig.model_validate(
            json.loads(source.with_suffix(".json").read_text())["camera"])
        assert camera.facade is not None
        facade = Facade(camera.facade)
        fields = None
        analyzer = Analyzer(camera)
        with av.open(str(source)) as container:
            stream = container.streams.video[0]
            packets, first = [], None
            for packet in container.demux(stream):
                if packet.dts is None and packet.pts is None:
                    continue
                packets.append(packet)
                for frame in packet.decode():
                    first = frame.time if first is None else first
                    for e in analyzer.analyse(frame, round((frame.time - first) * 1000)).events:
                        if e.type == "thrown_object" and fields is None:
                            fields = dict(e.fields)
            if fields is None:
                print("no throw found", file=sys.stderr)
                return 1
            times: dict[str, list[tuple[float, float]]] = {"remux": [], "marked": []}
            sizes = {}
            for _ in range(args.rounds):
                for name in times:
                    out = Path(tmp) / f"{name}.mp4"
                    cpu, wall = time.process_time(), time.perf_counter()
                    draw = partial(_mark_at, fields=fields, facade=facade,
                                   first_s=first or 0.0) if name == "marked" else None
                    write_clip(out, stream, packets, (), draw)
                    times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
                    sizes[name] = out.stat().st_size
    frames = len(packets)
    print(f"clip: {args.seconds:g} s, {frames} frames, 1280x720 H.264")
    for name, runs in times.items():
        cpu = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        print(f"{name:7s} CPU {cpu:6.2f} s ({1000 * cpu / frames:5.1f} ms/frame)  "
              f"wall {wall:6.2f} s  size {sizes[name] / 1e6:5.2f} MB  "
              f"CPU s per clip s {cpu / args.seconds:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
