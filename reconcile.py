"""Reconciliation with the exchange, which is the truth: positions, fills, start-up.

Owns: position checks (asked for by any part of the bot, run by a timer of the loop at most once a
second and once a minute regardless; one `clearinghouseState` serves every market), the fill
journal's catch-up over REST (after a reconnect and at start), the account's fills from the
stream (journaled once by tid; a fill the bot did not expect triggers a check; a resting post-only
entry's fills and status go to its market's maker), and a warning (and an `unmanaged_position`
notification) for every position on the account that no market of the bot trades. Start-up's
reconciliation is startup.py's (`at_start`).
Must not: decide exits or entries, sleep, or send an order (protection and the traders do).
"""
from __future__ import annotations

import logging
from decimal import Decimal
from typing import Callable, Mapping, Protocol, TypeVar

from execution import OrderExecutor
from market import MarketTrader
from notify import NO_NOTIFIER, Notifier
from rest_errors import HyperliquidError
from rest_gate import InfoGate
from startup import StartUp
from state_writer import StateWriter
from orders import InvalidTransition
from stream_events import Fill as StreamFill, Funding as StreamFunding, Liquidation as StreamLiquidation
from stream_events import OrderUpdate as StreamOrderUpdate
from wire import AccountState, Fill, FundingPayment, OpenOrder, OrderStatusResult

log = logging.getLogger("bot")
T = TypeVar("T")

RECONCILE_EVERY_S = 60.0        # periodic check of the positions against the exchange
CHECK_SPACING_S = 1.0           # checks asked for by events run at most this often
FILLS_LOOKBACK_MS = 24 * 3600 * 1000  # the first start fetches the last day's fills


class AccountQueries(Protocol):
    def clearinghouse_state(self, user: str) -> AccountState: ...

    def user_fills_by_time(self, user: str, start_ms: int, end_ms: int | None = None) -> list[Fill]: ...

    def open_orders(self, user: str) -> list[OpenOrder]: ...

    def user_funding(self, user: str, start_ms: int, end_ms: int | None = None) -> list[FundingPayment]: ...

    def order_status(self, user: str, oid_or_cloid: int | str) -> OrderStatusResult: ...


class Reconciler:
    """Holds the bot's view against the exchange's for every market."""

    def __init__(self, rest: AccountQueries, store: StateWriter, executor: OrderExecutor, gate: InfoGate,
                 traders: Mapping[str, MarketTrader], address: str, paper: bool, clock: Callable[[], float],
                 now_ms: Callable[[], int], notifier: Notifier = NO_NOTIFIER) -> None:
        self.rest, self.store, self.executor, self.gate = rest, store, executor, gate
        self.traders, self.address, self.paper = traders, address, paper
        self.clock, self.now_ms, self.notifier = clock, now_ms, notifier
        self.due: str | None = None  # why a position check is wanted at the next timer pass
        self.next_check = 0.0
        self.last_periodic = clock()
        self.connected_once = False
        self.unmanaged: dict[str, tuple[Decimal, Decimal]] = {}  # coin -> (size, entry) of positions no market trades

    # ---- position checks -------------------------------------------------------------------

    def want(self, reason: str, at_once: bool = False) -> None:
        """Ask the exchange for the positions at the next timer pass (one check for a burst of causes)."""
        if self.due is None:
            self.due = reason
        if at_once:
            self.next_check = 0.0

    def timer(self, now: float) -> None:
        if now - self.last_periodic >= RECONCILE_EVERY_S:
            self.last_periodic = now
            self.want("periodic check")
            self.reconcile_funding()
        if self.due is None or now < self.next_check or self.gate.held(now):
            return
        reason, self.due = self.due, None
        self.next_check = now + CHECK_SPACING_S
        done = False
        try:
            done = self.check_positions(reason)
        finally:
            if not done:  # failed or raised: tried again after the spacing (or the /info pause)
                self.want(reason)

    def check_positions(self, reason: str) -> bool:
        """Adopt the exchange's position of every market; False: the exchange could not be asked."""
        if self.paper:
            return True
        if self.gate.held(self.clock()):
            return False
        try:
            state = self.rest.clearinghouse_state(self.address)
        except HyperliquidError as exc:
            self.gate.failed(f"position check ({reason})", exc)
            return False
        self.gate.ok()
        theirs = {p.coin: p for p in state.positions if p.size != 0}
        for coin, trader in self.traders.items():
            p = theirs.get(coin)
            try:  # one market's failure must not keep the others from the exchange's word
                trader.adopt(p.size if p else Decimal(0), p.entry_px if p else Decimal(0), reason)
            except Exception:  # noqa: BLE001 - logged; the next check tries that market again
                log.exception("%s: adopting the exchange's position failed; the next check tries again", coin)
        self._note_unmanaged({c: (p.size, p.entry_px) for c, p in theirs.items() if c not in self.traders})
        return True

    def _note_unmanaged(self, sizes: dict[str, tuple[Decimal, Decimal]]) -> None:
        """A position no market trades is never dropped silently: a warning when it appears or changes."""
        for coin, (size, entry_px) in sizes.items():
            if self.unmanaged.get(coin, (None,))[0] != size:
                log.warning("unmanaged position: %s %s on the account (no market of this bot trades %s; it is "
                            "left alone)", coin, size, coin)
                self.notifier.notify("unmanaged_position", coin, f"unmanaged position: {coin} {size} at {entry_px} on "
                                     "the account; no market of this bot trades it, it is left alone", size=size,
                                     entry_px=entry_px)
        for coin in set(self.unmanaged) - set(sizes):
            log.info("unmanaged position: %s is now flat", coin)
        self.unmanaged = sizes

    # ---- fills -----------------------------------------------------------------------------

    def _since_last(self, what: str, last_ms: int | None, fetch: Callable[[str, int], list[T]]) -> list[T] | None:
        """The account's entries since the newest journaled one (the last day's at the first start),
        or None when /info is paused or the query failed."""
        if self.gate.held(self.clock()):
            return None
        start = last_ms if last_ms is not None else self.now_ms() - FILLS_LOOKBACK_MS
        try:
            entries = fetch(self.address, start)
        except HyperliquidError as exc:
            self.gate.failed(f"{what} reconciliation", exc)
            return None
        self.gate.ok()
        return entries

    def reconcile_fills(self) -> bool:
        """Journal the fills the stream may have missed."""
        fills = self._since_last("fill", self.store.last_fill_time_ms(), self.rest.user_fills_by_time)
        if fills is None:
            return False
        added = sum(1 for f in fills if f.coin in self.traders and self.store.journal(f))
        if added:
            log.info("reconciled %d fill(s) the stream had not delivered", added)
        return True

    def reconcile_funding(self) -> bool:
        """Journal the funding payments the stream may have missed."""
        payments = None if self.paper else \
            self._since_last("funding", self.store.last_funding_time_ms(), self.rest.user_funding)
        for payment in payments or ():
            self.store.record_funding(payment)
        return payments is not None

    def on_funding(self, payment: StreamFunding) -> None:
        if self.store.record_funding(payment):
            log.info("%s funding %s USDC (rate %s on %s)", payment.coin, payment.usdc, payment.rate, payment.szi)

    def on_fill(self, fill: StreamFill) -> None:
        """A fill of the account from the stream: journal it once; a fill we did not expect means the
        position changed behind our back, so it triggers a check."""
        if fill.coin not in self.traders:
            return
        new = self.store.record_fill(tid=str(fill.tid), coin=fill.coin, px=fill.price, size=fill.size,
                                     side=fill.side, time_ms=fill.time_ms, oid=fill.oid, cloid=fill.cloid,
                                     fee=fill.fee, closed_pnl=fill.closed_pnl, paper=False)
        if new is False:
            return  # journaled before (None: not written yet, but new to us)
        maker = self.traders[fill.coin].entries.maker
        if maker.owns(fill.cloid):
            maker.on_fill(fill.tid, fill.size)  # a post-only entry resting: the fill opens the position
            return
        if fill.cloid is not None and fill.cloid in self.executor.unknown:
            log.warning("%s: fill of an order whose result was unknown (%s): %s %s at %s; checking the position",
                        fill.coin, fill.cloid, fill.side, fill.size, fill.price)
            self.want("fill of an order whose result was unknown", at_once=True)
            return
        record = self.store.order(fill.cloid) if fill.cloid else None
        if record is not None and record.purpose in ("sl", "tp") and not record.is_terminal:
            self.store.save_order(record.to("filled", self.now_ms()))  # else the next start asks the exchange
        # A fill we did not send an IOC for changed the position behind our back: a manual trade (even
        # while flat), an exchange-side stop, or one left by a killed run. The snapshot counts too: a
        # stop that fired during start-up arrives only there.
        stop_fill = record is not None and record.purpose in ("sl", "tp") and self.traders[fill.coin].position is not None
        if record is None or stop_fill:
            what = "an order the bot did not send" if record is None else f"exchange-side {record.purpose}"
            log.warning("%s: %s filled: %s %s at %s; reconciling", fill.coin, what, fill.side, fill.size, fill.price)
            self.want(f"{what} filled")
        elif record.purpose in ("entry", "exit") and record.status != "filled":
            # Our own order, filled, though we took it as not filled: believe the exchange.
            log.warning("%s: fill of our %s order %s, which we had as %s: %s %s at %s; checking the position",
                        fill.coin, record.purpose, record.cloid, record.status, fill.side, fill.size, fill.price)
            self.want(f"fill of our {record.purpose} order we had as {record.status}")

    def on_order_update(self, update: StreamOrderUpdate) -> None:
        """An order of ours changed status on the exchange (`orderUpdates`): the record follows
        without a REST call. A stop that fired or an order the exchange canceled changes the
        position or its protection: a position check, and a missing stop is placed again."""
        if update.cloid is None or update.coin not in self.traders:
            return
        if update.cloid in self.executor.unknown:
            self.want("an order whose result was unknown changed status", at_once=True)  # its lookup settles it
            return
        maker = self.traders[update.coin].entries.maker
        if maker.owns(update.cloid):
            maker.on_update(update.status, update.size, update.orig_size)
            return
        record = self.store.order(update.cloid)
        if record is None or record.is_terminal or record.purpose not in ("sl", "tp"):
            return  # entries and exits are IOC: their answer (or lookup) and fills settle them
        status = update.status
        try:
            if status in ("open", "triggered"):
                changed = record.to("resting", self.now_ms(), oid=update.oid) if record.status != "resting" else None
            elif status == "filled":
                changed = None  # its fills say how much, at what price (userFills)
            else:
                changed = record.resolved_by_status(status, self.now_ms())
        except InvalidTransition:
            return
        if changed is not None:
            self.store.save_order(changed)
        trader = self.traders[update.coin]
        ours = trader.position is not None and update.cloid in trader.position.protective_cloids
        if record.purpose in ("sl", "tp") and status == "triggered":
            log.warning("%s: exchange-side %s %s triggered; checking the position", update.coin, record.purpose,
                        update.cloid)
            self.want(f"exchange-side {record.purpose} triggered", at_once=True)
        elif status not in ("open", "triggered", "filled"):
            log.warning("%s: the exchange says %s for our %s order %s", update.coin, status, record.purpose,
                        update.cloid)
            if ours:
                trader.protection.schedule_repair()  # a stop the exchange canceled: placed again
            self.want(f"our {record.purpose} order {status}", at_once=True)

    def on_liquidation(self, event: StreamLiquidation) -> None:
        log.error("LIQUIDATION on the account: %s; checking every position", event.detail)
        self.want("liquidation", at_once=True)

    def on_connected(self) -> None:
        if self.connected_once and not self.paper:
            # orderUpdates/userEvents are not replayed on resubscribe: check over REST.
            self.reconcile_fills()
            self.reconcile_funding()
            self.want("after reconnect")
        self.connected_once = True

    # ---- start-up --------------------------------------------------------------------------

    def at_start(self) -> None:
        """Compare saved state with the exchange; the exchange is the truth (startup.py)."""
        StartUp(self).run()
