"""The simulator's engine without the server: what a reduce-only trigger answers when there is no
position left to reduce (the exchange cancels it; it never reports a fill that did not happen)."""
from __future__ import annotations

from decimal import Decimal as D

from hyperliquid_sim.engine import Engine

USER = "0x" + "1" * 40
CLOID = "0x" + "5" * 32


def test_a_stop_with_nothing_left_to_reduce_is_reduce_only_canceled() -> None:
    e = Engine(seed=1, start_prices={"BTC": D("50000")})
    e.account(USER).usdc = D("10000")
    entry, fills, _ = e.place(USER, {"a": 0, "b": True, "p": "50500", "s": "0.002", "r": False,
                                     "t": {"limit": {"tif": "Ioc"}}}, 1)
    assert "filled" in entry and fills
    stop, _, _ = e.place(USER, {"a": 0, "b": False, "p": "49000", "s": "0.002", "r": True,
                                "t": {"trigger": {"isMarket": True, "triggerPx": "49000", "tpsl": "sl"}}, "c": CLOID}, 2)
    assert "resting" in stop
    e.place(USER, {"a": 0, "b": False, "p": "49500", "s": "0.002", "r": True, "t": {"limit": {"tif": "Ioc"}}}, 3)
    assert e.account(USER).positions["BTC"][0] == 0  # closed by hand; the stop still rests
    e.print_trade("BTC", D("48900"), 4)
    answer = e.order_status(USER, CLOID)
    assert answer["order"]["status"] == "reduceOnlyCanceled"
    assert not [f for f in e.account(USER).fills if f.get("cloid") == CLOID]
