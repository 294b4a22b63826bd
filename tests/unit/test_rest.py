"""REST client: every endpoint and error path with `responses`; order wires and signatures
against the official SDK; the never-re-send-blindly rule; recorded real payloads parse."""
from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path

import eth_account
import pytest
import requests
import responses
from hyperliquid.utils import signing as sdk
from hyperliquid.utils.types import Cloid
from hypothesis import given, settings, strategies as st

from hyperliquid_rest import (LOST_ORDER_GRACE_S, HyperliquidRestClient, NetworkError, OrderRejected, OrderStatusUnknown, RateLimited,
                              RequestRejected, ServerError, WeightBudget, parse_account, parse_fill,
                              parse_open_order)
from signing import L1Signer, NonceClock, sign_l1_action

URL = "http://127.0.0.1:9"
META = {"universe": [{"name": "BTC", "szDecimals": 5, "maxLeverage": 50},
                     {"name": "ETH", "szDecimals": 4, "maxLeverage": 50}]}
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rest"  # copies of ../shared/fixtures/rest
KEY = bytes.fromhex("0123456789abcdef" * 4)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def client(ft: FakeTime | None = None, **kw) -> HyperliquidRestClient:
    """/exchange through requests too, so that `responses` sees it (tests/integration/test_http_line.py
    runs the same status table over the http.client line the bot uses)."""
    ft = ft or FakeTime()
    return HyperliquidRestClient(URL, signer=L1Signer(KEY, is_mainnet=False), nonce_clock=NonceClock(lambda: 1_700_000_000_000),
                                 clock=ft.clock, sleep=ft.sleep, rng=lambda: 0.0, order_line=False, **kw)


def info_bodies(rsps: responses.RequestsMock) -> list[dict]:
    return [json.loads(c.request.body) for c in rsps.calls if c.request.url.endswith("/info")]


def exchange_bodies(rsps: responses.RequestsMock) -> list[dict]:
    return [json.loads(c.request.body) for c in rsps.calls if c.request.url.endswith("/exchange")]


@responses.activate
def test_meta_cached_and_mids_typed() -> None:
    responses.post(URL + "/info", json=META)
    responses.post(URL + "/info", json={"BTC": "50000.5", "ETH": "3000"})
    c = client()
    assert c.meta().asset("ETH").asset_id == 1 and c.meta().asset("BTC").sz_decimals == 5
    assert c.mid("BTC") == D("50000.5")
    assert [b["type"] for b in info_bodies(responses.mock)] == ["meta", "allMids"]


@pytest.mark.parametrize("kwargs,expected,retry_waits", [
    ({"status": 429, "headers": {"Retry-After": "3"}}, RateLimited, [3.0, 3.0, 3.0]),
    ({"status": 429}, RateLimited, [1.0, 1.0, 1.0]),
    ({"status": 502, "body": "bad gateway"}, ServerError, [0.25, 0.5, 1.0]),
    ({"body": requests.ConnectTimeout()}, NetworkError, [0.25, 0.5, 1.0]),
    ({"body": requests.ConnectionError()}, NetworkError, [0.25, 0.5, 1.0]),
    ({"status": 422, "body": "Failed to deserialize the JSON body"}, RequestRejected, []),
])
@responses.activate
def test_info_errors_typed_and_retried_with_backoff(kwargs: dict, expected: type, retry_waits: list) -> None:
    responses.post(URL + "/info", **kwargs)
    ft = FakeTime()
    with pytest.raises(expected):
        client(ft).all_mids()
    assert ft.slept == retry_waits
    assert len(responses.calls) == len(retry_waits) + 1


@responses.activate
def test_info_recovers_after_transient_errors() -> None:
    responses.post(URL + "/info", status=500)
    responses.post(URL + "/info", status=429, headers={"Retry-After": "2"})
    responses.post(URL + "/info", json={"BTC": "1"})
    ft = FakeTime()
    assert client(ft).all_mids() == {"BTC": D("1")}
    assert ft.slept == [0.25, 2.0]


def test_weight_budget_waits_instead_of_exceeding() -> None:
    ft = FakeTime()
    budget = WeightBudget(100, ft.clock, ft.sleep)
    for _ in range(5):
        budget.take(20)
    assert ft.slept == []
    budget.take(20)
    assert ft.slept == [60.0]


def _ok_statuses(*statuses: object) -> dict:
    return {"status": "ok", "response": {"type": "order", "data": {"statuses": list(statuses)}}}


@responses.activate
def test_order_statuses_typed() -> None:
    responses.post(URL + "/info", json=META)
    responses.post(URL + "/exchange", json=_ok_statuses({"filled": {"totalSz": "0.002", "avgPx": "50010", "oid": 7}}))
    responses.post(URL + "/exchange", json=_ok_statuses({"resting": {"oid": 8}}))
    responses.post(URL + "/exchange", json=_ok_statuses({"error": "Order must have minimum value of $10."}))
    c = client()
    (filled,) = c.market_order("BTC", True, D("0.002"), D("0.5"), reference_px=D("50000"))
    assert (filled.kind, filled.total_size, filled.avg_px, filled.oid) == ("filled", D("0.002"), D("50010"), 7)
    assert c.place_order("BTC", False, D("0.001"), D("60000"))[0].kind == "resting"
    err = c.place_order("BTC", True, D("0.0001"), D("50000"))[0]
    assert err.kind == "error" and "minimum value" in err.message
    wire = exchange_bodies(responses.mock)[0]["action"]["orders"][0]
    assert list(wire) == ["a", "b", "p", "s", "r", "t", "c"]
    assert wire["p"] == "50250" and wire["t"] == {"limit": {"tif": "Ioc"}} and len(wire["c"]) == 34


@responses.activate
def test_whole_request_error_is_raised_not_returned() -> None:
    responses.post(URL + "/info", json=META)
    responses.post(URL + "/exchange", json={"status": "err", "response": "User or API Wallet 0xabc does not exist."})
    with pytest.raises(OrderRejected) as err:
        client().place_order("BTC", True, D("0.001"), D("50000"), cloid="0x" + "1" * 32)
    assert "does not exist" in err.value.message and err.value.cloid == "0x" + "1" * 32


def test_bad_tick_or_lot_refused_before_sending() -> None:
    c = client()
    c._meta = __import__("hyperliquid_rest").parse_meta(META)
    with pytest.raises(ValueError, match="tick"):
        c.place_order("BTC", True, D("0.001"), D("50000.5"))
    with pytest.raises(ValueError, match="lot"):
        c.place_order("BTC", True, D("0.0000001"), D("50000"))


@responses.activate
def test_lost_answer_filled_is_not_resent() -> None:
    responses.post(URL + "/info", json=META)
    responses.post(URL + "/exchange", body=requests.ReadTimeout())
    responses.post(URL + "/info", json={"status": "order", "order": {"order": {"oid": 5, "origSz": "0.001",
                                                                               "limitPx": "50000"},
                                                                     "status": "filled", "statusTimestamp": 1}})
    ft = FakeTime()
    result = client(ft).place_order("BTC", True, D("0.001"), D("50000"), cloid="0x" + "2" * 32)[0]
    assert result.kind == "filled" and result.oid == 5
    assert len(exchange_bodies(responses.mock)) == 1
    assert info_bodies(responses.mock)[-1]["oid"] == "0x" + "2" * 32
    assert ft.slept == [LOST_ORDER_GRACE_S]  # asked only once an order that arrived would be processed


@responses.activate
def test_lost_answer_asked_at_once_when_the_grace_already_passed() -> None:
    ft = FakeTime()
    responses.post(URL + "/info", json=META)

    def slow_timeout(request: requests.PreparedRequest) -> tuple:
        ft.now += 10.0  # the read timeout took 10 s: the order had all that time to arrive
        raise requests.ReadTimeout()
    responses.add_callback(responses.POST, URL + "/exchange", callback=slow_timeout)
    responses.post(URL + "/info", json={"status": "order", "order": {"order": {"oid": 6, "origSz": "0.001",
                                                                               "limitPx": "50000"},
                                                                     "status": "filled", "statusTimestamp": 1}})
    assert client(ft).place_order("BTC", True, D("0.001"), D("50000"), cloid="0x" + "5" * 32)[0].oid == 6
    assert ft.slept == []


@responses.activate
def test_lost_answer_unknown_is_resent_once_with_same_cloid() -> None:
    responses.post(URL + "/info", json=META)
    responses.post(URL + "/exchange", body=requests.ConnectionError())
    responses.post(URL + "/info", json={"status": "unknownOid"})
    responses.post(URL + "/exchange", json=_ok_statuses({"resting": {"oid": 9}}))
    ft = FakeTime()
    result = client(ft).place_order("BTC", True, D("0.001"), D("40000"), cloid="0x" + "3" * 32)[0]
    sent = exchange_bodies(responses.mock)
    assert result.kind == "resting" and len(sent) == 2
    assert ft.slept == [LOST_ORDER_GRACE_S]  # "never saw it" is believed only after the grace
    assert sent[0]["action"] == sent[1]["action"] and sent[1]["nonce"] > sent[0]["nonce"]


@responses.activate
def test_lost_answer_and_lookup_failing_raises_unknown() -> None:
    responses.post(URL + "/info", json=META)
    responses.post(URL + "/exchange", body=requests.ConnectionError())
    responses.post(URL + "/info", status=400, body="nope")
    with pytest.raises(OrderStatusUnknown):
        client().place_order("BTC", True, D("0.001"), D("40000"), cloid="0x" + "4" * 32)
    assert len(exchange_bodies(responses.mock)) == 1


@responses.activate
def test_cancel_leverage_schedule_cancel_actions() -> None:
    responses.post(URL + "/info", json=META)
    ok = {"status": "ok", "response": {"type": "cancel", "data": {"statuses": ["success"]}}}
    responses.post(URL + "/exchange", json=ok)
    responses.post(URL + "/exchange", json=ok)
    responses.post(URL + "/exchange", json={"status": "ok", "response": {"type": "default"}})
    responses.post(URL + "/exchange", json={"status": "ok", "response": {"type": "default"}})
    c = client()
    assert c.cancel("ETH", 12) and c.cancel_by_cloid("BTC", "0x" + "5" * 32)
    c.update_leverage("BTC", 3)
    c.schedule_cancel(None)
    actions = [b["action"] for b in exchange_bodies(responses.mock)]
    assert actions == [{"type": "cancel", "cancels": [{"a": 1, "o": 12}]},
                       {"type": "cancelByCloid", "cancels": [{"asset": 0, "cloid": "0x" + "5" * 32}]},
                       {"type": "updateLeverage", "asset": 0, "isCross": True, "leverage": 3},
                       {"type": "scheduleCancel"}]


# ---- differential against the official SDK ---------------------------------------------------

WALLET = eth_account.Account.from_key(KEY)
prices = st.decimals(min_value=D("0.01"), max_value=D("99999"), places=2).filter(lambda p: p > 0)


@settings(max_examples=150, deadline=None)
@given(is_buy=st.booleans(), px=st.integers(1, 99999), sz_units=st.integers(1, 10**6), reduce_only=st.booleans(),
       tif=st.sampled_from(["Gtc", "Ioc", "Alo"]), cloid=st.one_of(st.none(), st.integers(0, 2**128 - 1)),
       trigger=st.one_of(st.none(), st.tuples(st.booleans(), st.integers(1, 99999), st.sampled_from(["tp", "sl"]))),
       vault=st.one_of(st.none(), st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())),
       expires=st.one_of(st.none(), st.integers(1, 2**40)), nonce=st.integers(1, 2**50), mainnet=st.booleans())
def test_order_action_and_signature_equal_the_sdk(is_buy, px, sz_units, reduce_only, tif, cloid, trigger, vault,
                                                  expires, nonce, mainnet) -> None:
    c = client()
    c._meta = __import__("hyperliquid_rest").parse_meta(META)
    size = D(sz_units) / D(10**5)
    cloid_hex = None if cloid is None else f"{cloid:#034x}"
    if trigger is None:
        ours_type = {"limit": {"tif": tif}}
        sdk_type = {"limit": {"tif": tif}}
    else:
        ours_type = {"trigger": {"isMarket": trigger[0], "triggerPx": str(trigger[1]), "tpsl": trigger[2]}}
        sdk_type = {"trigger": {"isMarket": trigger[0], "triggerPx": float(trigger[1]), "tpsl": trigger[2]}}
    ours = {"type": "order", "orders": [c.order_wire("BTC", is_buy, size, D(px), ours_type, reduce_only, cloid_hex)],
            "grouping": "na"}
    req = {"coin": "BTC", "is_buy": is_buy, "sz": float(size), "limit_px": float(px), "order_type": sdk_type,
           "reduce_only": reduce_only}
    if cloid_hex:
        req["cloid"] = Cloid(cloid_hex)
    theirs = sdk.order_wires_to_order_action([sdk.order_request_to_order_wire(req, 0)])
    assert json.dumps(ours) == json.dumps(theirs)
    assert sign_l1_action(WALLET, ours, vault, nonce, expires, mainnet) == \
        sdk.sign_l1_action(WALLET, theirs, vault, nonce, expires, mainnet)


@settings(max_examples=100, deadline=None)
@given(action=st.sampled_from([
    {"type": "cancel", "cancels": [{"a": 0, "o": 123456789}]},
    {"type": "cancelByCloid", "cancels": [{"asset": 1, "cloid": "0x" + "ab" * 16}]},
    {"type": "updateLeverage", "asset": 0, "isCross": False, "leverage": 7},
    {"type": "scheduleCancel", "time": 1_700_000_100_000},
    {"type": "scheduleCancel"},
]), nonce=st.integers(1, 2**50), mainnet=st.booleans(),
       vault=st.one_of(st.none(), st.just("0x" + "12" * 20)), expires=st.one_of(st.none(), st.integers(1, 2**40)))
def test_other_actions_sign_like_the_sdk(action, nonce, mainnet, vault, expires) -> None:
    assert sign_l1_action(WALLET, action, vault, nonce, expires, mainnet) == \
        sdk.sign_l1_action(WALLET, action, vault, nonce, expires, mainnet)


def test_negative_zero_written_as_zero() -> None:
    from signing import float_to_wire
    assert float_to_wire(-0.0) == "0" and float_to_wire("0.10000000") == "0.1"
    with pytest.raises(ValueError):
        float_to_wire("0.123456789")


def test_nonces_strictly_increase_in_one_millisecond() -> None:
    clock = NonceClock(lambda: 5)
    assert [clock.next() for _ in range(4)] == [5, 6, 7, 8]


# ---- recorded real payloads -------------------------------------------------------------------

def _fixture(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())["response"]


def test_recorded_payloads_parse() -> None:
    state = parse_account(_fixture("sdk_cassette_test_get_user_state.json"))
    assert state.account_value >= 0
    fills = [parse_fill(f) for f in _fixture("sdk_cassette_test_get_user_fills.json")]
    assert fills and all(f.px > 0 for f in fills)
    with_cloid = [parse_fill(f) for f in _fixture("rest_nautilus_user_fills_with_cloid.json")]
    assert any(f.cloid for f in with_cloid)
    orders = [parse_open_order(o) for o in _fixture("sdk_cassette_test_get_open_orders.json")]
    assert all(o.side in ("buy", "sell") for o in orders)
    from strategies import parse_candle
    candles = [parse_candle(c) for c in _fixture("sdk_cassette_test_get_candles_snapshot.json")]
    assert candles and candles[0].high >= candles[0].low


@responses.activate
def test_redirect_is_rejected_never_followed() -> None:
    # Following a redirect would re-POST a signed action somewhere else.
    responses.post(URL + "/exchange", status=307, headers={"Location": "http://127.0.0.1:10/exchange"})
    responses.post("http://127.0.0.1:10/exchange", json={"status": "ok"})
    c = client()
    responses.post(URL + "/info", json=META)
    with pytest.raises(RequestRejected, match="307"):
        c.cancel("BTC", 1)
    assert [call.request.url for call in responses.calls if "exchange" in call.request.url] == [URL + "/exchange"]


def test_environment_read_once_for_proxies_and_ca_bundle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_text("not checked here")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    c = HyperliquidRestClient("https://api.hyperliquid-testnet.xyz")
    assert c.session.verify == str(bundle)
    assert c.session.proxies["https"] == "http://proxy.corp:3128"
    assert c.session.trust_env is False  # no per-call environment scan on the order path
    assert c.line is None  # behind a proxy, orders go through requests, which knows proxies
    monkeypatch.setenv("NO_PROXY", "api.hyperliquid-testnet.xyz")
    direct = HyperliquidRestClient("https://api.hyperliquid-testnet.xyz")
    assert direct.line is not None and direct.line.ca_bundle == str(bundle)
