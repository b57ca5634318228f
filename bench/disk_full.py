"""What SQLite in WAL mode needs to write on a full disk: the measurements behind docs/disk.md.

Two tables, each with the settings the outbox had before (Debian's SQLite defaults:
secure_delete on, a checkpoint every 1000 pages, a claim that sets a NULL column, one
transaction per confirmation) as the baseline, against what it has now (secure_delete=FAST,
a checkpoint every 256 pages, fixed-width claims, 256 rows a transaction):

1. Write-ahead log bytes one operation writes, on any filesystem.
2. On a real 20 MiB filesystem (tmpfs, needs root) filled by telemetry rows or by another
   file: with a reserve of R bytes released at the first failure, do 10 SOS commits, the
   claim of 200 telemetry rows, the confirmation (delete) of 2,000 and a 20 KB rule-state
   write go through?

    sudo .venv/bin/python bench/disk_full.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KiB, MiB = 1024, 1024 * 1024
NOT_SENT = -(1 << 40)
SCHEMA = """
CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    priority INTEGER NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL, size INTEGER NOT NULL,
    items INTEGER NOT NULL, first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL,
    created_ms INTEGER NOT NULL, sent_ms INTEGER, published_ms INTEGER);
CREATE INDEX outbox_order ON outbox (priority, seq);
"""


@dataclass(frozen=True)
class Settings:
    name: str
    secure_delete: str
    autocheckpoint: int
    fixed_width: bool  # claims overwrite a fixed-width value instead of setting a NULL
    rows_per_tx: int  # rows claimed or deleted per transaction

    def connect(self, path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None)
        if not db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA secure_delete={self.secure_delete}")
        db.execute(f"PRAGMA wal_autocheckpoint={self.autocheckpoint}")
        with contextlib.suppress(sqlite3.OperationalError):
            db.executescript(SCHEMA)
        return db

    @property
    def unsent(self) -> int | None:
        return NOT_SENT if self.fixed_width else None


BEFORE = Settings("before (Debian defaults)", "ON", 1000, False, 1_000_000)
AFTER = Settings("now", "FAST", 256, True, 256)
_n = 0


def row(priority: int, payload: bytes, unsent: int | None) -> tuple[object, ...]:
    global _n
    _n += 1
    return (f"r{_n:010d}", priority, "t", payload, len(payload), 1, 0, 0, 0, unsent, unsent)


def telemetry(readings: int) -> bytes:
    body = [{"id": f"01J{random.getrandbits(60):020d}", "device": "wear-load-0001",
             "ts": 1_795_000_000_000, "values": {"heart_rate": random.randint(55, 95),
                                                  "spo2": 97, "worn": True, "battery": 80}}
            for _ in range(readings)]
    return json.dumps({"v": 1, "body": {"readings": body}}).encode()


INSERT = ("INSERT INTO outbox (id, priority, topic, payload, size, items, first_ts, last_ts,"
          " created_ms, sent_ms, published_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def tx(db: sqlite3.Connection, sql: str, params: list[tuple[object, ...]]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(sql, params)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def chunks(items: list[int], n: int) -> Iterator[list[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def claim(db: sqlite3.Connection, s: Settings, seqs: list[int]) -> None:
    for part in chunks(seqs, s.rows_per_tx):
        tx(db, "UPDATE outbox SET sent_ms = ?, published_ms = COALESCE(published_ms, ?)"
               " WHERE seq = ?", [(1_795_000_000_000, 1_795_000_000_000, q) for q in part])


def delete(db: sqlite3.Connection, s: Settings, seqs: list[int]) -> None:
    for part in chunks(seqs, s.rows_per_tx):
        tx(db, "DELETE FROM outbox WHERE seq = ?", [(q,) for q in part])


def wal_bytes(directory: Path, s: Settings, op: str) -> int:
    path = directory / f"log-{op}-{s.secure_delete}.sqlite"
    db = s.connect(path)
    payload = os.urandom(90_000)
    tx(db, INSERT, [row(3, payload, s.unsent) for _ in range(100)])
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    seqs = [r[0] for r in db.execute("SELECT seq FROM outbox")]
    if op == "claim":
        claim(db, s, seqs)
    elif op == "delete":
        delete(db, s, seqs)
    elif op == "sos":
        tx(db, INSERT, [row(0, os.urandom(700), s.unsent)])
    size = os.path.getsize(f"{path}-wal")
    db.close()
    return size


def fill_file(path: Path) -> None:
    with open(path, "wb", buffering=0) as f:
        for chunk in (MiB, 64 * KiB, 4 * KiB, 512):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * chunk)


def full_disk(directory: Path, s: Settings, fill: str, reserve: int) -> dict[str, object]:
    for p in directory.iterdir():
        p.unlink()
    random.seed(1)
    if reserve:
        fd = os.open(directory / "reserve", os.O_CREAT | os.O_WRONLY)
        os.posix_fallocate(fd, 0, reserve)
        os.close(fd)
    db = s.connect(directory / "outbox.sqlite")
    try:
        if fill == "telemetry":
            with contextlib.suppress(sqlite3.OperationalError):
                while True:
                    tx(db, INSERT, [row(3, telemetry(15), s.unsent)])
        else:
            for _ in range(3000):
                tx(db, INSERT, [row(3, telemetry(15), s.unsent)])
            fill_file(directory / "filler")
        with contextlib.suppress(FileNotFoundError):
            (directory / "reserve").unlink()
        result: dict[str, object] = {}
        ok = 0
        for _ in range(10):
            with contextlib.suppress(sqlite3.OperationalError):
                tx(db, INSERT, [row(0, os.urandom(700), s.unsent)])
                ok += 1
        result["sos"] = ok
        seqs = [r[0] for r in db.execute("SELECT seq FROM outbox WHERE priority = 3 ORDER BY seq")]
        for name, op, part in (("claim 200", claim, seqs[:200]), ("confirm 2000", delete,
                                                                  seqs[:2000])):
            try:
                op(db, s, part)
                result[name] = "ok"
            except sqlite3.OperationalError as err:
                result[name] = getattr(err, "sqlite_errorname", str(err))
        try:
            tmp = directory / "state.tmp"
            with open(tmp, "wb") as f:
                f.write(b"x" * 20_000)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(directory / "state.json")
            result["state"] = "ok"
        except OSError:
            result["state"] = "ENOSPC"
        return result
    finally:
        db.close()


@contextlib.contextmanager
def small_disk(mib: int) -> Iterator[Path]:
    mount = Path(tempfile.mkdtemp(prefix="shouwang-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)
        mount.rmdir()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--disk-mib", type=int, default=20)
    args = p.parse_args()
    print(f"SQLite {sqlite3.sqlite_version}, compile options include SECURE_DELETE:",
          any("SECURE_DELETE" in o for (o,) in sqlite3.connect(":memory:").execute(
              "PRAGMA compile_options")))
    print("\n| write-ahead log written by | before | now |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for op, label in (("sos", "one SOS row (700 B)"),
                          ("claim", "claim 100 rows of 90 KB"),
                          ("delete", "delete 100 rows of 90 KB")):
            b, a = (wal_bytes(Path(d), s, op) for s in (BEFORE, AFTER))
            print(f"| {label} | {b / KiB:,.0f} KiB | {a / KiB:,.0f} KiB |")
    if os.geteuid() != 0:
        print("\nthe full-disk table needs root (mount -t tmpfs)")
        return
    print(f"\n{args.disk_mib} MiB tmpfs, reserve released at the first failure, then:\n")
    print("| filled by | settings | reserve | SOS stored | claim 200 | confirm 2000 | state file |")
    print("|---|---|---|---|---|---|---|")
    with small_disk(args.disk_mib) as mount:
        for fill in ("telemetry", "file"):
            for s in (BEFORE, AFTER):
                for reserve in (0, 256 * KiB, MiB, 2 * MiB, 4 * MiB):
                    r = full_disk(mount, s, fill, reserve)
                    print(f"| {fill} | {s.name} | {reserve // KiB} KiB | {r['sos']}/10 |"
                          f" {r['claim 200']} | {r['confirm 2000']} | {r['state']} |",
                          flush=True)


if __name__ == "__main__":
    main()
