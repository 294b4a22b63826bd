"""Paper trading: an exchange stand-in with the order methods the bot uses, sending nothing.

Owns: simulated fills for dry runs (`dry_run: true` or `--dry-run`): an IOC/market order walks the
market's fresh l2Book (`book_of`, set at wiring: order_book.walk) up to its limit, size-aware,
booking the size-weighted average (the taker fee is `fee`); what the levels within the limit
cannot fill is canceled, as the exchange does. With no fresh book it fills in full at the
reference price moved by the slippage (the worst price the real order would accept). Post-only
(`Alo`) orders: refused when they would cross the fresh book, else resting until canceled or a
trade goes through their price (`trade`; then filled in full at their price, a maker fill: fee
`fee(..., maker=True)`), with an `orderStatus`-shaped answer (`order_status`). Trigger calls, and
cancels of anything else, succeed without effect. Picked at wiring in trading_bot.py, so the
trading code path is the same as live. Must not: do any I/O.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

from order_book import Book, walk
from sizing import slippage_price
from wire import OrderResult, OrderStatusResult

TAKER_FEE_RATE = Decimal("0.00045")
MAKER_FEE_RATE = Decimal("0.00015")
NO_MATCH = "Order could not immediately match against any resting orders."  # the exchange's words
KEEP_ENDED = 100  # ended post-only orders whose status is still answered
ALO_CROSSED = "Post only order would have immediately matched"  # the exchange's words (then ", bbo was PX")


@dataclass
class PaperOrder:
    """A resting paper post-only order."""
    oid: int
    coin: str
    is_buy: bool
    px: Decimal
    size: Decimal
    status: str = "open"      # then "filled" or "canceled"
    time_ms: int = 0


class PaperExchange:
    """Fills paper orders on the market's book, else at `reference_px` ± slippage; remembers
    nothing but an oid counter."""

    def __init__(self, sz_decimals: Callable[[str], int], clock_ms: Callable[[], int] | None = None,
                 book_of: Callable[[str], Book | None] | None = None) -> None:
        self._sz_decimals = sz_decimals
        self._oids = itertools.count(1)
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.book_of = book_of  # coin -> its fresh book or None (the markets exist after this object)
        self.sent_orders = 0
        self.book_fills = 0  # paper orders filled on a book rather than by the slippage rule
        self.resting: dict[str, PaperOrder] = {}  # cloid -> post-only order (kept after it ends, for its status)

    def market_order(self, coin: str, is_buy: bool, size: Decimal, slippage_pct: Decimal,
                     reference_px: Decimal | None = None, reduce_only: bool = False,
                     cloid: str | None = None, expires_by_ms: int | None = None) -> list[OrderResult]:
        """`expires_by_ms`: nothing is signed here, nothing expires."""
        if reference_px is None:
            raise ValueError("paper trading needs a reference price")
        px = slippage_price(reference_px, is_buy, slippage_pct, self._sz_decimals(coin))
        self.sent_orders += 1
        book = self.book_of(coin) if self.book_of is not None else None
        if book is None:
            return [OrderResult(kind="filled", oid=next(self._oids), total_size=size, avg_px=px,
                                message=None, cloid=cloid)]
        fill = walk(book, is_buy, size, px, reference_px)
        if fill.avg_px is None:
            return [OrderResult(kind="error", oid=None, total_size=None, avg_px=None, message=NO_MATCH, cloid=cloid)]
        self.book_fills += 1
        return [OrderResult(kind="filled", oid=next(self._oids), total_size=fill.filled, avg_px=fill.avg_px,
                            message=None, cloid=cloid)]

    def trigger_order(self, coin: str, is_buy: bool, size: Decimal, trigger_px: Decimal, tpsl: str,
                      **_: object) -> list[OrderResult]:
        return [OrderResult(kind="resting", oid=next(self._oids), total_size=None, avg_px=None,
                            message=None, cloid=_.get("cloid"))]  # type: ignore[arg-type]

    def place_order(self, coin: str, is_buy: bool, size: Decimal, limit_px: Decimal, tif: str = "Gtc",
                    reduce_only: bool = False, cloid: str | None = None,
                    expires_by_ms: int | None = None) -> list[OrderResult]:
        """A post-only entry: refused if it would cross the fresh book, else resting."""
        if tif != "Alo" or reduce_only or cloid is None:
            raise ValueError("paper trading rests only post-only (Alo) entries with a cloid")
        self.sent_orders += 1
        book = self.book_of(coin) if self.book_of is not None else None
        opposite = (book.asks if is_buy else book.bids) if book is not None else ()
        if opposite and (limit_px >= opposite[0][0] if is_buy else limit_px <= opposite[0][0]):
            return [OrderResult(kind="error", oid=None, total_size=None, avg_px=None,
                                message=f"{ALO_CROSSED}, bbo was {opposite[0][0]}", cloid=cloid)]
        order = PaperOrder(next(self._oids), coin, is_buy, limit_px, size, time_ms=self._clock_ms())
        ended = [c for c, o in self.resting.items() if o.status != "open"]
        for old in ended[:-KEEP_ENDED]:
            del self.resting[old]
        self.resting[cloid] = order
        return [OrderResult(kind="resting", oid=order.oid, total_size=None, avg_px=None, message=None, cloid=cloid)]

    def trade(self, coin: str, px: Decimal) -> list[tuple[str, PaperOrder]]:
        """A trade at `px`: resting orders it went through (not merely touched: the queue ahead of
        ours at that price fills first) are filled in full at their price; (cloid, order) of each."""
        filled = []
        for cloid, order in self.resting.items():
            if order.coin == coin and order.status == "open" and (px < order.px if order.is_buy else px > order.px):
                order.status, order.time_ms = "filled", self._clock_ms()
                filled.append((cloid, order))
        return filled

    def order_status(self, user: str, oid_or_cloid: int | str) -> OrderStatusResult:
        """The `orderStatus` answer for a paper post-only order (by cloid)."""
        order = self.resting.get(str(oid_or_cloid))
        if order is None:
            return OrderStatusResult("unknownOid", None)
        left = Decimal(0) if order.status == "filled" else order.size
        wire = {"coin": order.coin, "side": "B" if order.is_buy else "A", "limitPx": str(order.px), "sz": str(left),
                "oid": order.oid, "origSz": str(order.size), "cloid": oid_or_cloid}
        return OrderStatusResult(order.status, {"order": wire, "status": order.status, "statusTimestamp": order.time_ms})

    def cancel_by_cloid(self, coin: str, cloid: str) -> bool:
        """True, except for a post-only order no longer resting (filled or canceled before)."""
        order = self.resting.get(cloid)
        if order is None:
            return True  # an exchange-side SL/TP: paper trading never placed one
        if order.status != "open":
            return False
        order.status, order.time_ms = "canceled", self._clock_ms()
        return True

    def update_leverage(self, coin: str, leverage: int, is_cross: bool = True) -> None:
        return None

    @staticmethod
    def fee(size: Decimal, px: Decimal, maker: bool = False) -> Decimal:
        return (size * px * (MAKER_FEE_RATE if maker else TAKER_FEE_RATE)).quantize(Decimal("0.000001"))
