"""Make a short real H.264 clip (MP4) of a synthetic scene, encoded as an IP camera encodes.

Runs under Debian's python3 with gi; `simulators.camera.make_clip` calls it and caches the result:

    /usr/bin/python3 -m simulators.clips OUT.mp4 --width 1280 --height 720 --fps 25 --seconds 10
"""

from __future__ import annotations

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

from simulators.scene import Scene  # noqa: E402


def make(args: argparse.Namespace) -> None:
    Gst.init(None)
    scene = Scene(args.width, args.height, args.seed, walk_every_s=args.walk_every_s,
                  walk_s=args.walk_s, noise=args.noise)
    gop = max(1, round(args.fps * args.gop_s))
    # The settings of a camera (no B-frames, a keyframe every gop_s) at a better preset than
    # the live encoder's: a clip is made once and served many times.
    pipeline = Gst.parse_launch(
        f'appsrc name=raw format=time block=true caps="video/x-raw,format=I420,'
        f'width={args.width},height={args.height},framerate={args.fps}/1" '
        f"! x264enc tune=zerolatency speed-preset=veryfast bitrate={args.bitrate_kbps} "
        f"key-int-max={gop} ! h264parse config-interval=-1 ! mp4mux ! filesink name=file"
    )
    pipeline.get_by_name("file").set_property("location", args.out)
    src = pipeline.get_by_name("raw")
    pipeline.set_state(Gst.State.PLAYING)
    period = Gst.SECOND // args.fps
    for n in range(round(args.seconds * args.fps)):
        buf = Gst.Buffer.new_wrapped(scene.frame(n / args.fps))
        buf.pts = buf.dts = n * period
        buf.duration = period
        if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
            break
    src.emit("end-of-stream")
    message = pipeline.get_bus().timed_pop_filtered(
        120 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    pipeline.set_state(Gst.State.NULL)
    if message is None:
        sys.exit(f"clip {args.out}: encoding did not finish")
    if message.type == Gst.MessageType.ERROR:
        err, debug = message.parse_error()
        sys.exit(f"clip {args.out}: {err.message} ({debug})")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", help="MP4 file to write")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0, help="which scene")
    p.add_argument("--bitrate-kbps", type=int, default=1800)
    p.add_argument("--gop-s", type=float, default=1.0, help="seconds between keyframes")
    p.add_argument("--walk-every-s", type=float, default=10.0)
    p.add_argument("--walk-s", type=float, default=4.0)
    p.add_argument("--noise", type=int, default=2, help="sensor noise, ± grey levels")
    make(p.parse_args(argv))


if __name__ == "__main__":
    main()
