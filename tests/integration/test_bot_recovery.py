"""The bot's recovery paths against the simulator on 127.0.0.1: exit backoff reset on close, failed
cancels that block the next entry, protective orders with an unknown result, the start-up check
that re-places only a missing level, protective orders replaced when an adopted position changes,
one position check per burst of foreign fills, and the exit cloid reserved ahead of need (sent with
no write first, resolved or retired at the next start, retired when the position closes otherwise).

Failures are injected by wrapping one method of the bot's own REST client on the instance (the
sim cannot lose an answer or refuse one cancel); everything else is the real bot on the real sim.
"""
from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path
from typing import Any, Callable

import pytest

import entries
import market
import stream_events
from hyperliquid_sim import SimServer
from rest_errors import NetworkError, OrderStatusUnknown
from harness.bot import Harness, make_bot, orders_sent
from harness.waiting import wait_until

EXCHANGE_EXITS = {"trading": {"exits_on_exchange": True}}


def resting(sim: SimServer, h: Harness) -> dict[str, dict[str, Any]]:
    """The account's open orders on the sim, by cloid."""
    return {o["cloid"]: o for o in sim.account(h.bot.address)["open_orders"] if "cloid" in o}


def ioc_orders(sim: SimServer, reduce_only: bool) -> list[dict[str, Any]]:
    """Non-trigger order wires the sim received: entries (reduce_only False) or exits (True)."""
    return [o for e in orders_sent(sim) for o in e["action"]["orders"]
            if "trigger" not in o["t"] and o["r"] is reduce_only]


def cancels_sent(sim: SimServer) -> list[tuple[str, Any]]:
    """(cloid, answer status) of every cancelByCloid the sim received, in order."""
    return [(c["cloid"], e.get("status")) for e in sim.exchange_log() if e["action"].get("type") == "cancelByCloid"
            for c in e["action"]["cancels"]]


def by_purpose(h: Harness, cloids: tuple[str, ...]) -> dict[str, str]:
    """{"sl": cloid, "tp": cloid} from the bot's order records."""
    out = {}
    for cloid in cloids:
        record = h.store.order(cloid)
        assert record is not None, cloid
        out[record.purpose] = cloid
    return out


def open_long(sim: SimServer, h: Harness, protective: bool = True) -> None:
    """Let always_long enter at 50000; with exits on the exchange, wait for SL and TP to rest."""
    sim.set_price("BTC", "50000")
    wait_until(lambda: h.trader.position is not None, 10, h.step)
    if protective:
        cloids = h.trader.position.protective_cloids
        assert len(cloids) == 2
        assert set(cloids) <= set(resting(sim, h))


def exit_by_trailing_stop(sim: SimServer, h: Harness) -> None:
    """Up 0.6 % then back: the bot's own trailing stop closes the long; the exchange-side SL (-1 %)
    and TP (+5 %) are not touched, so whatever is still resting afterwards is the bot's doing."""
    sim.set_price("BTC", "50300")
    wait_until(lambda: h.trader.current_price == D("50300"), 5, h.step)
    sim.set_price("BTC", "50000")
    wait_until(lambda: h.trader.position is None, 5, h.step)


class Wrapped:
    """Stands in for one bound method of the bot's REST client: counts calls, and raises
    `fail_with()` instead of calling through while that is set."""

    def __init__(self, real: Callable[..., Any], fail_with: Callable[[], Exception] | None = None) -> None:
        self.real, self.fail_with, self.calls = real, fail_with, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with()
        return self.real(*args, **kwargs)


def test_close_resets_exit_backoff_so_next_stop_fires_on_first_cross(
        sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One failed exit backs off 30 s (longer than this test), and no cooldown before the next entry:
    # a backoff left over from the first position would mute the second one's stop.
    monkeypatch.setattr(market, "EXIT_RETRY_BASE_S", 30.0)
    monkeypatch.setattr(market, "EXIT_RETRY_MAX_S", 30.0)
    monkeypatch.setattr(entries, "ENTRY_COOLDOWN_S", 0.0)
    h = make_bot(sim, tmp_path)
    try:
        open_long(sim, h, protective=False)
        rest = h.bot.rest
        real_market_order = rest.market_order
        exits: list[D] = []  # reference price of every exit the bot sent

        def market_order(coin: str, is_buy: bool, size: D, slippage_pct: D, **kw: Any) -> Any:
            if kw.get("reduce_only"):
                exits.append(kw.get("reference_px"))
                if len(exits) == 1:
                    raise NetworkError("injected: connection reset")
            return real_market_order(coin, is_buy, size, slippage_pct, **kw)

        rest.market_order = market_order  # type: ignore[method-assign]
        sim.set_price("BTC", "49400")  # through the 1 % stop: the exit is sent and fails
        wait_until(lambda: exits, 5, h.step)
        assert h.trader.position is not None and h.trader.next_exit_attempt > 0
        # Closed another way: a reduce-only sell the bot did not send (a manual close).
        real_market_order("BTC", False, h.trader.position.size, D("0.5"), reference_px=D("49400"), reduce_only=True)
        wait_until(lambda: len(ioc_orders(sim, reduce_only=False)) == 2 and h.trader.position is not None, 10, h.step)
        assert h.trader.position.entry_px < D("49500")  # the new position, entered after the close
        assert h.trader.next_exit_attempt == 0 and h.trader.exit_failures == 0
        exits_before = len(ioc_orders(sim, reduce_only=True))
        # From here no third entry: with no cooldown it could follow the close within the same loop
        # turn (a candle closing, or a slow turn past ENTRY_EVAL_EVERY_S) and hide it.
        monkeypatch.setattr(entries, "ENTRY_COOLDOWN_S", 60.0)
        sim.set_price("BTC", "48800")  # one print through the new position's stop (~48911)
        wait_until(lambda: h.trader.position is None, 3, h.step)
        assert len(exits) == 2 and D("48700") < exits[-1] <= D("48800")  # the print or the bid under it
        assert len(ioc_orders(sim, reduce_only=True)) == exits_before + 1
        assert D(sim.account(h.bot.address)["positions"]["BTC"]["szi"]) == 0
    finally:
        h.close()


def test_failed_cancel_of_protective_order_blocks_next_entry_until_canceled(
        sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No cooldown, and a blocked entry retries the cancel every 0.5 s.
    monkeypatch.setattr(entries, "ENTRY_COOLDOWN_S", 0.0)
    monkeypatch.setattr(entries, "CANCEL_RETRY_S", 0.5)
    h = make_bot(sim, tmp_path, **EXCHANGE_EXITS)
    try:
        open_long(sim, h)
        old = by_purpose(h, h.trader.position.protective_cloids)
        rest = h.bot.rest
        cancel = Wrapped(rest.cancel_by_cloid, fail_with=lambda: NetworkError("injected: timeout"))
        rest.cancel_by_cloid = cancel  # type: ignore[method-assign]
        real_market_order = rest.market_order
        resting_at_entry: list[set[str]] = []

        def market_order(*args: Any, **kw: Any) -> Any:
            if not kw.get("reduce_only"):
                resting_at_entry.append(set(resting(sim, h)))
            return real_market_order(*args, **kw)

        rest.market_order = market_order  # type: ignore[method-assign]
        exit_by_trailing_stop(sim, h)
        assert sorted(h.bot.executor.uncanceled.get("BTC", [])) == sorted(old.values())
        # Three rounds of failed cancels (the close, then two entry attempts), or an entry: none may come.
        wait_until(lambda: cancel.calls >= 6 or resting_at_entry, 5, h.step)
        assert resting_at_entry == [], "entered with the old SL/TP resting"
        assert len(ioc_orders(sim, reduce_only=False)) == 1
        assert h.trader.position is None
        assert set(old.values()) <= set(resting(sim, h))  # the stale reduce-only SL/TP still rest
        cancel.fail_with = None  # the exchange answers again
        wait_until(lambda: h.trader.position is not None, 5, h.step)
        assert h.bot.executor.uncanceled.get("BTC", []) == []
        assert len(resting_at_entry) == 1 and not resting_at_entry[0] & set(old.values())
        now = resting(sim, h)
        assert not set(old.values()) & set(now)
        assert set(now) == set(h.trader.position.protective_cloids)
        assert {cloid for cloid, status in cancels_sent(sim)} >= set(old.values())
    finally:
        h.close()


@pytest.mark.parametrize("reached_exchange", [True, False], ids=["sent-answer-lost", "never-sent"])
def test_protective_order_with_unknown_result_is_tracked_and_canceled_on_close(
        sim: SimServer, tmp_path: Path, reached_exchange: bool) -> None:
    h = make_bot(sim, tmp_path, **EXCHANGE_EXITS)
    try:
        rest = h.bot.rest
        real_trigger_order = rest.trigger_order
        lost: list[str] = []

        def trigger_order(coin: str, is_buy: bool, size: D, trigger_px: D, tpsl: str, **kw: Any) -> Any:
            if tpsl == "sl" and not lost:
                lost.append(kw["cloid"])
                if reached_exchange:
                    real_trigger_order(coin, is_buy, size, trigger_px, tpsl, **kw)
                # What the client raises when the answer was lost and the cloid lookup failed too.
                raise OrderStatusUnknown(kw["cloid"])
            return real_trigger_order(coin, is_buy, size, trigger_px, tpsl, **kw)

        rest.trigger_order = trigger_order  # type: ignore[method-assign]
        open_long(sim, h, protective=False)
        assert len(lost) == 1
        cloids = h.trader.position.protective_cloids
        assert lost[0] in cloids and len(cloids) == 2
        saved = h.store.load_position("BTC")
        assert saved is not None and lost[0] in saved.protective_cloids  # a restart knows it too
        assert (lost[0] in resting(sim, h)) is reached_exchange
        exit_by_trailing_stop(sim, h)
        assert resting(sim, h) == {}  # neither the SL nor the TP outlives the position
        assert {cloid for cloid, _ in cancels_sent(sim)} == set(cloids)
        assert h.bot.executor.uncanceled.get("BTC", []) == []  # "never placed" is an answer, not a failed cancel
    finally:
        h.close()


def test_start_up_check_replaces_only_the_missing_level(sim: SimServer, tmp_path: Path) -> None:
    h = make_bot(sim, tmp_path, **EXCHANGE_EXITS)
    try:
        open_long(sim, h)
        old = by_purpose(h, h.trader.position.protective_cloids)
        assert h.bot.rest.cancel_by_cloid("BTC", old["tp"])  # the TP vanished behind the bot's back
        assert set(resting(sim, h)) == {old["sl"]}
        triggers_before = [o for e in orders_sent(sim) for o in e["action"]["orders"] if "trigger" in o["t"]]
        h.bot.reconciler.at_start()  # what a restart on this state file runs
        new = by_purpose(h, h.trader.position.protective_cloids)
        assert new["sl"] == old["sl"]  # the resting stop is kept, never canceled
        assert new["tp"] != old["tp"]
        assert set(resting(sim, h)) == {old["sl"], new["tp"]}
        triggers = [o for e in orders_sent(sim) for o in e["action"]["orders"] if "trigger" in o["t"]]
        assert [o["t"]["trigger"]["tpsl"] for o in triggers[len(triggers_before):]] == ["tp"]
        assert old["sl"] not in {cloid for cloid, _ in cancels_sent(sim)}
        saved = h.store.load_position("BTC")
        assert saved is not None and set(saved.protective_cloids) == {old["sl"], new["tp"]}
        assert h.store.order(old["tp"]).status == "canceled"
    finally:
        h.close()


@pytest.mark.parametrize("change", ["grown", "flipped"])
def test_adopted_position_change_replaces_protective_orders(sim: SimServer, tmp_path: Path, change: str) -> None:
    h = make_bot(sim, tmp_path, **EXCHANGE_EXITS)
    try:
        open_long(sim, h)
        old = set(h.trader.position.protective_cloids)
        size = h.trader.position.size
        wait_until(lambda: h.trader.exit_cloid is not None, 5, h.step)
        old_exit = h.trader.exit_cloid
        # A trade the bot did not send, on its account: buy as much again, or sell twice as much.
        is_buy, extra = (True, size) if change == "grown" else (False, 2 * size)
        h.bot.rest.market_order("BTC", is_buy, extra, D("0.5"), reference_px=D("50000"))
        side, want = ("long", 2 * size) if change == "grown" else ("short", size)
        # The foreign fill asks for a position check; the check adopts the exchange's position.
        wait_until(lambda: h.trader.position is not None and (h.trader.position.side, h.trader.position.size) == (side, want),
                   5, h.step)
        cloids = h.trader.position.protective_cloids
        assert len(cloids) == 2 and not set(cloids) & old
        now = resting(sim, h)
        assert set(now) == set(cloids)  # the old SL/TP were canceled on the exchange
        for cloid in cloids:
            assert D(now[cloid]["sz"]) == want
            assert now[cloid]["side"] == ("A" if side == "long" else "B")  # reduce-only closes
        assert {cloid for cloid, status in cancels_sent(sim) if status == "ok"} >= old
        levels = {h.store.order(c).purpose: h.store.order(c).limit_px for c in cloids}
        if side == "short":
            assert levels["sl"] > D("50000") > levels["tp"]
        # The exit cloid reserved for the old side and size is retired; the new one fits the new position.
        assert h.store.order(old_exit).status == "canceled"
        wait_until(lambda: h.trader.exit_cloid not in (None, old_exit), 5, h.step)
        new_exit = h.store.order(h.trader.exit_cloid)
        assert (new_exit.status, new_exit.side, new_exit.size) == ("reserved", "buy" if side == "short" else "sell", want)
    finally:
        h.close()


def test_burst_of_foreign_fills_costs_one_position_check(sim: SimServer, tmp_path: Path) -> None:
    fills = 8
    h = make_bot(sim, tmp_path)
    try:
        open_long(sim, h, protective=False)
        size = h.trader.position.size
        rest = h.bot.rest
        for _ in range(fills):  # resting bids the bot did not place; one print below fills them all
            rest.place_order("BTC", True, D("0.001"), D("49900"), tif="Gtc")
        checks = Wrapped(rest.clearinghouse_state)
        rest.clearinghouse_state = checks  # type: ignore[method-assign]
        sim.set_price("BTC", "49900")  # above every exit level: only the fills move the position

        def queued_fills() -> int:
            with h.bot.events.mutex:  # the socket thread is still putting
                queued = list(h.bot.events.queue)
            # distinct trades: userFills and userEvents both carry them (the journal keeps each tid once)
            return len({e.tid for e in queued if type(e) is stream_events.Fill and e.price == D("49900")})

        wait_until(lambda: queued_fills() == fills, 5)  # the whole burst is queued before the bot runs
        wait_until(lambda: h.trader.position.size == size + fills * D("0.001"), 5, h.step)
        for _ in range(10):
            h.step()
        assert len([f for f in h.store.fills() if f["px"] == D("49900")]) == fills
        assert checks.calls == 1
    finally:
        h.close()


def test_exit_sends_on_its_reserved_cloid_with_no_write_first(sim: SimServer, tmp_path: Path) -> None:
    h = make_bot(sim, tmp_path)
    try:
        open_long(sim, h, protective=False)
        wait_until(lambda: h.trader.exit_cloid is not None, 5, h.step)
        reserved = h.trader.exit_cloid
        assert h.store.order(reserved).status == "reserved"  # saved while nothing was urgent
        events: list[tuple[str, str, str]] = []
        save, market_order = h.store.save_order, h.bot.executor.exchange.market_order

        def saving(record: Any) -> None:
            events.append(("save", record.cloid, record.status))
            save(record)

        def sending(*args: Any, **kw: Any) -> Any:
            events.append(("send", kw["cloid"], ""))
            return market_order(*args, **kw)
        h.store.save_order, h.bot.executor.exchange.market_order = saving, sending  # type: ignore[method-assign]
        sim.set_price("BTC", "49400")  # through the 1 % stop
        wait_until(lambda: h.trader.position is None, 5, h.step)
        assert events[:2] == [("send", reserved, ""), ("save", reserved, "filled")]
        exits = ioc_orders(sim, reduce_only=True)
        assert [o["c"] for o in exits] == [reserved]
        assert h.store.order(reserved).size == D(exits[0]["s"]) and h.store.order(reserved).limit_px == D("49400")
        assert h.trader.exit_cloid is None  # flat: nothing reserved until the next position
    finally:
        h.close()


def test_exit_with_unknown_result_keeps_its_record_and_the_retry_gets_a_new_cloid(
        sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(market, "EXIT_RETRY_BASE_S", 0.05)
    h = make_bot(sim, tmp_path)
    try:
        open_long(sim, h, protective=False)
        wait_until(lambda: h.trader.exit_cloid is not None, 5, h.step)
        first = h.trader.exit_cloid
        market_order = Wrapped(h.bot.executor.exchange.market_order, fail_with=lambda: OrderStatusUnknown(first))
        h.bot.executor.exchange.market_order = market_order  # type: ignore[method-assign]
        sim.set_price("BTC", "49400")
        wait_until(lambda: market_order.calls == 1, 5, h.step)
        lost = h.store.order(first)
        assert lost.status == "unknown" and lost.limit_px == D("49400")  # looked up by cloid (now, or at the next start)
        assert first in h.bot.executor.unknown
        market_order.fail_with = None
        wait_until(lambda: h.trader.position is None, 5, h.step)
        retry = ioc_orders(sim, reduce_only=True)
        assert len(retry) == 1 and retry[0]["c"] not in (first, None)  # a new cloid, saved before it went out
        assert h.store.order(retry[0]["c"]).status == "filled"
    finally:
        h.close()


@pytest.mark.parametrize("sent", [False, True])
def test_restart_resolves_a_reserved_exit_cloid(sim: SimServer, tmp_path: Path, sent: bool,
                                               caplog: pytest.LogCaptureFixture) -> None:
    h = make_bot(sim, tmp_path)
    try:
        open_long(sim, h, protective=False)
        wait_until(lambda: h.trader.exit_cloid is not None, 5, h.step)
        reserved = h.trader.exit_cloid
        if sent:  # the exit went out and the process died before writing its result
            h.bot.rest.market_order("BTC", False, h.trader.position.size, D("0.5"), reference_px=D("50000"),
                                    reduce_only=True, cloid=reserved)
        caplog.clear()
        h.bot.reconciler.at_start()  # what the next start runs on this state file
        if sent:
            record = h.store.order(reserved)
            assert record.status == "filled" and h.trader.position is None
            assert f"exit order {reserved} had an unknown result; the exchange says filled" in caplog.text
        else:
            # Never seen by the exchange: retired once an exit sent just before the last stop
            # could no longer execute (its expiresAfter), without an incident line.
            assert h.store.order(reserved).status == "reserved" and reserved in h.bot.executor.unknown
            wait_until(lambda: h.store.order(reserved).status == "canceled", 10, h.step)
            assert h.store.order(reserved).reason == "reserved, not used"
            assert "unknown result" not in caplog.text
            assert h.trader.position is not None
    finally:
        h.close()


def test_reserved_exit_cloid_retired_when_the_exchange_stop_closes_the_position(
        sim: SimServer, tmp_path: Path) -> None:
    h = make_bot(sim, tmp_path, **EXCHANGE_EXITS)
    try:
        open_long(sim, h)
        wait_until(lambda: h.trader.exit_cloid is not None, 5, h.step)
        reserved = h.trader.exit_cloid
        h.bot.rest.market_order("BTC", False, h.trader.position.size, D("0.5"), reference_px=D("50000"),
                                reduce_only=True)  # closed behind the bot's back
        wait_until(lambda: h.trader.position is None, 10, h.step)
        assert h.store.order(reserved).status == "canceled"
        assert reserved not in [o.get("c") for o in ioc_orders(sim, reduce_only=True)]
    finally:
        h.close()


def test_an_exchange_stop_is_known_from_order_updates_before_any_rest_call(
        sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    h = make_bot(sim, tmp_path, **EXCHANGE_EXITS)
    try:
        open_long(sim, h)
        sl = by_purpose(h, h.trader.position.protective_cloids)["sl"]
        monkeypatch.setattr(h.trader, "check_exits", lambda price: None)  # only the exchange's stop acts
        info = Wrapped(h.bot.rest.info)
        monkeypatch.setattr(h.bot.rest, "info", info)
        sim.set_price("BTC", "49400")  # through the exchange-side stop (-1 %)

        def handled_until_triggered() -> bool:  # events only: no timer, so no REST call can happen
            while not h.bot.events.empty():
                h.bot.handle(h.bot.events.get_nowait())
            return f"exchange-side sl {sl} triggered" in caplog.text
        wait_until(handled_until_triggered, 5)
        assert info.calls == 0 and h.bot.reconciler.due is not None
        wait_until(lambda: h.trader.position is None, 5, h.step)  # then the check adopts flat
    finally:
        h.close()


def test_a_liquidation_is_an_error_line_and_a_position_check(sim: SimServer, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    h = make_bot(sim, tmp_path)
    try:
        h.bot.events.put(stream_events.Liquidation('{"lid": 1}', 0))
        wait_until(lambda: "LIQUIDATION on the account" in caplog.text, 5, h.step)
        assert any(r.levelname == "ERROR" and "LIQUIDATION" in r.message for r in caplog.records)
    finally:
        h.close()
