"""The cloud's watchlists for this site (`site/{site}/down/watchlist`) put in the gateway's store.

Each message is the site's whole cloud watchlist, signed (shouwang/watchlist_message.py), or
one signed part of a list too large for one message: the parts are gathered in memory and the
list is applied only when every part of it is here. It is checked whole (signature, format
version, site, watchlist version, every entry) and then written in one atomic replacement of
the sealed file (edge/video/face/store.py), which the
camera workers reload (`face.reload_s`); enrolments made on this gateway's command line stay.
Each list comes with its tier (threshold, margin, hits, cooldown, retention) in the message;
the gateway's own `face/lists.yaml` wins where it names the list, and a list it can match by
neither (no tier, or one out of bounds) is refused whole: none of its entries is kept, it is
counted (`watchlist_list_refused`) and named in every report (`watchlist_refused`), while the
rest of the message is applied. A refused message changes nothing, is counted
(`watchlist_<reason>` in the edge's rejection counter) and logged once per reason and
version. The version applied goes into every gateway report: that is the acknowledgement,
and the cloud answers a report that holds an older one with the current list (a message lost
in an outage is replayed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from edge.video.face.store import Enrolment, ListPolicy, WatchlistError, WatchlistStore
from shouwang.files import write_atomically
from shouwang.metrics import Metrics
from shouwang.watchlist_message import (
    MAX_ENTRIES,
    Entry,
    Refused,
    WatchlistMessage,
    fingerprint,
    load_public,
    parse,
    public_pem,
)

log = logging.getLogger(__name__)
_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)


class CloudWatchlists:
    def __init__(self, store: WatchlistStore, site: str, public_key_file: Path | None,
                 metrics: Metrics) -> None:
        self.store = store
        self.site = site
        self.public_key_file = public_key_file
        self.keys_file = store.dir / "cloud_keys.json"
        self.metrics = metrics
        self.held = 0  # the cloud version in the store (read at start)
        self.refused: dict[str, str] = {}  # lists of that version not taken: name → why
        self.applied = 0  # messages applied since start
        self.deltas = 0  # of which changes on top of the list held (v3)
        self._lock = asyncio.Lock()
        self._said: set[tuple[str, int]] = set()
        self._said_lists: set[tuple[str, str]] = set()
        # The parts of a large list gathered so far: (version, digest, parts) → part → entries.
        self._parts_of: tuple[int, str, int] | None = None
        self._parts: dict[int, list[Entry]] = {}

    async def start(self) -> None:
        try:
            self.held, self.refused = await asyncio.to_thread(self.store.cloud_state)
        except WatchlistError as err:
            log.error("watchlist: %s; the cloud's list will be applied again when it comes", err)

    def _key(self) -> dict[str, Ed25519PublicKey] | Refused:
        """The cloud's public keys this gateway trusts, by fingerprint: those in
        `cloud_watchlist_key` (one PEM public key, or several, as an installer put them) and
        those the cloud announced in a message signed by a trusted key (`next_keys`, kept in
        `cloud_keys.json`), less those it revoked."""
        keys: dict[str, Ed25519PublicKey] = {}
        if self.public_key_file is not None:
            try:
                text = self.public_key_file.read_bytes()
            except OSError as err:
                return Refused("no_key", f"cloud_watchlist_key {self.public_key_file}: {err}")
            blocks = _PEM.findall(text)
            if not blocks:
                return Refused("no_key", f"cloud_watchlist_key {self.public_key_file}: no PEM "
                               "public key in it")
            for i, block in enumerate(blocks):
                key = load_public(block)
                if key is None:
                    return Refused("no_key", f"cloud_watchlist_key {self.public_key_file}, "
                                   f"key {i + 1}: not an Ed25519 public key")
                keys[fingerprint(public_pem(key))] = key
        learnt, revoked = self._learnt()
        for pem in learnt:
            key = load_public(pem)
            if key is not None:
                keys[fingerprint(public_pem(key))] = key
        for gone in revoked:
            keys.pop(gone, None)
        if not keys:
            return Refused("no_key", "no cloud_watchlist_key configured (or every key revoked): "
                           "this gateway cannot tell the cloud's watchlists from forged ones "
                           "and applies none")
        return keys

    def _learnt(self) -> tuple[list[bytes], list[str]]:
        """(public PEMs the cloud announced, fingerprints it revoked), from cloud_keys.json."""
        try:
            document = orjson.loads(self.keys_file.read_bytes())
        except FileNotFoundError:
            return [], []
        except (OSError, orjson.JSONDecodeError) as err:
            log.error("watchlist: %s unreadable (%s): only cloud_watchlist_key is trusted",
                      self.keys_file, err)
            return [], []
        return ([k.encode() for k in document.get("trusted", [])],
                list(document.get("revoked", [])))

    def _learn(self, message: WatchlistMessage) -> bool:
        """Keep the keys a trusted message announced and forget those it revoked (never the
        one that signed it); True when cloud_keys.json changed."""
        if not message.next_keys and not message.revoked:
            return False
        learnt, revoked = self._learnt()
        trusted = {fingerprint(p): p for p in learnt}
        for pem in message.next_keys:
            key = load_public(pem)
            if key is not None:
                trusted.setdefault(fingerprint(public_pem(key)), public_pem(key))
        gone = sorted(set(revoked) | {r for r in message.revoked if r != message.kid})
        for fp in gone:
            trusted.pop(fp, None)
        if sorted(trusted) == sorted(fingerprint(p) for p in learnt) and gone == sorted(revoked):
            return False
        try:
            write_atomically(self.keys_file, orjson.dumps(
                {"trusted": [p.decode() for _, p in sorted(trusted.items())], "revoked": gone},
                option=orjson.OPT_INDENT_2))
        except OSError as err:  # the report goes on saying what is trusted; tried next time
            log.error("watchlist: the cloud's new signing keys not kept: %s", err)
            return False
        log.info("watchlist: the cloud's signing keys trusted now: %s (revoked: %s)",
                 ", ".join(sorted(trusted)) or "none besides cloud_watchlist_key",
                 ", ".join(gone) or "none")
        return True

    def trusted(self) -> list[str]:
        """The fingerprints of the keys trusted, for the gateway's report."""
        keys = self._key()
        return [] if isinstance(keys, Refused) else sorted(keys)

    async def handle(self, payload: bytes) -> bool:
        """Apply one message; True when the gateway should report (applied or already held)."""
        async with self._lock:
            key = self._key()
            # Checking a part of a large list (768 descriptors) takes a while: not on the loop.
            outcome = key if isinstance(key, Refused) else await asyncio.to_thread(
                parse, payload, key=key, site=self.site, held=self.held)
            if isinstance(outcome, Refused):
                self._refuse(outcome, payload)
                return False
            # Keys announced are kept whatever becomes of the list (a part, a repeat).
            await asyncio.to_thread(self._learn, outcome)
            if outcome.version == self.held:
                return True  # a repeat: nothing to write; the report says we hold it
            if outcome.base is not None and outcome.base != self.held:
                # Changes on top of a list we do not hold: our report (at once) says which
                # we hold, and the cloud answers it with the whole list.
                self._refuse(Refused("delta_base", f"changes on top of version "
                                     f"{outcome.base}; this gateway holds {self.held}: the "
                                     "whole list is asked for"), payload)
                return True
            if outcome.parts > 1:
                whole = self._gather(outcome)
                if whole is None:
                    return False  # more parts to come; the report still says the old one
                outcome = whole
            try:
                added, removed, refused = await asyncio.to_thread(self._apply, outcome)
            except WatchlistError as err:
                self._refuse(Refused("store", str(err)), payload)
                return False
            self.held, self.refused = outcome.version, refused
            self.applied += 1
            self.deltas += outcome.base is not None
            for name, why in sorted(refused.items()):
                self.metrics.reject("watchlist_list_refused")
                if (name, why) not in self._said_lists:
                    self._said_lists.add((name, why))
                    log.error("watchlist %s from the cloud refused, none of its entries kept: "
                              "%s", name, why)
            log.info("watchlist version %d from the cloud applied: %d entries, %d added, "
                     "%d removed, %d lists refused", outcome.version, len(outcome.entries),
                     added, removed, len(refused))
            return True

    def _gather(self, part: WatchlistMessage) -> WatchlistMessage | None:
        """Keep one part of a list cut into several; the whole list once every part of one
        cut (version and digest) is here, else None. A part of a newer version, or of another
        cut of the same one, starts over; a part of an older one than being gathered is
        dropped."""
        key = (part.version, part.digest, part.parts)
        if self._parts_of != key:
            if self._parts_of is not None and part.version < self._parts_of[0]:
                return None
            self._parts_of, self._parts = key, {}
        self._parts[part.part] = part.entries
        if len(self._parts) < part.parts:
            return None
        entries = [e for i in range(1, part.parts + 1) for e in self._parts[i]]
        self._parts_of, self._parts = None, {}
        if len(entries) > MAX_ENTRIES:
            self._refuse(Refused("bad_format", f"{len(entries)} entries in {part.parts} "
                                 f"parts, more than {MAX_ENTRIES}"), b"")
            return None
        return WatchlistMessage(part.site, part.version, entries, lists=part.lists)

    def _apply(self, message: WatchlistMessage) -> tuple[int, int, dict[str, str]]:
        """Write the lists this gateway can match; (added, removed, refused: name → why)."""
        tiers, refused = _tiers(message, self.store.lists())
        kept = [_enrolment(e) for e in message.entries if e.list not in refused]
        if message.base is None:
            added, removed = self.store.replace_cloud(kept, message.version, lists=tiers,
                                                      refused=refused)
            return added, removed, refused
        refused = {**self.refused, **refused}
        added, removed = self.store.apply_delta(kept, message.removed, message.version,
                                                message.base, lists=tiers, refused=refused)
        return added, removed, refused

    def _refuse(self, refused: Refused, payload: bytes) -> None:
        self.metrics.reject(f"watchlist_{refused.reason}")
        said = (refused.reason, len(payload))
        if said not in self._said:  # once per kind of refusal, not once per redelivery
            self._said.add(said)
            log.error("watchlist message from the cloud refused (%s), nothing applied: %s",
                      refused.reason, refused.detail)


def _tiers(message: WatchlistMessage, own: dict[str, ListPolicy]
           ) -> tuple[dict[str, ListPolicy], dict[str, str]]:
    """The tiers the cloud sent that this gateway takes (those it does not define itself:
    its own win), and the lists of the entries it can match by neither, refused whole."""
    tiers: dict[str, ListPolicy] = {}
    refused: dict[str, str] = {}
    for name in sorted({e.list for e in message.entries} | message.lists.keys()):
        if name in own:
            continue
        raw = message.lists.get(name)
        if raw is None:
            refused[name] = ("no tier for it in the message, and not in this gateway's "
                             "face/lists.yaml")
            continue
        try:
            tiers[name] = ListPolicy.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            refused[name] = f"its tier is out of bounds: {where}: {first['msg']}"[:200]
    return tiers, refused


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _enrolment(e: Entry) -> Enrolment:
    return Enrolment(id=e.id, person=e.person, list=e.list, consent=e.consent,
                     entered_by="cloud", entered_at=_iso(e.entered_ms), until=_iso(e.until_ms),
                     model=e.model, photos=e.photos, origin="cloud",
                     # float32 on the wire; the 6 decimals the cloud and `face enroll` keep
                     embeddings=[[round(x, 6) for x in v] for v in e.embeddings])
