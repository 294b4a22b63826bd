"""The simulator's network face: one aiohttp application on one loopback port, in its own thread.

Owns: `SimServer`, the composition: it builds the shared state (state.py) and the parts, routes
`POST /info` (info.py), `POST /exchange` (exchange.py), WebSocket `/ws` (ws.py) and `POST /control`
(control.py), loads a replay before listening, runs the feed's tasks (feed.py) and the idle close
on its own event loop thread, starts and stops all of it, and offers every control op as a
thread-safe method of the same name.
Must not: answer a request, make a price or hold an exchange rule itself: the parts do, one
concern each. The `/control` part answers loopback callers only.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any, Coroutine, Iterable

from aiohttp import web

from .control import ControlOps
from .engine import Engine
from .exchange import EXPIRED_ERROR, ExchangeEndpoint
from .feed import PriceFeed
from .info import InfoEndpoint
from .state import SimConfig, SimState, make_engine
from .wire import DESERIALIZE_ERROR
from .ws import Connection, WebSocketEndpoint

# the error texts are imported from here by callers that predate the split into parts
__all__ = ["DESERIALIZE_ERROR", "EXPIRED_ERROR", "SimConfig", "SimServer"]

log = logging.getLogger("sim")


class SimServer:
    """Start with `start()` (returns once listening); `stop()` closes everything; context manager."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.is_mainnet = self.config.chain == "mainnet"
        self.loop = asyncio.new_event_loop()
        self.port = self.config.port
        self._state = SimState(make_engine(self.config, {}))
        self._ws = WebSocketEndpoint(self.config, self._state)
        self._feed = PriceFeed(self.config, self._state, self._ws)
        self._info = InfoEndpoint(self._state)
        self._exchange = ExchangeEndpoint(self._state, self._ws, self.is_mainnet)
        self._control = ControlOps(self._state, self._feed, self._ws)
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def engine(self) -> Engine:
        """The exchange model; call into it only on the loop thread or while the server is stopped."""
        return self._state.engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        self._state.engine = engine

    @property
    def conns(self) -> set[Connection]:
        return self._ws.conns

    # ---- lifecycle ----

    @property
    def rest_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}/ws"

    def __enter__(self) -> "SimServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Raises ValueError/OSError for an unreadable or malformed replay file, before listening."""
        if self.config.replay_path:
            paths = self.config.replay_path
            first_prices = self._feed.load_replay([Path(p) for p in ((paths,) if isinstance(paths, str) else paths)])
            self._state.engine = make_engine(self.config, first_prices)
        self._thread = threading.Thread(target=self.loop.run_forever, name="hl-sim", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        log.info("simulator listening on %s (chain %s)", self.rest_url, self.config.chain)

    async def _start(self) -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/info", self._info.handle)
        app.router.add_post("/exchange", self._exchange.handle)
        app.router.add_get("/ws", self._ws.handle)
        app.router.add_post("/control", self._control.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._tasks = [asyncio.ensure_future(c) for c in [*self._feed.loops(), self._ws.reap_idle()]]

    def stop(self) -> None:
        if self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(2)
            self._thread = None

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self._ws.close_all()
        if self._runner is not None:
            await self._runner.cleanup()

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(600)

    # ---- thread-safe control methods (same names and arguments as the /control ops) ----

    def set_price(self, coin: str, px: Any) -> dict[str, Any]:
        return self._run(self._control.op_set_price(coin, px))

    def move_price(self, coin: str, path: Iterable[Any], interval_s: float = 0.05) -> dict[str, Any]:
        return self._run(self._control.op_move_price(coin, list(path), interval_s))

    def emit_trades(self, coin: str | list[str], count: int, rate_hz: float | None = None, px: Any = None,
                    delay_s: float = 0.0) -> dict[str, Any]:
        return self._run(self._control.op_emit_trades(coin, count, rate_hz, px, delay_s))

    def emitted(self, tids: list[int]) -> dict[str, Any]:
        return self._run(self._control.op_emitted(tids))

    def pause_feed(self) -> dict[str, Any]:
        return self._run(self._control.op_pause_feed())

    def resume_feed(self) -> dict[str, Any]:
        return self._run(self._control.op_resume_feed())

    def drop_connections(self) -> dict[str, Any]:
        return self._run(self._control.op_drop_connections())

    def silence(self, seconds: float | None = None) -> dict[str, Any]:
        return self._run(self._control.op_silence(seconds))

    def unsilence(self) -> dict[str, Any]:
        return self._run(self._control.op_unsilence())

    def refuse_connections(self, seconds: float) -> dict[str, Any]:
        return self._run(self._control.op_refuse_connections(seconds))

    def send_malformed(self, count: int = 1) -> dict[str, Any]:
        return self._run(self._control.op_send_malformed(count))

    def info_429(self, seconds: float) -> dict[str, Any]:
        return self._run(self._control.op_info_429(seconds))

    def create_vault(self, leader: str) -> dict[str, Any]:
        return self._run(self._control.op_create_vault(leader))

    def pay_funding(self, coin: str, rate: Any) -> dict[str, Any]:
        """ValueError for an unknown coin or a rate that is no finite number."""
        return self._run(self._control.op_pay_funding(coin, rate))

    def exchange_log(self) -> list[dict[str, Any]]:
        return self._run(self._control.op_exchange_log())

    def account(self, address: str) -> dict[str, Any]:
        return self._run(self._control.op_account(address))

    def stats(self) -> dict[str, Any]:
        return self._run(self._control.op_stats())
