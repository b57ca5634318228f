"""Opening a camera's stream with PyAV (FFmpeg's libraries): RTSP over TCP, or a video file.

Every way it can fail is one exception of a small hierarchy, with a message that names the
camera and the cause and never the password: the worker turns each into the right state
(`auth_failed` is a state of its own, not a silent retry loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error

from edge.video.config import CameraConfig


class StreamError(Exception):
    """The camera's stream could not be read; `reason` is a short metric label."""

    reason = "stream_error"


class StreamAuthError(StreamError):
    reason = "auth_failed"


class StreamUnavailable(StreamError):
    """Refused, unreachable, timed out, closed: try again later."""

    reason = "unavailable"


class StreamUnsupported(StreamError):
    """Not video, no H.264/H.265 stream, or a size this camera may not have: needs a person."""

    reason = "unsupported"


@dataclass(slots=True)
class Opened:
    container: Any  # av.container.InputContainer
    stream: Any  # av.video.stream.VideoStream
    width: int
    height: int


def open_stream(config: CameraConfig, source: str | Path | None = None,
                timeout_s: float = 5.0) -> Opened:
    """The camera's live stream (over TCP), or `source` (a file or URL) when given."""
    live = source is None
    target = config.source_url() if source is None else str(source)
    where = config.redacted_url if live else str(source)
    options = {"rtsp_transport": "tcp", "timeout": str(int(timeout_s * 1_000_000))}
    try:
        container = av.open(target, options=options if target.startswith("rtsp") else {},
                            timeout=timeout_s if not target.startswith("rtsp") else None)
    except av.error.HTTPUnauthorizedError as err:
        raise StreamAuthError(f"camera {config.id}: {where} refused the credentials (401)") from err
    except av.error.HTTPForbiddenError as err:
        raise StreamAuthError(f"camera {config.id}: {where} forbids this user (403)") from err
    except (av.error.InvalidDataError, av.error.PatchWelcomeError) as err:
        if live:  # a stalled camera answers with no stream description: try again later
            raise StreamUnavailable(
                f"camera {config.id}: {where} sent no usable stream description "
                f"({config.redact(_strerror(err))})"
            ) from err
        raise StreamUnsupported(
            f"camera {config.id}: {where} is not a video stream or file "
            f"({config.redact(_strerror(err))})"
        ) from err
    except av.error.FileNotFoundError as err:
        if live:
            raise StreamUnavailable(f"camera {config.id}: {where} has no such stream") from err
        raise StreamUnsupported(f"camera {config.id}: {where}: no such file") from err
    except (av.error.FFmpegError, OSError) as err:
        raise StreamUnavailable(
            f"camera {config.id}: cannot open {where}: {config.redact(_strerror(err))}"
        ) from err
    videos = container.streams.video
    if not videos:
        container.close()
        raise StreamUnsupported(f"camera {config.id}: {where} has no video stream")
    stream = videos[0]
    ctx = stream.codec_context
    ctx.thread_count = 1  # one camera, one core at most: many cameras share two cores
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    if width > config.max_width:
        container.close()
        raise StreamUnsupported(
            f"camera {config.id}: stream is {width}x{height}, wider than max_width "
            f"{config.max_width}; set the camera to a sub-stream or raise max_width"
        )
    return Opened(container, stream, width, height)


def _strerror(err: BaseException) -> str:
    return str(getattr(err, "strerror", None) or err)


class FrameClock:
    """When each frame was taken, on the gateway's clock (ms), from the stream's own timestamps.

    A decoder that falls behind (a busy gateway, a burst after a network stall) hands frames
    over in bursts: forty milliseconds of the camera's time may arrive two apart, and whatever
    measures motion over time (a falling body's acceleration) would be misled by arrival
    times. The stream's timestamps keep the camera's spacing. They are anchored to the
    gateway's clock at a connection's first frame; anchored again, never backwards, when they
    jump (back in time, or forward by more than `max_lag_ms`: a camera or stream restart) or
    fall more than `max_lag_ms` behind (a gateway that cannot keep up); and drawn back by at
    most `SLEW_MS` a frame while they run ahead of the gateway's clock (the first frame came
    late, the camera's clock runs fast), so a frame's spacing changes by a fraction of a
    percent, never its order. The times given are strictly increasing.
    """

    SLEW_MS = 0.2

    def __init__(self, max_lag_ms: int = 5000) -> None:
        self.max_lag_ms = max_lag_ms
        self._anchor: float | None = None
        self._stamp: float | None = None  # the last frame's stamp, ms
        self._step = 40.0  # the last forward step between stamps, ms
        self._last: int | None = None

    def restart(self) -> None:
        """A new connection: its timestamps start afresh."""
        self._anchor = self._stamp = None

    def at(self, stream_s: float | None, now_ms: int) -> int:
        """The time of a frame stamped `stream_s` (seconds; None if unstamped) that came at
        `now_ms`."""
        if stream_s is None:
            return self._give(float(now_ms))
        stamp = stream_s * 1000.0
        step = None if self._stamp is None else stamp - self._stamp
        self._stamp = stamp
        if self._anchor is None or step is None or step < 0 or step > self.max_lag_ms or \
                now_ms - (self._anchor + stamp) > self.max_lag_ms:
            floor = now_ms if self._last is None else max(now_ms, self._last + self._step)
            self._anchor = floor - stamp
        else:
            if step > 0:
                self._step = step
            ahead = self._anchor + stamp - now_ms
            if ahead > 0:
                self._anchor -= min(ahead, self.SLEW_MS)
        return self._give(self._anchor + stamp)

    def _give(self, t: float) -> int:
        out = round(t)
        if self._last is not None and out <= self._last:
            out = self._last + 1
        self._last = out
        return out
