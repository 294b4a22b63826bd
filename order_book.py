"""A market's order book as the stream last showed it, and what a marketable order would fill on it.

Owns: `Book` (bids and asks as `(px, sz)` tuples best first, from a `stream_events.L2Book`, with
the monotonic time it arrived), `walk`: an IOC's size-aware fill across the levels up to its
limit (filled size, size-weighted average price, levels touched; paper trading books that), and
`Quotes`: one market's latest best bid/ask (`bbo`) and levels (`l2Book`) with their freshness,
and the price a marketable exit is set from.
Must not: do I/O, log, or know about orders sent; time comes from the clock it is given.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

from stream_events import L2Book

Levels = tuple[tuple[Decimal, Decimal], ...]
BBO_FRESH_S = 2.0     # a best bid/ask older than this no longer prices an exit
DEPTH_FRESH_S = 10.0  # levels older than this no longer fill a paper order (the exchange re-sends every few s)


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


class Quotes:
    """One market's latest quotes (main thread only)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.bid: Decimal | None = None  # the best bid and ask (`bbo`), and when they came
        self.ask: Decimal | None = None
        self.bbo_at = 0.0
        self.book: Book | None = None  # the latest l2Book levels (subscribed in paper mode: paper fills walk them)

    def on_bbo(self, bid: Decimal | None, ask: Decimal | None) -> None:
        self.bid, self.ask, self.bbo_at = bid, ask, self.clock()

    def on_l2book(self, event: L2Book) -> None:
        self.book = Book.from_event(event, self.clock())

    def fresh_book(self) -> Book | None:
        """The latest l2Book if recent enough to fill a paper order on, else None."""
        book = self.book
        return book if book is not None and self.clock() - book.at <= DEPTH_FRESH_S else None

    def exit_reference(self, price: Decimal, is_buy: bool) -> Decimal:
        """What a marketable exit is priced from: the opposite side of a fresh book (what it will
        actually meet) when it is worse than the last price, else the last price (the book's
        message may lag the trade that moved it); the limit is then this moved by slippage_pct."""
        touch = self.ask if is_buy else self.bid
        if touch is None or self.clock() - self.bbo_at > BBO_FRESH_S:
            return price
        return max(touch, price) if is_buy else min(touch, price)
