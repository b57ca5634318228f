"""WebSocket fan-out: every connected dashboard gets each new or changed alert.

Each client has a bounded queue; a client too slow to keep up is disconnected (close code
1013, "try again later") so it reconnects and reloads the list, instead of slowing everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from aiohttp import WSCloseCode, web

log = logging.getLogger(__name__)
CLIENT_QUEUE = 1000


class Hub:
    def __init__(self) -> None:
        self._clients: dict[web.WebSocketResponse, asyncio.Queue[str]] = {}

    @property
    def clients(self) -> int:
        return len(self._clients)

    def broadcast(self, message: dict[str, Any]) -> None:
        data = orjson.dumps(message).decode()
        for ws, queue in list(self._clients.items()):
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:
                log.warning("websocket client too slow; disconnecting it")
                self._clients.pop(ws, None)
                asyncio.get_running_loop().create_task(
                    ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
                )

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        queue: asyncio.Queue[str] = asyncio.Queue(CLIENT_QUEUE)
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

    async def _send(self, ws: web.WebSocketResponse, queue: asyncio.Queue[str]) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await ws.send_str(await queue.get())

    async def close(self) -> None:
        for ws in list(self._clients):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
        self._clients.clear()
