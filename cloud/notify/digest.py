"""The digest message: non-critical alerts collected for one recipient, as one notification."""

from __future__ import annotations

from cloud.notify.config import DigestConfig
from cloud.notify.message import AlertSummary, Message


def digest_message(alerts: list[AlertSummary], config: DigestConfig, public_url: str) -> Message:
    """Lists the first `max_listed` alerts and counts the rest."""
    listed = alerts[: config.max_listed]
    more = len(alerts) - len(listed)
    minutes = max(1, round(config.window_s / 60))
    lines = [a.line() for a in listed]
    if more:
        lines.append(f"… and {more} more")
    return Message(
        title=f"Shouwang: {len(alerts)} alert{'s' if len(alerts) != 1 else ''} "
        f"in the last {minutes} min",
        body="\n".join(lines),
        url=f"{public_url.rstrip('/')}/",
        critical=False,
        alerts=tuple(listed),
        digest=True,
        more=more,
    )
