"""`shouwang video analyze`: one camera's analytics over a file (or a live URL for a while).

The same `Analyzer` the worker runs, fed as fast as the machine decodes, writing one JSON
object per line per event: `{"type": "tamper", "t_ms": 8120, "cause": "occluded"}`; on a
façade camera (`analytics: [throw]`) one line per thrown object, `t_ms` at its first sighting,
with its floor, column, confidence, ranked candidates and track. `t_ms` is
milliseconds from the start of the input (the stream's own timestamps, not the wall clock),
so a replayed clip gives the same events at the same times as the daemon did live. The
format is an interface (docs/video.md): installers tune a camera with it, testers and
evaluators replay clips through it.

A camera with `analytics: [face]` matches faces against the people enrolled with `shouwang
face enroll` on `--data-dir` and prints one line per match (a track that reached its list's
hits): `{"type": "face_match", "t_ms": 4200, "person": "P-0042", "list": "police",
"score": 0.951, "track": "3"}`. Faces that matched no one print nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import IO, Any

import av
import av.error
import cv2
import numpy as np
import orjson

from edge.video.analysis import Analyzer
from edge.video.config import CameraConfig
from edge.video.face.pipeline import WatchlistSource
from edge.video.face.store import WatchlistError, WatchlistStore
from edge.video.stream import StreamError, open_stream
from edge.video.throw.calibration import Facade, draw_grid
from shouwang.config import ConfigError, load_yaml

EXIT_BAD_INPUT = 2
DEFAULT_DATA_DIR = Path("var/edge")


def analyze(
    camera: CameraConfig, source: str, out: IO[bytes], seconds: float | None = None,
    data_dir: Path = DEFAULT_DATA_DIR,
) -> dict[str, Any]:
    """Analyse `source` (a file, or a URL for `seconds`); write events to `out`; a summary."""
    watchlist = None
    if "face" in camera.analytics:
        store = WatchlistStore(data_dir)
        store.load()  # a missing key is the user's error to hear now, not a silent no-match
        watchlist = WatchlistSource(store, camera.face.reload_s, camera.face.embedder.model)
    opened = open_stream(camera, source=source, timeout_s=10.0)
    analyzer = Analyzer(camera, watchlist)
    counts = {"frames": 0, "events": 0, "bad_packets": 0}
    started = time.monotonic()
    first: float | None = None
    last_t = -1
    try:
        for packet in opened.container.demux(opened.stream):
            if seconds is not None and time.monotonic() - started >= seconds:
                break
            if packet.dts is None and packet.pts is None:
                continue
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                counts["bad_packets"] += 1
                continue
            for frame in frames:
                counts["frames"] += 1
                if frame.time is None:
                    continue
                first = frame.time if first is None else first
                # Stream time from the start of the input; never backwards (a bad timestamp).
                t_ms = max(last_t, round((frame.time - first) * 1000))
                last_t = t_ms
                if not analyzer.due(t_ms):
                    continue
                result = analyzer.analyse(frame, t_ms)
                if analyzer.facade_problem:
                    raise StreamError(f"{camera.id}: {analyzer.facade_problem}")
                for event in result.events:
                    out.write(orjson.dumps(event.as_json(), option=orjson.OPT_APPEND_NEWLINE))
                    counts["events"] += 1
    finally:
        opened.container.close()
    return {**counts, "analysed": analyzer.analysed, "seconds": time.monotonic() - started,
            "stream_ms": max(last_t, 0)}


def add_parser(sub: Any) -> None:
    video = sub.add_parser("video", help="camera video tools").add_subparsers(
        dest="sub", required=True
    )
    va = video.add_parser(
        "analyze", help="run one camera's analytics over a video file (or an RTSP URL)"
    )
    va.add_argument("--camera", type=Path, required=True,
                    help="CAMERA.yaml: one entry of site.yaml's cameras: (url not needed)")
    va.add_argument("input", help="a video file, or an rtsp:// URL with --seconds")
    va.add_argument("--out", type=Path, default=None,
                    help="EVENTS.jsonl (default: standard output)")
    va.add_argument("--seconds", type=float, default=None,
                    help="read a live URL this long (required for rtsp://)")
    va.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                    help="the gateway data directory whose enrolled faces it matches "
                    "(`shouwang face enroll --data-dir`); default var/edge")
    va.set_defaults(fn=cmd_analyze)
    vc = video.add_parser(
        "calibrate", help="draw a façade camera's floor and column grid over a frame, to check "
        "its calibration (facade: in CAMERA.yaml) by eye"
    )
    vc.add_argument("--camera", type=Path, required=True,
                    help="CAMERA.yaml: one entry of site.yaml's cameras:, with facade:")
    vc.add_argument("--input", default=None,
                    help="a video file or rtsp:// URL to take the frame from (default: the "
                    "camera's url; without one, a blank frame)")
    vc.add_argument("--out", type=Path, required=True, help="GRID.png to write")
    vc.set_defaults(fn=cmd_calibrate)


def cmd_analyze(args: argparse.Namespace) -> int:
    camera = load_yaml(args.camera, CameraConfig)
    live = args.input.startswith(("rtsp://", "rtsps://"))
    if live and args.seconds is None:
        raise ConfigError("an rtsp:// input needs --seconds N")
    if not live and not Path(args.input).is_file():
        print(f"shouwang: {args.input}: no such file", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = open(args.out, "wb") if args.out else sys.stdout.buffer  # noqa: SIM115 - closed below
    try:
        summary = analyze(camera, args.input, out, args.seconds, args.data_dir)
    except (StreamError, WatchlistError) as err:
        print(f"shouwang: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if args.out:
            out.close()
        else:
            out.flush()
    print(
        f"analysed {summary['analysed']} of {summary['frames']} frames "
        f"({summary['stream_ms'] / 1000:.1f} s of video in {summary['seconds']:.1f} s), "
        f"{summary['events']} events, {summary['bad_packets']} undecodable packets",
        file=sys.stderr,
    )
    return 0


def first_frame(camera: CameraConfig, source: str | None) -> np.ndarray:
    """The first decodable frame (BGR) of `source`, or of the camera's own stream."""
    opened = open_stream(camera, source=source, timeout_s=10.0)
    try:
        for packet in opened.container.demux(opened.stream):
            try:
                for frame in packet.decode():
                    image: np.ndarray = frame.to_ndarray(format="bgr24")
                    return image
            except av.error.InvalidDataError:
                continue
    finally:
        opened.container.close()
    raise StreamError(f"camera {camera.id}: {source or camera.redacted_url}: no frame decoded")


def cmd_calibrate(args: argparse.Namespace) -> int:
    camera = load_yaml(args.camera, CameraConfig)
    if camera.facade is None:
        raise ConfigError(f"{args.camera}: facade: is missing; nothing to draw")
    if args.input is not None and not args.input.startswith(("rtsp://", "rtsps://")) and \
            not Path(args.input).is_file():
        print(f"shouwang: {args.input}: no such file", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.input is None and camera.url is None:
        x2, y2 = np.ceil(np.max(camera.facade.corners, axis=0)).astype(int)
        image = np.full((int(y2) + 40, int(x2) + 40, 3), 96, np.uint8)
    else:
        try:
            image = first_frame(camera, args.input)
        except StreamError as err:
            print(f"shouwang: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
    problem = camera.facade.outside(image.shape[1], image.shape[0])
    if problem:
        print(f"shouwang: {args.camera}: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    grid = draw_grid(image, Facade(camera.facade))
    if not cv2.imwrite(str(args.out), grid):
        print(f"shouwang: {args.out}: cannot write the image", file=sys.stderr)
        return EXIT_BAD_INPUT
    low, high = camera.facade.floors
    print(f"wrote {args.out}: floors {low}-{high}, {camera.facade.columns} columns over a "
          f"{image.shape[1]}x{image.shape[0]} frame", file=sys.stderr)
    return 0
