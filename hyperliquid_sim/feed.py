"""The simulator's price feed: where trades come from and what each one pushes.

Owns: the seeded random walk, the replay of a recorded JSONL trade stream or of the bot's
recorded frames (its loading, pacing and pausing), printing a trade (the engine moves the price and fills what crossed; then trades,
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
from typing import Any, Coroutine, Iterable, Sequence

from recording import is_frames_file, read_frames
from stream_events import Trade, parse_frame

from . import wire
from .engine import ReplayTrade, parse_replay
from .state import SimConfig, SimState, now_ms
from .ws import WebSocketEndpoint

log = logging.getLogger("sim")


def replay_from_frames(paths: Sequence[Path], coins: Iterable[str]) -> list[ReplayTrade]:
    """The live trades of recorded frame files (recording.py format) as a replay: parsed with the
    bot's own `parse_frame`, the server's replay of recent trades after each subscription left
    out (history, already printed or older than the recording), each trade once (by coin and tid),
    in time order. A coin the simulator does not list is a ValueError naming it."""
    known = set(coins)
    seen: set[tuple[str, int]] = set()
    snapshot_next: set[str] = set()
    out: list[ReplayTrade] = []
    for t_ns, raw in read_frames(paths):
        parsed = parse_frame(raw, t_ns)
        sub = (parsed.ack or {}).get("subscription")
        if isinstance(sub, dict) and sub.get("type") == "trades":
            snapshot_next.add(str(sub.get("coin")))
        trades = [e for e in parsed.events if type(e) is Trade]
        if not trades:
            continue
        if trades[0].coin in snapshot_next:
            snapshot_next.discard(trades[0].coin)
            continue
        for t in trades:
            if t.coin not in known:
                raise ValueError(f"replay: coin {t.coin} is not one of {sorted(known)}")
            if (t.coin, t.tid) not in seen:
                seen.add((t.coin, t.tid))
                out.append(ReplayTrade(t.coin, t.price, t.size, "B" if t.side == "buy" else "A", t.time_ms))
    if not out:
        raise ValueError("replay: no trades in the recorded frames")
    out.sort(key=lambda trade: trade.time_ms)  # stable: the recorded order within a millisecond
    return out


class PriceFeed:
    def __init__(self, config: SimConfig, state: SimState, ws: WebSocketEndpoint) -> None:
        self._config = config
        self._state = state
        self._ws = ws
        self._on = asyncio.Event()  # cleared by pause; the random walk and the replay wait on it
        if config.feed:
            self._on.set()
        self._replay: list[ReplayTrade] = []

    def load_replay(self, paths: Sequence[Path]) -> dict[str, Decimal]:
        """Read the recording (ValueError/OSError if bad): a JSONL of trades, or the bot's recorded
        frames (`record.dir` files, detected by their content); returns each coin's first price."""
        if all(is_frames_file(p) for p in paths):
            self._replay = replay_from_frames(paths, self._config.coins)
        elif len(paths) == 1:
            with paths[0].open(encoding="utf-8") as f:
                self._replay = parse_replay(f, self._config.coins)
        else:
            raise ValueError("replay: several files must all be recorded frames (frames-*.jsonl.gz)")
        first: dict[str, Decimal] = {}
        for trade in self._replay:
            first.setdefault(trade.coin, trade.px)
        log.info("replaying %d trades from %s at %gx", len(self._replay), ", ".join(map(str, paths)),
                 self._config.replay_speed)
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
