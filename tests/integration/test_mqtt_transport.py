"""The MQTT bridge on the event loop: bursts, batched acks, reconnects, a hung handshake.

A backlog is read in bursts on the event loop and a stored batch is acknowledged with
`ack_many`. What a user relies on: every message arrives, in order, once; what was
acknowledged is never sent again; what was not is sent again after a reconnect; a broker
that goes away and comes back is reconnected to, with the subscriptions; and a connect that
hangs (a TLS handshake nobody answers) never holds the event loop.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shouwang.config import BrokerConfig, TlsConfig
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


async def test_a_restarted_broker_is_reconnected_to_with_the_subscriptions(
    make_broker: Callable[[str], Mosquitto],
) -> None:
    broker = make_broker("restarts")
    changes: list[bool] = []
    client = MqttClient(
        broker_config(broker), client_id=unique("back"), on_connection_change=changes.append
    )
    client.subscribe("back/#", 1)
    await client.start()
    try:
        await client.wait_connected(10)
        broker.restart()
        await eventually(lambda: changes == [True, False, True], timeout=30)
        await _publish(broker, "back/1", 1)
        message = await asyncio.wait_for(client.messages(), 10)
        assert (message.topic, message.payload) == ("back/1", b"0")
    finally:
        await client.close()


def _ca_file() -> Path:
    path = ssl.get_default_verify_paths().cafile
    if path is None or not Path(path).exists():
        pytest.skip("no system CA bundle to configure TLS with")
    return Path(path)


async def test_a_tls_handshake_nobody_answers_does_not_hold_the_event_loop() -> None:
    # A listener that accepts the TCP connection and never speaks TLS: the client's handshake
    # waits for paho's connect timeout. Done on the event loop, the accept below could not run
    # until then, and the fixture fails a test whose loop was held that long.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    client = MqttClient(
        BrokerConfig(port=port, tls=TlsConfig(ca_file=_ca_file())), client_id=unique("hung")
    )
    await client.start()
    try:
        conn, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_accept(server), 10)
        await asyncio.sleep(0.2)  # the loop runs on while the handshake waits
        assert not client.connected
        conn.close()  # the handshake fails now, and the client retries with backoff
    finally:
        await client.close()
        server.close()


async def test_messages_with_and_without_properties_arrive_whole(broker: Mosquitto) -> None:
    # A PUBLISH without properties takes the client's short road, one with properties (or
    # QoS 2) paho's own: each must arrive with its topic, payload and QoS as sent.
    topic = f"props/{unique('p')}"
    receiver = MqttClient(broker_config(broker), client_id=unique("props"))
    receiver.subscribe(f"{topic}/#", 2)
    await receiver.start()
    await receiver.wait_connected(10)
    sender = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("raw"),
                         protocol=paho.MQTTv5)
    if broker.tls is not None:
        sender.tls_set(ca_certs=str(broker.tls.ca_file))
    sender.connect("127.0.0.1", broker.port)
    sender.loop_start()
    try:
        expiry = Properties(PacketTypes.PUBLISH)
        expiry.MessageExpiryInterval = 3600
        expiry.UserProperty = ("k", "v")
        sent = [
            (f"{topic}/plain0", b"a", 0, None),
            (f"{topic}/plain1", b"\x00\xff" * 300, 1, None),
            (f"{topic}/props1", b"c", 1, expiry),
            (f"{topic}/qos2", b"d", 2, None),
            (f"{topic}/\u5b88\u671b", b"", 1, None),
        ]
        for t, payload, qos, props in sent:
            sender.publish(t, payload, qos=qos, properties=props).wait_for_publish(10)
        got = [await asyncio.wait_for(receiver.messages(), 10) for _ in sent]
        # Sorted: paho hands a QoS 2 message over at its PUBREL, after those sent behind it.
        assert sorted((m.topic, m.payload, m.qos) for m in got) == sorted(
            (t, p, q) for t, p, q, _ in sent
        )
    finally:
        sender.disconnect()
        await asyncio.to_thread(sender.loop_stop)
        await receiver.close()


async def test_packets_leave_at_once_without_nagle(broker: Mosquitto) -> None:
    """An SOS is one small packet; with Nagle's algorithm it waited for the TCP ACK of the
    packet before it (press → cloud broker 21 ms median in bench/e2e_latency.py, 5 ms without)."""
    client = MqttClient(broker_config(broker), client_id=unique("nodelay"))
    await client.start()
    try:
        await client.wait_connected(10)
        sock = client._client.socket()
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        await client.close()
    # The brokers the tests and the demo start say the same for their side.
    assert "set_tcp_nodelay true" in (broker.directory / "mosquitto.conf").read_text()
