"""The post-only entry's edge paths, with a scripted exchange (the simulator tests cover the rest).

Each test drives `MakerEntry` through one answer the simulator does not give on its own: a cancel
that comes too late (the order filled), a fill seen twice, a refusal, an answer lost, an order the
exchange canceled; and the paper exchange's resting orders.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal as D
from pathlib import Path
from typing import Any, Iterator

import pytest

from execution import OrderExecutor
from maker import ALO_CROSSED, MakerEntry
from order_book import Book, Quotes
from paper import PaperExchange
from rest_errors import OrderStatusUnknown
from rest_gate import InfoGate
from settings import TradingSettings
from sizing import RiskGuard
from state import StateStore
from state_writer import StateWriter
from wire import OrderResult, OrderStatusResult

TRADING = TradingSettings(entry_order="post_only", maker_repeg_s=5.0, maker_timeout_s=30.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def ms(self) -> int:
        return int(self.now * 1000)


@dataclass
class ScriptedExchange:
    """Answers what the test queued; records every call."""
    places: list[Any] = field(default_factory=list)      # OrderResult or an exception, per place_order
    cancels: list[Any] = field(default_factory=list)     # bool or an exception, per cancel (default True)
    statuses: list[OrderStatusResult] = field(default_factory=list)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    expiry_bounds: list[int | None] = field(default_factory=list)  # expires_by_ms, per place_order

    def place_order(self, coin: str, is_buy: bool, size: D, limit_px: D, tif: str = "Gtc",
                    reduce_only: bool = False, cloid: str | None = None,
                    expires_by_ms: int | None = None) -> list[OrderResult]:
        self.calls.append(("place", (limit_px, tif, cloid)))
        self.expiry_bounds.append(expires_by_ms)
        answer = self.places.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return [answer]

    def cancel_by_cloid(self, coin: str, cloid: str) -> bool:
        self.calls.append(("cancel", cloid))
        answer = self.cancels.pop(0) if self.cancels else True
        if isinstance(answer, Exception):
            raise answer
        return answer

    def order_status(self, user: str, ref: int | str) -> OrderStatusResult:
        self.calls.append(("status", ref))
        return self.statuses.pop(0) if self.statuses else status("open", "0.004", "0.004")

    def l2_book(self, coin: str) -> dict[str, Any]:
        return {"levels": [[{"px": "49990", "sz": "1", "n": 1}], [{"px": "50010", "sz": "1", "n": 1}]]}

    def market_order(self, *args: Any, **kwargs: Any) -> list[OrderResult]:
        raise AssertionError("no IOC here")

    def trigger_order(self, *args: Any, **kwargs: Any) -> list[OrderResult]:
        raise AssertionError("no trigger here")

    def user_fills_by_time(self, user: str, start_ms: int, end_ms: int | None = None) -> list[Any]:
        return []


def resting(oid: int = 7) -> OrderResult:
    return OrderResult("resting", oid, None, None, None, None)


def error(message: str) -> OrderResult:
    return OrderResult("error", None, None, None, message, None)


def status(word: str, left: str, orig: str) -> OrderStatusResult:
    return OrderStatusResult(word, {"order": {"sz": left, "origSz": orig, "limitPx": "50000", "oid": 7},
                                       "status": word, "statusTimestamp": 0})


@dataclass
class Host:
    quotes: Quotes
    opened_with: list[tuple[str, D, D]] = field(default_factory=list)
    has_position: bool = False

    def opened(self, side: str, filled: D, avg_px: D) -> None:
        self.opened_with.append((side, filled, avg_px))
        self.has_position = True


@dataclass
class Rig:
    maker: MakerEntry
    exchange: ScriptedExchange
    host: Host
    clock: Clock
    executor: OrderExecutor
    store: StateWriter
    checks: list[str]
    held: list[bool]
    wanted: list[bool]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    clock = Clock()
    exchange = ScriptedExchange()
    store = StateStore(tmp_path / "bot.db")
    store.open()
    writer = StateWriter(store, clock)
    checks: list[str] = []
    executor = OrderExecutor(exchange, exchange, writer, InfoGate(clock), "0xabc", 5.0, False, clock, clock.ms,
                             want_check=checks.append, on_protective=lambda *a: None)
    host = Host(Quotes(clock))
    host.quotes.on_bbo(D("50000"), D("50001"))
    held, wanted = [False], [True]
    maker = MakerEntry("BTC", TRADING, executor, RiskGuard(D(1000), 100), host, checks.append, lambda: held[0],
                       lambda: wanted[0], clock, clock.ms)
    yield Rig(maker, exchange, host, clock, executor, writer, checks, held, wanted)
    store.close()


def started(rig: Rig) -> str:
    rig.exchange.places.append(resting())
    rig.maker.start("long", D("0.004"), D("50000"))
    assert rig.maker.work is not None and rig.maker.work.record is not None
    return rig.maker.work.record.cloid


def test_it_rests_at_the_best_bid_as_a_post_only_order(rig: Rig) -> None:
    cloid = started(rig)
    assert rig.exchange.calls == [("place", (D("50000"), "Alo", cloid))]
    assert rig.store.order(cloid).status == "resting" and rig.store.order(cloid).oid == 7
    # Signed to expire by what its record (saved first) promises a restart: made now, 5 s.
    assert rig.store.order(cloid).expires_within_ms == 5000
    assert rig.exchange.expiry_bounds == [rig.clock.ms() + 5000]


def test_a_fill_seen_twice_counts_once_and_opens_the_position_with_it(rig: Rig) -> None:
    cloid = started(rig)
    rig.maker.on_fill(101, D("0.001"))
    rig.maker.on_fill(101, D("0.001"))  # the same trade again (a snapshot after a reconnect)
    assert rig.host.opened_with == [("long", D("0.001"), D("50000"))]
    assert ("cancel", cloid) in rig.exchange.calls  # the rest canceled at once...
    assert rig.maker.work is not None  # ...but gone only once its status says so, with what filled by then
    rig.exchange.statuses.append(status("canceled", "0.002", "0.004"))  # 0.001 more filled before the cancel
    rig.maker.timer(rig.clock.now)
    assert rig.maker.work is None and rig.host.opened_with == [("long", D("0.001"), D("50000"))]  # opened once
    assert rig.store.order(cloid).filled_size == D("0.002") and rig.store.order(cloid).status == "canceled"
    assert any("more of the post-only entry filled" in c for c in rig.checks)  # the check sizes the position


def test_a_cancel_too_late_learns_the_fill_from_the_order_status(rig: Rig) -> None:
    cloid = started(rig)
    rig.clock.now += 6
    rig.host.quotes.on_bbo(D("50010"), D("50011"))  # left behind
    rig.exchange.cancels.append(False)  # "never placed, already canceled, or filled"
    rig.exchange.statuses.append(status("open", "0.004", "0.004"))  # the timer's poll, before the cancel
    rig.maker.timer(rig.clock.now)  # left behind: the re-peg's cancel
    assert ("cancel", cloid) in rig.exchange.calls and rig.host.opened_with == []
    rig.exchange.statuses.append(status("filled", "0", "0.004"))
    rig.maker.timer(rig.clock.now)  # its status settles it: filled
    assert rig.host.opened_with == [("long", D("0.004"), D("50000"))]  # at its own price, never re-pegged
    assert [c for c in rig.exchange.calls if c[0] == "place"] == [("place", (D("50000"), "Alo", cloid))]
    assert rig.maker.work is None and rig.store.order(cloid).status == "filled"


def test_an_order_that_would_cross_is_placed_again_at_the_new_touch(rig: Rig) -> None:
    rig.exchange.places.append(error(ALO_CROSSED + ", bbo was 50001"))
    rig.maker.start("long", D("0.004"), D("50000"))
    assert rig.maker.work is not None and rig.maker.work.record is None
    rig.host.quotes.on_bbo(D("50002"), D("50003"))
    rig.exchange.places.append(resting())
    rig.clock.now += 0.3
    rig.maker.timer(rig.clock.now)
    assert rig.maker.work.record is not None and rig.maker.work.record.limit_px == D("50002")


def test_another_refusal_ends_the_entry(rig: Rig) -> None:
    rig.exchange.places.append(error("Insufficient margin to place order."))
    rig.maker.start("long", D("0.004"), D("50000"))
    assert rig.maker.work is None and rig.host.opened_with == []


def test_a_lost_answer_leaves_the_order_to_the_executor_and_blocks_entries(rig: Rig) -> None:
    rig.exchange.places.append(OrderStatusUnknown("0x1", None, "timeout"))
    rig.maker.start("long", D("0.004"), D("50000"))
    assert rig.maker.work is None
    assert rig.executor.blocks_entries("BTC") and rig.executor.entry_in_doubt("BTC")


def test_a_lost_answer_found_resting_is_canceled(rig: Rig) -> None:
    rig.exchange.places.append(OrderStatusUnknown("0x1", None, "timeout"))
    rig.maker.start("long", D("0.004"), D("50000"))
    (order,) = rig.executor.unknown.due(rig.clock.now + 100)
    rig.exchange.statuses.append(status("open", "0.004", "0.004"))
    rig.executor.look_up(order, rig.clock.now + 100)
    assert ("cancel", order.cloid) in rig.exchange.calls
    assert rig.store.order(order.cloid).status == "canceled" and not rig.executor.blocks_entries("BTC")


@pytest.mark.parametrize("word", ["canceled", "marginCanceled", "liquidatedCanceled", "scheduledCancel",
                                  "openInterestCapCanceled", "badAloPxRejected"])
def test_an_order_the_exchange_ended_is_not_placed_again(rig: Rig, word: str) -> None:
    cloid = started(rig)
    rig.maker.on_update(word, D("0.004"), D("0.004"))  # not our cancel: its reason may bar another order
    rig.maker.timer(rig.clock.now)
    assert rig.maker.work is None and len([c for c in rig.exchange.calls if c[0] == "place"]) == 1
    assert rig.host.opened_with == [] and rig.store.order(cloid).is_terminal
    assert any(word in c for c in rig.checks)  # a position check at once (a liquidation cancels orders first)


def test_a_position_a_check_adopted_and_then_closed_is_not_opened_again(rig: Rig) -> None:
    started(rig)
    rig.host.has_position = True  # a position check found the fill first (the stream missed it)
    rig.exchange.statuses.append(status("open", "0.002", "0.004"))
    rig.clock.now += 2.1
    rig.maker.timer(rig.clock.now)  # the rest is canceled
    rig.host.has_position = False  # the stop closed it meanwhile
    rig.exchange.statuses.append(status("canceled", "0.002", "0.004"))
    rig.maker.timer(rig.clock.now)
    assert rig.host.opened_with == [] and rig.maker.work is None


def test_an_order_the_exchange_keeps_not_knowing_is_given_up_after_a_minute(rig: Rig) -> None:
    cloid = started(rig)
    rig.clock.now += 31  # timed out: the cancel, then its status is asked
    rig.exchange.statuses.extend([OrderStatusResult("unknownOid", None)] * 1000)
    for _ in range(400):  # 20 s of turns 50 ms apart
        rig.maker.timer(rig.clock.now)
        rig.clock.now += 0.05
    polls = sum(1 for c in rig.exchange.calls if c[0] == "status")
    assert polls <= 20 * 2 + 2 and rig.maker.work is not None  # every 0.5 s, not every turn
    rig.clock.now += 45
    rig.maker.timer(rig.clock.now)
    assert rig.maker.work is None and rig.store.order(cloid).status == "canceled"
    assert any("unknownOid" in c for c in rig.checks)


def test_pausing_entries_withdraws_the_resting_order(rig: Rig) -> None:
    cloid = started(rig)
    rig.wanted[0] = False  # `--ctl pause`
    rig.maker.timer(rig.clock.now)
    assert ("cancel", cloid) in rig.exchange.calls
    rig.exchange.statuses.append(status("canceled", "0.004", "0.004"))
    rig.maker.timer(rig.clock.now)
    assert rig.maker.work is None and [c for c in rig.exchange.calls if c[0] == "place"] == [rig.exchange.calls[0]]


def test_the_operators_close_withdraws_it_for_good(rig: Rig) -> None:
    cloid = started(rig)
    assert rig.maker.give_up("the operator's close")
    assert ("cancel", cloid) in rig.exchange.calls
    rig.exchange.statuses.append(status("canceled", "0.004", "0.004"))
    rig.maker.timer(rig.clock.now)
    assert rig.maker.work is None and not rig.maker.give_up("again")


def test_a_cancel_that_raises_is_retried_and_the_order_kept(rig: Rig) -> None:
    cloid = started(rig)
    rig.clock.now += 31  # timed out
    rig.exchange.cancels.append(OrderStatusUnknown(cloid, None, "timeout"))
    rig.maker.timer(rig.clock.now)
    assert rig.maker.work is not None and rig.store.order(cloid).status == "resting"
    rig.clock.now += 0.5
    rig.maker.timer(rig.clock.now)
    assert [c for c in rig.exchange.calls if c[0] == "cancel"] == [("cancel", cloid)]  # not before 1 s
    rig.clock.now += 0.6
    rig.maker.timer(rig.clock.now)
    assert [c for c in rig.exchange.calls if c[0] == "cancel"] == [("cancel", cloid)] * 2
    rig.exchange.statuses.append(status("canceled", "0.004", "0.004"))
    rig.maker.timer(rig.clock.now)
    assert rig.maker.work is None and rig.store.order(cloid).status == "canceled"


def test_a_cancel_that_did_not_take_is_sent_again_and_nothing_else_is_placed(rig: Rig) -> None:
    cloid = started(rig)
    rig.clock.now += 6
    rig.host.quotes.on_bbo(D("50010"), D("50011"))  # left behind
    rig.exchange.cancels.append(False)  # an error status...
    rig.maker.timer(rig.clock.now)
    rig.exchange.statuses.append(status("open", "0.004", "0.004"))  # ...and the order still rests
    rig.maker.timer(rig.clock.now)
    assert rig.maker.work.record.cloid == cloid and not rig.maker.work.cancel_sent
    rig.clock.now += 1.1
    rig.host.quotes.on_bbo(D("50010"), D("50011"))
    rig.maker.timer(rig.clock.now)  # the re-peg's cancel again (no poll due: the last was 1.1 s ago)
    rig.exchange.statuses.append(status("canceled", "0.004", "0.004"))
    rig.exchange.places.append(resting(8))
    rig.maker.timer(rig.clock.now)
    assert [c[1][0] for c in rig.exchange.calls if c[0] == "place"] == [D("50000"), D("50010")]  # one at a time
    assert rig.maker.work.repegs == 1 and rig.store.order(cloid).status == "canceled"


def test_a_placement_waits_while_entries_are_held(rig: Rig) -> None:
    rig.exchange.places.append(error(ALO_CROSSED + ", bbo was 50001"))
    rig.maker.start("long", D("0.004"), D("50000"))
    rig.held[0] = True  # e.g. a position check is due (a late fill of an earlier order)
    rig.clock.now += 1
    rig.host.quotes.on_bbo(D("50000"), D("50001"))
    rig.maker.timer(rig.clock.now)
    assert [c for c in rig.exchange.calls if c[0] == "place"] == [rig.exchange.calls[0]]
    rig.held[0] = False
    rig.exchange.places.append(resting())
    rig.clock.now += 1
    rig.host.quotes.on_bbo(D("50000"), D("50001"))
    rig.maker.timer(rig.clock.now)
    assert rig.maker.work.record is not None


def test_stop_opens_what_filled_before_the_bot_stops(rig: Rig) -> None:
    cloid = started(rig)
    rig.exchange.cancels.append(False)
    rig.exchange.statuses.append(status("filled", "0", "0.004"))
    rig.maker.stop()
    assert rig.host.opened_with == [("long", D("0.004"), D("50000"))]  # its stops placed before the state is saved
    assert rig.store.order(cloid).status == "filled"


def test_the_paper_exchange_rests_post_only_orders_and_fills_them_when_traded_through() -> None:
    book = Book(((D("49995"), D("1")),), ((D("50005"), D("1")),), at=0.0)
    paper = PaperExchange(lambda coin: 5, clock_ms=lambda: 1, book_of=lambda coin: book)
    crossed = paper.place_order("BTC", True, D("0.004"), D("50005"), tif="Alo", cloid="0xa")[0]
    assert crossed.kind == "error" and ALO_CROSSED in crossed.message
    assert paper.place_order("BTC", True, D("0.004"), D("49995"), tif="Alo", cloid="0xb")[0].kind == "resting"
    paper.trade("BTC", D("49995"))  # touched: the queue ahead fills first
    assert paper.order_status("0x", "0xb").order["status"] == "open"
    paper.trade("BTC", D("49994"))
    answer = paper.order_status("0x", "0xb")
    assert answer.order["status"] == "filled" and answer.order["order"]["sz"] == "0"
    assert paper.cancel_by_cloid("BTC", "0xb") is False  # too late: filled
    assert PaperExchange.fee(D("0.004"), D("49995"), maker=True) == D("0.029997")


def test_a_filled_update_without_its_original_size_still_opens_the_whole_order(rig: Rig) -> None:
    cloid = started(rig)
    rig.maker.on_update("filled", D(0), D(0))  # a frame without origSz (the parser falls back to sz, 0)
    assert rig.host.opened_with == [("long", D("0.004"), D("50000"))]
    assert rig.store.order(cloid).status == "filled" and rig.store.order(cloid).filled_size == D("0.004")


def test_a_re_peg_never_chases_the_touch_past_the_slippage_an_ioc_would_pay(rig: Rig) -> None:
    cloid = started(rig)  # signal at 50000; slippage_pct 0.5: a long rests at most at 50250
    rig.clock.now += 6
    rig.host.quotes.on_bbo(D("50300"), D("50301"))  # ran away
    rig.maker.timer(rig.clock.now)  # left behind: the re-peg's cancel
    rig.exchange.statuses.append(status("canceled", "0.004", "0.004"))
    rig.maker.timer(rig.clock.now)
    assert rig.maker.work is None and [c for c in rig.exchange.calls if c[0] == "place"] == [
        ("place", (D("50000"), "Alo", cloid))]
