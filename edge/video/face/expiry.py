"""The gateway's retention of enrolled faces: an enrolment leaves the sealed watchlist when its
`until` (entered + its list's retention) has passed, each removal audited (store.py `expire`).

The edge daemon runs `check` with its gateway report, once a minute, on its injected clock; the
camera workers see the changed file at their next reload (`reload_s`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

from edge.video.face.store import WatchlistError, WatchlistStore
from shouwang.clock import Clock
from shouwang.metrics import Metrics

log = logging.getLogger(__name__)


class EnrolmentExpiry:
    def __init__(self, data_dir: Path, clock: Clock, metrics: Metrics) -> None:
        self.store = WatchlistStore(data_dir)
        self.clock = clock
        self.checks = 0  # completed checks (a test waits on it)
        self.expired = metrics.counter(
            "shouwang_face_enrolments_expired_total",
            "Enrolments removed from the gateway's watchlist at the end of their retention",
            ["list"],
        )
        self._failing: str | None = None

    async def check(self) -> int:
        """Remove what is due now; the number removed. Never raises: a missing key or a
        damaged file is logged once (and again when it changes), and tried each minute."""
        now = dt.datetime.fromtimestamp(self.clock.now_ms() / 1000, dt.UTC)
        try:
            gone = await asyncio.to_thread(self.store.expire, now)
        except (WatchlistError, OSError, ValueError) as err:
            if str(err) != self._failing:
                log.error("watchlist retention cannot run: %s", err)
                self._failing = str(err)
            return 0
        finally:
            self.checks += 1
        if self._failing is not None:
            log.info("watchlist retention runs again")
            self._failing = None
        for e in gone:  # ids only, as in the audit log
            self.expired.labels(e.list).inc()
            log.info("enrolment %s (person %s, list %s) expired at %s and was removed",
                     e.id, e.person, e.list, e.until)
        return len(gone)
