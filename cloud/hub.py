"""WebSocket fan-out: every connected dashboard gets each new or changed alert.

A client first receives a snapshot of recent alerts, then live changes. It is registered for
live changes before the snapshot is read, so nothing stored in between is missed; changes
already contained in the snapshot are not sent twice.

Each client sees only the alerts in its user's scope, in its role's view (`Principal`): the
snapshot is read with the user's SQL filter and every live message is checked per client.

Changes made by other cloud workers arrive through `ChangeFeed` (cloud/feed.py), which reads
the database. Every change goes through `broadcast` once per process whichever way it came:
`broadcast` remembers the last versions (id, version) it sent and drops a second copy. The
version counts every change of an alert, not only its state: an escalation from high to
critical, a repeated press or a family member's "seen" reaches every open board.

Each client has a bounded queue; a client too slow to keep up is disconnected (close code
1013, "try again later") so it reconnects and reloads the list, instead of slowing everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import WSCloseCode, web

from cloud.access.scope import Principal

log = logging.getLogger(__name__)
CLIENT_QUEUE = 1000
REMEMBERED = 10_000  # versions kept to drop the second copy (local and from the feed)


Snapshot = Callable[[Principal], Awaitable[list[dict[str, Any]]]]
Version = tuple[str, int]  # (alert id, version): one change of one alert
Queue = asyncio.Queue[tuple[Version, str]]
Recheck = Callable[[str], Awaitable[bool]]
# Request keys the access middleware sets (cloud/access/http.py).
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
SESSION_TOKEN: web.RequestKey[str] = web.RequestKey("session_token", str)
SESSION_ENDED = 4401  # close code: log in again (a private-use code, 4000-4999)


class Hub:
    def __init__(
        self, snapshot: Snapshot | None = None, recheck: Recheck | None = None,
        recheck_s: float = 30.0,
    ) -> None:
        self._clients: dict[web.WebSocketResponse, tuple[Principal, Queue]] = {}
        self._snapshot = snapshot
        self._recheck = recheck
        self._recheck_s = recheck_s
        self._sent: OrderedDict[Version, None] = OrderedDict()
        # Screens that asked for device changes too (`/api/ws?devices=1`, the dashboard):
        # other clients of the stream get alerts only, as they always have.
        self._device_clients: set[web.WebSocketResponse] = set()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def broadcast(self, message: dict[str, Any]) -> None:
        """`message` is {"type": "alert" | "alert_updated", "alert": {...}}."""
        alert = message["alert"]
        # Tagged with its version so a client can skip what its snapshot already holds.
        key = _version(alert)
        if key in self._sent:
            return
        self._sent[key] = None
        if len(self._sent) > REMEMBERED:
            self._sent.popitem(last=False)
        by_role: dict[str, str] = {}  # a view depends on the role only: encode it once per role
        for ws, (principal, queue) in list(self._clients.items()):
            if not principal.allows(alert):
                continue
            data = by_role.get(principal.role)
            if data is None:
                view = {**message, "alert": principal.view(alert)}
                data = by_role[principal.role] = orjson.dumps(view).decode()
            self._put(ws, queue, key, data)

    def broadcast_device(self, device: dict[str, Any]) -> None:
        """A device's liveness changed: tell the screens whose scope holds it (its place or
        its resident, as for alerts). No personal data: ids, place and states only."""
        message = orjson.dumps({"type": "device", "device": {
            k: device.get(k) for k in ("site", "id", "location", "transport", "data", "health",
                                       "battery", "changed_ms")}}).decode()
        key: Version = (f"device:{device.get('site')}/{device.get('id')}",
                        int(device.get("changed_ms") or 0))
        for ws, (principal, queue) in list(self._clients.items()):
            if ws not in self._device_clients or not principal.allows(device):
                continue
            self._put(ws, queue, key, message)

    def _put(self, ws: web.WebSocketResponse, queue: Queue, key: Version, data: str) -> None:
        try:
            queue.put_nowait((key, data))
        except asyncio.QueueFull:
            log.warning("websocket client too slow; disconnecting it")
            self._clients.pop(ws, None)
            asyncio.get_running_loop().create_task(
                ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
            )

    async def serve(self, request: web.Request) -> web.StreamResponse:
        principal: Principal = request[PRINCIPAL]
        ws = web.WebSocketResponse(heartbeat=20)
        if not ws.can_prepare(request).ok:
            return web.json_response({"error": "not a WebSocket upgrade"}, status=400)
        await ws.prepare(request)
        queue: Queue = asyncio.Queue(CLIENT_QUEUE)
        self._clients[ws] = (principal, queue)
        if request.query.get("devices") == "1":
            self._device_clients.add(ws)
        tasks = [asyncio.create_task(self._send(ws, principal, queue))]
        token = request.get(SESSION_TOKEN)
        if self._recheck is not None and token:
            tasks.append(asyncio.create_task(self._watch(ws, token, principal)))
        try:
            async for _ in ws:  # clients only listen; reading keeps the close handshake working
                pass
        finally:
            self._clients.pop(ws, None)
            self._device_clients.discard(ws)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return ws

    async def _send(self, ws: web.WebSocketResponse, principal: Principal, queue: Queue) -> None:
        with contextlib.suppress(ConnectionError):
            seen: set[Version] = set()
            if self._snapshot is not None:
                alerts = [principal.view(a) for a in await self._snapshot(principal)]
                seen = {_version(a) for a in alerts}
                await ws.send_str(orjson.dumps({"type": "snapshot", "alerts": alerts}).decode())
            while True:
                key, data = await queue.get()
                if key in seen:
                    seen.discard(key)
                    continue
                await ws.send_str(data)

    async def _watch(self, ws: web.WebSocketResponse, token: str, principal: Principal) -> None:
        """Close the stream when its session ends (logout, expiry, account disabled)."""
        assert self._recheck is not None
        while True:
            await asyncio.sleep(self._recheck_s)
            try:
                valid = await self._recheck(token)
            except Exception:  # the database is away: keep streaming, check again later
                log.warning("websocket session check failed; keeping the stream", exc_info=True)
                continue
            if not valid:
                log.info("websocket of user %s closed: session ended", principal.username)
                self._clients.pop(ws, None)
                await ws.close(code=SESSION_ENDED, message=b"session ended")
                return

    async def close(self) -> None:
        for ws in list(self._clients):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
        self._clients.clear()


def _version(alert: dict[str, Any]) -> Version:
    return (alert["id"], int(alert.get("version") or 0))
