"""The trading loop: the main thread drains the socket thread's queue and runs the timers.

Owns: `step()` (a blocking `queue.get` with a timeout, then whatever else is queued up to a batch,
each event dispatched by type and coin to its market or to reconciliation, then the timers, each
on its own so that one that raises cannot starve the others), the account-wide entry limits (one
entry per turn), the socket thread's supervision (a dead one is replaced), the health snapshot
(published every 0.25 s), the operator's desk (control commands, health news: operator_desk.py),
and the shutdown steps. Where prices come from (stream or REST fallback) is prices.py's.
Must not: sleep or wait on the network beyond one request's deadline, let one bad event or timer
end the loop, touch the socket (the WebSocket thread owns it), or let another thread touch trading
state (the health server reads the snapshot this thread publishes).
"""
from __future__ import annotations

import logging
import queue
import resource
import threading
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Callable, Mapping

import stream_events as stream
from banner import StatusTimer, log_shutdown
from entries import account_refusal
from execution import OrderExecutor
from hyperliquid_websocket import HyperliquidWebSocketClient
from logsetup import RateLimitedLog
from market import MarketTrader
from notify import NO_NOTIFIER, Notifier
from operator_desk import OperatorDesk
from prices import Mids, PriceSource
from reconcile import Reconciler
from rest_gate import InfoGate
from settings import RiskSettings, WebSocketSettings
from snapshot import build_snapshot, market_view, stream_view
from state_writer import StateWriter

log = logging.getLogger("bot")

HEALTH_PUBLISH_EVERY_S = 0.25  # how fresh the health snapshot is
STEP_BATCH = 64                # events handled per loop turn before the timers run
MAX_LOOP_WAIT_S = 0.25         # longest blocking get: bounds shutdown and timer latency
STATE_RETRY_EVERY_S = 1.0      # failed state writes are tried again this often
WS_SUPERVISE_EVERY_S = 1.0     # how often the loop checks that the socket thread is alive
FILLS_POLL_EVERY_S = 5.0       # with the stream disabled, fills are fetched this often (userFills weight 20)


class TradingLoop:
    """The main loop over every market. Built by `trading_bot.build_bot`; `run()` blocks until stopped."""

    def __init__(self, traders: Mapping[str, MarketTrader], executor: OrderExecutor, reconciler: Reconciler,
                 gate: InfoGate, store: StateWriter, rest: Mids, events: "queue.Queue[Any]",
                 ws: HyperliquidWebSocketClient | None, ws_settings: WebSocketSettings, check_interval_s: float,
                 risk: RiskSettings, paper: bool, address: str, stop_event: threading.Event,
                 clock: Callable[[], float], now_ms: Callable[[], int], notifier: Notifier = NO_NOTIFIER) -> None:
        self.traders = traders
        self.executor, self.reconciler, self.gate, self.store, self.rest = executor, reconciler, gate, store, rest
        self.events, self.ws, self.ws_settings = events, ws, ws_settings
        self.check_interval_s, self.risk, self.paper, self.address = check_interval_s, risk, paper, address
        self.signer = address  # the key's address, when it is not the account's (set by the wiring)
        self.stop_event, self.clock, self.now_ms = stop_event, clock, now_ms
        self.started = clock()
        self.prices = PriceSource(traders, rest, gate, ws_settings, check_interval_s, clock, self._failed_in_loop,
                                  notifier)
        self.handler_errors = 0  # events and timers that raised (logged; the loop went on)
        self.ws_restarts = 0
        self.next_ws_check = 0.0
        self.next_state_retry = 0.0
        self.next_fills_poll = 0.0
        self.entry_slots = 1
        self.last_publish = 0.0
        self.status_timer = StatusTimer(self, clock)  # the status line, every minute
        self._quiet = RateLimitedLog(every_s=60.0, clock=clock)
        self._snapshot: Mapping[str, Any] = MappingProxyType({"status": "starting"})
        self.notifier = notifier
        self.desk = OperatorDesk(self, notifier, clock)  # its `requests`: the control socket's queue

    # ---- the loop --------------------------------------------------------------------------

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
        if self.ws_settings.enabled:
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
        kind = type(event)
        if kind is stream.Trade:
            trader = self.traders.get(event.coin)
            if trader is not None:
                self.prices.on_market_data()
                trader.on_trade(event)
        elif kind is stream.Fill:
            self.reconciler.on_fill(event)
        elif kind is stream.OrderUpdate:
            self.reconciler.on_order_update(event)
        elif kind is stream.Funding:
            self.reconciler.on_funding(event)
        elif kind is stream.Liquidation:
            self.reconciler.on_liquidation(event)
        elif kind is stream.Bbo:
            self.prices.on_market_data()  # the stream is alive; a market is fresh only on its live trades
            trader = self.traders.get(event.coin)
            if trader is not None:
                trader.quotes.on_bbo(event.bid, event.ask)
        elif kind is stream.L2Book:
            self.prices.on_market_data()
            trader = self.traders.get(event.coin)
            if trader is not None:
                trader.quotes.on_l2book(event)
        elif kind is stream.Mids:
            self.prices.on_market_data()
        elif kind is stream.Connected:
            self.reconciler.on_connected()
        elif kind is stream.StreamDown:
            self.prices.enter_fallback(f"WebSocket down after {event.attempts} attempts")
        # Disconnected / StreamRecovered / SubscriptionFailed: the socket thread logged them; the
        # starvation rule decides the mode from data actually arriving.

    def _next_wait(self) -> float:
        return self.prices.next_wait_s(MAX_LOOP_WAIT_S)

    @property
    def fallback(self) -> bool:
        return self.prices.fallback

    @property
    def mode(self) -> str:
        return self.prices.mode

    def _timers(self) -> None:
        """Everything that is due, each on its own: one that raises cannot starve the others."""
        now = self.clock()
        self.entry_slots = 1  # one entry per turn across markets: others' exits must not wait behind entries
        self._run_timer(self.prices.timer, now)
        for trader in self.traders.values():
            for timer in trader.timers:
                self._run_timer(timer, now, trader.coin)
        self._run_timer(self.status_timer, now)  # the status line, every minute (banner.py)
        for timer in (self.executor.lookup_timer, self.reconciler.timer, self._fills_timer, self._state_timer,
                      self._stream_timer, self._publish_timer, self.desk.timer):
            self._run_timer(timer, now)

    def _run_timer(self, timer: Callable[[float], None], now: float, coin: str = "") -> None:
        try:
            timer(now)
        except Exception as exc:  # noqa: BLE001 - logged with its traceback, counted
            self._failed_in_loop(f"{coin} {getattr(timer, '__qualname__', 'a timer')}".strip(), exc)

    def _failed_in_loop(self, what: str, exc: Exception) -> None:
        self.handler_errors += 1
        suppressed = self._quiet.allow(f"{what}:{type(exc).__name__}")
        if suppressed is not None:
            log.error("%s failed (%s: %s); the loop goes on (%d errors so far%s)", what, type(exc).__name__, exc,
                      self.handler_errors, f", {suppressed} like it not shown" if suppressed else "",
                      exc_info=exc)

    # ---- the account -----------------------------------------------------------------------

    def entry_refusal(self, coin: str, notional_usd: Decimal) -> str | None:
        """The account-wide limits (risk.*), across all markets."""
        in_doubt = self.executor.unknown.notional_usd("entry") + sum(
            (t.entries.maker.notional_usd() for t in self.traders.values()), Decimal(0))
        open_flags = [t.position is not None or self.executor.entry_in_doubt(c) or t.entries.maker.work is not None
                      for c, t in self.traders.items()]
        return account_refusal(self.risk, open_flags,
                               sum((t.notional_usd() for t in self.traders.values()), in_doubt), notional_usd)

    def entry_slot(self) -> bool:
        """May an entry go out in this turn? (One per turn: the next turn drains prices first.)"""
        if self.entry_slots <= 0:
            return False
        self.entry_slots -= 1
        return True

    def want_check(self, reason: str) -> None:
        self.reconciler.want(reason, at_once=True)

    def check_due(self) -> bool:
        return self.reconciler.due is not None

    def protective_settled(self, coin: str, cloid: str, resting: bool) -> None:
        """An exchange-side SL/TP in doubt was settled: one that does not rest is placed again; one
        that rests but guards nothing now (its position closed meanwhile) is canceled, or it could
        close a later position at an old level."""
        trader = self.traders.get(coin)
        pos = trader.position if trader is not None else None
        ours = pos is not None and cloid in pos.protective_cloids
        if not resting and ours:
            trader.protection.schedule_repair()  # type: ignore[union-attr]
        elif resting and not ours:
            log.warning("%s: exchange-side order %s rests but guards no position; canceling it", coin, cloid)
            self.executor.cancel_cloids(coin, [cloid], reason="guards no position")

    # ---- housekeeping ----------------------------------------------------------------------

    def _fills_timer(self, now: float) -> None:
        """Without the stream, fills are journaled as they happen all the same: polled over REST."""
        if self.ws_settings.enabled or self.paper or now < self.next_fills_poll:
            return
        self.next_fills_poll = now + FILLS_POLL_EVERY_S
        self.reconciler.reconcile_fills()

    def _state_timer(self, now: float) -> None:
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

    def publish_health(self) -> None:
        """Publish what /health needs as an immutable snapshot with monotonic stamps, not ages:
        the health thread computes ages when asked, so a stalled loop shows (health.render)."""
        now = self.clock()
        ws = self.ws_settings
        fresh_limit = ws.stale_after + ws.fallback_poll_interval * 2 if ws.enabled else self.check_interval_s * 2
        stats = self.ws.stats() if self.ws is not None else None
        record = self.ws.recorder.stats() if self.ws is not None and self.ws.recorder is not None else None
        self._snapshot = build_snapshot(
            now_s=now, started_s=self.started,
            markets={coin: market_view(t) for coin, t in self.traders.items()},
            stream=stream_view(stats, ws.enabled, self.prices.fallback, self.events.qsize(), self.ws_restarts, now,
                               record),
            positions=self._positions(),
            loop={"account": self.address, "signer": self.signer,
                  "price_fresh_limit_s": fresh_limit, "mode": self.prices.mode, "dry_run": self.paper,
                  "state_writable": self.store.writable, "state_error": self.store.error,
                  "handler_errors": self.handler_errors, "unknown_orders": len(self.executor.unknown),
                  "oldest_unknown_order_at_s": self.executor.unknown.oldest_since_s(),
                  "notifications": self.notifier.stats(),
                  "rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})

    def _positions(self) -> dict[str, dict[str, Any]]:
        """Every position on the account: ours (managed) and those no market trades."""
        out: dict[str, dict[str, Any]] = {}
        for coin, trader in self.traders.items():
            pos = trader.position
            if pos is not None:
                size = pos.size if pos.side == "long" else -pos.size
                out[coin] = {"size": float(size), "entry_px": float(pos.entry_px), "managed": True}
        for coin, (size, entry_px) in self.reconciler.unmanaged.items():
            out[coin] = {"size": float(size), "entry_px": float(entry_px), "managed": False}
        return out

    def health_snapshot(self) -> Mapping[str, Any]:
        """Called from the health thread: returns the last published immutable snapshot."""
        return self._snapshot

    def shutdown(self) -> None:
        """After the loop: cancel resting post-only entries, journal fills already received (market
        data is dropped; no other order goes out now), save the positions, publish a last health
        snapshot."""
        for trader in self.traders.values():
            try:
                trader.entries.maker.stop()
            except Exception as exc:  # noqa: BLE001 - in a `finally`: must not hide why the loop ended
                log.error("stopping: %s post-only entry cancel failed (%s); the next start cancels it", trader.coin, exc)
        journaled = 0
        try:
            for _ in range(self.events.maxsize or 10_000):
                try:
                    event = self.events.get_nowait()
                except queue.Empty:
                    break
                if type(event) is stream.Fill:
                    self.reconciler.on_fill(event)
                    journaled += 1
        except Exception as exc:  # in a `finally`: must not hide why the loop ended
            log.error("stopping: journaling queued fills failed (%s); the next start fetches them", exc)
        if journaled:
            log.info("stopping: %d queued fill(s) journaled; the next start checks the position", journaled)
        for trader in self.traders.values():  # after the fills: one may have opened a post-only entry's position
            if trader.position is not None:
                self.store.save_position(trader.position_record())
        self.store.retry()
        if self.store.pending:
            log.error("stopping: %d state write(s) could not be saved (%s); the next start reconciles with "
                      "the exchange", self.store.pending, self.store.error)
        self.publish_health()
        log_shutdown(self.traders.values(), self.reconciler.unmanaged)
