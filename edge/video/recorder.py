"""Evidence from a camera: a ring of encoded packets, clips remuxed from it, masked snapshots.

The worker keeps the last `record.pre_s` seconds of the stream as the camera sent it (H.264
packets, from a keyframe on). An event asks for a clip: the packets before it, then
`record.post_s` seconds after, written as an MP4 by remuxing (no re-encoding: the CPU of a
gateway goes to decoding, not to encoding). A camera with privacy masks is the exception: what
is masked must not be stored, so its clips are decoded, masked and encoded again (libx264,
ultrafast), which costs CPU for the length of the clip only. Snapshots are JPEG, always masked.
Files are written beside their final name and renamed, so a reader never sees half a clip.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from edge.video.frames import polygon_mask

log = logging.getLogger(__name__)
Polygon = Sequence[Sequence[int]]
MAX_CLIP_PACKETS = 60 * 30  # a minute at 30 fps: a clip never grows without bound
Draw = Callable[[np.ndarray, float | None], np.ndarray]


@dataclass(slots=True)
class _Held:
    t_ms: int
    keyframe: bool
    packet: Any  # av.Packet


class PacketRing:
    """The last `seconds` of a stream's packets, always starting at a keyframe."""

    def __init__(self, seconds: float) -> None:
        self.window_ms = int(seconds * 1000)
        self._held: deque[_Held] = deque()

    def add(self, packet: Any, t_ms: int) -> None:
        self._held.append(_Held(t_ms, bool(packet.is_keyframe), packet))
        # Drop whole groups of pictures that ended before the window: keep the keyframe the
        # oldest wanted packet depends on.
        cutoff = t_ms - self.window_ms
        while len(self._held) > 1:
            second_key = next(
                (i for i, h in enumerate(self._held) if i > 0 and h.keyframe), None
            )
            if second_key is None or self._held[second_key].t_ms > cutoff:
                break
            for _ in range(second_key):
                self._held.popleft()

    def clear(self) -> None:
        """A new connection: the old packets do not decode with the new stream's."""
        self._held.clear()

    def packets(self) -> list[Any]:
        return [h.packet for h in self._held]

    def __len__(self) -> int:
        return len(self._held)


@dataclass(slots=True)
class ClipJob:
    """A clip being recorded: the ring's packets, then packets until `until_ms`."""

    name: str  # what asked for it (the event type), for the evidence message
    started_ms: int
    until_ms: int
    packets: list[Any] = field(default_factory=list)
    # Drawn on every frame of a second, re-encoded copy (a thrown object's track), if any:
    # called with the frame and its own timestamp in seconds (None when it has none).
    draw: Draw | None = None


def write_clip(
    path: Path, template: Any, packets: Sequence[Any], masks: Sequence[Polygon] = (),
    draw: Draw | None = None,
) -> Path:
    """`packets` (from a keyframe on) as an MP4 at `path`; remuxed, or re-encoded when the
    camera has privacy masks or something is to be `draw`n on every frame (after the masks).
    Raises ValueError when nothing decodable is there."""
    first = next((i for i, p in enumerate(packets) if p.is_keyframe), None)
    if first is None:
        raise ValueError("no keyframe among the packets: nothing a player could start from")
    packets = list(packets[first:])
    partial = path.with_name(path.name + ".partial")
    if masks or draw is not None:
        _encode_masked(partial, template, packets, masks, draw)
    else:
        _remux(partial, template, packets)
    os.replace(partial, path)
    return path


def _remux(path: Path, template: Any, packets: Sequence[Any]) -> None:
    """The packets as they came, in an MP4 starting at time 0. The packets are shared (the
    ring, other clips, a marked copy decoded after this one), so each is put back as it was
    after muxing (muxing moves its timestamps to the file's time base)."""
    out = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
    try:
        stream = out.add_stream_from_template(template)
        base = packets[0].dts if packets[0].dts is not None else packets[0].pts
        for p in packets:
            if p.dts is None and p.pts is None:
                continue
            was = p.pts, p.dts, p.time_base, p.stream
            try:
                p.pts = None if p.pts is None else p.pts - base
                p.dts = None if p.dts is None else p.dts - base
                p.stream = stream
                out.mux(p)
            finally:
                p.time_base = was[2]
                p.pts, p.dts, p.stream = was[0], was[1], was[3]
    finally:
        out.close()


def _encode_masked(
    path: Path, template: Any, packets: Sequence[Any], masks: Sequence[Polygon],
    draw: Draw | None = None,
) -> None:
    ctx = av.CodecContext.create(template.codec_context.name, "r")
    ctx.extradata = template.codec_context.extradata
    out = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
    try:
        rate = template.average_rate or Fraction(25)
        time_base = template.time_base
        stream = out.add_stream("libx264", rate=rate)
        stream.options = {"preset": "ultrafast", "crf": "23"}
        mask: np.ndarray | None = None
        started = False
        for p in packets:
            for frame in ctx.decode(p):
                image = frame.to_ndarray(format="bgr24")
                if not started:  # the first frame sets the size (a mask may be None)
                    started = True
                    h, w = image.shape[:2]
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    mask = polygon_mask(masks, w, h, (w, h), grow=1)
                if mask is not None:
                    image[mask > 0] = 0
                if draw is not None:
                    pts = frame.pts
                    image = draw(image, None if pts is None or time_base is None
                                 else float(pts * time_base))
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    finally:
        out.close()


def snapshot(bgr: np.ndarray, masks: Sequence[Polygon] = (), quality: int = 85) -> bytes:
    """A JPEG of `bgr` with the privacy masks blacked out."""
    h, w = bgr.shape[:2]
    mask = polygon_mask(masks, w, h, (w, h), grow=1)
    if mask is not None:
        bgr = bgr.copy()
        bgr[mask > 0] = 0
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(data)


def keep(directory: Path, data: bytes, suffix: str) -> str:
    """Write `data` under its SHA-256 in `directory` (atomically); returns the hash."""
    digest = hashlib.sha256(data).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{digest}{suffix}"
    if not final.exists():
        partial = final.with_name(final.name + ".partial")
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, final)
    return digest
