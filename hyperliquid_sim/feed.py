"""The simulator's price feed: where trades come from and what each one pushes.

Owns: the seeded random walk, the replay of a recorded JSONL trade stream (its loading, pacing
and pausing), printing a trade (the engine moves the price and fills what crossed; then trades,
bbo, allMids and candle pushes, and the fills and order updates of the users it touched), pause
and resume, and how often l2Book rounds run.
Must not: decide what a trade fills (engine.py does), keep connections or subscriptions (ws.py
does; the feed only asks it to send), or answer requests.
"""
from __future__ import annotations

import asyncio
import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any, Coroutine

from . import wire
from .engine import ReplayTrade, parse_replay
from .state import SimConfig, SimState, now_ms
from .ws import WebSocketEndpoint

log = logging.getLogger("sim")


class PriceFeed:
    def __init__(self, config: SimConfig, state: SimState, ws: WebSocketEndpoint) -> None:
        self._config = config
        self._state = state
        self._ws = ws
        self._on = asyncio.Event()  # cleared by pause; the random walk and the replay wait on it
        if config.feed:
            self._on.set()
        self._replay: list[ReplayTrade] = []

    def load_replay(self, path: Path) -> dict[str, Decimal]:
        """Read the recording (ValueError/OSError if bad); returns each coin's first price."""
        with path.open(encoding="utf-8") as f:
            self._replay = parse_replay(f, self._config.coins)
        first: dict[str, Decimal] = {}
        for trade in self._replay:
            first.setdefault(trade.coin, trade.px)
        log.info("replaying %d trades from %s at %gx", len(self._replay), path, self._config.replay_speed)
        return first

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        """The feed's tasks: the trades (a replay if one was loaded, else the walk) and l2Book rounds."""
        return [self._replay_trades() if self._replay else self._walk(), self._push_books()]

    def pause(self) -> None:
        self._on.clear()

    def resume(self) -> None:
        self._on.set()

    async def _walk(self) -> None:
        while True:
            rate = self._config.trade_rate_hz
            await asyncio.sleep(1.0 / rate if rate > 0 else 0.5)
            await self._on.wait()
            if rate > 0:
                engine = self._state.engine
                coin = engine.rng.choice(engine.names)
                await self.print_trade(coin, engine.walk(coin))

    async def _replay_trades(self) -> None:
        """Print the recording in order, keeping its spacing (divided by replay_speed).

        Trades are stamped with the current time, not the recorded one: clients judge staleness
        and build live candles from trade times. A pause shifts the rest of the timeline."""
        loop = asyncio.get_running_loop()
        speed = self._config.replay_speed if self._config.replay_speed > 0 else 1.0
        origin_ms, started = self._replay[0].time_ms, loop.time()
        for trade in self._replay:
            delay = started + (trade.time_ms - origin_ms) / 1000 / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self._on.is_set():
                paused_at = loop.time()
                await self._on.wait()
                started += loop.time() - paused_at
            await self.print_trade(trade.coin, trade.px, trade.size, trade.side)
            self._state.stats["replayed_trades"] += 1
        log.info("replay finished after %d trades; prices stay where it ended", len(self._replay))

    async def _push_books(self) -> None:
        """l2Book is a full snapshot each time, at most every book_interval_s, only on a change."""
        while True:
            await asyncio.sleep(self._config.book_interval_s)
            await self._ws.push_books()

    async def print_trade(self, coin: str, px: Decimal, size: Decimal | None = None, side: str | None = None) -> int:
        """One trade at px and everything it pushes; returns its tid."""
        engine = self._state.engine
        trade, touched = engine.print_trade(coin, px, now_ms(), size, side)
        await self._ws.broadcast({"type": "trades", "coin": coin},
                                 json.dumps({"channel": "trades", "data": [trade]}))
        await self._ws.push_bbo(coin, int(trade["time"]))
        await self._ws.broadcast({"type": "allMids"},
                                 json.dumps({"channel": "allMids", "data": {"mids": wire.mids(engine)}}))
        for sub in self._ws.subscribed("candle", coin).values():
            candle = engine.history.latest_candle(coin, wire.INTERVALS_MS[sub["interval"]])
            if candle is not None:
                await self._ws.broadcast(sub, json.dumps({"channel": "candle", "data": candle.wire(sub["interval"])}))
        for user, fills, updates in touched:
            await self._ws.user_events(user, fills, updates)
        return int(trade["tid"])
