"""Bench: N simulated cameras through the camera workers, against decode-only of the same streams.

    .venv/bin/python bench/video.py --cameras 4 --seconds 30     # full: both sizes, 4 cameras
    .venv/bin/python bench/video.py --quick                       # 1 camera, short windows

For each size (720p25 and 1080p25 at a camera's bit rate: a synthetic street with sensor noise
in which someone walks through 3–7 s into every 10 s, `simulators.camera.make_clip`), one RTSP
simulator (the real GStreamer server, simulators/rtsp_server.py) serves 2N file cameras looping
the same clip. In the same window, side by side, so a busy machine weighs on both alike:

- decode-only (the baseline): N processes, each demuxing and decoding one camera with PyAV
  over RTSP/TCP on one thread, as the worker does, and nothing else;
- workers: N camera worker processes started by the edge daemon's own `CameraSupervisor`
  (edge/video/supervisor.py), publishing to a Mosquitto edge broker (TLS only, as deployed;
  the workers and the bench's client verify it), with motion gating and
  camera health at the default `detect` rate (5 fps, 640 wide) and no analytics.

CPU per camera: each process's user + system time over the window (psutil), per frame it
decoded, × 25: % of one core for a 25 fps camera (a busy machine may make the simulator send
fewer frames; the raw % is in the JSON). Cameras on this machine: cores × 100 / that (nothing
else running). Frames and analysed frames
per second: counted by the decoder; for a worker from its own telemetry (`telemetry_s` 2 s).

Event latency, after the window: each worker camera's lens in turn is covered (the simulator's
`cover` fault) and the bench's MQTT client on the edge broker times the `tamper` (occluded)
event the worker publishes (`dev/{camera}/event`). The bench sets `raise_after_s: 0`, so the
event comes from the first covered frame health judges (the daemon's default debounce is 10 s,
added on purpose), and `learn_s: 2` so health is past learning when the window starts.
Two figures: frame → broker (arrival minus the event's `ts`, the worker's clock when it decoded
that frame: analysis, publish, broker) and cover → broker (arrival minus the moment the
simulator acknowledged the cover: also the simulator switching to an effect pipeline, the
network, the decoder, waiting for the next analysed frame and the next health judgement, which
comes once a second).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import broker_config, paho_connect, tls_broker  # type: ignore[import-not-found]  # noqa: E402

from edge.video.config import CameraConfig  # noqa: E402
from edge.video.supervisor import CameraSupervisor  # noqa: E402
from shouwang.metrics import Metrics  # noqa: E402
from shouwang.services import Mosquitto  # noqa: E402
from simulators.camera import CameraSimulator, CameraSpec, make_clip  # noqa: E402

SIZES = {"720p25": (1280, 720), "1080p25": (1920, 1080)}
FPS = 25
CLIP_S = 10
TARGET_RATIO = 0.6  # workers fit at least 0.6 × the decode-only camera count
TARGET_ADDED = 15.0  # health and motion add at most 15 % CPU per camera
TELEMETRY_S = 2.0
STARTUP_S = 20.0  # a decode-only process with no frame by then is restarted
BENCH_HEALTH = {
    "learn_s": 2,
    "occluded": {"raise_after_s": 0, "clear_after_s": 0},
}


# --- decode-only: one process per camera -----------------------------------------------------


def decode_only(url: str) -> int:
    """Demux and decode `url` (PyAV, RTSP/TCP, one thread) until stdin closes; each line read on
    stdin is answered with the frames decoded so far, as JSON."""
    import av
    import av.error

    frames = [0]

    def answer() -> None:
        for _line in sys.stdin:
            print(json.dumps({"frames": frames[0]}), flush=True)
        os._exit(0)  # stdin closed: the bench is done with this camera

    threading.Thread(target=answer, daemon=True).start()
    while True:  # reconnect after an error, as a worker does
        try:
            container = av.open(url, options={"rtsp_transport": "tcp", "timeout": "10000000"})
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1  # as edge/video/stream.py opens a camera
            for packet in container.demux(stream):
                for _frame in packet.decode():
                    frames[0] += 1
            container.close()
        except av.error.FFmpegError as err:
            print(f"decode-only {url}: {err}; reconnecting", file=sys.stderr, flush=True)
        time.sleep(1)


class Decoder:
    """A decode-only process of one camera."""

    def __init__(self, url: str, log: Path) -> None:
        self.url, self.log = url, log
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--decode", self.url], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, cwd=ROOT,
            )
        self.started = time.monotonic()

    def restart(self) -> None:
        """Start over (a connection that never brought a frame: the worker would reconnect)."""
        self.stop()
        self.restarts += 1
        print(f"video bench: decode-only {self.url} had no frames in {STARTUP_S:.0f} s; "
              "restarted", file=sys.stderr, flush=True)
        self._start()

    def frames(self) -> int:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(b"?\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"decode-only process {self.proc.pid} ended: {self.proc.poll()}")
        count: int = json.loads(line)["frames"]
        return count

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# --- what the edge broker saw ----------------------------------------------------------------


@dataclass
class Heard:
    topic: str
    arrived_ms: float
    ts: int
    body: dict[str, Any]


class Listener:
    """An MQTT client on the edge broker noting each camera event and telemetry on arrival."""

    def __init__(self, broker: Mosquitto) -> None:
        self.messages: list[Heard] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="video-bench",
                                  protocol=paho.MQTTv311)
        self.client.on_message = self._message
        self.client.on_connect = lambda c, *_: c.subscribe(
            [("dev/+/event", 1), ("dev/+/telemetry", 1)])
        paho_connect(self.client, broker)

    def _message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        arrived = time.time() * 1000
        env = orjson.loads(msg.payload)
        with self._lock:
            self.messages.append(Heard(msg.topic, arrived, int(env["ts"]), env["body"]))

    def heard(self, camera: str, kind: str, since_ms: float = 0.0) -> list[Heard]:
        topic = f"dev/{camera}/{kind}"
        with self._lock:
            return [m for m in self.messages if m.topic == topic and m.arrived_ms >= since_ms]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- one size ----------------------------------------------------------------------------------


@dataclass
class Measured:
    """One path's figures (decode-only or worker), a value per camera."""

    cpu: list[float] = field(default_factory=list)  # % of one core, per camera
    fps: list[float] = field(default_factory=list)
    analysed: list[float] = field(default_factory=list)
    bitrate: list[float] = field(default_factory=list)

    def summary(self, cores: int) -> dict[str, Any]:
        """Means over the cameras. CPU is per frame × 25 (a camera's 25 fps): on a busy machine
        the simulator may send fewer frames, and the raw figure would understate a camera."""
        per_camera = [cpu * FPS / fps for cpu, fps in zip(self.cpu, self.fps, strict=True)]
        cpu = statistics.mean(per_camera)
        out = {"cpu_pct": cpu, "cpu_min": min(per_camera), "cpu_max": max(per_camera),
               "cpu_raw_pct": statistics.mean(self.cpu), "fps": statistics.mean(self.fps),
               "fit": cores * 100 / cpu}
        if self.analysed:
            out["analysed_fps"] = statistics.mean(self.analysed)
        return out


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def eventually(what: str, check: Any, timeout: float,
                     detail: Any = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise SystemExit(f"video bench: {what} did not happen within {timeout:.0f} s "
                             f"{detail()}")
        await asyncio.sleep(0.1)
    return result


async def run_size(label: str, size: tuple[int, int], args: argparse.Namespace,
                   broker: Mosquitto, listener: Listener, work: Path) -> dict[str, Any]:
    width, height = size
    n = args.cameras
    clip = make_clip(args.clip_dir, width=width, height=height, fps=FPS, seconds=CLIP_S)
    decode_ids = [f"{label}-d{i}" for i in range(n)]
    worker_ids = [f"{label}-w{i}" for i in range(n)]
    specs = [CameraSpec(id=c, kind="file", file=clip) for c in decode_ids + worker_ids]
    cores = os.cpu_count() or 1
    with CameraSimulator(specs, log_path=work / f"sim-{label}.log") as sim:
        cameras = [
            CameraConfig(id=c, url=sim.url(c), telemetry_s=TELEMETRY_S,
                         record={"pre_s": 1, "post_s": 1},  # type: ignore[arg-type]
                         health=BENCH_HEALTH)  # type: ignore[arg-type]
            for c in worker_ids
        ]
        supervisor = CameraSupervisor(cameras, broker_config(broker),
                                      work / f"edge-{label}", Metrics("video-bench"))
        decoders = [Decoder(sim.url(c), work / f"decode-{c}.log") for c in decode_ids]
        await supervisor.start()
        try:
            # Every stream flowing, health past learning (learn_s 2 s) and settled.
            counts: list[int] = []

            def flowing() -> bool:
                counts[:] = [d.frames() for d in decoders]
                for d, count in zip(decoders, counts, strict=True):
                    if count < FPS and time.monotonic() - d.started > STARTUP_S:
                        d.restart()
                return min(counts) >= FPS

            await eventually("a second of frames in every decode-only process", flowing,
                             60 * args.patience, lambda: f"frames so far: {counts}")
            await eventually(
                "worker telemetry with frames",
                lambda: all(any(m.body.get("fps", 0) > 0 for m in listener.heard(c, "telemetry"))
                            for c in worker_ids),
                60 * args.patience,
            )
            await asyncio.sleep(args.warm)
            decoding = Measured()
            working = Measured()
            load0 = os.getloadavg()[0]
            dprocs = [psutil.Process(d.proc.pid) for d in decoders]
            wprocs = [psutil.Process(supervisor.procs[c].pid) for c in worker_ids]
            t0, t0_ms = time.monotonic(), time.time() * 1000
            d_cpu0 = [cpu_s(p) for p in dprocs]
            w_cpu0 = [cpu_s(p) for p in wprocs]
            d_frames0 = [d.frames() for d in decoders]
            await asyncio.sleep(args.seconds)
            d_frames1 = [d.frames() for d in decoders]
            d_cpu1 = [cpu_s(p) for p in dprocs]
            w_cpu1 = [cpu_s(p) for p in wprocs]
            wall = time.monotonic() - t0
            t1_ms = time.time() * 1000
            load1 = os.getloadavg()[0]
            for i in range(n):
                decoding.cpu.append(100 * (d_cpu1[i] - d_cpu0[i]) / wall)
                decoding.fps.append((d_frames1[i] - d_frames0[i]) / wall)
                working.cpu.append(100 * (w_cpu1[i] - w_cpu0[i]) / wall)
                # Reports whose own window lies inside this one.
                reports = [m.body for m in listener.heard(worker_ids[i], "telemetry",
                                                           t0_ms + TELEMETRY_S * 1000)
                           if m.arrived_ms <= t1_ms + 200]
                if not reports:
                    raise SystemExit(f"video bench: no telemetry from {worker_ids[i]} in the "
                                     "window; make --seconds longer")
                working.fps.append(statistics.mean(r["fps"] for r in reports))
                working.analysed.append(statistics.mean(r["analysed_fps"] for r in reports))
                working.bitrate.append(statistics.mean(r["bitrate"] for r in reports))
            latency = await cover_latencies(sim, listener, worker_ids, args)
        finally:
            for d in decoders:
                d.stop()
            await supervisor.stop()
    decode, worker = decoding.summary(cores), working.summary(cores)
    return {
        "stream": label, "cameras": n, "bitrate_kbps": clip.stat().st_size * 8 / CLIP_S / 1000,
        "received_kbps": statistics.mean(working.bitrate),
        "decode_restarts": sum(d.restarts for d in decoders),
        "load": [load0, load1], "decode_only": decode, "worker": worker, "latency": latency,
        "ratio": worker["fit"] / decode["fit"],
        "added_pct": (worker["cpu_pct"] - decode["cpu_pct"]) / decode["cpu_pct"] * 100,
    }


async def cover_latencies(sim: CameraSimulator, listener: Listener, cameras: list[str],
                          args: argparse.Namespace) -> dict[str, Any]:
    """Cover each camera's lens in turn (`--covers` times): how late its tamper event came."""
    frame_ms: list[float] = []
    cover_ms: list[float] = []
    for _round in range(args.covers):
        for camera in cameras:
            sim.fault(camera, "cover")
            covered_ms = time.time() * 1000

            def tamper(camera: str = camera, since: float = covered_ms) -> list[Heard]:
                return [m for m in listener.heard(camera, "event", since)
                        if m.body.get("event") == "tamper"]

            event = (await eventually(f"{camera}: tamper", tamper, 60 * args.patience))[0]
            frame_ms.append(event.arrived_ms - event.ts)
            cover_ms.append(event.arrived_ms - covered_ms)
            sim.restore(camera)
            restored_ms = time.time() * 1000
            await eventually(
                f"{camera}: tamper_cleared",
                lambda camera=camera, since=restored_ms: [
                    m for m in listener.heard(camera, "event", since)
                    if m.body.get("event") == "tamper_cleared"],
                60 * args.patience,
            )
    return {"events": len(frame_ms), "frame_ms": spread(frame_ms), "cover_ms": spread(cover_ms)}


def spread(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "max": max(values)}


# --- the table ---------------------------------------------------------------------------------


def print_table(rows: list[dict[str, Any]], cores: int) -> None:
    print("\n| stream | cameras | path | CPU % of a core per 25 fps camera (min–max) | "
          f"frames/s per camera | analysed/s per camera | cameras on {cores} cores | "
          "event latency ms, frame → broker / cover → broker (p50, max) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        d, w, lat = r["decode_only"], r["worker"], r["latency"]
        name = f"{r['stream']}, {r['bitrate_kbps']:,.0f} kbit/s"
        print(f"| {name} | {r['cameras']} | decode-only (PyAV, 1 thread) | "
              f"{d['cpu_pct']:.1f} ({d['cpu_min']:.1f}–{d['cpu_max']:.1f}) | {d['fps']:.1f} | - "
              f"| {int(d['fit'])} | - |")
        print(f"| {name} | {r['cameras']} | worker: health + motion | "
              f"{w['cpu_pct']:.1f} ({w['cpu_min']:.1f}–{w['cpu_max']:.1f}) | {w['fps']:.1f} | "
              f"{w['analysed_fps']:.1f} | {int(w['fit'])} | "
              f"{lat['frame_ms']['p50']:.0f}, {lat['frame_ms']['max']:.0f} / "
              f"{lat['cover_ms']['p50']:.0f}, {lat['cover_ms']['max']:.0f} "
              f"({lat['events']} covers) |")
    print(f"\n| stream | worker cameras / decode-only cameras (target ≥ {TARGET_RATIO}) | "
          f"CPU added per camera by the worker (target ≤ {TARGET_ADDED:.0f} %) | load average |")
    print("|---|---|---|---|")
    for r in rows:
        ok_ratio = "met" if r["ratio"] >= TARGET_RATIO else "NOT met"
        ok_added = "met" if r["added_pct"] <= TARGET_ADDED else "NOT met"
        print(f"| {r['stream']} | {r['ratio']:.2f} (≥ {TARGET_RATIO}: {ok_ratio}) | "
              f"{r['added_pct']:+.1f} % (≤ {TARGET_ADDED:.0f} %: {ok_added}) | "
              f"{r['load'][0]:.1f} → {r['load'][1]:.1f} |")


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="shouwang-video-bench-", dir=args.work))
    os.environ.setdefault("SHOUWANG_LOG_LEVEL", "WARNING")
    broker = tls_broker(work / "edge-broker", "edge broker")
    broker.start()
    rows = []
    listener = None
    try:
        listener = Listener(broker)
        for label in args.sizes:
            row = await run_size(label, SIZES[label], args, broker, listener, work)
            rows.append(row)
            print(f"{label}: done (load {row['load'][1]:.1f})", file=sys.stderr, flush=True)
    finally:
        if listener is not None:
            listener.close()
        broker.stop()
    print(f"(scratch directory with the logs: {work})", file=sys.stderr)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, default=None, help="cameras per path (default 4; "
                   "quick: 1)")
    p.add_argument("--seconds", type=float, default=None,
                   help="measuring window per size (default 30; quick: 8)")
    p.add_argument("--warm", type=float, default=None,
                   help="seconds after the streams flow before measuring (default 6; quick: 4)")
    p.add_argument("--covers", type=int, default=1, help="lens covers per worker camera")
    p.add_argument("--sizes", default="720p25,1080p25", help="comma-separated: "
                   + ", ".join(SIZES))
    p.add_argument("--quick", action="store_true", help="1 camera, short windows (~1-2 min)")
    p.add_argument("--patience", type=float, default=1.0,
                   help="multiply the waits for streams and events (a busy machine)")
    p.add_argument("--clip-dir", type=Path, default=ROOT / "var" / "camera-clips")
    p.add_argument("--work", type=Path, default=None,
                   help="where the scratch directory (logs, broker) goes (default: the temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--decode", metavar="URL", help=argparse.SUPPRESS)  # a decode-only child
    args = p.parse_args()
    if args.decode:
        return decode_only(args.decode)
    args.cameras = args.cameras or (1 if args.quick else 4)
    args.seconds = args.seconds or (8.0 if args.quick else 30.0)
    args.warm = args.warm if args.warm is not None else (4.0 if args.quick else 6.0)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in args.sizes if s not in SIZES]
    if unknown or args.cameras < 1 or args.seconds < 2 * TELEMETRY_S:
        p.error(f"--sizes from {', '.join(SIZES)}; --cameras ≥ 1; --seconds ≥ "
                f"{2 * TELEMETRY_S:g}" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    cores = os.cpu_count() or 1
    print(f"{args.cameras} camera(s) per path, {args.seconds:g} s window, {cores} cores, "
          f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    rows = asyncio.run(bench(args))
    print_table(rows, cores)
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
