"""Paper trading: an exchange stand-in with the order methods the bot uses, sending nothing.

Owns: simulated fills for dry runs (`dry_run: true` or `--dry-run`): an IOC/market order walks the
market's fresh l2Book (`book_of`, set at wiring: order_book.walk) up to its limit, size-aware,
booking the size-weighted average (the taker fee is `fee`); what the levels within the limit
cannot fill is canceled, as the exchange does. With no fresh book it fills in full at the
reference price moved by the slippage (the worst price the real order would accept). Trigger and
cancel calls succeed without effect. Picked at wiring in trading_bot.py, so the trading code
path is the same as live. Must not: do any I/O.
"""
from __future__ import annotations

import itertools
import time
from decimal import Decimal
from typing import Callable

from order_book import Book, walk
from sizing import slippage_price
from wire import OrderResult

TAKER_FEE_RATE = Decimal("0.00045")
NO_MATCH = "Order could not immediately match against any resting orders."  # the exchange's words


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

    def market_order(self, coin: str, is_buy: bool, size: Decimal, slippage_pct: Decimal,
                     reference_px: Decimal | None = None, reduce_only: bool = False,
                     cloid: str | None = None) -> list[OrderResult]:
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

    def cancel_by_cloid(self, coin: str, cloid: str) -> bool:
        return True

    def update_leverage(self, coin: str, leverage: int, is_cross: bool = True) -> None:
        return None

    @staticmethod
    def fee(size: Decimal, px: Decimal) -> Decimal:
        return (size * px * TAKER_FEE_RATE).quantize(Decimal("0.000001"))
