"""Dispatcher rules on the manual clock: critical never limited, digests, rate limits, bounds."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloud.config import CloudConfig
from cloud.notify import pending
from cloud.notify.config import DigestConfig, NotifyConfig, RateLimitConfig
from cloud.notify.dispatcher import Dispatcher
from cloud.notify.message import AlertSummary, Message, Outcome, Target, redact_url
from cloud.notify.ratelimit import RateLimiter
from cloud.notify.registry import Context, Notifier, discover
from cloud.notify.tables import alert_attempts
from cloud.store import Store
from shouwang.clock import ManualClock, SystemClock
from shouwang.config import ConfigError, validate
from tests.conftest import eventually, split_retry


class Fake(Notifier):
    """Reaches every `user:` recipient; answers from a script, records what it was sent."""

    channel = "fake"

    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []
        self.script: list[Outcome | Exception] = []

    @classmethod
    async def create(cls, ctx: Context) -> Fake:
        return cls()

    async def targets(self, recipient: str) -> list[Target]:
        if not recipient.startswith("user:"):
            return []
        return [Target(self.channel, key=recipient, shown=f"fake:{recipient}")]

    async def send(self, target: Target, message: Message) -> Outcome:
        self.sent.append((target.key, message))
        if self.script:
            answer = self.script.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return Outcome(True, status=200)


def alert(n: int, severity: str = "medium", life_safety: bool = False) -> dict[str, Any]:
    return {"id": f"A{n:03d}", "site": "s1", "type": "water_leak", "severity": severity,
            "life_safety": life_safety, "ts": 1_767_225_600_000 + n, "location": f"b1/{n}"}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.connect(f"sqlite+aiosqlite:///{tmp_path}/n.sqlite")
    yield s
    await s.close()


async def make(store: Store, clock: ManualClock, **config: Any) -> tuple[Dispatcher, Fake]:
    fake = Fake()
    d = Dispatcher(NotifyConfig(**config), store, clock, notifiers=[fake])
    await d.start(run=False)
    return d, fake


async def test_critical_and_life_safety_are_never_limited_or_digested(store: Store) -> None:
    clock = ManualClock()
    d, fake = await make(store, clock, rate_limit=RateLimitConfig(burst=1, per_hour=1))
    try:
        for n in range(10):
            await d.notify("user:u1", alert(n, "critical"), "family")
        for n in range(10, 15):  # a medium alert that is life-safety (a gas leak) goes too
            await d.notify("user:u1", alert(n, "medium", life_safety=True), "family")
        assert len(fake.sent) == 15
        assert all(m.critical for _, m in fake.sent)
        assert await d.pending_count("digest") == 0
    finally:
        await d.stop()


async def test_over_the_limit_goes_into_the_next_digest(store: Store) -> None:
    clock = ManualClock()
    d, fake = await make(
        store, clock, rate_limit=RateLimitConfig(burst=2, per_hour=60),
        digest=DigestConfig(window_s=300),
    )
    try:
        results = [
            (await d.notify("user:u1", alert(n, "high"), "worker"))[0]["result"]
            for n in range(3)
        ]
        assert results == ["delivered", "delivered", "rate_limited"]
        clock.advance(60_000)  # one token back
        rows = await d.notify("user:u1", alert(3, "high"), "worker")
        assert rows[0]["result"] == "delivered"
        assert (await d.notify("user:u2", alert(4, "high"), "worker"))[0]["result"] == "delivered"
        assert [m.alerts[0].id for _, m in fake.sent] == ["A000", "A001", "A003", "A004"]

        clock.advance(239_999)
        await d.tick()
        assert len(fake.sent) == 4
        clock.advance(1)
        await d.tick()
        key, digest = fake.sent[-1]
        assert (key, digest.digest, [a.id for a in digest.alerts]) == ("user:u1", True, ["A002"])
        timeline = await alert_attempts(store, "A002")
        assert [(t["stage"], t["result"], t["reason"]) for t in timeline] == [
            ("worker", "rate_limited", "over 60 per hour: in the next digest"),
            ("digest", "delivered", None),
        ]
    finally:
        await d.stop()


async def test_a_digest_is_one_message_per_recipient_per_window(store: Store) -> None:
    clock = ManualClock()
    d, fake = await make(store, clock, digest=DigestConfig(window_s=600, max_listed=3))
    try:
        for n in range(5):
            rows = await d.notify("user:u1", alert(n, "low"), "worker")
            assert [(r["result"], r["channel"]) for r in rows] == [("digested", "-")]
            clock.advance(60_000)
        await d.notify("user:u2", alert(9, "info"), "worker")
        assert fake.sent == []
        clock.advance(600_000 - 5 * 60_000)  # ten minutes after u1's first alert
        await d.tick()
        assert [k for k, _ in fake.sent] == ["user:u1"]
        message = fake.sent[0][1]
        assert message.title == "Shouwang: 5 alerts in the last 10 min"
        assert message.body.splitlines() == [
            "[低] 漏水 · Water leak: b1/0 (alert A000)",
            "[低] 漏水 · Water leak: b1/1 (alert A001)",
            "[低] 漏水 · Water leak: b1/2 (alert A002)",
            "… and 2 more",
        ]
        assert message.push_payload()["count"] == 5
        for n in range(5):  # every alert, listed or counted, shows the digest in its timeline
            results = [t["result"] for t in await alert_attempts(store, f"A{n:03d}")]
            assert results == ["digested", "delivered"]
        clock.advance(300_000)
        await d.tick()
        assert [k for k, _ in fake.sent] == ["user:u1", "user:u2"]
    finally:
        await d.stop()


async def test_a_full_digest_goes_at_once(store: Store) -> None:
    clock = ManualClock()
    d, fake = await make(store, clock, digest=DigestConfig(max_pending=3))
    try:
        for n in range(3):
            await d.notify("user:u1", alert(n), "worker")
        await d.notify("user:u1", alert(1), "worker")  # the same alert again: listed once
        assert [[a.id for a in m.alerts] for _, m in fake.sent] == [["A000", "A001", "A002"]]
        assert await d.pending_count("digest") == 1
    finally:
        await d.stop()


async def test_digests_and_retries_survive_a_restart(store: Store) -> None:
    clock = ManualClock()
    d, fake = await make(store, clock)
    await d.notify("user:u1", alert(1, "low"), "worker")
    fake.script = [Outcome(False, status=503, reason="busy", transient=True)]
    await d.notify("user:u2", alert(2, "critical"), "family")
    await d.stop()  # or killed: nothing of this was only in memory

    clock.advance(300_000)
    d, fake = await make(store, clock)
    try:
        await d.tick()
        assert sorted((k, m.digest, m.alerts[0].id) for k, m in fake.sent) == [
            ("user:u1", True, "A001"), ("user:u2", False, "A002")
        ]
        assert [t["result"] for t in await alert_attempts(store, "A002")] == [
            "failed", "delivered"
        ]
        assert await d.pending_count("digest") == await d.pending_count("retry") == 0
    finally:
        await d.stop()


async def test_work_a_dead_worker_took_is_taken_up_after_the_claim_timeout(
    store: Store,
) -> None:
    clock = ManualClock()
    d, fake = await make(store, clock, claim_timeout_s=60)
    try:
        await d.notify("user:u1", alert(1, "low"), "worker")
        clock.advance(300_000)
        # Another worker claims the digest and dies before sending it.
        assert len(await pending.claim(store, pending.DIGEST, "dead", clock.now_ms())) == 1
        await d.tick()
        assert fake.sent == []  # held by the other worker
        clock.advance(60_001)
        await d.tick()
        assert [m.alerts[0].id for _, m in fake.sent] == ["A001"]
    finally:
        await d.stop()


async def test_nobody_to_reach_and_a_notifier_that_raises_are_recorded(store: Store) -> None:
    clock = ManualClock()
    d, fake = await make(store, clock)
    try:
        rows = await d.notify("role:police-7", alert(1, "critical"), "police")
        assert [(r["result"], r["reason"]) for r in rows] == [
            ("failed", "no channel configured for this recipient")
        ]
        fake.script = [RuntimeError("bug"), Outcome(False, status=400, reason="bad request")]
        rows = await d.notify("user:u1", alert(2, "critical"), "family")
        reason, wait = split_retry(rows[0]["reason"])
        assert reason == "RuntimeError in the notifier; retry 2"
        assert 1 <= wait <= 2
        clock.advance(2_000)
        await d.tick()
        timeline = await alert_attempts(store, "A002")
        assert [(t["attempt"], t["result"], t["http_status"]) for t in timeline] == [
            (1, "failed", None), (2, "failed", 400)
        ]
        assert await d.pending_count("retry") == 0
        with pytest.raises(ValueError, match="not user:<id> or role:<name>"):
            await d.notify("u1", alert(3), "family")
    finally:
        await d.stop()


async def test_retries_stop_at_max_attempts(store: Store) -> None:
    clock = ManualClock()
    d, fake = await make(store, clock, retry={"max_attempts": 3, "base_s": 1, "max_s": 1.5})
    try:
        fake.script = [Outcome(False, status=503, reason="busy", transient=True)] * 5
        await d.notify("user:u1", alert(1, "critical"), "family")
        for _ in range(4):
            clock.advance(1_500)
            await d.tick()
        reasons = [t["reason"] for t in await alert_attempts(store, "A001")]
        assert len(reasons) == 3
        assert reasons[2] == "busy; gave up after 3 attempts"
        (first, wait1), (second, wait2) = split_retry(reasons[0]), split_retry(reasons[1])
        assert (first, second) == ("busy; retry 2", "busy; retry 3")
        assert 0.5 <= wait1 <= 1
        assert 0.75 <= wait2 <= 1.5
    finally:
        await d.stop()


async def retry_waits_ms(store: Store, now_ms: int) -> dict[str, tuple[int, int]]:
    """Each pending retry's recipient -> (its attempt number, ms from now until it is due)."""
    async with store.engine.begin() as conn:
        rows = (await conn.execute(select(pending.pending).where(
            pending.pending.c.kind == pending.RETRY))).mappings().all()
    return {r["recipient"]: (r["attempt"], r["due_ms"] - now_ms) for r in rows}


async def test_targets_that_failed_together_are_retried_apart_and_a_restart_keeps_the_count(
    store: Store,
) -> None:
    """A provider outage fails a hundred messages at one instant: their retries are spread
    over [base/2, base], not sent back in one burst; the next ones over [base, 2 base], also
    after a restart (the attempt number is stored, the wait is computed from it)."""
    clock = ManualClock()
    d, fake = await make(store, clock, retry={"base_s": 10, "max_s": 300})
    busy = Outcome(False, status=503, reason="busy", transient=True)
    try:
        fake.script = [busy] * 100
        await asyncio.gather(*(d.notify(f"user:u{n}", alert(n, "critical"), "family")
                               for n in range(100)))
        waits = await retry_waits_ms(store, clock.now_ms())
    finally:
        await d.stop()
    assert len(waits) == 100
    assert {attempt for attempt, _ in waits.values()} == {2}
    assert all(5_000 <= ms <= 10_000 for _, ms in waits.values())
    spread = sorted(ms for _, ms in waits.values())
    assert spread[-1] - spread[0] > 2_500  # over most of the window, not one instant
    assert len(set(spread)) > 80

    clock.advance(10_000)  # every retry is due; the workers restarted meanwhile
    d, fake = await make(store, clock, retry={"base_s": 10, "max_s": 300})
    try:
        fake.script = [busy] * 100
        await d.tick()
        assert len(fake.sent) == 100
        waits = await retry_waits_ms(store, clock.now_ms())
    finally:
        await d.stop()
    assert {attempt for attempt, _ in waits.values()} == {3}
    assert all(10_000 <= ms <= 20_000 for _, ms in waits.values())


async def test_sends_finishing_together_are_all_recorded(store: Store) -> None:
    clock = ManualClock()
    d, _fake = await make(store, clock)
    try:
        rows = await asyncio.gather(
            *(d.notify(f"user:u{n}", alert(1, "critical"), "family") for n in range(50))
        )
        assert [r[0]["result"] for r in rows] == ["delivered"] * 50
        timeline = await alert_attempts(store, "A001")
        assert sorted(t["recipient"] for t in timeline) == sorted(f"user:u{n}" for n in range(50))
    finally:
        await d.stop()


async def test_the_run_loop_sends_retries_by_itself(store: Store) -> None:
    fake = Fake()
    fake.script = [Outcome(False, status=502, reason="bad gateway", transient=True)]
    config = NotifyConfig(tick_s=0.01, retry={"base_s": 0.01})
    d = Dispatcher(config, store, SystemClock(), notifiers=[fake])
    await d.start()  # with its tick task, on the real clock
    try:
        await d.notify("user:u1", alert(1, "critical"), "family")
        async def results() -> list[str]:
            return [t["result"] for t in await alert_attempts(store, "A001")]

        await eventually(lambda: len(fake.sent) == 2, timeout=10)
        assert await eventually(lambda: _two(results()), timeout=10) == ["failed", "delivered"]
    finally:
        await d.stop()


async def _two(rows: Any) -> list[str] | None:
    got = await rows
    return got if len(got) == 2 else None


async def test_disabled_notifiers_load_no_channel(store: Store) -> None:
    d = Dispatcher(NotifyConfig(enabled=False), store, ManualClock())
    await d.start()
    try:
        assert d.notifiers == {}
        rows = await d.notify("user:u1", alert(1, "critical"), "family")
        assert [r["result"] for r in rows] == ["failed"]
    finally:
        await d.stop()


def test_rate_limiter_state_is_bounded() -> None:
    limiter = RateLimiter(RateLimitConfig(burst=1, per_hour=1, max_recipients=3), ManualClock())
    for n in range(100):
        assert limiter.allow(f"user:{n}")
    assert len(limiter) == 3
    assert not limiter.allow("user:99")


def test_config_refuses_digesting_critical_and_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"cloud.yaml: digest.severities: .*never digested"):
        validate({"digest": {"severities": ["critical"]}}, NotifyConfig, source="cloud.yaml")
    with pytest.raises(ConfigError, match=r"cloud.yaml: webpush.subjet: unknown key"):
        validate({"webpush": {"subjet": "x"}}, NotifyConfig, source="cloud.yaml")
    with pytest.raises(ConfigError, match=r"webpush.subject: .*mailto: or https://"):
        validate({"webpush": {"subject": "ops@example.com"}}, NotifyConfig, source="cloud.yaml")
    with pytest.raises(ConfigError, match=r"cloud.yaml: notify.digest.window: unknown key"):
        validate({"broker": {}, "notify": {"digest": {"window": 3}}}, CloudConfig,
                 source="cloud.yaml")


@pytest.mark.parametrize(
    ("url", "hidden"),
    [
        ("mailto://user:secret@mail.example.com?to=grandson@example.com", "grandson"),
        ("ntfy://tk_abcdef@ntfy.local/elder-r1", "tk_abcdef"),
        ("wecombot://0123456789abcdef", "0123456789abcdef"),
        ("json://hooks.example/sms?to=13800138000", "13800138000"),
        ("ntfys://family-of-r1-secret-topic", "family-of-r1"),
        ("dingtalk://token-abc/13800138000", "token-abc"),
    ],
)
def test_redacted_targets_hide_tokens_addresses_and_numbers(url: str, hidden: str) -> None:
    shown = redact_url(url)
    assert hidden not in shown
    assert "secret" not in shown
    assert shown.startswith(url.split("://")[0] + "://")
    assert redact_url(url) == shown
    assert redact_url(url + "x") != shown


def test_a_server_host_is_shown_to_tell_targets_apart() -> None:
    assert redact_url("ntfy://127.0.0.1:8080/elder-r1").startswith("ntfy://127.0.0.1…#")
    assert redact_url("json://hooks.example/x").startswith("json://hooks.example…#")


def test_a_broken_plugin_is_logged_and_the_others_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pkg = tmp_path / "fakeplugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "broken.py").write_text("import no_such_module_here\n")
    (pkg / "good.py").write_text(
        "from cloud.notify.registry import register\n"
        "from tests.unit.test_notify import Fake\n"
        "@register\nclass Good(Fake):\n    channel = 'good'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.ERROR, logger="cloud.notify.registry"):
        found = discover("fakeplugins")
    assert list(found) == ["good"]
    assert "fakeplugins.broken not loaded: ModuleNotFoundError" in caplog.text
    assert set(discover()) == {"webpush", "apprise"}  # the real ones, not the test's
    sys.modules.pop("fakeplugins.good", None)


def test_a_repeated_alert_says_how_many_times_it_happened() -> None:
    alert = {"id": "A1", "type": "sos", "severity": "critical", "life_safety": True,
             "ts": 1_767_225_600_000, "site": "s-1", "location": "b1/101", "repeats": 2}
    summary = AlertSummary.from_alert(alert)
    assert summary.line() == "[紧急] 一键求助 · SOS: b1/101, 3 次 / times (alert A1)"
    assert AlertSummary.from_alert({**alert, "repeats": 0}).line() == (
        "[紧急] 一键求助 · SOS: b1/101 (alert A1)"
    )
