"""The cloud's watchlists to each gateway: `site/{site}/down/watchlist`, as down/alert does it.

Two roads (shouwang/watchlist_message.py):
- live: the alerts worker watches `watchlist_changes` (woken at once by an enrolment or
  removal made in this process, else every `feed_poll_s`) and publishes, with QoS 1 to the
  gateway's persistent session, to each site whose version moved: the changes since the
  version the gateway acknowledged (a delta), or its whole list when it holds none, refused
  a list, or more than MAX_DELTA changed;
- replay: each gateway report says which version the gateway holds (`watchlist`); a report
  that holds an older one is answered with the whole current list (so a gateway that missed
  any number of changes, or could not apply a delta, is whole again after one message, or
  after the parts of a list too large for one). A change made while a gateway
  was away, or lost with a broker restart, reaches it with its next report.
"""

from __future__ import annotations

import logging

from cloud.rounds import Rounds
from cloud.store import Store
from cloud.watchlist_store import CloudKeys, latest, site_messages, site_versions
from shouwang.clock import Clock
from shouwang.mqtt import MqttClient, MqttError
from shouwang.protocol import site_down_topic

log = logging.getLogger(__name__)
PUBLISH_TIMEOUT_S = 10.0


class WatchlistDownlink(Rounds):
    name = "watchlist downlink"

    def __init__(self, store: Store, keys: CloudKeys, client: MqttClient, poll_s: float,
                 clock: Clock) -> None:
        super().__init__(poll_s)
        self.store = store
        self.keys = keys
        self.client = client
        self.clock = clock
        self.published = 0
        self.last = -1  # the newest change published everywhere it goes
        self.sent: dict[str, int] = {}  # version last published per site, by this worker

    async def round(self) -> int:
        """Publish each site's watchlist whose version moved; the number of sites sent to."""
        newest = await latest(self.store)
        if newest == self.last:
            return 0
        complete = True
        count = 0
        for site, (location, version, held, refused, deltas) in (
                await site_versions(self.store)).items():
            if version <= max(self.sent.get(site, 0), held or 0):
                continue
            # The changes since the version it acknowledged; the whole list to a gateway
            # that holds none, refused a list, or runs software older than deltas (its
            # reports do not name its keys) (shouwang/watchlist_message.py).
            base = held if held and not refused and deltas else None
            payloads = await site_messages(self.store, self.keys, site, location, version,
                                           self.clock.now_ms(), base=base)
            if payloads is None:
                continue
            try:
                for payload in payloads:  # one, or the parts of a large list in order
                    await self.client.publish(site_down_topic(site, "watchlist"), payload,
                                              qos=1, timeout=PUBLISH_TIMEOUT_S)
            except MqttError as err:
                # Tried again next round; the gateway's next report would bring it anyway.
                log.warning("watchlist version %d for site %s not sent: %s", version, site, err)
                complete = False
                continue
            self.sent[site] = version
            self.published += 1
            count += 1
        if complete:
            self.last = newest
        return count


async def answer_report(store: Store, keys: CloudKeys, client: MqttClient, site: str,
                        held: object, now_ms: int, trusted: object = None) -> bool:
    """A gateway reported the version it holds (`held`) and the signing keys it trusts
    (`trusted`): send the current one if it is newer, or if the gateway has yet to learn the
    staged signing key or to forget a revoked one (the message carries both). True when one
    was sent."""
    if type(held) is not int:  # a gateway that does not take watchlists says nothing
        return False
    now = (await site_versions(store, site)).get(site)
    if now is None:
        return False
    location, version = now.location, now.version
    keys_news = isinstance(trusted, list) and (
        (keys.next_fingerprint is not None and keys.next_fingerprint not in trusted)
        or any(fp in trusted for fp in keys.revoked))
    if version <= held and not keys_news:
        return False
    payloads = await site_messages(store, keys, site, location, version, now_ms)
    if payloads is None:
        return False
    try:
        for payload in payloads:
            client.publish_nowait(site_down_topic(site, "watchlist"), payload, qos=1)
    except MqttError as err:
        log.warning("watchlist version %d for site %s not sent: %s", version, site, err)
        return False
    log.info("site %s holds watchlist version %d: sent %d", site, held, version)
    return True
