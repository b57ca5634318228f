"""WebSocket fan-out: every connected dashboard gets each new or changed alert.

A client first receives a snapshot of recent alerts, then live changes. It is registered for
live changes before the snapshot is read, so nothing stored in between is missed; changes
already contained in the snapshot are not sent twice.

Each client has a bounded queue; a client too slow to keep up is disconnected (close code
1013, "try again later") so it reconnects and reloads the list, instead of slowing everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import WSCloseCode, web

log = logging.getLogger(__name__)
CLIENT_QUEUE = 1000


Snapshot = Callable[[], Awaitable[list[dict[str, Any]]]]


class Hub:
    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self._clients: dict[web.WebSocketResponse, asyncio.Queue[tuple[tuple[str, str], str]]] = {}
        self._snapshot = snapshot

    @property
    def clients(self) -> int:
        return len(self._clients)

    def broadcast(self, message: dict[str, Any]) -> None:
        """`message` is {"type": "alert" | "alert_updated", "alert": {...}}."""
        alert = message["alert"]
        # Tagged with its version so a client can skip what its snapshot already holds.
        key = (alert["id"], alert["state"])
        data = orjson.dumps(message).decode()
        for ws, queue in list(self._clients.items()):
            try:
                queue.put_nowait((key, data))
            except asyncio.QueueFull:
                log.warning("websocket client too slow; disconnecting it")
                self._clients.pop(ws, None)
                asyncio.get_running_loop().create_task(
                    ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
                )

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        queue: asyncio.Queue[tuple[tuple[str, str], str]] = asyncio.Queue(CLIENT_QUEUE)
        self._clients[ws] = queue
        sender = asyncio.create_task(self._send(ws, queue))
        try:
            async for _ in ws:  # clients only listen; reading keeps the close handshake working
                pass
        finally:
            self._clients.pop(ws, None)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return ws

    async def _send(
        self, ws: web.WebSocketResponse, queue: asyncio.Queue[tuple[tuple[str, str], str]]
    ) -> None:
        with contextlib.suppress(ConnectionError):
            seen: set[tuple[str, str]] = set()
            if self._snapshot is not None:
                alerts = await self._snapshot()
                seen = {(a["id"], a["state"]) for a in alerts}
                await ws.send_str(orjson.dumps({"type": "snapshot", "alerts": alerts}).decode())
            while True:
                key, data = await queue.get()
                if key in seen:
                    seen.discard(key)
                    continue
                await ws.send_str(data)

    async def close(self) -> None:
        for ws in list(self._clients):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
        self._clients.clear()
