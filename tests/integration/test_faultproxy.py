"""The fault proxy (harness/faultproxy.py) between plain HTTP clients and the real simulator.

Each fault is checked from both ends: what the client sees (status, garbage, reset, EOF, a slow
or absent answer) and what the simulator did (the order executed, or the request never reached
it). Waits are on conditions with deadlines; the two "still nothing" checks wait a bounded window.
"""
from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import threading
import time
from decimal import Decimal as D
from typing import Any, Callable, Iterator

import pytest
import requests

from hyperliquid_sim import SimConfig, SimServer
from signing import L1Signer, NonceClock
from harness.faultproxy import Fault, FaultProxy
from harness.waiting import wait_until

BTC = 0  # asset id in the simulator's universe
NONCES = NonceClock()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    server = SimServer(SimConfig(port=0, seed=7, feed=False))
    server.start()
    server.set_price("BTC", "50000")
    yield server
    server.stop()


@pytest.fixture
def proxy(sim: SimServer) -> Iterator[FaultProxy]:
    p = FaultProxy(upstream=sim.rest_url)
    p.start()
    yield p
    p.stop()


@pytest.fixture
def signer(sim: SimServer) -> L1Signer:
    """A fresh account with 10,000 USDC (the faucet funds an address named in a user query)."""
    s = L1Signer(os.urandom(32), is_mainnet=False)
    requests.post(sim.rest_url + "/info", json={"type": "clearinghouseState", "user": s.address}, timeout=5)
    return s


def order_body(signer: L1Signer, is_buy: bool = True, reduce_only: bool = False, size: str = "0.001",
               expires_after: int | None = None) -> dict[str, Any]:
    """A signed IOC that fills at once against the simulator's book around 50000."""
    action = {"type": "order", "orders": [{"a": BTC, "b": is_buy, "p": "50500" if is_buy else "49500", "s": size,
                                           "r": reduce_only, "t": {"limit": {"tif": "Ioc"}}}], "grouping": "na"}
    nonce = NONCES.next()
    return {"action": action, "nonce": nonce, "signature": signer.sign(action, nonce, None, expires_after),
            "vaultAddress": None, "expiresAfter": expires_after}


def post(url: str, body: dict[str, Any], path: str = "/exchange") -> requests.Response:
    return requests.post(url + path, data=json.dumps(body, separators=(",", ":")),
                         headers={"Content-Type": "application/json"}, timeout=10)


def raw_post(url: str, body: dict[str, Any], path: str = "/exchange",
             timeout_s: float = 10) -> tuple[int, bytes, http.client.HTTPResponse]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp
    finally:
        conn.close()


def position(sim: SimServer, address: str) -> D:
    pos = sim.account(address)["positions"].get("BTC")
    return D(pos["szi"]) if pos else D(0)


# ---- PASS ----------------------------------------------------------------------------------------

def test_pass_relays_info_unchanged_over_one_kept_alive_connection(sim: SimServer, proxy: FaultProxy) -> None:
    direct = requests.post(sim.rest_url + "/info", json={"type": "meta"}, timeout=5)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    answers = []
    for _ in range(3):
        conn.request("POST", "/info", body=b'{"type":"meta"}', headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        answers.append((resp.status, resp.getheader("Content-Type"), resp.read()))
        sock = conn.sock
        assert sock is not None  # http.client drops the socket when the server asks to close
    conn.close()
    assert answers == [(200, direct.headers["Content-Type"], direct.content)] * 3
    assert proxy.connections == 1
    assert proxy.log == [("/info", {"type": "meta"}, None, 200)] * 3


def test_pass_carries_a_signed_order_and_its_answer(sim: SimServer, proxy: FaultProxy, signer: L1Signer) -> None:
    # plain requests + signing: hyperliquid_rest is being rewritten alongside this file
    body = order_body(signer)
    resp = post(proxy.url, body)
    assert resp.status_code == 200
    statuses = resp.json()["response"]["data"]["statuses"]
    assert statuses[0]["filled"]["totalSz"] == "0.001"
    assert position(sim, signer.address) == D("0.001")
    entry = sim.exchange_log()[-1]
    assert entry["user"] == signer.address and entry["status"] == "ok"  # the signature still verified
    assert proxy.log == [("/exchange", body, None, 200)]


def test_pass_forwards_the_exact_body_bytes_and_content_type() -> None:
    seen: list[tuple[bytes, str | None]] = []

    class Echo(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            seen.append((self.rfile.read(int(self.headers["Content-Length"])), self.headers["Content-Type"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=upstream.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with FaultProxy(upstream=f"http://127.0.0.1:{upstream.server_address[1]}") as proxy:
            odd = b'{ "nonce" : 1,\n  "action": {"b": true, "a": 0}, "x": 1.50 }'
            resp = requests.post(proxy.url + "/exchange", data=odd,
                                 headers={"Content-Type": "application/json; charset=utf-8"}, timeout=5)
            assert resp.status_code == 200 and resp.content == b"{}"
    finally:
        upstream.shutdown()
        upstream.server_close()
    assert seen == [(odd, "application/json; charset=utf-8")]


# ---- after the upstream executed ---------------------------------------------------------------

def test_status_after_502_the_client_sees_502_and_the_order_executed(sim: SimServer, proxy: FaultProxy,
                                                                      signer: L1Signer) -> None:
    rule = proxy.inject("/exchange", Fault.STATUS_AFTER, status=502)
    body = order_body(signer)
    resp = post(proxy.url, body)
    assert resp.status_code == 502 and "502 Bad Gateway" in resp.text
    assert resp.headers["Content-Type"] == "text/html"
    assert position(sim, signer.address) == D("0.001")
    assert rule.hits == 1
    assert proxy.log[-1] == ("/exchange", body, "STATUS_AFTER", 200)


def test_garbage_after_answers_200_with_a_body_that_is_not_json(sim: SimServer, proxy: FaultProxy,
                                                                signer: L1Signer) -> None:
    proxy.inject("/exchange", Fault.GARBAGE_AFTER)  # default body: the first half of the real answer
    resp = post(proxy.url, order_body(signer))
    assert resp.status_code == 200 and resp.text.startswith('{"status":')
    with pytest.raises(ValueError):
        resp.json()
    assert position(sim, signer.address) == D("0.001")
    proxy.inject("/exchange", Fault.GARBAGE_AFTER, body="<html>oops")
    resp = post(proxy.url, order_body(signer))
    assert resp.status_code == 200 and resp.text == "<html>oops"
    assert position(sim, signer.address) == D("0.002")


@pytest.mark.parametrize("reset", [True, False], ids=["rst", "fin"])
def test_drop_after_closes_without_an_answer_and_the_order_executed(sim: SimServer, proxy: FaultProxy,
                                                                    signer: L1Signer, reset: bool) -> None:
    proxy.inject("/exchange", Fault.DROP_AFTER, reset=reset)
    with pytest.raises(ConnectionResetError) as caught:
        raw_post(proxy.url, order_body(signer))
    # RemoteDisconnected (a ConnectionResetError) is http.client's word for EOF before a status line
    assert isinstance(caught.value, http.client.RemoteDisconnected) is not reset
    assert position(sim, signer.address) == D("0.001")
    proxy.inject("/exchange", Fault.DROP_AFTER, reset=reset)
    with pytest.raises(requests.ConnectionError):  # the same through requests
        post(proxy.url, order_body(signer))
    assert position(sim, signer.address) == D("0.002")


def test_dribble_sends_the_real_answer_one_byte_at_a_time(sim: SimServer, proxy: FaultProxy) -> None:
    body = {"type": "perpDexs"}  # a short answer: `[null]`
    direct = requests.post(sim.rest_url + "/info", json=body, timeout=5)
    proxy.inject("/info", Fault.DRIBBLE, interval_s=0.02)
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    data = json.dumps(body).encode()
    sock.sendall(b"POST /info HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
    started, received, reads = time.monotonic(), b"", 0
    while not (received.endswith(direct.content) and b"\r\n\r\n" in received):
        chunk = sock.recv(4096)  # 2 s per read: never reached, one byte comes every 0.02 s
        assert chunk, f"closed after {received!r}"
        received += chunk
        reads += 1
    elapsed = time.monotonic() - started
    sock.close()
    head, answer = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and answer == direct.content == b"[null]"
    assert f"Content-Length: {len(answer)}".encode() in head.split(b"\r\n")
    assert reads > len(received) // 2  # it came in pieces, not in one read
    assert elapsed >= (len(received) - 1) * 0.02 * 0.9


# ---- no answer ---------------------------------------------------------------------------------

def test_hang_forwards_then_holds_the_answer_until_the_rule_is_cleared(sim: SimServer, proxy: FaultProxy,
                                                                       signer: L1Signer) -> None:
    rule = proxy.inject("/exchange", Fault.HANG)
    outcome: list[BaseException | int] = []

    def send() -> None:
        try:
            outcome.append(raw_post(proxy.url, order_body(signer), timeout_s=30)[0])
        except BaseException as exc:  # noqa: BLE001 (the test reads it)
            outcome.append(exc)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    wait_until(lambda: len(proxy.log) == 1, 5)
    assert proxy.log[0][2:] == ("HANG", 200) and position(sim, signer.address) == D("0.001")
    thread.join(0.3)  # a bounded window in which nothing may arrive
    assert thread.is_alive() and outcome == []
    proxy.clear(rule)
    thread.join(5)
    assert not thread.is_alive() and len(outcome) == 1 and isinstance(outcome[0], ConnectionError)


def test_stop_returns_promptly_with_a_request_hung_before_forwarding(sim: SimServer, signer: L1Signer) -> None:
    before = sim.stats()["info_requests"]
    proxy = FaultProxy(upstream=sim.rest_url)
    proxy.start()
    proxy.inject("/info", Fault.HANG, forward=False, count=None)
    outcome: list[BaseException | int] = []
    thread = threading.Thread(target=lambda: outcome.append(_try(lambda: raw_post(
        proxy.url, {"type": "meta"}, path="/info", timeout_s=30)[0])), daemon=True)
    thread.start()
    wait_until(lambda: len(proxy.log) == 1, 5)
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 3
    thread.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionError)
    assert proxy.log == [("/info", {"type": "meta"}, "HANG", None)]
    assert sim.stats()["info_requests"] == before


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BaseException as exc:  # noqa: BLE001 (the test reads it)
        return exc


# ---- before the upstream -----------------------------------------------------------------------

def test_status_before_429_with_retry_after_never_reaches_the_sim(sim: SimServer, proxy: FaultProxy,
                                                                  signer: L1Signer) -> None:
    log_before, stats_before = len(sim.exchange_log()), sim.stats()["exchange_requests"]
    proxy.inject("/exchange", Fault.STATUS_BEFORE, status=429, headers={"Retry-After": "100"}, body="slow down")
    body = order_body(signer)
    resp = post(proxy.url, body)
    assert (resp.status_code, resp.headers["Retry-After"], resp.text) == (429, "100", "slow down")
    assert len(sim.exchange_log()) == log_before and sim.stats()["exchange_requests"] == stats_before
    assert position(sim, signer.address) == D(0)
    assert proxy.log[-1] == ("/exchange", body, "STATUS_BEFORE", None)


def test_refuse_resets_the_connection_without_forwarding(sim: SimServer, proxy: FaultProxy,
                                                         signer: L1Signer) -> None:
    stats_before = sim.stats()["exchange_requests"]
    proxy.inject("/exchange", Fault.REFUSE)
    with pytest.raises(ConnectionResetError) as caught:
        raw_post(proxy.url, order_body(signer))
    assert not isinstance(caught.value, http.client.RemoteDisconnected)  # a reset, not an EOF
    assert sim.stats()["exchange_requests"] == stats_before and position(sim, signer.address) == D(0)


# ---- choosing requests -------------------------------------------------------------------------

def test_match_picks_only_reduce_only_orders(sim: SimServer, proxy: FaultProxy, signer: L1Signer) -> None:
    rule = proxy.inject("/exchange", Fault.STATUS_AFTER, status=503, count=None,
                        match=lambda b: any(o.get("r") for o in b.get("action", {}).get("orders", [])))
    opening = post(proxy.url, order_body(signer))
    assert opening.status_code == 200 and opening.json()["status"] == "ok" and rule.hits == 0
    assert position(sim, signer.address) == D("0.001")
    closing = post(proxy.url, order_body(signer, is_buy=False, reduce_only=True))
    assert closing.status_code == 503 and rule.hits == 1
    assert position(sim, signer.address) == D(0)  # the exit executed all the same


def test_match_on_an_info_query_type(sim: SimServer, proxy: FaultProxy, signer: L1Signer) -> None:
    proxy.inject("/info", Fault.STATUS_BEFORE, status=500, count=None,
                 match=lambda b: b.get("type") == "clearinghouseState")
    assert post(proxy.url, {"type": "meta"}, "/info").status_code == 200
    assert post(proxy.url, {"type": "clearinghouseState", "user": signer.address}, "/info").status_code == 500
    assert post(proxy.url, {"type": "openOrders", "user": signer.address}, "/info").status_code == 200
    assert [fault for _, _, fault, _ in proxy.log] == [None, "STATUS_BEFORE", None]


def test_count_limits_hits_and_none_lasts_until_cleared(proxy: FaultProxy) -> None:
    two = proxy.inject("/info", Fault.STATUS_BEFORE, status=500, count=2)
    statuses = [post(proxy.url, {"type": "meta"}, "/info").status_code for _ in range(3)]
    assert statuses == [500, 500, 200] and two.hits == 2
    forever = proxy.inject("/info", Fault.STATUS_BEFORE, status=503, count=None)
    statuses = [post(proxy.url, {"type": "meta"}, "/info").status_code for _ in range(3)]
    assert statuses == [503, 503, 503] and forever.hits == 3 and two.hits == 2
    proxy.clear()
    assert post(proxy.url, {"type": "meta"}, "/info").status_code == 200


def test_rules_are_consulted_in_order_and_paths_are_separate(proxy: FaultProxy) -> None:
    first = proxy.inject("/info", Fault.STATUS_BEFORE, status=500)
    second = proxy.inject("/info", Fault.STATUS_BEFORE, status=503)
    other = proxy.inject("/exchange", Fault.STATUS_BEFORE, status=429)
    statuses = [post(proxy.url, {"type": "meta"}, "/info").status_code for _ in range(3)]
    assert statuses == [500, 503, 200]
    assert (first.hits, second.hits, other.hits) == (1, 1, 0)
