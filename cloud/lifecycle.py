"""What a person does with an alert: read it, acknowledge, dispatch, resolve, mark false alarm.

Every call goes through the caller's `Principal`: an alert outside their scope is reported
exactly like a missing one (`AlertNotFound`), so the answer says nothing about other
jurisdictions. Reads and transitions are audited; the state change itself is arbitrated by the
database (`Store.transition` compares and sets).

Acknowledging means a responder has the case: the roles the escalation policy names
(`responders`, by default worker, police and admin). Anyone else's acknowledgement (a daughter
far away pressing "我知道了") is recorded as "seen" (who and when, on the alert and in its
timeline) and changes no state, so the escalation goes on to the people who can come.

A watchlist match (`CONFIRMED_TYPES`) is confirmed by a person before anyone acts on it: until
then only `confirm` and `reject` apply, by the roles its policy names as `responders`.
`confirm` keeps it open, records who, makes a missing elder's match their case (the alert's
resident, so their family sees it) and plans the policy's `confirmed` stages; `reject` closes
it as a false alarm with the reason, a false match counted per list and camera.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select

from cloud.access.scope import Principal
from cloud.access.tables import assignments, notifications, users
from cloud.access.users import Access
from cloud.alerts import CONFIRMED_TYPES, STATES, AlertNotFound, IllegalTransition
from cloud.escalation.policy import DEFAULT_RESPONDERS, variant
from cloud.evidence import evidence_for_alert
from cloud.notify.tables import alert_attempts
from cloud.store import Store, display_names, user_of

log = logging.getLogger(__name__)
# What the detail view adds to an alert; a live change on the board carries the alert alone.
DETAIL_ONLY = ("timeline", "notifications", "deliveries", "evidence")
TARGET_STATE = {
    "ack": "acknowledged",
    "dispatch": "dispatched",
    "resolve": "resolved",
    "false_alarm": "false_alarm",
}
# A watchlist match's own actions: `reject` closes it as a false alarm, `confirm` keeps it open.
MATCH_TARGET = {"confirm": "open", "reject": "false_alarm"}
ACTIONS = (*TARGET_STATE, *MATCH_TARGET)  # every action a person takes (a route each)
SUMMARIES = {
    **{a: f"Move the alert to {state}" for a, state in TARGET_STATE.items()},
    "reject": "A watchlist match is not the person: close it as a false alarm with the reason "
              "(`note`), counted as a false match of its list and camera",
    "confirm": "A watchlist match is the person: route it on (the policy's confirmed stages; a "
               "missing elder's family sees it)",
}
MAX_NOTE = 2000
ACTIVE = ("open", "acknowledged", "dispatched")
# A confirmed flat: floors and window columns as the camera profile numbers them.
FLAT_LIMITS = {"floor": (1, 200), "column": (1, 200)}


class Forbidden(Exception):
    """The user sees this alert but their role may not do this to it."""


class NotNow(IllegalTransition):
    """The action does not apply to this alert as it is (its type, its state): 409, with a
    sentence saying why."""

    def __init__(self, alert_id: str, current: str, target: str, why: str) -> None:
        super().__init__(alert_id, current, target)
        self.args = (why,)


class BadField(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Lifecycle:
    def __init__(
        self,
        store: Store,
        access: Access,
        on_change: Callable[[dict[str, Any]], None],
        on_left_open: Callable[[str], Awaitable[None]] | None = None,
        responders: Callable[[str, str | None], frozenset[str]] | None = None,
        on_confirmed: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        on_false_match: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.access = access
        self.on_change = on_change
        self.on_left_open = on_left_open
        self.responders = responders or _default_responders
        self.on_confirmed = on_confirmed
        self.on_false_match = on_false_match

    async def visible(
        self, principal: Principal, alert_id: str, remote: str | None, action: str
    ) -> dict[str, Any]:
        """The stored alert if `principal` may see it; else `AlertNotFound`, audited as
        `alert_denied` with `action`. The one scope check of every alert route."""
        return await self._visible(principal, alert_id, remote, action)

    async def _visible(
        self, principal: Principal, alert_id: str, remote: str | None, action: str
    ) -> dict[str, Any]:
        alert = await self.store.get_alert(alert_id)  # raises AlertNotFound
        if not principal.allows(alert):
            # Audited (probing other jurisdictions is worth knowing) but answered as missing.
            await self.access.audit(principal.actor, "alert_denied", alert_id, remote,
                                    {"action": action})
            raise AlertNotFound(alert_id)
        return alert

    async def read(self, principal: Principal, alert_id: str, remote: str | None) -> dict[str, Any]:
        alert = await self._visible(principal, alert_id, remote, "read")
        await self.access.audit(principal.actor, "alert_read", alert_id, remote)
        return principal.view(await self._with_people(alert))

    async def for_export(
        self, principal: Principal, alert_id: str, remote: str | None
    ) -> dict[str, Any]:
        """The alert in full as this user sees it, for an evidence package (not audited here:
        the export is, once the package exists)."""
        alert = await self._visible(principal, alert_id, remote, "evidence_package")
        if not principal.may("export_package"):
            raise Forbidden(f"a {principal.role} user may not export evidence packages")
        return principal.view(await self._with_people(alert))

    async def act(
        self, principal: Principal, alert_id: str, action: str, body: dict[str, Any],
        remote: str | None,
    ) -> dict[str, Any]:
        note = body.get("note")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
            raise BadField("note", f"must be a string of at most {MAX_NOTE} characters")
        known = {"note"} | ({"worker"} if action == "dispatch" else set()) | (
            {"share"} if action in TARGET_STATE else set())
        unknown = set(body) - known
        if unknown:
            raise BadField(sorted(unknown)[0], "unknown field")
        share = _share(body, note)
        alert = await self._visible(principal, alert_id, remote, action)
        if not principal.may(action):
            raise Forbidden(f"a {principal.role} user may not {action.replace('_', ' ')} alerts")
        if share and not principal.may("share_note"):
            raise Forbidden(f"a {principal.role} user may not share notes with the family")
        kind = variant(alert["type"], alert.get("detail"))
        detail: dict[str, Any] = {}
        if alert["type"] in CONFIRMED_TYPES:
            self._check_confirmation(principal, alert, action, kind, note)
            match = alert.get("match") or {}
            detail = {"list": match.get("list"), "camera": alert["device"]}
            if action == "confirm":
                return await self._confirm(principal, alert, note, detail, remote)
            if action == "reject":
                detail["reason"] = note
        elif action in ("confirm", "reject"):
            raise NotNow(alert_id, alert["state"], action,
                         f"alert {alert_id} is a {alert['type']}: only a watchlist match is "
                         f"confirmed or rejected")
        if action == "ack" and principal.role not in self.responders(alert["type"], kind):
            return await self._seen(principal, alert, remote)
        worker: Principal | None = None
        if action == "dispatch":
            worker = await self._worker_for(alert, body.get("worker"))
        target = TARGET_STATE.get(action) or MATCH_TARGET[action]
        detail = {"to": target, **detail}
        also = []
        if worker is not None:
            detail["worker"] = worker.username
            also.append(assignments.insert().values(
                alert_id=alert_id, user_id=worker.user_id, ts=self.access.clock.now_ms()
            ))
        values = {"ack_by": principal.username, "ack_role": principal.role} if (
            action == "ack"
        ) else None
        # The dispatch and its assignee in one transaction: never dispatched to nobody.
        if share:
            detail["shared"] = True
        alert = await self.store.transition(
            alert_id, target, actor=principal.actor, note=note, also=also, values=values,
            shared=share,
        )
        await self.access.audit(principal.actor, "alert_" + action, alert_id, remote, detail)
        log.info("alert %s is %s (by %s)", alert_id, target, principal.username)
        if target == "false_alarm" and alert["type"] in CONFIRMED_TYPES and (
            self.on_false_match is not None
        ):
            self.on_false_match(str(detail.get("list")), alert["device"])
        if self.on_left_open is not None:
            await self.on_left_open(alert_id)
        return await self._changed(principal, alert)

    def _check_confirmation(
        self, principal: Principal, alert: dict[str, Any], action: str, kind: str | None,
        note: str | None,
    ) -> None:
        """Before a person confirms a match only `confirm` and `reject` apply, by the roles
        its policy names; after, those two no longer do."""
        confirmed = alert.get("confirmed")
        if action not in ("confirm", "reject"):
            if not confirmed:
                raise NotNow(alert["id"], alert["state"], action,
                             f"alert {alert['id']} is a watchlist match nobody has confirmed: "
                             "confirm or reject it first")
            return
        if principal.role not in self.responders(alert["type"], kind):
            raise Forbidden(f"a {principal.role} user may not {action} matches of the "
                            f"{kind or 'unnamed'} list; its responders: "
                            f"{', '.join(sorted(self.responders(alert['type'], kind)))}")
        if confirmed:
            raise NotNow(alert["id"], alert["state"], action,
                         f"alert {alert['id']} was confirmed by {confirmed.get('by')}")
        if alert["state"] != "open":
            raise NotNow(alert["id"], alert["state"], action,
                         f"alert {alert['id']} is {alert['state']}; only an open match is "
                         f"confirmed or rejected")
        if action == "reject" and not (note or "").strip():
            raise BadField("note", "a rejection says why it is not the person")

    async def _confirm(
        self, principal: Principal, alert: dict[str, Any], note: str | None,
        detail: dict[str, Any], remote: str | None,
    ) -> dict[str, Any]:
        """The match is the person: recorded once, routed on by the policy's confirmed
        stages; a missing elder's match becomes their case (their family sees it)."""
        now = self.access.clock.now_ms()
        match = alert.get("match") or {}
        person = match.get("person")
        resident = person if (match.get("list") in RESIDENT_LISTS and isinstance(person, str)
                              and alert.get("resident") is None) else None
        changed = await self.store.confirm(
            alert["id"], actor=principal.actor,
            note=f"confirmed: {note}" if note else "confirmed",
            confirmed={"by": principal.username, "role": principal.role, "ms": now},
            resident=resident,
        )
        if changed is None:  # someone else confirmed or closed it meanwhile
            current = await self.store.get_alert(alert["id"])
            raise NotNow(alert["id"], current["state"], "confirm",
                         f"alert {alert['id']} was confirmed or closed meanwhile")
        await self.access.audit(principal.actor, "alert_confirm", alert["id"], remote, detail)
        log.info("alert %s confirmed (by %s)", alert["id"], principal.username)
        if self.on_confirmed is not None:
            await self.on_confirmed(changed)
        return await self._changed(principal, changed)

    async def confirm_flat(
        self, principal: Principal, alert_id: str, body: dict[str, Any], remote: str | None,
    ) -> dict[str, Any]:
        """A thrown object's flat as found after investigation (高空抛物): kept on the alert
        (the latest stands), a line in its timeline, audited. Any state but a false alarm:
        the finding often comes after the alert is resolved."""
        flat = _flat(body)
        alert = await self._visible(principal, alert_id, remote, "confirm_flat")
        if not principal.may("confirm_flat"):
            raise Forbidden(f"a {principal.role} user may not record a confirmed flat")
        if alert["type"] != "thrown_object":
            raise NotNow(alert_id, alert["state"], "confirm_flat",
                         f"only a thrown_object alert has a flat to confirm; alert {alert_id} "
                         f"is {alert['type']}")
        kept = {**flat, "by": principal.username, "ts": self.access.clock.now_ms()}
        line = f"flat {flat['floor']}:{flat['column']}" + (
            f": {flat['note']}" if flat["note"] else "")
        changed = await self.store.note(
            alert_id, actor=principal.actor, note=line,
            states=(*ACTIVE, "resolved"), values={"confirmed_flat": kept},
        )
        if changed is None:
            raise NotNow(alert_id, "false_alarm", "confirm_flat",
                         f"alert {alert_id} is a false alarm: nothing was thrown, no flat to "
                         "confirm")
        await self.access.audit(principal.actor, "alert_confirm_flat", alert_id, remote,
                                {"floor": flat["floor"], "column": flat["column"]})
        log.info("alert %s: flat confirmed (by %s)", alert_id, principal.username)
        return await self._changed(principal, changed)

    async def add_note(
        self, principal: Principal, alert_id: str, body: dict[str, Any], remote: str | None,
    ) -> dict[str, Any]:
        """A line in the timeline without a state change ("到达现场，老人无大碍"), in any
        state (what was done is often written after); `share` shows it to the resident's
        family, who read no other note (docs/access.md). Audited: alert_note."""
        unknown = set(body) - {"note", "share"}
        if unknown:
            raise BadField(sorted(unknown)[0], "unknown field; known: note, share")
        note = body.get("note")
        if not isinstance(note, str) or not note.strip() or len(note) > MAX_NOTE:
            raise BadField("note", f"must be a text of 1 to {MAX_NOTE} characters, not blank")
        share = _share(body, note)
        alert = await self._visible(principal, alert_id, remote, "note")
        if not principal.may("note"):
            raise Forbidden(f"a {principal.role} user may not add notes to alerts")
        if share and not principal.may("share_note"):
            raise Forbidden(f"a {principal.role} user may not share notes with the family")
        if alert["type"] in CONFIRMED_TYPES and not alert.get("confirmed") and (
            alert["state"] == "open"
        ):
            raise NotNow(alert_id, alert["state"], "note",
                         f"alert {alert_id} is a watchlist match nobody has confirmed: "
                         "confirm or reject it first")
        changed = await self.store.note(
            alert["id"], actor=principal.actor, note=note.strip(), states=STATES, shared=share)
        if changed is None:  # states are all states: only a deleted alert gets here
            raise AlertNotFound(alert_id)
        await self.access.audit(principal.actor, "alert_note", alert_id, remote,
                                {"shared": share, "state": changed["state"]})
        log.info("alert %s: a note%s (by %s)", alert_id, " shared with the family" if share
                 else "", principal.username)
        return await self._changed(principal, changed)

    async def _seen(
        self, principal: Principal, alert: dict[str, Any], remote: str | None
    ) -> dict[str, Any]:
        """Someone who is not a responder has seen it: recorded, shown, nothing stops."""
        now = self.access.clock.now_ms()
        changed = await self.store.note(
            alert["id"], actor=principal.actor, note="seen", states=ACTIVE,
            values={"seen_by": principal.username, "seen_ms": now},
        )
        await self.access.audit(principal.actor, "alert_seen", alert["id"], remote)
        log.info("alert %s seen (by %s)", alert["id"], principal.username)
        if changed is not None:
            return await self._changed(principal, changed)
        return principal.view(await self._with_people(await self.store.get_alert(alert["id"])))

    async def _changed(self, principal: Principal, alert: dict[str, Any]) -> dict[str, Any]:
        """An alert this person changed: every board in its scope is told (the detail-only
        fields left out), and the person gets it as their role sees it."""
        full = await self._with_people(alert)
        self.on_change({k: v for k, v in full.items() if k not in DETAIL_ONLY})
        return principal.view(full)

    async def workers(
        self, principal: Principal, alert_id: str, remote: str | None
    ) -> list[dict[str, str]]:
        """Community workers this alert could be dispatched to (for those who may dispatch)."""
        alert = await self._visible(principal, alert_id, remote, "workers")
        if not principal.may("dispatch"):
            raise Forbidden(f"a {principal.role} user may not dispatch alerts")
        return [{"username": w.username, "display_name": w.display_name}
                for w in await self.access.users_for(alert, "worker")]

    async def _worker_for(self, alert: dict[str, Any], name: Any) -> Principal:
        if not isinstance(name, str) or not name:
            raise BadField("worker", "dispatch names a community worker's user name")
        worker = await self.access.user(name)
        if worker is None or worker.role != "worker" or not worker.allows(alert):
            raise BadField("worker", f"no community worker {name!r} covers this alert's grid")
        return worker

    async def _named(self, attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each delivery attempt with `recipient_name`, a `user:` recipient's display name."""
        async with self.store.engine.connect() as conn:
            names = await display_names(conn, {user_of(a["recipient"]) for a in attempts})
        return [{**a, "recipient_name": names.get(user_of(a["recipient"]) or "")}
                for a in attempts]

    async def _with_people(self, alert: dict[str, Any]) -> dict[str, Any]:
        """Add who escalation told (who the alert was dispatched to came with it, by name:
        `Store.get_alert`)."""
        async with self.store.engine.connect() as conn:
            told = (
                await conn.execute(
                    select(notifications.c.stage, users.c.username, users.c.display_name,
                           notifications.c.ts, notifications.c.outcome)
                    .join(users, users.c.id == notifications.c.user_id)
                    .where(notifications.c.alert_id == alert["id"])
                    .order_by(notifications.c.ts, users.c.username)
                )
            ).mappings().all()
        more: dict[str, Any] = {}
        if alert.get("match") is not None:
            # Who may confirm or reject it (the board shows them the buttons).
            kind = variant(alert["type"], alert.get("detail"))
            more["match"] = {**alert["match"],
                             "confirmers": sorted(self.responders(alert["type"], kind))}
        return {
            **alert,
            **more,
            "notifications": [dict(t) for t in told],
            # Each delivery try on each channel, targets redacted, the person by name; the
            # evidence's references.
            "deliveries": await self._named(await alert_attempts(self.store, alert["id"])),
            "evidence": await evidence_for_alert(self.store, alert["id"], alert["site"]),
        }


# Lists whose people are the community's residents: a confirmed match is that resident's case.
RESIDENT_LISTS = frozenset({"missing_elder"})


def _flat(body: dict[str, Any]) -> dict[str, Any]:
    """`{"floor", "column", "note"?}` checked, or BadField naming the first wrong one."""
    out: dict[str, Any] = {}
    for name, (low, high) in FLAT_LIMITS.items():
        value = body.get(name)
        if type(value) is not int or not low <= value <= high:
            raise BadField(name, f"must be a whole number from {low} to {high}, got "
                           f"{'nothing' if value is None else repr(value)[:40]}")
        out[name] = value
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        raise BadField("note", f"must be a string of at most {MAX_NOTE} characters")
    out["note"] = (note.strip() or None) if isinstance(note, str) else None
    unknown = set(body) - {"floor", "column", "note"}
    if unknown:
        raise BadField(sorted(unknown)[0], "unknown field; known: floor, column, note")
    return out


def _share(body: dict[str, Any], note: Any) -> bool:
    """`share` checked: a boolean, and true only with a note to share."""
    share = body.get("share", False)
    if not isinstance(share, bool):
        raise BadField("share", f"must be true or false, got {repr(share)[:40]}")
    if share and not (isinstance(note, str) and note.strip()):
        raise BadField("share", "there is no note to share: write one")
    return share


def _default_responders(alert_type: str, variant: str | None = None) -> frozenset[str]:
    return frozenset(DEFAULT_RESPONDERS)
