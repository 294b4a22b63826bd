"""Candles built from trades, and candle interval names (pure; no I/O, no clock, no logging).

Owns: `CandleSeries` (candles of one interval built from trades, gaps flat-filled, warm-up from
history merged in) and `interval_ms`. (`Candle` and its parser are wire types: `wire`.)
Must not: decide anything (strategies.py reads the candles), read a clock (time comes with each
trade), or keep references to the caller's lists.
"""
from __future__ import annotations

import re
from collections import deque
from decimal import Decimal
from typing import Any, Iterable, Mapping

from wire import Candle, parse_candle

_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def interval_ms(interval: str) -> int:
    """Length of a candle interval name ("1m", "15m", "4h", "1d", "1w") in milliseconds."""
    match = re.fullmatch(r"([1-9][0-9]*)([mhdw])", interval) if isinstance(interval, str) else None
    if match is None:
        raise ValueError(f"candle interval must look like 1m, 15m, 1h, 1d or 1w, got {interval!r}")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


# ---- candles --------------------------------------------------------------------------------

def _flat(open_time_ms: int, price: Decimal) -> Candle:
    return Candle(open_time_ms, price, price, price, price, Decimal(0))


class CandleSeries:
    """Candles of one interval built from trades (mutable; one owner thread).

    `add_trade` updates the forming candle, or closes it and opens a new one when a trade falls in
    a later interval; intervals with no trade are filled with flat candles at the last close
    (volume 0). A trade older than the forming candle is ignored (closed candles never change) and
    counted in `late_trades`. At most `maxlen` closed candles are kept.
    """

    def __init__(self, interval_ms: int, maxlen: int) -> None:
        if isinstance(interval_ms, bool) or not isinstance(interval_ms, int) or interval_ms <= 0:
            raise ValueError(f"interval_ms must be an integer > 0, got {interval_ms!r}")
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1:
            raise ValueError(f"maxlen must be an integer >= 1, got {maxlen!r}")
        self.interval_ms = interval_ms
        self.maxlen = maxlen
        self._closed: deque[Candle] = deque(maxlen=maxlen)
        self._current: Candle | None = None
        self._closed_count = 0
        self.late_trades = 0

    def _bucket(self, time_ms: int) -> int:
        return time_ms - time_ms % self.interval_ms

    def _close_current_until(self, next_open_ms: int) -> int:
        """Close the forming candle and flat-fill every interval before next_open_ms."""
        current = self._current
        assert current is not None
        self._closed.append(current)
        gap = (next_open_ms - current.open_time_ms) // self.interval_ms - 1
        # Only the last `maxlen` fillers can survive in the deque; count them all.
        first = max(1, gap - self.maxlen + 1)
        for k in range(first, gap + 1):
            self._closed.append(_flat(current.open_time_ms + k * self.interval_ms, current.close))
        self._closed_count += 1 + gap
        self._current = None
        return 1 + gap

    def add_trade(self, price: Decimal, size: Decimal, time_ms: int) -> int:
        """Fold one trade in; return how many candles it closed (0 while in the same interval)."""
        bucket = self._bucket(time_ms)
        current = self._current
        if current is None:
            last = self._closed[-1] if self._closed else None
            if last is not None and bucket <= last.open_time_ms:
                self.late_trades += 1
                return 0
            closed = 0
            if last is not None and bucket > last.open_time_ms + self.interval_ms:
                # After a load whose candles all closed: fill the gap from the last close.
                self._current = _flat(last.open_time_ms + self.interval_ms, last.close)
                closed = self._close_current_until(bucket)
            self._current = Candle(bucket, price, price, price, price, size)
            return closed
        if bucket == current.open_time_ms:
            self._current = Candle(bucket, current.open, max(current.high, price), min(current.low, price),
                                   price, current.volume + size)
            return 0
        if bucket < current.open_time_ms:
            self.late_trades += 1
            return 0
        closed = self._close_current_until(bucket)
        self._current = Candle(bucket, price, price, price, price, size)
        return closed

    def load(self, candles: Iterable[Candle | Mapping[str, Any]], now_ms: int | None = None) -> None:
        """Warm up from history (Candles or raw `candleSnapshot` elements), merged with what the
        series already holds (live candles win on the same interval). Gaps are flat-filled.

        The newest candle becomes the forming one when it has not ended by `now_ms`, or always
        when `now_ms` is None (a snapshot up to "now" ends with the forming candle).
        """
        by_time: dict[int, Candle] = {}
        for item in candles:
            candle = item if isinstance(item, Candle) else parse_candle(item)
            if candle.open_time_ms % self.interval_ms:
                raise ValueError(f"candle at {candle.open_time_ms} is not aligned to the "
                                 f"{self.interval_ms} ms interval")
            by_time[candle.open_time_ms] = candle
        known_before = {c.open_time_ms for c in self._closed}
        for candle in self._closed:
            by_time[candle.open_time_ms] = candle
        if self._current is not None:
            by_time[self._current.open_time_ms] = self._current
            # history newer than the live forming candle cannot be right; drop it
            by_time = {t: c for t, c in by_time.items() if t <= self._current.open_time_ms}
        if not by_time:
            return
        ordered = [by_time[t] for t in sorted(by_time)]
        newest = ordered[-1]
        forming = self._current is not None or now_ms is None \
            or newest.open_time_ms + self.interval_ms > now_ms
        self._closed.clear()
        self._current = None
        previous: Candle | None = None
        added = 0
        for candle in ordered[:-1] if forming else ordered:
            if previous is not None:
                for t in range(previous.open_time_ms + self.interval_ms, candle.open_time_ms, self.interval_ms):
                    self._closed.append(_flat(t, previous.close))
                    added += t not in known_before
            self._closed.append(candle)
            added += candle.open_time_ms not in known_before
            previous = candle
        if forming:
            if previous is not None and newest.open_time_ms > previous.open_time_ms + self.interval_ms:
                for t in range(previous.open_time_ms + self.interval_ms, newest.open_time_ms, self.interval_ms):
                    self._closed.append(_flat(t, previous.close))
                    added += t not in known_before
            self._current = newest
        self._closed_count += added

    def closed(self) -> list[Candle]:
        """The closed candles, oldest first (a copy)."""
        return list(self._closed)

    def closes(self, include_forming: bool = False) -> list[Decimal]:
        """Close prices of the closed candles, plus the forming candle's last price if asked."""
        out = [c.close for c in self._closed]
        if include_forming and self._current is not None:
            out.append(self._current.close)
        return out

    @property
    def current(self) -> Candle | None:
        """The forming candle (its close is the last trade price), or None before any trade."""
        return self._current

    @property
    def closed_count(self) -> int:
        """How many candles have closed so far (monotone; not capped by maxlen): compare it with a
        previous reading to know whether a new candle closed."""
        return self._closed_count

    def __len__(self) -> int:
        return len(self._closed)
