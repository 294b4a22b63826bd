"""The WebSocket client against a loopback server: drop, stall, refusal, garbage, lag, stop."""
from __future__ import annotations

import json
import queue
import threading
import time
from decimal import Decimal as D
from typing import Any, Callable

import pytest

from hyperliquid_websocket import HyperliquidWebSocketClient
from stream_events import Connected, Disconnected, Fill, StreamDown, StreamRecovered, SubscriptionFailed, Trade
from harness.fake_ws import FakeExchange

SUBS = [{"type": "bbo", "coin": "BTC"}, {"type": "trades", "coin": "BTC"}, {"type": "userFills", "user": "0x" + "1" * 40}]


def wait_until(pred: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout_s}s")


@pytest.fixture
def server():
    fake = FakeExchange().start()
    yield fake
    fake.stop()


def client_for(server: FakeExchange, q: queue.Queue, **kw: Any) -> HyperliquidWebSocketClient:
    opts = dict(reconnect_interval_s=0.05, max_backoff_s=0.2, max_reconnect_attempts=3, ping_interval_s=0.5,
                pong_timeout_s=0.5, data_timeout_s=1.0, subscribe_timeout_s=0.5, healthy_after_s=0.5)
    opts.update(kw)
    return HyperliquidWebSocketClient(server.url, SUBS, q, **opts)


def drain(q: queue.Queue) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def test_subscribes_trades_first_acks_and_streams(server: FakeExchange, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    q: queue.Queue = queue.Queue(100)
    client = client_for(server, q)
    client.start()
    try:
        wait_until(lambda: client.stats().subscriptions_confirmed == 3)
        assert server.subscribes[0] == {"type": "trades", "coin": "BTC"}
        server.trade("50000.5", 1)
        wait_until(lambda: any(type(e) is Trade for e in list(q.queue)))
        trade = next(e for e in drain(q) if type(e) is Trade)
        assert trade.price == D("50000.5")
        assert caplog.text.count("WebSocket connected successfully") == 1
        assert "✅ Subscribed to WebSocket trades for BTC" in caplog.text
        assert "userFills for 0x1111…1111" in caplog.text
    finally:
        client.stop()


def test_quiet_connection_is_kept_alive_with_pings(server: FakeExchange) -> None:
    q: queue.Queue = queue.Queue(100)
    client = client_for(server, q, ping_interval_s=0.2, data_timeout_s=2.0)
    client.start()
    try:
        wait_until(lambda: server.pings >= 3, 3)
        assert server.connections == 1 and client.stats().connected
    finally:
        client.stop()


def test_abrupt_drop_reconnects_and_resubscribes(server: FakeExchange, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    q: queue.Queue = queue.Queue(100)
    client = client_for(server, q)
    client.start()
    try:
        wait_until(lambda: client.stats().subscriptions_confirmed == 3)
        server.drop()
        wait_until(lambda: server.connections == 2 and client.stats().subscriptions_confirmed == 3)
        assert len(server.subscribes) == 6  # every subscription replayed
        server.trade("50001", 2)
        wait_until(lambda: any(type(e) is Trade for e in list(q.queue)))
        kinds = [type(e) for e in drain(q)]
        assert kinds.count(Connected) == 2 and Disconnected in kinds
        assert "WebSocket connection closed" in caplog.text and "Reconnecting in" in caplog.text
        assert client.stats().reconnects == 1
    finally:
        client.stop()


def test_silent_server_is_detected_and_reconnected(server: FakeExchange) -> None:
    q: queue.Queue = queue.Queue(100)
    client = client_for(server, q, ping_interval_s=0.3, pong_timeout_s=0.5, data_timeout_s=1.0)
    client.start()
    try:
        wait_until(lambda: client.stats().subscriptions_confirmed == 3)
        server.silent = True  # TCP stays open; no data, no pong
        started = time.monotonic()
        wait_until(lambda: any(type(e) is Disconnected for e in list(q.queue)), 3)
        assert time.monotonic() - started < 1.5
        reason = next(e for e in drain(q) if type(e) is Disconnected).reason
        assert "pong" in reason or "no message" in reason
        server.silent = False
        wait_until(lambda: server.connections >= 2 and client.stats().subscriptions_confirmed == 3, 5)
    finally:
        client.stop()


def test_refused_connections_signal_fallback_then_recovery(server: FakeExchange,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    server.refuse = True
    q: queue.Queue = queue.Queue(100)
    client = client_for(server, q, max_reconnect_attempts=3)
    client.start()
    try:
        down = wait_until(lambda: next((e for e in list(q.queue) if type(e) is StreamDown), None), 5)
        assert down.attempts == 3 and client.stats().fallback
        assert "Reconnecting in" in caplog.text and "(attempt 1/3)..." in caplog.text
        server.refuse = False
        wait_until(lambda: any(type(e) is StreamRecovered for e in list(q.queue)), 5)
        assert not client.stats().fallback
        assert [type(e) for e in drain(q)].count(StreamDown) == 1
    finally:
        client.stop()


def test_garbage_frames_never_crash_or_leak_bad_prices(server: FakeExchange) -> None:
    q: queue.Queue = queue.Queue(100)
    client = client_for(server, q)
    client.start()
    try:
        wait_until(lambda: client.stats().subscriptions_confirmed == 3)
        server.send("{oops")
        server.send(b"\x00\x01binary")
        server.send(json.dumps({"channel": "trades", "data": [{"coin": "BTC", "side": "B", "px": "-3", "sz": "1",
                                                               "time": 1, "tid": 5}]}))
        server.send(json.dumps({"channel": "nope", "data": {}}))
        server.send(json.dumps({"channel": "error", "data": "bad request"}))
        server.send("x" * (2 << 20))  # oversized
        server.trade("50000", 9)
        wait_until(lambda: any(type(e) is Trade for e in list(q.queue)))
        trades = [e for e in drain(q) if type(e) is Trade]
        assert [t.tid for t in trades] == [9]
        errors = client.stats().parse_errors
        assert {"malformed_json", "binary_frame", "bad_trade", "unknown_channel", "error_channel",
                "oversized_frame"} <= set(errors)
        assert client.stats().connected
    finally:
        client.stop()


def test_stuck_consumer_bounded_queue_keeps_fills_and_socket(server: FakeExchange) -> None:
    q: queue.Queue = queue.Queue(20)
    client = client_for(server, q, ping_interval_s=0.2, data_timeout_s=2.0)
    client.start()
    try:
        wait_until(lambda: client.stats().subscriptions_confirmed == 3)
        drain(q)
        for tid in range(200):
            server.trade("50000", tid)
        fill = {"coin": "BTC", "px": "50000", "sz": "0.01", "side": "B", "time": 1, "oid": 1, "tid": 999,
                "fee": "0.1", "closedPnl": "0", "dir": "Open Long", "crossed": True, "hash": "0x"}
        server.send(json.dumps({"channel": "userFills", "data": {"user": "0x1", "fills": [fill]}}))
        wait_until(lambda: client.stats().dropped_market_data >= 180 and client.stats().pending_priority == 1)
        pings_before = server.pings
        wait_until(lambda: server.pings > pings_before, 2)  # the socket is alive while the consumer is stuck
        assert q.qsize() == 20
        drained = drain(q)
        wait_until(lambda: not q.empty())
        drained += drain(q)
        assert any(type(e) is Fill and e.tid == 999 for e in drained)  # the fill was never dropped
        assert client.stats().connected
    finally:
        client.stop()


def test_unconfirmed_subscription_is_retried_reported_then_connection_renewed(server: FakeExchange) -> None:
    server.ack = False
    q: queue.Queue = queue.Queue(1000)
    client = client_for(server, q, subscribe_timeout_s=0.2, data_timeout_s=5, ping_interval_s=0.5)
    client.start()
    try:
        wait_until(lambda: sum(type(e) is SubscriptionFailed for e in list(q.queue)) >= 3, 3)
        assert server.subscribes[:6] == server.subscribes[:3] * 2  # each sent twice on the first connection
        # Pongs still flow, but a connection without its subscriptions is useless: it is renewed.
        wait_until(lambda: server.connections >= 2, 3)
        server.ack = True
        wait_until(lambda: client.stats().subscriptions_confirmed == 3, 5)
        assert client.stats().connected
    finally:
        client.stop()


def test_refused_user_subscription_is_reported_without_renewing_the_connection(server: FakeExchange) -> None:
    server.no_ack_types = {"userFills"}  # e.g. the server's 10-users limit: it will never confirm
    q: queue.Queue = queue.Queue(1000)
    client = client_for(server, q, subscribe_timeout_s=0.2, data_timeout_s=5, ping_interval_s=0.3)
    client.start()
    try:
        wait_until(lambda: any(type(e) is SubscriptionFailed for e in list(q.queue)), 3)
        pings = server.pings
        wait_until(lambda: server.pings >= pings + 2, 3)  # time passes on the same connection
        assert server.connections == 1 and client.stats().connected
        assert client.stats().subscriptions_confirmed == 2  # trades and bbo still flow
    finally:
        client.stop()


def test_quiet_market_is_not_a_dead_connection(server: FakeExchange) -> None:
    # No trade for longer than the data deadline: a ping on receive silence proves the socket alive.
    q: queue.Queue = queue.Queue(1000)
    client = client_for(server, q, data_timeout_s=1.0, ping_interval_s=30.0, pong_timeout_s=0.4)
    client.start()
    try:
        wait_until(lambda: client.stats().subscriptions_confirmed == 3)
        wait_until(lambda: server.pings >= 4, 5)  # > 2 s of silence from the market
        assert server.connections == 1
        assert not any(type(e) is Disconnected for e in list(q.queue))
    finally:
        client.stop()


def test_stop_during_backoff_is_quick_and_leaks_no_thread(server: FakeExchange) -> None:
    server.refuse = True
    q: queue.Queue = queue.Queue(100)
    client = client_for(server, q, reconnect_interval_s=30, max_backoff_s=60)
    client.start()
    wait_until(lambda: client.stats().consecutive_failures >= 1)
    started = time.monotonic()
    client.stop()
    assert time.monotonic() - started < 2.0
    assert not any(t.name == "hl-websocket" for t in threading.enumerate())


def test_wss_streams_bursts_and_big_frames_through_the_buffered_reader_and_reconnects(
        tls_files: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    # Production is wss://: frames come out of TLS records (<= 16 KB each), not raw TCP segments.
    import ssl
    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", str(cert))  # websocket-client's own trust setting
    fake = FakeExchange(context).start()
    q: queue.Queue = queue.Queue(10_000)
    client = client_for(fake, q, data_timeout_s=5.0)
    client.start()
    try:
        assert fake.url.startswith("wss://")
        wait_until(lambda: client.stats().subscriptions_confirmed == 3)
        big = "x" * 70_000  # one frame over four TLS records
        for tid in range(1, 501):
            fake.trade("50000", tid) if tid != 250 else fake.send(json.dumps({"channel": "trades", "data": [
                {"coin": "BTC", "side": "A", "px": "50001", "sz": "0.1", "hash": big, "time": 1, "tid": tid}]}))
        wait_until(lambda: client.stats().messages_received >= 504, 10)
        tids = [e.tid for e in drain(q) if isinstance(e, Trade)]
        assert tids == list(range(1, 501))
        fake.drop()
        wait_until(lambda: fake.connections == 2 and client.stats().subscriptions_confirmed == 3, 10)
        fake.trade("50002", 501)
        wait_until(lambda: any(isinstance(e, Trade) and e.tid == 501 for e in drain(q)), 5)
    finally:
        client.stop()
        fake.stop()


class FailOnce:
    """Wraps a client method: the first call after `arm()` raises `exc`, every other call goes through."""

    def __init__(self, method: Callable[..., Any], exc: Exception) -> None:
        self.method, self.exc, self.armed, self.raised = method, exc, False, 0

    def arm(self) -> None:
        self.armed = True

    def __call__(self, *args: Any) -> Any:
        if self.armed:
            self.armed = False
            self.raised += 1
            raise self.exc
        return self.method(*args)


def test_bug_in_frame_handling_is_counted_and_the_stream_reconnects(server: FakeExchange,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="websocket")
    q: queue.Queue = queue.Queue(100)
    client = client_for(server, q)
    bug = FailOnce(client._on_payload, RuntimeError("injected bug"))
    client._on_payload = bug  # type: ignore[method-assign]  # a per-frame method raising what nothing expects
    client.start()
    try:
        wait_until(lambda: client.stats().subscriptions_confirmed == 3)
        drain(q)
        bug.arm()
        server.trade("50000", 1)
        down = wait_until(lambda: next((e for e in list(q.queue) if type(e) is Disconnected), None))
        assert down.reason == "internal error: RuntimeError: injected bug"
        wait_until(lambda: server.connections == 2 and client.stats().subscriptions_confirmed == 3)
        server.trade("50001", 2)
        wait_until(lambda: any(type(e) is Trade and e.tid == 2 for e in list(q.queue)))
        stats = client.stats()
        assert client.is_alive() and not client.thread_died() and stats.connected
        assert stats.internal_errors == 1 and stats.reconnects == 1 and bug.raised == 1
        assert [type(e) for e in drain(q)].count(Connected) == 1  # the reconnect's
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and errors[0].exc_info is not None  # one traceback
        assert "WebSocket connection closed" in caplog.text
        assert "Error in WebSocket listener: internal error: RuntimeError: injected bug" in caplog.text
    finally:
        client.stop()
    assert not client.is_alive()


def test_bug_in_reconnect_bookkeeping_does_not_end_the_thread(server: FakeExchange) -> None:
    q: queue.Queue = queue.Queue(100)
    client = client_for(server, q)
    bug = FailOnce(client._mark_disconnected, KeyError("bookkeeping"))
    client._mark_disconnected = bug  # type: ignore[method-assign]  # runs between sessions
    client.start()
    try:
        wait_until(lambda: client.stats().subscriptions_confirmed == 3)
        bug.arm()
        server.drop()
        wait_until(lambda: bug.raised == 1)
        wait_until(lambda: server.connections == 2 and client.stats().subscriptions_confirmed == 3)
        server.trade("50000", 3)
        wait_until(lambda: any(type(e) is Trade and e.tid == 3 for e in list(q.queue)))
        assert client.is_alive() and client.stats().connected and client.stats().internal_errors == 1
    finally:
        client.stop()


def test_a_repeating_bug_logs_one_traceback_then_a_count_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="websocket")
    now = [1000.0]
    q: queue.Queue = queue.Queue(1000)
    client = HyperliquidWebSocketClient("ws://127.0.0.1:9/ws", SUBS, q, reconnect_interval_s=0.001,
                                        max_backoff_s=0.002, max_reconnect_attempts=10**9, clock=lambda: now[0])

    def broken_session(attempt: int) -> None:
        raise AttributeError("same bug every time")

    client._session = broken_session  # type: ignore[method-assign]
    client.start()
    try:
        wait_until(lambda: client.stats().internal_errors >= 20)
        now[0] += 61.0
        seen = client.stats().internal_errors
        wait_until(lambda: client.stats().internal_errors >= seen + 20)
        assert client.is_alive()
    finally:
        client.stop()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2, [r.getMessage() for r in errors]
    assert errors[0].exc_info is not None and errors[1].exc_info is None
    assert "repeated" in errors[1].getMessage()


def test_restarted_gives_a_fresh_working_client_with_the_same_settings(server: FakeExchange) -> None:
    q: queue.Queue = queue.Queue(100)
    old = client_for(server, q)
    old.start()
    wait_until(lambda: old.stats().subscriptions_confirmed == 3)
    server.drop()
    wait_until(lambda: old.stats().reconnects == 1 and old.stats().subscriptions_confirmed == 3)
    assert not old.thread_died()
    old.stop()
    assert not old.is_alive() and old.thread_died()
    new = old.restarted()
    assert new is not old and not new.is_alive() and not new.thread_died()
    assert (new.url, new.subscriptions, new.out, new.data_timeout_s) == (old.url, old.subscriptions, q, 1.0)
    assert new.stats().reconnects == 1
    drain(q)
    new.start()
    try:
        wait_until(lambda: new.stats().subscriptions_confirmed == 3)
        server.trade("50000", 4)
        wait_until(lambda: any(type(e) is Trade and e.tid == 4 for e in list(q.queue)))
        assert new.is_alive() and new.stats().connected and server.connections == 3
    finally:
        new.stop()
