"""The money path under a misbehaving exchange: the real bot, the real simulator, and a
fault-injecting proxy between them (harness/faultproxy.py) that mangles the answers after the
simulator has executed the action. The WebSocket goes to the simulator directly.

Each test is one failure seen in the field (issue 13): an entry executed behind a 502 or garbage
is never sent twice and is adopted at the fill price; an answer dribbled a byte at a time, or a
429 with a long Retry-After, does not hold the trading thread; an exit with a lost answer does not
leave a ghost position; a disk that refuses writes does not stop an exit; one bad reply or one
bad event does not end the loop; a dead socket thread is replaced; /health tells the truth.
"""
from __future__ import annotations

import os
import time
from decimal import Decimal as D
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

import health
import market
import protection
import stream_events as stream
import trading_bot
import unknown_orders
from hyperliquid_sim import SimServer
from harness.faultproxy import Fault, FaultProxy
from harness.bot import Harness, make_bot, orders_sent
from harness.waiting import wait_until

# Short deadlines and expiry so that a test settles an unknown order in about two seconds.
FAST_API = {"exchange_timeout_s": 1.0, "info_timeout_s": 1.0, "order_expires_after_s": 1.0}
EXCHANGE_EXITS = {"exits_on_exchange": True}


@pytest.fixture
def proxy(sim: SimServer):
    p = FaultProxy(upstream=sim.rest_url)
    p.start()
    yield p
    p.stop()


def proxied_bot(sim: SimServer, proxy: FaultProxy, tmp_path: Path, **over: Any) -> Harness:
    api = {"rest_url": proxy.url, "ws_url": sim.ws_url, **FAST_API}
    return make_bot(sim, tmp_path, api=api, **over)


def _ioc(body: dict, reduce_only: bool) -> bool:
    action = body.get("action") or {}
    return action.get("type") == "order" and any(
        "limit" in o["t"] and o["r"] is reduce_only for o in action.get("orders", []))


def is_entry(body: dict) -> bool:
    return _ioc(body, reduce_only=False)


def is_exit(body: dict) -> bool:
    return _ioc(body, reduce_only=True)


def is_trigger(tpsl: str) -> Callable[[dict], bool]:
    return lambda body: (body.get("action") or {}).get("type") == "order" and any(
        o["t"].get("trigger", {}).get("tpsl") == tpsl for o in body["action"]["orders"])


def info_type(kind: str) -> Callable[[dict], bool]:
    return lambda body: body.get("type") == kind


def sim_position(sim: SimServer, h: Harness) -> tuple[D, D]:
    """(signed size, entry price) of BTC on the simulator's books."""
    pos = sim.account(h.bot.address)["positions"].get("BTC")
    return (D(pos["szi"]), D(pos["entryPx"])) if pos else (D(0), D(0))


def entries_executed(sim: SimServer) -> int:
    return sum(1 for e in orders_sent(sim) for o in e["action"]["orders"]
               if "limit" in o["t"] and not o["r"] and e.get("status") == "ok")


def open_long(sim: SimServer, h: Harness) -> None:
    """always_long enters at 50000."""
    sim.set_price("BTC", "50000")
    wait_until(lambda: h.trader.position is not None, 10, h.step)


class StepTimer:
    """Steps the bot and remembers the longest step: the trading thread's longest wait."""

    def __init__(self, h: Harness) -> None:
        self.h, self.longest_s = h, 0.0

    def __call__(self) -> None:
        t0 = time.monotonic()
        self.h.step()
        self.longest_s = max(self.longest_s, time.monotonic() - t0)


NESTED = "[" * 100_000 + "]" * 100_000
ODD_STATUS = '{"status": "ok", "response": {"type": "order", "data": {"statuses": ["waitingForFill"]}}}'
ZERO_FILL = ('{"status": "ok", "response": {"type": "order", "data": {"statuses": '
             '[{"filled": {"totalSz": "0", "avgPx": "0", "oid": 1}}]}}}')
# REST-only runs (no stream): no fill event comes to the rescue, the REST path alone must hold.
REST_ONLY = {"websocket": {"enabled": False}, "check_interval": 0.2}


@pytest.mark.parametrize("fault,status,body,over", [
    (Fault.STATUS_AFTER, 502, None, {}),
    (Fault.GARBAGE_AFTER, 200, None, {}),
    (Fault.DROP_AFTER, 502, None, {}),
    (Fault.STATUS_AFTER, 502, None, REST_ONLY),
    (Fault.STATUS_AFTER, 200, NESTED, REST_ONLY),
    (Fault.STATUS_AFTER, 200, ODD_STATUS, REST_ONLY),
    (Fault.STATUS_AFTER, 200, ZERO_FILL, REST_ONLY),
], ids=["502", "garbage", "dropped", "502-rest-only", "nested-json-rest-only", "odd-status-rest-only",
        "zero-fill-rest-only"])
def test_entry_executed_behind_a_bad_answer_is_adopted_not_sent_again(
        sim: SimServer, proxy: FaultProxy, tmp_path: Path, fault: Fault, status: int, body: str | None,
        over: dict) -> None:
    # Failure 1: an executed entry answered by a 502 (or garbage, or a dropped connection) was
    # taken as failed and sent again every second: 23 entries, 4.6x the position cap, no stops.
    rule = proxy.inject("/exchange", fault, status=status, body=body, count=1, match=is_entry)
    h = proxied_bot(sim, proxy, tmp_path, trading=EXCHANGE_EXITS, **over)
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: rule.hits == 1, 10, h.step)
        wait_until(lambda: h.trader.position is not None and not h.bot.executor.unknown, 10, h.step)
        size, entry_px = sim_position(sim, h)
        assert entries_executed(sim) == 1  # never sent twice
        assert (h.trader.position.side, h.trader.position.size, h.trader.position.entry_px) == ("long", size, entry_px)
        assert len(h.trader.position.protective_cloids) == 2  # the adopted position is protected
        h.bot.publish_health()
        assert h.bot.health_snapshot()["position"]["size"] == float(size)
    finally:
        h.close()


def test_a_restart_with_a_shorter_expiry_waits_for_the_expiry_the_order_was_signed_with(
        sim: SimServer, proxy: FaultProxy, tmp_path: Path) -> None:
    # The last run signed its entry to expire in 8 s; a 502 came back before the exchange saw it,
    # and the run stopped with the order in doubt. The operator then lowered the expiry to 1 s. A
    # copy of the signed order still on its way arrives 4 s after it was made, and fills: until its
    # own 8 s have passed the next run must not take "unknownOid" to mean it never will.
    key = os.urandom(32)
    rule = proxy.inject("/exchange", Fault.STATUS_BEFORE, status=502, count=1, match=is_entry)
    first = make_bot(sim, tmp_path, key=key, api={**FAST_API, "rest_url": proxy.url, "ws_url": sim.ws_url,
                                                  "order_expires_after_s": 8.0})
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: rule.hits == 1, 10, first.step)
    finally:
        first.close()
    (held,) = [body for _, body, fault, _ in proxy.log if fault == Fault.STATUS_BEFORE.name]
    cloid = held["action"]["orders"][0]["c"]
    second = proxied_bot(sim, proxy, tmp_path, key=key)  # FAST_API: order_expires_after_s 1.0
    try:
        record = second.store.order(cloid)
        assert record.status == "unknown" and record.expires_within_ms == 8000
        assert held["expiresAfter"] <= record.expires_by_ms == record.created_ms + 8000
        # Past the moment the new config's 1 s (and the margin) would have given it up:
        gave_up_ms = record.created_ms + 1000 + unknown_orders.EXPIRY_MARGIN_MS
        wait_until(lambda: wall_ms() >= gave_up_ms + 1000, 10, second.step)
        assert cloid in second.bot.executor.unknown and second.store.order(cloid).status == "unknown"
        assert entries_executed(sim) == 0 and second.trader.position is None  # no other entry meanwhile
        assert wall_ms() < held["expiresAfter"] - 1000
        answer = requests.post(sim.rest_url + "/exchange", json=held, timeout=5).json()  # the late copy
        assert "filled" in answer["response"]["data"]["statuses"][0]
        wait_until(lambda: second.store.order(cloid).status == "filled" and second.trader.position is not None
                   and not second.bot.executor.unknown, 15, second.step)
        assert entries_executed(sim) == 1  # that copy only: never a second entry
        assert second.trader.position.size == sim_position(sim, second)[0]
    finally:
        second.close()


def test_every_order_is_signed_to_expire_by_the_bound_its_record_keeps(
        sim: SimServer, proxy: FaultProxy, tmp_path: Path) -> None:
    # Entry, SL, TP and the exit (on its reserved cloid): what the next start reads is never earlier.
    h = proxied_bot(sim, proxy, tmp_path, trading=EXCHANGE_EXITS)
    try:
        open_long(sim, h)
        sim.set_price("BTC", "49000")  # through the 1 % stop
        wait_until(lambda: h.trader.position is None, 10, h.step)
        signed = [(body["action"]["orders"][0], body["expiresAfter"]) for path, body, _, _ in proxy.log
                  if path == "/exchange" and body["action"]["type"] == "order"]
        kinds = sorted("exit" if o["r"] and "limit" in o["t"] else o["t"].get("trigger", {}).get("tpsl", "entry")
                       for o, _ in signed)
        assert kinds == ["entry", "exit", "sl", "tp"]
        for wire, expires_after in signed:
            record = h.store.order(wire["c"])
            assert record.expires_within_ms == 1000  # FAST_API
            assert expires_after <= record.expires_by_ms
    finally:
        h.close()


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def test_lost_answer_is_booked_at_the_fill_price_not_the_limit(
        sim: SimServer, proxy: FaultProxy, tmp_path: Path) -> None:
    # Failure 2: a lost answer resolved by the cloid lookup was booked at the order's limit price
    # (0.5 % off): the stop went above the market and stopped out at once.
    rule = proxy.inject("/exchange", Fault.DROP_AFTER, count=1, match=is_entry)
    h = proxied_bot(sim, proxy, tmp_path)
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: rule.hits == 1, 10, h.step)
        wait_until(lambda: h.trader.position is not None and not h.bot.executor.unknown, 10, h.step)
        entry_order = next(o for e in orders_sent(sim) for o in e["action"]["orders"] if not o["r"])
        _, fill_px = sim_position(sim, h)
        assert h.trader.position.entry_px == fill_px != D(entry_order["p"])
        record = h.bot.store.order(entry_order["c"])
        assert record.status == "filled" and record.avg_px == fill_px and record.filled_size == h.trader.position.size
        sim.set_price("BTC", "50010")  # a tick: the position stays (its stop is below the fill)
        wait_until(lambda: h.trader.current_price == D("50010"), 5, h.step)
        assert h.trader.position is not None
    finally:
        h.close()


def test_dribbled_exit_answer_does_not_hold_the_trading_thread(
        sim: SimServer, proxy: FaultProxy, tmp_path: Path) -> None:
    # Failure 3: an answer dribbled a byte every 3 s held the thread for 50 s (timeouts per read).
    h = proxied_bot(sim, proxy, tmp_path)
    timer = StepTimer(h)
    try:
        open_long(sim, h)
        rule = proxy.inject("/exchange", Fault.DRIBBLE, interval_s=0.5, count=1, match=is_exit)
        crash_at = time.monotonic()
        sim.set_price("BTC", "48000")  # 4 % down: through the 1 % stop
        wait_until(lambda: h.trader.position is None, 6, timer)
        assert rule.hits == 1
        assert timer.longest_s < 2.0  # the 1 s deadline, plus a position check
        assert time.monotonic() - crash_at < 5.0
        assert sim_position(sim, h)[0] == 0
    finally:
        h.close()


def test_info_429_with_long_retry_after_never_sleeps_the_loop(
        sim: SimServer, proxy: FaultProxy, tmp_path: Path) -> None:
    # Failure 4: a 429 with Retry-After: 100 during reconciliation slept the trading thread ~115 s.
    h = proxied_bot(sim, proxy, tmp_path)
    timer = StepTimer(h)
    try:
        open_long(sim, h)
        rule = proxy.inject("/info", Fault.STATUS_BEFORE, status=429, headers={"Retry-After": "100"}, count=None)
        h.bot.want_check("test: reconcile")
        wait_until(lambda: rule.hits >= 1, 5, timer)
        sim.set_price("BTC", "48900")  # 2.2 % through the stop
        wait_until(lambda: h.trader.position is None, 5, timer)
        assert timer.longest_s < 1.5
        assert rule.hits == 1  # /info paused as a timer, not hammered
        assert h.bot.gate.hold_until - time.monotonic() > 20  # the Retry-After, capped at 30 s
    finally:
        h.close()


def test_health_turns_degraded_while_exits_fail_and_when_the_loop_stalls(
        sim: SimServer, proxy: FaultProxy, tmp_path: Path) -> None:
    # Failure 5: /health answered 200 ok from a frozen snapshot while the loop was stuck, and
    # while exits failed again and again.
    h = proxied_bot(sim, proxy, tmp_path)
    try:
        open_long(sim, h)
        h.bot.publish_health()
        now = time.monotonic()
        assert health.render(h.bot.health_snapshot(), now)[0] == 200
        assert health.render(h.bot.health_snapshot(), now + 6.0)[1]["status"] == "degraded"  # no publish for 6 s
        proxy.inject("/exchange", Fault.STATUS_BEFORE, status=503, count=None, match=is_exit)
        sim.set_price("BTC", "49000")
        wait_until(lambda: h.trader.exit_failures >= 2, 10, h.step)
        h.bot.publish_health()
        code, body = health.render(h.bot.health_snapshot(), time.monotonic())
        assert code == 503 and any("exits failing" in r for r in body["reasons"])
        proxy.clear()
        wait_until(lambda: h.trader.position is None, 5, h.step)  # retried within 2 s once it recovers
        h.bot.publish_health()
        assert health.render(h.bot.health_snapshot(), time.monotonic())[0] == 200
    finally:
        h.close()


def refuse_writes(h: Harness, refuse: bool) -> None:
    """SQLite refusing every write, as on a read-only mount or a full disk."""
    h.store.db.execute(f"PRAGMA query_only = {1 if refuse else 0}")


def test_unwritable_state_never_stops_an_exit_and_is_written_when_back(
        sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Failures 6 and 10: the high-water save ran before the exit decision and raised on a full
    # disk (the bot died with the position open); a take-profit on a new high waited for it.
    h = make_bot(sim, tmp_path)
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None and h.trader.exit_cloid is not None and h.store.fills(), 10, h.step)
        order_of_events: list[str] = []  # from here on: the exit's story

        def spy(owner: Any, name: str, what: str) -> None:
            real = getattr(owner, name)
            monkeypatch.setattr(owner, name, lambda *a, **kw: order_of_events.append(what) or real(*a, **kw))
        spy(h.bot.executor.exchange, "market_order", "sent")
        for write in ("save_position", "clear_position", "save_order", "record_fill"):
            spy(h.bot.store, write, write)
        refuse_writes(h, True)
        sim.set_price("BTC", "52600")  # a new high through the 5 % take-profit, in one print
        wait_until(lambda: h.trader.position is None, 5, h.step)
        assert order_of_events[0] == "sent"  # decided and sent before any write was tried
        h.bot.publish_health()
        code, body = health.render(h.bot.health_snapshot(), time.monotonic())
        assert code == 503 and any("state not writable" in r for r in body["reasons"])
        refuse_writes(h, False)
        wait_until(lambda: h.bot.store.writable, 5, h.step)
        assert h.store.load_position("BTC") is None  # the close reached the disk once it was back
    finally:
        h.close()


def test_unwritable_state_at_start_exits_2_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    config = tmp_path / "config.json"
    config.write_text('{"network": "local", "state": {"path": "%s"}, "health": {"enabled": false}, '
                      '"logging": {"file": "%s"}}' % (blocker / "bot.db", tmp_path / "bot.log"))
    assert trading_bot.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(blocker) in err and "Traceback" not in err


def test_malformed_info_answers_do_not_end_the_loop(sim: SimServer, proxy: FaultProxy, tmp_path: Path) -> None:
    # Failure 7: a malformed /info body raised KeyError/TypeError from a parser and ended run().
    h = proxied_bot(sim, proxy, tmp_path)
    try:
        open_long(sim, h)
        rule = proxy.inject("/info", Fault.STATUS_BEFORE, status=200, count=3, match=info_type("clearinghouseState"),
                            headers={"Content-Type": "application/json"},
                            body='{"assetPositions": [{"position": {"coin": "BTC", "szi": "oops"}}]}')
        h.bot.want_check("test")
        wait_until(lambda: rule.hits >= 1, 5, h.step)
        sim.set_price("BTC", "49000")
        wait_until(lambda: h.trader.position is None, 5, h.step)  # still trading
    finally:
        h.close()


def test_a_bad_event_is_logged_and_counted_and_the_loop_goes_on(
        sim: SimServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    h = make_bot(sim, tmp_path)
    try:
        open_long(sim, h)

        def broken_handler(fill: Any) -> None:
            raise KeyError("a handler bug")
        monkeypatch.setattr(h.bot.reconciler, "on_fill", broken_handler)
        h.bot.events.put(stream.Fill("BTC", D("50000"), D("0.004"), "buy", 1, 11, 987655, None, D(0), D(0),
                                     "Open Long", D(0), True, False, 0))
        wait_until(lambda: h.bot.handler_errors == 1, 5, h.step)
        assert "a handler bug" in caplog.text and "Traceback" in caplog.text
        sim.set_price("BTC", "49000")
        wait_until(lambda: h.trader.position is None, 5, h.step)  # the loop went on trading
    finally:
        h.close()


def test_a_dead_socket_thread_is_replaced(sim: SimServer, tmp_path: Path) -> None:
    # Failure 8: the socket thread died on an unexpected exception; nothing noticed, ever.
    h = make_bot(sim, tmp_path)
    try:
        old = h.bot.ws
        old.stop()  # the thread ends; the loop did not ask for it
        wait_until(lambda: h.bot.ws is not old and h.bot.ws_restarts == 1, 5, h.step)
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)  # prices flow on the new thread
    finally:
        h.close()


def test_exit_with_lost_answer_leaves_no_ghost_position(sim: SimServer, proxy: FaultProxy, tmp_path: Path) -> None:
    # Failure 9: an exit whose answer was lost left a ghost position for up to 60 s, and exit
    # retries backed off to 30 s.
    h = proxied_bot(sim, proxy, tmp_path)
    try:
        open_long(sim, h)
        rule = proxy.inject("/exchange", Fault.STATUS_AFTER, status=502, count=1, match=is_exit)
        crash_at = time.monotonic()
        sim.set_price("BTC", "49000")
        wait_until(lambda: h.trader.position is None, 3, h.step)
        assert rule.hits == 1 and time.monotonic() - crash_at < 3.0
        assert sim_position(sim, h)[0] == 0
    finally:
        h.close()


def test_exit_retries_back_off_to_at_most_two_seconds(sim: SimServer, proxy: FaultProxy, tmp_path: Path) -> None:
    h = proxied_bot(sim, proxy, tmp_path)
    try:
        open_long(sim, h)
        proxy.inject("/exchange", Fault.STATUS_BEFORE, status=503, count=None, match=is_exit)
        sim.set_price("BTC", "49000")
        wait_until(lambda: h.trader.exit_failures >= 5, 15, h.step)
        assert h.trader.next_exit_attempt - time.monotonic() <= market.EXIT_RETRY_MAX_S
        proxy.clear()
        recovered_at = time.monotonic()
        wait_until(lambda: h.trader.position is None, 5, h.step)
        assert time.monotonic() - recovered_at <= market.EXIT_RETRY_MAX_S + 1.0
    finally:
        h.close()


@pytest.mark.parametrize("fault", [Fault.STATUS_BEFORE, Fault.STATUS_AFTER])
def test_a_stop_loss_in_doubt_is_looked_up_and_placed_again_only_if_it_never_arrived(
        sim: SimServer, proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: Fault) -> None:
    # A 502 for the exchange-side stop: before forwarding it never arrived (placed again once its
    # expiresAfter has passed), after forwarding it rests (found by the lookup, not doubled).
    monkeypatch.setattr(protection, "RETRY_BASE_S", 0.2)
    rule = proxy.inject("/exchange", fault, status=502, count=1, match=is_trigger("sl"))
    h = proxied_bot(sim, proxy, tmp_path, trading=EXCHANGE_EXITS)
    try:
        open_long(sim, h)
        wait_until(lambda: rule.hits == 1, 5, h.step)
        wait_until(lambda: not h.bot.executor.unknown, 10, h.step)

        def resting_stops() -> list[dict]:
            return [o for o in sim.account(h.bot.address)["open_orders"]
                    if o.get("cloid") and h.bot.store.order(o["cloid"]).purpose == "sl"]
        wait_until(lambda: len(resting_stops()) == 1, 10, h.step)
        for _ in range(20):
            h.step()
        (stop,) = resting_stops()  # exactly one: never placed twice
        assert stop["cloid"] in h.trader.position.protective_cloids
    finally:
        h.close()
