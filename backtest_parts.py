"""The backtest's stand-ins for the world around the trading code: the exchange, the clock, the account.

Owns: `ReplayClock` (recorded time: the receive time of the frame being handled), `JournalOnly`
(the state writer: orders and fills, no saved position), `NoNetwork`
(where the executor would ask the exchange), `BacktestAccount` (the loop's part for entries: the
account-wide limits, one entry per turn, no position checks), and `BacktestExchange`: the bot's
`paper.PaperExchange` itself (a market order walks the market's fresh recorded l2Book up to its
limit, else fills at the limit: the dry run's rules, `order_book.walk`), which also keeps every
fill with how it was priced and the paper account (cash, signed position per coin, fees) for the
equity curve.
Must not: do I/O, read a clock of its own (the backtest's recorded clock is passed in), or decide
anything about trading or pricing (entries.py, market.py, exits.py and paper.py do, as live).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Literal

from execution import OrderExecutor
from loop import TradingLoop
from market import MarketTrader
from order_book import Book
from paper import PaperExchange, PaperOrder
from rest_errors import NetworkError
from settings import RiskSettings
from state import SavedPosition
from state_writer import StateWriter
from wire import OrderResult

log = logging.getLogger("backtest")


class ReplayClock:
    """The backtest's time: the receive time of the frame being handled (or of the timer tick)."""

    __slots__ = ("ns", "s")

    def __init__(self) -> None:
        self.ns, self.s = 0, 0.0

    def set(self, t_ns: int) -> None:
        self.ns, self.s = t_ns, t_ns / 1e9

    def seconds(self) -> float:
        return self.s

    def ms(self) -> int:
        return self.ns // 1_000_000

    def nanos(self) -> int:
        return self.ns


class JournalOnly(StateWriter):
    """The state writer of a backtest: orders and fills are journaled (the report reads them, as
    `--report` does); the position is not saved, it is for a restart and a backtest never restarts
    (saving it on every new high of a trailing stop would cost more than the exit check)."""

    def save_position(self, position: SavedPosition) -> bool:
        return True

    def clear_position(self, coin: str) -> bool:
        return True


class NoNetwork:
    """Where the executor would ask the exchange: a backtest never does (paper orders never end up
    unknown), and says so if it ever tried."""

    def order_status(self, user: str, oid_or_cloid: int | str) -> Any:
        raise NetworkError("a backtest has no network", sent=False)

    def user_fills_by_time(self, user: str, start_ms: int, end_ms: int | None = None) -> Any:
        raise NetworkError("a backtest has no network", sent=False)


class BacktestAccount:
    """The trading loop's part for the markets' entries (entries.Account): the account-wide limits
    and one entry per turn are the loop's own methods (they read only these attributes); no
    position checks (paper positions are the truth)."""

    entry_refusal = TradingLoop.entry_refusal  # type: ignore[assignment]
    entry_slot = TradingLoop.entry_slot  # type: ignore[assignment]

    def __init__(self, risk: RiskSettings) -> None:
        self.risk = risk
        self.traders: dict[str, MarketTrader] = {}
        self.executor: OrderExecutor | None = None
        self.entry_slots = 1

    def want_check(self, reason: str) -> None:
        log.debug("backtest: a position check was asked (%s); paper positions are the truth", reason)

    def check_due(self) -> bool:
        return False


@dataclass(frozen=True)
class SimFill:
    time_ms: int
    coin: str
    side: Literal["buy", "sell"]
    size: Decimal
    px: Decimal
    fee: Decimal
    priced_by: str        # "l2Book" (walked the recorded book), "paper" (the slippage rule) or "maker" (post-only)
    reduce_only: bool
    cloid: str | None


class BacktestExchange(PaperExchange):
    """The bot's paper exchange (fills walk the market's fresh l2Book, else the slippage rule: the
    same `market_order` as a dry run), keeping every fill and the paper account as it goes."""

    def __init__(self, sz_decimals: Callable[[str], int], clock_ns: Callable[[], int],
                 book_of: Callable[[str], Book | None] | None) -> None:
        super().__init__(sz_decimals, lambda: clock_ns() // 1_000_000, book_of)
        self._clock_ns = clock_ns
        self.cash = 0.0                          # USDC in and out of the paper account, fees paid
        self.open: dict[str, float] = {}         # coin -> signed size (coins with a position only)
        self.fills: list[SimFill] = []
        self.priced: Counter[str] = Counter()    # how fills were priced; "unfilled": nothing within the limit

    def market_order(self, coin: str, is_buy: bool, size: Decimal, slippage_pct: Decimal,
                     reference_px: Decimal | None = None, reduce_only: bool = False,
                     cloid: str | None = None, expires_by_ms: int | None = None) -> list[OrderResult]:
        on_book = self.book_fills
        results = super().market_order(coin, is_buy, size, slippage_pct, reference_px, reduce_only, cloid)
        result = results[0]
        if result.kind != "filled" or result.total_size is None or result.avg_px is None:
            self.priced["unfilled"] += 1
            return results
        self._book_fill(SimFill(self._clock_ns() // 1_000_000, coin, "buy" if is_buy else "sell", result.total_size,
                                result.avg_px, self.fee(result.total_size, result.avg_px),
                                "l2Book" if self.book_fills > on_book else "paper", reduce_only, cloid))
        return results

    def trade(self, coin: str, px: Decimal) -> list[tuple[str, PaperOrder]]:
        """Resting post-only orders the trade went through: maker fills at their price."""
        filled = super().trade(coin, px)
        for cloid, order in filled:
            self._book_fill(SimFill(self._clock_ns() // 1_000_000, coin, "buy" if order.is_buy else "sell", order.size,
                                    order.px, self.fee(order.size, order.px, maker=True), "maker", False, cloid))
        return filled

    def _book_fill(self, fill: SimFill) -> None:
        self.fills.append(fill)
        self.priced[fill.priced_by] += 1
        signed = float(fill.size) if fill.side == "buy" else -float(fill.size)
        self.cash -= signed * float(fill.px) + float(fill.fee)
        left = self.open.get(fill.coin, 0.0) + signed
        if abs(left) < 1e-12:
            self.open.pop(fill.coin, None)
        else:
            self.open[fill.coin] = left
