"""Order execution for every market: send with a client order id, know what became of it.

Owns: sending IOC orders (the cloid saved first for entries; exits use a cloid reserved ahead of
need, or a fresh one saved after sending: an exit never waits on the disk) and post-only entries
(maker.py works them), each signed to expire by its record's bound (`expires_by_ms`: the record,
made just before the send, says how long after it the expiry can be, so the next start knows
whatever its config says), the three outcomes of a send (done, not executed, unknown), the
registry of orders whose result is unknown and their lookups by cloid (a timer of the loop, one
per turn, past the order's signed expiry; sizes and prices from the exchange's fills), reserved
exit cloids, cancels by cloid and the ones that failed (retried before the next entry in that
coin), and paper fills in the journal.
Must not: decide to trade (the market traders do), sleep, or re-send an order whose result it does
not know: a lookup settles it first.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping, Protocol

from orders import InvalidTransition, OrderRecord
from paper import PaperExchange
from rest_errors import HyperliquidError, OrderStatusUnknown
from rest_gate import InfoGate
from signing import new_cloid
from sizing import RiskGuard
from state_writer import StateWriter
from unknown_orders import (Settlement, UnknownOrder, UnknownOrders, after_failure_s, after_wait_s,
                            first_lookup_s, saved_expiry_ms, settle)
from wire import Fill, OrderResult, OrderStatusResult

log = logging.getLogger("bot")


class NotSent(Exception):
    """An order was not sent (nothing reached the exchange); the message says why."""


class Exchange(Protocol):
    """The order methods of HyperliquidRestClient and PaperExchange."""

    def market_order(self, coin: str, is_buy: bool, size: Decimal, slippage_pct: Decimal,
                     reference_px: Decimal | None = None, reduce_only: bool = False,
                     cloid: str | None = None, expires_by_ms: int | None = None) -> list[OrderResult]: ...

    def trigger_order(self, coin: str, is_buy: bool, size: Decimal, trigger_px: Decimal, tpsl: str,
                      **kw: Any) -> list[OrderResult]: ...

    def place_order(self, coin: str, is_buy: bool, size: Decimal, limit_px: Decimal, tif: str = "Gtc",
                    reduce_only: bool = False, cloid: str | None = None,
                    expires_by_ms: int | None = None) -> list[OrderResult]: ...

    def cancel_by_cloid(self, coin: str, cloid: str) -> bool: ...


class InfoQueries(Protocol):
    def order_status(self, user: str, oid_or_cloid: int | str) -> OrderStatusResult: ...

    def user_fills_by_time(self, user: str, start_ms: int, end_ms: int | None = None) -> list[Fill]: ...


@dataclass(frozen=True)
class Ioc:
    """One IOC order to send."""
    coin: str
    is_buy: bool
    size: Decimal
    price: Decimal          # the reference price; the limit is this moved by `slippage_pct`
    slippage_pct: Decimal
    reduce_only: bool
    purpose: str            # "entry" or "exit"
    reason: str | None = None  # why (an exit's rule: stop_loss, take_profit, trailing_stop), for the journal


class OrderExecutor:
    """Sends orders and tracks the ones in doubt. `want_check(reason)` asks for a position check;
    `on_protective(coin, cloid, resting)` is told what an exchange-side SL/TP in doubt turned out to be."""

    def __init__(self, exchange: Exchange, rest: InfoQueries, store: StateWriter, gate: InfoGate, address: str,
                 expires_after_s: float, paper: bool, clock: Callable[[], float], now_ms: Callable[[], int],
                 want_check: Callable[[str], None], on_protective: Callable[[str, str, bool], None]) -> None:
        self.exchange, self.rest, self.store, self.gate = exchange, rest, store, gate
        self.address = address
        self.expiry_ms = int(expires_after_s * 1000)
        self.paper = paper
        self.clock, self.now_ms = clock, now_ms
        self.want_check = want_check
        self.on_protective = on_protective
        self.unknown = UnknownOrders()
        self.uncanceled: dict[str, list[str]] = {}  # coin -> cloids whose cancel failed

    # ---- sending ----

    def send_ioc(self, order: Ioc, reserved_cloid: str | None = None,
                 guard: RiskGuard | None = None) -> tuple[Decimal, Decimal]:
        """Send an IOC order; (filled size, average price) from the exchange's answer.

        An entry's cloid is saved before sending (NotSent if the disk refuses) and counted by the
        guard whatever the outcome; an exit uses `reserved_cloid` (saved ahead of need) or a fresh
        one saved after sending. Raises OrderStatusUnknown (the order is then tracked until a
        lookup settles it) or another HyperliquidError (not executed)."""
        cloid = reserved_cloid or new_cloid()
        record = OrderRecord.new(cloid=cloid, coin=order.coin, side="buy" if order.is_buy else "sell",
                                 size=order.size, limit_px=order.price, reduce_only=order.reduce_only,
                                 purpose=order.purpose, created_ms=self.now_ms(),
                                 status="reserved" if reserved_cloid else "pending",
                                 expires_within_ms=self.expiry_ms)
        if order.reason:
            record = record.to(record.status, record.created_ms, reason=order.reason)
        if order.purpose == "entry":
            if not self.store.save_order(record):  # saved before sending: a crash now is looked up by cloid
                raise NotSent(f"its cloid could not be saved ({self.store.error})")
            if guard is not None:
                guard.record_order(self.now_ms())
        result = self._send(order, record)
        if result.kind == "filled":
            assert result.total_size is not None and result.avg_px is not None
            record = record.filled_by_result(result.total_size, result.avg_px, self.now_ms())
            self.store.save_order(record)
            if self.paper:
                self.journal_paper_fill(record, result.total_size, result.avg_px, result.oid)
            return result.total_size, result.avg_px
        self.store.save_order(record.rejected(result.message or result.kind, self.now_ms()))
        log.warning("%s %s order %s: %s", order.coin, order.purpose, result.kind, result.message)
        return Decimal(0), Decimal(0)

    def send_post_only(self, coin: str, is_buy: bool, size: Decimal, limit_px: Decimal,
                       guard: RiskGuard) -> tuple[OrderRecord, OrderResult]:
        """Send a post-only (`Alo`) entry resting at `limit_px`: its cloid saved first (NotSent if
        the disk refuses) and counted by the guard; (the record as sent, the exchange's answer).
        Raises like send_ioc; an entry in doubt that turns out to rest is canceled (`_settled`)."""
        record = OrderRecord.new(cloid=new_cloid(), coin=coin, side="buy" if is_buy else "sell", size=size,
                                 limit_px=limit_px, reduce_only=False, purpose="entry", created_ms=self.now_ms(),
                                 expires_within_ms=self.expiry_ms)
        if not self.store.save_order(record):
            raise NotSent(f"its cloid could not be saved ({self.store.error})")
        guard.record_order(self.now_ms())
        result = self._sent(record, size * limit_px, lambda: self.exchange.place_order(
            coin, is_buy, size, limit_px, tif="Alo", cloid=record.cloid, expires_by_ms=record.expires_by_ms)[0])
        return record, result

    def _send(self, order: Ioc, record: OrderRecord) -> OrderResult:
        """An IOC's answer; one that says it rests is an answer we do not understand."""
        result = self._sent(record, order.size * order.price, lambda: self.exchange.market_order(
            order.coin, order.is_buy, order.size, order.slippage_pct, reference_px=order.price,
            reduce_only=order.reduce_only, cloid=record.cloid, expires_by_ms=record.expires_by_ms)[0])
        if result.kind == "resting":  # an IOC cannot rest
            unknown = OrderStatusUnknown(record.cloid, self.expiry_bound_ms(), "an IOC answered as resting")
            self.in_doubt(record, unknown, order.size * order.price)
            raise unknown
        return result

    def _sent(self, record: OrderRecord, notional: Decimal, send: Callable[[], OrderResult]) -> OrderResult:
        """The exchange's answer for one order; anything but an answer is an unknown result."""
        try:
            return send()
        except OrderStatusUnknown as exc:
            self.in_doubt(record, exc, notional)
            raise
        except HyperliquidError as exc:
            self.store.save_order(record.rejected(f"not executed: {exc}"[:300], self.now_ms()))
            raise
        except Exception as exc:  # noqa: BLE001 - a bug or an answer nobody foresaw: it may have filled
            unknown = OrderStatusUnknown(record.cloid, self.expiry_bound_ms(), f"{type(exc).__name__}: {exc}")
            log.error("%s %s order %s: unexpected %s after sending; its result is unknown", record.coin,
                      record.purpose, record.cloid, type(exc).__name__, exc_info=exc)
            self.in_doubt(record, unknown, notional)
            raise unknown from exc

    def expiry_bound_ms(self) -> int:
        """The latest expiresAfter an order signed by now can carry."""
        return self.now_ms() + self.expiry_ms

    def journal_paper_fill(self, record: OrderRecord, size: Decimal, px: Decimal, oid: int | None,
                           maker: bool = False) -> None:
        self.store.record_fill(tid=f"paper-{record.cloid}", coin=record.coin, px=px, size=size, side=record.side,
                               time_ms=self.now_ms(), oid=oid, cloid=record.cloid,
                               fee=PaperExchange.fee(size, px, maker), closed_pnl=None, paper=True)

    # ---- reserved exit cloids ----

    def reserve_exit_cloid(self, coin: str, is_buy: bool, size: Decimal) -> str | None:
        """Save the next exit's cloid now, while nothing is urgent, so that the exit sends with no
        write first and a crash right after it still leaves the cloid to look up."""
        record = OrderRecord.new(cloid=new_cloid(), coin=coin, side="buy" if is_buy else "sell", size=size,
                                 limit_px=Decimal(0), reduce_only=True, purpose="exit", created_ms=self.now_ms(),
                                 status="reserved", expires_within_ms=self.expiry_ms)
        return record.cloid if self.store.save_order(record) else None

    def retire_reserved(self, cloid: str) -> None:
        """A reserved cloid no longer fits (the position closed or changed): never used."""
        record = self.store.order(cloid)
        if record is not None and record.status == "reserved":
            self.store.save_order(record.to("canceled", self.now_ms(), reason="reserved, not used"))

    # ---- orders in doubt ----

    def in_doubt(self, record: OrderRecord, exc: OrderStatusUnknown, notional_usd: Decimal) -> None:
        """Track an order that may have filled until a lookup by cloid settles it; meanwhile the
        position is checked (and the traders keep entries out)."""
        self.store.save_order(record.to("unknown", self.now_ms(), reason=str(exc)[:300]))
        now = self.clock()
        self.unknown.add(UnknownOrder(
            cloid=record.cloid, purpose=record.purpose, is_buy=record.side == "buy", size=record.size,
            notional_usd=notional_usd, created_ms=record.created_ms, expires_after_ms=exc.expires_after_ms,
            next_lookup_s=first_lookup_s(now), since_s=now, coin=record.coin))
        self.want_check(f"{record.coin} {record.purpose} result unknown")

    def entry_in_doubt(self, coin: str) -> bool:
        return self.unknown.has("entry", coin=coin)

    def blocks_entries(self, coin: str) -> bool:
        """An entry that may have filled, or an exit still able to close a new position."""
        return self.unknown.has("entry", "exit", coin=coin)

    def lookup_timer(self, now: float) -> None:
        """One lookup per loop turn: each is up to two /info round trips, and exits must not queue behind."""
        due = self.unknown.due(now)
        if due and not self.gate.held(now):
            self.look_up(due[0], now)

    def look_up(self, order: UnknownOrder, now: float) -> None:
        """Ask the exchange about one unknown order by cloid, and its fills when it says it has ended."""
        order.failures += 1
        order.next_lookup_s = after_failure_s(order, now)  # unless it succeeds: nothing re-fires each turn
        try:
            status = self.rest.order_status(self.address, order.cloid)
            fills = [] if status.status in ("unknownOid", "open", "triggered") else self._fills_of(order, status.order)
        except HyperliquidError as exc:
            self.gate.failed(f"lookup of order {order.cloid}", exc)
            return
        self.gate.ok()
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
            self.store.journal(f)
        return [(f.size, f.px) for f in mine]

    def _settled(self, order: UnknownOrder, result: Settlement) -> None:
        record = self.store.order(order.cloid)
        verdict = result.verdict
        if verdict == "never_executed" and record is not None and record.status == "reserved":
            self.retire_reserved(order.cloid)  # saved ahead of need and never sent
            return
        log.warning("%s %s order %s had an unknown result; the exchange says %s%s", order.coin, order.purpose,
                    order.cloid, result.exchange_status, f": filled {result.filled_size} at {result.avg_px}"
                    if verdict == "executed" else " (it can no longer execute)" if verdict == "never_executed" else "")
        if verdict != "never_executed":
            self.want_check(f"{order.coin} {order.purpose} order {order.cloid} {verdict}")
        if order.purpose in ("sl", "tp") and verdict in ("never_executed", "not_filled", "resting"):
            self.on_protective(order.coin, order.cloid, verdict == "resting")
        if record is not None:
            self._record_settlement(record, result)
        if order.purpose == "entry" and verdict == "resting":  # a post-only entry nobody is working
            log.warning("%s: entry order %s rests on the exchange; canceling it", order.coin, order.cloid)
            self.cancel_cloids(order.coin, [order.cloid], reason="an entry in doubt found resting")

    def _record_settlement(self, record: OrderRecord, result: Settlement) -> None:
        now_ms = self.now_ms()
        try:
            if result.verdict == "executed":
                assert result.avg_px is not None
                record = record.filled_by_result(result.filled_size, result.avg_px, now_ms)
            elif result.verdict == "filled_unpriced":
                record = record.to("filled", now_ms, reason="filled; its fills not found (position from the exchange)")
            elif result.verdict == "resting":
                record = record.to("resting", now_ms)
            elif result.verdict == "never_executed":
                record = record.rejected("never reached the exchange", now_ms)
            else:
                record = record.to("canceled", now_ms, reason=result.exchange_status or "not filled")
        except InvalidTransition:
            return  # already settled another way (a fill on the stream, a start-up lookup)
        self.store.save_order(record)

    def resolve_at_start(self) -> None:
        """Orders saved with no known result at the last stop: looked up by cloid, never re-sent.
        Those the exchange cannot settle yet stay in doubt; the loop's timers ask again."""
        now, now_ms = self.clock(), self.now_ms()
        for record in self.store.orders(statuses=("reserved", "pending", "submitted", "unknown")):
            # The bound comes from the record (what the last run signed), never from today's
            # config: with a shorter expiry now, an order still able to execute would be given up.
            expires_ms = saved_expiry_ms(record.status == "reserved", record.created_ms, record.expires_within_ms,
                                         now_ms)
            order = UnknownOrder(cloid=record.cloid, purpose=record.purpose, is_buy=record.side == "buy",
                                 size=record.size, notional_usd=record.size * record.limit_px,
                                 created_ms=record.created_ms, expires_after_ms=expires_ms,
                                 next_lookup_s=now, since_s=now, coin=record.coin)
            self.unknown.add(order)
            if record.status != "reserved":
                log.warning("%s order %s (%s %s) had no result at the last stop; asking the exchange",
                            record.coin, record.cloid, record.purpose, record.side)
            if not self.gate.held(now):
                self.look_up(order, now)

    # ---- cancels ----

    def cancel_cloids(self, coin: str, cloids: Iterable[str], reason: str = "position closed") -> None:
        """Cancel our exchange-side orders; one that could not be canceled is retried before the
        next entry in that coin, which waits for it: a stale reduce-only stop would close it."""
        failed = self.uncanceled.setdefault(coin, [])
        for cloid in cloids:
            try:
                canceled = self.exchange.cancel_by_cloid(coin, cloid)
            except HyperliquidError as exc:
                if cloid not in failed:  # warned once; the retries before each entry stay quiet
                    log.warning("%s: could not cancel exchange-side order %s: %s; entries wait until it is "
                                "canceled", coin, cloid, exc)
                    failed.append(cloid)
                else:
                    log.debug("cancel of %s failed again: %s", cloid, exc)
                continue
            if cloid in failed:
                failed.remove(cloid)
                log.info("%s: exchange-side order %s canceled on retry; entries resume", coin, cloid)
            record = self.store.order(cloid)
            if canceled and record is not None and not record.is_terminal:
                self.store.save_order(record.to("canceled", self.now_ms(), reason=reason))

    def cancels_pending(self, coin: str) -> bool:
        """Retry the failed cancels of `coin`; True while some still fail."""
        failed = self.uncanceled.get(coin)
        if failed:
            self.cancel_cloids(coin, list(failed))
        return bool(self.uncanceled.get(coin))
