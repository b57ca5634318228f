"""Frames between processes through shared memory: never pickled, never copied through a pipe.

A camera worker that needs a model (face, later throws) puts the frame it analyses into a
slot of a `FrameSlots` ring (one `multiprocessing.shared_memory` block per camera, a few
slots of the analysed size) and sends the detector process only `(camera, slot, t_ms,
shape, regions)`; the detector reads the slot in place and answers with the detections, a
few numbers. Frigate passes frames the same way (`SharedMemoryFrameManager`). A slot is not
written again until the detector has answered for it: `put` says None when every slot is
still in use, and the worker skips that frame (counted) rather than wait or overwrite.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import queue
import threading
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from edge.video.detections import Detections

SLOTS = 3


class FrameSlots:
    """A ring of `slots` frames of at most `max_bytes` each, in one shared-memory block."""

    def __init__(self, name: str | None, max_bytes: int, slots: int = SLOTS,
                 create: bool = True) -> None:
        self.max_bytes = max_bytes
        self.slots = slots
        self.shm = shared_memory.SharedMemory(name=name, create=create,
                                              size=max_bytes * slots)
        self.name = self.shm.name
        self._busy = [False] * slots
        self._next = 0
        self._lock = threading.Lock()

    def put(self, frame: np.ndarray) -> int | None:
        """Copy `frame` into a free slot; its number, or None when all are still in use."""
        if frame.nbytes > self.max_bytes:
            raise ValueError(f"a frame of {frame.nbytes} bytes does not fit a slot of "
                             f"{self.max_bytes}")
        with self._lock:
            for i in range(self.slots):
                slot = (self._next + i) % self.slots
                if not self._busy[slot]:
                    self._busy[slot] = True
                    self._next = slot + 1
                    break
            else:
                return None
        self.view(slot, frame.shape, frame.dtype)[...] = frame
        return slot

    def view(self, slot: int, shape: tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
        """The slot's frame in place (no copy)."""
        return np.ndarray(shape, dtype=dtype, buffer=self.shm.buf,
                          offset=slot * self.max_bytes)

    def free(self, slot: int) -> None:
        with self._lock:
            self._busy[slot] = False

    def close(self, unlink: bool = True) -> None:
        self.shm.close()
        if unlink:
            self.shm.unlink()


@dataclass(frozen=True, slots=True)
class Request:
    camera: str
    shm: str  # the shared-memory block's name
    max_bytes: int
    slot: int
    shape: tuple[int, ...]
    t_ms: int


@dataclass(frozen=True, slots=True)
class Answer:
    camera: str
    slot: int
    t_ms: int
    detections: Detections | None
    error: str | None = None


def detector_main(config: dict[str, Any], requests: Any, answers: Any) -> None:
    """The detector process: load the model once, warm it up, then answer requests."""
    from edge.video.detectors.registry import create

    detector = create(config, source="detector")
    detector.warm_up()
    answers.put("ready")
    blocks: dict[str, shared_memory.SharedMemory] = {}
    while True:
        request = requests.get()
        if request is None:
            break
        try:
            block = blocks.get(request.shm)
            if block is None:
                block = blocks[request.shm] = shared_memory.SharedMemory(name=request.shm)
            image = np.ndarray(request.shape, dtype=np.uint8, buffer=block.buf,
                               offset=request.slot * request.max_bytes)
            found = detector.detect(image)
            answers.put(Answer(request.camera, request.slot, request.t_ms, found))
        except Exception as err:  # a bad frame or a model error: answered, never fatal
            answers.put(Answer(request.camera, request.slot, request.t_ms, None,
                               f"{type(err).__name__}: {err}"))
    for block in blocks.values():
        block.close()


class DetectorProcess:
    """A model in a process of its own; frames go to it through `FrameSlots`."""

    def __init__(self, config: dict[str, Any], start_timeout_s: float = 60.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.requests: multiprocessing.queues.Queue[Request | None] = ctx.Queue(maxsize=16)
        self.answers: multiprocessing.queues.Queue[Any] = ctx.Queue()
        self.process = ctx.Process(target=detector_main, args=(config, self.requests,
                                                               self.answers), daemon=True)
        self.process.start()
        ready = self.answers.get(timeout=start_timeout_s)  # models warmed up first
        if ready != "ready":
            raise RuntimeError(f"detector did not start: {ready!r}")

    def ask(self, slots: FrameSlots, camera: str, slot: int, shape: tuple[int, ...],
            t_ms: int) -> bool:
        """Queue a frame (already in `slot`); False when the detector is too far behind."""
        try:
            self.requests.put_nowait(Request(camera, slots.name, slots.max_bytes, slot,
                                             shape, t_ms))
        except queue.Full:
            return False
        return True

    def answer(self, timeout: float | None = None) -> Answer:
        result: Answer = self.answers.get(timeout=timeout)
        return result

    def stop(self) -> None:
        try:
            self.requests.put(None, timeout=1)
        except queue.Full:
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
