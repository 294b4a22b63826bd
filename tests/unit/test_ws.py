"""parse_frame over every channel and every bad input; Backoff as a table; the buffered frame reader."""
from __future__ import annotations

import json
from decimal import Decimal as D

import pytest
import websocket

from stream_events import Bbo, Fill, L2Book, Mids, NonUserCancel, OrderUpdate, Trade, parse_frame
from ws_parts import Backoff, BufferedWebSocket

TRADE = {"coin": "BTC", "side": "B", "px": "97123.5", "sz": "0.0015", "hash": "0xabc", "time": 1733800000123,
         "tid": 84356734567, "users": ["0x1", "0x2"]}
FILL = {"coin": "BTC", "px": "50000", "sz": "0.01", "side": "A", "time": 5, "startPosition": "0.01",
        "dir": "Close Long", "closedPnl": "1.5", "hash": "0x", "oid": 9, "crossed": True, "fee": "0.22",
        "feeToken": "USDC", "tid": 77, "cloid": "0x" + "ab" * 16}


def frame(channel: str, data: object) -> str:
    return json.dumps({"channel": channel, "data": data})


def test_trade_frame() -> None:
    r = parse_frame(frame("trades", [TRADE, {**TRADE, "side": "A", "tid": 2}]), 42)
    assert r.events == [Trade("BTC", D("97123.5"), D("0.0015"), "buy", 1733800000123, 84356734567, 42),
                        Trade("BTC", D("97123.5"), D("0.0015"), "sell", 1733800000123, 2, 42)]
    assert r.errors == []


@pytest.mark.parametrize("bad", [
    {"px": "abc"}, {"px": "-1"}, {"px": "0"}, {"px": "NaN"}, {"px": "Infinity"}, {"px": None},
    {"sz": "-0.1"}, {"sz": "x"}, {"side": "X"}, {"tid": "t"},
])
def test_bad_trade_items_are_dropped_and_counted(bad: dict) -> None:
    r = parse_frame(frame("trades", [{**TRADE, **bad}, TRADE]), 1)
    assert len(r.events) == 1 and r.events[0].price == D("97123.5")
    assert r.errors == ["bad_trade"]


@pytest.mark.parametrize("missing", ["px", "sz", "side", "time", "tid", "coin"])
def test_trade_missing_field(missing: str) -> None:
    item = {k: v for k, v in TRADE.items() if k != missing}
    r = parse_frame(frame("trades", [item]), 1)
    assert r.events == [] and r.errors == ["bad_trade"]


@pytest.mark.parametrize("text,kind", [
    ("Websocket connection established.", "greeting"),
    ("{not json", "malformed_json"),
    ("[1, 2]", "malformed_json"),
    ('{"data": 1}', "malformed_json"),
    (frame("somethingNew", {}), "unknown_channel"),
    (frame("error", "Invalid subscription"), "error_channel"),
    (frame("bbo", {"coin": "BTC"}), "bad_bbo"),
    (frame("l2Book", {"coin": "BTC", "time": 1, "levels": [[{"px": "-5", "sz": "1", "n": 1}], []]}), "bad_l2Book"),
])
def test_problem_frames_are_counted_by_kind(text: str, kind: str) -> None:
    r = parse_frame(text, 1)
    assert r.events == [] and r.errors == [kind]


def test_book_bbo_mids() -> None:
    book = {"coin": "BTC", "time": 3, "levels": [[{"px": "100", "sz": "1", "n": 2}], [{"px": "101", "sz": "2", "n": 1}]]}
    assert parse_frame(frame("l2Book", book), 1).events == [
        L2Book("BTC", ((D("100"), D("1"), 2),), ((D("101"), D("2"), 1),), 3, 1)]
    bbo = {"coin": "BTC", "time": 4, "bbo": [{"px": "100", "sz": "1", "n": 1}, None]}
    assert parse_frame(frame("bbo", bbo), 1).events == [Bbo("BTC", D("100"), None, 4, 1)]
    r = parse_frame(frame("allMids", {"mids": {"BTC": "100.5", "BAD": "-1"}}), 1)
    assert r.events == [Mids({"BTC": D("100.5")}, 1)] and r.errors == ["bad_mid"]


def test_user_fills_snapshot_and_live() -> None:
    r = parse_frame(frame("userFills", {"isSnapshot": True, "user": "0x1", "fills": [FILL]}), 1)
    (fill,) = r.events
    assert isinstance(fill, Fill) and fill.is_snapshot and fill.side == "sell" and fill.tid == 77
    assert fill.cloid == FILL["cloid"] and fill.fee == D("0.22") and fill.closed_pnl == D("1.5")
    live = parse_frame(frame("userFills", {"user": "0x1", "fills": [FILL]}), 1).events[0]
    assert live.is_snapshot is False


def test_order_updates_and_user_events() -> None:
    upd = {"order": {"coin": "BTC", "side": "B", "limitPx": "50000", "sz": "0", "oid": 9, "timestamp": 1,
                     "origSz": "0.01", "cloid": None}, "status": "filled", "statusTimestamp": 2}
    (event,) = parse_frame(frame("orderUpdates", [upd]), 1).events
    assert event == OrderUpdate("BTC", "buy", D("50000"), D("0"), D("0.01"), 9, None, "filled", 2, 1)
    r = parse_frame(frame("user", {"fills": [FILL], "nonUserCancel": [{"coin": "BTC", "oid": 5}]}), 1)
    assert isinstance(r.events[0], Fill) and r.events[1] == NonUserCancel("BTC", 5)


def test_control_messages() -> None:
    assert parse_frame(frame("pong", None), 1).pong
    ack = parse_frame(frame("subscriptionResponse", {"method": "subscribe",
                                                     "subscription": {"type": "trades", "coin": "BTC"}}), 1)
    assert ack.ack["subscription"] == {"type": "trades", "coin": "BTC"} and ack.errors == []


@pytest.mark.parametrize("base,cap,jitter,rng,expected", [
    (5.0, 60.0, 0.0, 0.5, [5, 10, 20, 40, 60, 60]),
    (1.0, 4.0, 0.0, 0.5, [1, 2, 4, 4]),
    (5.0, 60.0, 0.2, 1.0, [4, 8, 16, 32, 48, 48]),    # full jitter draw: 20 % shorter
    (5.0, 60.0, 0.2, 0.0, [5, 10, 20, 40, 60, 60]),   # zero draw: nominal, never above the cap
])
def test_backoff_table(base: float, cap: float, jitter: float, rng: float, expected: list) -> None:
    b = Backoff(base, cap, jitter, rng=lambda: rng)
    assert [round(b.next_delay(), 6) for _ in expected] == expected


def test_backoff_reset_and_validation() -> None:
    b = Backoff(1.0, 8.0, 0.0)
    for _ in range(5):
        b.next_delay()
    b.reset()
    assert b.next_delay() == 1.0
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)


class ScriptedSocket:
    """Stands in for the connected socket: each recv() returns the next scripted chunk, however
    many bytes were asked for (None: the read times out; end of script: the peer closed)."""

    def __init__(self, chunks: list[bytes | None]) -> None:
        self.chunks = chunks
        self.reads = 0

    def gettimeout(self) -> float:
        return 0.2

    def recv(self, bufsize: int) -> bytes:
        self.reads += 1
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if chunk is None:
            raise TimeoutError("timed out")
        assert len(chunk) <= bufsize
        return chunk

    def close(self) -> None:
        pass


def server_frame(text: str) -> bytes:
    return websocket.ABNF(1, 0, 0, 0, websocket.ABNF.OPCODE_TEXT, 0, text.encode()).format()


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 50])  # inside the header, the extended length, the payload
def test_buffered_reader_serves_frames_across_any_chunk_boundary(cut: int) -> None:
    texts = [frame("trades", [{**TRADE, "tid": i}]) for i in range(3)] + ["x" * 10, "y" * 70000]
    wire = b"".join(server_frame(t) for t in texts)  # short, 2-byte and 8-byte length forms
    chunks: list[bytes | None] = [wire[:cut], None, wire[cut:cut + 65536]]
    chunks += [wire[i:i + 65536] for i in range(cut + 65536, len(wire), 65536)]
    reads_expected = len(chunks)
    sock = ScriptedSocket(chunks)
    ws = BufferedWebSocket(skip_utf8_validation=True, enable_multithread=False)
    ws.sock, ws.connected = sock, True
    got: list[str] = []
    timeouts = 0
    while len(got) < len(texts):
        try:
            opcode, payload = ws.recv_data()
        except websocket.WebSocketTimeoutException:
            timeouts += 1  # surfaced as before, and the partial frame is kept for the next read
            continue
        assert opcode == websocket.ABNF.OPCODE_TEXT
        got.append(payload.decode())
    assert got == texts and timeouts == 1
    assert sock.reads == reads_expected  # one read per chunk, not two or three per frame
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        ws.recv_data()
