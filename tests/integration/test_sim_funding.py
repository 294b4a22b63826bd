"""Funding payments on the simulator, from the outside: the `pay_funding` control op moves each
position holder's USDC by exactly usdc = -szi * markPx * rate (a long pays a positive rate, a short
receives it; vaults too), `/info userFunding` lists the payments in the asked window oldest first,
and a `userEvents` subscriber gets each payment on the `user` channel. Accounts trade through the
bot's own REST client with signed orders; sockets are plain websocket-client ones."""
from __future__ import annotations

import os
import time
from decimal import Decimal as D
from typing import Any, Iterator

import pytest
import requests

from hyperliquid_rest import HyperliquidError, HyperliquidRestClient
from hyperliquid_sim import SimServer
from signing import L1Signer
from tests.integration.test_sim import Socket, make_sim  # noqa: F401 (make_sim: fixture)
from harness.waiting import wait_until

ZERO_HASH = "0x" + "0" * 64


@pytest.fixture
def sim(make_sim: Any) -> SimServer:
    return make_sim(start_prices={"BTC": D("50000")})  # no feed: the price moves only when a test sets it


@pytest.fixture
def trader(sim: SimServer) -> Iterator[Any]:
    """`trader(size)`: a fresh funded account holding `size` BTC (negative: short), and its client."""
    clients: list[HyperliquidRestClient] = []

    def make(size: str, vault_of: HyperliquidRestClient | None = None) -> HyperliquidRestClient:
        signer = vault_of.signer if vault_of is not None else L1Signer(os.urandom(32), is_mainnet=False)
        vault = sim.create_vault(signer.address)["vault"] if vault_of is not None else None
        rest = HyperliquidRestClient(sim.rest_url, signer=signer, vault_address=vault)
        clients.append(rest)
        rest.clearinghouse_state(signer.address)  # the faucet
        if D(size):
            rest.market_order("BTC", D(size) > 0, abs(D(size)), D("1"), reference_px=D("50000"))
        return rest

    yield make
    for rest in clients:
        rest.close()


def holder(rest: HyperliquidRestClient) -> str:
    """The account the client's orders land on: its vault, else its signer."""
    return rest.vault_address or rest.signer.address


def usdc(sim: SimServer, rest: HyperliquidRestClient) -> D:
    return D(sim.account(holder(rest))["usdc"])


def user_funding(sim: SimServer, address: str, start_ms: int, end_ms: int | None = None) -> requests.Response:
    body: dict[str, Any] = {"type": "userFunding", "user": address, "startTime": start_ms}
    if end_ms is not None:
        body["endTime"] = end_ms
    return requests.post(sim.rest_url + "/info", json=body, timeout=5)


def test_long_pays_a_positive_rate_and_short_receives_it_exactly(sim: SimServer, trader: Any) -> None:
    long, short, flat = trader("0.01"), trader("-0.01"), trader("0")
    sim.set_price("BTC", "51234.5")  # the mark the payment is computed at
    before = {holder(r): usdc(sim, r) for r in (long, short, flat)}
    answer = sim.pay_funding("BTC", "0.000125")
    assert answer["coin"] == "BTC" and answer["fundingRate"] == "0.000125" and D(answer["markPx"]) == D("51234.5")
    paid = {p["user"]: p for p in answer["payments"]}
    assert set(paid) == {holder(long).lower(), holder(short).lower()}  # the flat account pays nothing
    # 0.01 * 51234.5 * 0.000125 = 0.064043125 -> 6 decimals
    assert paid[holder(long).lower()]["delta"] == {"type": "funding", "coin": "BTC", "usdc": "-0.064043",
                                                   "szi": "0.01", "fundingRate": "0.000125", "nSamples": None}
    assert paid[holder(short).lower()]["delta"]["usdc"] == "0.064043"
    assert paid[holder(short).lower()]["delta"]["szi"] == "-0.01"
    for p in answer["payments"]:
        assert p["hash"] == ZERO_HASH and isinstance(p["time"], int)
    assert usdc(sim, long) - before[holder(long)] == D("-0.064043")
    assert usdc(sim, short) - before[holder(short)] == D("0.064043")
    assert usdc(sim, flat) == before[holder(flat)]
    # a negative rate turns it round: the long receives, the short pays
    again = {p["user"]: p["delta"]["usdc"] for p in sim.pay_funding("BTC", "-0.0002")["payments"]}
    assert again == {holder(long).lower(): "0.102469", holder(short).lower(): "-0.102469"}
    assert usdc(sim, long) - before[holder(long)] == D("0.038426")


def test_a_vault_with_a_position_pays_and_its_leader_does_not(sim: SimServer, trader: Any) -> None:
    leader = trader("0")
    vault = trader("0.02", vault_of=leader)
    leader_before, vault_before = usdc(sim, leader), usdc(sim, vault)
    payments = sim.pay_funding("BTC", "0.0001")["payments"]
    assert [p["user"] for p in payments] == [holder(vault).lower()]
    assert usdc(sim, vault) - vault_before == D("-0.1")  # 0.02 * 50000 * 0.0001
    assert usdc(sim, leader) == leader_before
    listed = user_funding(sim, holder(vault), 0).json()
    assert [p["delta"]["usdc"] for p in listed] == ["-0.1"]


def test_user_funding_lists_the_payments_in_the_window_oldest_first(sim: SimServer, trader: Any) -> None:
    long = trader("0.01")
    first = sim.pay_funding("BTC", "0.0001")["payments"][0]
    wait_until(lambda: time.time_ns() // 1_000_000 > first["time"], 1.0)  # the next round in a later ms
    second = sim.pay_funding("BTC", "-0.00005")["payments"][0]
    address = holder(long)
    everything = user_funding(sim, address, 0).json()
    assert everything == [{k: v for k, v in p.items() if k != "user"} for p in (first, second)]
    assert user_funding(sim, address, second["time"]).json() == everything[1:]  # start inclusive
    assert user_funding(sim, address, 0, first["time"]).json() == everything[:1]  # end inclusive
    assert user_funding(sim, address.lower(), first["time"] + 1, second["time"] - 1).json() == []
    null_end = requests.post(sim.rest_url + "/info", json={"type": "userFunding", "user": address, "startTime": 0,
                                                           "endTime": None}, timeout=5)
    assert null_end.json() == everything
    assert requests.post(sim.rest_url + "/info", json={"type": "userFunding", "user": address},
                         timeout=5).status_code == 422  # startTime is required


def test_a_user_funding_query_makes_the_address_an_account(sim: SimServer) -> None:
    unknown, queried = (L1Signer(os.urandom(32), is_mainnet=False) for _ in range(2))
    assert user_funding(sim, queried.address, 0).json() == []
    for signer in (unknown, queried):
        rest = HyperliquidRestClient(sim.rest_url, signer=signer)
        try:
            if signer is unknown:
                with pytest.raises(HyperliquidError, match="does not exist"):
                    rest.update_leverage("BTC", 3)
            else:
                rest.update_leverage("BTC", 3)  # the query's faucet made the account
        finally:
            rest.close()


def test_a_user_events_subscriber_gets_each_payment(sim: SimServer, trader: Any) -> None:
    long, flat = trader("0.01"), trader("0")
    sock, quiet = Socket(sim.ws_url), Socket(sim.ws_url)
    try:
        sock.subscribe({"type": "userEvents", "user": holder(long)})
        quiet.subscribe({"type": "userEvents", "user": holder(flat).lower()})
        payment = sim.pay_funding("BTC", "0.0001")["payments"][0]
        frame = sock.wait_for(lambda f: f["channel"] == "user" and "funding" in f["data"], "the funding event")
        delta = payment["delta"]
        assert frame["data"] == {"funding": {"time": payment["time"], "coin": "BTC", "usdc": delta["usdc"],
                                             "szi": delta["szi"], "fundingRate": delta["fundingRate"],
                                             "nSamples": None}}
        assert frame["data"]["funding"]["usdc"] == "-0.05"
        assert [f for f in quiet.frames_within(0.3) if f["channel"] == "user"] == []
    finally:
        sock.close()
        quiet.close()


def test_pay_funding_over_http_and_its_refusals(sim: SimServer, trader: Any) -> None:
    short = trader("-0.01")
    control = sim.rest_url + "/control"
    answer = requests.post(control, json={"op": "pay_funding", "coin": "BTC", "rate": "0.0001"}, timeout=5)
    assert answer.status_code == 200
    assert [(p["user"], p["delta"]["usdc"]) for p in answer.json()["payments"]] == [(holder(short).lower(), "0.05")]
    unknown = requests.post(control, json={"op": "pay_funding", "coin": "DOGE", "rate": "0.0001"}, timeout=5)
    assert unknown.status_code == 400 and "DOGE" in unknown.text
    for bad in ("abc", "NaN"):
        refused = requests.post(control, json={"op": "pay_funding", "coin": "BTC", "rate": bad}, timeout=5)
        assert refused.status_code == 400 and bad in refused.text
    with pytest.raises(ValueError, match="DOGE"):
        sim.pay_funding("DOGE", "0.0001")
