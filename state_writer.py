"""Writes of the trading loop to the state store that never raise: a full disk or a read-only
mount must not end the bot while a position is open.

Owns: every write the main loop makes (position, order records, the fill journal), whether the
last one worked (`writable`, `error`, shown in `/health`), one log line a minute while writes
fail, and what is still to be written: each coin's latest position, the latest version of each
order record, fills not yet journaled (bounded). `retry()` (called by the loop's timers) writes
them again in that order. Reads go straight to the store; an order record not yet written is
served from memory.
Must not: be used from another thread (the store holds one connection), decide anything about
trading, or drop a fill silently (a full backlog is logged with the count dropped).
"""
from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from logsetup import RateLimitedLog
from orders import OrderRecord
from state import SavedPosition, StateError, StateStore

log = logging.getLogger("state")

WRITE_ERRORS = (sqlite3.Error, StateError, OSError)
MAX_PENDING_FILLS = 10_000
_CLEARED = "cleared"  # a pending position write that is a delete


@dataclass(frozen=True)
class PendingFill:
    tid: str
    fields: dict[str, Any]


class StateWriter:
    """The loop's view of the store: writes that report failure instead of raising."""

    def __init__(self, store: StateStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.writable = True
        self.error: str | None = None
        self.failures = 0
        self._positions: dict[str, SavedPosition | str] = {}  # writes still owed, by coin
        self._orders: dict[str, OrderRecord] = {}
        self._fills: dict[str, PendingFill] = {}
        self._quiet = RateLimitedLog(every_s=60.0, clock=clock)

    # ---- writes ----

    def save_position(self, position: SavedPosition) -> bool:
        self._positions[position.coin] = position
        return self._flush_position(position.coin)

    def clear_position(self, coin: str) -> bool:
        self._positions[coin] = _CLEARED
        return self._flush_position(coin)

    def save_order(self, record: OrderRecord) -> bool:
        self._orders[record.cloid] = record
        return self._flush_order(record.cloid)

    def record_fill(self, *, tid: str, **fields: Any) -> bool | None:
        """Journal a fill once: True new, False already there, None not written yet (kept and
        retried; `order()` and the position do not depend on it)."""
        try:
            new = self.store.record_fill(tid=tid, **fields)
        except WRITE_ERRORS as exc:
            self._failed("journaling a fill", exc)
            self._keep_fill(PendingFill(tid, fields))
            return None
        self._worked()
        return new

    def record_funding(self, payment: Any) -> bool | None:
        """Journal a funding payment (`wire.FundingPayment` or `stream_events.Funding`) once; None:
        not written (the next REST catch-up fetches it again)."""
        try:
            new = self.store.record_funding(coin=payment.coin, time_ms=payment.time_ms, usdc=payment.usdc,
                                            szi=payment.szi, rate=payment.rate)
        except WRITE_ERRORS as exc:
            self._failed("journaling a funding payment", exc)
            return None
        self._worked()
        return new

    def last_funding_time_ms(self) -> int | None:
        return self.store.last_funding_time_ms()

    def journal(self, fill: Any) -> bool:
        """Journal a fill fetched over REST (`hyperliquid_rest.Fill`); True when it was new to us."""
        return self.record_fill(tid=fill.dedupe_key, coin=fill.coin, px=fill.px, size=fill.size, side=fill.side,
                                time_ms=fill.time_ms, oid=fill.oid, cloid=fill.cloid, fee=fill.fee,
                                closed_pnl=fill.closed_pnl, paper=False) is not False

    @property
    def pending(self) -> int:
        """Writes still owed."""
        return len(self._positions) + len(self._orders) + len(self._fills)

    def retry(self) -> None:
        """Write again whatever failed, oldest concern first; stops at the first failure. With
        nothing owed but the last access failed, a probe write tells whether the store is back."""
        if self.pending == 0 and not self.writable:
            try:
                self.store.set("write_probe", "ok")
            except WRITE_ERRORS as exc:
                self._failed("a probe write", exc)
                return
            self._worked()
        for coin in list(self._positions):
            if not self._flush_position(coin):
                return
        for cloid in list(self._orders):
            if not self._flush_order(cloid):
                return
        for tid in list(self._fills):
            if self.record_fill(tid=tid, **self._fills.pop(tid).fields) is None:
                return

    # ---- reads ----

    def order(self, cloid: str) -> OrderRecord | None:
        """The record, or None when there is none or the store cannot be read (logged): callers
        treat an unknown record with suspicion (a position check), never as a reason to stop."""
        pending = self._orders.get(cloid)
        if pending is not None:
            return pending
        try:
            return self.store.order(cloid)
        except WRITE_ERRORS as exc:
            self._failed(f"reading order {cloid}", exc)
            return None

    def orders(self, statuses: Iterable[str] | None = None) -> list[OrderRecord]:
        wanted = None if statuses is None else set(statuses)
        saved = {r.cloid: r for r in self.store.orders(statuses)}
        for cloid, record in self._orders.items():
            saved.pop(cloid, None)
            if wanted is None or record.status in wanted:
                saved[cloid] = record
        return sorted(saved.values(), key=lambda r: r.created_ms)

    def load_positions(self) -> dict[str, SavedPosition]:
        return self.store.load_positions()

    def last_fill_time_ms(self) -> int | None:
        return self.store.last_fill_time_ms()

    # ---- bookkeeping ----

    def _flush_position(self, coin: str) -> bool:
        def write(position: SavedPosition | str) -> None:
            if isinstance(position, SavedPosition):
                self.store.save_position(position)
            else:
                self.store.clear_position(coin)
        return self._flush(self._positions, coin, write, f"saving the {coin} position")

    def _flush_order(self, cloid: str) -> bool:
        return self._flush(self._orders, cloid, self.store.save_order, f"saving order {cloid}")

    def _flush(self, owed: dict[str, Any], key: str, write: Callable[[Any], None], what: str) -> bool:
        """Write `owed[key]`; forget it once written (unless a newer version came meanwhile)."""
        value = owed[key]
        try:
            write(value)
        except WRITE_ERRORS as exc:
            self._failed(what, exc)
            return False
        if owed.get(key) is value:
            del owed[key]
        self._worked()
        return True

    def _keep_fill(self, fill: PendingFill) -> None:
        if len(self._fills) >= MAX_PENDING_FILLS and fill.tid not in self._fills:
            log.error("state: %d fills wait to be journaled; dropping fill %s (the exchange keeps it: "
                      "the next start fetches it)", len(self._fills), fill.tid)
            return
        self._fills[fill.tid] = fill

    def _failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        self.error = f"{type(exc).__name__}: {exc}"
        was_writable, self.writable = self.writable, False
        suppressed = self._quiet.allow("write failed")
        if was_writable or suppressed is not None:
            more = f" ({suppressed} more failed writes)" if suppressed else ""
            log.error("state %s not writable: %s failed (%s)%s; trading goes on, writes are retried",
                      self.store.path, what, self.error, more)

    def _worked(self) -> None:
        if not self.writable and self.pending == 0:
            self.writable = True
            self.error = None
            log.warning("state %s writable again; every pending write is saved", self.store.path)
