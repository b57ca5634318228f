"""The Dispatcher: one alert to one recipient over every channel, limits, digests, retries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import uuid
from typing import Any

import aiohttp

from cloud.notify import pending
from cloud.notify.attempts import AttemptLog
from cloud.notify.config import NotifyConfig
from cloud.notify.digest import digest_message
from cloud.notify.message import AlertSummary, Message, Outcome, Target
from cloud.notify.ratelimit import RateLimiter
from cloud.notify.registry import Context, Notifier, discover
from cloud.store import Store
from shouwang.backoff import Backoff
from shouwang.clock import Clock

log = logging.getLogger(__name__)
RECIPIENT = re.compile(r"^(user|role):[A-Za-z0-9_.@:-]{1,128}\Z")
NO_CHANNEL = "-"


def check_recipient(recipient: str) -> str:
    """`user:<id>` or `role:<name>`; anything else is a caller's bug, caught loudly."""
    if not RECIPIENT.match(recipient):
        raise ValueError(f"recipient {recipient!r} is not user:<id> or role:<name>")
    return recipient


class Dispatcher:
    """Takes (recipient, alert, stage) from escalation and delivers it, recording every try.

    Critical and life-safety alerts go out at once over every channel, never limited or
    digested. Severities in `digest.severities` are collected into one message per recipient
    per window. Others go out at once while the recipient's token bucket allows, and into the
    next digest when it does not. Transient failures are retried with the shared back-off
    (`shouwang/backoff.py`): jittered, so targets that failed together are not retried together.

    Digest items and retries live in the database (`notification_pending`), so a restart
    keeps them and any worker's `tick` sends them; the token buckets are per process.
    """

    def __init__(
        self,
        config: NotifyConfig,
        store: Store,
        clock: Clock,
        notifiers: list[Notifier] | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.notifiers: dict[str, Notifier] = {n.channel: n for n in notifiers or []}
        self._given = notifiers is not None
        self.attempts = AttemptLog(store)
        self.limiter = RateLimiter(config.rate_limit, clock)
        retry = config.retry
        # The attempt number is stored with each retry, so the wait is the back-off's n-th,
        # computed from it: a restart does not start a failing target's back-off over.
        self._retry_backoff = Backoff(min(retry.base_s, retry.max_s), retry.max_s, rng=rng)
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    # --- life cycle ----------------------------------------------------------------------

    async def start(self, *, run: bool = True) -> None:
        """Create the notifiers (their tables come with the schema's migrations); with `run`,
        look at digests and retries every tick."""
        self._http = aiohttp.ClientSession()
        if not self.config.enabled:
            log.warning("notifications are disabled in this process (notify.enabled: false)")
            return
        if not self._given:
            ctx = Context(self.config, self.store, self.clock, self._http)
            for channel, cls in sorted(discover().items()):
                try:
                    notifier = await cls.create(ctx)
                except Exception:
                    log.exception("notifier %s failed to start; the other channels go on", channel)
                    continue
                if notifier is not None:
                    self.notifiers[channel] = notifier
        log.info("notifiers: %s", ", ".join(sorted(self.notifiers)) or "none")
        if run:
            self._task = asyncio.create_task(self._run(), name="notify-tick")

    async def stop(self) -> None:
        """Stop ticking and close every channel; pending digests and retries stay stored."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.attempts.close()
        for notifier in self.notifiers.values():
            try:
                await notifier.close()
            except Exception:
                log.exception("notifier %s did not close cleanly", notifier.channel)
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("notification tick failed; trying again next tick")
            await asyncio.sleep(self.config.tick_s)

    # --- the entry point -----------------------------------------------------------------

    async def notify(
        self, recipient: str, alert: AlertSummary | dict[str, Any], stage: str
    ) -> list[dict[str, Any]]:
        """Deliver `alert` to `recipient` for escalation step `stage`; returns the rows recorded.

        Returns after the first attempt on every channel (each bounded by its timeout);
        retries happen later. A recipient with no channel at all gets a `failed` row, so
        escalation and the timeline see that nobody was reached.
        """
        check_recipient(recipient)
        summary = alert if isinstance(alert, AlertSummary) else AlertSummary.from_alert(alert)
        if not summary.critical:
            if summary.severity in self.config.digest.severities:
                return await self._collect(recipient, summary, stage, "digested",
                                           "collected for the next digest")
            if not self.limiter.allow(recipient):
                per_hour = self.config.rate_limit.per_hour
                return await self._collect(recipient, summary, stage, "rate_limited",
                                           f"over {per_hour:g} per hour: in the next digest")
        base = self.config.public_url.rstrip("/")
        message = Message(
            title=summary.title(),
            body=summary.line(),
            url=f"{base}/#alert={summary.id}",
            critical=summary.critical,
            alerts=(summary,),
        )
        return await self._deliver(recipient, stage, message, (summary.id,))

    async def _collect(
        self, recipient: str, alert: AlertSummary, stage: str, result: str, reason: str
    ) -> list[dict[str, Any]]:
        held = await pending.add_digest_item(
            self.store, recipient, alert.id, stage, alert.to_json(), self.clock.now_ms(),
            int(self.config.digest.window_s * 1000),
        )
        row = self._row(alert.id, recipient, stage, NO_CHANNEL, NO_CHANNEL, None, result, reason)
        await self.attempts.write([row])
        if held >= self.config.digest.max_pending:  # full: sent now rather than grow
            await self._send_digests(recipient=recipient)
        return [row]

    async def _deliver(
        self, recipient: str, stage: str, message: Message, alert_ids: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        targets, rows = await self._targets(recipient, stage, alert_ids)
        if not targets and not rows:
            rows = [
                self._row(a, recipient, stage, NO_CHANNEL, NO_CHANNEL, None, "failed",
                          "no channel configured for this recipient")
                for a in alert_ids
            ]
            log.warning("no notification channel for %s (alert %s)", recipient, alert_ids[0])
        await self.attempts.write(rows)
        sent = await asyncio.gather(
            *(self._attempt(recipient, stage, t, message, alert_ids, 1) for t in targets)
        )
        return rows + [r for batch in sent for r in batch]

    async def _targets(
        self, recipient: str, stage: str, alert_ids: tuple[str, ...]
    ) -> tuple[list[Target], list[dict[str, Any]]]:
        targets: list[Target] = []
        rows: list[dict[str, Any]] = []
        for channel, notifier in sorted(self.notifiers.items()):
            try:
                targets += await notifier.targets(recipient)
            except Exception as err:
                log.exception("channel %s could not list targets of %s", channel, recipient)
                rows += [
                    self._row(a, recipient, stage, channel, NO_CHANNEL, None, "failed",
                              f"could not list targets: {type(err).__name__}")
                    for a in alert_ids
                ]
        return targets, rows

    # --- one attempt, and what follows it -------------------------------------------------

    async def _attempt(
        self,
        recipient: str,
        stage: str,
        target: Target,
        message: Message,
        alert_ids: tuple[str, ...],
        attempt: int,
    ) -> list[dict[str, Any]]:
        notifier = self.notifiers[target.channel]
        try:
            outcome = await notifier.send(target, message)
        except Exception as err:  # a plugin bug is a failed attempt, not a lost alert
            log.exception("channel %s raised on send", target.channel)
            outcome = Outcome(False, reason=f"{type(err).__name__} in the notifier",
                              transient=True)
        reason = outcome.reason
        if outcome.ok:
            result = "delivered"
            if attempt > 1:
                log.info("%s to %s via %s delivered on attempt %d", message.title, recipient,
                         target.shown, attempt)
        else:
            result = "failed"
            retrying = False
            if outcome.gone:
                await notifier.forget(target)
                reason = f"{reason}; target removed"
            elif outcome.transient:
                then = await self._schedule(recipient, stage, target, message, alert_ids,
                                            attempt)
                retrying = then.startswith("retry ")
                reason = f"{reason}; {then}"
            # Once when it starts failing, once when it is given up: not once per retry.
            if attempt == 1 or not retrying:
                log.warning("%s to %s via %s, attempt %d: %s", message.title, recipient,
                            target.shown, attempt, reason)
        rows = [
            self._row(a, recipient, stage, target.channel, target.shown, attempt, result, reason,
                      outcome.status)
            for a in alert_ids
        ]
        await self.attempts.write(rows)
        return rows

    async def _schedule(
        self,
        recipient: str,
        stage: str,
        target: Target,
        message: Message,
        alert_ids: tuple[str, ...],
        attempt: int,
    ) -> str:
        retry = self.config.retry
        if attempt >= retry.max_attempts:
            return f"gave up after {attempt} attempts"
        delay_ms = round(self._retry_backoff.delay(attempt) * 1000)
        await pending.add(self.store, {
            "kind": pending.RETRY,
            "recipient": recipient,
            "due_ms": self.clock.now_ms() + delay_ms,
            "stage": stage,
            "channel": target.channel,
            "target_key": target.key,
            "attempt": attempt + 1,
            "body": {"message": message.to_json(), "alert_ids": list(alert_ids)},
        })
        shown = f"{delay_ms / 1000:.3f}".rstrip("0").rstrip(".")  # exact to the ms: 2, 1.375
        return f"retry {attempt + 1} in {shown} s"

    # --- what is due ----------------------------------------------------------------------

    async def tick(self) -> None:
        """Send due digests and due retries (the run loop calls this; tests call it directly)."""
        now = self.clock.now_ms()
        released = await pending.release_stale(
            self.store, now, int(self.config.claim_timeout_s * 1000)
        )
        if released:
            log.warning("%d notifications left half-sent by a stopped worker taken up again",
                        released)
        await self._send_digests()
        await self._send_retries()

    async def pending_count(self, kind: str) -> int:
        """Digest items (`digest`) or retries (`retry`) waiting in the database."""
        return await pending.count(self.store, kind)

    async def _send_digests(self, *, recipient: str | None = None) -> None:
        token = uuid.uuid4().hex
        rows = await pending.claim(self.store, pending.DIGEST, token, self.clock.now_ms(),
                                   recipient=recipient)
        by_recipient: dict[str, list[AlertSummary]] = {}
        for row in rows:
            by_recipient.setdefault(row["recipient"], []).append(
                AlertSummary.from_alert(row["body"])
            )
        for who, alerts in by_recipient.items():
            message = digest_message(alerts, self.config.digest, self.config.public_url)
            await self._deliver(who, "digest", message, tuple(a.id for a in alerts))
        await pending.done(self.store, token)

    async def _send_retries(self) -> None:
        token = uuid.uuid4().hex
        rows = await pending.claim(self.store, pending.RETRY, token, self.clock.now_ms())
        await asyncio.gather(*(self._retry(row) for row in rows))
        await pending.done(self.store, token)

    async def _retry(self, row: dict[str, Any]) -> None:
        message = Message.from_json(row["body"]["message"])
        alert_ids = tuple(row["body"]["alert_ids"])
        notifier = self.notifiers.get(row["channel"])
        target = None
        if notifier is not None:
            targets = await notifier.targets(row["recipient"])
            target = next((t for t in targets if t.key == row["target_key"]), None)
        if target is None:  # unsubscribed, or the URL left the file, since the last attempt
            await self.attempts.write([
                self._row(a, row["recipient"], row["stage"], row["channel"], NO_CHANNEL,
                          row["attempt"], "failed", "target no longer configured: not retried")
                for a in alert_ids
            ])
            return
        await self._attempt(row["recipient"], row["stage"], target, message, alert_ids,
                            row["attempt"])

    def _row(
        self,
        alert_id: str,
        recipient: str,
        stage: str,
        channel: str,
        target: str,
        attempt: int | None,
        result: str,
        reason: str | None,
        status: int | None = None,
    ) -> dict[str, Any]:
        return {
            "alert_id": alert_id,
            "recipient": recipient,
            "stage": stage[:64],
            "channel": channel,
            "target": target[:200],
            "attempt": attempt,
            "result": result,
            "reason": reason,
            "http_status": status,
            "ts": self.clock.now_ms(),
        }
