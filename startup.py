"""Start-up reconciliation: the saved state against the exchange, once, before the loop runs.

Owns: the start's steps in their order (saved positions resumed, and a warning for each of no
configured market; orders in doubt looked up; our entry orders left resting canceled, and the
record of one that filled or was canceled while no bot ran; fills journaled; positions checked;
exchange-side orders checked, stale ones canceled; funding journaled) and the line that ends it
(`start-up reconciliation done: ...`, which the crash test times stop cover by).
Must not: run after start-up, decide exits or entries, or sleep (each query has its deadline; a
failed position check is left to the loop's timers).
"""
from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING

from maker import status_and_filled
from orders import InvalidTransition, OrderRecord
from protection import cancel_stale_protective
from rest_errors import HyperliquidError
from wire import PARSE_ERRORS

if TYPE_CHECKING:
    from reconcile import Reconciler

log = logging.getLogger("bot")


class StartUp:
    """One start's reconciliation, with the reconciler's queries, store and traders."""

    def __init__(self, reconciler: "Reconciler") -> None:
        self.r = reconciler

    def run(self) -> None:
        """Compare saved state with the exchange; the exchange is the truth. Logs every difference."""
        saved = self.r.store.load_positions()
        for coin, trader in self.r.traders.items():
            if coin in saved:
                trader.resume(saved[coin])
        orphans = {coin: pos for coin, pos in saved.items() if coin not in self.r.traders}
        for coin, pos in orphans.items():
            log.warning("a saved %s position (%s %s) belongs to no configured market: the bot leaves it and its "
                        "exchange-side orders alone; add %s to markets to manage it", coin, pos.side, pos.size, coin)
        if self.r.paper:
            return  # reserved cloids stay for a live start to look up: one may be a live exit's
        self.r.executor.resolve_at_start()
        self._cancel_resting_entries()
        self.r.reconcile_fills()
        if not self.r.check_positions("start-up"):
            self.r.want("start-up")  # the loop's timers try again
        self._check_exchange_side_orders({c for pos in orphans.values() for c in pos.protective_cloids})
        self.r.reconcile_funding()  # the journal's, last: nothing in the positions' safety waits on it
        # One line marking the end of start-up reconciliation (the crash test times stop cover by it).
        log.info("start-up reconciliation done: %s", self._summary())

    def _cancel_resting_entries(self) -> None:
        """A post-only entry left resting by the last run (killed, or its cancel unconfirmed) must not
        open a position nobody works: every open order of the account that is one of our entries
        (whatever its record says; a removed market's too), and every entry saved as resting, is
        canceled (a failed cancel is retried before the next entry in that coin); one that filled
        meanwhile is recorded so and adopted by the position check that follows."""
        entries = {r.cloid: r for r in self.r.store.orders(statuses=("resting",)) if r.purpose == "entry"}
        try:
            for order in self.r.rest.open_orders(self.r.address):
                record = self.r.store.order(order.cloid) if order.cloid else None
                if record is not None and record.purpose == "entry":
                    entries[record.cloid] = record
        except HyperliquidError as exc:
            log.warning("open-order check failed (%s); canceling the entries saved as resting", exc)
        for cloid, record in entries.items():
            log.warning("%s: post-only entry %s was resting at the last stop; canceling it", record.coin, cloid)
            self.r.executor.cancel_cloids(record.coin, [cloid], reason="resting entry at start")
            settled = self.r.store.order(cloid)
            if settled is not None and not settled.is_terminal and cloid not in \
                    self.r.executor.uncanceled.get(record.coin, ()):
                self._settle_gone_entry(settled)

    def _settle_gone_entry(self, record: OrderRecord) -> None:
        """An entry the start's cancel found no longer open (filled or canceled while no bot ran):
        its record says what the exchange's status says, what filled included; without a status,
        canceled as "not resting at start" (its fills, if any, are journaled all the same)."""
        try:
            status, filled = status_and_filled(self.r.rest.order_status(self.r.address, record.cloid))
        except (HyperliquidError, *PARSE_ERRORS) as exc:
            log.warning("%s: status of entry %s not known (%s); saved as not resting", record.coin, record.cloid, exc)
            status, filled = "canceled", Decimal(0)
        now_ms = self.r.now_ms()
        try:
            if status == "filled" or (filled > 0 and filled >= record.size):
                changed = record.filled_by_result(filled or record.size, record.limit_px, now_ms)
            else:
                changed = record.resolved_by_status(status, now_ms)
                if changed.status == "canceled":
                    changed = changed.to("canceled", now_ms, reason=f"{status}; not resting at start",
                                         filled_size=filled, avg_px=record.limit_px if filled else None)
        except InvalidTransition:
            return
        self.r.store.save_order(changed)
        if filled > 0:
            log.warning("%s: post-only entry %s filled %s at %s while no bot ran", record.coin, record.cloid,
                        filled, record.limit_px)

    def _summary(self) -> str:
        parts = []
        for coin, trader in self.r.traders.items():
            pos = trader.position
            state = "flat" if pos is None else \
                f"{pos.side} {pos.size} at {pos.entry_px}, exchange-side orders {list(pos.protective_cloids)}"
            parts.append(state if len(self.r.traders) == 1 else f"{coin} {state}")
        return "; ".join(parts)

    def _check_exchange_side_orders(self, keep: set[str]) -> None:
        """The positions' SL/TP must rest on the exchange; our stale ones are canceled (never those
        of `keep`, nor of a coin no market trades)."""
        if not any(t.protection.enabled for t in self.r.traders.values()):
            return
        try:
            open_cloids = {o.cloid for o in self.r.rest.open_orders(self.r.address) if o.cloid}
        except HyperliquidError as exc:
            log.warning("open-order check failed: %s; stale exchange-side orders stay until the next start", exc)
            for trader in self.r.traders.values():
                if trader.position is not None and trader.protection.enabled:
                    trader.protection.schedule_repair()  # at least the missing levels are placed again
            return
        for trader in self.r.traders.values():
            if trader.protection.check_at_start(trader.position, open_cloids):
                self.r.store.save_position(trader.position_record())
            if trader.position is not None:
                keep |= set(trader.position.protective_cloids)
        cancel_stale_protective(self.r.executor, self.r.store, lambda cloid: self.r.rest.order_status(self.r.address, cloid),
                                keep, open_cloids, self.r.now_ms, coins=set(self.r.traders))
