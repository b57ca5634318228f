"""The edge daemon's commit of a batch: a failed commit is retried without losing an alert."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
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

        async def full_once(
            rows: list[NewRow], now_ms: int, dropped: Sequence[NewRow] = ()
        ) -> list[bool]:
            calls.append(len(rows))
            if len(calls) == 1:
                raise sqlite3.OperationalError("database or disk is full")
            return await real_put(rows, now_ms, dropped)

        async def shed(nbytes: int) -> int:
            return nbytes  # room was made

        daemon.outbox.put_many = full_once  # type: ignore[method-assign]
        daemon.outbox.shed = shed  # type: ignore[method-assign]
        press = make_envelope(site=None, device="btn-1", kind="event", body={"event": "press"})
        message = Message(device_topic("btn-1", "event"), press.to_bytes(), 1, False, 1)
        await daemon._store_with_retry([message])
        assert calls[:2] == [calls[0], calls[0]]  # refused once, then the same rows committed
        stored: Any = await daemon.outbox.next_batch(10, priorities=[Priority.LIFE_SAFETY])
        assert len(stored) == 1
        assert press.id in stored[0].payload.decode()  # the SOS names the press it came from
    finally:
        await daemon.outbox.close()


def button_site(tmp_path: Path, buttons: int = 1) -> EdgeConfig:
    return EdgeConfig(
        site="s-1", edge_broker=BrokerConfig(port=1), cloud_broker=BrokerConfig(port=1),
        data_dir=tmp_path, http=HttpConfig(port=0),
        devices=[
            DeviceBinding(id=f"btn-{i}", profile="emergency_button", resident=f"r-{i}")
            for i in range(1, buttons + 1)
        ] + [DeviceBinding(id="wear-1", profile="wearable")],
    )


def press(device: str) -> tuple[str, Message]:
    env = make_envelope(site=None, device=device, kind="event", body={"event": "press"})
    return env.id, Message(device_topic(device, "event"), env.to_bytes(), 1, False, 1)


def reading(device: str) -> Message:
    env = make_envelope(site=None, device=device, kind="telemetry", body={"heart_rate": 70})
    return Message(device_topic(device, "telemetry"), env.to_bytes(), 0, False, 0)


async def test_an_sos_that_cannot_be_stored_goes_out_around_the_outbox_until_it_is(
    tmp_path: Path,
) -> None:
    """Nothing can be written: the SOS is announced on site and published straight to the cloud
    broker (once each), the commit is tried again with a back-off, and the batch returns (its
    messages are acknowledged) only once the SOS is stored. Nothing raises."""
    daemon = EdgeDaemon(button_site(tmp_path))
    await daemon.outbox.open()
    try:
        real_put = daemon.outbox.put_many
        attempts: list[tuple[int, bool]] = []  # rows tried, and whether an SOS was among them
        announced: list[tuple[list[bytes], str]] = []
        published: list[tuple[str, bytes]] = []

        async def no_room(
            rows: list[NewRow], now_ms: int, dropped: Sequence[NewRow] = ()
        ) -> list[bool]:
            attempts.append((len(rows), any(r.priority == Priority.LIFE_SAFETY for r in rows)))
            if len(attempts) <= 4:
                raise sqlite3.OperationalError("database or disk is full")
            return await real_put(rows, now_ms, dropped)

        async def shed(nbytes: int) -> int:
            return 0  # nothing lower to give

        async def announce(envelopes: list[bytes], reason: str = "") -> int:
            announced.append((envelopes, reason))
            return len(envelopes)

        async def publish(topic: str, payload: bytes, **kwargs: Any) -> None:
            published.append((topic, payload))

        daemon.outbox.put_many = no_room  # type: ignore[method-assign]
        daemon.outbox.shed = shed  # type: ignore[method-assign]
        daemon.fallback.announce = announce  # type: ignore[method-assign]
        daemon.cloud_mqtt.publish = publish  # type: ignore[method-assign]
        daemon.cloud_mqtt._connected.set()  # as if connected: publish is faked above
        press_id, message = press("btn-1")
        await daemon._store_with_retry([message, reading("wear-1")])

        # Refused four times, the reading shed at the door after the first, then committed
        # (the other tries in between are the disk_full health message's).
        with_sos = [n for n, sos in attempts if sos]
        assert with_sos[0] == 6
        assert set(with_sos[1:]) == {5}
        assert len(attempts) > 4
        [sos] = await daemon.outbox.next_batch(10, priorities=[Priority.LIFE_SAFETY])
        assert press_id in sos.payload.decode()
        # Announced on every failed round (the fallback says each alert once), sent once.
        assert {p for envelopes, _ in announced for p in envelopes} == {sos.payload}
        assert "cannot write to its disk" in announced[0][1]
        assert published == [("site/s-1/up/alert", sos.payload)]
        # The disk is full: the reading was shed at the door, and counted.
        assert daemon.outbox.disk.full
        assert await daemon.outbox.next_batch(10, priorities=[Priority.TELEMETRY]) == []
        [drops] = await daemon.outbox.drops()
        assert (drops.priority, drops.items) == (Priority.TELEMETRY, 1)
    finally:
        await daemon.outbox.close()


async def test_a_full_disk_sheds_telemetry_at_the_door_and_stores_every_sos(
    tmp_path: Path,
) -> None:
    daemon = EdgeDaemon(button_site(tmp_path, buttons=3))
    await daemon.outbox.open()
    try:
        daemon.outbox.disk.enter("a test")
        ids = []
        batch = []
        for i in range(1, 4):
            press_id, message = press(f"btn-{i}")
            ids.append(press_id)
            batch += [message, reading("wear-1")]
        await daemon._store_with_retry(batch)
        stored = await daemon.outbox.next_batch(10, priorities=[Priority.LIFE_SAFETY])
        assert len(stored) == 3
        assert await daemon.outbox.next_batch(10, priorities=[Priority.TELEMETRY]) == []
        assert sorted(i for i in ids if any(i in r.payload.decode() for r in stored)) == sorted(ids)
        [drops] = await daemon.outbox.drops()
        assert (drops.priority, drops.items) == (Priority.TELEMETRY, 3)
    finally:
        await daemon.outbox.close()
