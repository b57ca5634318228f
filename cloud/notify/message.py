"""What a notification carries: the alert summary a recipient may see, and delivery outcomes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from shouwang.vocabulary import headline

# Life-safety and critical alerts are never rate-limited or digested.
CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class AlertSummary:
    """The part of an alert that goes out to people: no detail, no other resident's data.

    Built field by field (never by copying the alert dict), so a field added to alerts later
    does not leak into notifications unnoticed.
    """

    id: str
    type: str
    severity: str
    life_safety: bool
    ts: int
    site: str
    location: str | None = None
    repeats: int = 0  # times it happened again (a button pressed again), folded into it

    @classmethod
    def from_alert(cls, alert: dict[str, Any]) -> AlertSummary:
        return cls(
            id=str(alert["id"]),
            type=str(alert["type"]),
            severity=str(alert["severity"]),
            life_safety=bool(alert.get("life_safety", False)),
            ts=int(alert["ts"]),
            site=str(alert["site"]),
            location=alert.get("location"),
            repeats=int(alert.get("repeats") or 0),
        )

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "severity": self.severity,
                "life_safety": self.life_safety, "ts": self.ts, "site": self.site,
                "location": self.location, "repeats": self.repeats}

    @property
    def critical(self) -> bool:
        return self.severity == CRITICAL or self.life_safety

    def title(self) -> str:
        """Named from the one vocabulary, in both languages: "[紧急] 一键求助 · SOS"."""
        return headline(self.type, self.severity)

    def line(self) -> str:
        where = self.location or f"site {self.site}"
        again = f", {self.repeats + 1} 次 / times" if self.repeats else ""
        return f"{headline(self.type, self.severity)}: {where}{again} (alert {self.id})"


@dataclass(frozen=True, slots=True)
class Message:
    """One notification, channel-neutral; each notifier renders it its own way."""

    title: str
    body: str
    url: str
    critical: bool
    alerts: tuple[AlertSummary, ...]
    digest: bool = False
    more: int = 0  # alerts in a digest beyond those listed

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "body": self.body, "url": self.url,
                "critical": self.critical, "alerts": [a.to_json() for a in self.alerts],
                "digest": self.digest, "more": self.more}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        return cls(
            title=data["title"], body=data["body"], url=data["url"], critical=data["critical"],
            alerts=tuple(AlertSummary.from_alert(a) for a in data["alerts"]),
            digest=data["digest"], more=data["more"],
        )

    def push_payload(self) -> dict[str, Any]:
        """The JSON a browser's service worker receives (kept well under push's 4 kB)."""
        payload: dict[str, Any] = {
            "title": self.title,
            "body": self.body,
            "url": self.url,
            "critical": self.critical,
            "digest": self.digest,
            "alerts": [
                {"id": a.id, "type": a.type, "severity": a.severity, "ts": a.ts}
                for a in self.alerts[:10]
            ],
        }
        if self.digest:
            payload["count"] = len(self.alerts) + self.more
        return payload


@dataclass(frozen=True, slots=True)
class Target:
    """Somewhere one channel delivers to. `key` is internal; `shown` is safe to log and show."""

    channel: str
    key: str
    shown: str
    secret: Any = field(default=None, repr=False, compare=False)  # what the plugin needs


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status: int | None = None
    reason: str | None = None
    transient: bool = False  # worth a retry (5xx, 429, refused, timeout)
    gone: bool = False  # the target no longer exists (push 404/410): forget it


def fingerprint(secret: str) -> str:
    """A short stable tag that tells targets apart without revealing them."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


# Schemes whose host part names a server. In most other Apprise URLs the "host" is the token
# itself (wecombot://KEY, dingtalk://TOKEN, tgram://BOT_TOKEN), so only these show it.
SERVER_SCHEMES = frozenset({
    "json", "jsons", "xml", "xmls", "form", "forms", "ntfy", "ntfys", "gotify", "gotifys",
    "apprise", "apprises",
})


def redact_url(url: str) -> str:
    """`scheme://host…#fp` where the host is a server's name, `scheme://…#fp` otherwise.

    User, password, path and query (where tokens, phone numbers and addresses live) never
    appear; nor does a host that may be a token (a bot key, an ntfy.sh topic) or a mail domain.
    """
    scheme, _, rest = url.partition("://")
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    server = "." in host or ":" in host  # a dotted name or an address, not a bare topic
    if scheme.lower() not in SERVER_SCHEMES or not server or not rest:
        host = ""
    return f"{scheme or '?'}://{host}…#{fingerprint(url)}"
