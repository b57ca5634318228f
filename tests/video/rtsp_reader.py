"""Read an RTSP stream with PyAV over TCP on a thread, and measure what its frames show.

For tests that need to see what a camera sends: frames arrive, at which size, and whether
they are dark, blurred, grey or of another view. Measures use numpy only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import av
import numpy as np


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian: high for a focused view, collapses when defocused."""
    g = grey.astype(np.float32)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var())


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two thumbnails: ~1 the same view, low another."""
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator else 0.0


@dataclass
class Frame:
    """One decoded frame: when it arrived and, for measured frames, what it shows."""

    t: float
    width: int
    height: int
    measured: bool = False
    corrupt: bool = False  # the decoder concealed errors in it
    mean: float = 0.0  # grey level 0..255
    std: float = 0.0  # contrast
    sharpness: float = 0.0
    colour: float = 0.0  # mean |R-G| + |G-B|: 0 for a monochrome (IR) picture
    thumb: Any = None  # 64-pixel-wide grey thumbnail, for `similarity`


def measure(frame: av.VideoFrame, t: float) -> Frame:
    grey = frame.to_ndarray(format="gray")
    rgb = frame.reformat(
        width=frame.width // 4 // 2 * 2, height=frame.height // 4 // 2 * 2, format="rgb24"
    ).to_ndarray().astype(np.int16)
    thumb = frame.reformat(
        width=64, height=max(2, 64 * frame.height // frame.width // 2 * 2), format="gray"
    ).to_ndarray()
    return Frame(
        t=t, width=frame.width, height=frame.height, measured=True,
        mean=float(grey.mean()), std=float(grey.std()), sharpness=sharpness(grey),
        colour=float(np.abs(rgb[..., 0] - rgb[..., 1]).mean()
                     + np.abs(rgb[..., 1] - rgb[..., 2]).mean()),
        thumb=thumb,
    )


class StreamReader:
    """Opens `url` (raising PyAV's error, e.g. av.error.HTTPUnauthorizedError, if refused),
    then decodes on a thread; every `measure_every`-th frame is measured.

    Use as a context manager, so that the thread is joined. `ended` says the stream ended
    (the server closed the connection, or nothing came for `read_timeout` seconds)."""

    def __init__(
        self, url: str, *, open_timeout: float = 30.0, read_timeout: float = 15.0,
        measure_every: int = 5,
    ) -> None:
        self.url = url
        self.open_timeout, self.read_timeout = open_timeout, read_timeout
        self.measure_every = measure_every
        self.frames: list[Frame] = []
        self.ended = False
        self.error: BaseException | None = None
        self.decode_errors = 0  # packets the decoder refused
        self.corrupt_frames = 0  # frames it decoded with errors (concealed)
        self._decoded = 0
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._container: Any = None

    def open(self) -> Self:
        self._container = av.open(
            self.url, options={"rtsp_transport": "tcp"},
            timeout=(self.open_timeout, self.read_timeout),
        )
        self._thread = threading.Thread(target=self._run, name="rtsp-reader", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.read_timeout + 10)
            assert not self._thread.is_alive(), f"reader of {self.url} did not stop"
            self._thread = None

    def _run(self) -> None:
        stream = self._container.streams.video[0]
        try:
            for packet in self._container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    # A damaged packet: a decoder skips it and goes on, as a worker must.
                    self.decode_errors += 1
                    continue
                for frame in frames:
                    self._add(frame)
                if self._stop.is_set():
                    break
        except Exception as err:
            self.error = err
        finally:
            self._container.close()
            with self._changed:
                self.ended = True
                self._changed.notify_all()

    def _add(self, frame: av.VideoFrame) -> None:
        now = time.monotonic()
        if frame.is_corrupt:
            self.corrupt_frames += 1
        info = (
            measure(frame, now) if self._decoded % self.measure_every == 0
            else Frame(t=now, width=frame.width, height=frame.height)
        )
        info.corrupt = bool(frame.is_corrupt)
        self._decoded += 1
        with self._changed:
            self.frames.append(info)
            self._changed.notify_all()

    # --- waiting on conditions, never on the clock ---------------------------------------

    def wait_frames(self, count: int, timeout: float = 30.0) -> list[Frame]:
        """Wait until at least `count` frames have arrived; return them."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.frames) >= count or self.ended, timeout)
        assert len(self.frames) >= count, (
            f"{self.url}: {len(self.frames)} frames, not {count} (ended {self.ended}, "
            f"error {self.error!r})"
        )
        return list(self.frames)

    def measured(self, since: int = 0) -> list[Frame]:
        with self._changed:
            return [f for f in self.frames[since:] if f.measured]

    def wait_for(self, what: str, check: Any, timeout: float = 30.0) -> Frame:
        """Wait for a measured frame, arriving from now on, for which `check(frame)` holds."""
        with self._changed:
            start = len(self.frames)
        seen: list[Frame] = []

        def found() -> bool:
            seen[:] = [f for f in self.frames[start:] if f.measured]
            return any(check(f) for f in seen) or self.ended

        with self._changed:
            self._changed.wait_for(found, timeout)
        hits = [f for f in seen if check(f)]
        assert hits, (
            f"{self.url}: no frame showed {what} within {timeout} s; last measured: "
            f"{[describe(f) for f in seen[-3:]]} (ended {self.ended}, error {self.error!r})"
        )
        return hits[0]

    def wait_until(
        self, what: str, check: Callable[[list[Frame]], bool], timeout: float = 30.0
    ) -> None:
        """Wait until `check(frames so far)` holds."""
        with self._changed:
            ok = self._changed.wait_for(lambda: check(self.frames) or self.ended, timeout)
            ok = ok and check(self.frames)
        assert ok, f"{self.url}: not {what} within {timeout} s (ended {self.ended})"

    def wait_end(self, timeout: float = 30.0) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.ended, timeout)
        assert self.ended, f"{self.url}: the stream did not end within {timeout} s"


def describe(f: Frame) -> str:
    return (f"mean {f.mean:.0f} std {f.std:.0f} sharpness {f.sharpness:.0f} "
            f"colour {f.colour:.1f}")
