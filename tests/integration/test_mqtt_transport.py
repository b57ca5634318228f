"""The MQTT bridge under a burst: order kept across the thread hand-off, batched acks exact.

A backlog arrives through paho's thread in bursts that share one wake-up of the event loop
(`MqttClient._call`), and a stored batch is acknowledged with `ack_many` (one wake-up of
paho's thread). What a user relies on: every message arrives, in order, once; what was
acknowledged is never sent again; what was not is sent again after a reconnect.
"""

from __future__ import annotations

import asyncio

from shouwang.mqtt import Message, MqttClient
from shouwang.services import Mosquitto
from tests.conftest import broker_config, eventually, unique

N = 3000
HELD = 300  # left unacknowledged: fewer than the ReceiveMaximum (1000), or the broker stalls


async def _publish(broker: Mosquitto, topic: str, n: int) -> None:
    sender = MqttClient(broker_config(broker), client_id=unique("sender"))
    await sender.start()
    await sender.wait_connected(10)
    try:
        # In small steps: each publish takes paho's lock, which its thread holds while it
        # parses the burst arriving at the receiver, so a wide gather was one long loop step
        # (0.55 s once in a clean-clone run).
        for start in range(0, n, 20):
            await asyncio.gather(
                *(sender.publish(topic, str(k).encode()) for k in range(start, min(n, start + 20)))
            )
    finally:
        await sender.close()


async def _receive(client: MqttClient, n: int, *, ack_below: int = 0) -> list[Message]:
    """`n` messages, as batches; each batch's messages before index `ack_below` acked."""
    got: list[Message] = []
    async with asyncio.timeout(30):
        while len(got) < n:
            batch = [await client.messages()]
            batch += client.drain(n - len(got) - 1)
            client.ack_many([m for i, m in enumerate(batch, len(got)) if i < ack_below])
            got += batch
    return got


def _receiver(broker: Mosquitto, client_id: str) -> MqttClient:
    client = MqttClient(
        broker_config(broker), client_id=client_id, persistent=True, manual_ack=True
    )
    client.subscribe("burst/#", 1)
    return client


async def test_a_burst_arrives_in_order_and_only_unacknowledged_messages_come_again(
    broker: Mosquitto,
) -> None:
    client_id = unique("receiver")
    topic = f"burst/{client_id}"
    first = _receiver(broker, client_id)
    await first.start()
    await first.wait_connected(10)
    try:
        # Acknowledged batch by batch as they arrive (as the edge does after each outbox
        # commit), but for the last HELD. The PUBACKs are queued ahead of close()'s
        # DISCONNECT, so they reach the broker.
        publishing = asyncio.create_task(_publish(broker, topic, N))
        got = await _receive(first, N, ack_below=N - HELD)
        await publishing
        assert [m.payload for m in got] == [str(k).encode() for k in range(N)]
    finally:
        await first.close()

    again = _receiver(broker, client_id)
    await again.start()
    try:
        redelivered = await _receive(again, HELD, ack_below=HELD)
        assert [m.payload for m in redelivered] == [str(k).encode() for k in range(N - HELD, N)]
    finally:
        await again.close()

    # Everything is acknowledged now: a third session start gets nothing.
    last = _receiver(broker, client_id)
    await last.start()
    try:
        await last.wait_connected(10)
        await _publish(broker, topic, 1)  # a marker: once it arrives, a resend would have too
        [marker] = await _receive(last, 1)
        assert marker.payload == b"0"
        last.ack_many([marker])
        await eventually(lambda: last.queue_depth() == 0)
    finally:
        await last.close()


async def test_qos1_beyond_the_queue_bound_is_kept_and_qos0_is_dropped_and_counted(
    broker: Mosquitto,
) -> None:
    # A broker that sends more than our Receive Maximum (Mosquitto 2.0.11 did, resuming a
    # session with a backlog): a dropped QoS 1 message would never be acknowledged, and the
    # broker would hold it, an SOS among them, until the next reconnect.
    client = MqttClient(
        broker_config(broker), client_id=unique("bound"), receive_maximum=10, queue_size=20
    )
    await client.start()
    try:
        await client.wait_connected(10)
        for i in range(100):  # past the bound: max(queue_size, receive_maximum + 64)
            client._enqueue(Message("dev/b/event", b"%d" % i, 1, False, i + 1))
        for _ in range(5):
            client._enqueue(Message("dev/b/telemetry", b"q0", 0, False, 0))
        assert client.dropped_incoming == 5
        got = [await client.messages() for _ in range(100)]
        assert [m.payload for m in got] == [b"%d" % i for i in range(100)]
        assert client.drain(10) == []
    finally:
        await client.close()
