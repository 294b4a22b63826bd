"""Entries of one market: when the strategy is asked, what may stop an entry, and sending it.

Owns: the market's strategy (asked at most once a second between candle closes), the cooldown
after a close, the market's risk guard (position cap, orders per minute), the account-wide limits
(`account_refusal`, pure; the loop gives it every market's figures), waiting while one of the market's orders may still fill, the position is
unconfirmed or a stale stop's cancel keeps failing or a post-only entry is being worked, and sending
the entry: an IOC, or a post-only order at the touch (`trading.entry_order: post_only`, or the
strategy's `entry_order`), worked by maker.py.
Must not: hold the position (the market trader does, from what `maybe_enter` returns), or send an
entry whose cloid could not be saved first.
"""
from __future__ import annotations

import logging
from decimal import Decimal
from typing import Callable, Literal, Protocol, Sequence

from execution import Ioc, NotSent, OrderExecutor
from logsetup import RateLimitedLog
from maker import Host, MakerEntry
from rest_errors import HyperliquidError, OrderStatusUnknown
from settings import RiskSettings, TradingSettings
from sizing import RiskGuard, order_size
from strategies import Strategy, entry_order_of
from wire import Candle

log = logging.getLogger("bot")

ENTRY_EVAL_EVERY_S = 1.0       # strategies are asked at most this often between candle closes
ENTRY_COOLDOWN_S = 5.0         # no new entry this soon after a position closed (no churn)
CANCEL_RETRY_S = 5.0           # entries wait this long between retries of failed cancels


class Account(Protocol):
    """What entries need to know of the account (the loop answers)."""

    def entry_refusal(self, coin: str, notional_usd: Decimal) -> str | None: ...

    def entry_slot(self) -> bool: ...

    def want_check(self, reason: str) -> None: ...

    def check_due(self) -> bool: ...


def account_refusal(risk: RiskSettings, open_flags: Sequence[bool], open_usd: Decimal,
                    order_usd: Decimal) -> str | None:
    """The account-wide limits before an entry: open positions (`open_flags`, one per market) and
    total notional (`open_usd`, orders in doubt included). None when the entry may go."""
    open_positions = sum(open_flags)
    if risk.max_open_positions is not None and open_positions >= risk.max_open_positions:
        return f"{open_positions} open position(s) reached risk.max_open_positions {risk.max_open_positions}"
    if risk.max_total_position_usd is not None and open_usd + order_usd > risk.max_total_position_usd:
        return (f"open ${open_usd:.2f} + order ${order_usd:.2f} would exceed risk.max_total_position_usd "
                f"${risk.max_total_position_usd}")
    return None


class Entries:
    """One market's entry decision and order."""

    def __init__(self, coin: str, trading: TradingSettings, sz_decimals: int, strategy: Strategy, guard: RiskGuard,
                 executor: OrderExecutor, account: Account, host: Host, clock: Callable[[], float],
                 now_ms: Callable[[], int]) -> None:
        self.coin, self.trading, self.sz_decimals, self.strategy = coin, trading, sz_decimals, strategy
        self.executor, self.account, self.clock, self.now_ms = executor, account, clock, now_ms
        self.guard = guard  # the market's: its exits count too (a burst of exits holds entries back)
        self._quiet = RateLimitedLog(every_s=60.0, clock=clock)
        self.enabled = True
        self.blocked_until = 0.0   # the cooldown after a close
        self.cancel_retry_at = 0.0  # a stale stop's cancel failed: entries wait, and it is retried, from then
        self.last_eval = 0.0
        self.last_closed_candles = 0
        self.maker = MakerEntry(coin, trading, executor, guard, host, account.want_check, self.placement_held,
                                lambda: self.enabled, clock, now_ms)
        self.post_only = entry_order_of(trading.entry_order, strategy) == "post_only"

    def cool_down(self) -> None:
        """A position just closed: no entry for a while (no churn)."""
        self.blocked_until = self.clock() + ENTRY_COOLDOWN_S

    def maybe_enter(self, now: float, price: Decimal, closed_count: int,
                    closed: Callable[[], Sequence[Candle]]) -> tuple[Literal["long", "short"], Decimal, Decimal] | None:
        """Ask the strategy (when a candle closed, or a second passed) and enter on its signal:
        (side, filled size, average price) of a filled entry, else None."""
        if closed_count == self.last_closed_candles and now - self.last_eval < ENTRY_EVAL_EVERY_S:
            return None  # first: the cheapest test, and the one that fails on nearly every turn
        if self._blocked(now):
            return None
        self.last_closed_candles = closed_count
        self.last_eval = now
        side = self.strategy.on_candles(closed(), price, False)
        if side is None:
            return None
        filled, avg_px = self._enter(side, price)
        return (side, filled, avg_px) if filled > 0 else None

    def placement_held(self) -> bool:
        """An order that may still fill, a position not confirmed yet, or a stale stop's cancel
        failing (it could close the new position; retried here every CANCEL_RETRY_S). Entries and
        post-only placements alike."""
        if self.executor.blocks_entries(self.coin) or self.account.check_due():
            return True
        now = self.clock()
        if now < self.cancel_retry_at:
            return True
        if self.executor.cancels_pending(self.coin):
            self.cancel_retry_at = now + CANCEL_RETRY_S
            return True
        return False

    def _blocked(self, now: float) -> bool:
        return not self.enabled or now < self.blocked_until or self.maker.work is not None \
            or self.placement_held()

    def _enter(self, side: Literal["long", "short"], price: Decimal) -> tuple[Decimal, Decimal]:
        """Send the entry; (filled size, average price), (0, 0) when nothing filled or it was refused."""
        nothing = (Decimal(0), Decimal(0))
        try:
            size = order_size(self.trading.order_size_usd, price, self.sz_decimals)
        except ValueError as exc:
            log.warning("%s entry skipped: %s", self.coin, exc)
            return nothing
        refusal = self.guard.check_entry(Decimal(0), size * price, self.now_ms()) \
            or self.account.entry_refusal(self.coin, size * price)
        if refusal:
            suppressed = self._quiet.allow("refused")
            if suppressed is not None:
                log.warning("%s entry refused by risk guard: %s%s", self.coin, refusal,
                            f" ({suppressed} more refusals)" if suppressed else "")
            return nothing
        if not self.account.entry_slot():
            self.last_eval = 0.0  # another market entered this turn: ask again next turn
            return nothing
        log.info("%s entry signal %s at %s (strategy %s%s)", self.coin, side, price, self.strategy.name,
                 ", post-only" if self.post_only else "")
        if self.post_only:
            self.maker.start(side, size, price)  # the position opens when it fills (maker.py)
            return nothing
        order = Ioc(self.coin, side == "long", size, price, self.trading.slippage_pct, False, "entry")
        try:
            filled, avg_px = self.executor.send_ioc(order, guard=self.guard)
        except NotSent as exc:
            log.error("%s entry not sent: %s", self.coin, exc)
            return nothing
        except OrderStatusUnknown as exc:
            log.error("%s entry order: %s; no entry until the exchange says what became of it", self.coin, exc)
            return nothing
        except HyperliquidError as exc:
            log.error("%s entry order not executed: %s", self.coin, exc)
            return nothing
        if filled <= 0:
            log.warning("%s entry order not filled (IOC at %s)", self.coin, price)
        return filled, avg_px
