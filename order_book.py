"""A market's order book as the stream last showed it, and what a marketable order would fill on it.

Owns: `Book` (bids and asks as `(px, sz)` tuples best first, from a `stream_events.L2Book`, with
the monotonic time it arrived) and `walk`: an IOC's size-aware fill across the levels up to its
limit (filled size, size-weighted average price, levels touched). Paper trading books that.
Must not: do I/O, log, or know about orders sent; time is an argument.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from stream_events import L2Book

Levels = tuple[tuple[Decimal, Decimal], ...]


@dataclass(frozen=True, slots=True)
class Book:
    bids: Levels  # best (highest) first
    asks: Levels  # best (lowest) first
    at: float     # monotonic seconds when it arrived

    @classmethod
    def from_event(cls, event: L2Book, at: float) -> "Book":
        """The event's levels without their order counts (`(px, sz, n)` -> `(px, sz)`)."""
        return cls(tuple((px, sz) for px, sz, _n in event.bids), tuple((px, sz) for px, sz, _n in event.asks), at)


@dataclass(frozen=True, slots=True)
class Walk:
    filled: Decimal
    avg_px: Decimal | None  # None when nothing filled
    levels: int             # how many levels the order touched


def walk(book: Book, is_buy: bool, size: Decimal, limit_px: Decimal, reference_px: Decimal | None = None) -> Walk:
    """Fill `size` against the asks (a buy) or bids (a sell), best first, up to `limit_px`.

    A book that lags the last trade (`reference_px`: its touch is better than the price the order
    was priced from) is shifted by the gap first: the depth still says how far a size moves the
    price, and the fill is never better than the market has already gone. E.g. asks
    `(100, 1), (101, 2)`, buy 2 up to 102: 1 at 100 and 1 at 101, average 100.5, 2 levels.
    """
    side = book.asks if is_buy else book.bids
    if not side or size <= 0:
        return Walk(Decimal(0), None, 0)
    shift = Decimal(0)
    if reference_px is not None:
        touch = side[0][0]
        if (is_buy and touch < reference_px) or (not is_buy and touch > reference_px):
            shift = reference_px - touch
    left, cost, touched = size, Decimal(0), 0
    for px, sz in side:
        px += shift
        if left <= 0 or (px > limit_px if is_buy else px < limit_px):
            break
        take = min(left, sz)
        left -= take
        cost += take * px
        touched += 1
    filled = size - left
    return Walk(filled, _plain(cost / filled) if filled else None, touched)


def _plain(px: Decimal) -> Decimal:
    """To 8 decimals, no trailing zeros, never in exponent form (it is logged and journaled)."""
    px = px.quantize(Decimal("1e-8"))
    return px.quantize(Decimal(1)) if px == px.to_integral_value() else px.normalize()
