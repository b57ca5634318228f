"""Apprise URLs against local endpoints: a webhook, an ntfy-style server and an SMTP server."""

from __future__ import annotations

import asyncio
import email
import email.header
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from cloud.notify import NotifyConfig, alert_attempts, build_notify
from cloud.notify.config import AppriseConfig, WebPushConfig
from cloud.notify.dispatcher import Dispatcher
from cloud.notify.plugins.apprise import load_urls
from cloud.store import Store
from shouwang.clock import ManualClock
from shouwang.config import ConfigError
from shouwang.services import free_port
from tests.conftest import split_retry

pytestmark = pytest.mark.integration
GUARDIAN = "guardian-r1@example.test"
TOPIC = "elder-r1-5f3c"


def subject(mail: EmailMessage) -> str:
    """The Subject as a person reads it (a Chinese subject travels RFC 2047-encoded)."""
    return str(email.header.make_header(email.header.decode_header(mail["Subject"])))


@dataclass
class Endpoints:
    webhook: list[dict[str, Any]] = field(default_factory=list)
    webhook_status: list[int] = field(default_factory=list)  # forced answers, in order
    ntfy: list[tuple[dict[str, Any], dict[str, str]]] = field(default_factory=list)
    mail: list[EmailMessage] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)


class _Mailbox:
    def __init__(self, box: list[EmailMessage]) -> None:
        self.box = box

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content)
        message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
        self.box.append(message)
        return "250 OK"


@pytest.fixture
async def endpoints() -> AsyncIterator[Endpoints]:
    got = Endpoints()

    async def webhook(request: web.Request) -> web.Response:
        if got.webhook_status:
            return web.Response(status=got.webhook_status.pop(0))
        got.webhook.append(await request.json())
        return web.json_response({"ok": True})

    async def ntfy(request: web.Request) -> web.Response:  # ntfy's publish-as-JSON
        got.ntfy.append((await request.json(), dict(request.headers)))
        return web.json_response({"id": "x", "event": "message"})

    app = web.Application()
    app.router.add_post("/hook", webhook)
    app.router.add_post("/", ntfy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    got.ports["http"] = free_port()
    got.ports["smtp"] = free_port()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(
        lambda: SMTP(_Mailbox(got.mail), hostname="mx.test"), "127.0.0.1", got.ports["smtp"]
    )
    try:
        await web.TCPSite(runner, "127.0.0.1", got.ports["http"]).start()
        yield got
    finally:
        smtp.close()
        await smtp.wait_closed()
        await runner.cleanup()


@pytest.fixture
async def notify(tmp_path: Path, endpoints: Endpoints) -> AsyncIterator[Dispatcher]:
    http, smtp = endpoints.ports["http"], endpoints.ports["smtp"]
    urls = tmp_path / "notify-urls.yaml"
    urls.write_text(
        "user:u-1:\n"
        f"  - json://127.0.0.1:{http}/hook\n"
        f"  - ntfy://127.0.0.1:{http}/{TOPIC}\n"
        f"  - mailto://127.0.0.1:{smtp}?from=alerts@shouwang.test&to={GUARDIAN}&mode=insecure\n"
        "role:worker-grid-1:\n"
        f"  - json://127.0.0.1:{http}/hook\n"
    )
    store = await Store.connect(f"sqlite+aiosqlite:///{tmp_path}/cloud.sqlite")
    config = NotifyConfig(
        webpush=WebPushConfig(enabled=False),
        apprise=AppriseConfig(urls_file=urls, timeout_s=10),
    )
    dispatcher = build_notify(config, store, ManualClock())
    try:
        await dispatcher.start(run=False)
        yield dispatcher
    finally:
        await dispatcher.stop()
        await store.close()


def alert(alert_id: str, severity: str) -> dict[str, Any]:
    return {"id": alert_id, "site": "site-1", "type": "sos" if severity == "critical" else "fall",
            "severity": severity, "life_safety": severity == "critical",
            "ts": 1_767_225_600_000, "location": "d/s/c/grid-1/bldg-1/unit-1/floor-1/101",
            "resident": "r-1", "detail": {"note": "private"}}


async def test_critical_alert_reaches_webhook_ntfy_and_email_loudly(
    notify: Dispatcher, endpoints: Endpoints, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        rows = await notify.notify("user:u-1", alert("A1", "critical"), stage="family")
        endpoints.webhook_status = [500]
        await notify.notify("user:u-1", alert("A9", "critical"), stage="family")
    ours = "\n".join(  # the test's own SMTP server logs the address; the cloud must not
        r.getMessage() for r in caplog.records if r.name.startswith(("apprise", "cloud"))
    )
    assert "via json://127.0.0.1…#" in ours  # the failed webhook was logged, redacted
    assert GUARDIAN not in ours  # Apprise itself would log "Sent Email to <address>"
    assert TOPIC not in ours
    endpoints.webhook, endpoints.ntfy, endpoints.mail = endpoints.webhook[:1], endpoints.ntfy[:1], endpoints.mail[:1]
    assert sorted((r["channel"], r["result"]) for r in rows) == [("apprise", "delivered")] * 3

    [hook] = endpoints.webhook
    assert hook["title"] == "[紧急] 一键求助 · SOS"
    assert hook["type"] == "failure"  # Apprise's loudest type
    assert "[紧急] 一键求助 · SOS: d/s/c/grid-1/bldg-1/unit-1/floor-1/101 (alert A1)" in hook["message"]
    assert "private" not in hook["message"]

    [(note, headers)] = endpoints.ntfy
    assert (note["topic"], note["title"]) == (TOPIC, "[紧急] 一键求助 · SOS")
    assert "(alert A1)" in note["message"]
    assert headers["X-Priority"] == "max"

    [mail] = endpoints.mail
    assert mail["X-Envelope-To"] == GUARDIAN
    assert subject(mail) == "[紧急] 一键求助 · SOS"
    assert mail["X-Priority"] == "1"
    assert "(alert A1)" in _text(mail)

    # What the timeline shows names no topic, address or path.
    for attempt in await alert_attempts(notify.store, "A1"):
        assert GUARDIAN not in attempt["target"]
        assert TOPIC not in attempt["target"]
        assert "hook" not in attempt["target"]


async def test_a_high_alert_is_not_sent_as_an_emergency(
    notify: Dispatcher, endpoints: Endpoints
) -> None:
    await notify.notify("user:u-1", alert("A2", "high"), stage="family")
    assert endpoints.webhook[0]["type"] == "warning"
    assert "X-Priority" not in endpoints.ntfy[0][1]
    assert "X-Priority" not in endpoints.mail[0]
    assert subject(endpoints.mail[0]) == "[高] 跌倒 · Fall"


async def test_a_role_gets_its_own_urls_and_a_failing_webhook_is_retried(
    notify: Dispatcher, endpoints: Endpoints
) -> None:
    endpoints.webhook_status = [500]
    rows = await notify.notify("role:worker-grid-1", alert("A3", "critical"), stage="worker")
    assert [(r["result"], r["attempt"]) for r in rows] == [("failed", 1)]
    reason, wait = split_retry(rows[0]["reason"])
    assert reason == "the service refused or was unreachable; retry 2"
    assert 1 <= wait <= 2  # the shared back-off: base_s 2, jittered in [d/2, d]
    assert endpoints.ntfy == [] and endpoints.mail == []  # noqa: PT018 - the user's URLs
    notify.clock.advance(round(wait * 1000))  # type: ignore[attr-defined]
    await notify.tick()
    assert [w["title"] for w in endpoints.webhook] == ["[紧急] 一键求助 · SOS"]
    results = [(t["attempt"], t["result"]) for t in await alert_attempts(notify.store, "A3")]
    assert results == [(1, "failed"), (2, "delivered")]


def test_a_bad_urls_file_names_the_key_and_never_the_token(tmp_path: Path) -> None:
    path = tmp_path / "urls.yaml"
    path.write_text("user:u-1:\n  - json://127.0.0.1/hook\n  - nosuch://tok-SECRET123\n")
    with pytest.raises(ConfigError) as err:
        load_urls(path)
    assert str(err.value) == f"{path}: user:u-1.1: not a valid Apprise URL (nosuch://…)"
    path.write_text("u-1:\n  - json://127.0.0.1/hook\n")
    with pytest.raises(ConfigError, match=r"u-1: not user:<id> or role:<name>"):
        load_urls(path)
    path.write_text("user:u-1: [\n  - 'tok-SECRET123\n")
    with pytest.raises(ConfigError) as err:
        load_urls(path)
    assert "SECRET" not in str(err.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_urls(tmp_path / "missing.yaml")


def _text(message: EmailMessage) -> str:
    if message.is_multipart():
        return "".join(_text(part) for part in message.get_payload())  # type: ignore[arg-type]
    payload = message.get_payload(decode=True)
    return payload.decode() if isinstance(payload, bytes) else str(payload)
