"""Post-only (maker) entries on the simulator: resting at the touch, re-pegged, canceled, filled.

The bot rests an `Alo` buy at the best bid; a print through it fills it as a maker (its price, the
maker fee); left behind by the touch it is moved; unfilled at its timeout, at shutdown, or found
resting at a start, it is canceled. Exits stay marketable IOCs.
"""
from __future__ import annotations

import json
import logging
import os
from decimal import Decimal as D
from pathlib import Path
from typing import Any

from harness.bot import Harness, LongWhenAsked, make_bot, orders_sent
from harness.faultproxy import Fault, FaultProxy
from harness.waiting import wait_until
from hyperliquid_rest import HyperliquidRestClient
from hyperliquid_sim import SimServer
from operator_desk import OperatorDesk
from signing import L1Signer

MAKER = {"entry_order": "post_only", "maker_repeg_s": 0.5, "maker_timeout_s": 2.5}


def maker_bot(sim: SimServer, tmp_path: Path, **over: Any) -> tuple[Harness, LongWhenAsked]:
    trading = {**MAKER, **over.pop("trading", {})}
    websocket = {"stale_after": 30.0, **over.pop("websocket", {})}  # the quiet sim's stream is no outage
    h = make_bot(sim, tmp_path, trading=trading, websocket=websocket, **over)
    h.trader.entries.strategy = strategy = LongWhenAsked()
    return h, strategy


def signal_long(h: Harness, sim: SimServer, strategy: LongWhenAsked) -> None:
    """A print at 50000 (a fresh bbo), then the signal; returns once the entry rests."""
    if h.bot.ws is not None:
        h.wait_subscribed()
    sim.set_price("BTC", "50000")
    if h.bot.ws is not None:
        wait_until(lambda: h.trader.quotes.bid == D("49995"), 5, h.step)
    strategy.go = True
    wait_until(lambda: h.trader.entries.maker.work is not None and h.trader.entries.maker.work.record is not None,
               5, h.step)


def open_orders(sim: SimServer, h: Harness) -> list[dict[str, Any]]:
    return sim.account(h.bot.address)["open_orders"]


def tifs(sim: SimServer) -> list[str]:
    return [o["t"]["limit"]["tif"] for e in orders_sent(sim) for o in e["action"]["orders"] if "limit" in o["t"]]


def test_post_only_entry_re_pegs_and_cancels(sim: SimServer, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    h, strategy = maker_bot(sim, tmp_path)
    caplog.set_level(logging.INFO, logger="bot")
    try:
        signal_long(h, sim, strategy)
        first = h.trader.entries.maker.work.record
        assert first.limit_px == D("49995") and first.side == "buy"
        assert [(o["limitPx"], o["cloid"]) for o in open_orders(sim, h)] == [("49995", first.cloid)]
        sim.set_price("BTC", "50100")  # the touch moves away: best bid 50095
        wait_until(lambda: h.trader.entries.maker.work.repegs == 1 and h.trader.entries.maker.work.record, 5, h.step)
        second = h.trader.entries.maker.work.record
        assert second.limit_px == D("50095") and second.cloid != first.cloid
        assert [(o["limitPx"], o["cloid"]) for o in open_orders(sim, h)] == [("50095", second.cloid)]
        assert h.store.order(first.cloid).status == "canceled"
        assert "re-pegged: 49995 -> 50095" in caplog.text
        h.bot.publish_health()
        assert h.bot.health_snapshot()["markets"]["BTC"]["maker_entry"] == {
            "side": "long", "size": 0.004, "px": 50095.0, "repegs": 1, "filled": 0.0}
        assert OperatorDesk.entries(h.trader) == "on, buy 0.004 resting at 50095"  # `--ctl status`
        # no fill by the timeout (2.5 s after the signal): canceled, nothing left on the book
        wait_until(lambda: h.trader.entries.maker.work is None, 8, h.step)
        assert open_orders(sim, h) == [] and h.trader.position is None
        assert h.store.order(second.cloid).status == "canceled"
        assert "post-only entry canceled: not filled in 2.5 s (1 re-pegs)" in caplog.text
        assert tifs(sim) == ["Alo", "Alo"]  # never a taker entry
        assert sim.account(h.bot.address)["fills"] == []
    finally:
        h.close()


def test_a_print_through_the_resting_bid_fills_it_as_maker_and_opens_the_position(
        sim: SimServer, tmp_path: Path) -> None:
    h, strategy = maker_bot(sim, tmp_path)
    try:
        signal_long(h, sim, strategy)
        cloid = h.trader.entries.maker.work.record.cloid
        sim.set_price("BTC", "49990")  # through our 49995 bid
        wait_until(lambda: h.trader.position is not None, 5, h.step)
        pos = h.trader.position
        fill = sim.account(h.bot.address)["fills"][-1]
        assert fill["crossed"] is False and fill["cloid"] == cloid  # a maker fill
        assert pos.side == "long" and pos.entry_px == D("49995") and pos.size == D(fill["sz"])
        wait_until(lambda: h.trader.entries.maker.work is None, 5, h.step)
        assert h.store.order(cloid).status == "filled"
        sim.set_price("BTC", "49400")  # the 1 % stop: a marketable exit
        wait_until(lambda: h.trader.position is None, 5, h.step)
        assert tifs(sim) == ["Alo", "Ioc"]
    finally:
        h.close()


def test_a_partial_fill_opens_what_filled_and_cancels_the_rest(sim: SimServer, tmp_path: Path) -> None:
    h, strategy = maker_bot(sim, tmp_path)
    taker = HyperliquidRestClient(sim.rest_url, signer=L1Signer(os.urandom(32), is_mainnet=False))
    try:
        taker.clearinghouse_state(taker.address)  # the faucet funds it
        signal_long(h, sim, strategy)
        record = h.trader.entries.maker.work.record
        assert record.size == D("0.004")
        # a seller meets our bid (the best, resting first at 49995) for half of it
        assert taker.place_order("BTC", False, D("0.002"), D("49995"), tif="Ioc")[0].kind == "filled"
        wait_until(lambda: h.trader.position is not None and h.trader.entries.maker.work is None, 5, h.step)
        assert h.trader.position.size == D("0.002") and h.trader.position.entry_px == D("49995")
        assert open_orders(sim, h) == []
        saved = h.store.order(record.cloid)
        assert saved.status == "canceled" and saved.filled_size == D("0.002")
        wait_until(lambda: h.bot.reconciler.due is None, 5, h.step)  # the check after a partial fill ran
        assert h.trader.position.size == D("0.002")
    finally:
        taker.close()
        h.close()


def test_without_the_stream_the_fill_is_found_by_polling_the_order(sim: SimServer, tmp_path: Path) -> None:
    h, strategy = maker_bot(sim, tmp_path, websocket={"enabled": False}, check_interval=0.2,
                            trading={"maker_timeout_s": 30})  # its fill is found by a poll every 2 s
    try:
        signal_long(h, sim, strategy)  # the touch from the /info l2Book
        record = h.trader.entries.maker.work.record
        assert record.limit_px == D("49995")
        sim.set_price("BTC", "49990")
        wait_until(lambda: h.trader.position is not None, 8, h.step)
        assert h.trader.position.entry_px == D("49995") and h.trader.position.size == record.size
    finally:
        h.close()


def test_shutdown_cancels_the_resting_entry(sim: SimServer, tmp_path: Path) -> None:
    h, strategy = maker_bot(sim, tmp_path)
    try:
        signal_long(h, sim, strategy)
        cloid = h.trader.entries.maker.work.record.cloid
        h.bot.shutdown()
        assert open_orders(sim, h) == []
        assert h.store.order(cloid).status == "canceled"
    finally:
        h.close()


def test_an_entry_left_resting_by_a_killed_run_is_canceled_at_start(sim: SimServer, tmp_path: Path) -> None:
    key = os.urandom(32)
    h, strategy = maker_bot(sim, tmp_path, key=key)
    try:
        signal_long(h, sim, strategy)
        cloid = h.trader.entries.maker.work.record.cloid
        h.trader.entries.maker.work = None  # killed: nothing canceled it
    finally:
        h.close()
    assert [o["cloid"] for o in open_orders(sim, h)] == [cloid]
    again = make_bot(sim, tmp_path, key=key, trading=MAKER)
    try:
        assert open_orders(sim, again) == []
        assert again.store.order(cloid).status == "canceled"
    finally:
        again.close()


def test_an_entry_a_killed_run_left_resting_that_filled_meanwhile_is_recorded_filled_at_start(
        sim: SimServer, tmp_path: Path) -> None:
    """Found by the crash test with post-only entries: the start's cancel finds the order gone,
    and its record must say what the exchange's status says (filled), not "canceled"."""
    key = os.urandom(32)
    h, strategy = maker_bot(sim, tmp_path, key=key)
    try:
        signal_long(h, sim, strategy)
        record = h.trader.entries.maker.work.record
        h.trader.entries.maker.work = None  # killed: nothing canceled it
    finally:
        h.close()
    sim.set_price("BTC", "49990")  # no bot runs: a print through our 49995 bid fills it
    assert sim.account(h.bot.address)["fills"][-1]["cloid"] == record.cloid
    again = make_bot(sim, tmp_path, key=key, trading=MAKER)
    try:
        saved = again.store.order(record.cloid)
        assert (saved.status, saved.filled_size, saved.avg_px) == ("filled", record.size, D("49995"))
        pos = again.trader.position  # adopted, and protected
        assert pos is not None and pos.side == "long" and pos.size == record.size
        assert sorted(o["cloid"] for o in open_orders(sim, again)) == sorted(pos.protective_cloids)
    finally:
        again.close()


def test_a_cancel_that_fails_is_retried_and_entries_wait(sim: SimServer, tmp_path: Path) -> None:
    with FaultProxy(upstream=sim.rest_url) as proxy:
        h, strategy = maker_bot(sim, tmp_path, api={"rest_url": proxy.url, "ws_url": sim.ws_url},
                                trading={"maker_timeout_s": 60})
        try:
            signal_long(h, sim, strategy)
            cancels = proxy.inject("/exchange", Fault.STATUS_BEFORE, status=502, count=3,
                                   match=lambda body: body.get("action", {}).get("type") == "cancelByCloid")
            sim.set_price("BTC", "50100")  # a re-peg is due: its cancel fails three times
            wait_until(lambda: cancels.hits == 3, 10, h.step)
            assert h.trader.entries.maker.work is not None and len(open_orders(sim, h)) == 1
            assert h.trader.entries.maker.work.repegs == 0
            wait_until(lambda: h.trader.entries.maker.work.repegs == 1, 10, h.step)
            assert [o["limitPx"] for o in open_orders(sim, h)] == ["50095"]  # one order, never two
            strategy.go = True  # a signal meanwhile is not asked for: one entry is being worked
            for _ in range(20):
                h.step()
            assert strategy.go and len(open_orders(sim, h)) == 1
        finally:
            h.close()


def test_a_paper_post_only_entry_fills_when_a_trade_goes_through_it(sim: SimServer, tmp_path: Path) -> None:
    h, strategy = maker_bot(sim, tmp_path, dry_run=True)
    try:
        signal_long(h, sim, strategy)
        assert h.trader.entries.maker.work.record.limit_px == D("49995")
        sim.set_price("BTC", "49995")  # touched, not through: the queue ahead of ours fills first
        wait_until(lambda: h.trader.current_price == D("49995"), 5, h.step)
        for _ in range(5):
            h.step()
        assert h.trader.position is None
        sim.set_price("BTC", "49990")
        wait_until(lambda: h.trader.position is not None, 5, h.step)
        assert h.trader.position.entry_px == D("49995")
        fill = [f for f in h.store.fills() if f["side"] == "buy"][0]
        assert fill["paper"] and fill["px"] == D("49995")
        assert fill["fee"] == (fill["size"] * D("49995") * D("0.00015")).quantize(D("0.000001"))  # maker fee
        assert sim.exchange_log() == []
    finally:
        h.close()


# ---- races with the cancel (a review found these; each once left the account long while the bot was flat) ----

def _taker(sim: SimServer) -> HyperliquidRestClient:
    taker = HyperliquidRestClient(sim.rest_url, signer=L1Signer(os.urandom(32), is_mainnet=False))
    taker.clearinghouse_state(taker.address)  # the faucet funds it
    return taker


def _exchange_position(sim: SimServer, h: Harness) -> D:
    return D(sim.account(h.bot.address)["positions"].get("BTC", {"szi": "0"})["szi"])


def _is_cancel(body: dict) -> bool:
    return body.get("action", {}).get("type") == "cancelByCloid"


def test_a_fill_that_raced_the_re_peg_cancel_becomes_the_position_not_a_second_order(
        sim: SimServer, tmp_path: Path) -> None:
    h, strategy = maker_bot(sim, tmp_path, websocket={"enabled": False})
    taker = _taker(sim)
    try:
        signal_long(h, sim, strategy)
        maker = h.trader.entries.maker
        first = maker.work.record
        assert taker.place_order("BTC", False, D("0.002"), D("49995"), tif="Ioc")[0].kind == "filled"
        maker.work.next_poll_s = float("inf")  # the fill's news not in yet when the re-peg cancels
        sim.set_price("BTC", "50100")
        wait_until(lambda: maker.work is None, 8, h.step)
        assert h.trader.position is not None and h.trader.position.size == D("0.002") == _exchange_position(sim, h)
        assert open_orders(sim, h) == [] and maker_orders_sent(sim) == 1
        assert h.store.order(first.cloid).filled_size == D("0.002")
    finally:
        taker.close()
        h.close()


def test_a_refused_cancel_and_failing_status_polls_place_nothing_until_the_status_says(
        sim: SimServer, tmp_path: Path) -> None:
    with FaultProxy(upstream=sim.rest_url) as proxy:
        h, strategy = maker_bot(sim, tmp_path, websocket={"enabled": False}, api={"rest_url": proxy.url},
                                trading={"maker_timeout_s": 60})
        taker = _taker(sim)
        try:
            signal_long(h, sim, strategy)
            maker = h.trader.entries.maker
            assert taker.place_order("BTC", False, D("0.004"), D("49995"), tif="Ioc")[0].kind == "filled"
            maker.work.next_poll_s = float("inf")
            polls = proxy.inject("/info", Fault.STATUS_BEFORE, status=502, count=None,
                                 match=lambda body: body.get("type") == "orderStatus")
            sim.set_price("BTC", "50100")  # the re-peg's cancel: "already filled"
            wait_until(lambda: polls.hits >= 3, 15, h.step)
            assert maker.work is not None and maker.work.record is not None and h.trader.position is None
            assert maker_orders_sent(sim) == 1  # nothing placed while the status is unknown
            proxy.clear(polls)
            wait_until(lambda: h.trader.position is not None, 10, h.step)
            assert h.trader.position.size == D("0.004") == _exchange_position(sim, h)
            wait_until(lambda: maker.work is None, 5, h.step)
            assert maker_orders_sent(sim) == 1 and open_orders(sim, h) == []
        finally:
            taker.close()
            h.close()


def test_a_cancel_answered_with_an_error_is_sent_again_never_two_orders(sim: SimServer, tmp_path: Path) -> None:
    with FaultProxy(upstream=sim.rest_url) as proxy:
        h, strategy = maker_bot(sim, tmp_path, api={"rest_url": proxy.url, "ws_url": sim.ws_url})
        try:
            signal_long(h, sim, strategy)
            first = h.trader.entries.maker.work.record
            refused = {"status": "ok", "response": {"type": "cancel", "data": {"statuses": [{"error": "busy"}]}}}
            proxy.inject("/exchange", Fault.STATUS_BEFORE, status=200, body=json.dumps(refused), count=1,
                         headers={"Content-Type": "application/json"}, match=_is_cancel)
            sim.set_price("BTC", "50100")
            most_resting = 0

            def repegged() -> bool:
                nonlocal most_resting
                most_resting = max(most_resting, len(open_orders(sim, h)))
                return h.trader.entries.maker.work.repegs == 1
            wait_until(repegged, 8, h.step)
            assert most_resting == 1 and h.store.order(first.cloid).status == "canceled"
            wait_until(lambda: h.trader.entries.maker.work is None, 8, h.step)  # the timeout
            assert open_orders(sim, h) == []
        finally:
            h.close()


def test_a_position_closed_while_the_rest_cannot_be_canceled_is_not_opened_again(
        sim: SimServer, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="bot")
    with FaultProxy(upstream=sim.rest_url) as proxy:
        h, strategy = maker_bot(sim, tmp_path, api={"rest_url": proxy.url, "ws_url": sim.ws_url},
                                trading={"maker_timeout_s": 60})
        taker = _taker(sim)
        try:
            signal_long(h, sim, strategy)
            cancels = proxy.inject("/exchange", Fault.STATUS_BEFORE, status=502, count=None, match=_is_cancel)
            assert taker.place_order("BTC", False, D("0.002"), D("49995"), tif="Ioc")[0].kind == "filled"
            wait_until(lambda: h.trader.position is not None, 5, h.step)
            sim.set_price("BTC", "52600")  # the 5 % take-profit closes the 0.002
            wait_until(lambda: "position closed by take_profit" in caplog.text, 5, h.step)
            wait_until(lambda: cancels.hits >= 3, 8, h.step)  # the rest's cancel keeps failing, retried
            assert h.trader.position is None and _exchange_position(sim, h) == 0
            assert caplog.text.count("position opened: long") == 1
        finally:
            proxy.clear()
            taker.close()
            h.close()


def maker_orders_sent(sim: SimServer) -> int:
    return sum(1 for tif in tifs(sim) if tif == "Alo")


def test_pause_and_close_withdraw_a_resting_entry(sim: SimServer, tmp_path: Path) -> None:
    h, strategy = maker_bot(sim, tmp_path)
    try:
        signal_long(h, sim, strategy)
        answer = h.bot.desk.execute("close", "BTC")
        assert "its resting post-only entry is being canceled" in answer["message"]
        wait_until(lambda: h.trader.entries.maker.work is None, 5, h.step)
        assert open_orders(sim, h) == []
        h.bot.desk.execute("pause", None)
        strategy.go = True  # paused: not asked
        for _ in range(20):
            h.step()
        assert maker_orders_sent(sim) == 1 and h.trader.position is None
        sim.set_price("BTC", "49000")  # nothing rests to be filled
        for _ in range(20):
            h.step()
        assert h.trader.position is None and sim.account(h.bot.address)["fills"] == []
    finally:
        h.close()
