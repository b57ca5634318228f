"""The uplink: drains the outbox to the cloud, deleting a row only once the cloud confirmed it.

A broker's PUBACK says only that the broker has a message; Mosquitto can still lose it (a
shared subscription dropped over a restart, a full per-client queue). So the cloud confirms
each envelope it stored, or refused for good, on `site/{site}/down/ack`, and only then does the
row leave the outbox. A published row that is not confirmed within `ack_timeout_s`, or when the
uplink reconnects or the edge restarts, is published again; ids make that idempotent. At most
`window` messages wait for confirmation at once. (`confirm: broker` deletes on PUBACK instead,
for a cloud that does not confirm.)

Life-safety rows go first and are never rate-limited. Everything else passes a token bucket,
so draining a long backlog after an outage cannot crowd out live alerts or flood the cloud.
The drop ledger (what quotas evicted) is reported as a `health` message and settled only
once the cloud confirmed the report.

An outbox write that fails (a full disk) never ends the uplink: a round whose claim fails is
tried again after `retry_delay_s`, and rows to give back, rows the cloud confirmed and drops
it acknowledged are kept in memory and written when the outbox takes writes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from edge.config import UplinkConfig
from edge.evidence import EvidenceUploader, UploadFailed
from edge.outbox import Drops, Outbox, Priority, Row
from shouwang.ids import derived_id
from shouwang.mqtt import Message, MqttClient, MqttError
from shouwang.protocol import make_envelope, now_ms, site_down_topic, site_up_topic

log = logging.getLogger(__name__)
GATEWAY_DEVICE = "gateway"
# A merged telemetry message stays well under the cloud's payload limit (256 KiB by default).
MERGE_READINGS = 1000
MERGE_BYTES = 192 * 1024


@dataclass(frozen=True, slots=True)
class _Group:
    """Outbox rows that travel as one MQTT message (envelope `envelope_id`), deleted together."""

    ids: list[str]
    topic: str
    payload: bytes
    envelope_id: str


@dataclass(slots=True)
class _Sent:
    """A message the broker has and the cloud has not confirmed yet."""

    rows: list[str]
    at: float  # monotonic second of the PUBACK
    drops: list[Drops] | None = None  # a drop report settles its ledger on confirmation
    evidence: str | None = None  # an evidence envelope's file may go on confirmation


@dataclass(frozen=True, slots=True)
class _Report:
    """The drop report in flight: resent unchanged until the cloud confirms it."""

    id: str
    payload: bytes
    drops: list[Drops]


def parse_confirmation(payload: bytes) -> tuple[list[str], list[tuple[str, str]]] | None:
    """`{"v": 1, "stored": [ids], "rejected": [{"id", "reason"}]}` → (stored, rejected)."""
    try:
        data = orjson.loads(payload)
        stored = [str(i) for i in data.get("stored", [])]
        rejected = [(str(r["id"]), str(r["reason"])) for r in data.get("rejected", [])]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return None
    return stored, rejected


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._at = time.monotonic()

    def take(self, want: int) -> int:
        """Take up to `want` tokens now; returns how many were granted."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        granted = min(want, int(self.tokens))
        self.tokens -= granted
        return granted

    def wait_s(self) -> float:
        return max(0.0, (1 - self.tokens) / self.rate)


class Uplink:
    def __init__(
        self,
        outbox: Outbox,
        client: MqttClient,
        config: UplinkConfig,
        site: str,
        evidence: EvidenceUploader | None = None,
        on_news: Callable[[bytes], Awaitable[None]] | None = None,
        on_refused: Callable[[list[str]], Awaitable[None]] | None = None,
        on_down: dict[str, Callable[[bytes], Awaitable[None]]] | None = None,
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.config = config
        self.site = site
        self.evidence = evidence
        self.sent = 0
        self.bucket = TokenBucket(config.rate_msgs_s, config.burst)
        self.confirmed = 0  # envelopes the cloud confirmed
        self.refused: dict[str, int] = {}  # envelopes the cloud refused for good, by reason
        self.resent = 0  # envelopes published again for want of a confirmation
        self.ack_topic = site_down_topic(site, "ack")
        self.on_refused = on_refused
        # The cloud's other words to this gateway, by downlink kind: `alert` (its word on
        # this site's alerts, cloud/downlink.py, for the rules' book), `watchlist` (the
        # site's watchlists, cloud/watchlists.py).
        self.listeners: dict[str, Callable[[bytes], Awaitable[None]]] = {
            site_down_topic(site, kind): handler for kind, handler in {
                **({"alert": on_news} if on_news is not None else {}), **(on_down or {}),
            }.items()
        }
        self._awaiting: dict[str, _Sent] = {}
        self._report: _Report | None = None
        self._reconnected = False
        self._evidence_waiting = False  # evidence rows held back until an upload can go
        self._evidence_warned = False
        # Outbox writes that failed, to be done when it takes writes again.
        self._ungiven: list[str] = []  # rows to make publishable again
        self._undeleted: list[str] = []  # rows the cloud confirmed
        self._unsettled: list[list[Drops]] = []  # drop reports the cloud confirmed
        self._writes_failing = False
        self._wake = asyncio.Event()
        if config.confirm == "cloud" and client is not None:
            client.subscribe(self.ack_topic, 1)
        if client is not None:
            for topic in self.listeners:
                client.subscribe(topic, 1)

    @property
    def awaiting(self) -> int:
        """Messages the broker acknowledged and the cloud has not confirmed yet."""
        return len(self._awaiting)

    def notify(self) -> None:
        """Something was put in the outbox: publish without waiting for the next round."""
        self._wake.set()

    def connection_changed(self, up: bool) -> None:
        if up:
            self._reconnected = True
            self._wake.set()

    async def receive_confirmations(self) -> None:
        """Delete what the cloud confirmed (stored, or refused for good) from the outbox;
        hand the cloud's other words to their listeners."""
        while True:
            message = await self.client.messages()
            listener = self.listeners.get(message.topic)
            if listener is not None:
                await listener(message.payload)
            else:
                await self.handle_confirmation(message)

    async def handle_confirmation(self, message: Message) -> None:
        parsed = parse_confirmation(message.payload) if message.topic == self.ack_topic else None
        if parsed is None:
            log.warning("uplink: ignored a malformed confirmation on %s", message.topic)
            return
        stored, rejected = parsed
        for envelope_id, reason in rejected:
            # A refusal is final (the cloud will refuse it again): count it, keep no copy.
            self.refused[reason] = self.refused.get(reason, 0) + 1
            log.error("uplink: the cloud refused %s: %s", envelope_id, reason)
        rows: list[str] = []
        forget: list[str] = []
        for envelope_id in [*stored, *(i for i, _ in rejected)]:
            sent = self._awaiting.pop(envelope_id, None)
            if sent is None:
                # Confirmed after a restart or a resend: a single row's id is its envelope's.
                rows.append(envelope_id)
                continue
            rows += sent.rows
            if sent.drops is not None:
                await self._settle(sent.drops)
            if sent.evidence is not None and self.evidence is not None:
                forget.append(sent.evidence)
        self.confirmed += len(stored) + len(rejected)
        if rejected and self.on_refused is not None:
            await self.on_refused([i for i, _ in rejected])
        await self._delete(rows)
        self.sent += len(rows)
        if forget and self.evidence is not None:
            await self.evidence.spool.forget(forget)
        self._wake.set()  # the window has room again

    async def _give_back(self, only_older_than: float | None) -> None:
        """Make unconfirmed messages publishable again: all, or those waiting too long."""
        expired = [
            (envelope_id, sent)
            for envelope_id, sent in self._awaiting.items()
            if only_older_than is None or sent.at < only_older_than
        ]
        if not expired:
            return
        for envelope_id, _ in expired:
            del self._awaiting[envelope_id]
        await self._unsend([r for _, sent in expired for r in sent.rows])
        self.resent += len(expired)
        log.warning("uplink: %d message(s) not confirmed by the cloud; sending again", len(expired))

    def _next_expiry(self) -> float | None:
        if not self._awaiting:
            return None
        return min(s.at for s in self._awaiting.values()) + self.config.ack_timeout_s

    async def run(self) -> None:
        while True:
            expiry = self._next_expiry()
            if self._evidence_waiting and self.evidence is not None:
                retry = self.evidence.retry_at
                expiry = retry if expiry is None else min(expiry, retry)
            if self._ungiven or self._undeleted or self._unsettled:
                retry = time.monotonic() + self.config.retry_delay_s
                expiry = retry if expiry is None else min(expiry, retry)
            self._evidence_waiting = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(
                    None if expiry is None else max(0.0, expiry - time.monotonic())
                ):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._round()
            except sqlite3.Error as err:
                # A claim that failed claimed nothing (its transaction was rolled back).
                self._write_failed("read or claim", err)
                await asyncio.sleep(self.config.retry_delay_s)
                self._wake.set()

    async def _round(self) -> None:
        """Publish what the outbox holds, as far as the window, the bucket and the link let."""
        await self._retry_writes()
        if self._reconnected:
            # What the broker had may be gone with it (a restart), and resending is cheap
            # next to waiting out the timeout.
            self._reconnected = False
            await self._give_back(None)
        await self._give_back(time.monotonic() - self.config.ack_timeout_s)
        while self.client.connected:
            # Life-safety is never held back by the window: a backlog of unconfirmed
            # telemetry must not keep an SOS from the broker.
            urgent = await self.outbox.next_batch(
                self.config.batch, priorities=[Priority.LIFE_SAFETY], claim_ms=now_ms()
            )
            if urgent:
                await self._publish_groups(
                    [_Group([r.id], r.topic, r.payload, r.id) for r in urgent]
                )
                continue
            if len(self._awaiting) >= self.config.window:
                break  # the rest waits for confirmations (or their timeout)
            room = min(self.config.batch, self.config.window - len(self._awaiting))
            await self._report_drops()  # after life-safety, before the rest
            if self.bucket.take(1) == 0:
                # Out of tokens: wait for a refill, but wake at once for a new alert.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.bucket.wait_s()):
                        await self._wake.wait()
                self._wake.clear()
                continue
            rows = await self.outbox.next_batch(room, claim_ms=now_ms())
            if not rows:
                self.bucket.tokens += 1  # unused: give it back
                break
            groups = self._group(rows)
            # One token a message: a merged telemetry message is one however many rows.
            allowed = 1 + self.bucket.take(len(groups) - 1)
            await self._unsend([i for g in groups[allowed:] for i in g.ids])
            groups = await self._upload_evidence(groups[:allowed])
            if not groups:
                break  # only evidence, and it cannot go yet
            await self._publish_groups(groups)

    def _group(self, rows: list[Row]) -> list[_Group]:
        """One group per row, except that runs of telemetry rows merge into compact messages."""
        groups: list[_Group] = []
        readings: list[Any] = []
        ids: list[str] = []
        size = 0
        topic = ""

        def flush() -> None:
            nonlocal readings, ids, size
            if len(ids) == 1:
                groups.append(_Group(ids, topic, single, ids[0]))
            elif ids:
                last = max(r["ts"] for r in readings)
                envelope = make_envelope(
                    site=self.site,
                    device=GATEWAY_DEVICE,
                    kind="telemetry",
                    body={"readings": readings},
                    ts=last,
                    id=derived_id(last, self.site, "merged", *ids),
                )
                groups.append(_Group(ids, topic, envelope.to_bytes(), envelope.id))
            readings, ids, size = [], [], 0

        single = b""
        for row in rows:
            if row.priority != Priority.TELEMETRY:
                flush()
                groups.append(_Group([row.id], row.topic, row.payload, row.id))
                continue
            batch = orjson.loads(row.payload)["body"]["readings"]
            if ids and (
                len(readings) + len(batch) > MERGE_READINGS or size + len(row.payload) > MERGE_BYTES
            ):
                flush()
            topic, single = row.topic, row.payload
            readings += batch
            ids.append(row.id)
            size += len(row.payload)
        flush()
        return groups

    async def _upload_evidence(self, groups: list[_Group]) -> list[_Group]:
        """Upload the bytes of evidence groups first; the groups whose bytes the cloud has."""
        ready: list[_Group] = []
        for g in groups:
            if not g.topic.endswith("/up/evidence"):
                ready.append(g)
                continue
            if self.evidence is None or not self.evidence.ready():
                if self.evidence is None and not self._evidence_warned:
                    self._evidence_warned = True
                    log.warning("uplink: evidence is waiting, but no evidence.url is configured")
                self._evidence_waiting = True
                await self._unsend(g.ids)
                continue
            try:
                await self.evidence.upload(g.payload)
            except UploadFailed as err:
                if not err.permanent:
                    log.warning("uplink: %s; will retry", err)
                    self._evidence_waiting = True
                    await self._unsend(g.ids)
                    continue
                self.refused["evidence_upload"] = self.refused.get("evidence_upload", 0) + 1
                log.error("uplink: evidence %s given up: %s", g.envelope_id, err)
                await self._delete(g.ids)
                continue
            ready.append(g)
        return ready

    async def _publish_groups(self, groups: list[_Group]) -> None:
        results = await asyncio.gather(
            *(
                self.client.publish(
                    g.topic, g.payload, qos=1, timeout=self.config.publish_timeout_s
                )
                for g in groups
            ),
            return_exceptions=True,
        )
        acked = [g for g, res in zip(groups, results, strict=True) if res is None]
        if acked and self.config.confirm == "broker":
            await self._delete([i for g in acked for i in g.ids])
            self.sent += sum(len(g.ids) for g in acked)
        elif acked:
            at = time.monotonic()  # the rows were marked sent when they were taken
            for g in acked:
                digest = None
                if g.topic.endswith("/up/evidence"):
                    digest = orjson.loads(g.payload)["body"]["sha256"]
                self._awaiting[g.envelope_id] = _Sent(g.ids, at, evidence=digest)
        failures = [res for res in results if isinstance(res, BaseException)]
        unacked = [
            i for g, res in zip(groups, results, strict=True) if res is not None for i in g.ids
        ]
        if unacked:
            await self._unsend(unacked)  # publishable again
        if failures:
            unexpected = [f for f in failures if not isinstance(f, MqttError)]
            if unexpected:
                raise unexpected[0]
            log.warning(
                "uplink: %d of %d publishes unacknowledged (%s); retrying",
                len(failures),
                len(groups),
                failures[0],
            )
            await asyncio.sleep(self.config.retry_delay_s)

    async def _report_drops(self) -> None:
        """Report the drop ledger; an unconfirmed report is sent again as it was (same id)."""
        report = self._report
        if self._unsettled:
            return  # a confirmed report is still in the ledger: reporting now would repeat it
        if report is None:
            drops = await self.outbox.drops()
            if not drops:
                return
            body = {"type": "outbox_drops", "drops": [_drop_dict(d) for d in drops]}
            key = [f"{d.priority}:{d.items}:{d.rows}:{d.first_ts}:{d.last_ts}" for d in drops]
            # Same ledger, same id: a report resent after a crash is stored once by the cloud.
            envelope = make_envelope(
                site=self.site,
                device=GATEWAY_DEVICE,
                kind="health",
                body=body,
                id=derived_id(min(d.first_ts for d in drops), self.site, "drops", *key),
                ts=now_ms(),
            )
            report = self._report = _Report(envelope.id, envelope.to_bytes(), drops)
        elif report.id in self._awaiting:
            return  # one report at a time: the ledger settles when the cloud has it
        try:
            await self.client.publish(
                site_up_topic(self.site, "health"),
                report.payload,
                qos=1,
                timeout=self.config.publish_timeout_s,
            )
        except MqttError as err:
            log.warning("uplink: drop report not acknowledged (%s); will retry", err)
            return
        if self.config.confirm == "cloud":
            self._awaiting[report.id] = _Sent([], time.monotonic(), report.drops)
        else:
            await self._settle(report.drops)

    async def _settle(self, drops: list[Drops]) -> None:
        try:
            await self.outbox.settle_drops(drops)
        except sqlite3.Error as err:
            self._unsettled.append(drops)
            self._write_failed("settling the drop ledger", err)
            return
        self._wrote()
        self._report = None
        log.warning(
            "reported outbox drops to the cloud: %s",
            ", ".join(f"{Priority(d.priority).name.lower()} {d.items}" for d in drops),
        )


    # --- outbox writes that must not be lost when they fail ---------------------------------

    async def _unsend(self, ids: list[str]) -> None:
        """Make rows publishable again; kept and retried if the outbox fails the write (a
        row left marked sent would wait for a restart)."""
        if not ids:
            return
        try:
            await self.outbox.unsend(ids)
        except sqlite3.Error as err:
            self._ungiven += ids
            self._write_failed("giving rows back", err)
            return
        self._wrote()

    async def _delete(self, ids: list[str]) -> None:
        """Delete confirmed rows; kept and retried if the outbox fails the write (deleting
        them is what gives a full disk its room back)."""
        if not ids:
            return
        try:
            await self.outbox.delete(ids)
        except sqlite3.Error as err:
            self._undeleted += ids
            self._write_failed("deleting confirmed rows", err)
            return
        self._wrote()

    async def _retry_writes(self) -> None:
        if self._ungiven:
            ids, self._ungiven = self._ungiven, []
            await self._unsend(ids)
        if self._undeleted:
            ids, self._undeleted = self._undeleted, []
            await self._delete(ids)
        if self._unsettled:
            pending, self._unsettled = self._unsettled, []
            for drops in pending:
                await self._settle(drops)

    def _write_failed(self, what: str, err: sqlite3.Error) -> None:
        if not self._writes_failing:
            self._writes_failing = True
            log.error("uplink: outbox write failed (%s: %s); retrying", what, err)

    def _wrote(self) -> None:
        if self._writes_failing and not (self._ungiven or self._undeleted or self._unsettled):
            self._writes_failing = False
            log.warning("uplink: outbox writes work again")


def _drop_dict(d: Drops) -> dict[str, int | str]:
    return {
        "class": Priority(d.priority).name.lower(),
        "items": d.items,
        "rows": d.rows,
        "bytes": d.bytes,
        "first_ts": d.first_ts,
        "last_ts": d.last_ts,
    }
