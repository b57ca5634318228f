"""The edge daemon's camera workers: one process per camera, restarted within a budget.

Decoding and analysis never run on the daemon's event loop: each camera's worker is a process
of its own (`python -m edge.video.worker --spec FILE`, edge/video/worker.py) that publishes
what it sees to the gateway's broker. This module starts them, and when one dies restarts it
after a back-off (1 s, doubling to 30 s), at most `max_restarts` times a minute: past that it
waits for the minute to pass, logged once, rather than storm. A worker that exits cleanly
(stopped) or with a configuration error (a missing password file: restarting cannot help) is
not restarted; the latter is logged and counted. Every worker ends with the daemon (SIGTERM,
then SIGKILL), and asks Linux to end it if the daemon is killed.

The worker's spec file (`{data_dir}/video/{camera}/worker.json`) holds the camera's config
and the broker's, never a password: those stay in their files or environment variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

import orjson

from edge.video.config import CameraConfig
from shouwang.backoff import Backoff
from shouwang.config import BrokerConfig
from shouwang.metrics import Metrics

log = logging.getLogger(__name__)
EXIT_CONFIG = 2  # edge/video/worker.py: a configuration error
STOP_TIMEOUT_S = 5.0
RESTART_WINDOW_S = 60.0


class CameraSupervisor:
    def __init__(
        self, cameras: list[CameraConfig], broker: BrokerConfig, data_dir: Path,
        metrics: Metrics, max_restarts: int = 5,
    ) -> None:
        self.cameras = cameras
        self.broker = broker
        self.data_dir = data_dir
        self.max_restarts = max_restarts
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.restarts: dict[str, int] = {c.id: 0 for c in cameras}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._restarted = metrics.counter(
            "shouwang_camera_worker_restarts_total", "Camera worker processes restarted",
            ["camera"],
        )
        self._running = metrics.gauge(
            "shouwang_camera_workers_running", "Camera worker processes running"
        )

    def directory(self, camera: str) -> Path:
        """Where a camera's worker keeps its spec, log and evidence files."""
        return self.data_dir / "video" / camera

    async def start(self) -> None:
        for camera in self.cameras:
            self._tasks.append(
                asyncio.create_task(self._keep_running(camera), name=f"camera-{camera.id}")
            )

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await asyncio.gather(*(self._end(p) for p in self.procs.values()))
        self.procs.clear()
        self._running.set(0)

    async def _end(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def _keep_running(self, camera: CameraConfig) -> None:
        recent: deque[float] = deque()
        backoff = Backoff(1.0, 30.0)
        while not self._stopping:
            started = time.monotonic()
            proc = await self._spawn(camera)
            code = await proc.wait()
            self.procs.pop(camera.id, None)
            self._running.set(len(self.procs))
            if self._stopping:
                return
            if code == 0:
                log.info("camera %s: worker exited cleanly; not restarted", camera.id)
                return
            if code == EXIT_CONFIG:
                log.error("camera %s: worker stopped on a configuration error (see %s); "
                          "not restarted", camera.id, self.directory(camera.id) / "worker.log")
                return
            if time.monotonic() - started > RESTART_WINDOW_S:
                backoff.reset()  # it ran a good while: this is a new failure, not a storm
            now = time.monotonic()
            recent.append(now)
            while recent and now - recent[0] > RESTART_WINDOW_S:
                recent.popleft()
            wait = backoff.next()
            if len(recent) > self.max_restarts:
                wait = max(wait, RESTART_WINDOW_S - (now - recent[0]))
                log.error("camera %s: worker died %d times in a minute (last exit %s); "
                          "next try in %.0f s", camera.id, len(recent), code, wait)
            else:
                log.warning("camera %s: worker exited with %s; restarting in %.0f s",
                            camera.id, code, wait)
            await asyncio.sleep(wait)
            self.restarts[camera.id] += 1
            self._restarted.labels(camera.id).inc()

    async def _spawn(self, camera: CameraConfig) -> asyncio.subprocess.Process:
        directory = self.directory(camera.id)
        spec = directory / "worker.json"
        out = await asyncio.to_thread(self._write_spec, spec, camera)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edge.video.worker", "--spec", str(spec),
                "--log-file", str(directory / "worker.log"),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
            )
        finally:
            out.close()  # the child has its own copy: a crash's traceback lands there
        self.procs[camera.id] = proc
        self._running.set(len(self.procs))
        log.info("camera %s: worker started (pid %d) for %s", camera.id, proc.pid,
                 camera.redacted_url)
        return proc

    def _write_spec(self, path: Path, camera: CameraConfig) -> IO[bytes]:
        """Write the worker's spec; returns its raw-output file (opened for appending)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        spec: dict[str, Any] = {
            "camera": camera.model_dump(mode="json"),
            "broker": self.broker.model_dump(mode="json"),
            "evidence_dir": str(path.parent / "evidence"),
            "data_dir": str(self.data_dir),  # the watchlist store (analytics: [face])
        }
        path.write_bytes(orjson.dumps(spec))
        return open(path.parent / "worker.out", "ab")
