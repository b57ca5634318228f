"""Apprise URLs (webhooks, WeCom, DingTalk and Feishu bots, ntfy, gotify, e-mail) per recipient.

Apprise blocks (it uses `requests` and `smtplib`), so every send runs on a small thread pool
of our own, bounded and with a timeout. The URLs hold tokens and addresses, so they live in a
file of their own and only their redacted form (`scheme://host…#fingerprint`) is ever logged,
stored or shown.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import apprise
import yaml

from cloud.notify.dispatcher import RECIPIENT
from cloud.notify.message import Message, Outcome, Target, fingerprint, redact_url
from cloud.notify.registry import Context, Notifier, register
from shouwang.config import ConfigError

log = logging.getLogger(__name__)
# Apprise's own log lines quote e-mail addresses ("Sent Email to …") and topics; the
# Dispatcher logs every failure itself with the redacted target, so Apprise stays quiet.
APPRISE_LOG_LEVEL = logging.CRITICAL

# How a critical alert asks each service for its loudest delivery, where the service has one
# and the URL does not already choose. Others get the "[紧急] …" title and a failure type.
CRITICAL_ARGS: dict[str, tuple[str, str]] = {
    "ntfy": ("priority", "max"),
    "ntfys": ("priority", "max"),
    "gotify": ("priority", "emergency"),
    "gotifys": ("priority", "emergency"),
    "mailto": ("+X-Priority", "1"),
    "mailtos": ("+X-Priority", "1"),
}


def critical_url(url: str) -> str:
    scheme = url.split("://", 1)[0].lower()
    arg = CRITICAL_ARGS.get(scheme)
    if arg is None:
        return url
    query = urlsplit(url).query
    if any(key == arg[0] for key, _ in parse_qsl(query, keep_blank_values=True)):
        return url
    return f"{url}{'&' if '?' in url else '?'}{arg[0]}={arg[1]}"


def load_urls(path: Path) -> dict[str, list[str]]:
    """`{recipient: [url, ...]}` from YAML; errors name the file and key, never the URL."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"notify.apprise.urls_file {path}: cannot read: {err.strerror}") from err
    except yaml.YAMLError as err:
        # The parser's message may quote a line of the file, and a line holds a token.
        raise ConfigError(f"{path}: not valid YAML") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must map recipients (user:<id>, role:<name>) to URL lists")
    urls: dict[str, list[str]] = {}
    for recipient, entries in raw.items():
        if not isinstance(recipient, str) or not RECIPIENT.match(recipient):
            raise ConfigError(f"{path}: {recipient}: not user:<id> or role:<name>")
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{path}: {recipient}: must be a non-empty list of Apprise URLs")
        for i, url in enumerate(entries):
            scheme = str(url).split("://", 1)[0] if "://" in str(url) else "?"
            if not isinstance(url, str) or apprise.Apprise.instantiate(url) is None:
                raise ConfigError(f"{path}: {recipient}.{i}: not a valid Apprise URL ({scheme}://…)")
        urls[recipient] = list(entries)
    return urls


@register
class AppriseNotifier(Notifier):
    channel = "apprise"

    def __init__(self, ctx: Context, urls: dict[str, list[str]]) -> None:
        self.config = ctx.config.apprise
        self.urls = urls
        self._pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="notify-apprise")

    @classmethod
    async def create(cls, ctx: Context) -> AppriseNotifier | None:
        path = ctx.config.apprise.urls_file
        if path is None:
            return None
        logging.getLogger("apprise").setLevel(APPRISE_LOG_LEVEL)
        urls = await asyncio.to_thread(load_urls, path)
        log.info("apprise: %d recipients with URLs", len(urls))
        return cls(ctx, urls)

    async def targets(self, recipient: str) -> list[Target]:
        return [
            # Keyed by the URL's fingerprint: a retry finds its URL even if the file's
            # order changed, and none if the URL was removed.
            Target(self.channel, key=fingerprint(url), shown=redact_url(url), secret=url)
            for url in self.urls.get(recipient, [])
        ]

    async def send(self, target: Target, message: Message) -> Outcome:
        url = critical_url(target.secret) if message.critical else target.secret
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, _notify, url, message)
        try:
            async with asyncio.timeout(self.config.timeout_s):
                ok = await asyncio.shield(future)
        except TimeoutError:
            return Outcome(False, reason=f"no answer within {self.config.timeout_s:g} s",
                           transient=True)
        except Exception as err:
            return Outcome(False, reason=f"apprise raised {type(err).__name__}", transient=True)
        if ok:
            return Outcome(True)
        # Apprise says only that it failed (its log has the service's answer): try again.
        return Outcome(False, reason="the service refused or was unreachable", transient=True)

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, True)


def _notify(url: str, message: Message) -> bool:
    notifier = apprise.Apprise()
    if not notifier.add(url):
        return False
    if message.critical:
        kind = apprise.NotifyType.FAILURE
    elif message.digest:
        kind = apprise.NotifyType.INFO
    else:
        kind = apprise.NotifyType.WARNING
    body = f"{message.body}\n{message.url}"
    return bool(notifier.notify(body=body, title=message.title, notify_type=kind))
