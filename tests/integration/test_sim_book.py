"""The simulator's book from the outside: takers walk its levels (several fills, the average
price, an IOC's rest canceled), a user's resting order shows in `/info l2Book` and `bbo` and is
met by another user's taker (its maker fill); and a paper bot's fills walk the l2Book it keeps."""
from __future__ import annotations

import json
import os
import time
from decimal import Decimal as D
from typing import Any, Iterator

import pytest
import websocket

from harness.bot import LongWhenAsked, make_bot
from harness.waiting import wait_until
from hyperliquid_rest import HyperliquidRestClient
from hyperliquid_sim import SimConfig, SimServer
from signing import L1Signer


@pytest.fixture
def thin_sim() -> Iterator[SimServer]:
    """BTC at 50000 with $1,000 at the touch (0.02 BTC); deeper levels hold a little more."""
    server = SimServer(SimConfig(port=0, seed=7, feed=False, start_prices={"BTC": D("50000")},
                                 book_depth_usd=D("1000")))
    server.start()
    yield server
    server.stop()


def client(sim: SimServer) -> tuple[HyperliquidRestClient, str]:
    signer = L1Signer(os.urandom(32), is_mainnet=False)
    rest = HyperliquidRestClient(sim.rest_url, signer=signer)
    rest.clearinghouse_state(signer.address)  # the faucet funds a queried address
    return rest, signer.address


def levels(rest: HyperliquidRestClient) -> list[list[dict[str, Any]]]:
    return rest.l2_book("BTC")["levels"]


def test_a_large_ioc_walks_the_book_and_its_rest_is_canceled(thin_sim: SimServer) -> None:
    rest, address = client(thin_sim)
    try:
        asks = levels(rest)[1]
        assert [D(a["px"]) for a in asks[:3]] == [D("50005"), D("50010"), D("50015")]
        assert D(asks[0]["sz"]) == D("0.02") and D(asks[1]["sz"]) > D(asks[0]["sz"])  # growing away from the touch
        within = sum(D(a["sz"]) for a in asks[:3])  # what the limit at the third level can reach
        size = (within + D("0.01")).quantize(D("0.00001"))
        result = rest.place_order("BTC", True, size, D("50015"), tif="Ioc")[0]
        fills = thin_sim.account(address)["fills"]
        assert [D(f["px"]) for f in fills] == [D("50005"), D("50010"), D("50015")]
        assert [D(f["sz"]) for f in fills] == [D(a["sz"]) for a in asks[:3]]
        average = sum(D(f["px"]) * D(f["sz"]) for f in fills) / within
        assert result.kind == "filled" and result.total_size == within
        assert abs(result.avg_px - average) < D("1e-6")
        status = rest.info({"type": "orderStatus", "user": address, "oid": result.oid})
        assert status["order"]["status"] == "canceled"  # the IOC's rest, never resting
        assert D(levels(rest)[1][0]["px"]) == D("50020")  # the levels it took are gone until the next print
    finally:
        rest.close()


def test_a_resting_order_shows_in_the_book_and_bbo_and_a_taker_meets_it(thin_sim: SimServer) -> None:
    maker, maker_address = client(thin_sim)
    taker, taker_address = client(thin_sim)
    ws = websocket.create_connection(thin_sim.ws_url, timeout=5)
    try:
        ws.send(json.dumps({"method": "subscribe", "subscription": {"type": "bbo", "coin": "BTC"}}))
        assert maker.place_order("BTC", True, D("0.01"), D("49998"))[0].kind == "resting"
        bids = levels(maker)[0]
        assert bids[0] == {"px": "49998", "sz": "0.01", "n": 1} and D(bids[1]["px"]) == D("49995")
        deadline = time.monotonic() + 5
        while True:  # the touch moved: a bbo push with the new best bid
            frame = json.loads(ws.recv())
            if frame.get("channel") == "bbo" and frame["data"]["bbo"][0]["px"] == "49998":
                break
            assert time.monotonic() < deadline, "no bbo push with the resting bid"
        result = taker.place_order("BTC", False, D("0.004"), D("49990"), tif="Ioc")[0]
        assert result.kind == "filled" and result.avg_px == D("49998") and result.total_size == D("0.004")
        maker_fill = thin_sim.account(maker_address)["fills"][-1]
        assert maker_fill["px"] == "49998" and maker_fill["crossed"] is False and D(maker_fill["sz"]) == D("0.004")
        assert D(levels(maker)[0][0]["sz"]) == D("0.006")  # the rest of it still rests
        assert thin_sim.account(taker_address)["fills"][-1]["crossed"] is True
    finally:
        ws.close()
        maker.close()
        taker.close()


def test_a_paper_bot_on_a_thin_book_walks_two_levels_and_books_the_average(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # $100 at the touch: the bot's 0.004 BTC ($200) entry and exit each need two levels
    sim = SimServer(SimConfig(port=0, seed=7, feed=False, start_prices={"BTC": D("50000")},
                              book_depth_usd=D("100")))
    sim.start()
    h = make_bot(sim, tmp_path, dry_run=True)
    h.trader.entries.strategy = strategy = LongWhenAsked()
    try:
        wait_until(lambda: h.trader.quotes.book is not None, 5, h.step)  # the l2Book snapshot after subscribing
        assert h.trader.quotes.book.asks[0] == (D("50005"), D("0.002")) and h.trader.position is None
        strategy.go = True
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        assert h.trader.position.size == D("0.004")
        assert h.trader.position.entry_px == D("50007.5")  # 0.002 at 50005 and 0.002 at 50010
        sim.set_price("BTC", "49000")  # through the 1 % stop
        wait_until(lambda: h.trader.position is None, 5, h.step)
        exit_fill = [f for f in h.store.fills() if f["side"] == "sell"][0]
        assert exit_fill["paper"] and exit_fill["size"] == D("0.004")
        # two levels 5 apart, from the last price down (a book still showing 50000 is shifted to
        # it; a fresh one starts a tick lower): the average lies between, on no level
        assert D("48985") < exit_fill["px"] < D("49000") and exit_fill["px"] % 5 != 0
        assert exit_fill["fee"] == (D("0.004") * exit_fill["px"] * D("0.00045")).quantize(D("0.000001"))
        assert h.bot.executor.exchange.book_fills == 2 and sim.exchange_log() == []
    finally:
        h.close()
        sim.stop()


def test_an_unchanged_book_is_sent_again_every_book_resend_s() -> None:
    sim = SimServer(SimConfig(port=0, seed=7, feed=False, start_prices={"BTC": D("50000")},
                              book_interval_s=0.05, book_resend_s=0.4))
    sim.start()
    ws = websocket.create_connection(sim.ws_url, timeout=5)
    try:
        ws.send(json.dumps({"method": "subscribe", "subscription": {"type": "l2Book", "coin": "BTC"}}))
        books = []
        while len(books) < 2:
            frame = json.loads(ws.recv())
            if frame.get("channel") == "l2Book":
                books.append((time.monotonic(), frame["data"]))
        (first_at, first), (again_at, again) = books
        assert again["levels"] == first["levels"] and again["time"] > first["time"]
        assert again_at - first_at >= 0.3  # not every round: only once it has been unchanged for a while
    finally:
        ws.close()
        sim.stop()
