"""A small Hyperliquid-shaped WebSocket server on 127.0.0.1 (aiohttp), for client fault tests and
bench/ws_frames.py.

It acks subscriptions, answers pings, pushes frames on demand, and can drop every connection,
go silent (no data, no pong), refuse upgrades with 503, or withhold acks; with an SSL context it
serves wss://.
"""
from __future__ import annotations

import asyncio
import json
import ssl
import threading
from typing import Any

from aiohttp import WSMsgType, web


class FakeExchange:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context  # set: wss:// with this server certificate
        self.loop = asyncio.new_event_loop()
        self.clients: set[web.WebSocketResponse] = set()
        self.silent = False
        self.refuse = False
        self.ack = True
        self.no_ack_types: set[str] = set()  # subscription types never acknowledged (refused for good)
        self.connections = 0
        self.subscribes: list[dict[str, Any]] = []
        self.pings = 0
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-exchange", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'wss' if self.ssl_context else 'ws'}://127.0.0.1:{self.port}/ws"

    def start(self) -> "FakeExchange":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self.refuse:
            return web.Response(status=503, text="unavailable")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        self.clients.add(ws)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT or self.silent:
                    continue
                body = json.loads(msg.data)
                if body.get("method") == "ping":
                    self.pings += 1
                    await ws.send_str('{"channel":"pong"}')
                elif body.get("method") == "subscribe":
                    self.subscribes.append(body["subscription"])
                    if self.ack and body["subscription"].get("type") not in self.no_ack_types:
                        await ws.send_str(json.dumps({"channel": "subscriptionResponse", "data": body}))
        finally:
            self.clients.discard(ws)
        return ws

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def send(self, text: str | bytes) -> None:
        async def go() -> None:
            for ws in list(self.clients):
                if isinstance(text, bytes):
                    await ws.send_bytes(text)
                else:
                    await ws.send_str(text)
        self._call(go())

    def trade(self, px: str, tid: int, coin: str = "BTC") -> None:
        self.send(json.dumps({"channel": "trades", "data": [{"coin": coin, "side": "B", "px": px, "sz": "0.1",
                                                             "hash": "0x0", "time": 1, "tid": tid}]}))

    def drop(self) -> None:
        async def go() -> None:
            for ws in list(self.clients):
                transport = ws._req.transport if ws._req else None  # type: ignore[attr-defined]
                if transport is not None:
                    transport.abort()  # abrupt: no close frame
        self._call(go())

    def stop(self) -> None:
        async def go() -> None:
            for ws in list(self.clients):
                await ws.close()
            if self._runner is not None:
                await self._runner.cleanup()
        self._call(go())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
