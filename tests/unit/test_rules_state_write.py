"""A rule-state file that cannot be written (a full disk) never stops the edge.

Before, `_write_atomic` raised ENOSPC out of `RuleEngine.save` and the daemon died with it
(issue 12, finding 5). The temporary file is made a link to /dev/full here: every write to it
fails with a real ENOSPC from the kernel, without root or a small filesystem.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from pathlib import Path

import orjson
import pytest

from tests.unit.rules_helpers import Bench

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")


def test_a_full_disk_keeps_the_state_in_memory_and_writes_it_once_there_is_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules-state.json"
    b = Bench([("gas-1", "gas_detector", None)], state_path=path)
    b.reading("gas-1", lel=30.0)
    asyncio.run(b.engine.save())
    before = path.read_bytes()
    failures: list[OSError] = []
    b.engine.on_save_failed = failures.append

    tmp = path.with_suffix(".tmp")
    tmp.symlink_to("/dev/full")
    b.reading("gas-1", lel=60.0)  # escalated: the state must be saved
    with caplog.at_level(logging.ERROR, logger="edge.rules.engine"):
        asyncio.run(b.engine.save())  # does not raise
        tmp.symlink_to("/dev/full")  # the failed write cleaned up after itself; full again
        asyncio.run(b.engine.save())  # tried again at the next save, still no room
    assert [e.errno for e in failures] == [errno.ENOSPC, errno.ENOSPC]
    assert path.read_bytes() == before  # the old state, whole
    assert not tmp.is_symlink()  # gone, not left taking room
    errors = [r for r in caplog.records if "not written" in r.getMessage()]
    assert len(errors) == 1  # a state change is logged once, not at every save

    asyncio.run(b.engine.save())  # room again: written, with the escalation
    book = orjson.loads(path.read_bytes())["book"]
    assert [e["severity"] for e in book] == ["critical"], book
    assert len(failures) == 2


def test_the_next_engine_starts_from_the_last_state_that_was_written(tmp_path: Path) -> None:
    path = tmp_path / "rules-state.json"
    b = Bench([("gas-1", "gas_detector", None)], state_path=path)
    b.reading("gas-1", lel=30.0)
    asyncio.run(b.engine.save())
    path.with_suffix(".tmp").symlink_to("/dev/full")
    b.reading("gas-1", lel=60.0)
    asyncio.run(b.engine.save())
    b.engine = b.make()  # a crash now: the escalation was not saved
    b.reading("gas-1", lel=61.0)
    # The open alert survived; its escalation is decided again, not lost.
    assert [a.severity for a in b.of("gas_leak")] == ["high", "critical", "critical"]
