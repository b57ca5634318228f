"""The gateway's watchlist store: who is enrolled on which list, encrypted at rest.

`{data_dir}/face/watchlist.enc` holds every enrolment (person id, list, consent reference, who
entered it, when, until when, the SHA-256 of each enrolled photo, and the face descriptors) as
one JSON document sealed with AES-256-GCM. The key is a file of its own,
`{data_dir}/face/watchlist.key` by default (or `key_file`), created with mode 0600 on the first
enrolment and refused when anyone but its owner may read it; the key never goes into a log, a
message or the database. Without the key the store cannot be read: an error that names the key
file, never an empty watchlist that silently matches no one.

Every change is written to a new file and renamed over the old one, so a crash leaves the old
watchlist or the new one, never half of each. `{data_dir}/face/audit.jsonl` records each
enrolment and removal (ids, list, by, at: no descriptor, no photo), and each enrolment the
retention removed at its `until` (`expire`, run each minute by the edge daemon).

The lists and their tiers (threshold, margin, hits a track needs, cooldown, retention) come
from `{data_dir}/face/lists.yaml` when it exists, else `DEFAULT_LISTS`; a list the cloud sends
brings its tier with it (kept in the sealed file), used where the gateway's own do not name it.
"""

from __future__ import annotations

import builtins
import datetime as dt
import os
import stat
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import Field

from shouwang.config import ConfigError, Strict, load_yaml

FORMAT = b"shouwang-watchlist-v1"  # authenticated with the data: a file of another kind fails
NONCE_BYTES = 12


class WatchlistError(Exception):
    """The watchlist cannot be read or changed (a missing or wrong key, a corrupt file)."""


class ListPolicy(Strict):
    description: str = Field(description="What the list is for (its purpose, shown to people)")
    threshold: float = Field(
        gt=0, le=1, description="Least cosine similarity of a face to an enrolled descriptor"
    )
    margin: float = Field(
        ge=0, le=1, description="How far the best identity must beat the next one (open set)"
    )
    hits: int = Field(ge=1, le=50, description="Matching frames a track needs before an alert")
    cooldown_s: float = Field(
        ge=0, description="After an alert, the same person on the same camera is quiet this long"
    )
    retention_days: int = Field(
        ge=1, le=3650, description="How long an enrolment (and its match evidence) is kept"
    )


class ListsFile(Strict):
    lists: dict[str, ListPolicy] = Field(description="List name → its tier")


# Thresholds for the default descriptor, MobileFaceNet, from models/mobilefacenet.md (measured
# on the few real faces there: see the card for the margin they leave). They are cosine
# similarities of that model: a camera using another model needs its own (lists.yaml). The
# police list asks more: a false match sends police after an innocent neighbour.
DEFAULT_LISTS: dict[str, ListPolicy] = {
    "missing_elder": ListPolicy(
        description="Residents reported missing by their family or grid worker",
        threshold=0.58, margin=0.10, hits=2, cooldown_s=300, retention_days=30,
    ),
    "police": ListPolicy(
        description="People the police look for in their jurisdiction",
        threshold=0.62, margin=0.15, hits=3, cooldown_s=900, retention_days=90,
    ),
}


@dataclass(slots=True)
class Enrolment:
    id: str
    person: str
    list: str
    consent: str
    entered_by: str
    entered_at: str  # ISO 8601, UTC
    until: str  # ISO 8601, UTC: entered_at + the list's retention
    model: str  # the descriptor model (descriptors of different models are not comparable)
    photos: builtins.list[str]  # SHA-256 of each enrolled photo (the photos are not kept)
    embeddings: builtins.list[builtins.list[float]]
    # "local" (`shouwang face enroll` on this gateway) or "cloud" (the cloud's watchlists for
    # this site, `site/{site}/down/watchlist`): a cloud update replaces only the cloud's part.
    origin: str = "local"

    def public(self) -> dict[str, Any]:
        """Everything but the descriptors (for `face list`)."""
        return {"id": self.id, "person": self.person, "list": self.list, "consent": self.consent,
                "entered_by": self.entered_by, "entered_at": self.entered_at,
                "until": self.until, "model": self.model, "photos": len(self.photos),
                "origin": self.origin}


class WatchlistStore:
    def __init__(self, data_dir: Path, key_file: Path | None = None) -> None:
        self.dir = data_dir / "face"
        self.path = self.dir / "watchlist.enc"
        self.key_file = key_file or self.dir / "watchlist.key"
        self.audit_path = self.dir / "audit.jsonl"

    # --- lists --------------------------------------------------------------------------------

    def lists(self) -> dict[str, ListPolicy]:
        path = self.dir / "lists.yaml"
        if not path.exists():
            return dict(DEFAULT_LISTS)
        try:
            return load_yaml(path, ListsFile).lists
        except ConfigError as err:
            raise WatchlistError(str(err)) from err

    # --- the key ------------------------------------------------------------------------------

    def _key(self, create: bool) -> bytes:
        try:
            mode = self.key_file.stat().st_mode
        except FileNotFoundError:
            if not create:
                raise WatchlistError(
                    f"watchlist key file {self.key_file} is missing: the enrolled faces "
                    f"in {self.path} cannot be read without it"
                ) from None
            return self._new_key()
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise WatchlistError(
                f"watchlist key file {self.key_file} may be read by others (mode "
                f"{stat.S_IMODE(mode):o}); make it 0600"
            )
        key = self.key_file.read_bytes()
        if len(key) != 32:
            raise WatchlistError(
                f"watchlist key file {self.key_file} holds {len(key)} bytes, not a 256-bit key"
            )
        return key

    def _new_key(self) -> bytes:
        key = AESGCM.generate_key(bit_length=256)
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        return key

    # --- reading and writing ------------------------------------------------------------------

    def load(self) -> list[Enrolment]:
        """Every enrolment (none when nothing was ever enrolled)."""
        return self.load_all()[0]

    def cloud_version(self) -> int:
        """The version of the cloud's watchlists this file holds (0: none yet)."""
        return self.load_all()[1]

    def load_all(self) -> tuple[list[Enrolment], int]:
        """(every enrolment, the cloud version applied)."""
        enrolments, meta = self._load()
        return enrolments, int(meta.get("cloud_version", 0))

    def cloud_state(self) -> tuple[int, dict[str, str]]:
        """(the cloud version applied, the cloud's lists refused with it: name → why)."""
        _, meta = self._load()
        return int(meta.get("cloud_version", 0)), dict(meta.get("cloud_refused", {}))

    def matching(self) -> tuple[list[Enrolment], dict[str, ListPolicy]]:
        """Every enrolment, and the tier of every list this gateway matches against: its own
        (`lists.yaml`, else `DEFAULT_LISTS`), and the tiers the cloud sent with its lists for
        the names it does not define (its own win)."""
        enrolments, meta = self._load()
        lists = self.lists()
        for name, raw in meta.get("cloud_lists", {}).items():
            lists.setdefault(name, ListPolicy.model_validate(raw))
        return enrolments, lists

    def _load(self) -> tuple[list[Enrolment], dict[str, Any]]:
        """(every enrolment, the rest of the document: the cloud's version, list tiers and
        refused lists)."""
        try:
            sealed = self.path.read_bytes()
        except FileNotFoundError:
            return [], {}
        key = self._key(create=False)
        try:
            plain = AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], FORMAT)
        except (InvalidTag, ValueError):
            raise WatchlistError(
                f"{self.path} does not open with the key in {self.key_file}: a wrong key or a "
                "damaged file"
            ) from None
        document = orjson.loads(plain)
        enrolments = [Enrolment(**row) for row in document.pop("enrolments")]
        return enrolments, document

    def _save(self, enrolments: list[Enrolment], meta: dict[str, Any]) -> None:
        key = self._key(create=True)
        plain = orjson.dumps({**meta, "enrolments": [_row(e) for e in enrolments]})
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + AESGCM(key).encrypt(nonce, plain, FORMAT)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(sealed)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _audit(self, action: str, enrolment: Enrolment, by: str, now: dt.datetime) -> None:
        line = {"action": action, "id": enrolment.id, "person": enrolment.person,
                "list": enrolment.list, "consent": enrolment.consent, "by": by,
                "at": now.isoformat(timespec="seconds")}
        with open(self.audit_path, "ab") as f:
            f.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))

    # --- changes ------------------------------------------------------------------------------

    def enrol(self, *, person: str, list_name: str, consent: str, entered_by: str,
              photos: list[str], embeddings: np.ndarray, model: str,
              now: dt.datetime | None = None) -> Enrolment:
        lists = self.lists()
        policy = lists.get(list_name)
        if policy is None:
            raise WatchlistError(
                f"no list {list_name!r} on this gateway (lists: {', '.join(sorted(lists))})"
            )
        if not consent.strip():
            raise WatchlistError("enrolment needs a consent reference (--consent)")
        now = now or dt.datetime.now(dt.UTC)
        enrolment = Enrolment(
            id=str(uuid.uuid4()), person=person, list=list_name, consent=consent,
            entered_by=entered_by, entered_at=now.isoformat(timespec="seconds"),
            until=(now + dt.timedelta(days=policy.retention_days)).isoformat(timespec="seconds"),
            model=model,
            photos=photos, embeddings=[[round(float(v), 6) for v in row] for row in embeddings],
        )
        enrolments, meta = self._load()
        enrolments.append(enrolment)
        self._save(enrolments, meta)
        self._audit("enrol", enrolment, entered_by, now)
        return enrolment

    def remove(self, *, person: str, list_name: str | None, by: str,
               now: dt.datetime | None = None) -> list[Enrolment]:
        """Remove a person's enrolments (on one list, or on all); those removed."""
        now = now or dt.datetime.now(dt.UTC)
        enrolments, meta = self._load()
        gone = [e for e in enrolments if e.person == person and list_name in (None, e.list)]
        if gone:
            ids = {e.id for e in gone}
            self._save([e for e in enrolments if e.id not in ids], meta)
            for e in gone:
                self._audit("remove", e, by, now)
        return gone

    def replace_cloud(self, enrolments: list[Enrolment], version: int,
                      now: dt.datetime | None = None, *,
                      lists: dict[str, ListPolicy] | None = None,
                      refused: dict[str, str] | None = None) -> tuple[int, int]:
        """Put the cloud's watchlists for this site (`version`) in place of the cloud's part
        held, with the tiers it sent for them (`lists`) and the names of the lists this
        gateway refused (`refused`: name → why), in one write: a crash leaves the old set or
        the new one. Local enrolments stay. Each person added or removed is audited (by
        "cloud"); (added, removed)."""
        now = now or dt.datetime.now(dt.UTC)
        held, _ = self._load()
        local = [e for e in held if e.origin != "cloud"]
        old = {e.id: e for e in held if e.origin == "cloud"}
        new = {e.id: e for e in enrolments}
        self._save(local + enrolments, {
            "cloud_version": version,
            "cloud_lists": {n: p.model_dump() for n, p in (lists or {}).items()},
            "cloud_refused": refused or {}})
        for e in enrolments:
            if e.id not in old:
                self._audit("enrol", e, "cloud", now)
        for e in old.values():
            if e.id not in new:
                self._audit("remove", e, "cloud", now)
        return len(new.keys() - old.keys()), len(old.keys() - new.keys())

    def apply_delta(self, enrolments: list[Enrolment], removed: list[tuple[str, str]],
                    version: int, base: int, now: dt.datetime | None = None, *,
                    lists: dict[str, ListPolicy] | None = None,
                    refused: dict[str, str] | None = None) -> tuple[int, int]:
        """Apply the cloud's changes from `base` to `version`, in one write: each enrolment
        replaces the cloud's one of the same list and person, each (list, person) in
        `removed` goes. WatchlistError, nothing written, unless the file holds exactly
        `base`. Audited like `replace_cloud`; (added, removed)."""
        now = now or dt.datetime.now(dt.UTC)
        held, meta = self._load()
        if int(meta.get("cloud_version", 0)) != base:
            raise WatchlistError(f"changes on top of version {base}, but the file holds "
                                 f"{meta.get('cloud_version', 0)}")
        touched = {(e.list, e.person) for e in enrolments} | set(removed)
        gone = [e for e in held if e.origin == "cloud" and (e.list, e.person) in touched]
        ids = {e.id for e in gone}
        tiers = {**meta.get("cloud_lists", {}),
                 **{n: p.model_dump() for n, p in (lists or {}).items()}}
        self._save([e for e in held if e.id not in ids] + enrolments, {
            "cloud_version": version, "cloud_lists": tiers, "cloud_refused": refused or {}})
        new = {e.id for e in enrolments}
        for e in enrolments:
            if e.id not in ids:
                self._audit("enrol", e, "cloud", now)
        for e in gone:
            if e.id not in new:
                self._audit("remove", e, "cloud", now)
        return len(new - ids), len(ids - new)

    def expire(self, now: dt.datetime, by: str = "retention") -> list[Enrolment]:
        """Remove every enrolment whose `until` has passed (its list's retention), each
        removal a line in the audit log; those removed. One atomic write, as any change."""
        enrolments, meta = self._load()
        gone = [e for e in enrolments if dt.datetime.fromisoformat(e.until) <= now]
        if gone:
            ids = {e.id for e in gone}
            self._save([e for e in enrolments if e.id not in ids], meta)
            for e in gone:
                self._audit("expire", e, by, now)
        return gone

    def version(self) -> float | None:
        """The file's modification time: a worker reloads when it changes."""
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return None


def _row(e: Enrolment) -> dict[str, Any]:
    return {f.name: getattr(e, f.name) for f in fields(e)}
