"""Funding payments on the simulator against the real recordings and the official SDK.

`userFunding` answers hold every key of the recorded mainnet answers
(tests/fixtures/rest/sdk_cassette_test_user_funding_history_*.json) with values of the same types
and number formats; the SDK's `Info.user_funding_history` reads them; the SDK's own WebSocket
routes the funding event (channel `user`) to a `userEvents` callback; an agent's trades make its
master pay, and a query naming the agent shows an empty account.
"""
from __future__ import annotations

import json
import queue
import re
import time
from decimal import Decimal as D
from pathlib import Path
from typing import Any, Iterator

import eth_account
import pytest
import requests
from eth_account.signers.local import LocalAccount
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info

from hyperliquid_sim import SimConfig, SimServer
from tests.conformance.test_sim_shapes import missing
from harness.waiting import wait_until

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rest"
RECORDINGS = ["sdk_cassette_test_user_funding_history_with_end_time.json",
              "sdk_cassette_test_user_funding_history_without_end_time.json"]
DECIMAL = re.compile(r"^-?\d+\.\d+$")  # every recorded usdc, szi and fundingRate: no exponent, a point
# The 2023 recordings (8-hourly funding) carry an integer nSamples; today's hourly payments say
# null (funding.py cites the sources). Any other key must have the recorded value's type.
TYPES_ALLOWED = {"delta.nSamples": (int, type(None))}


def type_mismatches(real: dict[str, Any], ours: dict[str, Any], path: str = "") -> list[str]:
    out = []
    for key, value in real.items():
        where = f"{path}{key}"
        if isinstance(value, dict):
            out += type_mismatches(value, ours[key], where + ".")
        elif not isinstance(ours[key], TYPES_ALLOWED.get(where, type(value))):
            out.append(f"{where}: recorded {type(value).__name__}, sim {type(ours[key]).__name__}")
    return out


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    server = SimServer(SimConfig(port=0, seed=9, feed=False, start_prices={"BTC": D("50000"), "ETH": D("3000")}))
    server.start()
    yield server
    server.stop()


def funded(sim: SimServer) -> LocalAccount:
    wallet = eth_account.Account.create()
    Info(sim.rest_url, skip_ws=True).user_state(wallet.address)  # the faucet
    return wallet


@pytest.fixture(scope="module")
def payer(sim: SimServer) -> tuple[str, list[dict[str, Any]]]:
    """An account long BTC and short ETH after two funding rounds: (address, the payments)."""
    wallet = funded(sim)
    ex = Exchange(wallet, base_url=sim.rest_url)
    assert "filled" in ex.market_open("BTC", True, 0.003)["response"]["data"]["statuses"][0]
    assert "filled" in ex.market_open("ETH", False, 0.05)["response"]["data"]["statuses"][0]
    paid = sim.pay_funding("BTC", "0.0000125")["payments"]
    wait_until(lambda: time.time_ns() // 1_000_000 > paid[0]["time"], 1.0)  # the next round in a later ms
    paid += sim.pay_funding("ETH", "-0.00003372")["payments"]
    return wallet.address, [{k: v for k, v in p.items() if k != "user"} for p in paid]


@pytest.mark.parametrize("fixture", RECORDINGS, ids=[r.removesuffix(".json") for r in RECORDINGS])
def test_user_funding_has_the_recorded_keys_types_and_formats(sim: SimServer, payer: Any, fixture: str) -> None:
    address, payments = payer
    recording = json.loads((FIXTURES / fixture).read_text())
    body = dict(recording["request"], user=address, startTime=0)  # the recorded request, with or without endTime
    if "endTime" in body:
        body["endTime"] = payments[-1]["time"]
    ours = requests.post(sim.rest_url + "/info", json=body, timeout=5).json()
    assert ours == payments
    real = recording["response"]
    assert missing(real, ours) == []
    for entry in ours:
        assert set(entry) == set(real[0]) and set(entry["delta"]) == set(real[0]["delta"])
        assert type_mismatches(real[0], entry) == []
        assert re.fullmatch(r"0x[0-9a-f]{64}", entry["hash"]) and entry["delta"]["type"] == "funding"
    for entry in real + ours:
        assert all(DECIMAL.match(entry["delta"][k]) for k in ("usdc", "szi", "fundingRate")), entry
        assert len(entry["delta"]["usdc"].split(".")[1]) <= 6


def test_sdk_reads_the_user_funding_history(sim: SimServer, payer: Any) -> None:
    address, payments = payer
    info = Info(sim.rest_url, skip_ws=True)
    assert info.user_funding_history(address, 0) == payments
    assert info.user_funding_history(address, 0, payments[0]["time"]) == payments[:1]
    assert info.user_funding_history(address, payments[-1]["time"] + 1) == []
    btc, eth = payments
    assert (btc["delta"]["coin"], btc["delta"]["szi"], btc["delta"]["fundingRate"]) == ("BTC", "0.003", "0.0000125")
    assert D(btc["delta"]["usdc"]) == D("-0.001875")  # the long pays: 0.003 * 50000 * 0.0000125
    # a short pays a negative rate: 0.05 * 3000 * 0.00003372
    assert (eth["delta"]["szi"], eth["delta"]["usdc"]) == ("-0.05", "-0.005058")


def test_sdk_websocket_routes_the_funding_event_to_a_user_events_callback(sim: SimServer) -> None:
    wallet = funded(sim)
    assert "filled" in Exchange(wallet, base_url=sim.rest_url).market_open("BTC", False, 0.002)[
        "response"]["data"]["statuses"][0]
    info = Info(sim.rest_url)  # starts the SDK's WebSocket thread
    got: "queue.Queue[dict[str, Any]]" = queue.Queue()
    try:
        before = sim.stats()["subscriptions"]
        info.subscribe({"type": "userEvents", "user": wallet.address}, got.put)
        wait_until(lambda: sim.stats()["subscriptions"] > before, 5.0)  # sent once the SDK's socket opens
        sim.pay_funding("BTC", "0.0001")
        msg = got.get(timeout=5.0)
        assert msg["channel"] == "user"
        assert set(msg["data"]["funding"]) == {"time", "coin", "usdc", "szi", "fundingRate", "nSamples"}
        assert msg["data"]["funding"]["szi"] == "-0.002" and D(msg["data"]["funding"]["usdc"]) > 0
    finally:
        info.disconnect_websocket()


def test_an_agents_trades_make_its_master_pay_and_the_agent_shows_nothing(sim: SimServer) -> None:
    master = funded(sim)
    _, agent_key = Exchange(master, base_url=sim.rest_url).approve_agent("funding")
    agent = eth_account.Account.from_key(agent_key)
    by_agent = Exchange(agent, base_url=sim.rest_url, account_address=master.address)
    assert "filled" in by_agent.market_open("BTC", True, 0.001)["response"]["data"]["statuses"][0]
    payments = sim.pay_funding("BTC", "0.0001")["payments"]
    assert master.address.lower() in [p["user"] for p in payments]
    assert agent.address.lower() not in [p["user"] for p in payments]
    info = Info(sim.rest_url, skip_ws=True)
    assert [p["delta"]["usdc"] for p in info.user_funding_history(master.address, 0)] == ["-0.005"]
    assert info.user_funding_history(agent.address, 0) == []
    assert D(info.user_state(agent.address)["marginSummary"]["accountValue"]) == 0
