"""What scoping costs: `GET /api/alerts` for each role over a large alert table.

Fills a fresh SQLite store with N alerts spread over 20 police stations × 10 grids and
N/10 residents, starts the cloud's API in this process and times the first page
(`limit=100`) for each role. Baseline in the same run: the admin, whose scope adds no SQL
condition, and the same admin query straight through `Store.list_alerts` without HTTP.

    .venv/bin/python bench/api_scope.py --alerts 100000 --requests 200
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import pct  # type: ignore[import-not-found]  # noqa: E402

from cloud.config import CloudConfig  # noqa: E402
from cloud.server import CloudServer  # noqa: E402
from cloud.store import alerts  # noqa: E402

PASSWORD = "bench-password-not-secret"
STATIONS, GRIDS = 20, 10


def location(n: int) -> str:
    return f"d1/s{n % STATIONS}/c{n % STATIONS}/g{(n // STATIONS) % GRIDS}/b1/u1/f1/{n % 97}"


async def fill(server: CloudServer, n: int) -> None:
    assert server.store is not None
    rows = []
    for i in range(n):
        rows.append({
            "id": f"A{i:012d}", "site": "s", "type": "sos" if i % 3 else "fall",
            "severity": "critical", "device": f"d{i}", "subject": f"resident:r-{i % (n // 10)}",
            "dedup_key": "x", "resident": f"r-{i % (n // 10)}", "location": location(i),
            "life_safety": True, "ts": 1_795_000_000_000 + i, "received_ms": 0,
            "state": "open" if i % 5 else "resolved", "state_changed_ms": 0,
            "body": {"detail": {"event": "press"}},
        })
    async with server.store.engine.begin() as conn:
        for start in range(0, n, 10_000):
            await conn.execute(alerts.insert(), rows[start:start + 10_000])


async def timed(http: aiohttp.ClientSession, url: str, headers: dict[str, str], k: int
                ) -> tuple[list[float], int]:
    times, count = [], 0
    for _ in range(k):
        t0 = time.perf_counter()
        async with http.get(url, headers=headers) as res:
            assert res.status == 200, await res.text()
            count = len((await res.json())["alerts"])
        times.append(time.perf_counter() - t0)
    return times, count


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alerts", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shouwang-bench-scope-"))
    config = CloudConfig.model_validate({
        "broker": {}, "database_url": f"sqlite+aiosqlite:///{work}/cloud.sqlite",
        "http": {"port": 0}, "ingest": False,
    })
    server = CloudServer(config)
    await server.start()
    try:
        assert server.access is not None
        assert server.store is not None
        await fill(server, args.alerts)
        await server.access.add_user("admin", PASSWORD, "admin")
        await server.access.add_user("police", PASSWORD, "police", locations=["d1/s3/c3"])
        await server.access.add_user("worker", PASSWORD, "worker", locations=["d1/s3/c3/g4"])
        await server.access.add_user("family", PASSWORD, "family", residents=["r-7"])
        base = f"http://127.0.0.1:{server.http_port}"
        cases = [
            ("baseline: Store.list_alerts, no HTTP, no scope", None, ""),
            ("baseline: admin (scope adds no condition)", "admin", ""),
            ("police, one station of 20", "police", ""),
            ("police, one station, state=open&type=fall", "police", "&state=open&type=fall"),
            ("worker, one grid of 200", "worker", ""),
            (f"family, one resident of {args.alerts // 10}", "family", ""),
        ]
        print(f"\nGET /api/alerts?limit=100 over {args.alerts:,} alerts (SQLite), "
              f"{args.requests} requests each, ms\n")
        print("| caller | rows returned | p50 | p95 | max |")
        print("|---|---|---|---|---|")
        async with aiohttp.ClientSession() as http:
            for name, user, query in cases:
                if user is None:
                    times = []
                    for _ in range(args.requests):
                        t0 = time.perf_counter()
                        page = await server.store.list_alerts(limit=100)
                        times.append(time.perf_counter() - t0)
                    count = len(page)
                else:
                    async with http.post(f"{base}/api/login",
                                         json={"username": user, "password": PASSWORD}) as res:
                        headers = {"Authorization": f"Bearer {(await res.json())['token']}"}
                    times, count = await timed(http, f"{base}/api/alerts?limit=100{query}",
                                               headers, args.requests)
                ms = [t * 1000 for t in times]
                print(f"| {name} | {count} | {pct(ms, 50):.1f} | {pct(ms, 95):.1f} | "
                      f"{max(ms):.1f} |")
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
