"""Post-only (maker) entries of one market: one resting `Alo` order at the touch, re-pegged, canceled.

Owns: the market's working maker entry (at most one; `trading.entry_order: post_only`, or a
strategy's `entry_order`): its order placed at the best bid (a long) or ask (a short) of a fresh
bbo (else of an /info l2Book: `Touch`), sent by the executor (its cloid saved first, like every
entry's); its fills, from the stream (each tid counted once) and from its status polled over /info
every MAKER_POLL_S (the stream may miss them); withdrawing it: for a re-peg once it has rested
`maker_repeg_s` and the touch moved away (never placed past the signal's price moved by
`slippage_pct`: the signal ends there), for good when still unfilled `maker_timeout_s` after the
signal, at its first fill (the position opens at once, once, with what filled, and its exits
protect it), at pause and the operator's close, and at shutdown (the next start cancels one left
resting: startup.py).
Must not: hold the position (the trader's `opened` does), send a marketable order, or take an
order for gone before the exchange's status says so: a cancel's answer never says what filled
before it, so nothing is placed again, and the signal never ends, until a status settles it;
a cancel that fails is retried every CANCEL_RETRY_S, entries waiting.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Literal, Mapping, Protocol, cast

from execution import NotSent, OrderExecutor
from logsetup import RateLimitedLog
from order_book import BBO_FRESH_S, Quotes
from orders import InvalidTransition, OrderRecord
from paper import ALO_CROSSED
from rest_errors import HyperliquidError, OrderStatusUnknown
from rest_gate import InfoGate
from settings import TradingSettings
from sizing import RiskGuard
from wire import PARSE_ERRORS, OrderStatusResult

log = logging.getLogger("bot")

MAKER_POLL_S = 2.0        # a resting maker entry's status is asked this often over /info (paper: every turn)
CANCEL_RETRY_S = 1.0      # a cancel that failed is tried again this soon
CONFIRM_POLL_S = 0.5      # after a cancel, the order's status is asked this often until it says it ended
UNKNOWN_GIVE_UP_S = 60.0  # an order the exchange keeps not knowing is given up (a position check decides)
REPLACE_AFTER_S = 0.2     # after "would have immediately matched", the next placement waits for a newer touch
HELD_RETRY_S = 0.5        # a placement held back (an order in doubt, a position check due) is tried again this soon


class Host(Protocol):
    """What the maker needs of its market (MarketTrader)."""

    quotes: Quotes

    @property
    def has_position(self) -> bool: ...

    def opened(self, side: Literal["long", "short"], filled: Decimal, avg_px: Decimal) -> None: ...


class PaperMaker(Protocol):
    """The paper exchange's resting orders (paper.py): told each price, it fills those traded through."""

    def trade(self, coin: str, px: Decimal) -> None: ...

    def order_status(self, user: str, oid_or_cloid: int | str) -> OrderStatusResult: ...


@dataclass
class Working:
    """One entry signal being worked, and the order resting for it now (None: between orders)."""

    side: Literal["long", "short"]
    size: Decimal
    px: Decimal               # the price at the signal, then the latest order's
    started_s: float
    signal_px: Decimal = Decimal(0)  # the price at the signal: the touch may not run further than slippage_pct
    record: OrderRecord | None = None
    placed_s: float = 0.0
    stream_tids: set[int] = field(default_factory=set)
    stream_filled: Decimal = Decimal(0)  # of the current order, from the stream's fills
    polled_filled: Decimal = Decimal(0)  # of the current order, from its status
    cancel_sent: bool = False  # for `record`: gone once its status says so (a poll or the stream's update)
    ending: str | None = None  # why `record` is withdrawn: "re-peg", "timeout", "the position is open", ...
    replace: bool = True       # with no order resting: place one (first, after "would have crossed", a re-peg)
    ended_by: str | None = None  # the exchange's word for the last order's end ("canceled", "marginCanceled", ...)
    given_up: str | None = None  # withdrawn for good at the operator's word (`give_up`)
    opened: Decimal = Decimal(0)  # the fill the position was opened with (0: none yet)
    adopted: bool = False      # a position check found the position before its fill came: never opened here
    unknown_since_s: float | None = None  # the exchange has answered "unknownOid" for the order since
    repegs: int = 0
    next_poll_s: float = 0.0
    next_try_s: float = 0.0   # the next placement, or the next cancel attempt

    @property
    def is_buy(self) -> bool:
        return self.side == "long"

    @property
    def filled(self) -> Decimal:
        return max(self.stream_filled, self.polled_filled)

    def view(self) -> dict[str, Any]:
        """For /health: the side, size, resting price (None between orders), re-pegs, filled."""
        return {"side": self.side, "size": float(self.size), "repegs": self.repegs, "filled": float(self.filled),
                "px": float(self.record.limit_px) if self.record is not None else None}


class Touch:
    """One market's best bid and ask to rest at: the stream's `bbo` when fresh, else the /info
    l2Book's, asked at most every MAKER_POLL_S (a quiet market's bbo is not sent again until it
    changes, so its age alone says nothing)."""

    def __init__(self, coin: str, quotes: Quotes, rest: object, gate: InfoGate, clock: Callable[[], float]) -> None:
        self.coin, self.quotes, self.gate, self.clock = coin, quotes, gate, clock
        self._query: Callable[[str], Mapping[str, Any]] | None = getattr(rest, "l2_book", None)  # none: a backtest
        self._asked: tuple[float, Decimal | None, Decimal | None] = (-MAKER_POLL_S, None, None)

    def fresh(self, is_buy: bool) -> Decimal | None:
        """The stream's best bid (`is_buy`) or ask, if fresh."""
        if self.clock() - self.quotes.bbo_at > BBO_FRESH_S:
            return None
        return self.quotes.bid if is_buy else self.quotes.ask

    def price(self, is_buy: bool, now: float) -> Decimal | None:
        touch = self.fresh(is_buy)
        if touch is not None:
            return touch
        at, bid, ask = self._asked
        if now - at >= MAKER_POLL_S and self._query is not None and not self.gate.held(now):
            bid, ask = self._ask(now)
        return bid if is_buy else ask

    def _ask(self, now: float) -> tuple[Decimal | None, Decimal | None]:
        assert self._query is not None
        try:
            levels = self._query(self.coin)["levels"]
            bid, ask = (Decimal(str(side[0]["px"])) if side else None for side in levels[:2])
        except HyperliquidError as exc:
            self.gate.failed(f"{self.coin} l2Book for a post-only entry", exc)
            return None, None
        except PARSE_ERRORS:
            return None, None
        self.gate.ok()
        self._asked = (now, bid, ask)
        return bid, ask


class MakerEntry:
    """One market's post-only entry (main thread only). `held()` says whether an order may be
    placed now (the same holds as a new entry's: an order in doubt, a position check due, a stale
    stop's cancel failing)."""

    def __init__(self, coin: str, trading: TradingSettings, executor: OrderExecutor, guard: RiskGuard, host: Host,
                 want_check: Callable[[str], None], held: Callable[[], bool], wanted: Callable[[], bool],
                 clock: Callable[[], float], now_ms: Callable[[], int]) -> None:
        self.coin, self.trading, self.executor, self.guard, self.host = coin, trading, executor, guard, host
        self.want_check, self.held, self.wanted, self.clock, self.now_ms = want_check, held, wanted, clock, now_ms
        self.paper = executor.paper
        self.work: Working | None = None
        self.touch = Touch(coin, host.quotes, executor.rest, executor.gate, clock)
        self._quiet = RateLimitedLog(every_s=60.0, clock=clock)

    # ---- the loop's side -------------------------------------------------------------------

    def start(self, side: Literal["long", "short"], size: Decimal, price: Decimal) -> None:
        """An entry signal at `price`: work it as a resting order at the touch."""
        now = self.clock()
        size = Decimal(format(size.normalize(), "f"))  # 0.004, not 0.00400, in the logs (the same number)
        self.work = Working(side, size, price, started_s=now, signal_px=price)
        self._place(self.work, now)

    def give_up(self, why: str) -> bool:
        """The operator's word (`--ctl close`): withdraw the order for good. False: none is worked."""
        if self.work is None:
            return False
        self.work.given_up = why
        self._act(self.work, self.clock())
        return True

    def owns(self, cloid: str | None) -> bool:
        work = self.work
        return cloid is not None and work is not None and work.record is not None and work.record.cloid == cloid

    def notional_usd(self) -> Decimal:
        work = self.work
        return Decimal(0) if work is None else work.size * work.px

    def on_price(self, price: Decimal) -> None:
        """Paper trading: the paper exchange fills the resting order a trade went through."""
        if self.paper and self.work is not None:
            cast(PaperMaker, self.executor.exchange).trade(self.coin, price)

    def on_fill(self, tid: int, size: Decimal) -> None:
        """A fill of the resting order from the stream (`owns` said it is ours)."""
        work = self.work
        assert work is not None
        if tid not in work.stream_tids:
            work.stream_tids.add(tid)
            work.stream_filled += size
            self._act(work, self.clock())

    def on_update(self, status: str, remaining: Decimal, orig_size: Decimal) -> None:
        """An `orderUpdates` status of the resting order (`owns` said it is ours)."""
        work = self.work
        assert work is not None and work.record is not None
        filled = max(orig_size, work.record.size) if status == "filled" else orig_size - remaining
        self._learned(work, status, filled, self.clock(), polled=False)
        self._act(work, self.clock())

    def timer(self, now: float) -> None:
        work = self.work
        if work is None:
            return
        if work.record is not None and now >= work.next_poll_s:
            self._poll(work, now)  # also how a cancel is confirmed: by the order's status, never assumed
        if self.work is work:
            self._act(work, now)

    def stop(self) -> None:
        """Shutdown: a resting entry must not fill after the bot stopped watching it, and what
        filled is a position with its stops before the state is saved."""
        work = self.work
        if work is None:
            return
        now = self.clock()
        work.given_up = work.ending = "the bot is stopping"  # nothing is placed again, whatever comes after
        for _attempt in range(2):  # back to back: nothing waits at shutdown but the requests' deadlines
            if work.record is not None and not work.cancel_sent:
                self._cancel(work, now)
            if work.record is not None and work.cancel_sent:
                self._poll(work, now)
        if work.filled > work.opened and not work.adopted and not self.host.has_position:
            self._open(work)
        if work.record is not None:
            log.error("%s: post-only entry %s could not be confirmed canceled at shutdown; it may still rest on the "
                      "exchange (the next start cancels it)", self.coin, work.record.cloid)

    # ---- deciding --------------------------------------------------------------------------

    def _act(self, work: Working, now: float) -> None:
        """What the signal needs now: a position for new fills, then its order withdrawn (for a
        re-peg or for good), placed, or the signal done."""
        if self.host.has_position and work.opened == 0:
            work.adopted = True  # a position check took the exchange's position first
        if work.filled > work.opened:
            if work.opened == 0 and not work.adopted:
                self._open(work)
            else:  # more filled after the position opened (or a check adopted it first): the check sizes it
                work.opened = work.filled
                self.want_check(f"{self.coin} more of the post-only entry filled")
        if now < work.next_try_s or self.work is not work:
            return
        if work.record is not None:
            if not work.cancel_sent:
                work.ending = self._withdraw_reason(work, now)
                if work.ending is not None:
                    self._cancel(work, now)
            return
        stop = self._stop_reason(work, now)
        if stop is not None:
            self.work = None
            if stop:
                log.info("%s post-only entry %s", self.coin, stop)
        elif not work.replace:  # the exchange ended it (not our re-peg): its reason may bar another
            self.work = None
            log.warning("%s post-only entry ended: the exchange says %s; checking the position", self.coin,
                        work.ended_by)
            self.want_check(f"{self.coin} post-only entry {work.ended_by}")
        elif self.held():
            work.next_try_s = now + HELD_RETRY_S
        else:
            repeg, old_px = work.ending == "re-peg", work.px
            self._place(work, now)
            if repeg and work.record is not None:
                work.repegs += 1
                log.info("%s post-only entry re-pegged: %s -> %s (re-peg %d)", self.coin, old_px, work.px,
                         work.repegs)

    def _stop_reason(self, work: Working, now: float) -> str | None:
        """With no order resting, why the signal is done ("" when it filled), else None."""
        if work.opened > 0 or work.adopted or self.host.has_position:
            return ""
        if work.given_up or not self.wanted():
            return f"withdrawn: {work.given_up or 'entries paused'}"
        if now - work.started_s >= self.trading.maker_timeout_s:
            return f"canceled: not filled in {self.trading.maker_timeout_s:g} s ({work.repegs} re-pegs)"
        return None

    def _withdraw_reason(self, work: Working, now: float) -> str | None:
        """Why the resting order must go now: the signal is done, or it was left behind."""
        stop = self._stop_reason(work, now)
        if stop is not None:
            return stop or "the position is open"
        if now - work.placed_s >= self.trading.maker_repeg_s and self._left_behind(work, now):
            return "re-peg"
        return None

    def _left_behind(self, work: Working, now: float) -> bool:
        """The touch moved away: a better bid than ours (a long), a lower ask (a short)."""
        touch = self.touch.price(work.is_buy, now)
        return touch is not None and (touch > work.px if work.is_buy else touch < work.px)

    def _open(self, work: Working) -> None:
        """The position of what filled, at once: its exits protect it while the rest is canceled."""
        log.info("%s post-only entry filled: %s of %s at %s", self.coin, work.filled, work.size, work.px)
        work.opened = work.filled
        self.host.opened(work.side, work.filled, work.px)

    # ---- the exchange ----------------------------------------------------------------------

    def _place(self, work: Working, now: float) -> None:
        """Place the order at the touch; with no touch, or a touch the order would cross, later."""
        touch = self.touch.price(work.is_buy, now)
        if touch is None:
            work.next_try_s = now + CANCEL_RETRY_S
            if self._quiet.allow("no touch") is not None:
                log.warning("%s post-only entry waits: no fresh best %s", self.coin, "bid" if work.is_buy else "ask")
            return
        limit = work.signal_px * (1 + self.trading.slippage_pct / 100 * (1 if work.is_buy else -1))
        if touch > limit if work.is_buy else touch < limit:  # a re-peg never chases past what an IOC would pay
            log.info("%s post-only entry dropped: the touch %s ran past %s (the signal's %s and slippage_pct %s)",
                     self.coin, touch, limit.quantize(touch), work.signal_px, self.trading.slippage_pct)
            self.work = None
            return
        refusal = self.guard.check_entry(Decimal(0), work.size * touch, self.now_ms())
        if refusal:
            log.warning("%s post-only entry dropped: %s", self.coin, refusal)
            self.work = None
            return
        try:
            record, result = self.executor.send_post_only(self.coin, work.is_buy, work.size, touch, self.guard)
        except (NotSent, OrderStatusUnknown, HyperliquidError, ValueError) as exc:
            # Unknown: the executor looks it up (one found resting is canceled); entries wait for it.
            log.error("%s post-only entry not placed: %s", self.coin, exc)
            self.work = None
            return
        if result.kind == "resting":
            work.record = self._saved(record.to("resting", self.now_ms(), oid=result.oid))
            work.px, work.placed_s, work.ending, work.replace, work.unknown_since_s = touch, now, None, False, None
            work.next_poll_s = now + (0.0 if self.paper else MAKER_POLL_S)
            work.stream_tids, work.stream_filled, work.polled_filled = set(), Decimal(0), Decimal(0)
            log.info("%s post-only entry resting: %s %s at %s (%s)", self.coin, "buy" if work.is_buy else "sell",
                     work.size, touch, record.cloid)
        elif result.kind == "filled":  # a post-only order never takes; believe the exchange all the same
            assert result.total_size is not None and result.avg_px is not None
            self._saved(record.filled_by_result(result.total_size, result.avg_px, self.now_ms()))
            work.px, work.polled_filled = result.avg_px, result.total_size
            self._open(work)
            self.work = None
        else:
            self._saved(record.rejected(result.message or "error", self.now_ms()))
            if ALO_CROSSED in (result.message or ""):
                work.replace = True
                work.next_try_s = now + REPLACE_AFTER_S  # the touch moved on; placed again at the new one
                return
            log.warning("%s post-only entry refused: %s", self.coin, result.message)
            self.work = None

    def _cancel(self, work: Working, now: float) -> None:
        """Send the cancel; whatever it answers, the order is gone only once its status says so."""
        record = work.record
        assert record is not None
        try:
            self.executor.exchange.cancel_by_cloid(self.coin, record.cloid)
        except HyperliquidError as exc:
            work.next_try_s = now + CANCEL_RETRY_S
            if self._quiet.allow("cancel failed") is not None:
                log.warning("%s: cancel of post-only entry %s failed (%s); retrying, entries wait", self.coin,
                            record.cloid, exc)
            return
        work.cancel_sent = True  # the next status (a poll, or the stream's update) settles it
        work.next_poll_s = now

    def _poll(self, work: Working, now: float) -> None:
        """Ask the order's status (the stream may miss a fill or a cancel; a cancel's answer never
        says what filled before it)."""
        record = work.record
        assert record is not None
        work.next_poll_s = now + (0.0 if self.paper else CONFIRM_POLL_S if work.cancel_sent else MAKER_POLL_S)
        gate = self.executor.gate
        source: Any = self.executor.exchange if self.paper else self.executor.rest
        if not self.paper and gate.held(now):
            return
        try:
            answer = source.order_status(self.executor.address, record.cloid)
            status, filled = status_and_filled(answer)
        except HyperliquidError as exc:
            gate.failed(f"status of post-only entry {record.cloid}", exc)
            return
        except PARSE_ERRORS as exc:
            log.warning("%s: unreadable status of post-only entry %s (%s)", self.coin, record.cloid, exc)
            return
        if not self.paper:
            gate.ok()
        self._learned(work, status, filled, now, polled=True)

    def _learned(self, work: Working, status: str, filled: Decimal, now: float, polled: bool) -> None:
        """The exchange's word on the resting order: how much filled, and whether it still rests.
        A poll saying "open" after a cancel: the cancel did not take, it is sent again."""
        work.polled_filled = max(work.polled_filled, filled)
        if status == "unknownOid":  # an answer from before it settled in, once; for a minute: given up
            work.unknown_since_s = work.unknown_since_s or now
            if now - work.unknown_since_s >= UNKNOWN_GIVE_UP_S:
                log.warning("%s: the exchange has not known post-only entry %s for %.0f s; given up, checking the "
                            "position", self.coin, work.record.cloid if work.record else "?", UNKNOWN_GIVE_UP_S)
                self._ended(work, status)
                self.want_check(f"{self.coin} post-only entry unknownOid for a minute")
            return
        work.unknown_since_s = None
        if status != "open":  # filled, or canceled/rejected: it rests no more
            self._ended(work, status)
        elif polled and work.cancel_sent:  # the cancel did not take: sent again
            work.cancel_sent = False
            work.next_try_s = now + CANCEL_RETRY_S

    def _ended(self, work: Working, status: str) -> None:
        """The resting order is gone: its record says so, with what filled."""
        record = work.record
        assert record is not None
        work.record, work.cancel_sent, work.ended_by = None, False, status
        work.replace = status == "canceled" and work.ending == "re-peg"
        filled = work.filled
        try:
            if status == "filled" or filled >= record.size:
                changed = record.filled_by_result(filled or record.size, record.limit_px, self.now_ms())
            else:
                changed = record.to("canceled", self.now_ms(), reason=f"{status} ({work.ending or 'by the exchange'})",
                                    filled_size=filled, avg_px=record.limit_px if filled else None)
        except InvalidTransition:
            return
        self._saved(changed)
        if self.paper and filled > 0:
            self.executor.journal_paper_fill(record, filled, record.limit_px, record.oid, maker=True)

    def _saved(self, record: OrderRecord) -> OrderRecord:
        self.executor.store.save_order(record)
        return record


def status_and_filled(answer: OrderStatusResult) -> tuple[str, Decimal]:
    """(the order's status word, how much of it filled) from an orderStatus answer."""
    if answer.status == "unknownOid" or answer.order is None:
        return "unknownOid", Decimal(0)
    order = answer.order["order"]
    status = str(answer.order["status"])
    orig = Decimal(str(order["origSz"]))
    return status, orig if status == "filled" else orig - Decimal(str(order["sz"]))
