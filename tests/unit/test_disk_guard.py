"""The disk guard: when the disk is full, when it has room again, and what a restart knows."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from edge.disk import LOW_WATER_BYTES, MIN_HEADROOM_BYTES, DiskGuard, is_disk_full

MiB = 1024 * 1024


class Disk:
    """Free space as the test says it is."""

    def __init__(self, free: int) -> None:
        self.free_bytes = free

    def __call__(self, directory: Path) -> int:
        return self.free_bytes


def test_a_write_without_room_releases_the_reserve_and_room_brings_it_back(
    tmp_path: Path,
) -> None:
    disk = Disk(100 * MiB)
    guard = DiskGuard(tmp_path, 2 * MiB, free=disk)
    guard.prepare()
    guard.settle()
    assert guard.reserve.held() == 2 * MiB
    assert not guard.full

    assert guard.write_failed(sqlite3.OperationalError("database or disk is full"))
    assert guard.full
    assert guard.reserve.held() == 0  # its blocks are the room life-safety writes into
    assert guard.reserve.path.exists()  # empty: the mark a restart reads

    disk.free_bytes = 2 * MiB + MiB  # room for the reserve, not for as much again
    assert not guard.check()
    assert guard.full
    disk.free_bytes = 4 * MiB
    assert guard.check()
    assert not guard.full
    assert guard.reserve.held() == 2 * MiB


def test_almost_no_room_is_a_full_disk_before_any_write_fails(tmp_path: Path) -> None:
    disk = Disk(100 * MiB)
    guard = DiskGuard(tmp_path, 0, free=disk)
    guard.prepare()
    guard.settle()
    disk.free_bytes = LOW_WATER_BYTES - 1
    assert guard.check()
    assert guard.full
    disk.free_bytes = MIN_HEADROOM_BYTES - 1  # no reserve: room is the headroom alone
    assert not guard.check()
    disk.free_bytes = MIN_HEADROOM_BYTES
    assert guard.check()
    assert not guard.full


def test_a_restart_during_an_episode_takes_it_up_without_announcing_it_again(
    tmp_path: Path,
) -> None:
    disk = Disk(100 * MiB)
    first = DiskGuard(tmp_path, MiB, free=disk)
    first.prepare()
    first.settle()
    first.enter("a test")
    disk.free_bytes = 2 * MiB - 1
    second = DiskGuard(tmp_path, MiB, free=disk)
    second.prepare()
    second.settle()
    assert second.full
    assert (second.told_site, second.told_cloud) == (True, True)  # the first run said it
    disk.free_bytes = 2 * MiB
    assert second.check()
    assert not second.full  # and the recovery is what is left to say


def test_a_full_disk_at_start_is_an_episode_of_its_own(tmp_path: Path) -> None:
    guard = DiskGuard(tmp_path, MiB, free=Disk(0))
    guard.prepare()
    guard.settle()
    assert guard.full
    assert (guard.told_site, guard.told_cloud) == (False, False)  # to be announced


def test_what_counts_as_a_full_disk() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EIO, "Input/output error"))
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
