"""The control socket (ctl.py) and the status table (ctl_format.py), without a bot: the protocol,
the socket's life (owner-only, a stale one replaced, removed at stop), the client's exit codes."""
from __future__ import annotations

import io
import os
import queue
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

import ctl
from ctl import CtlRequest, CtlServer, parse_request, run_ctl, socket_path
from ctl_format import format_status


@pytest.fixture
def state_path(tmp_path: Path) -> str:
    return str(tmp_path / "bot.db")


def serve_answers(requests: "queue.Queue[CtlRequest]", answer: dict, stop: threading.Event) -> threading.Thread:
    """Stands in for the trading loop: answers every request with `answer` (and the request)."""
    def run() -> None:
        while not stop.is_set():
            try:
                request = requests.get(timeout=0.05)
            except queue.Empty:
                continue
            request.reply.set({**answer, "seen": [request.command, request.coin]})
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("line, error", [
    (b"not json", "a request is one JSON line"),
    (b'{"command": "sell"}', "unknown command 'sell'; expected one of: status, pause, resume, close"),
    (b'["status"]', "unknown command None"),
    (b'{"command": "close", "coin": 5}', "a coin is a name such as BTC, got 5"),
])
def test_bad_requests_are_refused_with_a_reason(line: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("[", r"\[")):
        parse_request(line)


def test_request_parsed() -> None:
    request = parse_request(b'{"command": "close", "coin": "BTC"}')
    assert (request.command, request.coin) == ("close", "BTC")


def test_a_request_goes_to_the_queue_and_the_answer_comes_back(state_path: str) -> None:
    requests: queue.Queue[CtlRequest] = queue.Queue()
    server = CtlServer(socket_path(state_path), requests)
    stop = threading.Event()
    server.start()
    try:
        assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
        serve_answers(requests, {"ok": True, "message": "entries paused: BTC"}, stop)
        answer = ctl.request(server.path, "pause", "BTC")
        assert answer == {"ok": True, "message": "entries paused: BTC", "seen": ["pause", "BTC"]}
        out, err = io.StringIO(), io.StringIO()
        assert run_ctl(state_path, ["pause", "BTC"], out, err) == 0
        assert out.getvalue() == "entries paused: BTC\n" and err.getvalue() == ""
    finally:
        stop.set()
        server.stop()
    assert not os.path.exists(server.path)  # removed at a clean stop


def test_no_bot_exits_1_with_one_line(state_path: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_ctl(state_path, ["status"], out, err) == 1
    assert err.getvalue() == f"ctl: no bot is running for this config (no control socket at {state_path}.sock)\n"
    # A socket left by a killed bot: the file is there, nobody listens.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(socket_path(state_path))
    stale.close()
    err = io.StringIO()
    assert run_ctl(state_path, ["close", "BTC"], out, err) == 1
    assert err.getvalue() == f"ctl: no bot is running for this config (nobody answers on {state_path}.sock)\n"
    assert out.getvalue() == ""


def test_a_stale_socket_is_replaced_at_start_and_a_foreign_file_is_not(state_path: str) -> None:
    path = socket_path(state_path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    server = CtlServer(path, queue.Queue())
    server.start()
    server.stop()
    Path(path).write_text("not ours")
    with pytest.raises(OSError, match="exists and is not a socket"):
        CtlServer(path, queue.Queue()).start()
    assert Path(path).read_text() == "not ours"


def test_a_loop_that_does_not_answer_in_time_gives_exit_1(state_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    server = CtlServer(socket_path(state_path), queue.Queue(), reply_timeout_s=0.2)  # nobody drains the queue
    server.start()
    try:
        err = io.StringIO()
        assert run_ctl(state_path, ["status"], io.StringIO(), err) == 1
        assert err.getvalue() == "ctl: the trading loop did not answer within 0.2 s\n"
    finally:
        server.stop()


@pytest.mark.parametrize("words", [[], ["sell"], ["close", "BTC", "ETH"]])
def test_a_bad_command_line_exits_2(state_path: str, words: list[str]) -> None:
    err = io.StringIO()
    assert run_ctl(state_path, words, io.StringIO(), err) == 2
    assert err.getvalue().startswith("ctl: usage: --ctl {status|pause|resume|close} [COIN]")


def test_a_path_too_long_for_a_unix_socket_is_said_so(tmp_path: Path) -> None:
    long_state = str(tmp_path / ("x" * 120) / "bot.db")
    with pytest.raises(OSError, match="too long for a Unix socket"):
        CtlServer(socket_path(long_state), queue.Queue()).start()
    err = io.StringIO()
    assert run_ctl(long_state, ["status"], io.StringIO(), err) == 1 and "too long" in err.getvalue()


def test_status_table_reads_at_a_glance() -> None:
    status = {
        "account": "0xAcc", "signer": "0xAgent", "network": "testnet", "mode": "live orders", "health": "degraded",
        "reasons": ["stale price for ETH: 30.0 s old"], "uptime_s": 7384.0,
        "stream": {"mode": "websocket", "connected": True, "last_message_age_s": 0.24, "reconnects": 2},
        "markets": [
            {"coin": "BTC", "price": "50012.5", "source": "websocket", "age_s": 0.2,
             "position": {"side": "long", "size": "0.004", "entry_px": "50001.0"}, "upnl": "0.05",
             "protection": "SL 49001, TP 52001", "entries": "on", "exit_failures": 0},
            {"coin": "ETH", "price": "3001.2", "source": "rest", "age_s": 30.0,
             "position": {"side": "short", "size": "0.1", "entry_px": "2990"}, "upnl": "-1.12",
             "protection": "none", "entries": "paused", "exit_failures": 3},
            {"coin": "SOL", "price": None, "source": None, "age_s": None, "position": None, "upnl": None,
             "protection": "-", "entries": "on", "exit_failures": 0},
        ],
        "total_upnl": "-1.07", "unmanaged": {"DOGE": {"size": "100", "entry_px": "0.1"}},
        "notifications": {"webhook": {"sent": 4, "failed": 1, "dropped": 0, "held_back": 2, "retries": 1,
                                      "queued": 0}},
    }
    assert format_status(status).splitlines() == [
        "bot      account 0xAcc (signed by API wallet 0xAgent) on testnet, live orders, up 2h03m",
        "health   degraded: stale price for ETH: 30.0 s old",
        "stream   websocket, connected, last message 0.2 s ago, 2 reconnects",
        "",
        "COIN  PRICE    SOURCE     AGE    POSITION                     ENTRY    UPNL   PROTECTION          ENTRIES",
        "BTC   50012.5  websocket  0.2s   long 0.004                   50001.0  +0.05  SL 49001, TP 52001  on",
        "ETH   3001.2   rest       30.0s  short 0.1 (EXIT FAILING x3)  2990     -1.12  none                paused",
        "SOL   -        -          -      flat                         -        -      -                   on",
        "",
        "unrealized PnL  -1.07 USDC",
        "unmanaged       DOGE 100 at 0.1 (left alone)",
        "webhook         4 sent, 1 failed, 0 dropped, 2 held back by the rate limit",
    ]


def test_stopping_answers_a_waiting_client_at_once(state_path: str) -> None:
    requests: queue.Queue[CtlRequest] = queue.Queue()
    server = CtlServer(socket_path(state_path), requests)  # nobody drains: the loop has ended
    server.start()
    answers: list[dict] = []
    client = threading.Thread(target=lambda: answers.append(ctl.request(server.path, "close", None)))
    client.start()
    requests.get(timeout=5)  # the request reached the loop's queue; its reply is awaited
    began = time.monotonic()
    server.stop()
    client.join(5)
    assert answers == [{"ok": False, "error": "the bot is stopping"}]
    assert time.monotonic() - began < 2.0
