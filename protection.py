"""Exchange-side protective orders of one market: reduce-only SL/TP triggers resting on the
exchange as the backstop while the bot is down or cut off.

Owns: placing the SL/TP levels of a position (each cloid saved before sending), repairing a level
that was not placed, was rejected, or turned out never to have reached the exchange (a timer: 5 s
doubling to 60 s), canceling a closed position's orders, and the start-up check that holds the
exchange's resting orders against ours (missing levels placed, stale ones from a killed run
canceled).
Must not: decide exits (the market trader does), or leave a stale reduce-only stop resting: it
could close a later position at an old level.
"""
from __future__ import annotations

import logging
from decimal import Decimal
from typing import Callable, Collection, Protocol

from execution import OrderExecutor
from exits import ExitRules
from orders import InvalidTransition, OrderRecord
from rest_errors import HyperliquidError, OrderStatusUnknown
from signing import new_cloid, round_price
from state_writer import StateWriter
from wire import OrderStatusResult

log = logging.getLogger("bot")

RETRY_BASE_S = 5.0   # a missing exchange-side level is placed again after this...
RETRY_MAX_S = 60.0   # ...doubling up to this while placements keep failing


class Guarded(Protocol):
    """What protection needs of a position (market.OpenPosition)."""
    side: str
    size: Decimal
    entry_px: Decimal
    protective_cloids: tuple[str, ...]

    @property
    def is_buy_to_close(self) -> bool: ...


class Protection:
    """One market's exchange-side SL/TP (idle when `enabled` is False: paper, or not configured)."""

    def __init__(self, coin: str, sz_decimals: int, exit_rules: ExitRules, executor: OrderExecutor,
                 store: StateWriter, enabled: bool, clock: Callable[[], float], now_ms: Callable[[], int]) -> None:
        self.coin, self.sz_decimals, self.exit_rules = coin, sz_decimals, exit_rules
        self.executor, self.store, self.enabled = executor, store, enabled
        self.clock, self.now_ms = clock, now_ms
        self.failures = 0
        self.repair_at = 0.0  # when to place the missing levels (0: nothing missing)

    def place(self, pos: Guarded, keep: tuple[str, ...] = ()) -> None:
        """Place the levels `keep` (cloids resting or in doubt) does not cover; sets the position's list."""
        if not self.enabled:
            return
        levels = self.exit_rules.levels(pos.side, pos.entry_px)  # type: ignore[arg-type]
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
            self.schedule_repair()
        else:
            self.failures = 0

    def _place_trigger(self, pos: Guarded, tpsl: str, level: Decimal) -> str | None:
        """Place one reduce-only trigger order; its cloid if it rests or may rest, None if not."""
        try:
            px = round_price(level, self.sz_decimals)
        except ValueError as exc:
            log.error("%s: exchange-side %s not placed: %s", self.coin, tpsl, exc)
            return None
        # Saved before sending: a crash before the position (with this cloid) is saved would
        # otherwise leave a stop no later run knows about. The next start finds it and cancels it.
        record = OrderRecord.new(cloid=new_cloid(), coin=self.coin, side="buy" if pos.is_buy_to_close else "sell",
                                 size=pos.size, limit_px=px, reduce_only=True, purpose=tpsl, created_ms=self.now_ms(),
                                 expires_within_ms=self.executor.expiry_ms)
        self.store.save_order(record)
        try:
            results = self.executor.exchange.trigger_order(self.coin, pos.is_buy_to_close, pos.size, px, tpsl,
                                                           is_market=True, reduce_only=True, cloid=record.cloid,
                                                           expires_by_ms=record.expires_by_ms)
        except OrderStatusUnknown as exc:  # maybe resting: tracked (a close cancels it anyway) and looked up
            log.error("%s: exchange-side %s: result unknown (%s); tracked by cloid %s", self.coin, tpsl, exc,
                      record.cloid)
            self.executor.in_doubt(record, exc, pos.size * px)
            return record.cloid
        except HyperliquidError as exc:
            log.error("%s: exchange-side %s not placed: %s", self.coin, tpsl, exc)
            self.store.save_order(record.rejected(f"not executed: {exc}"[:300], self.now_ms()))
            return None
        if results[0].kind == "error":
            self.store.save_order(record.rejected(results[0].message or "rejected", self.now_ms()))
            log.error("%s: exchange-side %s rejected: %s", self.coin, tpsl, results[0].message)
            return None
        self.store.save_order(record.to("resting", self.now_ms(), oid=results[0].oid))
        log.info("%s: exchange-side %s placed at %s (cloid %s)", self.coin, tpsl, px, record.cloid)
        return record.cloid

    def schedule_repair(self) -> None:
        self.failures += 1
        delay_s = min(RETRY_BASE_S * 2 ** (self.failures - 1), RETRY_MAX_S)
        self.repair_at = self.clock() + delay_s
        log.warning("%s: exchange-side SL/TP incomplete; trying again in %.0fs", self.coin, delay_s)

    def repair_due(self, now: float) -> bool:
        return bool(self.repair_at) and now >= self.repair_at

    def repair(self, pos: Guarded) -> None:
        """Place the missing levels, keeping those that rest or may rest."""
        self.repair_at = 0.0
        alive = tuple(c for c in pos.protective_cloids
                      if (record := self.store.order(c)) is not None and not record.is_terminal)
        self.place(pos, keep=alive)

    def reset(self) -> None:
        self.repair_at, self.failures = 0.0, 0

    def cancel(self, pos: Guarded) -> None:
        self.executor.cancel_cloids(self.coin, pos.protective_cloids)

    def check_at_start(self, pos: Guarded | None, open_cloids: Collection[str]) -> bool:
        """Start-up: the position's SL/TP must rest on the exchange (the missing ones placed). True
        when the position's list changed (to be saved)."""
        if not self.enabled or pos is None:
            return False
        if pos.protective_cloids and set(pos.protective_cloids) <= set(open_cloids):
            return False
        resting = tuple(c for c in pos.protective_cloids if c in open_cloids)
        log.warning("%s: the exchange-side SL/TP of the %s %s position are not all resting; placing the missing "
                    "ones", self.coin, pos.side, pos.size)
        self.place(pos, keep=resting)  # a resting stop stays until its twin is in place
        return True


def cancel_stale_protective(executor: OrderExecutor, store: StateWriter, order_status: Callable[[str], OrderStatusResult],
                            keep: Collection[str], open_cloids: Collection[str], now_ms: Callable[[], int],
                            coins: Collection[str]) -> None:
    """Start-up: every SL/TP we placed that guards no position any more is canceled (a crash
    between placing a stop and saving the position's list leaves one behind); those already gone
    get the exchange's word for what became of them."""
    for record in store.orders(statuses=("resting",)):
        if record.purpose not in ("sl", "tp") or record.cloid in keep or record.coin not in coins:
            continue
        try:
            if record.cloid in open_cloids:
                if executor.exchange.cancel_by_cloid(record.coin, record.cloid):
                    log.warning("%s: canceled a stale exchange-side %s (cloid %s) left by an earlier run",
                                record.coin, record.purpose, record.cloid)
                    store.save_order(record.to("canceled", now_ms(), reason="stale"))
                continue
            status = order_status(record.cloid)  # gone: filled or canceled
        except HyperliquidError as exc:
            log.warning("stale exchange-side order %s: %s; left for the next start", record.cloid, exc)
            continue
        try:
            store.save_order(record.resolved_by_status(status.status, now_ms()))
        except InvalidTransition:
            pass
