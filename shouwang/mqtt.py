"""An asyncio face on paho-mqtt 2.x: awaitable QoS 1 publishes and manual acknowledgement.

Why not aiomqtt: a message must be acknowledged to the broker only after it is safely stored
(outbox on the edge, database in the cloud), so a crash between receipt and storage makes the
broker deliver it again. paho supports that (`manual_ack=True`); aiomqtt does not expose it.

paho runs its network loop in its own thread (`loop_start`), which also reconnects with
backoff. Everything it reports (messages, PUBACKs, connection changes) goes, in order, into one
hand-off deque; the first item of a burst schedules one `call_soon_threadsafe` that runs all
waiting items on the event loop. One wake-up per burst instead of one per message: under a
backlog that was a self-pipe write, a loop iteration and a GIL hand-over per message.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shouwang.config import BrokerConfig, ConfigError

log = logging.getLogger(__name__)


# MQTT v5: a session expiry interval of 0xFFFFFFFF means the session never expires.
SESSION_NEVER_EXPIRES = 0xFFFFFFFF


class MqttError(Exception):
    """Base of every MQTT failure seen by callers."""


class MqttNotConnected(MqttError):
    """The client is not connected; the caller keeps the message and retries later."""


class MqttPublishFailed(MqttError):
    """The broker did not acknowledge a publish (disconnect, refusal or timeout)."""


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int


class _Client(paho.Client):
    """paho's client, able to queue a run of PUBACKs with one wake-up of its thread.

    paho's `ack()` queues the packet and writes a byte to wake its network thread, once per
    call: acknowledging a stored batch of 500 was 500 syscalls and 500 wake-ups fighting the
    event loop for the GIL. `ack_many` queues them all and wakes the thread once, with the last.
    The packets are the ones `ack()` makes; only the wake-up is shared.
    """

    _quiet_thread: int | None = None  # the thread queuing quietly, during ack_many only

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: paho.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        if self._quiet_thread is None or self._quiet_thread != threading.get_ident():
            return super()._packet_queue(command, packet, mid, qos, info)
        self._out_packet.append(
            {"command": command, "mid": mid, "qos": qos, "pos": 0,
             "to_process": len(packet), "packet": packet, "info": info}
        )
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: list[int]) -> None:
        """QoS 1 PUBACKs for `mids`, in order; paho's thread is woken once, by the last."""
        if not mids:
            return
        self._quiet_thread = threading.get_ident()
        try:
            for mid in mids[:-1]:
                self.ack(mid, 1)
        finally:
            self._quiet_thread = None
        self.ack(mids[-1], 1)


class MqttClient:
    """One MQTT v5 connection.

    `persistent=True` keeps the broker-side session (subscriptions and queued QoS 1 messages)
    for `session_expiry_s` while the client is away. `manual_ack=True` makes the caller
    acknowledge each received QoS 1 message with `ack()` once it has been stored.

    Incoming messages wait in a bounded queue. The broker never sends more than
    `receive_maximum` unacknowledged QoS 1 messages, and the queue's bound is larger than that;
    a QoS 1 message is never dropped here, even from a broker that breaks that promise (it
    would stay unacknowledged, held by the broker until the next reconnect). QoS 0 messages
    beyond the bound are dropped and counted in `dropped_incoming`.
    """

    def __init__(
        self,
        config: BrokerConfig,
        *,
        client_id: str,
        persistent: bool = False,
        session_expiry_s: int = 7 * 86400,
        manual_ack: bool = False,
        receive_maximum: int = 1000,
        max_inflight: int = 1000,
        queue_size: int = 4096,
        will: tuple[str, bytes] | None = None,
        will_retain: bool = True,
        on_connection_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self.client_id = config.client_id or client_id
        self.manual_ack = manual_ack
        self.dropped_incoming = 0
        self._persistent = persistent
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = receive_maximum
        self._subscriptions: dict[str, int] = {}
        self._pending: dict[int, asyncio.Future[None]] = {}
        # Unbounded, so a QoS 1 message is never refused; QoS 0 is held to `_bound` (below).
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._bound = max(queue_size, receive_maximum + 64)
        self._over_bound = False
        self._connected = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_connection_change = on_connection_change
        self._closed = False
        # paho's thread appends; the event loop drains. `_handoff_scheduled` is set by paho's
        # thread before it schedules a drain and cleared by the loop before it drains, so an
        # item is never left behind (at worst a drain finds the deque empty).
        self._handoff: deque[tuple[Callable[..., object], tuple[object, ...]]] = deque()
        self._handoff_scheduled = False

        self._client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
            manual_ack=manual_ack,
        )
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(min_delay=1, max_delay=config.reconnect_max_s)
        if config.username:
            self._client.username_pw_set(config.username, config.password())
        if config.tls:
            self._client.tls_set_context(_tls_context(config))
        if will:
            self._client.will_set(will[0], will[1], qos=1, retain=will_retain)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._subscribe_mid: int | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background; `wait_connected` waits for the first success."""
        self._loop = asyncio.get_running_loop()
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = self._receive_maximum
        if self._persistent:
            props.SessionExpiryInterval = self._session_expiry_s
        self._client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive_s,
            clean_start=not self._persistent,
            properties=props,
        )
        self._client.loop_start()

    async def wait_connected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def close(self) -> None:
        """Disconnect cleanly and stop paho's thread (joined off the event loop)."""
        self._closed = True
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self._fail_pending(MqttNotConnected("client closed"))
        self._connected.clear()

    # --- subscribe / receive -------------------------------------------------------------

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe now if connected, and again after every reconnect."""
        self._subscriptions[topic] = qos
        if self.connected:
            self._client.subscribe(topic, qos)

    async def messages(self) -> Message:
        return await self._queue.get()

    def drain(self, limit: int) -> list[Message]:
        """Up to `limit` messages already waiting, without waiting for more."""
        out: list[Message] = []
        while len(out) < limit:
            try:
                out.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return out

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def ack(self, message: Message) -> None:
        """Tell the broker a QoS 1 message is stored (only with `manual_ack=True`)."""
        if self.manual_ack and message.qos > 0:
            self._client.ack(message.mid, message.qos)

    def ack_many(self, messages: list[Message]) -> None:
        """`ack()` for each message, in order, waking paho's network thread once."""
        if not self.manual_ack:
            return
        if any(m.qos == 2 for m in messages):
            for message in messages:  # QoS 2 in the run: paho's own path, one by one
                self.ack(message)
            return
        self._client.ack_many([m.mid for m in messages if m.qos == 1])  # QoS 0: nothing

    # --- publish -------------------------------------------------------------------------

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> None:
        """Hand a message to paho without waiting for its PUBACK; raises when not connected.

        Checks the socket, not `connected`: messages a persistent session kept arrive between
        CONNACK and SUBACK, and what answers them (a confirmation) may go out at once.
        """
        if not self._client.is_connected():
            raise MqttNotConnected(f"not connected to {self.config.host}:{self.config.port}")
        self._client.publish(topic, payload, qos=qos, retain=retain)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 10.0,
    ) -> None:
        """Publish and return once the broker acknowledged it (QoS 1: PUBACK received)."""
        if not self.connected:
            raise MqttNotConnected(f"not connected to {self.config.host}:{self.config.port}")
        assert self._loop is not None
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttPublishFailed(f"publish to {topic} refused: {paho.error_string(info.rc)}")
        if qos == 0:
            return
        # No lock: paho's thread reports the PUBACK through call_soon_threadsafe, so it is
        # handled on this thread, after this synchronous registration. (Taking a lock here
        # and in paho's callback deadlocks: paho calls back while holding its own mutex.)
        future: asyncio.Future[None] = self._loop.create_future()
        self._pending[info.mid] = future
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
            # arrives together with the PUBACK, and a daemon's stop() then hangs.
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError as err:
            raise MqttPublishFailed(f"no PUBACK for {topic} within {timeout} s") from err
        finally:
            if self._pending.get(info.mid) is future:
                del self._pending[info.mid]

    # --- paho callbacks (paho's thread) --------------------------------------------------

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        self._handoff.append((fn, args))
        if self._handoff_scheduled:
            return  # a drain is scheduled and has not started: it will run this too
        self._handoff_scheduled = True
        try:
            loop.call_soon_threadsafe(self._run_handoff)
        except RuntimeError:  # loop closing while paho's thread winds down
            pass

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning(
                "mqtt connect to %s:%s refused: %s",
                self.config.host,
                self.config.port,
                reason_code,
            )
            return
        log.info(
            "mqtt connected to %s:%s as %s (session present: %s)",
            self.config.host,
            self.config.port,
            self.client_id,
            flags.session_present,
        )
        if not self._subscriptions:
            self._call(self._set_connected, True)
            return
        # Ready only once the broker confirmed the subscriptions (SUBACK): a client that
        # counted itself up at CONNACK could die before the broker knew what to keep for it.
        _, self._subscribe_mid = client.subscribe(list(self._subscriptions.items()))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if mid != self._subscribe_mid:
            return  # a later subscribe() call; readiness was settled already
        refused = [
            f"{topic} ({code})"
            for topic, code in zip(self._subscriptions, reason_codes, strict=False)
            if code.is_failure
        ]
        if refused:
            log.error("mqtt broker refused subscription(s): %s", ", ".join(refused))
        self._call(self._set_connected, True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self._closed:
            log.warning(
                "mqtt disconnected from %s:%s: %s", self.config.host, self.config.port, reason_code
            )
        self._call(self._set_connected, False)

    def _on_message(self, client, userdata, msg: paho.MQTTMessage) -> None:
        message = Message(msg.topic, bytes(msg.payload), msg.qos, msg.retain, msg.mid)
        self._call(self._enqueue, message)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        failure = str(reason_code) if reason_code.is_failure else None
        self._call(self._published, mid, failure)

    # --- event-loop side -----------------------------------------------------------------

    def _run_handoff(self) -> None:
        """Run what paho's thread reported, in order (at most a window's worth per call)."""
        self._handoff_scheduled = False
        handoff = self._handoff
        for _ in range(len(handoff)):  # what arrives meanwhile has scheduled its own drain
            fn, args = handoff.popleft()
            try:
                fn(*args)
            except Exception:  # as the loop would for its own callbacks; the rest still run
                log.exception("mqtt callback %s failed", getattr(fn, "__name__", fn))

    def _set_connected(self, up: bool) -> None:
        was = self._connected.is_set()
        if up:
            self._connected.set()
        else:
            self._connected.clear()
            self._fail_pending(MqttPublishFailed("disconnected before PUBACK"))
        if was != up and self._on_connection_change is not None:
            self._on_connection_change(up)

    def _published(self, mid: int, failure: str | None) -> None:
        future = self._pending.get(mid)
        if future is None:
            return  # timed out already, or a resend after reconnect
        if failure is not None:
            _set_exception(future, MqttPublishFailed(f"broker refused: {failure}"))
        else:
            _set_result(future)

    def _enqueue(self, message: Message) -> None:
        depth = self._queue.qsize()
        if depth < self._bound:
            self._over_bound = False
        elif message.qos == 0:
            self.dropped_incoming += 1
            if self.dropped_incoming == 1 or self.dropped_incoming % 1000 == 0:
                log.warning(
                    "incoming queue full: dropped %d QoS 0 message(s) so far (latest on %s)",
                    self.dropped_incoming,
                    message.topic,
                )
            return
        elif not self._over_bound:
            # The broker sent more than our Receive Maximum allows (seen with Mosquitto 2.0.11
            # resuming a session). A QoS 1 message dropped here would never be acknowledged:
            # the broker would hold it, an SOS among them, in flight until the next reconnect.
            self._over_bound = True
            log.warning(
                "broker exceeded receive maximum %d: %d messages waiting; keeping them all",
                self._receive_maximum,
                depth,
            )
        self._queue.put_nowait(message)

    def _fail_pending(self, err: Exception) -> None:
        for future in list(self._pending.values()):
            _set_exception(future, err)


def _tls_context(config: BrokerConfig) -> ssl.SSLContext:
    assert config.tls is not None
    try:
        context = ssl.create_default_context(cafile=str(config.tls.ca_file))
        if config.tls.cert_file and config.tls.key_file:
            context.load_cert_chain(str(config.tls.cert_file), str(config.tls.key_file))
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"tls: cannot load certificates for {config.host}: {err}") from err
    return context


def _set_result(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _set_exception(future: asyncio.Future[None], err: Exception) -> None:
    if not future.done():
        future.set_exception(err)
