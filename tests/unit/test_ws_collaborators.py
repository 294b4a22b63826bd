"""The socket thread's collaborators on their own: Liveness as a table, the subscription registry's
acknowledgement timeout, the emitter's shedding and priority backlog, the failure streak."""
from __future__ import annotations

import queue
from decimal import Decimal as D

import pytest

from stream_events import Connected, Disconnected, Trade, as_replay
from ws_counters import StreamCounters
from ws_emitter import EventEmitter
from ws_parts import Liveness
from ws_subscriptions import SubscriptionRegistry, describe

TRADES = {"type": "trades", "coin": "BTC"}
FILLS = {"type": "userFills", "user": "0x" + "1" * 40}


def trade(tid: int, time_ms: int = 1) -> Trade:
    return Trade("BTC", D("50000"), D("0.1"), "buy", time_ms, tid, 0)


# ---- Liveness: ping 30 s, pong 10 s, data 20 s (so a quiet 10 s asks for a ping) ----

@pytest.mark.parametrize("last_rx,ping_sent_at,now,failure,ping_due", [
    (0.0, None, 5.0, None, False),
    (0.0, None, 10.0, None, True),  # quiet for half the data deadline: a pong proves the socket
    (0.0, None, 20.5, "no message for 20.0s", None),
    (0.0, 10.0, 15.0, None, False),  # ping out, pong not due yet
    (0.0, 10.0, 20.1, "no message for 20.0s", None),
    (12.0, 10.0, 19.0, None, False),  # something came after the ping: answered
    (4.0, 5.0, 15.5, "no pong within 10.0s", None),  # nothing since the ping, 10.5 s ago
])
def test_liveness(last_rx: float, ping_sent_at: float | None, now: float, failure: str | None,
                  ping_due: bool | None) -> None:
    live = Liveness(0.0, 30.0, 10.0, 20.0)
    live.ping_sent_at = ping_sent_at
    assert live.failure(now, last_rx) == failure
    if ping_due is not None:
        assert live.ping_due(now) is ping_due


def test_liveness_pings_when_nothing_was_sent_for_the_interval() -> None:
    live = Liveness(0.0, 30.0, 10.0, 100.0)
    live.sent(10.0, ping=True)
    assert live.failure(35.0, 35.0) is None and not live.ping_due(35.0)
    assert live.ping_due(40.0)


# ---- SubscriptionRegistry ----

def test_trades_first_acknowledged_once_then_resent_then_given_up() -> None:
    reg = SubscriptionRegistry([FILLS, TRADES], timeout_s=5.0)
    assert reg.subscribe_all(0.0) == [TRADES, FILLS]
    assert reg.acknowledge({"method": "subscribe", "subscription": dict(TRADES)}) is not None
    assert reg.acknowledge({"method": "subscribe", "subscription": dict(TRADES)}) is None  # not awaited any more
    assert reg.acknowledge("nonsense") is None
    assert reg.overdue(4.9) == ([], [])
    assert reg.overdue(5.0) == ([FILLS], [])
    assert reg.overdue(9.9) == ([], [])
    assert reg.overdue(10.0) == ([], [FILLS]) and not reg.pending
    assert describe(FILLS) == "userFills for 0x1111…1111" and describe({"type": "allMids"}) == "allMids"


# ---- EventEmitter ----

def test_a_full_queue_sheds_market_data_and_keeps_the_rest_in_order() -> None:
    counters = StreamCounters(lambda: 0.0)
    q: queue.Queue = queue.Queue(1)
    emitter = EventEmitter(q, counters, lambda: 0.0)
    emitter.emit(trade(1))
    emitter.emit(trade(2))  # shed
    emitter.emit(Connected(1, 0))
    emitter.emit(Disconnected("x", 0))
    assert counters.dropped == 1 and len(emitter.backlog) == 2
    assert q.get_nowait() == trade(1)
    emitter.emit(trade(3))  # the backlog goes first; the queue is full again, so the trade is shed
    assert q.get_nowait() == Connected(1, 0) and counters.dropped == 2
    emitter.flush()
    assert q.get_nowait() == Disconnected("x", 0) and not emitter.backlog


# ---- StreamCounters: the failure streak ----

def test_a_healthy_session_starts_a_new_streak_and_recovery_ends_the_fallback() -> None:
    now = [100.0]
    counters = StreamCounters(lambda: now[0])
    assert [counters.session_failed(False) for _ in range(3)] == [1, 2, 3]
    assert counters.session_failed(True) == 1
    counters.fall_back()
    now[0] = 130.0
    assert counters.recover() == 30.0 and not counters.fallback and counters.failures == 0
    fresh = StreamCounters(lambda: now[0])
    counters.reconnected()
    fresh.carry_over(counters)
    assert fresh.reconnects == 1 and not fresh.connected


def test_a_replay_is_sorted_and_all_but_the_newest_marked() -> None:
    out = as_replay([trade(3, 30), trade(1, 10), trade(2, 10)])
    assert [(t.tid, t.replay) for t in out] == [(1, True), (2, True), (3, False)]
    assert as_replay([trade(9)]) == [trade(9)]
