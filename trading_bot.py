"""hlbot entry point: wiring, the main loop, and sole owner of trading state.

`python trading_bot.py --config config/config.json [--dry-run] [--check-config] [--report]`

Owns: start-up (config, logging, instance lock, state, simulator for `network: local`, account and
meta over REST, leverage, candle warm-up, WebSocket), the main loop (a blocking `queue.get` with a
timeout; every price updates `current_price`, the trailing stop and is checked against the exits at
once; then the timers), REST fallback while the stream is starved, orders with client order ids,
orders whose result is unknown (entries blocked, position checked, looked up by cloid: see
unknown_orders.py), reconciliation with the exchange, the socket thread's supervision, health
snapshots, and clean shutdown on SIGINT/SIGTERM.
Must not: sleep or wait on the network beyond one request's deadline (retries, Retry-After and
lookups are timers), write to disk before an exit is sent, let one bad event or timer end the loop,
touch the socket (the WebSocket thread owns it) or let another thread touch trading state (the
health server reads an immutable snapshot this thread publishes).
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import queue
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Literal, Mapping

import hyperliquid_websocket as stream
from hyperliquid_rest import HyperliquidError, OrderStatusUnknown, RateLimited
from logsetup import RateLimitedLog
from orders import InvalidTransition, OrderRecord
from settings import ConfigError, Settings, load_private_key, load_settings, resolved_view, with_dry_run
from signing import new_cloid
from state_writer import StateWriter
from unknown_orders import (Settlement, UnknownOrder, UnknownOrders, after_failure_s, after_wait_s,
                            first_lookup_s, settle)

log = logging.getLogger("bot")

PRICE_LOG_EVERY_S = 5.0        # `📡 Real-time price update` at most this often
HEALTH_PUBLISH_EVERY_S = 0.25  # how fresh the health snapshot is
RECONCILE_EVERY_S = 60.0       # periodic check of the position against the exchange
EXIT_RETRY_BASE_S = 0.5        # a failed exit is retried with backoff from this delay...
EXIT_RETRY_MAX_S = 2.0         # ...up to this: the exchange may be back any moment
INFO_HOLD_MAX_S = 30.0         # a 429's Retry-After pauses /info calls (a timer) up to this long
INFO_FAIL_HOLD_BASE_S = 0.5    # other /info failures pause /info calls from this...
INFO_FAIL_HOLD_MAX_S = 5.0     # ...doubling up to this while they keep failing
POSITION_CHECK_SPACING_S = 1.0  # position checks asked for by events run at most this often
STATE_RETRY_EVERY_S = 1.0      # failed state writes are tried again this often
WS_SUPERVISE_EVERY_S = 1.0     # how often the loop checks that the socket thread is alive
PROTECTIVE_RETRY_BASE_S = 5.0  # a missing exchange-side SL/TP is placed again after this...
PROTECTIVE_RETRY_MAX_S = 60.0  # ...doubling up to this while placements keep failing
ENTRY_EVAL_EVERY_S = 1.0       # strategies are asked at most this often between candle closes
ENTRY_COOLDOWN_S = 5.0         # no new entry this soon after a position closed (no churn)
STEP_BATCH = 64               # events handled per loop turn before the timers run
MAX_LOOP_WAIT_S = 0.25         # longest blocking get: bounds shutdown and timer latency


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class NotSent(Exception):
    """An order was not sent (nothing reached the exchange); the message says why."""


@dataclass
class OpenPosition:
    """The bot's position (main thread only). `trailing` carries the restart-safe high-water mark."""

    side: Literal["long", "short"]
    size: Decimal
    entry_px: Decimal
    opened_ms: int
    trailing: Any  # exits.TrailingStop | None
    protective_cloids: tuple[str, ...] = ()

    @property
    def is_buy_to_close(self) -> bool:
        return self.side == "short"


class TradingBot:
    """The main loop and everything it decides. Built by `main()`; `run()` blocks until stopped."""

    def __init__(self, settings: Settings, rest: Any, exchange: Any, store: StateWriter, strategy: Any,
                 exit_rules: Any, guard: Any, events: "queue.Queue[Any]", ws_client: Any,
                 address: str, stop_event: threading.Event,
                 clock: Callable[[], float] = time.monotonic,
                 now_ms: Callable[[], int] = wall_ms) -> None:
        from strategies import CandleSeries, interval_ms

        self.settings = settings
        self.symbol = settings.symbol
        self.rest = rest
        self.exchange = exchange
        self.store = store
        self.strategy = strategy
        self.exit_rules = exit_rules
        self.guard = guard
        self.events = events
        self.ws = ws_client
        self.address = address
        self.stop_event = stop_event
        self.clock = clock
        self.now_ms = now_ms
        self.paper = settings.dry_run
        self.candles = CandleSeries(interval_ms(settings.strategy.candle_interval), maxlen=500)

        self.started = clock()
        self.current_price: Decimal | None = None
        self.price_source = "none"
        self.price_at = 0.0
        self.last_market_data = clock()  # grace period: the stream gets stale_after to start
        self.fallback = not settings.websocket.enabled
        self.next_poll = clock()
        self.position: OpenPosition | None = None
        self.entries_enabled = True
        self.entry_blocked_until = 0.0
        self.next_exit_attempt = 0.0
        self.exit_failures = 0
        self.uncanceled: list[str] = []  # exchange-side orders whose cancel failed (main thread only)
        self.exit_cloid: str | None = None  # the next exit's cloid, already saved ("reserved")
        self.position_check_due: str | None = None  # why a position check is wanted at the next timer pass
        self.next_position_check = 0.0
        self.position_dirty = False  # the trailing high-water moved: saved by the timers, never before an exit
        self.unknown = UnknownOrders()  # orders sent whose result is not known yet
        self.info_hold_until = 0.0  # /info calls wait until then (after a failure or a 429, as a timer)
        self.info_failures = 0  # /info failures in a row
        self.protective_failures = 0  # exchange-side SL/TP placements that fell short, in a row
        self.protective_repair_at = 0.0  # when to place the missing exchange-side levels (0: none)
        self.handler_errors = 0  # events and timers that raised (logged; the loop went on)
        self.ws_restarts = 0
        self.next_ws_check = 0.0
        self.next_state_retry = 0.0
        self._quiet = RateLimitedLog(every_s=60.0, clock=clock)
        self.last_entry_eval = 0.0
        self.last_closed_candles = 0
        self.last_price_log = 0.0
        self.last_reconcile = clock()
        self.last_publish = 0.0
        self.ws_connected_once = False
        self.trades_seen = 0
        self._last_trade_ms = 0  # newest trade time folded into the candles
        self._tids_at_last_ms: set[int] = set()  # trades of that millisecond already folded in
        self.mode = "websocket" if settings.websocket.enabled else "rest"
        self._snapshot: Mapping[str, Any] = MappingProxyType({"status": "starting"})
        self._meta = rest.meta().asset(self.symbol)

    # ---- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Block until the stop event is set, handling events and timers as they come."""
        while not self.stop_event.is_set():
            self.step()
        log.info("stopping: entries disabled")

    def step(self, timeout_s: float | None = None) -> None:
        """One turn of the loop: wait for an event (blocking get), handle it and whatever else is
        already queued (up to a batch), then run the timers once. An event whose handler raises is
        logged and counted; the loop goes on."""
        timeout = self._next_wait() if timeout_s is None else timeout_s
        if self.settings.websocket.enabled:
            events = self.events
            try:
                event = events.get(timeout=timeout)
            except queue.Empty:
                event = None
            try:
                if event is not None:
                    self.handle(event)
                    for _ in range(STEP_BATCH - 1):  # a burst costs one timer pass, not one per event
                        try:
                            event = events.get_nowait()
                        except queue.Empty:
                            break
                        self.handle(event)
            except Exception as exc:  # noqa: BLE001 - one bad event must not end the loop
                self._failed_in_loop(f"handling {type(event).__name__}", exc)
        else:
            self.stop_event.wait(timeout)
        self._timers()

    def handle(self, event: Any) -> None:
        """Dispatch one event from the socket thread (by exact type: this is the hot path)."""
        _ev = stream
        kind = type(event)
        if kind is _ev.Trade:
            if event.coin == self.symbol:
                self._on_market_data()
                t = event.time_ms
                if t < self._last_trade_ms or (t == self._last_trade_ms and event.tid in self._tids_at_last_ms):
                    return  # already folded in (a replay after a reconnect) or out of order
                if t != self._last_trade_ms:
                    self._last_trade_ms = t
                    self._tids_at_last_ms.clear()
                self._tids_at_last_ms.add(event.tid)
                self.trades_seen += 1
                self.candles.add_trade(event.price, event.size, event.time_ms)
                # The replay sent after (re)subscribing is history for the candles, not a live price:
                # acting on it could fire a stop on a price from minutes ago. (Its newest trade is
                # not marked: that is the last price.)
                if not event.replay:
                    self.on_price(event.price, "websocket")
        elif kind is _ev.Fill:
            self._on_fill(event)
        elif kind is _ev.OrderUpdate:
            self._on_order_update(event)
        elif kind in (_ev.L2Book, _ev.Bbo, _ev.Mids):
            self._on_market_data()
        elif kind is _ev.Connected:
            self._on_connected()
        elif kind is _ev.StreamDown:
            self._enter_fallback(f"WebSocket down after {event.attempts} attempts")
        # Disconnected / StreamRecovered / SubscriptionFailed: the socket thread logged them; the
        # starvation rule decides the mode from data actually arriving.

    def _next_wait(self) -> float:
        now = self.clock()
        wait = MAX_LOOP_WAIT_S
        if self.fallback:
            wait = min(wait, max(0.0, self.next_poll - now))
        return wait

    def _timers(self) -> None:
        """Everything that is due, each on its own: one that raises cannot starve the others."""
        now = self.clock()
        for timer in (self._freshness_timer, self._exit_retry_timer, self._entry_timer, self._reserve_timer,
                      self._lookup_timer, self._position_check_timer, self._protective_timer, self._state_timer,
                      self._stream_timer, self._publish_timer):
            try:
                timer(now)
            except Exception as exc:  # noqa: BLE001 - logged with its traceback, counted
                self._failed_in_loop(timer.__name__, exc)

    def _failed_in_loop(self, what: str, exc: Exception) -> None:
        self.handler_errors += 1
        suppressed = self._quiet.allow(f"{what}:{type(exc).__name__}")
        if suppressed is not None:
            log.error("%s failed (%s: %s); the loop goes on (%d errors so far%s)", what, type(exc).__name__, exc,
                      self.handler_errors, f", {suppressed} like it not shown" if suppressed else "",
                      exc_info=exc)

    def _freshness_timer(self, now: float) -> None:
        ws = self.settings.websocket
        if ws.enabled and not self.fallback and now - self.last_market_data > ws.stale_after:
            self._enter_fallback(f"WebSocket starved for {ws.stale_after:.1f}s")
        if self.fallback and now >= self.next_poll:
            interval = ws.fallback_poll_interval if ws.enabled else self.settings.check_interval
            self.next_poll = now + interval
            self._poll_rest_price(now)

    def _exit_retry_timer(self, now: float) -> None:
        if self.position is not None and self.next_exit_attempt and now >= self.next_exit_attempt \
                and self.current_price is not None:
            self._check_exits(self.current_price)

    def _entry_timer(self, now: float) -> None:
        if self.position is None and self.current_price is not None:
            self._maybe_enter(now)

    def _reserve_timer(self, now: float) -> None:
        if self.position is not None and self.exit_cloid is None and self.store.writable:
            self._reserve_exit_cloid()

    def _position_check_timer(self, now: float) -> None:
        if now - self.last_reconcile >= RECONCILE_EVERY_S:
            self.last_reconcile = now
            self._want_position_check("periodic check")
        if self.position_check_due is None or now < self.next_position_check or self._info_held(now):
            return
        reason, self.position_check_due = self.position_check_due, None
        self.next_position_check = now + POSITION_CHECK_SPACING_S
        done = False
        try:
            done = self._reconcile_position(reason=reason)
        finally:
            if not done:  # failed or raised: tried again after the spacing (or the /info hold)
                self._want_position_check(reason)

    def _state_timer(self, now: float) -> None:
        if self.position_dirty and self.position is not None:
            self.position_dirty = False
            self.store.save_position(self._position_record())  # a failure is kept and retried below
        if (self.store.pending or not self.store.writable) and now >= self.next_state_retry:
            self.next_state_retry = now + STATE_RETRY_EVERY_S
            self.store.retry()

    def _stream_timer(self, now: float) -> None:
        """The socket thread must never be gone for good: a dead one is replaced."""
        ws = self.ws
        if ws is None or now < self.next_ws_check:
            return
        self.next_ws_check = now + WS_SUPERVISE_EVERY_S
        if ws.thread_died() and not self.stop_event.is_set():
            self.ws_restarts += 1
            log.error("WebSocket thread is gone; starting a new one (restart %d)", self.ws_restarts)
            self.ws = ws.restarted()
            self.ws.start()

    def _publish_timer(self, now: float) -> None:
        if now - self.last_publish >= HEALTH_PUBLISH_EVERY_S:
            self.last_publish = now
            self.publish_health()

    def _want_position_check(self, reason: str) -> None:
        """Ask the exchange for the position at the next timer pass (one check for a burst of causes)."""
        if self.position_check_due is None:
            self.position_check_due = reason

    def _info_held(self, now: float) -> bool:
        return now < self.info_hold_until

    def _rest_ok(self) -> None:
        self.info_failures = 0

    def _rest_failed(self, what: str, exc: HyperliquidError) -> None:
        """Log a failed /info call (once a minute per kind) and pause /info calls, as a timer: for
        a 429's Retry-After (capped), else backing off from 0.5 s to 5 s while they keep failing,
        so that a hung exchange costs the loop one deadline per pause, not one per timer."""
        self.info_failures += 1
        if isinstance(exc, RateLimited):
            hold_s = min(exc.retry_after_s, INFO_HOLD_MAX_S)
        else:
            hold_s = min(INFO_FAIL_HOLD_BASE_S * 2 ** (self.info_failures - 1), INFO_FAIL_HOLD_MAX_S)
        self.info_hold_until = max(self.info_hold_until, self.clock() + hold_s)
        extra = f"; /info paused {hold_s:.1f}s (exits are not)"
        suppressed = self._quiet.allow(f"rest:{what}")
        if suppressed is not None:
            log.warning("%s failed: %s%s%s", what, exc, extra, f" ({suppressed} more failures)" if suppressed else "")

    # ---- prices ----------------------------------------------------------------------------

    def _on_market_data(self) -> None:
        self.last_market_data = self.clock()
        if self.fallback and self.settings.websocket.enabled:
            self.fallback = False
            self.mode = "websocket"
            log.info("WebSocket recovered; leaving REST fallback")

    def _enter_fallback(self, why: str) -> None:
        if self.fallback:
            return
        self.fallback = True
        self.mode = "rest_fallback"
        self.next_poll = self.clock()
        log.warning("%s; falling back to REST polling", why)

    def _poll_rest_price(self, now: float) -> None:
        if self._info_held(now):
            return
        try:
            price = self.rest.mid(self.symbol)
        except HyperliquidError as exc:
            self._rest_failed("REST price poll", exc)
            return
        self._rest_ok()
        if price is None:
            log.warning("REST price poll: no mid for %s", self.symbol)
            return
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
                log.info("📡 Real-time price update: $%.2f", price)
            else:
                log.info("REST price update: $%.2f", price)
        if self.position is not None:
            self._check_exits(price)

    # ---- exits -----------------------------------------------------------------------------

    def _check_exits(self, price: Decimal) -> None:
        """Move the trailing stop and decide; the high-water mark is saved by the timers, after."""
        from exits import PositionView
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
        if decision is not None:
            self._exit(decision, price)

    def _exit(self, decision: Any, price: Decimal) -> None:
        pos = self.position
        assert pos is not None
        self.guard.check_exit(self.now_ms())
        signal = ("exit signal %s: price %s crossed %s (entry %s, %s %s)", decision.reason, price,
                  decision.trigger_price, pos.entry_px, pos.side, pos.size)
        try:
            filled, avg_px = self._send_ioc(is_buy=pos.is_buy_to_close, size=pos.size, price=price,
                                            reduce_only=True, purpose="exit")
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
        remaining = pos.size - filled
        if remaining > 0:
            pos.size = remaining
            self.position_dirty = True
            log.warning("exit partially filled: %s of %s at %s; the rest stays protected",
                        filled, filled + remaining, avg_px)
            return
        log.info("position closed by %s: %s %s at %s (entry %s)", decision.reason, pos.side, filled,
                 avg_px, pos.entry_px)
        self._closed()

    def _closed(self) -> None:
        """The position is gone (our exit, or the exchange's stop): forget it, pause entries, then
        cancel its exchange-side orders (network calls, after the state is right)."""
        pos, self.position = self.position, None
        self.position_dirty = False
        self.entry_blocked_until = self.clock() + ENTRY_COOLDOWN_S
        self.next_exit_attempt = 0.0  # a backoff from this position must not mute the next one's stops
        self.exit_failures = 0
        self.protective_repair_at, self.protective_failures = 0.0, 0
        self.store.clear_position()
        self._drop_exit_reservation()  # not needed: the exchange's stop or a manual close came first
        if pos is not None:
            self._cancel_protective(pos)

    def _exit_failed(self, why: str) -> None:
        """Retry soon (the exchange may be back any moment) and ask the exchange where the position
        stands: an exit with an unknown result, or one refused as reduce-only, may mean it is gone."""
        self.exit_failures += 1
        delay = min(EXIT_RETRY_BASE_S * 2 ** (self.exit_failures - 1), EXIT_RETRY_MAX_S)
        self.next_exit_attempt = self.clock() + delay
        self._want_position_check("exit failed")
        self.next_position_check = 0.0  # at once, not after the spacing
        log.error("EXIT FAILED (%s), attempt %d; retrying in %.1fs; the exchange-side stop is the "
                  "backstop", why, self.exit_failures, delay)

    # ---- entries ---------------------------------------------------------------------------

    def _maybe_enter(self, now: float) -> None:
        if not self.entries_enabled or now < self.entry_blocked_until:
            return
        if self.unknown.has("entry") or self.unknown.has("exit") or self.position_check_due is not None:
            # An entry that may have filled, an exit still able to close a new position, or a
            # position not confirmed yet: wait for the exchange.
            return
        if self.uncanceled:
            self._cancel_cloids(list(self.uncanceled))
            if self.uncanceled:
                self.entry_blocked_until = now + EXIT_RETRY_BASE_S * 10
                return
        closed = self.candles.closed_count
        if closed == self.last_closed_candles and now - self.last_entry_eval < ENTRY_EVAL_EVERY_S:
            return
        self.last_closed_candles = closed
        self.last_entry_eval = now
        assert self.current_price is not None
        signal_ = self.strategy.on_candles(self.candles.closed(), self.current_price, False)
        if signal_ is None:
            return
        self._enter(signal_, self.current_price)

    def _enter(self, side: Literal["long", "short"], price: Decimal) -> None:
        from exits import TrailingStop
        from sizing import order_size
        trading = self.settings.trading
        try:
            size = order_size(trading.order_size_usd, price, self._meta.sz_decimals)
        except ValueError as exc:
            log.warning("entry skipped: %s", exc)
            return
        refusal = self.guard.check_entry(self.unknown.notional_usd("entry"), size * price, self.now_ms())
        if refusal:
            log.warning("entry refused by risk guard: %s", refusal)
            return
        log.info("entry signal %s at %s (strategy %s)", side, price, self.strategy.name)
        try:
            filled, avg_px = self._send_ioc(is_buy=side == "long", size=size, price=price,
                                            reduce_only=False, purpose="entry")
        except NotSent as exc:
            log.error("entry not sent: %s", exc)
            return
        except OrderStatusUnknown as exc:
            log.error("entry order: %s; no entry until the exchange says what became of it", exc)
            return
        except HyperliquidError as exc:
            log.error("entry order not executed: %s", exc)
            return
        if filled <= 0:
            log.warning("entry order not filled (IOC at %s)", price)
            return
        self.position = OpenPosition(side=side, size=filled, entry_px=avg_px, opened_ms=self.now_ms(),
                                     trailing=None)  # first: whatever raises next, the fill is a position
        if trading.trailing_stop_pct is not None:
            self.position.trailing = TrailingStop(side, trading.trailing_stop_pct, avg_px,
                                                  activation_offset_pct=trading.trailing_offset_pct)
        log.info("position opened: %s %s %s at %s", side, filled, self.symbol, avg_px)
        self.store.save_position(self._position_record())  # before the stops' round trips
        self._place_protective()
        self.store.save_position(self._position_record())  # with the stops' cloids

    # ---- orders ----------------------------------------------------------------------------

    def _reserve_exit_cloid(self) -> None:
        """Save the next exit's cloid now, while nothing is urgent, so that the exit sends with no
        write first (~0.2 ms) and a crash right after it still leaves the cloid to look up."""
        pos = self.position
        assert pos is not None
        record = OrderRecord.new(cloid=new_cloid(), coin=self.symbol, side="buy" if pos.is_buy_to_close else "sell",
                                 size=pos.size, limit_px=Decimal(0), reduce_only=True, purpose="exit",
                                 created_ms=self.now_ms(), status="reserved")
        if self.store.save_order(record):
            self.exit_cloid = record.cloid

    def _retire_reserved(self, record: OrderRecord) -> None:
        self.store.save_order(record.to("canceled", self.now_ms(), reason="reserved, not used"))

    def _drop_exit_reservation(self) -> None:
        """The reserved exit cloid no longer fits (the position closed or changed): retire it; the
        timers reserve one for the next position."""
        if self.exit_cloid is not None:
            record = self.store.order(self.exit_cloid)
            if record is not None and record.status == "reserved":
                self._retire_reserved(record)
            self.exit_cloid = None

    def _send_ioc(self, is_buy: bool, size: Decimal, price: Decimal, reduce_only: bool,
                  purpose: str) -> tuple[Decimal, Decimal]:
        """Send an IOC order; return (filled size, average price) from the exchange's answer.

        An entry's cloid is saved before sending (NotSent if the disk refuses); an exit never waits
        on the disk: it uses the cloid reserved for it, or a fresh one saved after sending.
        Raises OrderStatusUnknown (the order is then tracked until a lookup settles it) or another
        HyperliquidError (not executed)."""
        cloid = self.exit_cloid if purpose == "exit" else None
        reserved = cloid is not None
        if cloid is None:
            cloid = new_cloid()
        else:
            self.exit_cloid = None  # used once, whatever happens next
        record = OrderRecord.new(cloid=cloid, coin=self.symbol, side="buy" if is_buy else "sell",
                                 size=size, limit_px=price, reduce_only=reduce_only, purpose=purpose,
                                 created_ms=self.now_ms(), status="reserved" if reserved else "pending")
        if purpose == "entry":
            if not self.store.save_order(record):  # saved before sending: a crash now is looked up by cloid
                raise NotSent(f"its cloid could not be saved ({self.store.error})")
            self.guard.record_order(self.now_ms())  # counts whatever the outcome
        try:
            results = self.exchange.market_order(self.symbol, is_buy, size, self.settings.trading.slippage_pct,
                                                 reference_px=price, reduce_only=reduce_only, cloid=cloid)
            result = results[0]
        except OrderStatusUnknown as exc:
            self._in_doubt(record, exc, size * price)
            raise
        except HyperliquidError as exc:
            self.store.save_order(record.rejected(f"not executed: {exc}"[:300], self.now_ms()))
            raise
        except Exception as exc:  # noqa: BLE001 - a bug or an answer nobody foresaw: it may have filled
            unknown = OrderStatusUnknown(cloid, self._expiry_bound_ms(), f"{type(exc).__name__}: {exc}")
            log.error("%s order %s: unexpected %s after sending; its result is unknown", purpose, cloid,
                      type(exc).__name__, exc_info=exc)
            self._in_doubt(record, unknown, size * price)
            raise unknown from exc
        if result.kind == "resting":  # an IOC cannot rest: an answer we do not understand
            unknown = OrderStatusUnknown(cloid, self._expiry_bound_ms(), "an IOC answered as resting")
            self._in_doubt(record, unknown, size * price)
            raise unknown
        if result.kind == "filled":
            record = record.filled_by_result(result.total_size, result.avg_px, self.now_ms())
            self.store.save_order(record)
            if self.paper:
                self._journal_paper_fill(record, result)
            return result.total_size, result.avg_px
        record = record.rejected(result.message or result.kind, self.now_ms())
        self.store.save_order(record)
        log.warning("%s order %s: %s", purpose, result.kind, result.message)
        return Decimal(0), Decimal(0)

    # ---- orders whose result is unknown ----------------------------------------------------

    def _expiry_bound_ms(self) -> int:
        """The latest expiresAfter an order signed by now can carry."""
        return self.now_ms() + int(self.settings.api.order_expires_after_s * 1000)

    def _in_doubt(self, record: OrderRecord, exc: OrderStatusUnknown, notional_usd: Decimal) -> None:
        """Track an order that may have filled until a lookup by cloid settles it; meanwhile no
        entry goes out and the position is checked."""
        self.store.save_order(record.to("unknown", self.now_ms(), reason=str(exc)[:300]))
        self.unknown.add(UnknownOrder(
            cloid=record.cloid, purpose=record.purpose, is_buy=record.side == "buy", size=record.size,
            notional_usd=notional_usd, created_ms=record.created_ms, expires_after_ms=exc.expires_after_ms,
            next_lookup_s=first_lookup_s(self.clock()), since_s=self.clock()))
        self._want_position_check(f"{record.purpose} result unknown")

    def _lookup_timer(self, now: float) -> None:
        """One lookup per pass: each is up to two /info round trips, and exits must not queue behind."""
        due = self.unknown.due(now)
        if due and not self._info_held(now):
            self._look_up(due[0], now)

    def _look_up(self, order: UnknownOrder, now: float) -> None:
        """Ask the exchange about one unknown order by cloid, and its fills when it says it has ended."""
        order.failures += 1
        order.next_lookup_s = after_failure_s(order, now)  # unless it succeeds: nothing re-fires each turn
        try:
            status = self.rest.order_status(self.address, order.cloid)
            fills = [] if status.status in ("unknownOid", "open", "triggered") else self._fills_of(order, status.order)
        except HyperliquidError as exc:
            self._rest_failed(f"lookup of order {order.cloid}", exc)
            return
        self._rest_ok()
        order.failures = 0
        order.lookups += 1
        result = settle(order, status.status, fills, self.now_ms())
        if result.verdict == "wait":
            order.next_lookup_s = after_wait_s(order, now, self.now_ms())
            return
        self.unknown.remove(order.cloid)
        self._settled(order, result)

    def _fills_of(self, order: UnknownOrder, exchange_order: Mapping[str, Any] | None) -> list[tuple[Decimal, Decimal]]:
        """(size, price) of the order's fills, from the exchange's fill list (journaled on the way)."""
        oid = ((exchange_order or {}).get("order") or {}).get("oid")
        fills = self.rest.user_fills_by_time(self.address, order.created_ms - 60_000)
        mine = [f for f in fills if f.cloid == order.cloid or (oid is not None and f.oid == oid)]
        for f in mine:
            self._journal_fill(f)
        return [(f.size, f.px) for f in mine]

    def _settled(self, order: UnknownOrder, result: Settlement) -> None:
        record = self.store.order(order.cloid)
        now_ms = self.now_ms()
        verdict = result.verdict
        if verdict == "never_executed" and record is not None and record.status == "reserved":
            self._retire_reserved(record)  # saved ahead of need and never sent
            return
        log.warning("%s order %s had an unknown result; the exchange says %s%s", order.purpose, order.cloid,
                    result.exchange_status, f": filled {result.filled_size} at {result.avg_px}"
                    if verdict == "executed" else " (it can no longer execute)" if verdict == "never_executed" else "")
        if verdict != "never_executed":
            self._want_position_check(f"{order.purpose} order {order.cloid} {verdict}")
        if order.purpose in ("sl", "tp") and verdict in ("never_executed", "not_filled") \
                and self.position is not None and order.cloid in self.position.protective_cloids:
            self._schedule_protective_repair()  # that level does not rest: place it again
        if record is None:
            return
        try:
            if verdict == "executed":
                assert result.avg_px is not None
                record = record.filled_by_result(result.filled_size, result.avg_px, now_ms)
            elif verdict == "filled_unpriced":
                record = record.to("filled", now_ms, reason="filled; its fills not found (position from the exchange)")
            elif verdict == "resting":
                record = record.to("resting", now_ms)
            elif verdict == "never_executed":
                record = record.rejected("never reached the exchange", now_ms)
            else:
                record = record.to("canceled", now_ms, reason=result.exchange_status or "not filled")
        except InvalidTransition:
            return  # already settled another way (a fill on the stream, a start-up lookup)
        self.store.save_order(record)

    def _journal_paper_fill(self, record: Any, result: Any) -> None:
        from paper import PaperExchange
        self.store.record_fill(tid=f"paper-{record.cloid}", coin=self.symbol, px=result.avg_px,
                               size=result.total_size, side=record.side, time_ms=self.now_ms(),
                               oid=result.oid, cloid=record.cloid,
                               fee=PaperExchange.fee(result.total_size, result.avg_px),
                               closed_pnl=None, paper=True)

    def _place_protective(self, keep: tuple[str, ...] = ()) -> None:
        """Exchange-side SL/TP trigger orders: the backstop while the bot is down. `keep`: cloids
        of ours still resting (or in doubt); only the levels they do not cover are placed. A level
        not placed is tried again later (`_protective_timer`)."""
        pos = self.position
        if pos is None or not self.settings.trading.exits_on_exchange or self.paper:
            return
        levels = self.exit_rules.levels(pos.side, pos.entry_px)
        cloids = list(keep)
        covered = {record.purpose for record in map(self.store.order, keep) if record is not None}
        missing = False
        for tpsl, key in (("sl", "stop_loss"), ("tp", "take_profit")):
            level = levels.get(key)
            if level is None or tpsl in covered:
                continue
            cloid = self._place_trigger(pos, tpsl, level)
            if cloid is None:
                missing = True
            else:
                cloids.append(cloid)
        pos.protective_cloids = tuple(cloids)
        if missing:
            self._schedule_protective_repair()
        else:
            self.protective_failures = 0

    def _place_trigger(self, pos: OpenPosition, tpsl: str, level: Decimal) -> str | None:
        """Place one reduce-only trigger order; its cloid if it rests or may rest, None if not."""
        from signing import round_price
        cloid = new_cloid()
        try:
            px = round_price(level, self._meta.sz_decimals)
        except ValueError as exc:
            log.error("exchange-side %s not placed: %s", tpsl, exc)
            return None
        # Saved before sending, like every order: a crash before the position (with this cloid) is
        # saved would otherwise leave a stop no later run knows about, to fire on a later position
        # at a stale level. The next start finds it by cloid and cancels it.
        record = OrderRecord.new(cloid=cloid, coin=self.symbol, side="buy" if pos.is_buy_to_close else "sell",
                                 size=pos.size, limit_px=px, reduce_only=True, purpose=tpsl, created_ms=self.now_ms())
        self.store.save_order(record)
        try:
            results = self.exchange.trigger_order(self.symbol, pos.is_buy_to_close, pos.size, px, tpsl,
                                                  is_market=True, reduce_only=True, cloid=cloid)
        except OrderStatusUnknown as exc:
            # Maybe resting: tracked (closing the position cancels it anyway) and looked up.
            log.error("exchange-side %s: result unknown (%s); tracked by cloid %s", tpsl, exc, cloid)
            self._in_doubt(record, exc, pos.size * px)
            return cloid
        except HyperliquidError as exc:
            log.error("exchange-side %s not placed: %s", tpsl, exc)
            self.store.save_order(record.rejected(f"not executed: {exc}"[:300], self.now_ms()))
            return None
        if results[0].kind == "error":
            self.store.save_order(record.rejected(results[0].message or "rejected", self.now_ms()))
            log.error("exchange-side %s rejected: %s", tpsl, results[0].message)
            return None
        self.store.save_order(record.to("resting", self.now_ms(), oid=results[0].oid))
        log.info("exchange-side %s placed at %s (cloid %s)", tpsl, px, cloid)
        return cloid

    def _schedule_protective_repair(self) -> None:
        self.protective_failures += 1
        delay_s = min(PROTECTIVE_RETRY_BASE_S * 2 ** (self.protective_failures - 1), PROTECTIVE_RETRY_MAX_S)
        self.protective_repair_at = self.clock() + delay_s
        log.warning("exchange-side SL/TP incomplete; trying again in %.0fs", delay_s)

    def _protective_timer(self, now: float) -> None:
        """Place the exchange-side levels that are missing (not placed, rejected, or found never
        to have reached the exchange), keeping those that rest or may rest."""
        pos = self.position
        if pos is None or not self.protective_repair_at or now < self.protective_repair_at:
            return
        self.protective_repair_at = 0.0
        alive = tuple(c for c in pos.protective_cloids
                      if (record := self.store.order(c)) is not None and not record.is_terminal)
        self._place_protective(keep=alive)
        self.position_dirty = True

    def _cancel_protective(self, pos: OpenPosition) -> None:
        self._cancel_cloids(pos.protective_cloids)

    def _cancel_cloids(self, cloids: Iterable[str]) -> None:
        """Cancel our exchange-side orders; one that could not be canceled is retried before the
        next entry, which waits for it: a stale reduce-only stop would close the new position."""
        for cloid in cloids:
            try:
                canceled = self.exchange.cancel_by_cloid(self.symbol, cloid)
            except HyperliquidError as exc:
                if cloid not in self.uncanceled:  # warned once; the retries before each entry stay quiet
                    log.warning("could not cancel exchange-side order %s: %s; entries wait until it is canceled",
                                cloid, exc)
                    self.uncanceled.append(cloid)
                else:
                    log.debug("cancel of %s failed again: %s", cloid, exc)
                continue
            if cloid in self.uncanceled:
                self.uncanceled.remove(cloid)
                log.info("exchange-side order %s canceled on retry; entries resume", cloid)
            record = self.store.order(cloid)
            if canceled and record is not None and not record.is_terminal:
                self.store.save_order(record.to("canceled", self.now_ms(), reason="position closed"))

    def _check_protective_orders(self) -> None:
        """Start-up: hold the exchange's resting orders against ours.

        The position's SL/TP must rest on the exchange (placed again if not), and every SL/TP we
        placed that guards nothing any more is canceled: a crash between placing a stop and saving
        the position's list of them leaves such an order behind (its cloid was saved before sending).
        Left alone it could close a later position at a stale level.
        """
        if self.paper or not self.settings.trading.exits_on_exchange:
            return
        try:
            open_cloids = {o.cloid for o in self.rest.open_orders(self.address) if o.cloid}
        except HyperliquidError as exc:
            log.warning("open-order check failed: %s; stale exchange-side orders stay until the next start", exc)
            return
        pos = self.position
        if pos is not None and (not pos.protective_cloids or not set(pos.protective_cloids) <= open_cloids):
            resting = tuple(c for c in pos.protective_cloids if c in open_cloids)
            log.warning("the exchange-side SL/TP of the %s %s position are not all resting; placing the "
                        "missing ones", pos.side, pos.size)
            self._place_protective(keep=resting)  # a resting stop stays until its twin is in place
            self.store.save_position(self._position_record())
        keep = set(pos.protective_cloids) if pos is not None else set()
        for record in self.store.orders(statuses=("resting",)):
            if record.purpose not in ("sl", "tp") or record.cloid in keep:
                continue
            try:
                if record.cloid in open_cloids:
                    if self.exchange.cancel_by_cloid(record.coin, record.cloid):
                        log.warning("canceled a stale exchange-side %s (cloid %s) left by an earlier run",
                                    record.purpose, record.cloid)
                        self.store.save_order(record.to("canceled", self.now_ms(), reason="stale"))
                    continue
                status = self.rest.order_status(self.address, record.cloid)  # gone: filled or canceled
            except HyperliquidError as exc:
                log.warning("stale exchange-side order %s: %s; left for the next start", record.cloid, exc)
                continue
            try:
                self.store.save_order(record.resolved_by_status(status.status, self.now_ms()))
            except InvalidTransition:
                pass

    # ---- stream events for the account -----------------------------------------------------

    def _on_fill(self, fill: Any) -> None:
        if fill.coin != self.symbol:
            return
        new = self.store.record_fill(tid=str(fill.tid), coin=fill.coin, px=fill.price, size=fill.size,
                                     side=fill.side, time_ms=fill.time_ms, oid=fill.oid, cloid=fill.cloid,
                                     fee=fill.fee, closed_pnl=fill.closed_pnl, paper=False)
        if new is False:
            return  # journaled before (None: not written yet, but new to us)
        if fill.cloid is not None and fill.cloid in self.unknown:
            log.warning("fill of an order whose result was unknown (%s): %s %s at %s; checking the position",
                        fill.cloid, fill.side, fill.size, fill.price)
            self._want_position_check("fill of an order whose result was unknown")
            return
        record = self.store.order(fill.cloid) if fill.cloid else None
        if record is not None and record.purpose in ("sl", "tp") and not record.is_terminal:
            self.store.save_order(record.to("filled", self.now_ms()))  # else the next start asks the exchange
        # A fill we had not journaled and did not just send an IOC for (our entries and exits have
        # order records of that purpose) changed the position behind our back: a manual trade (even
        # while flat: a position may exist now), an exchange-side stop, or one left by a killed run.
        # The snapshot counts too: a stop that fired during start-up arrives only there, and without
        # this the bot kept a position it no longer had.
        stop_fill = record is not None and record.purpose in ("sl", "tp") and self.position is not None
        if record is None or stop_fill:
            what = "an order the bot did not send" if record is None else f"exchange-side {record.purpose}"
            log.warning("%s filled: %s %s at %s; reconciling", what, fill.side, fill.size, fill.price)
            self._want_position_check(f"{what} filled")  # once after the batch, not once per fill
        elif record.purpose in ("entry", "exit") and record.status != "filled":
            # Our own order, filled, though we took it as not filled: believe the exchange.
            log.warning("fill of our %s order %s, which we had as %s: %s %s at %s; checking the position",
                        record.purpose, record.cloid, record.status, fill.side, fill.size, fill.price)
            self._want_position_check(f"fill of our {record.purpose} order we had as {record.status}")

    def _on_order_update(self, update: Any) -> None:
        if update.cloid is None:
            return
        record = self.store.order(update.cloid)
        if record is None:
            return
        log.debug("order update %s: %s", update.cloid, update.status)

    def _on_connected(self) -> None:
        if self.ws_connected_once and not self.paper:
            # orderUpdates/userEvents are not replayed on resubscribe: check over REST.
            self._reconcile_fills()
            self._want_position_check("after reconnect")
        self.ws_connected_once = True

    # ---- reconciliation --------------------------------------------------------------------

    def reconcile_at_start(self) -> None:
        """Compare saved state with the exchange; the exchange is the truth. Logs every difference."""
        from exits import TrailingStop
        saved = self.store.load_position()
        if saved is not None and saved.coin == self.symbol:
            trailing = None
            if self.settings.trading.trailing_stop_pct is not None:
                trailing = TrailingStop(saved.side, self.settings.trading.trailing_stop_pct, saved.entry_px,
                                        activation_offset_pct=self.settings.trading.trailing_offset_pct,
                                        high_water=saved.high_water)
            self.position = OpenPosition(side=saved.side, size=saved.size, entry_px=saved.entry_px,
                                         opened_ms=saved.opened_ms, trailing=trailing,
                                         protective_cloids=tuple(saved.protective_cloids))
            log.info("resumed saved position: %s %s at %s, high-water %s", saved.side, saved.size,
                     saved.entry_px, saved.high_water)
        if self.paper:
            return  # reserved cloids stay for a live start to look up: one may be a live exit's
        self._resolve_unknown_orders()
        self._reconcile_fills()
        if not self._reconcile_position(reason="start-up"):
            self._want_position_check("start-up")  # the loop's timers try again
        self._check_protective_orders()
        pos = self.position
        # One line marking the end of start-up reconciliation (the crash test times stop coverage by it).
        log.info("start-up reconciliation done: %s", "flat" if pos is None else
                 f"{pos.side} {pos.size} at {pos.entry_px}, exchange-side orders {list(pos.protective_cloids)}")

    def _resolve_unknown_orders(self) -> None:
        """Orders saved with no known result at the last stop: looked up by cloid, never re-sent.
        Those the exchange cannot settle yet stay in doubt; the loop's timers ask again."""
        expiry_ms = int(self.settings.api.order_expires_after_s * 1000)
        now, now_ms = self.clock(), self.now_ms()
        for record in self.store.orders(statuses=("reserved", "pending", "submitted", "unknown")):
            # A pending record is saved just before its order is sent, so its order expires by
            # created + expiry. A reserved cloid may have been sent any time up to the last stop:
            # only now + expiry bounds that.
            sent_by_ms = now_ms if record.status == "reserved" else record.created_ms
            order = UnknownOrder(cloid=record.cloid, purpose=record.purpose, is_buy=record.side == "buy",
                                 size=record.size, notional_usd=record.size * record.limit_px,
                                 created_ms=record.created_ms, expires_after_ms=sent_by_ms + expiry_ms,
                                 next_lookup_s=now, since_s=now)
            self.unknown.add(order)
            if record.status != "reserved":
                log.warning("order %s (%s %s) had no result at the last stop; asking the exchange",
                            record.cloid, record.purpose, record.side)
            self._look_up(order, now)

    def _reconcile_fills(self) -> bool:
        """Journal the fills the stream may have missed (since the newest journaled one)."""
        if self._info_held(self.clock()):
            return False
        since = self.store.last_fill_time_ms()
        start = since if since is not None else self.now_ms() - 24 * 3600 * 1000
        try:
            fills = self.rest.user_fills_by_time(self.address, start)
        except HyperliquidError as exc:
            self._rest_failed("fill reconciliation", exc)
            return False
        self._rest_ok()
        added = sum(1 for f in fills if f.coin == self.symbol and self._journal_fill(f))
        if added:
            log.info("reconciled %d fill(s) the stream had not delivered", added)
        return True

    def _journal_fill(self, f: Any) -> bool:
        """Journal a fill fetched over REST; True when it was new."""
        return self.store.record_fill(tid=f.dedupe_key, coin=f.coin, px=f.px, size=f.size, side=f.side,
                                      time_ms=f.time_ms, oid=f.oid, cloid=f.cloid, fee=f.fee,
                                      closed_pnl=f.closed_pnl, paper=False) is not False

    def _reconcile_position(self, reason: str) -> bool:
        """Adopt the exchange's position for our symbol, logging any difference. False: the
        exchange could not be asked."""
        from exits import TrailingStop
        if self.paper:
            return True
        if self._info_held(self.clock()):
            return False
        try:
            state = self.rest.clearinghouse_state(self.address)
        except HyperliquidError as exc:
            self._rest_failed(f"position check ({reason})", exc)
            return False
        self._rest_ok()
        ours = next((p for p in state.positions if p.coin == self.symbol and p.size != 0), None)
        pos = self.position
        if ours is None:
            if pos is not None:
                log.warning("%s: the exchange has no %s position but we had %s %s; it was closed "
                            "outside the bot (exchange-side stop?); adopting flat", reason, self.symbol,
                            pos.side, pos.size)
                self._closed()
            return True
        side: Literal["long", "short"] = "long" if ours.size > 0 else "short"
        size = abs(ours.size)
        if pos is not None and pos.side == side and pos.size == size:
            return True
        trading = self.settings.trading
        high_water = pos.trailing.high_water if pos is not None and pos.trailing is not None \
            and pos.side == side else None
        trailing = None
        if trading.trailing_stop_pct is not None:
            trailing = TrailingStop(side, trading.trailing_stop_pct, ours.entry_px,
                                    activation_offset_pct=trading.trailing_offset_pct, high_water=high_water)
        log.warning("%s: adopting the exchange's position %s %s at %s (we had %s)", reason, side, size,
                    ours.entry_px, f"{pos.side} {pos.size}" if pos else "none")
        self._drop_exit_reservation()  # reserved for the old side and size
        self.position = OpenPosition(side=side, size=size, entry_px=ours.entry_px, opened_ms=self.now_ms(),
                                     trailing=trailing)
        self._place_protective()
        if pos is not None and pos.protective_cloids:
            # Sized and sided for the old position: a flipped one could never trigger them, a grown
            # one would be partly unprotected. Replaced, the new ones first (all are reduce-only).
            self._cancel_protective(pos)
        self.store.save_position(self._position_record())
        return True

    # ---- persistence and health ------------------------------------------------------------

    def _position_record(self) -> Any:
        from state import SavedPosition
        pos = self.position
        assert pos is not None
        return SavedPosition(coin=self.symbol, side=pos.side, size=pos.size, entry_px=pos.entry_px,
                             high_water=pos.trailing.high_water if pos.trailing else None,
                             opened_ms=pos.opened_ms, protective_cloids=pos.protective_cloids)

    def publish_health(self) -> None:
        """Publish what /health needs as an immutable snapshot with monotonic stamps, not ages:
        the health thread computes ages when asked, so a stalled loop shows (health.render)."""
        now = self.clock()
        stats = self.ws.stats() if self.ws is not None else None
        ws = self.settings.websocket
        fresh_limit = ws.stale_after + ws.fallback_poll_interval * 2 if ws.enabled else self.settings.check_interval * 2
        pos = self.position
        snapshot = {
            "published_at_s": now,
            "started_at_s": self.started,
            "symbol": self.symbol,
            "current_price": float(self.current_price) if self.current_price is not None else None,
            "price_source": "rest" if self.price_source == "rest" else "websocket",
            "price_at_s": self.price_at if self.current_price is not None else None,
            "price_fresh_limit_s": fresh_limit,
            "mode": self.mode,
            "dry_run": self.paper,
            "websocket": self._stream_health(stats, now),
            "position": None if pos is None else {
                "side": pos.side, "size": float(pos.size), "entry_px": float(pos.entry_px),
                "high_water": float(pos.trailing.high_water) if pos.trailing and pos.trailing.high_water else None,
            },
            "exit_failures": self.exit_failures,
            "state_writable": self.store.writable,
            "state_error": self.store.error,
            "handler_errors": self.handler_errors,
            "unknown_orders": len(self.unknown),
            "oldest_unknown_order_at_s": self.unknown.oldest_since_s(),
            "trades_seen": self.trades_seen,
            "rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
        self._snapshot = MappingProxyType(snapshot)

    def _stream_health(self, stats: Any, now: float) -> dict[str, Any]:
        age_s = stats.last_message_age_s if stats is not None else None
        return {
            "enabled": self.settings.websocket.enabled,
            "connected": stats is not None and stats.connected,
            "subscriptions": stats.subscriptions_confirmed if stats else 0,
            "last_message_at_s": None if age_s is None else now - age_s,
            "reconnects": stats.reconnects if stats else 0,
            "fallback": self.fallback and self.settings.websocket.enabled,
            "dropped_market_data": stats.dropped_market_data if stats else 0,
            "parse_errors": stats.parse_errors_total if stats else 0,
            "queue_depth": self.events.qsize(),
            "internal_errors": getattr(stats, "internal_errors", 0),
            "thread_restarts": self.ws_restarts,
        }

    def health_snapshot(self) -> Mapping[str, Any]:
        """Called from the health thread: returns the last published immutable snapshot."""
        return self._snapshot

    def shutdown(self) -> None:
        """After the loop: save the position, journal fills already received (market data is
        dropped; no order goes out now), publish a last health snapshot."""
        _ev = stream
        if self.position is not None:
            self.store.save_position(self._position_record())
        journaled = 0
        try:
            for _ in range(self.events.maxsize or 10_000):
                try:
                    event = self.events.get_nowait()
                except queue.Empty:
                    break
                if type(event) is _ev.Fill:
                    self._on_fill(event)
                    journaled += 1
        except Exception as exc:  # in a `finally`: must not hide why the loop ended
            log.error("stopping: journaling queued fills failed (%s); the next start fetches them", exc)
        if journaled:
            log.info("stopping: %d queued fill(s) journaled; the next start checks the position", journaled)
        self.store.retry()
        if self.store.pending:
            log.error("stopping: %d state write(s) could not be saved (%s); the next start reconciles with "
                      "the exchange", self.store.pending, self.store.error)
        self.publish_health()


# ---- wiring ----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="trading_bot.py", description="hlbot: a Hyperliquid trading bot")
    parser.add_argument("--config", required=True, help="path to a .json, .yaml or .yml config")
    parser.add_argument("--dry-run", action="store_true", help="paper trading whatever the config says")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config, print the resolved settings and exit (0 valid, 2 not)")
    parser.add_argument("--report", action="store_true", help="print the trade journal and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args.config)
        if args.dry_run:
            settings = with_dry_run(settings)
        key = load_private_key(settings)
    except ConfigError as exc:
        print(f"config: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(json.dumps(resolved_view(settings, key is not None), indent=2))
        return 0
    if args.report:
        return print_report(settings)
    from logsetup import setup_logging
    setup_logging(settings.logging)
    return run_bot(settings, key)


def print_report(settings: Settings) -> int:
    from state import StateError, StateStore, format_report, journal_report
    path = Path(settings.state.path)
    if not path.exists():
        print(f"no journal yet at {path}")
        return 0
    try:
        store = StateStore(str(path))
        store.open()
    except StateError as exc:
        print(f"state: {exc}", file=sys.stderr)
        return 2
    try:
        print(format_report(journal_report(store)))
    finally:
        store.close()
    return 0


def run_bot(settings: Settings, key: bytes | None) -> int:
    from state import InstanceLock, StateError, StateStore
    lock = InstanceLock(settings.state.path + ".lock")
    try:
        acquired = lock.acquire()
    except OSError as exc:
        log.error("state: cannot create the instance lock %s (%s)", lock.path, exc.strerror or exc)
        return 2
    if not acquired:
        log.info("another instance is running (pid %s); exiting", lock.holder_pid())
        return 0
    stop_event = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stop_event.is_set():
            log.info("received %s: shutting down", signal.Signals(signum).name)
        stop_event.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    store = StateStore(settings.state.path)
    try:
        store.open()
    except StateError as exc:
        log.error("state: %s", exc)
        lock.release()
        return 2
    cleanup: list[Callable[[], None]] = [lock.release, store.close]
    try:
        return _run(settings, key, store, stop_event, cleanup)
    finally:
        for step in reversed(cleanup):
            try:
                step()
            except Exception:  # a failing cleanup step must not hide the others
                log.exception("shutdown step failed")


class StartError(Exception):
    """Start-up cannot go on; `code` is the exit status (1 exchange unreachable, 2 bad setup)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def build_bot(settings: Settings, key: bytes | None, store: Any, stop_event: threading.Event,
              cleanup: list[Callable[[], None]]) -> TradingBot:
    """Wire everything up to, not including, starting the WebSocket and health threads.

    Appends the matching shutdown steps to `cleanup` (run in reverse order by the caller).
    """
    import secrets

    from exits import ExitRules
    from hyperliquid_rest import HyperliquidRestClient
    from hyperliquid_websocket import HyperliquidWebSocketClient
    from paper import PaperExchange
    from signing import L1Signer
    from sizing import RiskGuard
    from strategies import build_strategy

    rest_url, ws_url = settings.rest_url, settings.ws_url
    if settings.embedded_simulator:
        from hyperliquid_sim import SimConfig, SimServer
        sim = SimServer(SimConfig(port=0, seed=settings.simulator.seed,
                                  trade_rate_hz=settings.simulator.trade_rate_hz,
                                  volatility=settings.simulator.volatility,
                                  initial_usdc=settings.simulator.initial_usdc))
        sim.start()
        cleanup.append(sim.stop)
        rest_url, ws_url = sim.rest_url, sim.ws_url
        log.info("network local: embedded simulator at %s", rest_url)
    if key is None:
        if settings.network != "local" and not settings.dry_run:
            raise StartError(2, f"no private key: set {settings.account.private_key_env} or "
                                f"account.private_key_file (needed to trade on {settings.network})")
        key = secrets.token_bytes(32)
        log.info("no private key configured: using a throwaway key")
    signer = L1Signer(key, is_mainnet=settings.is_mainnet)
    del key
    log.info("account %s on %s (%s)", signer.address, settings.network,
             "paper trading" if settings.dry_run else
             "orders to the local simulator" if settings.network == "local" else "live orders")
    if settings.live_trading:
        log.warning("LIVE TRADING ON MAINNET: orders use real money")

    api = settings.api
    rest = HyperliquidRestClient(rest_url, signer=signer, info_deadline_s=api.info_timeout_s,
                                 exchange_deadline_s=api.exchange_timeout_s,
                                 expires_after_s=api.order_expires_after_s)
    cleanup.append(rest.close)
    try:
        meta = _at_start(rest.meta, stop_event)
        meta.asset(settings.symbol)
    except HyperliquidError as exc:
        raise StartError(1, f"cannot reach the exchange at {rest_url}: {exc}") from exc
    except KeyError:
        raise StartError(2, f"symbol {settings.symbol} is not listed on {settings.network}") from None
    try:
        account = _at_start(lambda: rest.clearinghouse_state(signer.address), stop_event)
        log.info("account value %s USDC, %d open position(s)", account.account_value, len(account.positions))
    except HyperliquidError as exc:
        raise StartError(1, f"cannot read the account at {rest_url}: {exc}") from exc
    if settings.dry_run:
        exchange: Any = PaperExchange(lambda coin: meta.asset(coin).sz_decimals)
    else:
        exchange = rest
        try:
            rest.update_leverage(settings.symbol, settings.trading.leverage, is_cross=True)
        except HyperliquidError as exc:  # unknown or refused: not trading on a leverage we cannot vouch for
            raise StartError(1, f"could not set leverage: {exc}") from exc
        log.info("leverage set to %dx cross on %s", settings.trading.leverage, settings.symbol)
    try:
        strategy = build_strategy(settings.strategy.name, dict(settings.strategy.params))
    except ValueError as exc:
        raise StartError(2, f"strategy: {exc}") from exc
    tr = settings.trading
    exit_rules = ExitRules(tr.stop_loss_pct, tr.take_profit_pct, tr.trailing_stop_pct, tr.trailing_offset_pct)
    guard = RiskGuard(tr.max_position_usd, tr.max_orders_per_minute)
    events: queue.Queue[Any] = queue.Queue(maxsize=settings.websocket.queue_size)

    ws_client = None
    if settings.websocket.enabled:
        subs: list[dict[str, Any]] = [{"type": "trades", "coin": settings.symbol},
                                      {"type": "bbo", "coin": settings.symbol}]
        if not settings.dry_run:
            subs += [{"type": "userFills", "user": signer.address},
                     {"type": "orderUpdates", "user": signer.address}]
        ws = settings.websocket
        ws_client = HyperliquidWebSocketClient(
            ws_url, subs, events, reconnect_interval_s=ws.reconnect_interval, max_backoff_s=ws.max_backoff,
            max_reconnect_attempts=ws.max_reconnect_attempts, ping_interval_s=ws.ping_interval,
            pong_timeout_s=ws.pong_timeout, data_timeout_s=ws.data_timeout,
            subscribe_timeout_s=ws.subscribe_timeout)

    bot = TradingBot(settings, rest, exchange, StateWriter(store), strategy, exit_rules, guard, events, ws_client,
                     signer.address, stop_event)
    if ws_client is not None:
        cleanup.append(lambda: bot.ws.stop())  # the socket thread the loop has now (it may have replaced it)
    _warm_up(bot, rest, settings)
    bot.reconcile_at_start()
    # Start-up objects (modules, meta, candle history) live for the whole run: out of the
    # collector's sight, full collections stay short, which trims the tail of tick latency.
    gc.freeze()
    return bot


def _run(settings: Settings, key: bytes | None, store: Any, stop_event: threading.Event,
         cleanup: list[Callable[[], None]]) -> int:
    try:
        bot = build_bot(settings, key, store, stop_event, cleanup)
    except StartError as exc:
        log.error("%s", exc)
        return exc.code
    if settings.health.enabled:
        from health import HealthServer
        health = HealthServer(settings.health.host, settings.health.port, bot.health_snapshot)
        try:
            health.start()
            cleanup.append(health.stop)
            log.info("health endpoint on http://%s:%d/health", settings.health.host, health.port)
        except OSError as exc:
            log.error("health endpoint not started on %s:%d: %s", settings.health.host,
                      settings.health.port, exc)
    if bot.ws is not None:
        bot.ws.start()
    else:
        log.info("WebSocket disabled: polling REST prices every %.0fs", settings.check_interval)
    bot.publish_health()
    try:
        bot.run()
    finally:
        bot.shutdown()
    log.info("stopped cleanly")
    return 0


START_TRIES = 3
START_RETRY_MAX_S = 2.0  # start-up waits at most this between tries (a 429's Retry-After included)


def _at_start(call: Callable[[], Any], stop_event: threading.Event) -> Any:
    """A start-up query, tried up to START_TRIES times on retryable errors with short waits
    (before the loop runs; a signal cuts the wait short). Raises the last error."""
    for attempt in range(1, START_TRIES + 1):
        try:
            return call()
        except HyperliquidError as exc:
            if not exc.retryable or attempt == START_TRIES:
                raise
            wait_s = min(getattr(exc, "retry_after_s", 0.5 * attempt), START_RETRY_MAX_S)
            log.warning("start-up query failed (%s); trying again in %.1fs", exc, wait_s)
            if stop_event.wait(wait_s):
                raise
    raise AssertionError("unreachable")


def _warm_up(bot: TradingBot, rest: Any, settings: Settings) -> None:
    from strategies import interval_ms
    step = interval_ms(settings.strategy.candle_interval)
    end = wall_ms()
    try:
        candles = rest.candle_snapshot(settings.symbol, settings.strategy.candle_interval, end - 200 * step, end)
    except HyperliquidError as exc:
        log.warning("candle warm-up failed: %s; the strategy starts cold", exc)
        return
    bot.candles.load(candles)
    log.info("warmed up %d %s candles for %s", len(candles), settings.strategy.candle_interval, settings.symbol)


if __name__ == "__main__":
    sys.exit(main())
