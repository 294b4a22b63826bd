"""health.render() as a table (statuses, reasons, ages from `now_s`), /metrics figures, and the
server on 127.0.0.1 port 0: ages at request time with an injected clock, a failing snapshot, and
clients that connect and send nothing, dribble, or flood."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from types import MappingProxyType
from typing import Any, Iterator, Mapping

import pytest
from prometheus_client.parser import text_string_to_metric_families

from health import render, render_metrics
from health_server import HealthServer
from harness.waiting import wait_until

NOW_S = 1000.0


def snapshot(**changes: Any) -> dict[str, Any]:
    """A healthy published snapshot at NOW_S; `websocket__x=1` changes a websocket field."""
    snap: dict[str, Any] = {
        "published_at_s": NOW_S - 0.1, "started_at_s": NOW_S - 100.0,
        "symbol": "BTC", "current_price": 50012.5, "price_source": "websocket",
        "price_at_s": NOW_S - 0.2, "price_fresh_limit_s": 10.0, "mode": "websocket", "dry_run": True,
        "websocket": {"enabled": True, "connected": True, "subscriptions": 2, "last_message_at_s": NOW_S - 0.3,
                      "reconnects": 1, "fallback": False, "dropped_market_data": 0, "parse_errors": 0,
                      "queue_depth": 0, "internal_errors": 0, "thread_restarts": 0},
        "position": None, "exit_failures": 0, "state_writable": True, "state_error": None,
        "handler_errors": 0, "unknown_orders": 0, "trades_seen": 12, "rss_bytes": 1 << 20,
    }
    for key, value in changes.items():
        if key.startswith("websocket__"):
            snap["websocket"][key[len("websocket__"):]] = value
        else:
            snap[key] = value
    return snap


@pytest.mark.parametrize("changes, code, status, reasons", [
    ({}, 200, "ok", []),
    ({"websocket__fallback": True}, 200, "fallback", []),
    ({"websocket__fallback": True, "websocket__enabled": False}, 200, "ok", []),
    ({"published_at_s": NOW_S - 5.0}, 200, "ok", []),
    ({"published_at_s": NOW_S - 7.2}, 503, "degraded", ["trading loop stalled for 7.2 s"]),
    ({"exit_failures": 1}, 200, "ok", []),
    ({"exit_failures": 3}, 503, "degraded", ["exits failing: 3 in a row"]),
    ({"state_writable": False, "state_error": "disk I/O error"}, 503, "degraded",
     ["state not writable: disk I/O error"]),
    ({"price_at_s": NOW_S - 10.0}, 200, "ok", []),
    ({"price_at_s": NOW_S - 12.0}, 503, "degraded", ["stale price: 12.0 s old"]),
    ({"current_price": None, "price_at_s": None}, 503, "degraded", ["no price yet"]),
    ({"unknown_orders": 1, "oldest_unknown_order_at_s": NOW_S - 20.0}, 200, "ok", []),
    ({"unknown_orders": 2, "oldest_unknown_order_at_s": NOW_S - 42.0}, 503, "degraded",
     ["order results unknown for 42 s"]),
    ({"published_at_s": NOW_S - 30.0, "exit_failures": 2, "websocket__fallback": True}, 503, "degraded",
     ["trading loop stalled for 30.0 s", "exits failing: 2 in a row"]),
])
def test_render_status_and_reasons(changes: dict, code: int, status: str, reasons: list) -> None:
    got_code, body = render(snapshot(**changes), NOW_S)
    assert (got_code, body["status"], body["reasons"]) == (code, status, reasons)


def test_render_starting() -> None:
    code, body = render({"status": "starting"}, NOW_S)
    assert code == 503 and body["status"] == "starting"


def test_render_ages_from_now_and_drops_stamps() -> None:
    snap = snapshot(position={"side": "long", "size": 0.004, "entry_px": 50001.0})
    _, body = render(snap, NOW_S)
    assert (body["uptime_s"], body["loop_age_s"], body["price_age_s"]) == (100.0, 0.1, 0.2)
    assert body["websocket"]["last_message_age_s"] == 0.3
    assert body["position"] == snap["position"] and body["handler_errors"] == 0 and body["trades_seen"] == 12
    for interface_field in ("status", "uptime_s", "symbol", "current_price", "price_source", "price_age_s",
                            "websocket", "position"):
        assert interface_field in body
    assert set(body["websocket"]) >= {"enabled", "connected", "subscriptions", "last_message_age_s",
                                      "reconnects", "fallback", "internal_errors", "thread_restarts"}
    stamps = [k for k in [*body, *body["websocket"]] if k.endswith("_at_s") or k == "price_fresh_limit_s"]
    assert stamps == []
    json.dumps(body)  # JSON-ready
    # The same (frozen) snapshot, a minute later: everything has aged, and it says so.
    code, later = render(snap, NOW_S + 60.0)
    assert (later["uptime_s"], later["loop_age_s"], later["price_age_s"]) == (160.0, 60.1, 60.2)
    assert later["websocket"]["last_message_age_s"] == 60.3
    assert code == 503 and later["reasons"] == ["trading loop stalled for 60.1 s", "stale price: 60.2 s old"]


def test_render_accepts_read_only_snapshots() -> None:
    position = MappingProxyType({"side": "long", "size": 0.004, "levels": (1.0, 2.0)})
    code, body = render(MappingProxyType(snapshot(position=position)), NOW_S)
    assert code == 200 and json.loads(json.dumps(body))["position"] == {"side": "long", "size": 0.004,
                                                                       "levels": [1.0, 2.0]}


def test_render_rounds_ages_to_milliseconds() -> None:
    _, body = render(snapshot(price_at_s=NOW_S - 1.23456), NOW_S)
    assert body["price_age_s"] == 1.235


def test_render_ages_per_market_figures() -> None:
    markets = {"BTC": {"current_price": 1.0, "price_at_s": NOW_S - 2.0, "price_fresh_limit_s": 10.0}}
    _, body = render(snapshot(markets=markets), NOW_S)
    assert body["markets"] == {"BTC": {"current_price": 1.0, "price_age_s": 2.0}}


def test_render_refuses_a_snapshot_without_its_stamps() -> None:
    snap = snapshot()
    del snap["published_at_s"]
    with pytest.raises(KeyError):
        render(snap, NOW_S)


def metric_values(text: bytes) -> dict[tuple[str, tuple], float]:
    values = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_render_metrics_names_and_values() -> None:
    _, body = render(snapshot(exit_failures=3, handler_errors=4, unknown_orders=1, state_writable=False,
                              websocket__internal_errors=5, websocket__thread_restarts=1), NOW_S)
    values = metric_values(render_metrics(body))
    assert values[("hlbot_up", ())] == 0.0
    assert values[("hlbot_loop_age_seconds", ())] == 0.1
    assert values[("hlbot_handler_errors_total", ())] == 4.0
    assert values[("hlbot_exit_failures", ())] == 3.0
    assert values[("hlbot_state_writable", ())] == 0.0
    assert values[("hlbot_unknown_orders", ())] == 1.0
    assert values[("hlbot_websocket_internal_errors_total", ())] == 5.0
    assert values[("hlbot_websocket_thread_restarts_total", ())] == 1.0
    assert values[("hlbot_websocket_reconnects_total", ())] == 1.0
    assert values[("hlbot_price_age_seconds", ())] == 0.2
    assert values[("hlbot_status", (("status", "degraded"),))] == 1.0
    assert values[("hlbot_status", (("status", "ok"),))] == 0.0


def two_markets(eth_price_at_s: float | None) -> dict[str, Any]:
    btc = {"current_price": 50012.5, "price_source": "websocket", "price_at_s": NOW_S - 0.2,
           "position": {"side": "long", "size": 0.004, "entry_px": 50000.0, "high_water": None}, "exit_failures": 0,
           "maker_entry": None}
    eth = {"current_price": 3000.0 if eth_price_at_s else None, "price_source": "rest", "price_at_s": eth_price_at_s,
           "position": {"side": "short", "size": 0.02, "entry_px": 3000.0, "high_water": None}, "exit_failures": 1,
           "maker_entry": {"side": "short", "size": 0.02, "px": 3001.0, "repegs": 0, "filled": 0.0}}
    return snapshot(markets={"BTC": btc, "ETH": eth})


@pytest.mark.parametrize("eth_at, code, reasons", [
    (NOW_S - 1.0, 200, []),
    (NOW_S - 12.0, 503, ["stale price for ETH: 12.0 s old"]),
    (None, 503, ["no price yet for ETH"]),
])
def test_every_market_needs_a_fresh_price(eth_at: float | None, code: int, reasons: list) -> None:
    status, body = render(two_markets(eth_at), NOW_S)
    assert (status, body["reasons"]) == (code, reasons)
    if eth_at is not None:
        assert body["markets"]["ETH"]["price_age_s"] == round(NOW_S - eth_at, 3) and "price_at_s" not in body["markets"]["ETH"]


def test_market_metrics_are_labelled_by_coin() -> None:
    _, body = render(two_markets(NOW_S - 1.0), NOW_S)
    values = metric_values(render_metrics(body))
    assert values[("hlbot_market_price", (("coin", "ETH"),))] == 3000.0
    assert values[("hlbot_market_price_age_seconds", (("coin", "ETH"),))] == 1.0
    assert values[("hlbot_market_position_size", (("coin", "BTC"),))] == 0.004
    assert values[("hlbot_market_position_size", (("coin", "ETH"),))] == -0.02
    assert values[("hlbot_market_price_from_websocket", (("coin", "ETH"),))] == 0.0
    assert values[("hlbot_market_exit_failures", (("coin", "ETH"),))] == 1.0
    assert values[("hlbot_market_maker_entry_working", (("coin", "ETH"),))] == 1.0
    assert values[("hlbot_market_maker_entry_working", (("coin", "BTC"),))] == 0.0


# ---- over HTTP ------------------------------------------------------------------------------

class Clock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[HealthServer] = []

    def start(snapshot_fn: Any, **kw: Any) -> HealthServer:
        server = HealthServer("127.0.0.1", 0, snapshot_fn, **kw)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def get(server: HealthServer, path: str = "/health", timeout_s: float = 2.0) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, json.loads(data) if path == "/health" else data


def test_a_snapshot_not_republished_turns_degraded_as_the_clock_runs(serve: Any) -> None:
    clock = Clock(NOW_S)
    frozen = snapshot()
    server = serve(lambda: frozen, clock=clock)
    status, body = get(server)
    assert (status, body["status"], body["loop_age_s"]) == (200, "ok", 0.1)
    clock.now_s += 6.0
    status, body = get(server)
    assert (status, body["status"], body["reasons"]) == (503, "degraded", ["trading loop stalled for 6.1 s"])
    assert body["price_age_s"] == 6.2


def test_metrics_are_computed_at_request_time(serve: Any) -> None:
    clock = Clock(NOW_S)
    frozen = snapshot()
    server = serve(lambda: frozen, clock=clock)
    status, text = get(server, "/metrics")
    values = metric_values(text)
    assert status == 200 and values[("hlbot_up", ())] == 1.0 and values[("hlbot_loop_age_seconds", ())] == 0.1
    clock.now_s += 9.0
    values = metric_values(get(server, "/metrics")[1])
    assert values[("hlbot_up", ())] == 0.0 and values[("hlbot_loop_age_seconds", ())] == 9.1
    assert values[("hlbot_status", (("status", "degraded"),))] == 1.0
    assert values[("hlbot_uptime_seconds", ())] == 109.0


def test_starting_answers_503(serve: Any) -> None:
    server = serve(lambda: {"status": "starting"})
    status, body = get(server)
    assert (status, body["status"]) == (503, "starting")


def test_a_failing_snapshot_answers_degraded_and_the_server_lives_on(serve: Any,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    answers: list[Any] = [RuntimeError("boom"), {"published_at_s": 1.0}, snapshot()]

    def snapshot_fn() -> Mapping[str, Any]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    server = serve(snapshot_fn, clock=Clock(NOW_S))
    for _ in range(2):  # raises; then breaks the contract
        status, body = get(server)
        assert (status, body) == (503, {"status": "degraded", "reasons": ["health snapshot failed"]})
    assert get(server)[0] == 200
    failures = [r for r in caplog.records if r.name == "health" and r.levelname == "ERROR"]
    assert len(failures) == 1 and failures[0].exc_info  # one traceback; the repeat is only counted


def test_unknown_path_is_404(serve: Any) -> None:
    server = serve(lambda: snapshot(), clock=Clock(NOW_S))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
    conn.request("GET", "/nope")
    assert conn.getresponse().status == 404
    conn.close()


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed `sock` (EOF or reset); False if it is still open."""
    try:
        return sock.recv(1024) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def test_a_silent_client_is_cut_off_at_the_request_timeout(serve: Any) -> None:
    server = serve(lambda: snapshot(), clock=Clock(NOW_S), request_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(0.1)
        started = time.monotonic()
        wait_until(lambda: closed_by_server(sock), 3.0)
        assert 0.4 < time.monotonic() - started < 2.0


def test_a_dribbling_client_is_cut_off_at_the_request_deadline(serve: Any) -> None:
    # A plain socket timeout restarts with every byte: this client would be served never and held forever.
    server = serve(lambda: snapshot(), clock=Clock(NOW_S), request_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(0.1)
        started = time.monotonic()
        request = iter(b"GET /health HTTP/1.0\r\nX-Slow: " + b"a" * 1000)

        def dribble() -> bool:  # one byte per 0.1 s read timeout, until the server closes
            try:
                sock.send(bytes([next(request)]))
            except OSError:
                return True
            return closed_by_server(sock)

        wait_until(dribble, 3.0)
        assert time.monotonic() - started < 1.5


def closed_now(sock: socket.socket) -> bool:
    """True if the server has closed `sock` already (does not wait)."""
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def handler_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def test_idle_flood_and_a_dribbler_do_not_block_a_normal_request(serve: Any) -> None:
    server = serve(lambda: snapshot(), clock=Clock(NOW_S), max_connections=32, request_timeout_s=5.0)
    stop_dribbling = threading.Event()

    def dribbler() -> None:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            for byte in b"GET /health HTTP/1.0\r\n":
                if stop_dribbling.wait(0.05):
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=dribbler, name="dribbler")
    thread.start()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(100)]
    try:
        started = time.monotonic()
        status, body = get(server, timeout_s=2.0)  # accepted after the flood: the server has seen it all
        assert (status, body["status"]) == (200, "ok")
        assert time.monotonic() - started < 0.5
        # the cap holds: the oldest idle connections were closed to make room
        wait_until(lambda: handler_threads() <= 32 and sum(map(closed_now, idle)) >= 68, 5.0)  # a loaded CI box
        started = time.monotonic()
        server.stop()  # with idle clients still connected
        assert time.monotonic() - started < 2.0
        wait_until(lambda: handler_threads() == 0, 3.0)  # woken, not left to their 5 s timeout
    finally:
        stop_dribbling.set()
        thread.join(2)
        for sock in idle:
            sock.close()


def test_over_the_cap_with_every_slot_answering_a_newcomer_gets_503_at_once(serve: Any) -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def hung_snapshot() -> Mapping[str, Any]:
        entered.release()
        release.wait(5)
        return snapshot()

    server = serve(hung_snapshot, clock=Clock(NOW_S), max_connections=2)
    results: list[int] = []
    hung = [threading.Thread(target=lambda: results.append(get(server, timeout_s=5)[0])) for _ in range(2)]
    for thread in hung:
        thread.start()
    try:
        assert entered.acquire(timeout=2) and entered.acquire(timeout=2)  # both slots are answering
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
        conn.request("GET", "/health")
        response = conn.getresponse()
        assert (response.status, response.read()) == (503, b"busy\n")
        conn.close()
        assert time.monotonic() - started < 0.5
    finally:
        release.set()
        for thread in hung:
            thread.join(5)
    assert results == [200, 200]
