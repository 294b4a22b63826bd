"""The simulator against a client nobody here wrote: the official SDK's Info and Exchange."""
from __future__ import annotations

import json
import queue
import threading
import time
from decimal import Decimal as D

import eth_account
import pytest
import requests
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info
from hyperliquid.utils.signing import get_timestamp_ms, sign_l1_action

from hyperliquid_sim import SimConfig, SimServer


@pytest.fixture(scope="module")
def sim():
    server = SimServer(SimConfig(port=0, seed=3, trade_rate_hz=20.0))
    server.start()
    yield server
    server.stop()


def test_sdk_info_queries(sim: SimServer) -> None:
    info = Info(sim.rest_url, skip_ws=True)
    mids = info.all_mids()
    assert D(mids["BTC"]) > 0 and set(mids) == {"BTC", "ETH", "SOL"}
    assert info.meta()["universe"][0]["name"] == "BTC"
    book = info.l2_snapshot("BTC")
    assert D(book["levels"][0][0]["px"]) < D(book["levels"][1][0]["px"])
    wallet = eth_account.Account.create()
    state = info.user_state(wallet.address)
    assert D(state["marginSummary"]["accountValue"]) == D("10000")
    assert info.open_orders(wallet.address) == []
    now = int(time.time() * 1000)
    assert isinstance(info.candles_snapshot("BTC", "1m", now - 3_600_000, now), list)


def test_sdk_exchange_limit_cancel_market_open_close(sim: SimServer) -> None:
    wallet = eth_account.Account.create()
    info = Info(sim.rest_url, skip_ws=True)
    info.user_state(wallet.address)  # the sim's faucet: a queried address gets 10,000 USDC
    ex = Exchange(wallet, base_url=sim.rest_url)
    px = float(D(info.all_mids()["BTC"]) * D("0.9"))
    px = round(float(f"{px:.5g}"), 1)
    resting = ex.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}})
    assert resting["status"] == "ok"
    oid = resting["response"]["data"]["statuses"][0]["resting"]["oid"]
    assert [o["oid"] for o in info.open_orders(wallet.address)] == [oid]
    cancel = ex.cancel("BTC", oid)
    assert cancel["response"]["data"]["statuses"] == ["success"]
    opened = ex.market_open("BTC", True, 0.002)
    assert "filled" in opened["response"]["data"]["statuses"][0], opened
    position = info.user_state(wallet.address)["assetPositions"][0]["position"]
    assert D(position["szi"]) == D("0.002")
    closed = ex.market_close("BTC")
    assert "filled" in closed["response"]["data"]["statuses"][0], closed
    assert info.user_state(wallet.address)["assetPositions"] == []
    fills = info.user_fills(wallet.address)
    assert len(fills) == 2 and len({f["tid"] for f in fills}) == 2


def test_tampered_request_is_rejected(sim: SimServer) -> None:
    wallet = eth_account.Account.create()
    Info(sim.rest_url, skip_ws=True).user_state(wallet.address)
    action = {"type": "order", "orders": [{"a": 0, "b": True, "p": "30000", "s": "0.001", "r": False,
                                           "t": {"limit": {"tif": "Gtc"}}}], "grouping": "na"}
    nonce = get_timestamp_ms()
    signature = sign_l1_action(wallet, action, None, nonce, None, False)
    action["orders"][0]["s"] = "0.5"  # changed after signing
    body = {"action": action, "nonce": nonce, "signature": signature, "vaultAddress": None, "expiresAfter": None}
    answer = requests.post(sim.rest_url + "/exchange", json=body, timeout=5).json()
    assert answer["status"] == "err" and "does not exist" in answer["response"]
    # a mainnet signature is not valid on the testnet simulator either
    good = {"type": "updateLeverage", "asset": 0, "isCross": True, "leverage": 3}
    sig = sign_l1_action(wallet, good, None, nonce + 1, None, True)
    answer = requests.post(sim.rest_url + "/exchange", json={"action": good, "nonce": nonce + 1, "signature": sig,
                                                             "vaultAddress": None, "expiresAfter": None}, timeout=5).json()
    assert answer["status"] == "err"


def test_reused_nonce_is_rejected(sim: SimServer) -> None:
    wallet = eth_account.Account.create()
    Info(sim.rest_url, skip_ws=True).user_state(wallet.address)
    action = {"type": "updateLeverage", "asset": 0, "isCross": True, "leverage": 3}
    nonce = get_timestamp_ms()
    body = {"action": action, "nonce": nonce, "signature": sign_l1_action(wallet, action, None, nonce, None, False),
            "vaultAddress": None, "expiresAfter": None}
    assert requests.post(sim.rest_url + "/exchange", json=body, timeout=5).json()["status"] == "ok"
    again = requests.post(sim.rest_url + "/exchange", json=body, timeout=5).json()
    assert again["status"] == "err" and "nonce" in again["response"]


def test_sdk_websocket_subscriptions(sim: SimServer) -> None:
    info = Info(sim.rest_url)  # starts the SDK's own WebSocket thread
    got: "queue.Queue[str]" = queue.Queue()
    try:
        info.subscribe({"type": "trades", "coin": "BTC"}, lambda m: got.put(m["channel"]))
        info.subscribe({"type": "allMids"}, lambda m: got.put(m["channel"]))
        info.subscribe({"type": "l2Book", "coin": "BTC"}, lambda m: got.put(m["channel"]))
        seen: set[str] = set()
        deadline = time.monotonic() + 10
        while seen != {"trades", "allMids", "l2Book"} and time.monotonic() < deadline:
            try:
                seen.add(got.get(timeout=0.5))
            except queue.Empty:
                sim.set_price("BTC", "50000")
        assert seen == {"trades", "allMids", "l2Book"}
    finally:
        info.disconnect_websocket()


def test_info_errors_like_the_exchange(sim: SimServer) -> None:
    bad = requests.post(sim.rest_url + "/info", json={"type": "noSuchType"}, timeout=5)
    assert bad.status_code == 422
    garbage = requests.post(sim.rest_url + "/info", data="{nope", timeout=5)
    assert garbage.status_code == 422
    sim.info_429(0.5)
    assert requests.post(sim.rest_url + "/info", json={"type": "allMids"}, timeout=5).status_code == 429
