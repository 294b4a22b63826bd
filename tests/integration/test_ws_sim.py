"""The WebSocket client against the simulator on 127.0.0.1: subscribe order, acks and replay flags;
abrupt drop; silent stall; refused connections -> StreamDown -> StreamRecovered; malformed frames;
a consumer stuck for 10 s while trades burst and fills arrive; stop() during backoff; many coins.

test_websocket.py proves the same rules on a tiny fake server; this file proves them against the
server the bot runs and is benchmarked on, with its real frames (trade snapshots, userFills
snapshots, fills from signed orders). Every wait is on a condition with a deadline; the one long
pause (the 10 s consumer stall the issue asks for) is spent checking that the socket stays alive.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from decimal import Decimal as D
from typing import Any, Callable, Iterator, Mapping, Sequence

import pytest

from hyperliquid_rest import HyperliquidRestClient
from hyperliquid_sim import SimServer
from hyperliquid_websocket import HyperliquidWebSocketClient, _RECV_POLL_S
from signing import L1Signer
from stream_events import (Bbo, Connected, Disconnected, Fill, Mids, OrderUpdate, StreamDown, StreamRecovered,
                           SubscriptionFailed, Trade)

THREAD = "hl-websocket-sim-test"
# Short timeouts so each fault plays out in about a second; individual tests override some.
FAST = dict(reconnect_interval_s=0.05, max_backoff_s=0.2, max_reconnect_attempts=3, ping_interval_s=0.3,
            pong_timeout_s=0.5, data_timeout_s=1.0, subscribe_timeout_s=0.5, healthy_after_s=0.5)
TRADES_BTC = {"type": "trades", "coin": "BTC"}
MakeClient = Callable[..., HyperliquidWebSocketClient]


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll `pred` until it returns something true; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s")
        time.sleep(0.01)  # poll step only; the deadline decides


class Consumer:
    """The bot's side of the queue: takes events in order and remembers every one it took."""

    def __init__(self, q: "queue.Queue[Any]") -> None:
        self.q = q
        self.seen: list[Any] = []

    def take(self, pred: Callable[[Any], bool], timeout_s: float, what: str) -> Any:
        """Read events until one matches `pred`; return it (the ones before it stay in `seen`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{what}: not within {timeout_s}s; last events: {self.seen[-5:]}")
            try:
                event = self.q.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            self.seen.append(event)
            if pred(event):
                return event

    def take_n(self, pred: Callable[[Any], bool], n: int, timeout_s: float, what: str) -> list[Any]:
        """Read events until `n` of them matched `pred`; return those."""
        found: list[Any] = []

        def enough(event: Any) -> bool:
            if pred(event):
                found.append(event)
            return len(found) == n
        self.take(enough, timeout_s, what)
        return found

    def first_per_coin(self, coins: set[str], timeout_s: float, what: str) -> dict[str, Trade]:
        """Read events until a Trade of each coin arrived; return the first of each."""
        first: dict[str, Trade] = {}

        def all_seen(event: Any) -> bool:
            if type(event) is Trade:
                first.setdefault(event.coin, event)
            return first.keys() >= coins
        self.take(all_seen, timeout_s, what)
        return first

    def drain(self) -> list[Any]:
        """Take whatever is queued now, without waiting."""
        got = []
        while True:
            try:
                got.append(self.q.get_nowait())
            except queue.Empty:
                self.seen.extend(got)
                return got


def is_(kind: type) -> Callable[[Any], bool]:
    return lambda e: type(e) is kind


def trade_tid(tid: int) -> Callable[[Any], bool]:
    return lambda e: type(e) is Trade and e.tid == tid


@pytest.fixture
def make_client(sim: SimServer) -> Iterator[MakeClient]:
    """Builds clients on the sim; at teardown stops them and checks their threads are gone."""
    clients: list[HyperliquidWebSocketClient] = []

    def make(subs: Sequence[Mapping[str, Any]], q: "queue.Queue[Any]", **kw: Any) -> HyperliquidWebSocketClient:
        client = HyperliquidWebSocketClient(sim.ws_url, subs, q, name=THREAD, **{**FAST, **kw})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.stop()
    assert not [t for t in threading.enumerate() if t.name == THREAD], "websocket thread outlived stop()"


def thread_alive() -> bool:
    return any(t.name == THREAD and t.is_alive() for t in threading.enumerate())


def replay_frame(c: Consumer, first: Trade) -> list[Trade]:
    """The trades parsed from the same frame as `first` (one frame shares one recv_ns), checked:
    the recent-trades replay right after subscribing. Every trade in it but the newest is flagged
    replay (history, for candles only); the newest is the current last price and is not.

    Call it once the client has confirmed a subscription acked after the trades one: frames are
    handled in order, so by then the whole replay frame is in the queue (not half of it)."""
    c.drain()
    frame = [e for e in c.seen if type(e) is Trade and e.coin == first.coin and e.recv_ns == first.recv_ns]
    newest = max(frame, key=lambda t: (t.time_ms, t.tid))
    assert len(frame) > 1, "the sim replays its recent trades after a trades subscribe"
    assert [t.replay for t in frame] == [t is not newest for t in frame], frame
    assert all(type(t.price) is D and t.price > 0 and type(t.size) is D for t in frame)
    return frame


def confirmed(client: HyperliquidWebSocketClient) -> bool:
    s = client.stats()
    return s.connected and s.subscriptions_confirmed == s.subscriptions_total


# ---- (1) subscribe, acks, Decimal prices, replay flag ------------------------------------------

def test_subscribes_trades_first_gets_every_ack_and_flags_the_replay_not_live_trades(
        sim: SimServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="websocket")
    q: queue.Queue = queue.Queue(200)
    c = Consumer(q)
    subs = [{"type": "bbo", "coin": "BTC"}, {"type": "allMids"}, TRADES_BTC]  # trades listed last on purpose
    client = make_client(subs, q)
    client.start()
    wait_until(lambda: confirmed(client), 3, "all three subscriptions acked")
    # The sim acks in the order it receives, so the ack log order is the subscribe order.
    acks = [r.getMessage() for r in caplog.records if "Subscribed to WebSocket" in r.getMessage()]
    assert acks == ["✅ Subscribed to WebSocket trades for BTC", "✅ Subscribed to WebSocket bbo for BTC",
                    "✅ Subscribed to WebSocket allMids"]
    assert sim.stats()["subscriptions"] == 3

    assert c.take(lambda e: True, 2, "first event").attempt == 1  # Connected comes first
    first = c.take(is_(Trade), 2, "the recent-trades replay")
    frame = replay_frame(c, first)
    assert [e for e in c.seen if type(e) is Trade] == frame  # nothing else has traded yet
    rest = HyperliquidRestClient(sim.rest_url)
    try:
        assert max(frame, key=lambda t: (t.time_ms, t.tid)).price == rest.mid("BTC")  # the newest is the last price
    finally:
        rest.close()

    tid = sim.set_price("BTC", "50123.5")["tid"]
    live = c.take(trade_tid(tid), 2, "the live trade")
    assert live.replay is False and live.price == D("50123.5") and type(live.price) is D
    assert live.coin == "BTC" and live.side in ("buy", "sell")
    bbo = c.take(is_(Bbo), 2, "the bbo after the print")
    assert bbo.bid is not None and bbo.ask is not None and bbo.bid < D("50123.5") < bbo.ask
    mids = c.take(is_(Mids), 2, "allMids after the print")
    assert mids.mids["BTC"] == D("50123.5")
    tid2 = sim.set_price("BTC", "50124")["tid"]
    assert c.take(trade_tid(tid2), 2, "a second live trade").replay is False
    assert not any(type(e) is SubscriptionFailed for e in c.seen)
    assert caplog.text.count("WebSocket connected successfully") == 1


# ---- (2) abrupt drop ----------------------------------------------------------------------------

def test_abrupt_drop_reconnects_resubscribes_and_replays_again(sim: SimServer, make_client: MakeClient) -> None:
    q: queue.Queue = queue.Queue(200)
    c = Consumer(q)
    client = make_client([TRADES_BTC, {"type": "bbo", "coin": "BTC"}], q)
    client.start()
    wait_until(lambda: confirmed(client), 3, "first acks")
    replay_frame(c, c.take(is_(Trade), 2, "replay on the first connection"))

    assert sim.drop_connections() == {"dropped": 1}  # TCP reset, no close frame
    assert c.take(is_(Disconnected), 3, "Disconnected after the drop").reason
    assert c.take(is_(Connected), 3, "a new connection").attempt == 2
    wait_until(lambda: confirmed(client) and sim.stats()["subscriptions"] == 2, 3, "resubscribed on the sim")
    # the first trades frame on the new connection is a replay again, not a run of live prices
    replay_frame(c, c.take(is_(Trade), 2, "replay on the new connection"))

    tid = sim.set_price("BTC", "50010")["tid"]
    live = c.take(trade_tid(tid), 2, "a live trade after the reconnect")
    assert not live.replay and live.price == D("50010")
    assert client.stats().reconnects == 1 and sim.stats()["connections"] == 1


# ---- (3) silent stall ---------------------------------------------------------------------------

@pytest.mark.parametrize("deadline,timeouts,reason", [
    # pongs stop: a ping goes unanswered (ping after <= 0.3 s, pong due 0.4 s later)
    ("pong", dict(ping_interval_s=0.3, pong_timeout_s=0.4, data_timeout_s=3.0), "no pong within 0.4s"),
    # nothing at all arrives for the data deadline (the pong deadline set longer on purpose)
    ("data", dict(ping_interval_s=0.3, pong_timeout_s=2.0, data_timeout_s=1.0), "no message for 1.0s"),
], ids=["pong-deadline", "data-deadline"])
def test_silent_stall_is_detected_within_the_deadline_and_recovers_after_unsilence(
        sim: SimServer, make_client: MakeClient, deadline: str, timeouts: dict[str, float], reason: str) -> None:
    q: queue.Queue = queue.Queue(200)
    c = Consumer(q)
    client = make_client([TRADES_BTC], q, max_reconnect_attempts=50, **timeouts)
    client.start()
    wait_until(lambda: confirmed(client), 3, "acks")
    c.take(is_(Trade), 2, "replay")
    quiet = client.stats().messages_received
    wait_until(lambda: client.stats().messages_received > quiet, 2, "a pong: the connection in steady state")

    silenced_ns = time.monotonic_ns()
    sim.silence()  # TCP stays up; no data, no pong, no ack
    disc = c.take(is_(Disconnected), 3, "the stall detected")
    assert disc.reason == reason
    detected_s = (disc.recv_ns - silenced_ns) / 1e9
    if deadline == "pong":
        due_s = timeouts["ping_interval_s"] + timeouts["pong_timeout_s"]
    else:
        due_s = timeouts["data_timeout_s"]
    # each deadline is checked once per socket read timeout (_RECV_POLL_S); a ping waits for one too
    assert detected_s < due_s + 2 * _RECV_POLL_S + 0.2, detected_s
    # while silent, new connections open but nothing is confirmed
    c.take(is_(Connected), 3, "a reconnect while the sim is silent")
    assert client.stats().subscriptions_confirmed == 0

    sim.unsilence()
    wait_until(lambda: confirmed(client), 5, "acks after unsilence")
    tid = sim.set_price("BTC", "50020")["tid"]
    live = c.take(trade_tid(tid), 2, "data flowing after unsilence")
    assert not live.replay and live.price == D("50020")


# ---- (4) refused connections -> StreamDown -> StreamRecovered -----------------------------------

def test_refused_connections_signal_stream_down_once_then_recovered(
        sim: SimServer, make_client: MakeClient,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="websocket")
    q: queue.Queue = queue.Queue(200)
    c = Consumer(q)
    client = make_client([TRADES_BTC], q, max_reconnect_attempts=3)
    client.start()
    wait_until(lambda: confirmed(client), 3, "acks")

    sim.refuse_connections(60)  # upgrades answered 503 until told otherwise
    sim.drop_connections()
    down = c.take(is_(StreamDown), 5, "StreamDown")
    assert down.attempts == 3 and "503" in down.reason, down
    assert client.stats().fallback and not client.stats().connected
    # it keeps trying while down, but says so once
    wait_until(lambda: client.stats().consecutive_failures >= 5, 5, "retries continue while down")
    assert caplog.text.count("WebSocket down after 3 consecutive failures") == 1

    sim.refuse_connections(0)  # the refusal window ends now: the sim accepts again
    recovered = c.take(is_(StreamRecovered), 5, "StreamRecovered")
    assert recovered.down_for_s > 0
    s = client.stats()
    assert not s.fallback and s.consecutive_failures == 0 and s.subscriptions_confirmed == 1
    kinds = [type(e) for e in c.seen]
    assert kinds.count(StreamDown) == 1 and kinds.count(StreamRecovered) == 1
    last_connect = len(kinds) - 1 - kinds[::-1].index(Connected)
    assert kinds.index(StreamDown) < last_connect < kinds.index(StreamRecovered)
    tid = sim.set_price("BTC", "50030")["tid"]
    assert c.take(trade_tid(tid), 2, "data after recovery").price == D("50030")


# ---- (5) malformed frames -----------------------------------------------------------------------

def test_malformed_frames_are_counted_and_no_bad_price_reaches_the_queue(
        sim: SimServer, make_client: MakeClient) -> None:
    q: queue.Queue = queue.Queue(200)
    c = Consumer(q)
    client = make_client([TRADES_BTC], q)
    client.start()
    wait_until(lambda: confirmed(client), 3, "acks")
    c.take(is_(Trade), 2, "snapshot")
    wait_until(lambda: not c.drain() and q.empty(), 2, "snapshot consumed")
    before = client.stats()

    sent = sim.send_malformed(count=3)["sent"]  # bad JSON, binary, bad/negative/missing px, unknown, error
    tid = sim.set_price("BTC", "50040")["tid"]  # same socket, after the garbage: once seen, all garbage was read
    mark = len(c.seen)
    live = c.take(trade_tid(tid), 3, "the good trade after the garbage")
    assert c.seen[mark:] == [live], "only the good trade came out of the garbage"
    assert live.price == D("50040")

    after = client.stats()
    assert after.parse_errors_total - before.parse_errors_total == sent  # every bad frame counted once
    assert {"malformed_json", "binary_frame", "bad_trade", "unknown_channel", "error_channel"} <= set(after.parse_errors)
    assert thread_alive() and after.connected and after.reconnects == 0  # garbage is not a reason to reconnect
    assert all(e.price > 0 and e.price.is_finite() for e in c.seen if type(e) is Trade)


# ---- (6) a consumer stuck for 10 s --------------------------------------------------------------

def test_consumer_stuck_10s_queue_bounded_socket_alive_every_fill_arrives(
        sim: SimServer, make_client: MakeClient,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="websocket")
    signer = L1Signer(os.urandom(32), is_mainnet=False)
    rest = HyperliquidRestClient(sim.rest_url, signer=signer)
    try:
        rest.clearinghouse_state(signer.address)  # the sim's faucet: a queried address gets 10,000 USDC
        capacity = 50
        q: queue.Queue = queue.Queue(capacity)
        c = Consumer(q)
        client = make_client([TRADES_BTC, {"type": "userFills", "user": signer.address},
                              {"type": "orderUpdates", "user": signer.address}], q,
                             ping_interval_s=0.5, pong_timeout_s=1.0, data_timeout_s=2.0)
        client.start()
        wait_until(lambda: confirmed(client), 3, "acks")
        c.take(is_(Trade), 2, "snapshot")
        wait_until(lambda: not c.drain() and q.empty(), 2, "queue empty before the stall")

        # From here the consumer reads nothing for 10 s.
        mark = len(c.seen)
        stall_until = time.monotonic() + 10.0
        burst, results = 0, []
        for _ in range(2):
            burst += sim.emit_trades("BTC", 1500)["sent"]
            for i in range(10):  # alternate buy/sell: each IOC fills at once -> one fill + one order update
                results += rest.market_order("BTC", i % 2 == 0, D("0.001"), D("1"))
        assert [r.kind for r in results] == ["filled"] * 20
        fill_tids = [f["tid"] for f in sim.account(signer.address)["fills"]]
        assert len(set(fill_tids)) == 20

        # The queue is full of the burst's first trades; the rest were shed and counted, while all
        # 40 fills and order updates wait in the client, none dropped.
        wait_until(lambda: client.stats().dropped_market_data == burst - capacity, 5, "every overflow counted")
        wait_until(lambda: client.stats().pending_priority == 40, 5, "fills and order updates held")
        assert q.qsize() == capacity
        assert caplog.text.count("consumer lagging: queue full") == 1  # rate-limited, not once per drop

        # The rest of the stall: nothing but pings and pongs, and they must keep the socket up.
        sim_in = sim.stats()["ws_messages_in"]
        polls = 0
        while time.monotonic() < stall_until:
            got = client.stats().messages_received
            wait_until(lambda: client.stats().messages_received > got, 2.0, "a pong while the consumer is stuck")
            s = client.stats()
            assert s.connected and s.reconnects == 0 and q.qsize() == capacity and s.pending_priority == 40
            polls += 1
        assert polls >= 5
        assert sim.stats()["ws_messages_in"] > sim_in and sim.stats()["connections"] == 1  # pings, same socket

        # The consumer wakes: every fill and order update comes through, in order.
        def all_delivered(_event: Any) -> bool:
            kinds = [type(e) for e in c.seen[mark:]]
            return kinds.count(Fill) == 20 and kinds.count(OrderUpdate) == 20
        c.take(all_delivered, 5, "all 20 fills and 20 order updates")
        stalled = c.seen[mark:] + c.drain()
        fills = [e for e in stalled if type(e) is Fill]
        updates = [e for e in stalled if type(e) is OrderUpdate]
        trades = [e for e in stalled if type(e) is Trade]
        assert [f.tid for f in fills] == fill_tids  # every fill, once, in order
        assert not any(f.is_snapshot for f in fills)
        assert len(updates) == 20 and all(u.status == "filled" for u in updates)
        assert len(trades) == capacity and len(trades) + client.stats().dropped_market_data == burst
        assert not any(type(e) in (Disconnected, Connected) for e in stalled)
        assert client.stats().pending_priority == 0
    finally:
        rest.close()


# ---- (7) stop() during backoff ------------------------------------------------------------------

def test_stop_during_reconnect_backoff_is_quick_and_leaks_no_thread(
        sim: SimServer, make_client: MakeClient,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="websocket")
    before = set(threading.enumerate())
    q: queue.Queue = queue.Queue(200)
    c = Consumer(q)
    client = make_client([TRADES_BTC], q, reconnect_interval_s=30.0, max_backoff_s=60.0)
    client.start()
    wait_until(lambda: confirmed(client), 3, "acks")
    sim.refuse_connections(60)
    sim.drop_connections()
    c.take(is_(Disconnected), 3, "Disconnected")
    wait_until(lambda: "Reconnecting in" in caplog.text, 2, "in the backoff wait (24-30 s)")

    started = time.monotonic()
    client.stop()
    assert time.monotonic() - started < 2.0
    assert not thread_alive()
    assert set(threading.enumerate()) - before == set()
    assert client.stats().connected is False


# ---- (8) several coins on one connection -------------------------------------------------------

def test_several_coins_share_one_connection(sim: SimServer, make_client: MakeClient) -> None:
    q: queue.Queue = queue.Queue(500)
    c = Consumer(q)
    coins = {"BTC": "50100", "ETH": "3001.5", "SOL": "151.25"}
    subs = [{"type": "trades", "coin": coin} for coin in coins] + [{"type": "bbo", "coin": "ETH"}, {"type": "allMids"}]
    client = make_client(subs, q)
    client.start()
    wait_until(lambda: confirmed(client), 3, "five acks")
    assert sim.stats()["connections"] == 1 and sim.stats()["subscriptions"] == 5

    first = c.first_per_coin(set(coins), 3, "a replay per coin")
    for trade in first.values():  # each coin's first trades frame is its own replay
        replay_frame(c, trade)

    tids = {sim.set_price(coin, px)["tid"]: coin for coin, px in coins.items()}
    mark = len(c.seen)
    live = {t.coin: t for t in c.take_n(lambda e: type(e) is Trade and e.tid in tids, 3, 3, "a live trade per coin")}
    for coin, px in coins.items():
        assert live[coin].price == D(px) and not live[coin].replay and tids[live[coin].tid] == coin
    assert [e for e in c.seen[mark:] if type(e) is Trade] == [live[coin] for coin in coins]  # no other trades
    mids = c.take(lambda e: type(e) is Mids and e.mids.get("SOL") == D("151.25"), 2, "allMids after the SOL print")
    assert mids.mids["ETH"] == D("3001.5") and mids.mids["BTC"] == D("50100")
    assert any(type(e) is Bbo and e.coin == "ETH" for e in c.seen)
    assert not any(type(e) is Bbo and e.coin != "ETH" for e in c.seen)
    assert client.stats().reconnects == 0 and sim.stats()["connections"] == 1
