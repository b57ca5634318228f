"""Watchlist enrolment through the API, by role: who may put whose face on which gate's list.

`missing_elder`: a family member for their own resident, or a community worker for a
resident of their grid; the elder is watched for at the gates of their community.
`police`: an officer, for their jurisdiction (or a part of it, `scope`). A community's own
lists (`watchlists.lists` in cloud.yaml: description, retention, the community's place): the
community's workers (those whose area lies in it) and admins, watched for at the community's
gates (or a part of it, `scope`). Nobody else enrols (admins remove, and see the lists).
No consent reference, no enrolment. Every photo passes
the gateway's own enrolment checks (edge/video/face/enrol.py: one face, big, sharp, frontal
enough; not huge, an image), or nothing is kept. The descriptors and the first reference
photo are sealed in the database (cloud/watchlist_store.py); the photo is shown only to whom
the entry is visible (the worker who confirms a hit puts it beside the crops), each view
audited like an evidence view. Every enrolment and removal is audited and reaches the
gateways of the entry's scope (cloud/watchlist_downlink.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from sqlalchemy import select

from cloud import api
from cloud.access import http as access_http
from cloud.access.scope import Principal, prefix_matches
from cloud.schema import residents
from cloud.watchlist_store import (
    PUBLIC_COLUMNS,
    AlreadyEnrolled,
    CloudKeys,
    CommunityList,
    enrol,
    latest,
    overlaps,
    remove,
    site_versions,
    watchlist_people,
)
from edge.video.face.enrol import Enroller, PhotoRefused
from edge.video.face.store import DEFAULT_LISTS
from edge.video.models import ModelError

log = logging.getLogger(__name__)
# Who may enrol on each list (docs/face.md); the lists and their retention are the gateway's.
ENROLLERS: dict[str, frozenset[str]] = {
    "missing_elder": frozenset({"family", "worker"}),
    "police": frozenset({"police"}),
}
COMMUNITY_ENROLLERS = frozenset({"worker", "admin"})  # a community's own lists
ELDER_SCOPE_DEPTH = 3  # district/street/community: the gates of the elder's own community
MAX_PHOTOS = 5
# Base64 of one photo at the enrolment limit (20 MB) and a little: the API's 64 KiB limit
# (openapi.MAX_BODY) is for every other route.
MAX_BODY = 28 * 1024 * 1024
MAX_CONSENT = 128
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
_FIELDS = frozenset({"person", "consent", "photos", "scope"})
NOT_FOUND = {"error": "no such person on this list, or not in your scope"}


class Faces:
    """The enrolment models, loaded on the first enrolment (most workers never do one), and
    the keys and change hook the server gives."""

    def __init__(self) -> None:
        self.keys: CloudKeys | None = None
        self.lists: dict[str, CommunityList] = {}  # the communities' own lists (cloud.yaml)
        self.changed: Callable[[], None] = lambda: None
        self._enroller: Enroller | None = None
        self._lock = asyncio.Lock()

    def enrollers(self, list_name: str) -> frozenset[str]:
        return ENROLLERS.get(list_name, COMMUNITY_ENROLLERS)

    def policy(self, list_name: str) -> tuple[str, int]:
        """(description, retention days) of a list."""
        own = self.lists.get(list_name)
        if own is not None:
            return own.description, own.retention_days
        builtin = DEFAULT_LISTS[list_name]
        return builtin.description, builtin.retention_days

    async def describe(self, name: str, data: bytes) -> tuple[str, list[float], str]:
        """(SHA-256, descriptor, model) of the one face in a photo, or PhotoRefused."""
        async with self._lock:  # one at a time: CPU work, on a 2-core server
            if self._enroller is None:
                # ModelError (files missing or altered) goes to the caller: a 503 naming it.
                self._enroller = await asyncio.to_thread(Enroller)
            enroller = self._enroller
            digest, vector = await asyncio.to_thread(enroller.describe_bytes, name, data)
        return digest, [round(float(v), 6) for v in vector], enroller.embedder.model


FACES: web.AppKey[Faces] = web.AppKey("faces", Faces)


def _refuse(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _list(request: web.Request) -> str | web.Response:
    name = request.match_info["list"]
    known = sorted({*DEFAULT_LISTS, *request.app[FACES].lists})
    if name not in known:
        return _refuse(404, f"no list {name[:64]!r} (lists: {', '.join(known)})")
    return name


def _keys(request: web.Request) -> CloudKeys | web.Response:
    keys = request.app[FACES].keys
    if keys is None:
        return _refuse(503, "this server keeps no watchlists: `watchlists` (key_file, "
                       "signing_key_file) is not configured")
    return keys


def visible(who: Principal, row: Any) -> bool:
    """Whether `who` may see this entry (and its photo): admins all; family their own
    elder; workers the missing elders watched for in their area; police their own list in
    their jurisdiction."""
    if who.role == "admin":
        return True
    if who.role == "family":
        return bool(row["list"] == "missing_elder" and row["person"] in who.residents)
    if (row["list"] == "police") != (who.role == "police"):
        return False
    return any(overlaps(row["scope"], p) for p in who.locations)


def _public(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "list": row["list"], "person": row["person"],
            "scope": row["scope"], "consent": row["consent"], "entered_by": row["entered_by"],
            "entered_ms": row["entered_ms"], "until_ms": row["until_ms"], "model": row["model"],
            "photos": len(row["photo_hashes"])}


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    """The JSON object, read with this route's own limit."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _refuse(413, f"request body over {MAX_BODY // (1024 * 1024)} MiB")
    raw = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        raw += chunk
        if len(raw) > MAX_BODY:
            return _refuse(413, f"request body over {MAX_BODY // (1024 * 1024)} MiB")
    try:
        body = orjson.loads(bytes(raw))
    except orjson.JSONDecodeError:
        return api._bad(request, "body", "request body is not JSON")
    if not isinstance(body, dict):
        return api._bad(request, "body", "request body must be a JSON object")
    return body


def _photos(request: web.Request, body: dict[str, Any]) -> list[bytes] | web.Response:
    photos = body.get("photos")
    if not isinstance(photos, list) or not 1 <= len(photos) <= MAX_PHOTOS:
        return api._bad(request, "photos", f"photos: 1 to {MAX_PHOTOS} reference photos, each "
                        "a JPEG or PNG in base64")
    out = []
    for i, text in enumerate(photos):
        try:
            if not isinstance(text, str):
                raise ValueError
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return api._bad(request, "photos", f"photos[{i}]: not base64")
        if not (data.startswith(b"\xff\xd8\xff") or data.startswith(b"\x89PNG\r\n\x1a\n")):
            return api._bad(request, "photos",
                            f"photos[{i}]: not an image (JPEG or PNG expected)")
        out.append(data)
    return out


async def _scope(request: web.Request, who: Principal, list_name: str, person: str,
                 asked: Any) -> str | web.Response:
    """The gates this entry goes to, or the refusal: the person and the scope must be the
    user's."""
    own = request.app[FACES].lists.get(list_name)
    if own is not None:
        if who.role != "admin" and not any(overlaps(own.community, p) for p in who.locations):
            return _refuse(403, f"{list_name} is the list of {own.community}; your area is "
                           "not in it")
        if asked is None:
            return own.community
        if not isinstance(asked, str) or not prefix_matches(asked, own.community):
            return _refuse(403, f"scope {str(asked)[:200]!r} is outside {own.community}, "
                           f"whose list {list_name} is")
        return asked
    if list_name == "police":
        if asked is None and len(who.locations) == 1:
            return who.locations[0]
        if not isinstance(asked, str) or not asked:
            return api._bad(request, "scope", "scope: name the part of your jurisdiction "
                            f"({', '.join(who.locations)}) whose gates watch for this person")
        if not any(prefix_matches(asked, p) for p in who.locations):
            return _refuse(403, f"scope {asked[:200]!r} is outside your jurisdiction")
        return asked
    if asked is not None:
        return api._bad(request, "scope", "scope: a missing elder is watched for at the gates "
                        "of their own community; give none")
    if who.role == "family" and person not in who.residents:
        return _refuse(403, f"{person} is not a resident you look after")
    async with request.app[api.STORE].engine.connect() as conn:
        row = (await conn.execute(select(residents.c.id, residents.c.location)
                                  .where(residents.c.id == person))).first()
    if row is None or not who.allows({"resident": row.id, "location": row.location}):
        return _refuse(403, f"{person} is not a resident of your grid")
    if not row.location:
        return api._bad(request, "person", f"person: {person} has no home in the registry, so "
                        "no gate to watch at")
    return "/".join(row.location.split("/")[:ELDER_SCOPE_DEPTH])


async def enrol_person(request: web.Request) -> web.Response:
    list_name = _list(request)
    if isinstance(list_name, web.Response):
        return list_name
    keys = _keys(request)
    if isinstance(keys, web.Response):
        return keys
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        return api._bad(request, unknown[0], f"{unknown[0]}: unknown field; known: "
                        f"{', '.join(sorted(_FIELDS))}")
    person = body.get("person")
    if not isinstance(person, str) or not _ID.match(person):
        return api._bad(request, "person", "person: an id of 1-64 of [A-Za-z0-9_.:-] (never a "
                        "name)")
    consent = body.get("consent")
    if not isinstance(consent, str) or not consent.strip() or len(consent) > MAX_CONSENT:
        return api._bad(request, "consent", "consent: enrolment needs the reference of the "
                        "person's (or guardian's) signed consent form, up to "
                        f"{MAX_CONSENT} characters "
                        "(人脸识别技术应用安全管理办法: separate consent)")
    who = access_http.principal(request)
    faces = request.app[FACES]
    if who.role not in faces.enrollers(list_name):
        allowed = " or ".join(sorted(faces.enrollers(list_name)))
        return _refuse(403, f"a {who.role} user does not enrol on {list_name} ({allowed} do)")
    photos = _photos(request, body)
    if isinstance(photos, web.Response):
        return photos
    scope = await _scope(request, who, list_name, person, body.get("scope"))
    if isinstance(scope, web.Response):
        return scope
    hashes, vectors, model = [], [], ""
    for i, data in enumerate(photos):
        try:
            digest, vector, model = await faces.describe(f"photos[{i}]", data)
        except PhotoRefused as err:
            return api._bad(request, "photos", f"refused, nothing enrolled: {err}")
        except ModelError as err:
            log.error("watchlist enrolment: the face models cannot be loaded: %s", err)
            return _refuse(503, f"this server cannot check faces: {err} (make models)")
        hashes.append(digest)
        vectors.append(vector)
    now = request.app[access_http.ACCESS].clock.now_ms()
    row = {"id": str(uuid.uuid4()), "list": list_name, "person": person, "scope": scope,
           "consent": consent.strip(), "entered_by": who.username, "entered_ms": now,
           "until_ms": now + faces.policy(list_name)[1] * 86_400_000,
           "model": model, "photo_hashes": hashes,
           "photo_type": "image/png" if photos[0].startswith(b"\x89PNG") else "image/jpeg"}
    try:
        await enrol(request.app[api.STORE], keys, row, photos[0], vectors,
                    remote=request.remote)
    except AlreadyEnrolled as err:
        return _refuse(409, f"{err}; remove the entry first to enrol new photos")
    faces.changed()
    log.info("watchlist %s: %s enrolled by user %s (scope %s)", list_name, person,
             who.username, scope)
    return web.json_response(_public(row), status=201)


async def _row(request: web.Request, list_name: str) -> Any:
    async with request.app[api.STORE].engine.connect() as conn:
        return (await conn.execute(select(*PUBLIC_COLUMNS).where(
            watchlist_people.c.list == list_name,
            watchlist_people.c.person == request.match_info["person"]))).mappings().first()


async def _may_change(request: web.Request, who: Principal, row: Any) -> bool:
    """Removal asks what enrolment asked: the family's own elder, the worker of the elder's
    grid (not every worker who sees the entry at the community gate), the police of the
    whole scope; or an admin."""
    if who.role == "admin":
        return True
    faces = request.app[FACES]
    if who.role not in faces.enrollers(row["list"]):
        return False
    own = faces.lists.get(row["list"])
    if own is not None:  # the community's workers
        return any(overlaps(own.community, p) for p in who.locations)
    if who.role == "family":
        return bool(row["person"] in who.residents)
    if who.role == "police":
        return any(prefix_matches(row["scope"], p) for p in who.locations)
    async with request.app[api.STORE].engine.connect() as conn:
        home = (await conn.execute(select(residents.c.location).where(
            residents.c.id == row["person"]))).scalar_one_or_none()
    return who.allows({"resident": row["person"], "location": home})


async def list_people(request: web.Request) -> web.Response:
    list_name = _list(request)
    if isinstance(list_name, web.Response):
        return list_name
    who = access_http.principal(request)
    store = request.app[api.STORE]
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(*PUBLIC_COLUMNS).where(
            watchlist_people.c.list == list_name).order_by(watchlist_people.c.entered_ms)
        )).mappings().all()
    people = [_public(r) for r in rows if visible(who, r)]
    gates = []
    if who.role != "family":
        for site, (location, version, held, refused, _) in sorted(
                (await site_versions(store)).items()):
            if version and (who.role == "admin" or any(overlaps(location, p)
                                                       for p in who.locations)):
                # `refused`: why the gateway could not match this list, else None.
                gates.append({"site": site, "version": version, "acked_version": held,
                              "refused": refused.get(list_name)})
    description, days = request.app[FACES].policy(list_name)
    return web.json_response({
        "list": list_name, "description": description,
        "retention_days": days, "version": await latest(store),
        "people": people, "sites": gates})


async def remove_person(request: web.Request) -> web.Response:
    list_name = _list(request)
    if isinstance(list_name, web.Response):
        return list_name
    who = access_http.principal(request)
    row = await _row(request, list_name)
    if row is None or not visible(who, row):
        return web.json_response(NOT_FOUND, status=404)
    if not await _may_change(request, who, row):
        return _refuse(403, f"only who may enrol {row['person']} on {list_name} (or an admin) "
                       "removes them")
    access = request.app[access_http.ACCESS]
    if not await remove(request.app[api.STORE], row, actor=who.actor, remote=request.remote,
                        now_ms=access.clock.now_ms()):
        return web.json_response(NOT_FOUND, status=404)
    request.app[FACES].changed()
    log.info("watchlist %s: %s removed by user %s", list_name, row["person"], who.username)
    return web.Response(status=204)


async def get_photo(request: web.Request) -> web.StreamResponse:
    list_name = _list(request)
    if isinstance(list_name, web.Response):
        return list_name
    keys = _keys(request)
    if isinstance(keys, web.Response):
        return keys
    who = access_http.principal(request)
    access = request.app[access_http.ACCESS]
    row = await _row(request, list_name)
    target = f"{list_name}:{request.match_info['person']}"[:200]
    if row is None or not visible(who, row):
        if row is not None:
            await access.audit(who.actor, "watchlist_photo_denied", target, request.remote)
        return web.json_response(NOT_FOUND, status=404)
    async with request.app[api.STORE].engine.connect() as conn:
        sealed = (await conn.execute(select(watchlist_people.c.photo).where(
            watchlist_people.c.id == row["id"]))).scalar_one_or_none()
    if sealed is None:  # removed in between
        return web.json_response(NOT_FOUND, status=404)
    try:
        photo = keys.open_photo(sealed, row["id"])
    except ValueError as err:
        log.error("watchlist photo %s: %s", row["id"], err)
        return _refuse(503, "the reference photo cannot be opened with this server's "
                       "watchlist key")
    await access.audit(who.actor, "watchlist_photo_read", target, request.remote,
                       {"id": row["id"]})
    return web.Response(body=photo, content_type=row["photo_type"],
                        headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app[FACES] = Faces()
    app.router.add_post("/api/watchlists/{list}/people", enrol_person)
    app.router.add_get("/api/watchlists/{list}/people", list_people)
    app.router.add_delete("/api/watchlists/{list}/people/{person}", remove_person)
    app.router.add_get("/api/watchlists/{list}/people/{person}/photo", get_photo)
