"""One simulated camera inside the RTSP server: where its H.264 comes from, paced in real time.

Runs under Debian's python3 with gi (see simulators/rtsp_server.py). Every camera hands whole
H.264 access units to the `appsrc` of its RTSP media, one per frame period, whatever their
source: a file read once into memory and looped (passed through, nothing decoded: a file
camera costs almost nothing), or an x264 encoder fed by a synthetic scene. A fault that changes
the picture of a file camera runs the file through decode → effect → encode while it lasts.
Encoders exist only while somebody watches; a new one always starts with an IDR frame.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

from simulators.scene import Scene  # noqa: E402

log = logging.getLogger(__name__)

STREAM_FAULTS = ("stall", "drop", "refuse", "corrupt")
IMAGE_FAULTS = ("cover", "defocus", "turn", "ir")
FAULTS = STREAM_FAULTS + IMAGE_FAULTS
MAX_CLIP_BYTES = 512 * 1024 * 1024
H264_AU = "video/x-h264,stream-format=byte-stream,alignment=au"
# An encoder's input is bounded: if it cannot keep up, the oldest frames go, as in a camera.
APPSRC = "name=raw format=time max-buffers=4 leaky-type=downstream"


class FeedError(Exception):
    """A camera's source cannot be used (not a video, no H.264, B-frames, too big)."""


class Clip:
    """The access units of an H.264 file, read once: payloads, keyframe flags, size, rate."""

    def __init__(self, path: Path, fallback_fps: float) -> None:
        self.path = path
        self.aus: list[bytes] = []
        self.keyframe: list[bool] = []
        self.width = self.height = 0
        self.fps = fallback_fps
        self._load()
        if not any(self.keyframe):
            raise FeedError(f"{path}: no keyframe in the H.264 stream")
        first = self.keyframe.index(True)  # a loop must start where a decoder can
        self.aus, self.keyframe = self.aus[first:], self.keyframe[first:]

    def _load(self) -> None:
        if not self.path.is_file():
            raise FeedError(f"{self.path}: no such file")
        pipeline = Gst.parse_launch(
            f"filesrc name=file ! parsebin ! h264parse config-interval=-1 ! {H264_AU} ! "
            "appsink name=out sync=false"
        )
        pipeline.get_by_name("file").set_property("location", str(self.path))
        sink = pipeline.get_by_name("out")
        bus = pipeline.get_bus()
        pipeline.set_state(Gst.State.PLAYING)
        size, last_pts = 0, -1
        try:
            while True:
                sample = sink.emit("try-pull-sample", Gst.SECOND // 10)
                if sample is None:
                    message = bus.pop_filtered(Gst.MessageType.ERROR)
                    if message is not None:
                        err, _ = message.parse_error()
                        raise FeedError(f"{self.path}: not an H.264 video file ({err.message})")
                    if sink.get_property("eos"):
                        break
                    continue
                if not self.aus:
                    self._read_caps(sample.get_caps())
                buf = sample.get_buffer()
                if buf.pts != Gst.CLOCK_TIME_NONE:
                    if buf.pts < last_pts:
                        raise FeedError(
                            f"{self.path}: the stream has B-frames (frames out of order); "
                            "cameras send none: re-encode it without (x264: bframes=0)"
                        )
                    last_pts = buf.pts
                self.aus.append(buf.extract_dup(0, buf.get_size()))
                self.keyframe.append(not buf.has_flags(Gst.BufferFlags.DELTA_UNIT))
                size += buf.get_size()
                if size > MAX_CLIP_BYTES:
                    raise FeedError(f"{self.path}: over {MAX_CLIP_BYTES >> 20} MiB of video")
        finally:
            pipeline.set_state(Gst.State.NULL)
        if not self.aus:
            raise FeedError(f"{self.path}: no H.264 video in it")

    def _read_caps(self, caps: Gst.Caps) -> None:
        s = caps.get_structure(0)
        self.width = s.get_value("width") or 0
        self.height = s.get_value("height") or 0
        ok, num, den = s.get_fraction("framerate")
        if ok and num > 0 and den > 0:
            self.fps = num / den

    def keyframe_at_or_before(self, index: int) -> int:
        while not self.keyframe[index]:
            index -= 1
        return index


SLICE_HEADER_BYTES = 24  # left alone, so that the stream still parses as H.264


def corrupt(au: bytes, rng: random.Random, share: float = 0.01) -> bytes:
    """The access unit with `share` of its slice data overwritten, as bit errors would: it still
    parses (start codes and slice headers intact) but does not decode cleanly. The bytes written
    are 0x80..0xFF, so no false start code (00 00 01) appears."""
    out = bytearray(au)
    start = au.find(b"\x00\x00\x01")
    while start != -1:
        payload = start + 3
        end = au.find(b"\x00\x00\x01", payload)
        stop = len(au) if end == -1 else end
        if payload < len(au) and au[payload] & 0x1F in (1, 5):  # a coded slice
            first = payload + SLICE_HEADER_BYTES
            count = max(4, int((stop - first) * share))
            if stop - first > count:
                for at in rng.sample(range(first, stop), count):
                    out[at] = rng.randrange(0x80, 0x100)
        start = end
    return bytes(out)


def effects(faults: set[str], width: int, height: int, *, pan_for_turn: bool) -> list[str]:
    """GStreamer elements that make raw frames look like the faults in `faults`."""
    chain = []
    if "defocus" in faults:
        # Down to a sixteenth and back, bilinear: the fine grain a sharpness measure sees is gone,
        # the shapes stay, as with a lens knocked out of focus. Cheap at any size.
        small_w, small_h = max(2, width // 16 // 2 * 2), max(2, height // 16 // 2 * 2)
        chain += [
            f"videoscale ! video/x-raw,width={small_w},height={small_h}",
            f"videoscale ! video/x-raw,width={width},height={height}",
        ]
    if "cover" in faults:
        # A hand or a bag over the lens: nearly black, nearly uniform, a faint trace left.
        chain.append("videobalance contrast=0.04 brightness=-0.02 saturation=0.3")
    elif "ir" in faults:
        # Night mode: the IR-cut filter is out, the picture grey and harder.
        chain.append("videobalance saturation=0 contrast=1.35 brightness=-0.1")
    if "ir" in faults and "cover" in faults:
        chain.append("videobalance saturation=0")
    if "turn" in faults and pan_for_turn:
        # A file has no other view to turn to: the camera knocked down and sideways, looking
        # at the lower right two thirds of what it saw, closer (a scene has a second view).
        chain.append(
            f"videocrop top={height // 3 // 2 * 2} left={width // 3 // 2 * 2} "
            # Sharpened Lanczos keeps the grain (variance of the Laplacian within ~15 %):
            # a moved camera is not a defocused one.
            "! videoscale method=lanczos sharpen=1 sharpness=1.5 "
            f"! video/x-raw,width={width},height={height}"
        )
    return chain


class Encoder:
    """A private pipeline `appsrc name=raw ! ... ! appsink`: frames in, access units out."""

    def __init__(self, name: str, description: str, on_au: Callable[[bytes], None]) -> None:
        self.name = name
        self.active = True
        self._on_au = on_au
        self.pipeline = Gst.parse_launch(description)
        self.src = self.pipeline.get_by_name("raw")
        self.pipeline.get_by_name("out").connect("new-sample", self._on_sample)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._on_error)
        self.pipeline.set_state(Gst.State.PLAYING)

    def push(self, data: bytes, pts: int, duration: int) -> None:
        buf = Gst.Buffer.new_wrapped(data)
        buf.pts = buf.dts = pts
        buf.duration = duration
        self.src.emit("push-buffer", buf)

    def _on_sample(self, sink: Any) -> Gst.FlowReturn:
        # Runs on the pipeline's streaming thread.
        sample = sink.emit("pull-sample")
        if sample is not None and self.active:
            buf = sample.get_buffer()
            self._on_au(buf.extract_dup(0, buf.get_size()))
        return Gst.FlowReturn.OK

    def _on_error(self, _bus: Any, message: Gst.Message) -> None:
        err, debug = message.parse_error()
        log.error("%s: encoder failed: %s (%s)", self.name, err.message, debug)

    def stop(self) -> None:
        self.active = False
        bus = self.pipeline.get_bus()
        bus.remove_signal_watch()
        self.pipeline.set_state(Gst.State.NULL)


def x264(bitrate_kbps: int, gop: int) -> str:
    # zerolatency: no B-frames and no look-ahead, as IP cameras encode; one thread, so that N
    # simulated cameras cost N encoders' worth of CPU and no more threads than that.
    return (
        f"x264enc tune=zerolatency speed-preset=ultrafast bitrate={bitrate_kbps} "
        f"key-int-max={gop} threads=1 ! {H264_AU} ! appsink name=out emit-signals=true sync=false"
    )


@functools.cache
def scene(
    width: int, height: int, seed: int, walk_every_s: float, walk_s: float, noise: int
) -> Scene:
    """Scenes are drawn once and shared: cameras alike show the same street (a 720p scene
    takes half a second to draw, and a frame is a pure function of the time)."""
    return Scene(width, height, seed, walk_every_s=walk_every_s, walk_s=walk_s, noise=noise)


class Camera:
    """One camera: its source, its faults, and the media `appsrc` it feeds while watched."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.id: str = spec["id"]
        self.kind: str = spec["kind"]
        self.bitrate_kbps: int = spec["bitrate_kbps"]
        self.faults: set[str] = set()
        self.frames_sent = 0
        self.clip: Clip | None = None
        self.scene: Scene | None = None
        if self.kind == "file":
            self.clip = Clip(Path(spec["file"]), spec.get("fps") or 25.0)
            self.width, self.height, self.fps = self.clip.width, self.clip.height, self.clip.fps
            self.gop = max(1, round(self.fps))
        else:
            self.width, self.height, self.fps = spec["width"], spec["height"], spec["fps"]
            self.gop = max(1, round(self.fps * spec.get("gop_s", 1.0)))
            self.scene = scene(
                self.width, self.height, spec.get("seed", 0), spec.get("walk_every_s", 10.0),
                spec.get("walk_s", 4.0), spec.get("noise", 2),
            )
        self.period_ns = int(Gst.SECOND / self.fps)
        self._media_src: Any = None
        self._encoder: Encoder | None = None
        self._encoded_frames = 0
        self._position = 0  # next access unit of the clip
        self._start = time.monotonic()
        self._index = 0  # frame periods since start
        self._timer = 0
        self._restore_timers: dict[str, int] = {}
        self._rng = random.Random(self.id)

    # --- pacing ------------------------------------------------------------------------------

    def start(self) -> None:
        self._start = time.monotonic()
        self._schedule()

    def stop(self) -> None:
        if self._timer:
            GLib.source_remove(self._timer)
            self._timer = 0
        for timer in self._restore_timers.values():
            GLib.source_remove(timer)
        self._restore_timers.clear()
        self._stop_encoder()

    def _schedule(self) -> None:
        due = self._start + (self._index + 1) / self.fps
        delay_ms = max(0, round((due - time.monotonic()) * 1000))
        self._timer = GLib.timeout_add(delay_ms, self._tick)

    def _tick(self) -> bool:
        now = time.monotonic()
        behind = int((now - self._start) * self.fps) - self._index
        # Late by more than a few frames (a loaded machine): skip ahead, as a camera drops
        # frames it could not send, rather than bursting to catch up.
        self._index += behind - 1 if behind > 3 else 1
        self._send_frame(now - self._start)
        self._schedule()
        return False

    def _send_frame(self, t: float) -> None:
        if self._media_src is None or "stall" in self.faults:
            return
        if self.clip is not None:
            data = self.clip.aus[self._position]
            self._position = (self._position + 1) % len(self.clip.aus)
            if self._encoder is None:
                self._deliver(data)
                return
        else:
            assert self.scene is not None
            if self._encoder is None:
                return
            data = self.scene.frame(t, 1 if "turn" in self.faults else 0)
        self._encoder.push(data, self._encoded_frames * self.period_ns, self.period_ns)
        self._encoded_frames += 1

    def _deliver(self, data: bytes) -> None:
        src = self._media_src
        if src is None:
            return
        if "corrupt" in self.faults:
            data = corrupt(data, self._rng)
        src.emit("push-buffer", Gst.Buffer.new_wrapped(data))
        self.frames_sent += 1

    # --- watchers ----------------------------------------------------------------------------

    def attach(self, media_src: Any) -> None:
        """A client opened the stream (a new shared media): feed it, from a keyframe."""
        self._media_src = media_src
        self._restart_output()

    def detach(self, media_src: Any) -> None:
        """The last client left; nobody watches, so nothing is encoded."""
        if self._media_src is media_src:
            self._media_src = None
            self._stop_encoder()

    @property
    def watched(self) -> bool:
        return self._media_src is not None

    def _restart_output(self) -> None:
        """Start the stream again at a keyframe: on a new watcher, after a stall, on a change of
        picture faults. A clip steps back to its last keyframe; an encoder is made anew."""
        self._stop_encoder()
        if self._media_src is None:
            return
        if self.clip is not None:
            self._position = self.clip.keyframe_at_or_before(self._position)
            if not self.faults & set(IMAGE_FAULTS):
                return
            source = (
                f'appsrc {APPSRC} caps="{H264_AU}" ! h264parse '
                "! avdec_h264 max-threads=1 ! videoconvert"
            )
        else:
            source = (
                f'appsrc {APPSRC} caps="video/x-raw,format=I420,width={self.width},'
                f'height={self.height},framerate={round(self.fps * 1000)}/1000"'
            )
        chain = effects(
            self.faults, self.width, self.height, pan_for_turn=self.clip is not None
        )
        description = " ! ".join([source, *chain, x264(self.bitrate_kbps, self.gop)])
        self._encoded_frames = 0
        self._encoder = Encoder(self.id, description, self._deliver)

    def _stop_encoder(self) -> None:
        if self._encoder is not None:
            self._encoder.stop()
            self._encoder = None

    # --- faults ------------------------------------------------------------------------------

    def set_fault(self, fault: str, on: bool) -> None:
        """Switch a stall or a picture fault on or off (drop and refuse are the server's)."""
        before = set(self.faults)
        if on:
            self.faults.add(fault)
        else:
            self.faults.discard(fault)
        if self.faults == before:
            return
        if fault == "stall" and not on:
            self._restart_output()  # resume at a keyframe
        elif fault == "turn" and self.scene is not None:
            pass  # a scene turns by drawing its other view; its encoder goes on
        elif fault in IMAGE_FAULTS:
            self._restart_output()  # another chain of effects

    def restore_after(self, fault: str, seconds: float, restore: Callable[[], None]) -> None:
        """Undo `fault` after `seconds` (a cover for 5 s, a stall for 30 s)."""
        old = self._restore_timers.pop(fault, None)
        if old:
            GLib.source_remove(old)

        def fire() -> bool:
            self._restore_timers.pop(fault, None)
            restore()
            return False

        self._restore_timers[fault] = GLib.timeout_add(int(seconds * 1000), fire)

    def cancel_restore(self, fault: str | None = None) -> None:
        for name in [fault] if fault else list(self._restore_timers):
            timer = self._restore_timers.pop(name, None) if name else None
            if timer:
                GLib.source_remove(timer)

    def status(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "width": self.width, "height": self.height, "fps": self.fps,
            "faults": sorted(self.faults), "frames": self.frames_sent, "watched": self.watched,
        }
