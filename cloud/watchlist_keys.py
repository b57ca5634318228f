"""`shouwang cloud watchlist-keys`: rotate the cloud's two watchlist keys (docs/face.md).

The sealing key (AES-256-GCM, `watchlists.key_file`) is replaced in three steps, each safe to
be interrupted, and a second run finishes what the first began:

1. the new key is written to `watchlist.next.key` (0600, whole or not at all: a temporary file
   renamed), or, when that file is there already (an earlier run stopped), taken from it;
2. in **one transaction** every row's descriptors and reference photo are opened (with the
   current or the new key: AES-GCM's tag says which) and sealed under the new key; the
   transaction first takes the lock every enrolment takes, so an enrolment made meanwhile is
   either re-sealed here or sealed under the staged key by the worker that makes it
   (cloud/watchlist_store.py `enrol`);
3. after the commit, `watchlist.next.key` is renamed over `watchlist.key`.

A crash before the commit leaves every row under the old key, which is still `key_file`; a
crash between the commit and the rename leaves every row under the staged key, which every
worker also reads (it tries both). No row is ever under a key that is not on disk. The old key
goes to the keyring of retired keys (`watchlist.retired.json`, 0600, written before step 3) so
a database backup made before the rotation can still be opened; `--purge-retired` deletes them
(audited, `watchlist_key_purge`) once those backups are gone.

The signing key (Ed25519) is rolled over the air: `--rotate` stages a new signing key
(`watchlist-signing.next.pem`, its public half printed and written as
`watchlist-signing.next.pub.pem`); the cloud goes on signing with the current key, and every
message announces the staged one (`next_keys`), which a gateway keeps once a key it trusts has
signed it, and reports (`watchlist_keys`). `--activate-signing-key` waits until every site that
takes watchlists reports the staged key (`--wait`; `--force` to go on without, loudly), puts
it in place and revokes the old one (`watchlist-signing.revoked`, named in every message after:
the gateways stop trusting it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import getpass
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, text, update

from cloud.access import audit
from cloud.schema import sites
from cloud.store import Store
from cloud.watchlist_store import (
    CloudKeys,
    WatchlistsConfig,
    _in_order,
    cloud_keys,
    load_signer,
    public_path,
    public_pem,
    read_revoked,
    revoked_path,
    staged,
    watchlist_people,
)
from shouwang.config import ConfigError, load_yaml
from shouwang.files import sync_dir, write_atomically


class RotationError(Exception):
    pass


def fingerprint(data: bytes) -> str:
    """What an operator compares: SHA-256 of the key (sealing) or of the public key PEM."""
    return hashlib.sha256(data).hexdigest()[:16]


async def rotate_sealing(store: Store, config: WatchlistsConfig, *,
                         actor: str = "cli") -> int:
    """Re-seal every enrolment under a new key and put the key in place; the rows re-sealed.
    RotationError (nothing changed in the database) when a row opens with neither key."""
    keys = cloud_keys(config)
    nxt = staged(config.key_file)
    if not nxt.exists():
        write_atomically(nxt, AESGCM.generate_key(bit_length=256))
    keys.reload()
    if len(keys._aeads) != 2:
        raise RotationError(f"{nxt}: not a 256-bit key readable only by its owner")
    new = keys._aeads[-1]
    count = 0
    async with store.engine.begin() as conn:
        await _in_order(conn)
        if conn.dialect.name == "sqlite":  # take the write lock before reading the rows
            await conn.execute(text("UPDATE watchlist_changes SET seq = seq WHERE 1 = 0"))
        rows = (await conn.execute(select(watchlist_people.c.id, watchlist_people.c.embeddings,
                                          watchlist_people.c.photo))).all()
        for row_id, embeddings, photo in rows:
            try:
                vectors = keys.open_embeddings(embeddings, row_id)
                picture = keys.open_photo(photo, row_id)
            except ValueError as err:
                raise RotationError(f"enrolment {row_id}: {err}; nothing was re-sealed") from None
            await conn.execute(update(watchlist_people).where(watchlist_people.c.id == row_id)
                               .values(embeddings=keys.seal_embeddings(vectors, row_id, new),
                                       photo=keys.seal_photo(picture, row_id, new)))
            count += 1
        await audit.record(conn, ts=int(time.time() * 1000), actor=actor,
                           action="watchlist_key_rotate",
                           detail={"rows": count, "key": fingerprint(new)})
    # Committed: every row is under the staged key. The key it replaces goes to the keyring of
    # retired keys first (a database backup made before now opens only with it), then the
    # staged key becomes the key.
    retire(config.key_file, config.key_file.read_bytes())
    nxt.replace(config.key_file)
    sync_dir(config.key_file.parent)
    return count


def retired_path(key_file: Path) -> Path:
    """The keyring of retired sealing keys beside the key: `watchlist.retired.json`."""
    return key_file.with_name(f"{key_file.stem}.retired.json")


def retired(key_file: Path) -> list[dict[str, Any]]:
    """The retired sealing keys, oldest first: {fingerprint, retired_ms, key (base64)}."""
    path = retired_path(key_file)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return []
    if mode & 0o077:
        raise RotationError(f"{path} may be read by others (mode {mode & 0o777:o}); make it "
                            "0600")
    keys: list[dict[str, Any]] = orjson.loads(path.read_bytes())["keys"]
    return keys


def retire(key_file: Path, key: bytes) -> None:
    """Add `key` to the keyring of retired keys (0600, whole or as it was), once."""
    keys = retired(key_file)
    if any(k["fingerprint"] == fingerprint(key) for k in keys):
        return
    keys.append({"fingerprint": fingerprint(key), "retired_ms": int(time.time() * 1000),
                 "key": base64.b64encode(key).decode()})
    write_atomically(retired_path(key_file), orjson.dumps({"keys": keys},
                                                          option=orjson.OPT_INDENT_2))


def purge_retired(key_file: Path, older_than_days: float | None = None,
                  now_ms: int | None = None) -> list[str]:
    """Delete the retired keys (those retired more than `older_than_days` ago, or all); the
    fingerprints deleted. The backups made under them can no longer be opened."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    keys = retired(key_file)
    cut = None if older_than_days is None else now_ms - older_than_days * 86_400_000
    gone = [k for k in keys if cut is None or k["retired_ms"] < cut]
    if gone:
        kept = [k for k in keys if k not in gone]
        write_atomically(retired_path(key_file), orjson.dumps({"keys": kept},
                                                              option=orjson.OPT_INDENT_2))
    return [k["fingerprint"] for k in gone]


def stage_signing(config: WatchlistsConfig) -> bytes:
    """A new signing key beside the current one (or the one an earlier run staged); its
    public half, also written as `<name>.next.pub.pem`."""
    nxt = staged(config.signing_key_file)
    if not nxt.exists():
        write_atomically(nxt, Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    pem = public_pem(load_signer(nxt))
    write_atomically(public_path(nxt), pem, 0o644)
    return pem


def staged_signing(config: WatchlistsConfig) -> bytes:
    """The public half of the staged signing key; RotationError when none is staged."""
    nxt = staged(config.signing_key_file)
    if not nxt.exists():
        raise RotationError(f"no staged signing key ({nxt}): run `shouwang cloud "
                            "watchlist-keys --rotate` first")
    return public_pem(load_signer(nxt))  # a staged file that is no key stops here


async def sites_lacking(store: Store, key: str) -> list[str]:
    """The sites that take watchlists (their reports say which version they hold) whose
    latest report does not list `key` among the signing keys they trust."""
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(sites.c.id, sites.c.last_health))).all()
    return sorted(site for site, health in rows
                  if isinstance(health, dict) and type(health.get("watchlist")) is int
                  and key not in (health.get("watchlist_keys") or []))


def activate_signing(config: WatchlistsConfig) -> bytes:
    """The staged signing key becomes the signing key, and the one it replaces is revoked
    (named in every message after, so the gateways stop trusting it); its public half."""
    nxt = staged(config.signing_key_file)
    pem = staged_signing(config)
    old = fingerprint(public_pem(load_signer(config.signing_key_file)))
    revoked = read_revoked(config.signing_key_file)
    if old not in revoked:
        write_atomically(revoked_path(config.signing_key_file),
                         "".join(f"{r}\n" for r in [*revoked, old]).encode(), 0o644)
    nxt.replace(config.signing_key_file)
    sync_dir(config.signing_key_file.parent)
    write_atomically(public_path(config.signing_key_file), pem, 0o644)
    public_path(nxt).unlink(missing_ok=True)
    return pem


def status(config: WatchlistsConfig) -> list[str]:
    keys: CloudKeys = cloud_keys(config)
    lines = [f"sealing key {config.key_file}: {fingerprint(keys.aead_key)}",
             f"signing key {config.signing_key_file}: public {fingerprint(keys.public_pem)}"]
    for k in retired(config.key_file):
        lines.append(f"retired sealing key {k['fingerprint']} (in {retired_path(config.key_file)}"
                     f", retired {time.strftime('%Y-%m-%d', time.gmtime(k['retired_ms'] / 1000))}"
                     "): opens database backups made before its rotation")
    if staged(config.key_file).exists():
        lines.append(f"an interrupted sealing-key rotation left {staged(config.key_file)}: "
                     "run --rotate again")
    nxt = staged(config.signing_key_file)
    if nxt.exists():
        lines.append(f"staged signing key {nxt}: public "
                     f"{fingerprint(public_pem(load_signer(nxt)))} (--activate-signing-key)")
    return lines


def add_parser(cloud: argparse._SubParsersAction) -> None:
    p = cloud.add_parser(
        "watchlist-keys",
        help="show or rotate the cloud's watchlist keys (sealing and signing; docs/face.md)",
    )
    p.add_argument("--config", type=Path, required=True, help="cloud YAML file")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--rotate", action="store_true",
                      help="re-seal every enrolment under a new sealing key, and stage a new "
                      "signing key, printing its public half for the gateways")
    what.add_argument("--activate-signing-key", action="store_true",
                      help="sign with the staged key from now on, once every gateway that "
                      "takes watchlists reports it trusts it (the cloud sends it to them, "
                      "signed by the current key); the old key is revoked")
    what.add_argument("--purge-retired", action="store_true",
                      help="delete the retired sealing keys (all, or --older-than-days): "
                      "database backups made before their rotations can no longer be opened")
    p.add_argument("--older-than-days", type=float, default=None, metavar="D",
                   help="with --purge-retired: only the keys retired more than D days ago")
    p.add_argument("--wait", type=float, default=300.0, metavar="S",
                   help="with --activate-signing-key: how long to wait for every gateway "
                   "to report the new key (default 300 s)")
    p.add_argument("--force", action="store_true",
                   help="with --activate-signing-key: activate even if some gateways have "
                   "not reported the new key (they refuse every list until an installer "
                   "gives them the key)")
    p.set_defaults(fn=cmd_watchlist_keys)


def cmd_watchlist_keys(args: argparse.Namespace) -> int:
    from cloud.config import CloudConfig

    config = load_yaml(args.config, CloudConfig)
    if config.watchlists is None:
        print(f"shouwang: {args.config}: no `watchlists` configured: no keys to rotate",
              file=sys.stderr)
        return 1
    conf = config.watchlists
    try:
        if args.rotate:
            count = asyncio.run(_rotate(config.database_url, conf))
            print(f"sealing key rotated: {count} enrolments re-sealed; new key "
                  f"{fingerprint(conf.key_file.read_bytes())}. Back the key file up apart "
                  "from the database; a backup made before now needs the old one, kept in "
                  f"{retired_path(conf.key_file)} (archive it with those backups, apart from "
                  "them; --purge-retired deletes it).")
            pem = stage_signing(conf)
            print(f"new signing key staged ({staged(conf.signing_key_file)}), public key "
                  f"{fingerprint(pem)} written to {public_path(staged(conf.signing_key_file))}. "
                  "Add it to each gateway's cloud_watchlist_key file (beside the current "
                  "one), then run --activate-signing-key:")
            sys.stdout.write(pem.decode())
        elif args.activate_signing_key:
            key = fingerprint(staged_signing(conf))
            lacking = asyncio.run(_wait_for(config.database_url, key, args.wait))
            if lacking and not args.force:
                print(f"shouwang: {len(lacking)} site(s) have not reported the new signing "
                      f"key {key} within {args.wait:g} s: {', '.join(lacking)}. Nothing "
                      "changed; the cloud keeps signing with the current key. Wait longer "
                      "(--wait), or --force to activate anyway.", file=sys.stderr)
                return 1
            if lacking:
                print(f"shouwang: WARNING: --force: {len(lacking)} site(s) do not trust the "
                      f"new key {key} and will REFUSE EVERY WATCHLIST from now on "
                      f"(watchlist_key_untrusted) until an installer adds it to their "
                      f"cloud_watchlist_key: {', '.join(lacking)}", file=sys.stderr)
            pem = activate_signing(conf)
            print(f"the cloud signs watchlists with the new key from now on (public "
                  f"{fingerprint(pem)}); the old key is revoked on every gateway with the "
                  "next message it gets:")
            sys.stdout.write(pem.decode())
        elif args.purge_retired:
            gone = purge_retired(conf.key_file, args.older_than_days)
            asyncio.run(_audit_purge(config.database_url, gone))
            print(f"{len(gone)} retired sealing key(s) deleted: {', '.join(gone) or 'none'}. "
                  "Database backups made under them can no longer be opened.")
        else:
            print("\n".join(status(conf)))
    except (RotationError, ConfigError, OSError) as err:
        print(f"shouwang: {err}", file=sys.stderr)
        return 1
    return 0


async def _audit_purge(database_url: str, gone: list[str]) -> None:
    if not gone:
        return
    store = await Store.connect(database_url)
    try:
        async with store.engine.begin() as conn:
            await audit.record(conn, ts=int(time.time() * 1000),
                               actor=f"cli:{getpass.getuser()}",
                               action="watchlist_key_purge", detail={"keys": gone})
    finally:
        await store.close()


async def _wait_for(database_url: str, key: str, wait_s: float) -> list[str]:
    """The sites still lacking `key` after waiting up to `wait_s` (looking every 2 s)."""
    store = await Store.connect(database_url)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            lacking = await sites_lacking(store, key)
            if not lacking or time.monotonic() >= deadline:
                return lacking
            await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    finally:
        await store.close()


async def _rotate(database_url: str, conf: WatchlistsConfig) -> int:
    store = await Store.connect(database_url)
    try:
        return await rotate_sealing(store, conf, actor=f"cli:{getpass.getuser()}")
    finally:
        await store.close()
