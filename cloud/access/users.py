"""Accounts, logins and sessions over the shared SQL store."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import RowMapping, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.access import audit
from cloud.access.config import AccessConfig
from cloud.access.passwords import dummy_verify, hash_password, verify_password
from cloud.access.scope import ROLES, Principal, check_location_prefix
from cloud.access.tables import sessions, user_scopes, users
from cloud.access.throttle import LoginThrottle, Wait
from shouwang.clock import Clock

log = logging.getLogger(__name__)
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
MIN_PASSWORD = 10
BAD_LOGIN = "wrong user name or password"


class UserError(ValueError):
    """An account request that cannot be done; the message names the field."""


class LoginRefused(Exception):
    def __init__(self, reason: str, *, throttled: bool = False, retry_after_s: int = 0) -> None:
        super().__init__(reason)
        self.throttled = throttled
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Session:
    token: str
    principal: Principal
    expires_ms: int


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Access:
    def __init__(self, engine: AsyncEngine, clock: Clock, config: AccessConfig) -> None:
        self.engine = engine
        self.clock = clock
        self.config = config
        self.throttle = LoginThrottle(engine, clock, config)

    # --- accounts ------------------------------------------------------------------------

    async def add_user(
        self, username: str, password: str, role: str, *, display_name: str | None = None,
        locations: Iterable[str] = (), residents: Iterable[str] = (), actor: str = "cli",
    ) -> Principal:
        locations, residents = tuple(locations), tuple(residents)
        _check_account(username, password, role, locations, residents)
        password_hash = await asyncio.to_thread(hash_password, password)
        now = self.clock.now_ms()
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    users.insert().values(
                        username=username, password_hash=password_hash, role=role,
                        display_name=display_name or username, disabled=False, created_ms=now,
                    )
                )
                user_id = int(result.inserted_primary_key[0])  # type: ignore[index]
                rows = [{"user_id": user_id, "kind": "location", "value": v} for v in locations]
                rows += [{"user_id": user_id, "kind": "resident", "value": v} for v in residents]
                if rows:
                    await conn.execute(user_scopes.insert(), rows)
                await audit.record(
                    conn, ts=now, actor=actor, action="user_added", target=username,
                    detail={"role": role, "locations": list(locations),
                            "residents": list(residents)},
                )
        except IntegrityError as err:
            raise UserError(f"username: {username!r} already exists") from err
        log.info("user %s added with role %s", username, role)
        return Principal(user_id, username, role, display_name or username, locations, residents)

    async def set_password(self, username: str, password: str, *, actor: str = "cli") -> None:
        if len(password) < MIN_PASSWORD:
            raise UserError(f"password: at least {MIN_PASSWORD} characters")
        password_hash = await asyncio.to_thread(hash_password, password)
        await self._change(username, {"password_hash": password_hash}, "password_changed", actor)

    async def set_display_name(self, username: str, name: str, *, actor: str = "cli") -> None:
        """The name the screens show for this user ("李华"); sessions go on (nothing about
        what the user may do changed). Audited: display_name_changed."""
        name = name.strip()
        if not name or len(name) > 128:
            raise UserError("display-name: 1 to 128 characters, not blank")
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(users).where(users.c.username == username).values(display_name=name))
            if result.rowcount != 1:
                raise UserError(f"username: no user {username!r}")
            await audit.record(conn, ts=self.clock.now_ms(), actor=actor,
                               action="display_name_changed", target=username)
        log.info("user %s: display name changed", username)

    async def set_disabled(self, username: str, disabled: bool, *, actor: str = "cli") -> None:
        action = "user_disabled" if disabled else "user_enabled"
        await self._change(username, {"disabled": disabled}, action, actor)

    async def _change(self, username: str, values: dict[str, Any], action: str, actor: str) -> None:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(users).where(users.c.username == username).values(**values)
            )
            if result.rowcount != 1:
                raise UserError(f"username: no user {username!r}")
            user_id = (
                await conn.execute(select(users.c.id).where(users.c.username == username))
            ).scalar_one()
            # A new password or a disabled account ends every open session of that user.
            await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
            await audit.record(
                conn, ts=self.clock.now_ms(), actor=actor, action=action, target=username
            )
        log.info("user %s: %s", username, action)

    async def list_users(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(users).order_by(users.c.username))).mappings().all()
            out = []
            for row in rows:
                p = await _principal(conn, row)
                out.append({
                    "username": p.username, "role": p.role, "display_name": p.display_name,
                    "disabled": bool(row["disabled"]), "locations": list(p.locations),
                    "residents": list(p.residents),
                })
        return out

    async def user(self, username: str) -> Principal | None:
        """An enabled user by name."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(users).where(users.c.username == username, users.c.disabled.is_(False))
                )
            ).mappings().first()
            return None if row is None else await _principal(conn, row)

    async def users_for(self, alert: Mapping[str, Any], role: str) -> list[Principal]:
        """Enabled users of `role` who have `alert` in scope (accounts number in the hundreds)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(users)
                    .where(users.c.role == role, users.c.disabled.is_(False))
                    .order_by(users.c.id)
                )
            ).mappings().all()
            found = [await _principal(conn, row) for row in rows]
        return [p for p in found if p.allows(alert)]

    # --- sessions ------------------------------------------------------------------------

    async def login(self, username: str, password: str, remote: str | None) -> Session:
        """`remote`: the client's address (behind trusted proxies, the one they forwarded)."""
        async with self.engine.connect() as conn:  # most refusals end here, claiming nothing
            wait = await self.throttle.check(conn, username, remote)
        if wait is None:
            async with self.throttle.turn(username) as mine:
                if mine:
                    return await self._login_claimed(username, password, remote)
            wait = Wait(1, "busy")
        await self._throttled(username, remote, wait)

    async def _throttled(self, username: str, remote: str | None, wait: Wait) -> NoReturn:
        async with self.engine.begin() as conn:
            await audit.record(
                conn, ts=self.clock.now_ms(), actor=f"login:{username[:64]}",
                action="login_throttled", target=username[:256], remote=remote,
                detail={"by": wait.reason, "retry_after_s": wait.seconds},
            )
        # Raised after the commit, so the refusal stays in the audit log.
        raise LoginRefused("too many failed logins; try again later", throttled=True,
                           retry_after_s=wait.seconds)

    async def _login_claimed(self, username: str, password: str, remote: str | None) -> Session:
        """The password check, while this login holds the user name's claim."""
        now = self.clock.now_ms()
        async with self.engine.connect() as conn:  # again: a failure may have landed meanwhile
            wait = await self.throttle.check(conn, username, remote)
            row = (
                await conn.execute(select(users).where(users.c.username == username))
            ).mappings().first()
        if wait is not None:
            await self._throttled(username, remote, wait)
        if row is None:
            await asyncio.to_thread(dummy_verify, password)
            ok = False
        else:
            ok = await asyncio.to_thread(verify_password, password, row["password_hash"])
            ok = ok and not row["disabled"]
        if not ok or row is None:
            async with self.engine.begin() as conn:
                await audit.record(
                    conn, ts=self.clock.now_ms(), actor=f"login:{username[:64]}",
                    action="login_failed", target=username[:256], remote=remote,
                )
            raise LoginRefused(BAD_LOGIN)
        async with self.engine.begin() as conn:
            token = secrets.token_urlsafe(32)
            expires = now + self.config.session_ttl_s * 1000
            await conn.execute(
                sessions.insert().values(
                    token_hash=_token_hash(token), user_id=row["id"], created_ms=now,
                    expires_ms=expires,
                )
            )
            await audit.record(
                conn, ts=now, actor=f"user:{username}", action="login_succeeded",
                target=username, remote=remote,
            )
            principal = await _principal(conn, row)
        return Session(token, principal, expires)

    async def authenticate(self, token: str) -> Principal | None:
        now = self.clock.now_ms()
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(users)
                    .join(sessions, sessions.c.user_id == users.c.id)
                    .where(
                        sessions.c.token_hash == _token_hash(token),
                        sessions.c.expires_ms > now,
                        users.c.disabled.is_(False),
                    )
                )
            ).mappings().first()
            return None if row is None else await _principal(conn, row)

    async def logout(self, token: str, principal: Principal, remote: str | None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(sessions).where(sessions.c.token_hash == _token_hash(token)))
            await audit.record(
                conn, ts=self.clock.now_ms(), actor=principal.actor, action="logout",
                target=principal.username, remote=remote,
            )

    async def audit(self, actor: str, action: str, target: str | None = None,
                    remote: str | None = None, detail: dict[str, Any] | None = None) -> None:
        async with self.engine.begin() as conn:
            await audit.record(conn, ts=self.clock.now_ms(), actor=actor, action=action,
                               target=target, remote=remote, detail=detail)


async def _principal(conn: AsyncConnection, row: RowMapping) -> Principal:
    scopes = (
        await conn.execute(
            select(user_scopes.c.kind, user_scopes.c.value)
            .where(user_scopes.c.user_id == row["id"])
            .order_by(user_scopes.c.value)
        )
    ).all()
    return Principal(
        user_id=int(row["id"]), username=row["username"], role=row["role"],
        display_name=row["display_name"],
        locations=tuple(v for k, v in scopes if k == "location"),
        residents=tuple(v for k, v in scopes if k == "resident"),
    )


def _check_account(
    username: str, password: str, role: str, locations: tuple[str, ...],
    residents: tuple[str, ...],
) -> None:
    if not USERNAME.match(username):
        raise UserError(
            "username: 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        )
    if role not in ROLES:
        raise UserError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters")
    if role in ("police", "worker"):
        if residents or not locations:
            raise UserError(f"scope: a {role} user needs location prefixes and no residents")
        for prefix in locations:
            problem = check_location_prefix(prefix, role)
            if problem:
                raise UserError(f"scope: {problem}")
    elif role == "family":
        if locations or not residents:
            raise UserError("scope: a family user needs resident ids and no locations")
    elif locations or residents:
        raise UserError("scope: an admin sees everything and takes no scope")
