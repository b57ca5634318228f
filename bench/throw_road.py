"""Bench: distractors only, through the whole road, must raise no thrown_object alert.

    .venv/bin/python bench/throw_road.py --minutes 10 --condition rain

A generated façade clip with every distractor and no throw (simulators/facade.py: birds,
leaves, paper, insects at the lens, light steps, windows lighting up, laundry, people and cars
below, rain streaks; a measuring seed, never tuned on) is played by the RTSP simulator in a
loop, watched by the edge daemon as deployed (its camera worker process, the edge broker,
rules, outbox, uplink) and the cloud. After `--minutes` of video have been sent it counts what
came out: `thrown_object` events on the edge broker and alerts on the cloud broker (expected:
none), and the camera's other events (tamper, for the record). Not part of `make test`: it runs
in real time (the RTSP server paces the clip at 25 fps).

The clip is `--clip-s` long and loops: 10 minutes of a 60 s clip is the same minute ten times
through the live decoder and tracker (whose state carries across loops), not ten different
minutes; `bench/throw.py --quiet-clips N` measures distinct footage offline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from camera_alert import Heard  # type: ignore[import-not-found]  # noqa: E402
from harness import System  # type: ignore[import-not-found]  # noqa: E402

from simulators.camera import CameraSimulator, CameraSpec  # noqa: E402
from simulators.facade import MEASURING_SEEDS_FROM, Scene, write_clip  # noqa: E402

CAMERA = "cam-facade-bench"
SITE = "bench-site"
FPS = 25


def clip(condition: str, seconds: float, seed: int) -> Path:
    path = (Path(tempfile.gettempdir()) / "shouwang-bench-clips"
            / f"facade-quiet-{condition}-seed{seed}-{seconds:g}s.mp4")
    if not path.exists():
        write_clip(Scene(seed, condition, seconds=seconds, throws=0), path)  # type: ignore[arg-type]
    return path


async def run(args: argparse.Namespace) -> int:
    path = clip(args.condition, args.clip_s, args.seed)
    truth = json.loads(path.with_suffix(".json").read_text())
    assert truth["throws"] == [], truth["throws"]
    sim = CameraSimulator([CameraSpec(id=CAMERA, kind="file", file=path)])
    sim.start()
    system = System([], edge_extra={"cameras": [{
        **truth["camera"], "id": CAMERA, "url": sim.url(CAMERA),
        "location": "bench/street/community/tower",
    }]})
    edge = cloud = None
    frames = args.minutes * 60 * FPS
    try:
        system.start()
        edge = Heard(system.edge_broker, f"dev/{CAMERA}/#", "edge")
        cloud = Heard(system.cloud_broker, f"site/{SITE}/up/alert", "cloud")
        load0 = os.getloadavg()[0]
        started = time.monotonic()
        deadline = started + args.minutes * 60 * 2 + 120
        while sim.frames_sent(CAMERA) < frames:
            if time.monotonic() > deadline:
                print(f"bench: only {sim.frames_sent(CAMERA)} of {frames} frames sent",
                      file=sys.stderr)
                return 1
            await asyncio.sleep(5)
        await asyncio.sleep(10)  # what the last frames gave reaches the cloud
        wall = time.monotonic() - started
        load1 = os.getloadavg()[0]
        heard = [e for _, e in edge.heard()]
        events = [e for e in heard if e.get("kind") == "event"]
        alerts = [e for _, e in cloud.heard()]
        telemetry = [e for e in heard if e.get("kind") == "telemetry"]
    finally:
        for heard in (edge, cloud):
            if heard is not None:
                heard.close()
        system.stop()
        sim.stop()
    kinds: dict[str, int] = {}
    for e in events:
        name = e["body"].get("event", "?")
        if name == "tamper":
            name = f"tamper ({e['body'].get('cause')})"
        kinds[name] = kinds.get(name, 0) + 1
    thrown_events = kinds.get("thrown_object", 0)
    thrown_alerts = sum(1 for a in alerts if a["body"].get("type") == "thrown_object")
    fps = [t["body"]["fps"] for t in telemetry if "fps" in t["body"]]
    print(f"\nDistractors only through RTSP → camera worker → edge → cloud: "
          f"{args.condition}, seed {args.seed}, a {args.clip_s:g} s clip looped, "
          f"{frames / FPS / 60:.0f} min of video sent in {wall / 60:.1f} min "
          f"({os.cpu_count()} cores; load {load0:.2f} → {load1:.2f})\n")
    print("| what | count | expected |")
    print("|---|---|---|")
    print(f"| thrown_object events on the edge broker | {thrown_events} | 0 |")
    print(f"| thrown_object alerts on the cloud broker | {thrown_alerts} | 0 |")
    for name, n in sorted(kinds.items()):
        if name != "thrown_object":
            print(f"| other camera events: {name} | {n} | |")
    if fps:
        print(f"| worker's decoded fps (telemetry), min / last | {min(fps):.1f} / {fps[-1]:.1f}"
              f" | {FPS} |")
    ok = thrown_events == 0 and thrown_alerts == 0
    print(f"\n{'PASS' if ok else 'FAIL'}: {'no' if ok else 'a'} thrown_object alert from "
          f"distractors")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of video to send")
    p.add_argument("--condition", choices=["day", "dusk", "rain"], default="rain")
    p.add_argument("--clip-s", type=float, default=60.0, help="length of the looped clip")
    p.add_argument("--seed", type=int, default=MEASURING_SEEDS_FROM + 7500,
                   help="façade seed (measuring seeds: 100000 and up)")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
