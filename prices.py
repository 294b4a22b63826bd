"""Where prices come from: the stream, or REST polling when the stream is starved.

Owns: the stream-wide mode (`websocket`, `rest_fallback`, or `rest` when the stream is disabled):
starved for `stale_after` (no market data at all) it falls back to REST polling and leaves it on
the first data; the poll timer, where one `allMids` serves every market that needs a price (all of
them in fallback; a market quiet on a live stream alone), and the log lines that tell the story
(and the `fallback` and `recovered` notifications: queued, never waited for).
Must not: sleep, call the exchange while `/info` is paused (rest_gate), or let one market's
failure keep the others from their price.
"""
from __future__ import annotations

import logging
from decimal import Decimal
from typing import Callable, Mapping, Protocol

from logsetup import RateLimitedLog
from market import MarketTrader
from notify import NO_NOTIFIER, Notifier
from rest_errors import HyperliquidError
from rest_gate import InfoGate
from settings import WebSocketSettings

log = logging.getLogger("bot")


class Mids(Protocol):
    def all_mids(self) -> dict[str, Decimal]: ...


class PriceSource:
    """The stream-or-REST state of the loop (main thread only)."""

    def __init__(self, traders: Mapping[str, MarketTrader], rest: Mids, gate: InfoGate, ws: WebSocketSettings,
                 check_interval_s: float, clock: Callable[[], float],
                 on_error: Callable[[str, Exception], None], notifier: Notifier = NO_NOTIFIER) -> None:
        self.traders, self.rest, self.gate, self.ws, self.check_interval_s = traders, rest, gate, ws, check_interval_s
        self.clock, self.on_error, self.notifier = clock, on_error, notifier
        self.last_market_data = clock()  # grace period: the stream gets stale_after to start
        self.fallback = not ws.enabled
        self.mode = "websocket" if ws.enabled else "rest"
        self.next_poll = clock()
        self._quiet = RateLimitedLog(every_s=60.0, clock=clock)

    def on_market_data(self) -> None:
        self.last_market_data = self.clock()
        if self.fallback and self.ws.enabled:
            self.fallback = False
            self.mode = "websocket"
            log.info("WebSocket recovered; leaving REST fallback")
            self.notifier.notify("recovered", None, "WebSocket recovered; leaving REST fallback", source="websocket")

    def enter_fallback(self, why: str) -> None:
        if self.fallback:
            return
        self.fallback = True
        self.mode = "rest_fallback"
        self.next_poll = self.clock()
        log.warning("%s; falling back to REST polling", why)
        self.notifier.notify("fallback", None, f"{why}; falling back to REST polling")

    def next_wait_s(self, wait_s: float) -> float:
        """The loop's blocking wait, shortened to the next poll while polling."""
        return min(wait_s, max(0.0, self.next_poll - self.clock())) if self.fallback else wait_s

    def timer(self, now: float) -> None:
        ws = self.ws
        if ws.enabled and not self.fallback and now - self.last_market_data > ws.stale_after:
            self.enter_fallback(f"WebSocket starved for {ws.stale_after:.1f}s")
        if now < self.next_poll:
            return
        if self.fallback:
            wanted = list(self.traders.values())
        else:  # a quiet market on a live stream: its price alone from REST
            wanted = [t for t in self.traders.values() if now - t.last_market_data > ws.stale_after]
        if wanted:
            self.next_poll = now + (ws.fallback_poll_interval if ws.enabled else self.check_interval_s)
            self._poll(now, wanted)

    def _poll(self, now: float, traders: list[MarketTrader]) -> None:
        """One `allMids` serves every market that needs a price."""
        if self.gate.held(now):
            return
        try:
            mids = self.rest.all_mids()
        except HyperliquidError as exc:
            self.gate.failed("REST price poll", exc)
            return
        self.gate.ok()
        for trader in traders:
            price = mids.get(trader.coin)
            if price is None:
                if self._quiet.allow(f"no mid {trader.coin}") is not None:
                    log.warning("REST price poll: no mid for %s", trader.coin)
                continue
            try:  # one market's failure must not keep the others from their price
                trader.on_rest_price(price)
            except Exception as exc:  # noqa: BLE001 - logged with its traceback, counted by the loop
                self.on_error(f"{trader.coin} REST price", exc)
