"""The cloud's watchlists at rest: who is on which list, sealed, and what each gateway gets.

A row of `watchlist_people` is one person on one list, with who entered them, when, under which
consent reference, for which jurisdiction (`scope`, a location prefix) and until when. The
face descriptors and the reference photo are sealed with AES-256-GCM under the key in
`watchlists.key_file` (a file of its own, 0600, never in a log or this database), bound to
the row's id, so a database dump or backup holds no face and a sealed photo moved to another
row does not open. `watchlist_changes` counts every enrolment and removal: the largest
`seq` among the changes that touch a site's place is the version of that site's watchlist.

A gateway gets the entries whose scope and the site's place overlap (one is a prefix of the
other, by whole segments): an elder's community gate, every gate of a station's jurisdiction.
It acknowledges the version it holds in its reports (`watchlist`, kept in
`sites.last_health`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import Field, field_validator
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.access import audit
from cloud.access.scope import prefix_matches
from cloud.schema import PATH_LEN, metadata, sites
from cloud.store import Store
from edge.video.face.store import DEFAULT_LISTS
from shouwang.config import ConfigError, Strict
from shouwang.files import write_atomically
from shouwang.watchlist_message import MAX_DELTA, build, build_delta, fingerprint, pack, sign

NONCE_BYTES = 12
LIST_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
log = logging.getLogger(__name__)

watchlist_people = Table(
    "watchlist_people",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("list", String(64), nullable=False),
    Column("person", String(64), nullable=False),  # an id, never a name
    Column("scope", String(PATH_LEN), nullable=False),  # the gates that watch for them
    Column("consent", String(128), nullable=False),  # the signed consent form's reference
    Column("entered_by", String(128), nullable=False),  # the user's name (an account id)
    Column("entered_ms", BigInteger, nullable=False),
    Column("until_ms", BigInteger, nullable=False),  # entered + the list's retention
    Column("model", String(64), nullable=False),  # the descriptor model
    Column("photo_hashes", JSON, nullable=False),  # SHA-256 of every photo enrolled
    Column("photo_type", String(32), nullable=False),  # image/jpeg or image/png
    Column("embeddings", LargeBinary, nullable=False),  # sealed: JSON list of descriptors
    Column("photo", LargeBinary, nullable=False),  # sealed: the first reference photo
    UniqueConstraint("list", "person", name="uq_watchlist_people_list_person"),
)

watchlist_changes = Table(
    "watchlist_changes",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("ts", BigInteger, nullable=False),
    Column("action", String(16), nullable=False),  # enrol | remove | expire
    Column("list", String(64), nullable=False),
    Column("person", String(64), nullable=False),
    Column("scope", String(PATH_LEN), nullable=False),
)


class CommunityList(Strict):
    description: str = Field(min_length=1, max_length=200,
                             description="What the list is for (its purpose, shown to people)")
    retention_days: int = Field(ge=1, le=3650,
                                description="How long an enrolment (and its match evidence) "
                                "is kept")
    community: str = Field(min_length=1, max_length=PATH_LEN,
                           description="The community's place (a location prefix): its "
                           "workers enrol on the list, its gates watch for the people on it")
    # The matching tier, sent to the gateways with the list (a gateway's own face/lists.yaml
    # wins where it names the list): the bounds are the gateway's (ListPolicy).
    threshold: float = Field(gt=0, le=1, description="Least cosine similarity of a face to an "
                             "enrolled descriptor (of the gateways' model; models/*.md)")
    margin: float = Field(ge=0, le=1, description="How far the best identity must beat the "
                          "next one (open set)")
    hits: int = Field(ge=1, le=50, description="Matching frames a track needs before an alert")
    cooldown_s: float = Field(ge=0, description="After an alert, the same person on the same "
                              "camera is quiet this long")

    def policy(self) -> dict[str, Any]:
        """The tier as a gateway reads it (edge/video/face/store.py ListPolicy)."""
        return {"description": self.description, "threshold": self.threshold,
                "margin": self.margin, "hits": self.hits, "cooldown_s": self.cooldown_s,
                "retention_days": self.retention_days}


class WatchlistsConfig(Strict):
    key_file: Path = Field(
        description="AES-256 key (32 bytes, mode 0600) sealing descriptors and reference photos "
        "in the database; made on first start. Keep it out of database backups: without it "
        "the watchlists cannot be read (or restored)",
    )
    signing_key_file: Path = Field(
        description="Ed25519 private key (PEM, 0600) signing every watchlist message to "
        "gateways; made on first start, its public half written beside it as "
        "`<name>.pub.pem` for the gateways' `cloud_watchlist_key`",
    )
    lists: dict[str, CommunityList] = Field(
        default_factory=dict,
        description="A community's own lists besides missing_elder and police: name → "
        "description, retention_days, community, threshold, margin, hits, cooldown_s. Its "
        "workers (and admins) enrol on it through the API; the gateways get its tier with "
        "the list (a gateway's own face/lists.yaml wins where it names it)",
    )

    @field_validator("lists")
    @classmethod
    def _names(cls, lists: dict[str, CommunityList]) -> dict[str, CommunityList]:
        for name in lists:
            if name in ("missing_elder", "police"):
                raise ValueError(f"{name!r} is a built-in list; a community list needs a "
                                 "name of its own")
            if not LIST_NAME.match(name):
                raise ValueError(f"list name {name!r}: 1-64 of [a-z0-9_] starting with a letter")
        return lists


class AlreadyEnrolled(Exception):
    pass


def overlaps(a: str | None, b: str | None) -> bool:
    """One place is the other or within it (whole segments)."""
    return a is not None and b is not None and (prefix_matches(a, b) or prefix_matches(b, a))


# --- the keys ----------------------------------------------------------------------------------
#
# Rotation (cloud/watchlist_keys.py, `shouwang cloud watchlist-keys`) stages the next key
# beside the current one (`watchlist.next.key`, `watchlist-signing.next.pem`) before it is put
# in place; a worker reads the files again when they change, so a running cloud follows a
# rotation without a restart: it opens a row with either sealing key (the AES-GCM tag tells
# which), seals with the staged one when there is one, and signs with whatever
# `signing_key_file` holds now.


def staged(path: Path) -> Path:
    """Where the next key of `path` waits during a rotation: `watchlist.next.key`."""
    return path.with_name(f"{path.stem}.next{path.suffix}")


def revoked_path(path: Path) -> Path:
    """The fingerprints of the signing keys retired, one a line: `watchlist-signing.revoked`."""
    return path.with_name(path.stem + ".revoked")


def read_revoked(path: Path) -> list[str]:
    try:
        lines = revoked_path(path).read_text().split()
    except FileNotFoundError:
        return []
    return [line for line in lines if re.fullmatch(r"[0-9a-f]{16}", line)]


def public_path(path: Path) -> Path:
    """The public half of a signing key file: `watchlist-signing.pub.pem`."""
    return path.with_name(path.stem + ".pub.pem")


def load_signer(path: Path) -> Ed25519PrivateKey:
    pem = _key_file(path, None)
    try:
        signer = serialization.load_pem_private_key(pem, password=None)
    except ValueError as err:
        raise ConfigError(f"watchlist signing key {path}: {err}") from err
    if not isinstance(signer, Ed25519PrivateKey):
        raise ConfigError(f"watchlist signing key {path}: not Ed25519")
    return signer


def public_pem(signer: Ed25519PrivateKey) -> bytes:
    return signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _aead(path: Path) -> bytes:
    key = _key_file(path, None)
    if len(key) != 32:
        raise ConfigError(f"watchlist key file {path}: {len(key)} bytes, not a 256-bit key")
    return key


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class CloudKeys:
    """The cloud's two watchlist keys: AES-256-GCM sealing descriptors and reference photos at
    rest, Ed25519 signing what goes to gateways. Made from `WatchlistsConfig` (`cloud_keys`)
    it follows the key files; made from keys (`CloudKeys(aead, signer)`) it holds those."""

    def __init__(self, aead_key: bytes, signer: Ed25519PrivateKey,
                 config: WatchlistsConfig | None = None) -> None:
        self.aead_key = aead_key
        self.signer = signer
        self.config = config
        self._aeads: list[bytes] = [aead_key]
        self.next_signer: Ed25519PrivateKey | None = None  # staged by a rotation
        self.revoked: list[str] = []  # fingerprints of keys the cloud signs with no more
        self._stamps = self._file_stamps()

    def _file_stamps(self) -> tuple[Any, ...]:
        if self.config is None:
            return ()
        signing = self.config.signing_key_file
        return tuple(_stamp(p) for p in (self.config.key_file, staged(self.config.key_file),
                                          signing, staged(signing), revoked_path(signing)))

    def reload(self) -> None:
        """Read the key files again when any changed (a rotation); a staged sealing key is
        tried after the current one."""
        if self.config is None:
            return
        stamps = self._file_stamps()
        if stamps == self._stamps:
            return
        current = _aead(self.config.key_file)
        try:
            nxt = [_aead(staged(self.config.key_file))]
        except (ConfigError, FileNotFoundError, OSError):
            nxt = []
        self.aead_key, self._aeads = current, [current, *nxt]
        self.signer = load_signer(self.config.signing_key_file)
        signing = staged(self.config.signing_key_file)
        try:
            self.next_signer = load_signer(signing)
        except (ConfigError, FileNotFoundError, OSError):
            self.next_signer = None
        self.revoked = read_revoked(self.config.signing_key_file)
        self._stamps = stamps

    def sealing_key(self) -> bytes:
        """The key a new seal is made with: the staged one during a rotation (the rotation
        re-seals nothing twice and leaves nothing under the key it retires), else the current."""
        self.reload()
        return self._aeads[-1]

    @property
    def public_pem(self) -> bytes:
        self.reload()
        return public_pem(self.signer)

    def _seal(self, data: bytes, aad: bytes, key: bytes | None = None) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(key or self.sealing_key()).encrypt(nonce, data, aad)

    def _open(self, sealed: bytes, aad: bytes) -> bytes:
        for attempt in range(2):
            for key in self._aeads:
                try:
                    return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
                except (InvalidTag, ValueError):
                    continue
            if attempt == 0:
                before = self._stamps
                self.reload()  # rotated since: read the files again, once
                if self._stamps == before:
                    break
        raise ValueError("the sealed watchlist data does not open with this key (a wrong "
                         "key file, or data moved from another row)")

    def seal_photo(self, photo: bytes, entry_id: str, key: bytes | None = None) -> bytes:
        return self._seal(photo, b"shouwang-watchlist-photo-v1:" + entry_id.encode(), key)

    def open_photo(self, sealed: bytes, entry_id: str) -> bytes:
        return self._open(sealed, b"shouwang-watchlist-photo-v1:" + entry_id.encode())

    def seal_embeddings(self, vectors: list[list[float]], entry_id: str,
                        key: bytes | None = None) -> bytes:
        return self._seal(orjson.dumps(vectors),
                          b"shouwang-watchlist-embeddings-v1:" + entry_id.encode(), key)

    def open_embeddings(self, sealed: bytes, entry_id: str) -> list[list[float]]:
        plain = self._open(sealed, b"shouwang-watchlist-embeddings-v1:" + entry_id.encode())
        vectors: list[list[float]] = orjson.loads(plain)
        return vectors

    def signed(self, message: dict[str, Any]) -> bytes:
        """The message signed, naming its key (`kid`), announcing the staged signing key
        (`next_keys`) and the keys retired (`revoked`): a gateway trusts the next key on
        the word of the current one (docs/face.md)."""
        self.reload()
        extra: dict[str, Any] = {"kid": fingerprint(public_pem(self.signer))}
        if self.next_signer is not None:
            extra["next_keys"] = [public_pem(self.next_signer).decode()]
        if self.revoked:
            extra["revoked"] = self.revoked
        return sign({**message, **extra}, self.signer)

    @property
    def next_fingerprint(self) -> str | None:
        self.reload()
        return None if self.next_signer is None else fingerprint(public_pem(self.next_signer))


def cloud_keys(config: WatchlistsConfig) -> CloudKeys:
    """Read both keys, making each on the first start; ConfigError naming the file when one
    is unreadable, readable by others, or not a key. The signing key's public half is
    (re)written beside it when missing or not its own (after a rotation)."""
    _key_file(config.key_file, lambda: AESGCM.generate_key(bit_length=256))
    _key_file(config.signing_key_file, lambda: Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    keys = CloudKeys(_aead(config.key_file), load_signer(config.signing_key_file), config)
    keys._stamps = ()  # read the staged key too, if a rotation left one
    keys.reload()
    public = public_path(config.signing_key_file)
    if not public.exists() or public.read_bytes() != keys.public_pem:
        write_atomically(public, keys.public_pem, 0o644)
    if staged(config.key_file).exists():
        log.warning("a rotation of the watchlist sealing key was interrupted (%s exists): "
                    "run `shouwang cloud watchlist-keys --rotate` again to finish it",
                    staged(config.key_file))
    return keys


def _key_file(path: Path, make: Any) -> bytes:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if make is None:
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker made it first: read theirs
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(make())
            f.flush()
            os.fsync(f.fileno())
        return path.read_bytes()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"watchlist key file {path} may be read by others (mode "
                          f"{stat.S_IMODE(mode):o}); make it 0600")
    return path.read_bytes()


# --- changes ------------------------------------------------------------------------------------

async def _in_order(conn: AsyncConnection) -> None:
    """Changes commit in `seq` order: PostgreSQL hands out a sequence value at insert, so a
    change could otherwise commit after a later one and a downlink round that already sent
    the later version would never send it (the version would not move). One change at a
    time (they are rare); readers are not blocked. SQLite has one writer at a time anyway."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("LOCK TABLE watchlist_changes IN SHARE ROW EXCLUSIVE MODE"))


async def enrol(store: Store, keys: CloudKeys, row: dict[str, Any], photo: bytes,
                embeddings: list[list[float]], *, remote: str | None) -> None:
    """Store one enrolment, its change and its audit entry in one transaction. Sealed after
    the transaction holds the lock a key rotation takes (PostgreSQL: `_in_order`; SQLite: the
    first write), so the key is the one that stays: a rotation either re-seals this row or
    has staged its key already."""
    try:
        async with store.engine.begin() as conn:
            await _in_order(conn)
            await conn.execute(watchlist_changes.insert().values(
                ts=row["entered_ms"], action="enrol", list=row["list"], person=row["person"],
                scope=row["scope"]))
            key = await asyncio.to_thread(keys.sealing_key)
            sealed = {"embeddings": keys.seal_embeddings(embeddings, row["id"], key),
                      "photo": keys.seal_photo(photo, row["id"], key)}
            await conn.execute(watchlist_people.insert().values(**row, **sealed))
            await audit.record(
                conn, ts=row["entered_ms"], actor=f"user:{row['entered_by']}",
                action="watchlist_enrol", target=f"{row['list']}:{row['person']}",
                remote=remote, detail={"id": row["id"], "consent": row["consent"],
                                       "scope": row["scope"], "until_ms": row["until_ms"],
                                       "photos": len(row["photo_hashes"])})
    except IntegrityError as err:
        raise AlreadyEnrolled(f"{row['person']} is already on {row['list']}") from err


async def remove(store: Store, row: Any, *, actor: str, remote: str | None, now_ms: int) -> bool:
    async with store.engine.begin() as conn:
        await _in_order(conn)
        gone = (await conn.execute(delete(watchlist_people).where(
            watchlist_people.c.id == row["id"]))).rowcount
        if not gone:
            return False
        await conn.execute(watchlist_changes.insert().values(
            ts=now_ms, action="remove", list=row["list"], person=row["person"],
            scope=row["scope"]))
        await audit.record(conn, ts=now_ms, actor=actor, action="watchlist_remove",
                           target=f"{row['list']}:{row['person']}", remote=remote,
                           detail={"id": row["id"], "consent": row["consent"]})
    return True


async def expire(store: Store, row: Any, *, now_ms: int, retention_days: int | None) -> bool:
    """Delete an enrolment whose `until` has passed (row, sealed descriptors and photo), with
    its change (so each gateway of its scope is sent its list without it) and one audit row
    by the retention, in one transaction. False when it was gone already (removed, or another
    worker expired it first and audited it)."""
    async with store.engine.begin() as conn:
        await _in_order(conn)
        gone = (await conn.execute(delete(watchlist_people).where(
            watchlist_people.c.id == row["id"],
            watchlist_people.c.until_ms <= now_ms))).rowcount
        if gone != 1:
            return False
        await conn.execute(watchlist_changes.insert().values(
            ts=now_ms, action="expire", list=row["list"], person=row["person"],
            scope=row["scope"]))
        await audit.record(conn, ts=now_ms, actor="system:retention", action="watchlist_expire",
                           target=f"{row['list']}:{row['person']}",
                           detail={"id": row["id"], "consent": row["consent"],
                                   "scope": row["scope"], "until_ms": row["until_ms"],
                                   "retention_days": retention_days})
    return True


# --- what each gateway gets ---------------------------------------------------------------------

PUBLIC_COLUMNS = tuple(c for c in watchlist_people.c if c.name not in ("embeddings", "photo"))


async def latest(store: Store) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.max(watchlist_changes.c.seq)))).scalar() or 0)


class SiteWatchlist(NamedTuple):
    location: str | None  # the site's place
    version: int  # of its watchlist
    held: int | None  # the version it acknowledged in its latest report
    refused: dict[str, str]  # the lists it could not match, by its latest report: why
    deltas: bool = False  # its reports name the keys it trusts: software that reads deltas


async def site_versions(store: Store, only: str | None = None) -> dict[str, SiteWatchlist]:
    """Every site (or `only` that one): its place, the version of its watchlist, the version
    it acknowledged in its latest report and the lists it refused."""
    query = select(sites.c.id, sites.c.location, sites.c.last_health)
    if only is not None:
        query = query.where(sites.c.id == only)
    async with store.engine.connect() as conn:
        places = (await conn.execute(query)).all()
        changes = (await conn.execute(select(watchlist_changes.c.scope,
                                             func.max(watchlist_changes.c.seq))
                                      .group_by(watchlist_changes.c.scope))).all()
    out = {}
    for site, location, health in places:
        version = max((int(seq) for scope, seq in changes if overlaps(scope, location)),
                      default=0)
        health = health if isinstance(health, dict) else {}
        held = health.get("watchlist")
        refused = health.get("watchlist_refused")
        out[site] = SiteWatchlist(location, version, held if isinstance(held, int) else None,
                                  refused if isinstance(refused, dict) else {},
                                  isinstance(health.get("watchlist_keys"), list))
    return out


_too_large: set[tuple[str, int]] = set()


async def site_messages(store: Store, keys: CloudKeys, site: str, location: str | None,
                        version: int, now_ms: int, base: int | None = None) -> list[bytes] | None:
    """The signed watchlist of `site` at `version`, its entries in force, ids and descriptors
    only, with the tier of each list they name (cloud.yaml's `watchlists.lists`, the built-in
    ones' `DEFAULT_LISTS`): the changes since `base` (the version the gateway acknowledged)
    when given and they fit a delta (shouwang/watchlist_message.py `build_delta`: at most
    MAX_DELTA), else one message, or the parts of a list too large for one
    (shouwang/watchlist_message.py `build`), each at most MAX_MESSAGE_BYTES. None for a list
    over even that (logged once per site and version; the gateway keeps the list it has)."""
    touched: set[tuple[str, str]] | None = None
    if base:
        async with store.engine.connect() as conn:
            changed = (await conn.execute(select(
                watchlist_changes.c.list, watchlist_changes.c.person, watchlist_changes.c.scope)
                .where(watchlist_changes.c.seq > base, watchlist_changes.c.seq <= version))).all()
        touched = {(lst, person) for lst, person, scope in changed if overlaps(scope, location)}
        if len(touched) > MAX_DELTA:
            touched = None
    async with store.engine.connect() as conn:
        query = select(watchlist_people).where(watchlist_people.c.until_ms > now_ms)
        if touched is not None:
            query = query.where(watchlist_people.c.person.in_(sorted({p for _, p in touched})))
        rows = (await conn.execute(query.order_by(watchlist_people.c.id))).mappings().all()

    def messages() -> list[bytes]:  # CPU work (5,000 people: unseal, pack, sign): a thread
        entries = [
            {"id": r["id"], "person": r["person"], "list": r["list"], "consent": r["consent"],
             "entered_ms": r["entered_ms"], "until_ms": r["until_ms"], "model": r["model"],
             "photos": list(r["photo_hashes"]),
             "embeddings": [pack(v) for v in keys.open_embeddings(r["embeddings"], r["id"])]}
            for r in rows if overlaps(r["scope"], location)
            and (touched is None or (r["list"], r["person"]) in touched)
        ]
        own = keys.config.lists if keys.config is not None else {}
        named = {e["list"] for e in entries}
        tiers = {n: own[n].policy() if n in own else DEFAULT_LISTS[n].model_dump()
                 for n in sorted(named) if n in own or n in DEFAULT_LISTS}
        if touched is None or not base:
            return build(site, version, entries, keys.signed, lists=tiers)
        there = {(e["list"], e["person"]) for e in entries}
        delta = build_delta(site, version, base, entries, sorted(touched - there),
                            keys.signed, lists=tiers)
        return [] if delta is None else [delta]  # [] : too large for a delta, send it whole

    try:
        out = await asyncio.to_thread(messages)
        if not out:
            return await site_messages(store, keys, site, location, version, now_ms)
        return out
    except ValueError as err:
        if (site, version) not in _too_large:
            _too_large.add((site, version))
            log.error("watchlist version %d for site %s not sent: %s; the gateway keeps the "
                      "list it has", version, site, err)
        return None
