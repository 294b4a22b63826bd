"""One traded coin: its price, candles, position, trailing stop and exits.

Owns: the market's current price (from the stream or REST), its latest book (best bid/ask; the
l2Book levels paper fills walk), its candles (trades deduplicated across reconnects), the position
and its restart-safe high-water mark, the exit decision on every price (sent at once, before any
disk write), exit retries (0.5 s doubling to 2 s), opening the position an entry filled
(entries.py decides and sends entries), adopting the exchange's position when a check finds ours
differs, the operator's close (`close_now`: the same exit path), the market's notifications (entry,
exit, exit_failed: queued, never waited for) and its health figures.
Must not: touch the socket or another market's state, or wait on the disk before an exit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Literal

from entries import Account, Entries
from execution import Ioc, OrderExecutor
from exits import ExitDecision, ExitRules, PositionView, TrailingStop
from notify import NO_NOTIFIER, Notifier
from order_book import Quotes
from protection import Protection
from rest_errors import HyperliquidError, OrderStatusUnknown
from settings import MarketSettings, TradingSettings
from sizing import RiskGuard
from state import SavedPosition
from state_writer import StateWriter
from strategies import CandleSeries, Strategy, interval_ms
from stream_events import Trade

log = logging.getLogger("bot")

PRICE_LOG_EVERY_S = 5.0        # `📡 Real-time price update` at most this often
EXIT_RETRY_BASE_S = 0.5        # a failed exit is retried with backoff from this delay...
EXIT_RETRY_MAX_S = 2.0         # ...up to this: the exchange may be back any moment


class SeenTrades:
    """Which trades are already folded in: the newest trade time and the tids at that millisecond
    (a replay after a reconnect, or one out of order, is not folded in again)."""

    def __init__(self) -> None:
        self.last_ms = 0
        self.tids_at_last_ms: set[int] = set()

    def fresh(self, time_ms: int, tid: int) -> bool:
        if time_ms < self.last_ms or (time_ms == self.last_ms and tid in self.tids_at_last_ms):
            return False
        if time_ms != self.last_ms:
            self.last_ms = time_ms
            self.tids_at_last_ms.clear()
        self.tids_at_last_ms.add(tid)
        return True


@dataclass
class OpenPosition:
    """A market's position (main thread only). `trailing` carries the restart-safe high-water mark."""

    side: Literal["long", "short"]
    size: Decimal
    entry_px: Decimal
    opened_ms: int
    trailing: TrailingStop | None
    protective_cloids: tuple[str, ...] = ()

    @property
    def is_buy_to_close(self) -> bool:
        return self.side == "short"

    def saved(self, coin: str) -> SavedPosition:
        """What the state file keeps of it."""
        return SavedPosition(coin=coin, side=self.side, size=self.size, entry_px=self.entry_px,
                             high_water=self.trailing.high_water if self.trailing else None,
                             opened_ms=self.opened_ms, protective_cloids=self.protective_cloids)


def trailing_for(trading: TradingSettings, side: Literal["long", "short"], entry_px: Decimal,
                 high_water: Decimal | None = None) -> TrailingStop | None:
    """The market's trailing stop for a position (None when `trading.trailing_stop_pct` is off)."""
    if trading.trailing_stop_pct is None:
        return None
    return TrailingStop(side, trading.trailing_stop_pct, entry_px, activation_offset_pct=trading.trailing_offset_pct,
                        high_water=high_water)


class MarketTrader:
    """Everything the bot decides for one coin. Built by trading_bot.build_bot."""

    def __init__(self, market: MarketSettings, sz_decimals: int, strategy: Strategy, executor: OrderExecutor,
                 protection: Protection, store: StateWriter, account: Account, paper: bool,
                 clock: Callable[[], float], now_ms: Callable[[], int], notifier: Notifier = NO_NOTIFIER) -> None:
        self.coin = market.coin
        self.trading = tr = market.trading
        self.exit_rules = protection.exit_rules
        self.guard = RiskGuard(tr.max_position_usd, tr.max_orders_per_minute)  # entries and exits
        self.quotes = Quotes(clock)  # best bid/ask and levels: exits are priced from them, paper fills walk them
        self.entries = Entries(self.coin, tr, sz_decimals, strategy, self.guard, executor, account, self, clock,
                               now_ms)
        self.executor, self.protection, self.store, self.account = executor, protection, store, account
        self.paper, self.clock, self.now_ms, self.notifier = paper, clock, now_ms, notifier
        self.candle_interval = market.strategy.candle_interval
        self.candles = CandleSeries(interval_ms(self.candle_interval), maxlen=500)
        self.current_price: Decimal | None = None
        self.price_source = "none"
        self.price_at = 0.0
        self.last_market_data = clock()  # grace period: the stream gets stale_after to start
        self.position: OpenPosition | None = None
        self.position_dirty = False  # the trailing high-water moved: saved by the timers, never before an exit
        self.exit_cloid: str | None = None  # the next exit's cloid, already saved ("reserved")
        self.exit_failures = 0
        self.next_exit_attempt = 0.0
        self.close_requested: str | None = None  # the operator's close: exits until the position is gone
        self.last_close: tuple[str, Decimal, Decimal] | None = None  # (reason, size, price) of the bot's last exit
        self.last_price_log = 0.0
        self.trades_seen = 0
        self._seen = SeenTrades()
        self.timers = (self._exit_retry_timer, self.entries.maker.timer, self._entry_timer, self._reserve_timer, self._protection_timer,
                       self._save_timer)

    @staticmethod
    def rules_for(market: MarketSettings) -> ExitRules:
        tr = market.trading
        return ExitRules(tr.stop_loss_pct, tr.take_profit_pct, tr.trailing_stop_pct, tr.trailing_offset_pct)

    # ---- prices ----------------------------------------------------------------------------

    def on_trade(self, event: Trade) -> None:
        """A trade of this coin from the stream (the hot path)."""
        if not self._seen.fresh(event.time_ms, event.tid):
            return  # already folded in (a replay after a reconnect) or out of order
        self.trades_seen += 1
        self.candles.add_trade(event.price, event.size, event.time_ms)
        # The replay sent after (re)subscribing is history for the candles, not a live price: acting
        # on it could fire a stop on a price from minutes ago. (Its newest trade is not marked.) Only
        # a live trade makes the market fresh: a quiet one is polled over REST until it trades.
        if not event.replay:
            self.last_market_data = self.clock()
            self.on_price(event.price, "websocket")

    def on_rest_price(self, price: Decimal) -> None:
        self.candles.add_trade(price, Decimal(0), self.now_ms())
        self.on_price(price, "rest")

    def on_price(self, price: Decimal, source: str) -> None:
        """Every price, from either source: record it, move the trailing stop, check exits now."""
        self.current_price = price
        self.price_source = source
        now = self.clock()
        self.price_at = now
        if now - self.last_price_log >= PRICE_LOG_EVERY_S:
            self.last_price_log = now
            if source == "websocket":
                log.info("📡 Real-time price update: $%.2f %s", price, self.coin)
            else:
                log.info("REST price update: $%.2f %s", price, self.coin)
        if self.position is not None:
            self.check_exits(price)
        elif self.entries.maker.work is not None:
            self.entries.maker.on_price(price)

    # ---- exits -----------------------------------------------------------------------------

    def check_exits(self, price: Decimal) -> None:
        """Move the trailing stop and decide; the high-water mark is saved by the timers, after."""
        pos = self.position
        assert pos is not None
        high_water = None
        if pos.trailing is not None:
            before = pos.trailing.high_water
            pos.trailing.update(price)
            high_water = pos.trailing.high_water
            if high_water != before:
                self.position_dirty = True
        if self.next_exit_attempt and self.clock() < self.next_exit_attempt:
            return
        view = PositionView(side=pos.side, entry_px=pos.entry_px, size=pos.size, high_water=high_water)
        decision = self.exit_rules.check(view, price, self.now_ms())
        if decision is None and self.close_requested:
            decision = ExitDecision(self.close_requested, price, price)  # type: ignore[arg-type] # not a rule's
        if decision is not None:
            self._exit(decision, price)

    def _exit(self, decision: ExitDecision, price: Decimal) -> None:
        pos = self.position
        assert pos is not None
        self.guard.check_exit(self.now_ms())
        signal = ("%s exit signal %s: price %s crossed %s (entry %s, %s %s)", self.coin, decision.reason, price,
                  decision.trigger_price, pos.entry_px, pos.side, pos.size)
        reserved, self.exit_cloid = self.exit_cloid, None  # used once, whatever happens next
        order = Ioc(self.coin, pos.is_buy_to_close, pos.size, self.quotes.exit_reference(price, pos.is_buy_to_close),
                    self.trading.slippage_pct, True, "exit", decision.reason)
        try:
            filled, avg_px = self.executor.send_ioc(order, reserved_cloid=reserved)
        except OrderStatusUnknown as exc:
            log.info(*signal)
            self._exit_failed(f"result unknown: {exc}")
            return
        except HyperliquidError as exc:
            log.info(*signal)
            self._exit_failed(str(exc))
            return
        log.info(*signal)  # after the order went out: logging is time the exit must not wait for
        if filled <= 0:
            self._exit_failed("not filled")
            return
        self.exit_failures = 0
        self.next_exit_attempt = 0.0
        if filled < pos.size:
            pos.size -= filled
            self.position_dirty = True
            log.warning("%s exit partially filled: %s of %s at %s; the rest stays protected", self.coin,
                        filled, filled + pos.size, avg_px)
            return
        log.info("%s position closed by %s: %s %s at %s (entry %s)", self.coin, decision.reason, pos.side,
                 filled, avg_px, pos.entry_px)
        notify_exit(self.notifier, self.coin, decision.reason, pos, filled, avg_px)
        self.last_close = (decision.reason, filled, avg_px)
        self.closed()

    def closed(self) -> None:
        """The position is gone (our exit, or the exchange's stop): forget it, pause entries, then
        cancel its exchange-side orders (network calls, after the state is right)."""
        pos, self.position = self.position, None
        self.position_dirty = False
        self.entries.cool_down()
        self.next_exit_attempt = 0.0  # a backoff from this position must not mute the next one's stops
        self.exit_failures = 0
        self.close_requested = None
        self.protection.reset()
        self.store.clear_position(self.coin)
        self._drop_exit_reservation()  # not needed: the exchange's stop or a manual close came first
        if pos is not None:
            self.protection.cancel(pos)

    def close_now(self, reason: str) -> None:
        """The operator's close: the normal exit path now (its reserved cloid), then retried like
        any failed exit until the position is gone; with no price yet, on the first price."""
        if self.position is not None:
            self.close_requested, self.next_exit_attempt = reason, 0.0  # now, not after a backoff
            if self.current_price is not None:
                self.check_exits(self.current_price)

    def _exit_failed(self, why: str) -> None:
        """Retry soon (the exchange may be back any moment) and ask the exchange where the position
        stands: an exit with an unknown result, or one refused as reduce-only, may mean it is gone."""
        self.exit_failures += 1
        delay = min(EXIT_RETRY_BASE_S * 2 ** (self.exit_failures - 1), EXIT_RETRY_MAX_S)
        self.next_exit_attempt = self.clock() + delay
        self.account.want_check(f"{self.coin} exit failed")
        log.error("%s EXIT FAILED (%s), attempt %d; retrying in %.1fs; the exchange-side stop is the backstop",
                  self.coin, why, self.exit_failures, delay)
        self.notifier.notify("exit_failed", self.coin, f"{self.coin} EXIT FAILED ({why}), attempt "
                             f"{self.exit_failures}; retrying in {delay:.1f}s", why=why, attempt=self.exit_failures)

    def _drop_exit_reservation(self) -> None:
        if self.exit_cloid is not None:
            self.executor.retire_reserved(self.exit_cloid)
            self.exit_cloid = None

    # ---- entries ---------------------------------------------------------------------------

    def opened(self, side: Literal["long", "short"], filled: Decimal, avg_px: Decimal) -> None:
        """An entry filled: the position, saved, then its exchange-side stops (and saved again)."""
        self.position = OpenPosition(side=side, size=filled, entry_px=avg_px, opened_ms=self.now_ms(),
                                     trailing=None)  # first: whatever raises next, the fill is a position
        self.position.trailing = trailing_for(self.trading, side, avg_px)
        log.info("position opened: %s %s %s at %s", side, filled, self.coin, avg_px)
        self.notifier.notify("entry", self.coin, f"{self.coin} entry: {side} {filled} at {avg_px}", side=side,
                             size=filled, price=avg_px)
        self.store.save_position(self.position_record())  # before the stops' round trips
        self.protection.place(self.position)
        self.store.save_position(self.position_record())  # with the stops' cloids

    # ---- timers ----------------------------------------------------------------------------

    def _exit_retry_timer(self, now: float) -> None:
        if self.position is not None and self.next_exit_attempt and now >= self.next_exit_attempt \
                and self.current_price is not None:
            self.check_exits(self.current_price)

    def _entry_timer(self, now: float) -> None:
        if self.position is None and self.current_price is not None:
            entered = self.entries.maybe_enter(now, self.current_price, self.candles.closed_count, self.candles.closed)
            if entered is not None:
                self.opened(*entered)

    def _reserve_timer(self, now: float) -> None:
        pos = self.position
        if pos is not None and self.exit_cloid is None and self.store.writable:
            self.exit_cloid = self.executor.reserve_exit_cloid(self.coin, pos.is_buy_to_close, pos.size)

    def _protection_timer(self, now: float) -> None:
        if self.position is not None and self.protection.repair_due(now):
            self.protection.repair(self.position)
            self.position_dirty = True

    def _save_timer(self, now: float) -> None:
        if self.position_dirty and self.position is not None:
            self.position_dirty = False
            self.store.save_position(self.position_record())  # a failure is kept and retried by the writer

    # ---- the exchange's word ---------------------------------------------------------------

    def resume(self, saved: SavedPosition) -> None:
        """Start-up: the position saved by the last run (checked against the exchange next)."""
        trailing = trailing_for(self.trading, saved.side, saved.entry_px, saved.high_water)
        self.position = OpenPosition(side=saved.side, size=saved.size, entry_px=saved.entry_px,
                                     opened_ms=saved.opened_ms, trailing=trailing,
                                     protective_cloids=tuple(saved.protective_cloids))
        log.info("%s: resumed saved position: %s %s at %s, high-water %s", self.coin, saved.side, saved.size,
                 saved.entry_px, saved.high_water)

    def adopt(self, size: Decimal, entry_px: Decimal, reason: str) -> None:
        """The exchange's signed position size for this coin (0: flat) is the truth."""
        pos = self.position
        if size == 0:
            if pos is not None:
                log.warning("%s: the exchange has no %s position but we had %s %s; it was closed outside the bot "
                            "(exchange-side stop?); adopting flat", reason, self.coin, pos.side, pos.size)
                notify_exit(self.notifier, self.coin, "closed on the exchange", pos, pos.size, None)
                self.closed()
            return
        side: Literal["long", "short"] = "long" if size > 0 else "short"
        if pos is not None and pos.side == side and pos.size == abs(size):
            return
        high_water = pos.trailing.high_water if pos is not None and pos.trailing is not None and pos.side == side \
            else None
        log.warning("%s: adopting the exchange's %s position %s %s at %s (we had %s)", reason, self.coin, side,
                    abs(size), entry_px, f"{pos.side} {pos.size}" if pos else "none")
        self._drop_exit_reservation()  # reserved for the old side and size
        self.position = OpenPosition(side=side, size=abs(size), entry_px=entry_px, opened_ms=self.now_ms(),
                                     trailing=trailing_for(self.trading, side, entry_px, high_water))
        self.protection.place(self.position)
        if pos is not None and pos.protective_cloids:
            # Sized and sided for the old position: a flipped one could never trigger them, a grown
            # one would be partly unprotected. Replaced, the new ones first (all are reduce-only).
            self.protection.cancel(pos)
        self.store.save_position(self.position_record())

    # ---- views -----------------------------------------------------------------------------

    def position_record(self) -> SavedPosition:
        assert self.position is not None
        return self.position.saved(self.coin)

    @property
    def has_position(self) -> bool:
        return self.position is not None

    def notional_usd(self) -> Decimal:
        pos = self.position
        if pos is None:
            return Decimal(0)
        return pos.size * (self.current_price or pos.entry_px)


def pnl_usd(side: str, entry_px: Decimal, price: Decimal, size: Decimal) -> Decimal:
    """A position's profit at `price`, before fees and funding."""
    return (price - entry_px if side == "long" else entry_px - price) * size


def notify_exit(notifier: Notifier, coin: str, reason: str, pos: OpenPosition, size: Decimal,
                price: Decimal | None) -> None:
    """The `exit` event: closed by a rule or the operator at `price`, or outside the bot (None)."""
    if price is None:
        text, pnl = f"{coin} {pos.side} {size} closed outside the bot (exchange-side stop?)", None
    else:
        pnl = pnl_usd(pos.side, pos.entry_px, price, size)
        text = (f"{coin} closed by {reason}: {pos.side} {size} at {price} (entry {pos.entry_px}, "
                f"PnL {pnl:+.2f} USDC before fees)")
    notifier.notify("exit", coin, text, reason=reason, side=pos.side, size=size, price=price, entry_px=pos.entry_px,
                    pnl_usd=pnl)
