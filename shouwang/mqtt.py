"""An asyncio face on paho-mqtt 2.x: awaitable QoS 1 publishes and manual acknowledgement.

Why not aiomqtt: a message must be acknowledged to the broker only after it is safely stored
(outbox on the edge, database in the cloud), so a crash between receipt and storage makes the
broker deliver it again. paho supports that (`manual_ack=True`); aiomqtt does not expose it.

paho's socket runs on the event loop (paho's external-loop API: the loop calls `loop_read`
when the socket is readable, `loop_write` when paho has bytes to send, `loop_misc` every
second), not in paho's own network thread. With a thread, every message crossed threads
twice, and under a backlog the two threads fought over the GIL: paho's thread gave it up at
each of its several socket reads per message and waited for the event loop's busy thread to
hand it back, so receiving stalled whenever the loop was processing. Only the TCP connect and
TLS handshake, which block, run in an executor thread. Reconnecting with backoff, which paho's
thread did, is `_run`'s job here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shouwang.backoff import Backoff
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


READ_BURST = 256  # packets read per turn of the loop, so one busy socket cannot starve it
# close() waits this long for its DISCONNECT (after the acks queued before it) to be written:
# long enough for a starved event loop on a loaded gateway, so acknowledged messages are not
# sent again for want of a flush.
CLOSE_TIMEOUT_S = 10.0


class _Client(paho.Client):
    """paho's client with its socket opened ahead (off the loop), reads in bursts, and a short
    road for the usual incoming PUBLISH.

    paho builds, for every PUBLISH, a `Properties` object (two dicts of every MQTT v5
    property, then a pass deleting each name), an `MQTTMessage` with an `MQTTMessageInfo` and
    its `threading.Condition`, and looks the topic up in a trie of per-filter callbacks. For a
    QoS 0 or 1 MQTT v5 PUBLISH without properties, to a client without per-filter callbacks,
    `received` is handed the decoded fields instead: in a backlog drain those objects were a
    fifth of the event loop's time. Anything else takes paho's own road.
    """

    _opened: socket.socket | ssl.SSLSocket | None = None
    # (topic, payload, qos, retain, mid) of a PUBLISH on the short road; set by MqttClient.
    received: Callable[[str, bytes, int, bool, int], None] | None = None
    # Set by close(): the socket paho lets go of after its DISCONNECT, kept open until the
    # broker has read everything before the DISCONNECT (see MqttClient.close).
    linger = False
    lingering: Any = None

    def open_socket(self) -> Any:
        """TCP connect and TLS handshake: blocking, so callers run it in an executor."""
        sock: Any = super()._create_socket()  # a socket, or an SSL socket over one
        # An SOS is one small packet: never hold it back for the ACK of an earlier one (Nagle).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _create_socket(self) -> Any:
        # `reconnect()` runs on the event loop and takes the socket `open_socket` made.
        sock, self._opened = self._opened, None
        if sock is None:
            raise OSError("no socket opened for this connect")
        return sock

    def _handle_publish(self) -> MQTTErrorCode:
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        received = self.received
        if (
            received is None
            or qos == 2
            or self._protocol != paho.MQTTv5
            or self._on_message_filtered._root._children
        ):
            return super()._handle_publish()
        # Topic length, topic, packet id (QoS 1), properties length, properties, payload.
        end = 2 + ((packet[0] << 8) | packet[1]) if len(packet) >= 2 else len(packet) + 1
        at = end + 2 if qos else end
        if at >= len(packet) or packet[at] != 0:
            return super()._handle_publish()  # properties to decode, or malformed: paho says
        try:
            topic = packet[2:end].decode("utf-8")
        except UnicodeDecodeError:
            return super()._handle_publish()
        mid = (packet[end] << 8) | packet[end + 1] if qos else 0
        with self._in_callback_mutex:
            received(topic, bytes(packet[at + 1 :]), qos, bool(header & 0x01), mid)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_close(self) -> None:
        if not self.linger or self._sock is None:
            super()._sock_close()
            return
        sock, self._sock = self._sock, None
        try:
            self._call_socket_unregister_write(sock)
            self._call_socket_close(sock)
        finally:
            self.lingering = sock

    def read_burst(self, limit: int) -> bool:
        """Read and handle up to `limit` packets; True when more may be waiting.

        paho's `loop_read` reads one packet per call when nothing of ours is in flight: a
        turn of the event loop per message. (A TLS socket may hold decrypted bytes that the
        selector cannot see, so a full burst must be followed by another read, not a select.)
        """
        for _ in range(limit):
            if self._sock is None:
                return False
            rc = self._packet_read()
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return False
            if rc > 0:
                self._loop_rc_handle(rc)
                return False
        return True


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
        self._connack = False  # a CONNACK came on the current socket
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_connection_change = on_connection_change
        self._closed = False
        self._runner: asyncio.Task[None] | None = None
        self._socket_closed = asyncio.Event()  # set while paho has no socket
        self._socket_closed.set()
        # Waits from 1–2 s up to the cap. Never under 1 s: reconnecting sooner after a drop
        # raced the broker's takeover of the old session and lost PUBACKs (seen 2 times in
        # 12 in test_mqtt_transport's burst test under load; not yet understood).
        self._reconnect = Backoff(2.0, max(2.0, float(config.reconnect_max_s)))

        self._client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
            manual_ack=manual_ack,
        )
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        if config.username:
            self._client.username_pw_set(config.username, config.password())
        if config.tls:
            self._client.tls_set_context(_tls_context(config))
        if will:
            self._client.will_set(will[0], will[1], qos=1, retain=will_retain)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.received = self._received
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_socket_open = self._on_socket_open
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_socket_register_write
        self._client.on_socket_unregister_write = self._on_socket_unregister_write
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
        self._runner = asyncio.create_task(self._run(), name=f"mqtt-{self.client_id}")

    async def _run(self) -> None:
        """Connect, keep the connection alive, and reconnect with backoff until closed."""
        while not self._closed:
            try:
                await self._connect()
            except (OSError, ssl.SSLError, ssl.CertificateError) as err:
                log.warning(
                    "mqtt connect to %s:%s failed: %s", self.config.host, self.config.port, err
                )
            except Exception:
                # Not a network failure but a bug: it must not end reconnecting for good.
                log.exception("mqtt connect to %s:%s failed", self.config.host, self.config.port)
                self._client._sock_close()
            else:
                while not self._closed and not self._socket_closed.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._socket_closed.wait()
                    self._client.loop_misc()  # keepalive: PINGREQ, or give up on a dead link
            if self._closed:
                return
            # Wait, doubling up to the maximum, jittered (gateways that lost the same broker
            # do not knock again in step); reset by a CONNACK.
            await asyncio.sleep(self._reconnect.next())

    async def _connect(self) -> None:
        assert self._loop is not None
        opening = self._loop.run_in_executor(None, self._client.open_socket)
        try:
            sock = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_opened)  # closed while connecting
            raise
        if self._closed:
            sock.close()
            return
        self._client._opened = sock
        self._connack = False
        self._client.reconnect()  # on the loop: registers the socket, queues CONNECT

    async def wait_connected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def close(self) -> None:
        """Disconnect cleanly (the DISCONNECT goes after what is queued, acks included)."""
        self._closed = True
        sock = self._client.socket()
        if sock is not None and sock.fileno() >= 0:
            self._client.linger = True
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self._socket_closed.wait()
                    await self._broker_hung_up()
        self._client.linger = False
        if self._client.lingering is not None:
            self._client.lingering.close()
            self._client.lingering = None
        self._client._sock_close()  # a no-op once paho let go of it after the DISCONNECT
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        self._fail_pending(MqttNotConnected("client closed"))
        self._connected.clear()

    async def _broker_hung_up(self) -> None:
        """Wait for the broker to close the connection after our DISCONNECT: it has then
        handled every packet before it. Closing at once lost the last acks whenever the next
        connection with this client id reached the broker first (its session taken over, the
        rest of the old connection's bytes are a protocol error to Mosquitto); seen with TLS,
        where the broker reads the old connection record by record."""
        sock, loop = self._client.lingering, self._loop
        if sock is None or loop is None or sock.fileno() < 0:
            return
        hung_up = loop.create_future()

        def readable() -> None:
            try:
                data = sock.recv(4096)
            except (ssl.SSLWantReadError, BlockingIOError):
                return
            except OSError:
                data = b""
            if not data and not hung_up.done():
                hung_up.set_result(None)

        loop.add_reader(sock, readable)
        try:
            await hung_up
        finally:
            loop.remove_reader(sock)

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
        """`ack()` for each message, in order; they go out together on the next write."""
        if not self.manual_ack:
            return
        for message in messages:
            if message.qos > 0:
                self._client.ack(message.mid, message.qos)

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
        # paho reads the PUBACK on this thread, so not before this synchronous registration.
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

    # --- the socket on the event loop ---------------------------------------------------

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._socket_closed.clear()
        self._loop.add_reader(sock, self._readable)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(sock)
        self._socket_closed.set()

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        if sock.fileno() < 0:  # closed under paho (a test's unclean drop): the link is lost
            self._loop.call_soon(self._client._loop_rc_handle, MQTTErrorCode.MQTT_ERR_CONN_LOST)
            return
        self._loop.add_writer(sock, self._writable)

    def _on_socket_unregister_write(
        self, client: paho.Client, userdata: Any, sock: Any
    ) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_writer(sock)

    def _readable(self) -> None:
        if self._client.read_burst(READ_BURST):
            assert self._loop is not None
            self._loop.call_soon(self._readable)  # more waiting: after the others' turn

    def _writable(self) -> None:
        self._client.loop_write()

    # --- paho callbacks (on the event loop, from inside loop_read/loop_write) -------------

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        # An exception raised into paho would leave it halfway through a packet.
        try:
            fn(*args)
        except Exception:
            log.exception("mqtt callback %s failed", getattr(fn, "__name__", fn))

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connack = True  # a refusal too: it is logged with its reason just below
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
        self._reconnect.reset()
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
        if not self._closed and not self._connack:
            # Closed before any CONNACK: the broker turned this client away unanswered.
            log.warning(
                "mqtt broker %s:%s closed the connection before accepting it (%s): check the "
                "credentials%s", self.config.host, self.config.port, reason_code,
                " and the client certificate (tls.cert_file)" if self.config.tls else "",
            )
        elif not self._closed:
            log.warning(
                "mqtt disconnected from %s:%s: %s", self.config.host, self.config.port, reason_code
            )
        self._call(self._set_connected, False)

    def _on_message(self, client, userdata, msg: paho.MQTTMessage) -> None:
        message = Message(msg.topic, bytes(msg.payload), msg.qos, msg.retain, msg.mid)
        self._call(self._enqueue, message)

    def _received(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int) -> None:
        self._call(self._enqueue, Message(topic, payload, qos, retain, mid))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        failure = str(reason_code) if reason_code.is_failure else None
        self._call(self._published, mid, failure)

    # --- event-loop side -----------------------------------------------------------------

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


def _close_opened(opening: asyncio.Future[Any]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _set_result(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _set_exception(future: asyncio.Future[None], err: Exception) -> None:
    if not future.done():
        future.set_exception(err)
