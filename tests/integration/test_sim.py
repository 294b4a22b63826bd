"""The simulator's own contract, from the outside: a plain websocket-client socket and `requests`
against SimServer on 127.0.0.1 (port 0), and the standalone `python -m hyperliquid_sim` process.

Covers what a client of the real exchange relies on: subscribe/unsubscribe acks and their errors,
the snapshots right after a subscribe, ping/pong, l2Book pushed only on change and at most every
interval, candle pushes on each print, the per-IP limits with the exchange's error texts, idle
close, replay of a recorded trade stream, and a control endpoint that answers loopback only.
Waits are on conditions with deadlines; the two "nothing arrives" checks wait a bounded window.
"""
from __future__ import annotations

import json
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal as D
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
import websocket
from eth_utils import to_checksum_address

from hyperliquid_sim import SimConfig, SimServer
from hyperliquid_sim.engine import parse_replay
from hyperliquid_sim.server import DESERIALIZE_ERROR, EXPIRED_ERROR
from signing import L1Signer, NonceClock

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_REPLAY = ROOT / "hyperliquid_sim" / "sample_replay.jsonl"
CANDLE_KEYS = {"t", "T", "s", "i", "o", "c", "h", "l", "v", "n"}


def user(n: int) -> str:
    return "0x" + format(n, "040x")


def wait_until(pred: Callable[[], Any], what: str, timeout_s: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s}s"
        time.sleep(0.01)  # poll step only; the deadline decides


class Socket:
    """One client connection; `seen` keeps every frame read, in order."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, timeout=5)
        self.seen: list[dict[str, Any]] = []
        self.closed = False

    def send(self, body: dict[str, Any]) -> None:
        self.ws.send(json.dumps(body))

    def _next(self, deadline: float) -> dict[str, Any] | None:
        """The next frame, or None once the server closed the connection."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.ws.settimeout(remaining)
        try:
            text = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            raise TimeoutError from None
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            text = ""
        if text == "":  # websocket-client's answer to a close frame
            self.closed = True
            return None
        frame = json.loads(text)
        self.seen.append(frame)
        return frame

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = 3.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                frame = self._next(deadline)
            except TimeoutError:
                raise AssertionError(f"{what}: not within {timeout_s}s; last frames {self.seen[-4:]}") from None
            if frame is None:
                raise AssertionError(f"{what}: connection closed; last frames {self.seen[-4:]}")
            if pred(frame):
                return frame

    def wait_closed(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.closed:
            try:
                self._next(deadline)
            except TimeoutError:
                raise AssertionError(f"still open after {timeout_s}s") from None

    def frames_within(self, seconds: float) -> list[dict[str, Any]]:
        """Everything that arrives in the next `seconds` (for checks that something does NOT come)."""
        deadline, got = time.monotonic() + seconds, []
        while True:
            try:
                frame = self._next(deadline)
            except TimeoutError:
                return got
            if frame is None:
                return got
            got.append(frame)

    def subscribe(self, sub: dict[str, Any]) -> None:
        self.send({"method": "subscribe", "subscription": sub})
        self.wait_for(lambda f: f["channel"] == "subscriptionResponse" and f["data"]["subscription"] == sub,
                      f"ack for {sub}")

    def error(self, what: str) -> str:
        return self.wait_for(lambda f: f["channel"] == "error", what)["data"]

    def close(self) -> None:
        self.ws.close(timeout=0.5)


def channel(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["channel"] == name


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimServer]]:
    servers: list[SimServer] = []

    def make(**over: Any) -> SimServer:
        server = SimServer(SimConfig(**{"port": 0, "seed": 11, "feed": False, **over}))
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def connect() -> Iterator[Callable[[SimServer], Socket]]:
    sockets: list[Socket] = []

    def make(sim: SimServer) -> Socket:
        sock = Socket(sim.ws_url)
        sockets.append(sock)
        return sock

    yield make
    for sock in sockets:
        sock.close()


# ---- subscribe, acks, snapshots, ping ----------------------------------------------------------

def test_acks_snapshots_ping_and_unsubscribe_stops_data(make_sim, connect) -> None:
    sim = make_sim(start_prices={"BTC": "50000"})
    ws = connect(sim)
    trades = {"type": "trades", "coin": "BTC"}
    ws.subscribe(trades)
    snapshot = ws.wait_for(channel("trades"), "recent-trades snapshot")
    assert len(snapshot["data"]) == 10 and all(t["coin"] == "BTC" for t in snapshot["data"])

    ws.send({"method": "subscribe", "subscription": trades})
    assert ws.error("a second subscribe") == 'Already subscribed: {"type":"trades","coin":"BTC"}'

    ws.send({"method": "ping"})
    ws.wait_for(channel("pong"), "pong")

    sim.set_price("BTC", "50100")
    live = ws.wait_for(channel("trades"), "a live trade")["data"]
    trade_keys = {"coin", "side", "px", "sz", "hash", "time", "tid", "users"}
    assert [(t["px"], set(t)) for t in live] == [("50100", trade_keys)]

    ws.send({"method": "unsubscribe", "subscription": trades})
    ws.wait_for(lambda f: f["channel"] == "subscriptionResponse" and f["data"]["method"] == "unsubscribe",
                "unsubscribe ack")
    mark = len(ws.seen)
    ws.subscribe({"type": "allMids"})
    sim.set_price("BTC", "50200")  # a print sends trades before allMids: any trade would show first
    mids = ws.wait_for(channel("allMids"), "allMids after the print")
    assert mids["data"]["mids"]["BTC"] == "50200"
    assert not [f for f in ws.seen[mark:] if f["channel"] == "trades"], "trades after unsubscribe"
    ws.send({"method": "unsubscribe", "subscription": trades})
    assert ws.error("a second unsubscribe") == 'Already unsubscribed: {"type":"trades","coin":"BTC"}'


def test_user_subscriptions_fund_the_user_and_userfills_starts_with_a_snapshot(make_sim, connect) -> None:
    sim = make_sim()
    ws = connect(sim)
    address = user(0xA1)
    assert to_checksum_address(address) not in sim.engine.accounts
    ws.subscribe({"type": "userFills", "user": address})
    first = ws.wait_for(channel("userFills"), "userFills snapshot")
    assert first["data"] == {"isSnapshot": True, "user": address, "fills": []}
    assert to_checksum_address(address) in sim.engine.accounts  # the faucet: named in a user subscription
    assert sim.account(address)["usdc"] == "10000"
    ws.subscribe({"type": "orderUpdates", "user": address})
    ws.subscribe({"type": "userEvents", "user": address})
    ws.send({"method": "ping"})
    after = ws.wait_for(channel("pong"), "pong")
    # orderUpdates and userEvents replay nothing: the pong is the next frame after their acks
    assert ws.seen[ws.seen.index(after) - 1]["channel"] == "subscriptionResponse"


# ---- the exchange's limits -------------------------------------------------------------------

def test_subscription_limit_counts_every_connection_of_the_ip(make_sim, connect) -> None:
    sim = make_sim(max_subscriptions=3)
    a, b = connect(sim), connect(sim)
    a.subscribe({"type": "trades", "coin": "BTC"})
    a.subscribe({"type": "bbo", "coin": "BTC"})
    b.subscribe({"type": "allMids"})
    b.send({"method": "subscribe", "subscription": {"type": "trades", "coin": "ETH"}})
    assert b.error("the fourth subscription") == "Cannot subscribe to more than 3 channels."
    a.send({"method": "unsubscribe", "subscription": {"type": "bbo", "coin": "BTC"}})
    a.wait_for(channel("subscriptionResponse"), "unsubscribe ack")
    b.subscribe({"type": "trades", "coin": "ETH"})  # room again
    assert sim.stats()["subscriptions"] == 3


def test_unique_user_limit_across_user_subscriptions(make_sim, connect) -> None:
    sim = make_sim(max_users=2)
    a, b = connect(sim), connect(sim)
    a.subscribe({"type": "userFills", "user": user(1)})
    a.subscribe({"type": "orderUpdates", "user": user(1)})  # the same user again: no new user
    b.subscribe({"type": "userEvents", "user": user(2)})
    b.subscribe({"type": "orderUpdates", "user": user(2).upper().replace("0X", "0x")})  # any case is that user
    b.send({"method": "subscribe", "subscription": {"type": "userFills", "user": user(3)}})
    assert b.error("a third user") == "Cannot track more than 2 total users."
    b.subscribe({"type": "trades", "coin": "BTC"})  # market data is not limited by users


def test_message_rate_limit_answers_on_the_error_channel_and_keeps_the_connection(make_sim, connect) -> None:
    sim = make_sim(max_messages_per_min=4)
    a, b = connect(sim), connect(sim)
    for _ in range(3):
        a.send({"method": "ping"})
        a.wait_for(channel("pong"), "pong within the budget")
    b.send({"method": "ping"})  # the budget is per IP: b spends the fourth
    b.wait_for(channel("pong"), "pong within the budget")
    a.send({"method": "ping"})
    assert a.error("the fifth message") == "Cannot send more than 4 messages per minute."
    b.send({"method": "subscribe", "subscription": {"type": "allMids"}})
    assert b.error("a subscribe over budget") == "Cannot send more than 4 messages per minute."
    assert not a.closed and not b.closed
    assert sim.stats()["subscriptions"] == 0  # the refused subscribe was not acted on


def test_connection_limit_refuses_the_next_socket_with_an_error(make_sim, connect) -> None:
    sim = make_sim(max_connections=2)
    a, b = connect(sim), connect(sim)
    a.send({"method": "ping"})
    a.wait_for(channel("pong"), "first connection works")
    extra = connect(sim)
    assert extra.error("the third connection") == "Cannot have more than 2 websocket connections."
    extra.wait_closed(3)
    assert sim.stats()["ws_connections_refused"] == 1
    b.close()
    wait_until(lambda: sim.stats()["connections"] == 1, "the server sees the close")
    again = connect(sim)
    again.send({"method": "ping"})
    again.wait_for(channel("pong"), "a connection once there is room")


# ---- periodic l2Book, candles on each print --------------------------------------------------

def test_l2book_is_pushed_only_on_change_and_at_most_every_interval(make_sim, connect) -> None:
    interval_s = 0.2
    sim = make_sim(book_interval_s=interval_s, start_prices={"BTC": "50000"})
    ws = connect(sim)
    ws.subscribe({"type": "l2Book", "coin": "BTC"})
    snap = ws.wait_for(channel("l2Book"), "l2Book snapshot after subscribe")["data"]
    bids, asks = snap["levels"]
    assert snap["coin"] == "BTC" and isinstance(snap["time"], int)
    assert 0 < len(bids) <= 20 and 0 < len(asks) <= 20
    assert all(set(level) == {"px", "sz", "n"} for level in bids + asks)
    assert [D(b["px"]) for b in bids] == sorted((D(b["px"]) for b in bids), reverse=True)
    assert [D(a["px"]) for a in asks] == sorted(D(a["px"]) for a in asks)
    assert D(bids[0]["px"]) < D("50000") < D(asks[0]["px"])

    assert not [f for f in ws.frames_within(3 * interval_s) if f["channel"] == "l2Book"], "push without a change"

    path = [str(50000 + 10 * i) for i in range(1, 41)]  # a new price every 20 ms for 0.8 s
    sim.move_price("BTC", path, interval_s=0.02)
    pushes = []
    while True:
        frame = ws.wait_for(channel("l2Book"), "l2Book pushes while the price moves")
        pushes.append((time.monotonic(), frame["data"]))
        if D(frame["data"]["levels"][0][0]["px"]) > D("50350"):
            break
    gaps = [later[0] - earlier[0] for earlier, later in zip(pushes, pushes[1:])]
    assert len(pushes) >= 2 and min(gaps) >= interval_s * 0.75, gaps  # 40 changes, far fewer pushes


def test_candle_snapshot_then_a_push_on_each_print(make_sim, connect) -> None:
    sim = make_sim(start_prices={"BTC": "50000"})
    ws = connect(sim)
    ws.subscribe({"type": "candle", "coin": "BTC", "interval": "1m"})
    snap = ws.wait_for(channel("candle"), "the current candle after subscribe")["data"]
    assert set(snap) == CANDLE_KEYS and snap["s"] == "BTC" and snap["i"] == "1m"
    assert snap["T"] == snap["t"] + 60_000 - 1 and snap["t"] % 60_000 == 0

    ws.subscribe({"type": "candle", "coin": "BTC", "interval": "5m"})
    ws.wait_for(lambda f: f["channel"] == "candle" and f["data"]["i"] == "5m", "5m snapshot")
    sim.set_price("BTC", "51000")
    pushed = {}
    while len(pushed) < 2:
        data = ws.wait_for(channel("candle"), "a candle push per subscribed interval")["data"]
        pushed[data["i"]] = data
    one = pushed["1m"]
    assert one["c"] == "51000" and D(one["h"]) >= D("51000") and set(one) == CANDLE_KEYS
    assert one["n"] == (snap["n"] + 1 if one["t"] == snap["t"] else 1)  # same bucket, or the next
    assert pushed["5m"]["c"] == "51000" and pushed["5m"]["T"] == pushed["5m"]["t"] + 300_000 - 1

    sim.set_price("BTC", "49000")
    low = ws.wait_for(lambda f: f["channel"] == "candle" and f["data"]["i"] == "1m", "the next push")["data"]
    assert low["c"] == "49000" and D(low["l"]) <= D("49000")
    assert low["n"] == (one["n"] + 1 if low["t"] == one["t"] else 1)

    ws.send({"method": "subscribe", "subscription": {"type": "candle", "coin": "BTC", "interval": "7m"}})
    assert ws.error("an unknown interval").startswith("Invalid subscription")


# ---- idle close ------------------------------------------------------------------------------

def test_idle_connection_is_closed_and_a_pinging_one_is_kept(make_sim, connect) -> None:
    sim = make_sim(idle_timeout_s=0.3)
    idle, busy = connect(sim), connect(sim)
    idle.subscribe({"type": "allMids"})  # data subscriptions do not count as activity
    stop = threading.Event()
    pongs: "queue.Queue[bool]" = queue.Queue()

    def keep_pinging() -> None:
        while not stop.wait(0.1):
            busy.send({"method": "ping"})
            busy.wait_for(channel("pong"), "pong")
            pongs.put(True)

    pinger = threading.Thread(target=keep_pinging, daemon=True)
    pinger.start()
    started = time.monotonic()
    idle.wait_closed(3)
    assert 0.2 <= time.monotonic() - started < 2.0
    for _ in range(8):  # 0.8 s of pings: well past the idle timeout
        pongs.get(timeout=2)
    stop.set()
    pinger.join(2)
    assert not busy.closed


# ---- replay ----------------------------------------------------------------------------------

def test_replay_prints_the_recording_in_order_with_its_spacing(make_sim, connect, tmp_path: Path) -> None:
    rows = [("BTC", "60000", "0.01", "B", 0), ("ETH", "3000.5", "0.1", "A", 100), ("BTC", "60010", "0.02", "A", 300),
            ("BTC", "59990", "0.5", "B", 500), ("ETH", "2999", "1", "B", 800)]
    recording = tmp_path / "trades.jsonl"
    base = 1_700_000_000_000
    recording.write_text("".join(json.dumps({"coin": c, "px": px, "sz": sz, "side": side, "time": base + dt}) + "\n"
                                 for c, px, sz, side, dt in rows) + "\n")
    speed = 2.0
    # paused until the client is subscribed, so no replayed trade goes out before
    sim = make_sim(replay_path=str(recording), replay_speed=speed, feed=False)
    ws = connect(sim)
    ws.subscribe({"type": "trades", "coin": "BTC"})
    ws.subscribe({"type": "trades", "coin": "ETH"})
    snapshot = ws.wait_for(lambda f: f["channel"] == "trades" and f["data"][0]["coin"] == "ETH", "ETH snapshot")
    assert snapshot["data"][-1]["px"] == "3000.5"  # the warm-up history ends at the recording's first price
    sim.resume_feed()
    got: list[tuple[float, dict[str, Any]]] = []
    while len(got) < len(rows):
        frame = ws.wait_for(lambda f: f["channel"] == "trades" and len(f["data"]) == 1, "replayed trades")
        got.append((time.monotonic(), frame["data"][0]))
    assert [(t["coin"], t["px"], t["sz"], t["side"]) for _, t in got] == [r[:4] for r in rows]
    span_s = got[-1][0] - got[0][0]
    assert 0.8 * 0.8 / speed <= span_s < 0.8 / speed + 0.5, span_s  # the recording's 0.8 s at 2x
    assert abs(got[0][1]["time"] - time.time() * 1000) < 5000  # stamped now, not in 2023
    mids = requests.post(sim.rest_url + "/info", json={"type": "allMids"}, timeout=5).json()
    assert (mids["BTC"], mids["ETH"]) == ("59990", "2999")
    assert sim.stats()["replayed_trades"] == len(rows)


def test_replay_file_errors_name_the_line_and_the_sample_parses(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"coin":"BTC","px":"1","sz":"1","side":"B","time":1}\n'
                   '{"coin":"DOGE","px":"1","sz":"1","side":"B","time":2}\n')
    with pytest.raises(ValueError, match="line 2"):
        SimServer(SimConfig(port=0, replay_path=str(bad))).start()
    with SAMPLE_REPLAY.open() as f:
        sample = parse_replay(f, ("BTC", "ETH", "SOL"))
    assert len(sample) >= 10 and {t.coin for t in sample} == {"BTC", "ETH"}


# ---- benchmark trades over several coins -------------------------------------------------------

def test_extra_coins_are_listed_and_emitted_trades_go_to_the_coins_in_turn(make_sim, connect) -> None:
    sim = make_sim(extra_coins={"TEST1": (2, 20, D("100"))})
    meta = requests.post(sim.rest_url + "/info", json={"type": "meta"}, timeout=5).json()
    assert [a["name"] for a in meta["universe"]] == ["BTC", "ETH", "SOL", "TEST1"]
    assert meta["universe"][3] == {"name": "TEST1", "szDecimals": 2, "maxLeverage": 20}
    sock = connect(sim)
    for coin in ("BTC", "TEST1"):
        sock.subscribe({"type": "trades", "coin": coin})
    tids = set(sim.emit_trades(["BTC", "TEST1"], 4)["tids"])
    got = [sock.wait_for(lambda f: f["channel"] == "trades" and f["data"][0]["tid"] in tids, "an emitted trade")
           for _ in range(4)]
    assert [(f["data"][0]["coin"], f["data"][0]["px"]) for f in got] == [("BTC", "50000"), ("TEST1", "100")] * 2


# ---- /exchange: expiresAfter -----------------------------------------------------------------

def _funded_signer(sim: SimServer) -> L1Signer:
    signer = L1Signer(bytes(range(1, 33)), is_mainnet=False)
    requests.post(sim.rest_url + "/info", json={"type": "clearinghouseState", "user": signer.address}, timeout=5)
    return signer


def _ioc_buy(n: int = 1) -> dict[str, Any]:
    """n IOC buys of 0.001 BTC that fill at once against the book around 50000."""
    return {"type": "order", "orders": [{"a": 0, "b": True, "p": "50500", "s": "0.001", "r": False,
                                         "t": {"limit": {"tif": "Ioc"}}}] * n, "grouping": "na"}


def _post_exchange(sim: SimServer, action: dict[str, Any], nonce: int, signature: dict[str, Any],
                   expires_after: Any) -> requests.Response:
    return requests.post(sim.rest_url + "/exchange", json={"action": action, "nonce": nonce, "signature": signature,
                                                           "vaultAddress": None, "expiresAfter": expires_after},
                         timeout=5)


def _btc_position(sim: SimServer, address: str) -> D:
    pos = sim.account(address)["positions"].get("BTC")
    return D(pos["szi"]) if pos else D(0)


def test_stale_expires_after_is_refused_unexecuted_and_costs_five_times_the_weight(make_sim) -> None:
    sim = make_sim()
    sim.set_price("BTC", "50000")
    signer, nonces = _funded_signer(sim), NonceClock()
    now_ms = time.time_ns() // 1_000_000

    nonce = nonces.next()
    stale = _post_exchange(sim, _ioc_buy(), nonce, signer.sign(_ioc_buy(), nonce, None, now_ms - 1000), now_ms - 1000)
    assert stale.status_code == 200 and stale.json() == {"status": "err", "response": EXPIRED_ERROR}
    assert _btc_position(sim, signer.address) == 0 and sim.account(signer.address)["fills"] == []
    stats = sim.stats()
    assert stats["expired_actions"] == 1 and stats["address_weight"] == {signer.address: 5}

    nonce = nonces.next()
    fresh = _post_exchange(sim, _ioc_buy(), nonce, signer.sign(_ioc_buy(), nonce, None, now_ms + 60_000),
                           now_ms + 60_000)
    assert fresh.json()["response"]["data"]["statuses"][0]["filled"]["totalSz"] == "0.001"
    assert _btc_position(sim, signer.address) == D("0.001")
    stats = sim.stats()
    assert stats["expired_actions"] == 1 and stats["address_weight"] == {signer.address: 6}

    nonce = nonces.next()  # a stale batch of two orders: 5x the batch's weight of 2
    batch = _post_exchange(sim, _ioc_buy(2), nonce, signer.sign(_ioc_buy(2), nonce, None, now_ms - 1), now_ms - 1)
    assert batch.json() == {"status": "err", "response": EXPIRED_ERROR}
    assert _btc_position(sim, signer.address) == D("0.001")
    stats = sim.stats()
    assert stats["expired_actions"] == 2 and stats["address_weight"] == {signer.address: 16}

    nonce = nonces.next()  # not a u64: the exchange's deserialize error, nothing counted
    garbled = _post_exchange(sim, _ioc_buy(), nonce, signer.sign(_ioc_buy(), nonce, None, None), str(now_ms + 60_000))
    assert garbled.status_code == 422 and garbled.text == DESERIALIZE_ERROR
    assert sim.stats()["address_weight"] == {signer.address: 16}


def test_the_signature_covers_expires_after(make_sim) -> None:
    sim = make_sim()
    sim.set_price("BTC", "50000")
    signer, nonces = _funded_signer(sim), NonceClock()
    expires = time.time_ns() // 1_000_000 + 60_000
    nonce = nonces.next()
    signature = signer.sign(_ioc_buy(), nonce, None, expires)
    for changed in (expires + 1, None):  # moved, or dropped, after signing
        answer = _post_exchange(sim, _ioc_buy(), nonce, signature, changed).json()
        recovered = sim.exchange_log()[-1]["user"]
        assert recovered != signer.address
        assert answer == {"status": "err", "response": f"User or API Wallet {recovered.lower()} does not exist."}
    assert _btc_position(sim, signer.address) == 0
    signed_as_sent = _post_exchange(sim, _ioc_buy(), nonce, signature, expires).json()
    assert signed_as_sent["status"] == "ok" and sim.exchange_log()[-1]["user"] == signer.address
    assert _btc_position(sim, signer.address) == D("0.001")
    assert sim.stats()["expired_actions"] == 0


# ---- control endpoint ------------------------------------------------------------------------

def _non_loopback_ipv4() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP connect sends nothing: it only picks the route's address
        except OSError:
            return None
        addr = s.getsockname()[0]
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def test_control_answers_loopback_only(make_sim) -> None:
    addr = _non_loopback_ipv4()
    if addr is None:
        pytest.skip("no non-loopback IPv4 address on this host")
    sim = make_sim(host="0.0.0.0")
    outside = f"http://{addr}:{sim.port}"
    refused = requests.post(outside + "/control", json={"op": "stats"}, timeout=5)
    assert refused.status_code == 403 and "loopback" in refused.text
    assert requests.post(outside + "/info", json={"type": "allMids"}, timeout=5).status_code == 200
    local = requests.post(f"http://127.0.0.1:{sim.port}/control", json={"op": "stats"}, timeout=5)
    assert local.status_code == 200 and "connections" in local.json()


# ---- standalone process ----------------------------------------------------------------------

def test_standalone_process_serves_replays_and_stops_cleanly_on_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "hyperliquid_sim", "--host", "127.0.0.1", "--port", "0",
                             "--replay", str(SAMPLE_REPLAY), "--replay-speed", "20"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: "queue.Queue[str]" = queue.Queue()
    stderr = proc.stderr
    assert stderr is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in stderr], daemon=True)
    reader.start()
    try:
        url, deadline = None, time.monotonic() + 10
        while url is None:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            found = re.search(r"simulator listening on (http://\S+)", line)
            url = found.group(1) if found else None
        meta = requests.post(url + "/info", json={"type": "meta"}, timeout=5).json()
        assert [a["name"] for a in meta["universe"]] == ["BTC", "ETH", "SOL"]
        with SAMPLE_REPLAY.open() as f:
            sample = parse_replay(f, ("BTC", "ETH"))
        final = {t.coin: str(t.px) for t in sample}
        deadline = time.monotonic() + 5
        while True:  # the sample is ~12 s long, under 1 s at 20x
            mids = requests.post(url + "/info", json={"type": "allMids"}, timeout=5).json()
            if all(mids[c] == px for c, px in final.items()):
                break
            assert time.monotonic() < deadline, f"replay did not end at {final}: {mids}"
            time.sleep(0.05)  # poll step
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(2)
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert any("simulator stopped" in line for line in rest)
