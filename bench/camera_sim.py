"""Bench: CPU of the camera simulator per served camera, against GStreamer looping the same file.

Usage: .venv/bin/python bench/camera_sim.py --cameras 4 --seconds 20

N file cameras at 720p25 and then at 1080p25, each watched by one client that receives the
stream over RTSP/TCP without decoding it (PyAV demux only, threads of this process), so the
CPU figure is the server process's alone (user + system, psutil). Baseline in the same run:
GStreamer's own loop of the same clip (`multifilesrc loop=true ! h264parse ! rtph264pay`,
no Python per frame) on an RTSP server of its own. Then, for scale: scene cameras (a drawn
scene encoded live with x264) and a file camera showing a picture fault (decode → effect →
encode while it lasts).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulators.camera import (  # noqa: E402
    GST_PYTHON,
    CameraSimulator,
    CameraSpec,
    make_clip,
)

# The baseline server, run by Debian's python3: the clip as raw H.264, looped by GStreamer.
BASELINE = r"""
import json, sys
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
Gst.init(None)
clip, raw, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
convert = Gst.parse_launch(
    f'filesrc location="{clip}" ! qtdemux ! h264parse ! '
    f'video/x-h264,stream-format=byte-stream ! filesink location="{raw}"')
convert.set_state(Gst.State.PLAYING)
convert.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
convert.set_state(Gst.State.NULL)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1"); server.set_service("0")
for i in range(count):
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f'( multifilesrc location="{raw}" loop=true '
        'caps="video/x-h264,stream-format=byte-stream,framerate=25/1" '
        '! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )')
    factory.set_shared(True)
    server.get_mount_points().add_factory(f"/b{i}", factory)
server.attach(None)
loop = GLib.MainLoop()
GLib.io_add_watch(0, GLib.IO_IN | GLib.IO_HUP, lambda *a: loop.quit())
print(json.dumps({"port": server.get_bound_port()}), flush=True)
loop.run()
"""


class Clients:
    """One receiving client per URL on a thread: counts packets, decodes nothing."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.counts = [0] * len(urls)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(len(urls))
        ]

    def _run(self, i: int) -> None:
        try:
            container = av.open(self.urls[i], options={"rtsp_transport": "tcp"},
                                timeout=(30, 10))
        except av.error.FFmpegError as err:
            self.errors.append(f"{self.urls[i]}: {err}")
            return
        try:
            for _packet in container.demux(video=0):
                self.counts[i] += 1
                if self._stop.is_set():
                    break
        except av.error.FFmpegError as err:
            self.errors.append(f"{self.urls[i]}: {err}")
        finally:
            container.close()

    def __enter__(self) -> Clients:
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + 60
        while min(self.counts) < 25:  # every stream flowing (a second of frames)
            if self.errors or time.monotonic() > deadline:
                raise SystemExit(f"clients did not get frames: {self.errors or self.counts}")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(20)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Row:
    what: str
    cameras: int
    fps: float  # frames received per second per camera (-: nobody watches)
    cpu_pct: float  # of one core, the whole server process

    def line(self) -> str:
        fps = f"{self.fps:.1f}" if self.fps >= 0 else "-"
        return (f"| {self.what} | {self.cameras} | {fps} | {self.cpu_pct:.1f} | "
                f"{self.cpu_pct / self.cameras:.2f} |")


def measure(what: str, pid: int, cameras: int, clients: Clients | None, seconds: float) -> Row:
    proc = psutil.Process(pid)
    time.sleep(2)  # let start-up settle
    cpu0, t0 = cpu_seconds(proc), time.monotonic()
    counts0 = list(clients.counts) if clients else []
    time.sleep(seconds)
    cpu1, t1 = cpu_seconds(proc), time.monotonic()
    wall = t1 - t0
    fps = -1.0
    if clients:
        fps = sum(c - c0 for c, c0 in zip(clients.counts, counts0, strict=True)) / cameras / wall
    row = Row(what, cameras, fps, 100 * (cpu1 - cpu0) / wall)
    print(row.line(), flush=True)
    return row


def simulator_rows(what: str, specs: list[CameraSpec], seconds: float,
                   fault: str | None = None, idle: bool = False) -> list[Row]:
    rows = []
    with CameraSimulator(specs) as sim:
        assert sim.proc is not None
        if idle:
            rows.append(measure(f"{what}, nobody watching", sim.proc.pid, len(specs), None,
                                seconds))
        with Clients([sim.url(s.id) for s in specs]) as clients:
            if fault:
                for s in specs:
                    sim.fault(s.id, fault)  # type: ignore[arg-type]
            rows.append(measure(what, sim.proc.pid, len(specs), clients, seconds))
    return rows


def baseline_row(what: str, clip: Path, count: int, seconds: float, work: Path) -> Row:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.Popen(
        [str(GST_PYTHON), "-c", BASELINE, str(clip), str(work / f"{clip.stem}.h264"),
         str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
    )
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["port"]
        urls = [f"rtsp://127.0.0.1:{port}/b{i}" for i in range(count)]
        with Clients(urls) as clients:
            return measure(what, proc.pid, count, clients, seconds)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(20)
        proc.stdout.close() if proc.stdout else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, default=4, help="file cameras per run")
    p.add_argument("--scene-cameras", type=int, default=1, help="scene cameras per run")
    p.add_argument("--seconds", type=float, default=20.0, help="measuring window per run")
    p.add_argument("--clip-dir", type=Path, default=ROOT / "var" / "camera-clips")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shouwang-camera-bench-"))
    print(f"CPU % of one core, server process; {os.cpu_count()} cores; "
          f"load average before: {os.getloadavg()[0]:.2f}\n")
    print("| run | cameras | frames/s per camera | server CPU % | CPU % per camera |")
    print("|---|---|---|---|---|")
    for width, height, label in ((1280, 720, "720p25"), (1920, 1080, "1080p25")):
        clip = make_clip(args.clip_dir, width=width, height=height, fps=25, seconds=10)
        baseline_row(f"baseline: GStreamer multifilesrc loop, {label}", clip, args.cameras,
                     args.seconds, work)
        files = [CameraSpec(id=f"f{i}", kind="file", file=clip) for i in range(args.cameras)]
        simulator_rows(f"file cameras {label}", files, args.seconds, idle=True)
    for width, height, label in ((1280, 720, "720p25"), (1920, 1080, "1080p25")):
        scenes = [CameraSpec(id=f"s{i}", width=width, height=height)
                  for i in range(args.scene_cameras)]
        simulator_rows(f"scene cameras {label} (x264 live)", scenes, args.seconds)
        clip = make_clip(args.clip_dir, width=width, height=height, fps=25, seconds=10)
        simulator_rows(f"file camera {label} during a cover fault (decode+encode)",
                       [CameraSpec(id="c0", kind="file", file=clip)], args.seconds,
                       fault="cover")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
