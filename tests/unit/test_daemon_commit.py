"""The edge daemon's commit of a batch: a failed commit is retried without losing an alert."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from edge.config import DeviceBinding, EdgeConfig
from edge.daemon import EdgeDaemon
from edge.outbox import NewRow, Priority
from shouwang.config import BrokerConfig, HttpConfig
from shouwang.mqtt import Message
from shouwang.protocol import device_topic, make_envelope


async def test_an_sos_whose_first_commit_hits_a_full_disk_is_still_stored(
    tmp_path: Path,
) -> None:
    """The press is taken in once and its commit retried after room was made; the SOS is
    stored, and the press stays unacknowledged until then."""
    config = EdgeConfig(
        site="s-1", edge_broker=BrokerConfig(port=1), cloud_broker=BrokerConfig(port=1),
        data_dir=tmp_path, http=HttpConfig(port=0),
        devices=[DeviceBinding(id="btn-1", profile="emergency_button", resident="r-1")],
    )
    daemon = EdgeDaemon(config)
    await daemon.outbox.open()
    try:
        real_put = daemon.outbox.put_many
        calls: list[int] = []

        async def full_once(rows: list[NewRow], now_ms: int) -> list[bool]:
            calls.append(len(rows))
            if len(calls) == 1:
                raise sqlite3.OperationalError("database or disk is full")
            return await real_put(rows, now_ms)

        async def shed(nbytes: int) -> int:
            return nbytes  # room was made

        daemon.outbox.put_many = full_once  # type: ignore[method-assign]
        daemon.outbox.shed = shed  # type: ignore[method-assign]
        press = make_envelope(site=None, device="btn-1", kind="event", body={"event": "press"})
        message = Message(device_topic("btn-1", "event"), press.to_bytes(), 1, False, 1)
        await daemon._store_with_retry([message])
        assert len(calls) == 2  # refused once, then committed
        stored: Any = await daemon.outbox.next_batch(10, priorities=[Priority.LIFE_SAFETY])
        assert len(stored) == 1
        assert press.id in stored[0].payload.decode()  # the SOS names the press it came from
    finally:
        await daemon.outbox.close()
