"""What an evidence package costs: export time and the event loop's lag while it is built.

Starts the cloud's API in this process with one alert holding N clips of 64 MiB (random bytes:
the size is what matters, not the picture), then downloads `GET /api/alerts/{id}/package` while
a ticker on the same event loop measures how late its 10 ms sleeps wake (the loop's lag: what an
SOS arriving during an export would wait). Baselines in the same run: the loop's lag at rest,
downloading the same clips one by one through the evidence route (no zip, no signing), and
reading and hashing the blobs alone. Then `shouwang evidence verify` on the package.

    .venv/bin/python bench/evidence_package.py --clips 3
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cloud.config import CloudConfig  # noqa: E402
from cloud.server import CloudServer  # noqa: E402
from shouwang.evidence_package import verify  # noqa: E402
from shouwang.protocol import make_envelope  # noqa: E402

PASSWORD = "bench-password-not-secret"
MIB = 1024 * 1024


class Lag:
    """The worst and median lateness of a 10 ms sleep on this loop while running."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(0.01)
            self.samples.append((loop.time() - t0 - 0.01) * 1000)

    def __enter__(self) -> Lag:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def summary(self) -> str:
        s = sorted(self.samples) or [0.0]
        return f"{s[len(s) // 2]:.1f} | {s[int(len(s) * 0.99)]:.1f} | {s[-1]:.1f}"


async def download(http: aiohttp.ClientSession, url: str, headers: dict[str, str],
                   out: Path | None = None) -> int:
    size = 0
    async with http.get(url, headers=headers) as res:
        assert res.status == 200, await res.text()
        with (out.open("wb") if out else open(os.devnull, "wb")) as f:  # noqa: ASYNC230
            async for chunk in res.content.iter_chunked(MIB):
                size += len(chunk)
                f.write(chunk)
    return size


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=3, help="clips of 64 MiB on the alert")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shouwang-bench-package-"))
    config = CloudConfig.model_validate({
        "broker": {}, "database_url": f"sqlite+aiosqlite:///{work}/cloud.sqlite",
        "http": {"port": 0}, "ingest": False, "evidence": {"dir": str(work / "blobs")},
    })
    server = CloudServer(config)
    await server.start()
    try:
        assert server.access is not None
        assert server.store is not None
        assert server.evidence is not None
        await server.access.add_user("police", PASSWORD, "police", locations=["d1"])
        alert = await server.store.insert_alert(make_envelope(
            site="s-1", device="cam-1", kind="alert", ts=1_795_000_000_000, body={
                "type": "tamper", "severity": "high", "subject": "device:cam-1",
                "dedup_key": "device:cam-1|tamper", "location": "d1/s1/c1/g1",
                "life_safety": False}))
        assert alert is not None
        hashes = []
        for i in range(args.clips):
            data = os.urandom(64 * MIB)
            sha = hashlib.sha256(data).hexdigest()
            path = server.evidence.path(sha)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            hashes.append(sha)
            await server.evidence.insert(make_envelope(
                site="s-1", device="cam-1", kind="evidence", ts=1_795_000_000_000 + i, body={
                    "sha256": sha, "size": len(data), "content_type": "video/mp4",
                    "alert": alert["id"], "captured_ts": 1_795_000_000_000 + i}), 0)
        base = f"http://127.0.0.1:{server.http_port}"
        total = args.clips * 64
        rows = []
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/login",
                                 json={"username": "police", "password": PASSWORD}) as res:
                headers = {"Authorization": f"Bearer {(await res.json())['token']}"}
            with Lag() as idle:
                await asyncio.sleep(2)
            rows.append(("baseline: the loop at rest, 2 s", "", "", idle.summary()))

            t0 = time.perf_counter()
            for sha in hashes:
                await asyncio.to_thread(
                    lambda s=sha: hashlib.sha256(server.evidence.path(s).read_bytes()))  # type: ignore[union-attr]
            took = time.perf_counter() - t0
            rows.append(("baseline: read and SHA-256 the blobs (a thread)", f"{took:.2f}",
                         f"{total / took:.0f}", ""))

            with Lag() as lag:
                t0 = time.perf_counter()
                for sha in hashes:
                    await download(http, f"{base}/api/alerts/{alert['id']}/evidence/{sha}",
                                   headers)
                took = time.perf_counter() - t0
            rows.append(("baseline: the clips one by one, evidence route", f"{took:.2f}",
                         f"{total / took:.0f}", lag.summary()))

            package = work / "package.zip"
            with Lag() as lag:
                t0 = time.perf_counter()
                size = await download(http, f"{base}/api/alerts/{alert['id']}/package",
                                      headers, package)
                took = time.perf_counter() - t0
            rows.append((f"package: {args.clips} × 64 MiB, built, signed, sent",
                         f"{took:.2f}", f"{size / MIB / took:.0f}", lag.summary()))
        t0 = time.perf_counter()
        report = await asyncio.to_thread(verify, package)
        took = time.perf_counter() - t0
        assert report.ok, report.lines()
        rows.append(("shouwang evidence verify (embedded key)", f"{took:.2f}",
                     f"{size / MIB / took:.0f}", ""))
        print(f"\nEvidence package of {args.clips} clip(s) of 64 MiB "
              f"({size / MIB:.1f} MiB zip), SQLite, one process\n")
        print("| what | seconds | MiB/s | loop lag p50 ms | p99 ms | max ms |")
        print("|---|---|---|---|---|---|")
        for name, secs, rate, lagged in rows:
            cells = lagged.split(" | ") if lagged else ["", "", ""]
            print(f"| {name} | {secs} | {rate} | {' | '.join(cells)} |")
    finally:
        await server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
