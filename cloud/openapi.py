"""The OpenAPI 3 document of the cloud API, as data beside the routes in api.py.

A test compares it with the routes the application registers, both ways.
"""

from __future__ import annotations

from typing import Any

from cloud.alerts import STATES
from cloud.filters import MAX_PAGE, ORDERS, PARAMS
from cloud.lifecycle import ACTIONS, FLAT_LIMITS, MAX_NOTE, SUMMARIES, TARGET_STATE
from cloud.notify.routes import MAX_ENDPOINT
from edge.video.face.store import DEFAULT_LISTS
from shouwang.profiles import SEVERITIES


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(ref: str, description: str = "OK") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    """Every state-changing request carries a JSON object (docs/security.md)."""
    return {"required": True, "content": {"application/json": {"schema": schema}}}


UNAUTHORIZED = _error("Not logged in, or the session expired")
MAX_BODY = 64 * 1024  # the API application's client_max_size (cloud/api.py)
CROSS_ORIGIN = "a cross-origin request with the session cookie (docs/security.md)"
# What the CSRF rules (cloud/access/origin.py) answer to any state-changing request.
REFUSED = {
    "400": _error("No JSON object body, or a bad field, named"),
    "403": _error(f"Refused: {CROSS_ORIGIN}"),
    "413": _error(f"Body over {MAX_BODY // 1024} KiB"),
    "415": _error("Content-Type is not application/json"),
}
_TEXT = {"type": "string"}
_NULLABLE_TEXT = {"type": "string", "nullable": True}
_INT = {"type": "integer"}
_NULLABLE_INT = {"type": "integer", "nullable": True}
# Every field of an alert as the API and the WebSocket give it (cloud/store.py `_public`).
_ALERT_FIELDS: dict[str, dict[str, Any]] = {
    "id": _TEXT, "site": _TEXT, "type": _TEXT,
    "severity": {"type": "string", "enum": list(SEVERITIES)},
    "device": _TEXT, "subject": _TEXT, "dedup_key": _TEXT,
    "resident": {**_NULLABLE_TEXT, "description": "null for alerts about no one (a gateway)"},
    "location": {**_NULLABLE_TEXT, "description": "null when the device has no place"},
    "life_safety": {"type": "boolean"}, "ts": _INT, "received_ms": _INT,
    "state": {"type": "string", "enum": list(STATES)}, "state_changed_ms": _INT,
    "version": _INT, "repeats": _INT,
    "last_ms": {**_NULLABLE_INT, "description": "when the latest repeat happened"},
    "ack_by": _NULLABLE_TEXT, "ack_role": _NULLABLE_TEXT,
    "seen_by": _NULLABLE_TEXT, "seen_ms": _NULLABLE_INT,
    "ack_name": {**_NULLABLE_TEXT, "description": "display name of `ack_by` (its user name "
                 "when it has none)"},
    "seen_name": {**_NULLABLE_TEXT, "description": "display name of `seen_by`"},
    "dispatched_to": {**_NULLABLE_TEXT, "description": "user name of the worker it was "
                      "dispatched to (the latest)"},
    "dispatched_name": {**_NULLABLE_TEXT, "description": "display name of `dispatched_to`"},
    "shared_notes": {"type": "array", "description": "notes its responders shared with the "
                     "resident's family, oldest first (docs/access.md)",
                     "items": {"type": "object", "properties": {
                         "ts": _INT, "note": _TEXT, "by": _NULLABLE_TEXT,
                         "name": _NULLABLE_TEXT}}},
    "source_id": {**_NULLABLE_TEXT, "description": "the edge event that raised it; null for "
                  "the cloud's own alerts"},
    "raised_ms": _NULLABLE_INT,
    "confirmed_flat": {"type": "object", "nullable": True, "description": "a thrown object's "
                       "flat as found after investigation (the latest recorded)",
                       "properties": {"floor": _INT, "column": _INT, "note": _NULLABLE_TEXT,
                                      "by": _TEXT, "ts": _INT}},
    "detail": {"type": "object", "description": "what your role may see (docs/access.md)"},
    "confirmed": {"type": "object", "nullable": True, "description": "watchlist_hit only: "
                  "who confirmed the match ({by, role, ms}); null until someone does"},
    "match": {"type": "object", "nullable": True, "description": "watchlist_hit only: "
              "{list, person (an id), score}"},
}
NOT_FOUND = _error("No such alert, or not in your scope (the two answers are identical)")
ALERT_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}

# Gate face watchlists (cloud/watchlists.py, docs/face.md).
_LIST = {"name": "list", "in": "path", "required": True,
         "schema": {"type": "string", "enum": sorted(DEFAULT_LISTS)}}
_PERSON = {"name": "person", "in": "path", "required": True, "schema": {"type": "string"}}
_NO_WATCHLISTS = _error("This server keeps no watchlists (`watchlists` not configured)")
_NO_PERSON = _error("No such list, no such person on it, or not in your scope (identical)")
_WATCHLIST_ENTRY = ("{id, list, person, scope, consent, entered_by, entered_ms, until_ms, "
                    "model, photos}")
_WATCHLISTS: dict[str, Any] = {
    "/api/watchlists/{list}/people": {
        "post": {
            "summary": "Enrol a person on a watchlist with reference photos: missing_elder "
                       "by the resident's family or their grid's worker, police by an officer "
                       "for their jurisdiction; a consent reference is required; each photo "
                       "must show one face, big, sharp and frontal enough; audited, and sent "
                       "to the gateways of the scope (descriptors and ids only)",
            "parameters": [_LIST],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["person", "consent", "photos"],
                "additionalProperties": False,
                "properties": {
                    "person": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
                               "description": "the person's id, never a name (missing_elder: "
                                              "the resident id)"},
                    "consent": {"type": "string", "minLength": 1, "maxLength": 128,
                                "pattern": "\\S",
                                "description": "the signed consent form's reference"},
                    "photos": {"type": "array", "minItems": 1, "maxItems": 5,
                               "items": {"type": "string", "format": "byte"},
                               "description": "JPEG or PNG, base64; the first is kept (sealed) "
                                              "as the reference photo"},
                    "scope": {"type": "string",
                              "description": "police only: the part of your jurisdiction "
                                             "whose gates watch (default: your jurisdiction "
                                             "when you have one)"}}}}}},
            "responses": {"201": {"description": _WATCHLIST_ENTRY},
                          "400": _error("A bad field, named: no consent, not an image, no "
                                        "face, several faces, a face too small, blurred or "
                                        "turned away, a huge image"),
                          "401": UNAUTHORIZED,
                          "403": _error("Your role does not enrol on this list, the person "
                                        "or scope is not yours, or a cross-origin request"),
                          "404": _error("No such list"),
                          "409": _error("Already on this list"),
                          "413": _error("Body over 28 MiB"),
                          "415": _error("Content-Type is not application/json"),
                          "503": _error("This server keeps no watchlists (`watchlists` not "
                                        "configured), or its face models are missing")}},
        "get": {
            "summary": "The people on a list you may see (no descriptors, no photos), the "
                       "list's purpose and retention, and the version each gateway in your "
                       "scope acknowledged",
            "parameters": [_LIST],
            "responses": {"200": {"description": "{list, description, retention_days, "
                                                 f"version, people: [{_WATCHLIST_ENTRY}], "
                                                 "sites: [{site, version, acked_version, "
                                                 "refused}]}"},
                          "401": UNAUTHORIZED, "404": _error("No such list")}},
    },
    "/api/watchlists/{list}/people/{person}": {"delete": {
        "summary": "Remove a person from a list (who may enrol them, or an admin); audited; "
                   "every gateway of the scope drops them",
        "parameters": [_LIST, _PERSON],
        "requestBody": _body({"type": "object"}),
        "responses": {**REFUSED, "204": {"description": "Removed"}, "401": UNAUTHORIZED,
                      "403": _error("Your role does not remove from this list, or a "
                                    "cross-origin request"),
                      "404": _NO_PERSON}}},
    "/api/watchlists/{list}/people/{person}/photo": {"get": {
        "summary": "The enrolled reference photo, for whoever confirms a hit beside the crops "
                   "(the entry's viewers); every view and refusal audited",
        "parameters": [_LIST, _PERSON],
        "responses": {"200": {"description": "The photo",
                              "content": {t: {"schema": {"type": "string", "format": "binary"}}
                                          for t in ("image/jpeg", "image/png")}},
                      "401": UNAUTHORIZED, "404": _NO_PERSON, "503": _NO_WATCHLISTS}}},
}

_QUERY = {
    "state": ("Comma-separated states", {"type": "string", "example": "open,acknowledged"},
              f"one or more of {', '.join(STATES)}"),
    "type": ("Comma-separated alert types", {"type": "string", "example": "sos,fall"}, ""),
    "severity": ("Comma-separated severities", {"type": "string"},
                 f"one or more of {', '.join(SEVERITIES)}"),
    "location": ("Location path prefix, whole segments (district/street/community/...)",
                 {"type": "string"}, ""),
    "from": ("Event time from (inclusive), epoch ms", {"type": "integer", "minimum": 0}, ""),
    "to": ("Event time to (exclusive), epoch ms", {"type": "integer", "minimum": 0}, ""),
    "limit": ("Page size", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE,
                            "default": 100}, ""),
    "cursor": ("`next_cursor` of the previous page, in the same order",
               {"type": "string", "pattern": r"^(u[0-9]{2}\.)?\d{1,15}\.[0-9A-Za-z_-]{1,64}$"},
               ""),
    "q": ("Search: an alert id, a device id, a resident id or part of a resident's name, or "
          "part of the address (every character literal)", {"type": "string", "maxLength": 64},
          ""),
    "order": ("`time`: newest first. `urgency`: open, acknowledged, dispatched, then closed; "
              "critical first within each; then newest first",
              {"type": "string", "enum": list(ORDERS), "default": "time"}, ""),
}
assert set(_QUERY) == set(PARAMS)


def _list_parameters() -> list[dict[str, Any]]:
    return [{"name": k, "in": "query", "description": d + (f" ({extra})" if extra else ""),
             "schema": s} for k, (d, s, extra) in _QUERY.items()]


_SHARE = {"type": "boolean", "default": False,
          "description": "show the note to the resident's family (workers and admins; "
                         "only with a note)"}
# `share: true` needs a note that is not blank.
_SHARED_NEEDS_NOTE = {"anyOf": [
    {"properties": {"share": {"enum": [False]}}},
    {"required": ["note"], "properties": {"note": {"minLength": 1, "pattern": r"\S"}}},
]}


def _transition(action: str) -> dict[str, Any]:
    props: dict[str, Any] = {"note": {"type": "string", "maxLength": MAX_NOTE}}
    if action in TARGET_STATE:
        props["share"] = _SHARE
    required = ["worker"] if action == "dispatch" else []
    if action == "reject":
        props["note"] = {"type": "string", "minLength": 1, "maxLength": MAX_NOTE,
                         "pattern": r"\S", "description": "why it is not the person"}
        required = ["note"]
    if action == "dispatch":
        props["worker"] = {"type": "string", "description": "user name of a community worker "
                           "whose grid covers the alert"}
    return {
        "post": {
            "summary": SUMMARIES[action],
            "parameters": [ALERT_ID],
            "requestBody": _body({
                "type": "object", "properties": props, "additionalProperties": False,
                **({"required": required} if required else {}),
                **(_SHARED_NEEDS_NOTE if "share" in props else {}),
            }),
            "responses": {
                **REFUSED, "200": _json("AlertDetail"),
                "401": UNAUTHORIZED, "403": _error(f"Your role may not do this, or {CROSS_ORIGIN}"),
                "404": NOT_FOUND,
                "409": _error("Illegal from the alert's state (an unconfirmed watchlist match "
                              "takes only confirm or reject; only a watchlist match is "
                              "confirmed or rejected); says why"),
            },
        }
    }


DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Shouwang cloud API", "version": "1"},
    "components": {
        "securitySchemes": {
            "cookie": {"type": "apiKey", "in": "cookie", "name": "shouwang_session"},
            "bearer": {"type": "http", "scheme": "bearer"},
            "site_token": {"type": "http", "scheme": "bearer",
                           "description": "A gateway's upload token (site_tokens_file)"},
        },
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
            "Alert": {"type": "object", "properties": _ALERT_FIELDS,
                      "required": sorted(k for k, v in _ALERT_FIELDS.items()
                                         if not v.get("nullable"))},
            "AlertDetail": {"allOf": [{"$ref": "#/components/schemas/Alert"}, {
                "type": "object", "properties": {
                    "timeline": {"type": "array", "items": {"type": "object"}},
                    "notifications": {"type": "array", "items": {"type": "object"}},
                    "deliveries": {"type": "array", "items": {"type": "object"}},
                    "evidence": {"type": "array", "description": "references to the "
                                 "alert's snapshots and clips (its own site's only)",
                                 "items": {"type": "object", "properties": {
                                     "sha256": {"type": "string"}, "size": {"type": "integer"},
                                     "content_type": {"type": "string"},
                                     "captured_ts": {"type": "integer"},
                                     "device": {"type": "string"},
                                     "kind": {"type": "string", "nullable": True,
                                              "description": "snapshot, marked (the "
                                              "snapshot with a thrown object's track and "
                                              "candidate windows drawn), launch (the "
                                              "launch area, enlarged), clip, "
                                              "marked_clip, crop (a face); null from "
                                              "gateways that do not say"}}}}}}]},
            "Page": {"type": "object", "properties": {
                "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
                "next_cursor": {"type": "string", "nullable": True}}},
            "Me": {"type": "object", "properties": {
                "username": {"type": "string"}, "role": {"type": "string"},
                "display_name": {"type": "string"},
                "locations": {"type": "array", "items": {"type": "string"}},
                "residents": {"type": "array", "items": {"type": "string"}}}},
        },
    },
    "security": [{"cookie": []}, {"bearer": []}],
    "paths": {
        "/": {"get": {"summary": "The dashboard (HTML)", "security": [],
                      "responses": {"200": {"description": "HTML"}}}},
        "/healthz": {"get": {"summary": "Liveness and broker connection", "security": [],
                             "responses": {"200": {"description": "OK"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                             "responses": {"200": {"description": "text exposition format"}}}},
        "/api/openapi.json": {"get": {"summary": "This document", "security": [],
                                      "responses": {"200": {"description": "OK"}}}},
        "/api/login": {"post": {
            "summary": "Log in; sets an HttpOnly SameSite=Strict cookie and returns a bearer "
                       "token", "security": [],
            "requestBody": _body({
                "type": "object", "required": ["username", "password"],
                "properties": {k: {"type": "string", "minLength": 1, "maxLength": 256}
                               for k in ("username", "password")}}),
            "responses": {**REFUSED, "200": {"description": "Logged in"},
                          "401": _error("Wrong user name or password"),
                          "429": _error("Logins for this user name must wait (the delay grows "
                                        "with failures), or too many failures from this "
                                        "address; Retry-After says how long")}}},
        "/api/logout": {"post": {"summary": "End this session",
                                 "requestBody": _body({"type": "object"}),
                                 "responses": {**REFUSED, "200": {"description": "OK"},
                                               "401": UNAUTHORIZED}}},
        "/api/vocabulary": {"get": {
            "summary": "Every alert type and its names in Chinese and English, life-safety "
                       "first (shouwang/alert_types.yaml), and every watchlist's "
                       "(shouwang/explanations.yaml); no login needed", "security": [],
            "responses": {"200": {"description": "{types: [{type, zh, en}], watchlists: "
                                                 "[{list, zh, en}]}"}}}},
        "/api/me": {"get": {"summary": "Who is logged in, with role and scope",
                            "responses": {"200": _json("Me"), "401": UNAUTHORIZED}}},
        "/api/alerts": {"get": {
            "summary": "Alerts in your scope, newest first (or by urgency, `order`)",
            "parameters": _list_parameters(),
            "responses": {"200": _json("Page"),
                          "400": _error("A bad or unknown parameter, named"),
                          "401": UNAUTHORIZED}}},
        "/api/alerts/{id}": {"get": {
            "summary": "One alert with its timeline (audited)", "parameters": [ALERT_ID],
            "responses": {"200": _json("AlertDetail"), "401": UNAUTHORIZED,
                          "404": NOT_FOUND}}},
        "/api/alerts/{id}/confirm_flat": {"post": {
            "summary": "高空抛物: record the flat a thrown object came from, as found after "
                       "investigation (police, workers, admins; any state but false alarm; "
                       "the latest stands; in the timeline; audited: alert_confirm_flat)",
            "parameters": [ALERT_ID],
            "requestBody": _body({
                "type": "object", "required": ["floor", "column"],
                "additionalProperties": False, "properties": {
                    **{k: {"type": "integer", "minimum": lo, "maximum": hi}
                       for k, (lo, hi) in FLAT_LIMITS.items()},
                    "note": {"type": "string", "maxLength": MAX_NOTE}}}),
            "responses": {
                **REFUSED, "200": _json("AlertDetail"),
                "401": UNAUTHORIZED, "403": _error(f"Your role may not do this, or {CROSS_ORIGIN}"),
                "404": NOT_FOUND,
                "409": _error("Not a thrown_object alert, or a false alarm; says which"),
            }}},
        "/api/alerts/{id}/note": {"post": {
            "summary": "A note in the alert's timeline without a state change, in any state "
                       "(police, workers, admins); `share` shows it to the resident's family, "
                       "who read no other note (workers and admins); audited: alert_note",
            "parameters": [ALERT_ID],
            "requestBody": _body({
                "type": "object", "required": ["note"], "additionalProperties": False,
                "properties": {
                    "note": {"type": "string", "minLength": 1, "maxLength": MAX_NOTE,
                             "pattern": r"\S"},
                    "share": _SHARE}}),
            "responses": {
                **REFUSED, "200": _json("AlertDetail"),
                "401": UNAUTHORIZED, "403": _error(f"Your role may not do this, or {CROSS_ORIGIN}"),
                "404": NOT_FOUND,
                "409": _error("A watchlist match nobody has confirmed takes only confirm or "
                              "reject")}}},
        "/api/alerts/{id}/workers": {"get": {
            "summary": "Community workers whose grid covers the alert (dispatch candidates)",
            "parameters": [ALERT_ID],
            "responses": {"200": {"description": "{workers: [{username, display_name}]}"},
                          "401": UNAUTHORIZED, "403": _error("Your role may not dispatch"),
                          "404": NOT_FOUND}}},
        "/api/audit": {"get": {
            "summary": "The audit log, newest first (admins only)",
            "parameters": [
                {"name": "action", "in": "query", "schema": {"type": "string"},
                 "description": "e.g. login_failed, alert_read, alert_ack, alert_denied"},
                {"name": "target", "in": "query", "schema": {"type": "string"},
                 "description": "an alert id or a user name"},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE,
                            "default": 100}},
            ],
            "responses": {"200": {"description": "{entries: [{seq, ts, actor, action, target, "
                                                 "remote, detail}]}"},
                          "400": _error("A bad parameter, named"), "401": UNAUTHORIZED,
                          "403": _error("Not an admin")}}},
        "/api/alerts/{id}/evidence/{sha256}": {"get": {
            "summary": "One evidence blob of an alert you may read; byte ranges (206) for video "
                       "seeking (audited: evidence_read, once per view)",
            "parameters": [ALERT_ID, {"name": "sha256", "in": "path", "required": True,
                                      "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}],
            "responses": {"200": {"description": "The bytes",
                                  "content": {t: {"schema": {"type": "string",
                                                             "format": "binary"}}
                                              for t in ("image/jpeg", "image/png",
                                                        "video/mp4")}},
                          "206": {"description": "The range asked for (`Range: bytes=...`)"},
                          "304": {"description": "Unchanged since `If-None-Match`"},
                          "401": UNAUTHORIZED,
                          "416": _error("The range is outside the blob"),
                          "404": _error("No such alert, not in your scope, or this hash is "
                                        "not this alert's evidence")}}},
        "/api/alerts/{id}/package": {"get": {
            "summary": "The alert's evidence package: a zip of its clips, snapshots, alert.json "
                       "(as your role sees it), timeline.json and manifest.json with every "
                       "file's SHA-256 and size, signed in manifest.sig (raw Ed25519). Police, "
                       "workers and admins; audited: evidence_package (docs/evidence.md)",
            "parameters": [ALERT_ID],
            "responses": {"200": {"description": "The package",
                                  "content": {"application/zip": {"schema": {
                                      "type": "string", "format": "binary"}}}},
                          "401": UNAUTHORIZED,
                          "403": _error("Your role may not export evidence packages"),
                          "404": NOT_FOUND}}},
        "/api/evidence/public-key": {"get": {
            "summary": "The Ed25519 public key that signs evidence packages (no login needed)",
            "security": [],
            "parameters": [{"name": "format", "in": "query", "schema": {
                "type": "string", "enum": ["json", "pem"], "default": "json"}}],
            "responses": {"200": {"description": "{algorithm, public_key (raw, base64), "
                                                 "fingerprint, pem}, or the PEM alone",
                                  "content": {"application/json": {},
                                              "application/x-pem-file": {}}},
                          "400": _error("`format` is neither json nor pem")}}},
        "/api/alerts.csv": {"get": {
            "summary": "The filtered alert list as CSV (UTF-8 with BOM), newest first, at most "
                       "10,000 rows; the same filters and scope as /api/alerts; audited",
            "parameters": [
                *[p for p in _list_parameters() if p["name"] not in ("limit", "cursor")],
                {"name": "lang", "in": "query", "schema": {"type": "string",
                                                           "enum": ["zh", "en"]}},
                {"name": "tz", "in": "query", "schema": {"type": "string",
                                                         "example": "Asia/Shanghai"}}],
            "responses": {"200": {"description": "id, time, type, severity, state, resident, "
                                                 "location, device, handled_by, times, why, "
                                                 "ts_ms", "content": {"text/csv": {}}},
                          "400": _error("A bad parameter, named"), "401": UNAUTHORIZED}}},
        "/api/locations/building": {"get": {
            "summary": "One building as units → floors → households, each with its open "
                       "alerts (and critical ones) and its devices with a problem, within "
                       "your scope (not for family users)",
            "parameters": [{"name": "path", "in": "query", "required": True,
                            "schema": {"type": "string"},
                            "description": "the building's path (5 segments)"}],
            "responses": {"200": {"description": "{building, units: [{name, floors: [{name, "
                                                 "households: [{path, unit, floor, name, "
                                                 "active, critical_active, "
                                                 "device_problems}]}]}]}"},
                          "400": _error("A bad parameter, named"), "401": UNAUTHORIZED,
                          "403": _error("Family users have no building view")}}},
        "/api/residents": {"get": {
            "summary": "The people on your board, as your role may see them (police: name, "
                       "tags, household, phone, the first contact to call; others also age "
                       "and every contact); ids out of scope are left out; audited",
            "parameters": [{"name": "ids", "in": "query", "required": True,
                            "schema": {"type": "string", "example": "r-1,r-2"},
                            "description": "1 to 100 resident ids, comma-separated"}],
            "responses": {"200": {"description": "{residents: [{id, name, location, tags, "
                                                 "phone, age?, contacts: [{name, relation, "
                                                 "phone}], office: {phone, place} | null "
                                                 "(the number of the nearest place that "
                                                 "has one: the community's office)}]}"},
                          "400": _error("ids missing, too many or malformed"),
                          "401": UNAUTHORIZED}}},
        "/api/residents/{id}": {"get": {
            "summary": "One resident: name, age, household, tags, phone, emergency contacts, "
                       "bound devices with liveness (family of the resident, workers of the "
                       "grid, admins; audited)",
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "{id, name, age, location, tags, phone, "
                                                 "contacts, office: {phone, place} | null "
                                                 "(the community's number), devices: [{site, "
                                                 "id, profile, transport, data, health, "
                                                 "battery, last_seen_ms}]}"},
                          "401": UNAUTHORIZED, "403": _error("Police do not see residents"),
                          "404": _error("No such resident, or not in your scope (identical)")}}},
        "/api/residents/{id}/vitals": {"get": {
            "summary": "A vital sign of a resident over time from the telemetry store, one "
                       "series per bound device (same roles as the resident; audited)",
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "field", "in": "query", "required": True,
                 "schema": {"type": "string", "example": "heart_rate",
                            "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"}},
                {"name": "from", "in": "query", "schema": {"type": "integer"},
                 "description": "epoch ms; default 24 h before `to`"},
                {"name": "to", "in": "query", "schema": {"type": "integer"},
                 "description": "epoch ms; default now"},
                {"name": "step", "in": "query", "schema": {"type": "integer", "minimum": 1},
                 "description": "seconds per point (each the average of its step); default "
                                "so that there are at most 2,000 points"},
            ],
            "responses": {"200": {"description": "{resident, field, from, to, step, series: "
                                                 "[{site, device, points: [[t_ms, value]]}]}"},
                          "400": _error("A bad parameter, named"), "401": UNAUTHORIZED,
                          "403": _error("Police do not see residents"),
                          "404": _error("No such resident, or not in your scope (identical)"),
                          "503": _error("This server has no telemetry store for the API")}}},
        **_WATCHLISTS,
        "/api/devices/health": {"get": {
            "summary": "Device health by building within your scope: counts of offline, "
                       "stale, faulty and low-battery devices, and those devices",
            "parameters": [{"name": "location", "in": "query", "schema": {"type": "string"},
                            "description": "Location path prefix (whole segments)"}],
            "responses": {"200": {"description": "{buildings: [{building, devices, offline, "
                                                 "stale, faulty, low_battery}], devices: [...], "
                                                 "truncated}"},
                          "400": _error("A bad parameter, named"), "401": UNAUTHORIZED}}},
        "/api/locations": {"get": {
            "summary": "The next level of places below a location prefix, with alert counts, "
                       "within your scope",
            "parameters": [{"name": "prefix", "in": "query", "schema": {"type": "string"},
                            "description": "Location path prefix (whole segments); empty "
                                           "for the top level (districts)"}],
            "responses": {"200": {"description": "{prefix, level, children: [{path, name, "
                                                 "label, alerts, active, critical_active}]}"},
                          "400": _error("A bad parameter, named"), "401": UNAUTHORIZED}}},
        **{f"/api/alerts/{{id}}/{a}": _transition(a) for a in ACTIONS},
        "/api/watchlists/false-matches": {"get": {
            "summary": "Watchlist matches per list and camera within your scope: hits, "
                       "confirmed, false matches (rejected or marked false) and awaiting a "
                       "person; for tuning a list's threshold",
            "responses": {"200": {"description": "{counts: [{list, camera, hits, confirmed, "
                                                 "false_matches, awaiting}]}"},
                          "400": _error("An unknown parameter, named"), "401": UNAUTHORIZED,
                          "403": _error("Families do not read these counts")}}},
        "/api/ws": {"get": {
            "summary": "WebSocket: a snapshot of your scope, then live alert and "
                       "alert_updated messages in your scope; with devices=1 also device "
                       "messages ({site, id, location, transport, data, health, battery, "
                       "changed_ms}) when a device in your scope changes",
            "parameters": [{"name": "devices", "in": "query",
                            "schema": {"type": "string", "enum": ["1"]}}],
            "responses": {"101": {"description": "Switching protocols"},
                          "400": _error("Not a WebSocket upgrade"),
                          "401": UNAUTHORIZED, "403": _error(f"Refused: {CROSS_ORIGIN}")}}},
        "/api/push/vapid-public-key": {"get": {
            "summary": "The cloud's VAPID public key, for a browser's push subscription",
            "responses": {"200": {"description": "{public_key}"}, "401": UNAUTHORIZED,
                          "404": _error("Web Push is not enabled")}}},
        "/api/push/subscriptions": {
            "post": {
                "summary": "Save this browser's push subscription for the logged-in user",
                "requestBody": _body({
                    "type": "object", "required": ["endpoint", "keys"],
                    "properties": {"endpoint": {"type": "string", "format": "uri",
                                                "maxLength": MAX_ENDPOINT},
                                   "keys": {"type": "object", "properties": {
                                       "p256dh": {"type": "string"},
                                       "auth": {"type": "string"}}}}}),
                "responses": {**REFUSED, "201": {"description": "{id}"},
                              "400": _error("A bad subscription, named; or a push service "
                                            "not on the allowed list"),
                              "401": UNAUTHORIZED, "404": _error("Web Push is not enabled")}},
            "delete": {
                "summary": "Remove one of the logged-in user's push subscriptions",
                "requestBody": _body({
                    "type": "object", "required": ["endpoint"],
                    "properties": {"endpoint": {"type": "string", "maxLength": MAX_ENDPOINT}}}),
                "responses": {**REFUSED, "204": {"description": "Removed"},
                              "401": UNAUTHORIZED,
                              "404": _error("No such subscription for this user, or Web "
                                            "Push is not enabled")}},
        },
        "/family/": {"get": {"summary": "The family page (a PWA, HTML)", "security": [],
                             "responses": {"200": {"description": "HTML"}}}},
        "/family/sw.js": {"get": {"summary": "The family page's service worker", "security": [],
                                  "responses": {"200": {"description": "JavaScript"}}}},
        "/family/manifest.json": {"get": {"summary": "The family PWA's manifest",
                                          "security": [],
                                          "responses": {"200": {"description": "JSON"}}}},
        "/ingest/evidence/{sha256}": {"put": {
            "summary": "A gateway uploads evidence bytes (JPEG, PNG, MP4) under their SHA-256; "
                       "authenticated by the site's token, not a user session",
            "security": [{"site_token": []}],
            "parameters": [{"name": "sha256", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}],
            "requestBody": {"content": {t: {"schema": {"type": "string", "format": "binary"}}
                                        for t in ("image/jpeg", "image/png", "video/mp4")}},
            "responses": {"200": {"description": "Already held; nothing written"},
                          "201": {"description": "Stored"},
                          "400": _error("The path is not a SHA-256"),
                          "401": _error("No valid site token"),
                          "403": _error("The token is another site's"),
                          "413": _error("Over 64 MiB"), "415": _error("Not an evidence type"),
                          "422": _error("The bytes do not match the hash")}}},
    },
}
