"""What one gateway-watchdog round costs over many sites (every worker runs one per `poll_s`).

Fills a fresh SQLite store with N reporting sites, a tenth of them silent, raises their
alerts in a first round, then times steady rounds (nothing to raise, nothing to resolve) and
a round in which every silent site comes back (resolutions). Baseline in the same run: the
two SELECTs a round starts with, without the per-site work.

    .venv/bin/python bench/watchdog.py --sites 10000 --rounds 20
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import pct  # type: ignore[import-not-found]  # noqa: E402
from sqlalchemy import select, update  # noqa: E402

from cloud.schema import alerts, sites  # noqa: E402
from cloud.store import Store  # noqa: E402
from cloud.watchdog import ALERT_TYPE, OPEN_STATES, Watchdog, WatchdogConfig  # noqa: E402
from shouwang.clock import ManualClock  # noqa: E402


async def main(n: int, rounds: int) -> None:
    clock = ManualClock()
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.connect(f"sqlite+aiosqlite:///{tmp}/bench.sqlite")
        now = clock.now_ms()
        silent = {f"site-{i}" for i in range(0, n, 10)}
        async with store.engine.begin() as conn:
            await conn.execute(sites.insert(), [
                {"id": f"site-{i}", "registered_ms": 0,
                 "heard_ms": now - (600_000 if f"site-{i}" in silent else 1_000)}
                for i in range(n)
            ])
        dog = Watchdog(store, clock, WatchdogConfig(), on_alert=lambda a: None,
                       on_change=lambda a: None)
        t0 = time.perf_counter()
        raised, _ = await dog.round()
        first = time.perf_counter() - t0
        assert raised == len(silent), raised

        async def baseline() -> None:
            async with store.engine.connect() as conn:
                (await conn.execute(select(sites.c.id, sites.c.heard_ms, sites.c.offline_ms)
                                    .where(sites.c.heard_ms.is_not(None)))).all()
                (await conn.execute(select(alerts.c.id).where(
                    alerts.c.type == ALERT_TYPE, alerts.c.state.in_(OPEN_STATES)))).all()

        base, steady = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            await baseline()
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert await dog.round() == (0, 0)
            steady.append(time.perf_counter() - t0)
        async with store.engine.begin() as conn:
            await conn.execute(update(sites).values(heard_ms=now + 1))
        t0 = time.perf_counter()
        _, resolved = await dog.round()
        back = time.perf_counter() - t0
        assert resolved == len(silent), resolved
        await store.close()
    print(f"sites={n} silent={len(silent)} rounds={rounds} (SQLite, one worker)")
    print(f"{'what':<40} {'ms':>10}")
    print(f"{'baseline: the two SELECTs (median)':<40} {pct(base, 50) * 1000:>10.1f}")
    print(f"{'steady round (median)':<40} {pct(steady, 50) * 1000:>10.1f}")
    print(f"{f'first round, raises {len(silent)}':<40} {first * 1000:>10.1f}")
    print(f"{f'round that resolves {len(silent)}':<40} {back * 1000:>10.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # a line per raised alert is not the point here
    asyncio.run(main(args.sites, args.rounds))
