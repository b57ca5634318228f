"""The gateway's enrolment retention: expired enrolments leave, a missing key is said once."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest

from edge.video.face.expiry import EnrolmentExpiry
from edge.video.face.store import WatchlistStore
from shouwang.clock import ManualClock
from shouwang.metrics import Metrics

DAY_MS = 86_400_000


def test_a_missing_key_is_logged_once_and_nothing_is_removed_or_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    store = WatchlistStore(tmp_path)
    store.enrol(person="r-1", list_name="missing_elder", consent="CF-1", entered_by="t",
                photos=["ab" * 32], embeddings=np.full((1, 192), 1 / np.sqrt(192)),
                model="mobilefacenet")
    key = store.key_file.read_bytes()
    store.key_file.unlink()
    expiry = EnrolmentExpiry(tmp_path, clock, Metrics("edge"))
    clock.advance(400 * DAY_MS)
    with caplog.at_level(logging.ERROR, logger="edge.video.face.expiry"):
        assert asyncio.run(expiry.check()) == 0
        assert asyncio.run(expiry.check()) == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "watchlist.key is missing" in errors[0]
    assert expiry.checks == 2
    # The key is back: the expired enrolment goes, counted by list.
    store.key_file.write_bytes(key)
    store.key_file.chmod(0o600)
    assert asyncio.run(expiry.check()) == 1
    assert store.load() == []
    assert expiry.expired.labels("missing_elder")._value.get() == 1
