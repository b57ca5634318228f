"""Room on the gateway's disk for life-safety: a reserve file, and the `disk_full` state.

The reserve is a pre-allocated file (`outbox.reserve`, `outbox.reserve_mib`) next to the
outbox. When a write fails for want of space, or free space falls below `LOW_WATER_BYTES`, the
gateway is `disk_full`: the reserve is released (truncated to zero, its blocks go back to the
filesystem), so the outbox can still commit life-safety rows, write-ahead log frames and
checkpoints, and the rule state can still be written; telemetry and bulk rows are shed at the
door. The state clears by itself once there is room for the reserve and as much again: the
reserve is re-created first. A zero-length reserve file is the mark a released reserve leaves,
so a gateway restarted on a full disk knows it is still in the episode a previous run started.
docs/disk.md tells the whole story and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)
RESERVE_NAME = "outbox.reserve"
MiB = 1024 * 1024
LOW_WATER_BYTES = 256 * 1024  # less free than this is a full disk, before a write fails
MIN_HEADROOM_BYTES = 1 * MiB  # beyond the reserve, free space needed to leave disk_full
CHECK_S = 5.0  # free space is looked at this often
CHECK_FULL_S = 2.0  # ... and this often while the disk is full
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# SQLite reports a full disk as SQLITE_FULL, except where it grows its shared-memory index
# (measured: opening a WAL database on a full tmpfs fails with SQLITE_IOERR_SHMSIZE).
_FULL_SQLITE = {"SQLITE_FULL", "SQLITE_IOERR_SHMSIZE"}


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `directory`."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def is_disk_full(err: BaseException) -> bool:
    """Whether an error is the disk (or a quota) running out of room."""
    if isinstance(err, OSError):
        return err.errno in _FULL_ERRNOS
    if isinstance(err, sqlite3.Error):
        return getattr(err, "sqlite_errorname", "") in _FULL_SQLITE or "is full" in str(err)
    return False


class Reserve:
    """A file whose blocks are held for the day the disk is full."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def held(self) -> int:
        """Bytes the reserve holds now (0 when released or never made)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def was_released(self) -> bool:
        """The file is there but empty: a run released it and did not get it back."""
        return self.size > 0 and self.path.exists() and self.held() == 0

    def ensure(self) -> bool:
        """Allocate the reserve (real blocks, not a sparse file); False when there is no room."""
        if self.size <= 0 or self.held() >= self.size:
            return True
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            # Half a reserve would be counted as held; what it took goes back.
            with contextlib.suppress(OSError):
                os.truncate(self.path, 0)
            if err.errno in _FULL_ERRNOS:
                return False
            # Not for want of room (a filesystem that cannot allocate, permissions): run
            # without a reserve rather than call the disk full for ever.
            log.error("disk reserve %s cannot be made (%s): running without one", self.path, err)
            self.size = 0
        return True

    def release(self) -> int:
        """Give the reserve's blocks back to the filesystem; returns how many bytes."""
        held = self.held()
        if held:
            # Truncated, not removed: the empty file says "released" to the next start.
            os.truncate(self.path, 0)
        return held


class DiskGuard:
    """The `disk_full` state of the data directory, with the reserve that backs it.

    Thread-safe: the outbox's thread reports write failures and runs the checks, the event loop
    reads the state. `told_site` and `told_cloud` are what the local alarm and the cloud were
    last told, so each change is announced once each way.
    """

    def __init__(
        self,
        directory: Path,
        reserve_bytes: int,
        free: Callable[[Path], int] = free_bytes,
    ) -> None:
        self.directory = directory
        self.reserve = Reserve(directory / RESERVE_NAME, reserve_bytes)
        self.full = False
        self.reason = ""
        self.since_ms: int | None = None
        self.episodes = 0
        self.told_site = False
        self.told_cloud = False
        self._free = free
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def headroom(self) -> int:
        """Free bytes needed beyond the reserve before the disk counts as having room again."""
        return max(self.reserve.size, MIN_HEADROOM_BYTES)

    def free(self) -> int:
        try:
            return self._free(self.directory)
        except OSError:
            return 0

    # --- called on the outbox's thread -------------------------------------------------------

    def prepare(self) -> None:
        """Before the outbox opens: take up an episode a previous run left, or start one now
        (opening a WAL database needs room for its shared-memory index and log)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.reserve.was_released():
            with self._lock:
                self._set_full("released by a previous run")
                # That run told the site and the cloud; what is left to say is the recovery.
                self.told_site = self.told_cloud = True
            return
        if self.free() < LOW_WATER_BYTES:
            self.enter(f"{self.free()} bytes free at start")

    def settle(self) -> None:
        """After the outbox opened: hold the reserve, or be full if it cannot be had."""
        if self.full:
            return
        if not self.reserve.ensure():
            self.enter("no room for the disk reserve")

    def write_failed(self, err: BaseException) -> bool:
        """A write failed; True (and the state is `disk_full`) when it was for want of room.

        An I/O error on a disk with almost no room left is taken for a full disk too: SQLite
        reports some ENOSPC as I/O errors."""
        full = is_disk_full(err) or (
            isinstance(err, sqlite3.OperationalError)
            and getattr(err, "sqlite_errorname", "").startswith("SQLITE_IOERR")
            and self.free() < LOW_WATER_BYTES
        )
        if full:
            self.enter(f"{err}")
        return full

    def enter(self, reason: str) -> None:
        with self._lock:
            if self.full:
                return
            released = self.reserve.release()
            self._set_full(reason)
        log.error(
            "disk full in %s (%s): released the %d-byte reserve for life-safety; shedding "
            "telemetry and bulk until there is room again",
            self.directory, reason, released,
        )
        self._notify()

    def check(self) -> bool:
        """Look at free space: enter `disk_full` when it is almost gone, leave it (reserve
        re-created first) when there is room for the reserve and as much again. Returns
        whether the state changed."""
        free = self.free()
        if not self.full:
            if free < LOW_WATER_BYTES:
                self.enter(f"{free} bytes free")
                return True
            if not self.reserve.ensure():  # taken by someone else, or never made
                self.enter("no room for the disk reserve")
                return True
            return False
        if free < self.reserve.size + self.headroom:
            return False
        with self._lock:
            if not self.reserve.ensure():
                return False
            self.full = False
            since = self.since_ms
        log.warning(
            "disk has room again in %s after %.0f s (%d bytes free, %d-byte reserve held "
            "again): telemetry is stored again",
            self.directory, (_now_ms() - (since or _now_ms())) / 1000, free, self.reserve.size,
        )
        self._notify()
        return True

    def _set_full(self, reason: str) -> None:
        self.full = True
        self.reason = reason
        self.since_ms = _now_ms()
        self.episodes += 1

    # --- on the event loop -------------------------------------------------------------------

    def _notify(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def run(
        self,
        check: Callable[[], Awaitable[object]],
        on_change: Callable[[], Awaitable[None]],
    ) -> None:
        """Check the disk now and then (often while full), and tell `on_change` each round:
        it announces what changed, once. Never ends on a failed check."""
        self._loop = asyncio.get_running_loop()
        failing = False
        while True:
            try:
                await check()
                if failing:
                    log.info("disk check works again")
                failing = False
            except (OSError, sqlite3.Error) as err:
                if not failing:
                    log.error("disk check failed (will retry): %s", err)
                failing = True
            await on_change()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_FULL_S if self.full else CHECK_S):
                    await self._wake.wait()
            self._wake.clear()


def _now_ms() -> int:
    return int(time.time() * 1000)
