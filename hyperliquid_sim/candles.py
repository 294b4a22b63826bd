"""The simulator's trade history and the candles built from it (pure, synchronous; no sockets).

Owns: the prints per coin (a seeded backfill, then every trade), `Candle` (one OHLCV bucket and
its wire shape), the live candle per (coin, interval) from the first time someone asks for it,
and candle queries over a time range.
Must not: move prices or fill orders (engine.py does), read the clock (times are arguments), or
know about sockets.
"""
from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable

from signing import round_price

Row = tuple[int, Decimal, Decimal]  # one print: (time_ms, px, size)
MAX_ROWS = 200_000  # per coin; past it the oldest 100,000 go
BACKFILL_STEP_MS = 10_000  # the seeded past has one print every 10 s


@dataclass
class Candle:
    """One OHLCV bucket `[start_ms, start_ms + interval_ms)`; prints update it in place."""
    coin: str
    interval_ms: int
    start_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int

    @classmethod
    def from_rows(cls, coin: str, interval_ms: int, start_ms: int, rows: list[Row]) -> "Candle":
        pxs = [px for _, px, _ in rows]
        return cls(coin, interval_ms, start_ms, pxs[0], max(pxs), min(pxs), pxs[-1],
                   sum((sz for _, _, sz in rows), Decimal(0)), len(rows))

    def add(self, px: Decimal, size: Decimal) -> None:
        self.high, self.low, self.close = max(self.high, px), min(self.low, px), px
        self.volume += size
        self.trades += 1

    def wire(self, interval: str) -> dict[str, Any]:
        """The `candle` channel / `candleSnapshot` shape: T is the bucket's last millisecond."""
        return {"t": self.start_ms, "T": self.start_ms + self.interval_ms - 1, "s": self.coin, "i": interval,
                "o": str(self.open), "c": str(self.close), "h": str(self.high), "l": str(self.low),
                "v": str(self.volume), "n": self.trades}


class TradeHistory:
    """Prints per coin, oldest first, and the live candles tracked over them."""

    def __init__(self, coins: Iterable[str]) -> None:
        self.rows: dict[str, list[Row]] = {c: [] for c in coins}
        # the live candle per (coin, interval_ms), kept only for intervals someone asked for:
        # updating every interval on every print would cost the feed for nothing
        self._live: dict[tuple[str, int], Candle] = {}

    def backfill(self, coin: str, px: Decimal, sz_decimals: int, rng: random.Random, sigma: float,
                 now_ms: int, minutes: int) -> None:
        """A seeded past ending at `px` (today's price), so candle warm-up has data."""
        rows = []
        for i in range(minutes * 60_000 // BACKFILL_STEP_MS):
            rows.append((now_ms - (i + 1) * BACKFILL_STEP_MS, px, Decimal("0.1")))
            px = round_price(px * (1 + Decimal(str(rng.gauss(0, sigma)))), sz_decimals)
        self.rows[coin] = list(reversed(rows))

    def record(self, coin: str, px: Decimal, size: Decimal, now_ms: int) -> None:
        rows = self.rows[coin]
        rows.append((now_ms, px, size))
        if len(rows) > MAX_ROWS:
            del rows[:MAX_ROWS // 2]
        self._roll(coin, px, size, now_ms)

    def recent(self, coin: str, count: int) -> list[Row]:
        """The last `count` prints of a coin (none for an unknown coin)."""
        return self.rows.get(coin, [])[-count:]

    def _roll(self, coin: str, px: Decimal, size: Decimal, now_ms: int) -> None:
        for (c, step), candle in list(self._live.items()):
            if c != coin:
                continue
            if now_ms >= candle.start_ms + step:  # the bucket closed: this print opens the next
                start = now_ms - now_ms % step
                self._live[(c, step)] = Candle(coin, step, start, px, px, px, px, size, 1)
            else:
                candle.add(px, size)

    def latest_candle(self, coin: str, interval_ms: int) -> Candle | None:
        """The bucket of the latest print (None before any); tracked live from the first ask on."""
        key = (coin, interval_ms)
        if key not in self._live:
            rows = self.rows.get(coin) or []
            if not rows:
                return None
            last = rows[-1][0]
            start = last - last % interval_ms
            first = bisect.bisect_left(rows, start, key=lambda row: row[0])
            self._live[key] = Candle.from_rows(coin, interval_ms, start, rows[first:])
        return self._live[key]

    def candles(self, coin: str, interval_ms: int, start: int, end: int) -> list[Candle]:
        """Candles with at least one print in [start, end], oldest first, the latest 5000 only."""
        buckets: dict[int, list[Row]] = {}
        for row in self.rows.get(coin, []):
            if start <= row[0] <= end:
                buckets.setdefault(row[0] - row[0] % interval_ms, []).append(row)
        return [Candle.from_rows(coin, interval_ms, t0, buckets[t0]) for t0 in sorted(buckets)[-5000:]]
