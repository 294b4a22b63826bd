"""REST client: every endpoint and error path with `responses`; order wires and signatures
against the official SDK; the three outcomes of an action (done, not executed, unknown) and the
never-re-send rule; no sleeping and no retries inside the client; malformed bodies typed;
recorded real payloads parse."""
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

from http_line import HttpLine, RequestsLine
from hyperliquid_rest import HyperliquidRestClient, WeightBudget
from rest_errors import (HyperliquidError, MalformedAnswer, NetworkError, OrderRejected, OrderStatusUnknown,
                         RateLimited, RequestRejected, ResultUnknown, ServerError)
from signing import L1Signer, NonceClock, sign_l1_action
from wire import parse_account, parse_candle, parse_fill, parse_meta, parse_open_order

URL = "http://127.0.0.1:9"
META = {"universe": [{"name": "BTC", "szDecimals": 5, "maxLeverage": 50},
                     {"name": "ETH", "szDecimals": 4, "maxLeverage": 50}]}
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rest"  # copies of ../shared/fixtures/rest
KEY = bytes.fromhex("0123456789abcdef" * 4)


WALL_MS = 1_700_000_000_000


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now


def client(ft: FakeTime | None = None, **kw) -> HyperliquidRestClient:
    """/exchange through requests too, so that `responses` sees it (tests/integration/test_http_line.py
    runs the same status table over the http.client line the bot uses)."""
    ft = ft or FakeTime()
    return HyperliquidRestClient(URL, signer=L1Signer(KEY, is_mainnet=False), nonce_clock=NonceClock(lambda: WALL_MS),
                                 clock=ft.clock, wall_ms=lambda: WALL_MS, order_line=False, **kw)


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


@pytest.mark.parametrize("kwargs,expected", [
    ({"status": 429, "headers": {"Retry-After": "100"}}, RateLimited),
    ({"status": 502, "body": "bad gateway"}, ServerError),
    ({"body": requests.ConnectTimeout()}, NetworkError),
    ({"body": requests.ConnectionError()}, NetworkError),
    ({"body": "<html>oops"}, MalformedAnswer),
    ({"status": 422, "body": "Failed to deserialize the JSON body"}, RequestRejected),
])
@responses.activate
def test_info_errors_typed_one_request_no_retry(kwargs: dict, expected: type) -> None:
    # The client never sleeps or retries: the trading loop decides when to ask again (a timer).
    responses.post(URL + "/info", **kwargs)
    with pytest.raises(expected) as err:
        client().all_mids()
    assert len(responses.calls) == 1
    if expected is RateLimited:
        assert err.value.retry_after_s == 100.0


@pytest.mark.parametrize("method,args,body", [
    ("clearinghouse_state", ("0x1",), {"assetPositions": [{"position": {"coin": "BTC", "szi": "abc"}}]}),
    ("clearinghouse_state", ("0x1",), {"assetPositions": [{"oops": 1}]}),
    ("clearinghouse_state", ("0x1",), ["not", "a", "dict"]),
    ("open_orders", ("0x1",), [{"coin": "BTC", "side": "X", "limitPx": "1", "sz": "1", "oid": 1}]),
    ("user_fills_by_time", ("0x1", 0), [{"coin": "BTC"}]),
    ("user_fills", ("0x1",), {"not": "a list"}),
    ("order_status", ("0x1", 5), {"status": "order"}),
    ("all_mids", (), {"BTC": "NaN?"}),
    ("all_mids", (), [1, 2]),
    ("candle_snapshot", ("BTC", "1m", 0, 1), [{"t": 1}]),
    ("meta", (), {"universe": [{"name": "BTC"}]}),
])
@responses.activate
def test_malformed_bodies_raise_typed_errors(method: str, args: tuple, body: object) -> None:
    # Callers catch HyperliquidError: a KeyError or InvalidOperation from a parser would end the loop.
    responses.post(URL + "/info", json=body)
    with pytest.raises(MalformedAnswer):
        getattr(client(), method)(*args)


def test_weight_budget_refuses_instead_of_waiting() -> None:
    ft = FakeTime()
    budget = WeightBudget(100, ft.clock)
    for _ in range(5):
        budget.take(20)
    with pytest.raises(RateLimited) as err:
        budget.take(20)
    assert err.value.retry_after_s == 60.0
    ft.now += 60.0
    budget.take(20)


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
    c._meta = parse_meta(META)
    with pytest.raises(ValueError, match="tick"):
        c.place_order("BTC", True, D("0.001"), D("50000.5"))
    with pytest.raises(ValueError, match="lot"):
        c.place_order("BTC", True, D("0.0000001"), D("50000"))


@pytest.mark.parametrize("answer", [
    {"status": 502, "body": "<html>bad gateway</html>"},
    {"status": 500},
    {"status": 429, "headers": {"Retry-After": "100"}},
    {"status": 400, "body": "bad request"},
    {"body": "<html>oops"},
    {"body": '{"status": "ok", "resp'},
    {"json": {"status": "ok", "response": {"type": "order"}}},
    {"json": {"status": "ok", "response": {"type": "order", "data": {"statuses": "x"}}}},
    {"json": {"weird": True}},
    {"body": "[" * 100_000 + "]" * 100_000},  # nested past the parser's recursion limit
    {"json": _ok_statuses("waitingForFill")},
    {"json": _ok_statuses({"filled": {"totalSz": "0", "avgPx": "50000", "oid": 1}})},
    {"json": _ok_statuses({"filled": {"totalSz": "0.001", "avgPx": "NaN", "oid": 1}})},
    {"json": _ok_statuses({"filled": {"totalSz": "0.001", "avgPx": "-1", "oid": 1}})},
    {"json": _ok_statuses({"resting": {"oid": 1}}, {"resting": {"oid": 2}})},
    {"body": requests.ReadTimeout()},
    {"body": requests.ConnectionError("Connection aborted: reset by peer")},
])
@responses.activate
def test_order_answers_that_are_not_an_answer_mean_unknown_never_failed(answer: dict) -> None:
    # The order may have executed: the caller must look it up, never treat it as failed and re-send.
    responses.post(URL + "/info", json=META)
    responses.post(URL + "/exchange", **answer)
    cloid = "0x" + "2" * 32
    with pytest.raises(OrderStatusUnknown) as err:
        client(expires_after_s=4.0).place_order("BTC", True, D("0.001"), D("50000"), cloid=cloid)
    assert err.value.cloid == cloid and err.value.expires_after_ms == WALL_MS + 4000
    assert len(exchange_bodies(responses.mock)) == 1  # sent once, never again here
    if answer.get("status") == 429:
        assert err.value.retry_after_s == 100.0


@responses.activate
def test_connect_failure_means_not_executed() -> None:
    responses.post(URL + "/info", json=META)
    responses.post(URL + "/exchange", body=requests.ConnectTimeout())
    with pytest.raises(NetworkError) as err:
        client().place_order("BTC", True, D("0.001"), D("50000"), cloid="0x" + "3" * 32)
    assert err.value.sent is False and not isinstance(err.value, ResultUnknown)


@responses.activate
def test_every_action_is_signed_with_expires_after() -> None:
    responses.post(URL + "/info", json=META)
    responses.post(URL + "/exchange", json=_ok_statuses({"resting": {"oid": 9}}))
    c = client(expires_after_s=5.0)
    c.place_order("BTC", True, D("0.001"), D("40000"), cloid="0x" + "4" * 32)
    body = exchange_bodies(responses.mock)[0]
    assert body["expiresAfter"] == WALL_MS + 5000
    expected = sign_l1_action(WALLET, body["action"], None, body["nonce"], WALL_MS + 5000, False)
    assert body["signature"] == expected


@pytest.mark.parametrize("bound_ms,signed_ms", [
    (None, WALL_MS + 5000),            # no bound: ours
    (WALL_MS + 60_000, WALL_MS + 5000),  # a later bound: ours
    (WALL_MS + 3000, WALL_MS + 3000),  # an earlier one (its record was made 2 s ago): the bound
])
@responses.activate
def test_an_order_is_never_signed_to_expire_after_its_records_bound(bound_ms: int | None, signed_ms: int) -> None:
    # The order's record promises the next start no later expiry than `expires_by_ms`.
    responses.post(URL + "/info", json=META)
    responses.post(URL + "/exchange", json=_ok_statuses({"resting": {"oid": 9}}))
    client(expires_after_s=5.0).place_order("BTC", True, D("0.001"), D("40000"), cloid="0x" + "4" * 32,
                                            expires_by_ms=bound_ms)
    body = exchange_bodies(responses.mock)[0]
    assert body["expiresAfter"] == signed_ms
    assert body["signature"] == sign_l1_action(WALLET, body["action"], None, body["nonce"], signed_ms, False)


@responses.activate
def test_an_order_whose_bound_has_passed_is_not_sent() -> None:
    responses.post(URL + "/info", json=META)
    with pytest.raises(HyperliquidError, match="not sent") as err:
        client().market_order("BTC", True, D("0.001"), D("1"), reference_px=D("50000"), cloid="0x" + "5" * 32,
                              expires_by_ms=WALL_MS)
    assert not isinstance(err.value, ResultUnknown)  # not executed: nothing went out
    assert exchange_bodies(responses.mock) == []


@responses.activate
def test_unreadable_cancel_answer_is_unknown() -> None:
    responses.post(URL + "/info", json=META)
    responses.post(URL + "/exchange", json={"status": "ok", "response": {"type": "cancel"}})
    with pytest.raises(ResultUnknown):
        client().cancel_by_cloid("BTC", "0x" + "5" * 32)


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
    c._meta = parse_meta(META)
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
    candles = [parse_candle(c) for c in _fixture("sdk_cassette_test_get_candles_snapshot.json")]
    assert candles and candles[0].high >= candles[0].low


@responses.activate
def test_redirect_is_rejected_never_followed() -> None:
    # Following a redirect would re-POST a signed action somewhere else.
    responses.post(URL + "/exchange", status=307, headers={"Location": "http://127.0.0.1:10/exchange"})
    responses.post("http://127.0.0.1:10/exchange", json={"status": "ok"})
    c = client()
    responses.post(URL + "/info", json=META)
    with pytest.raises(ResultUnknown, match="307"):  # after sending: not known, so never "failed"
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
    assert isinstance(c.exchange_line, RequestsLine)  # behind a proxy, requests, which knows proxies
    monkeypatch.setenv("NO_PROXY", "api.hyperliquid-testnet.xyz")
    direct = HyperliquidRestClient("https://api.hyperliquid-testnet.xyz")
    assert isinstance(direct.exchange_line, HttpLine) and direct.exchange_line.ca_bundle == str(bundle)
    assert isinstance(direct.info_line, HttpLine) and direct.info_line is not direct.exchange_line
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    default = HyperliquidRestClient("https://api.hyperliquid-testnet.xyz")
    assert default.exchange_line.ca_bundle == requests.utils.DEFAULT_CA_BUNDLE_PATH  # certifi, not the system's
