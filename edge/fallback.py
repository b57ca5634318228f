"""Local fallback: when the cloud cannot be reached, life-safety alerts go to people on site.

Two things start it: the uplink down for `after_s` seconds (then every life-safety alert waiting
in the outbox, and each new one, is announced), and a life-safety alert the cloud has not
confirmed within `after_s` of being raised, though the broker is up (the cloud itself may be
down). Each alert is announced once: on the gateway's own broker (`local/alarm`, for a siren or
a duty-room display) and through Apprise URLs (an SMS gateway on the LAN, a WeCom bot, e-mail).
The outbox still delivers everything to the cloud when it is back.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import apprise
import orjson
from pydantic import Field

from shouwang.clock import Clock
from shouwang.config import ConfigError, Strict
from shouwang.mqtt import MqttClient, MqttError
from shouwang.vocabulary import headline

log = logging.getLogger(__name__)
LOCAL_ALARM_TOPIC = "local/alarm"


class FallbackConfig(Strict):
    after_s: float = Field(
        30.0, gt=0, description="Uplink down this long → announce life-safety alerts locally"
    )
    apprise_urls_file: Path | None = Field(
        None,
        description="File with one Apprise URL per line (they hold tokens: keep them out of "
        "the site YAML); e.g. an SMS gateway on the LAN",
    )


class LocalFallback:
    def __init__(self, config: FallbackConfig, mqtt: MqttClient, clock: Clock) -> None:
        self.config = config
        self.mqtt = mqtt
        self.clock = clock
        self.announced: set[str] = set()
        self.failures = 0
        self._down_since: float | None = clock.monotonic()  # down until first connected
        self._notifier = apprise.Apprise()
        for url in self._urls():
            if not self._notifier.add(url):
                # Name the scheme only: the rest of an Apprise URL is usually a token.
                scheme = url.split("://", 1)[0]
                raise ConfigError(
                    f"fallback.apprise_urls_file: an Apprise URL is not valid: {scheme}://…"
                )

    def _urls(self) -> list[str]:
        path = self.config.apprise_urls_file
        if path is None:
            return []
        try:
            lines = path.read_text().splitlines()
        except OSError as err:
            raise ConfigError(
                f"fallback.apprise_urls_file {path}: cannot read: {err.strerror}"
            ) from err
        return [line.strip() for line in lines if line.strip() and not line.startswith("#")]

    def uplink_changed(self, up: bool) -> None:
        if up:
            if self.active():
                log.info("uplink back: local fallback ends")
            self._down_since = None
        elif self._down_since is None:
            self._down_since = self.clock.monotonic()

    def active(self) -> bool:
        return (
            self._down_since is not None
            and self.clock.monotonic() - self._down_since >= self.config.after_s
        )

    def deadline(self) -> float | None:
        """Monotonic second at which fallback starts, while it has not yet."""
        if self._down_since is None or self.active():
            return None
        return self._down_since + self.config.after_s

    async def announce(
        self, envelopes: list[bytes], reason: str = "uplink down: announced by the gateway itself"
    ) -> int:
        """Announce each alert (its stored envelope) once; returns how many were new."""
        alerts: list[dict[str, Any]] = [orjson.loads(e) for e in envelopes]
        fresh = [a for a in alerts if a["id"] not in self.announced]
        # Claimed before the first await: the watcher and the ingest path may both get here.
        self.announced.update(a["id"] for a in fresh)
        for alert in fresh:
            body = alert["body"]
            message = {**alert, "fallback": reason}
            try:
                await self.mqtt.publish(LOCAL_ALARM_TOPIC, orjson.dumps(message), qos=1)
            except MqttError as err:
                self.failures += 1
                log.error("local alarm for %s not published: %s", alert["id"], err)
            if self._notifier:
                title = f"{headline(body['type'], body['severity'])}: site {alert['site']}"
                where = body.get("location") or "no location on record"
                text = (
                    f"{body['type']} from device {alert['device']} ({where}); alert {alert['id']}."
                    f" {reason}: act locally."
                )
                ok = await self._notifier.async_notify(body=text, title=title)
                if not ok:
                    self.failures += 1
                    log.error("fallback notification for %s failed on some URL", alert["id"])
            log.warning(
                "life-safety alert announced locally (%s)",
                reason,
                extra={"alert": alert["id"], "type": body["type"]},
            )
        return len(fresh)
