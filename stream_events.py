"""Frames to events (pure): one WebSocket text frame in, typed immutable events out.

Owns: the event types the socket thread puts on the queue (`Trade`, `L2Book`, `Bbo`, `Mids`,
`Fill`, `OrderUpdate`, `NonUserCancel`; `Connected`, `Disconnected`, `StreamDown`,
`StreamRecovered`, `SubscriptionFailed`) and `parse_frame`, which reads one frame (`px`, `sz`,
`tid` stay here) into events, control messages and counted problems.
Must not: do I/O, read a clock (the receive time is an argument), log, or raise on a bad frame:
a bad item is dropped and counted by kind, and a bad price never becomes an event.
"""
from __future__ import annotations

import json
import json.scanner
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Mapping, NamedTuple

GREETING = "Websocket connection established."


# ---- events ---------------------------------------------------------------------------------

class Trade(NamedTuple):
    """One print. A NamedTuple, not a dataclass: it is built for every trade on the socket thread
    and a frozen dataclass costs three times as much to construct."""

    coin: str
    price: Decimal
    size: Decimal
    side: Literal["buy", "sell"]
    time_ms: int
    tid: int
    recv_ns: int
    replay: bool = False  # an older trade of the recent-trades replay sent right after subscribing


@dataclass(frozen=True, slots=True)
class L2Book:
    coin: str
    bids: tuple[tuple[Decimal, Decimal, int], ...]
    asks: tuple[tuple[Decimal, Decimal, int], ...]
    time_ms: int
    recv_ns: int


@dataclass(frozen=True, slots=True)
class Bbo:
    coin: str
    bid: Decimal | None
    ask: Decimal | None
    time_ms: int
    recv_ns: int


@dataclass(frozen=True, slots=True)
class Mids:
    mids: Mapping[str, Decimal]
    recv_ns: int


@dataclass(frozen=True, slots=True)
class Fill:
    coin: str
    price: Decimal
    size: Decimal
    side: Literal["buy", "sell"]
    time_ms: int
    oid: int
    tid: int
    cloid: str | None
    fee: Decimal
    closed_pnl: Decimal
    direction: str
    start_position: Decimal | None
    crossed: bool
    is_snapshot: bool
    recv_ns: int


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    coin: str
    side: Literal["buy", "sell"]
    limit_px: Decimal
    size: Decimal
    orig_size: Decimal
    oid: int
    cloid: str | None
    status: str
    status_time_ms: int
    recv_ns: int


@dataclass(frozen=True, slots=True)
class NonUserCancel:
    coin: str
    oid: int


@dataclass(frozen=True, slots=True)
class Liquidation:
    """The account was liquidated (`userEvents`): `detail` is the exchange's object, for the log."""
    detail: str
    recv_ns: int


@dataclass(frozen=True, slots=True)
class Funding:
    """A funding payment from `userEvents`: `usdc` > 0 received, < 0 paid."""
    coin: str
    usdc: Decimal
    szi: Decimal
    rate: Decimal
    time_ms: int
    recv_ns: int


@dataclass(frozen=True, slots=True)
class Connected:
    attempt: int
    recv_ns: int


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str
    recv_ns: int


@dataclass(frozen=True, slots=True)
class StreamDown:
    attempts: int
    reason: str


@dataclass(frozen=True, slots=True)
class StreamRecovered:
    down_for_s: float


@dataclass(frozen=True, slots=True)
class SubscriptionFailed:
    subscription: Mapping[str, Any]
    reason: str


_SIDE = {"B": "buy", "A": "sell"}


# ---- parsing (pure) ---------------------------------------------------------------------------

class _BadItem(ValueError):
    pass


def _price(value: Any) -> Decimal:
    try:
        d = Decimal(value) if isinstance(value, str) else Decimal(str(value))
    except (InvalidOperation, TypeError, ValueError):
        raise _BadItem("price") from None
    if not d.is_finite() or d <= 0:
        raise _BadItem("price")
    return d


def _amount(value: Any) -> Decimal:
    try:
        d = Decimal(value) if isinstance(value, str) else Decimal(str(value))
    except (InvalidOperation, TypeError, ValueError):
        raise _BadItem("amount") from None
    if not d.is_finite():
        raise _BadItem("amount")
    return d


def _size(value: Any) -> Decimal:
    d = _amount(value)
    if d < 0:
        raise _BadItem("size")
    return d


def _trade(t: Mapping[str, Any], recv_ns: int) -> Trade:
    """One trade: the checks of `_price` and `_size`, written out (a trade is the hot path)."""
    try:
        px, sz = t["px"], t["sz"]
        price = Decimal(px) if type(px) is str else Decimal(str(px))
        size = Decimal(sz) if type(sz) is str else Decimal(str(sz))
        if not (price.is_finite() and size.is_finite()) or price <= 0 or size < 0:
            raise _BadItem("trade")
        return Trade(t["coin"], price, size, _SIDE[t["side"]], int(t["time"]), int(t["tid"]), recv_ns)
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise _BadItem("trade") from exc


def _fill(f: Mapping[str, Any], snapshot: bool, recv_ns: int) -> Fill:
    try:
        start = f.get("startPosition")
        return Fill(f["coin"], _price(f["px"]), _size(f["sz"]), _SIDE[f["side"]], int(f["time"]),
                    int(f["oid"]), int(f["tid"]), f.get("cloid"), _amount(f.get("fee", "0")),
                    _amount(f.get("closedPnl", "0")), str(f.get("dir", "")),
                    None if start is None else _amount(start), bool(f.get("crossed", False)),
                    snapshot, recv_ns)
    except (KeyError, TypeError, ValueError) as exc:
        raise _BadItem("fill") from exc


def _order_update(u: Mapping[str, Any], recv_ns: int) -> OrderUpdate:
    try:
        o = u["order"]
        return OrderUpdate(o["coin"], _SIDE[o["side"]], _price(o["limitPx"]), _size(o["sz"]),
                           _size(o.get("origSz", o["sz"])), int(o["oid"]), o.get("cloid"), str(u["status"]),
                           int(u.get("statusTimestamp", 0)), recv_ns)
    except (KeyError, TypeError, ValueError) as exc:
        raise _BadItem("orderUpdate") from exc


def _level(level: Mapping[str, Any]) -> tuple[Decimal, Decimal, int]:
    return _price(level["px"]), _size(level["sz"]), int(level.get("n", 0))


_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[attr-defined]


def _loads(text: str) -> Any:
    """`json.loads(text)`: the C scanner it ends in, called without its Python wrapper (two regex
    matches and three calls a frame); anything unusual (whitespace around, more after the value,
    not JSON) goes through `json.loads` itself, for its answer or its error."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


@dataclass
class ParseResult:
    """What one frame gave: events, control messages, and counted problems by kind."""

    events: list[Any] = field(default_factory=list)
    ack: Mapping[str, Any] | None = None
    pong: bool = False
    errors: list[str] = field(default_factory=list)
    error_text: str | None = None


def parse_frame(text: str, recv_ns: int) -> ParseResult:
    """Parse one text frame into typed events. Never raises; problems are returned by kind.

    A real trades frame:
    ``{"channel":"trades","data":[{"coin":"BTC","side":"B","px":"97123.0","sz":"0.0015",
    "hash":"0x…","time":1733800000123,"tid":84356734567,"users":["0x…","0x…"]}]}``
    """
    result = ParseResult()
    if text == GREETING:
        result.errors.append("greeting")
        return result
    try:
        msg = _loads(text)
        channel = msg["channel"]
        data = msg.get("data")
    except (ValueError, TypeError, KeyError):
        result.errors.append("malformed_json")
        return result
    try:
        if channel == "trades":
            for item in data:
                try:
                    result.events.append(_trade(item, recv_ns))
                except _BadItem:
                    result.errors.append("bad_trade")
        elif channel == "bbo":
            bid, ask = data["bbo"]
            result.events.append(Bbo(data["coin"], None if bid is None else _price(bid["px"]),
                                     None if ask is None else _price(ask["px"]), int(data["time"]), recv_ns))
        elif channel == "l2Book":
            bids, asks = data["levels"]
            result.events.append(L2Book(data["coin"], tuple(_level(x) for x in bids),
                                        tuple(_level(x) for x in asks), int(data["time"]), recv_ns))
        elif channel == "allMids":
            mids = {}
            for coin, px in data["mids"].items():
                try:
                    mids[coin] = _price(px)
                except _BadItem:
                    result.errors.append("bad_mid")
            result.events.append(Mids(mids, recv_ns))
        elif channel == "userFills":
            snapshot = bool(data.get("isSnapshot", False))
            for item in data["fills"]:
                try:
                    result.events.append(_fill(item, snapshot, recv_ns))
                except _BadItem:
                    result.errors.append("bad_fill")
        elif channel == "orderUpdates":
            for item in data:
                try:
                    result.events.append(_order_update(item, recv_ns))
                except _BadItem:
                    result.errors.append("bad_order_update")
        elif channel == "user":
            for item in data.get("fills", ()):
                try:
                    result.events.append(_fill(item, False, recv_ns))
                except _BadItem:
                    result.errors.append("bad_fill")
            for item in data.get("nonUserCancel", ()):
                result.events.append(NonUserCancel(item["coin"], int(item["oid"])))
            liquidation = data.get("liquidation")
            if liquidation is not None:  # {"lid", "liquidator", "liquidated_user", "liquidated_ntl_pos", ...}
                result.events.append(Liquidation(json.dumps(liquidation, sort_keys=True)[:300], recv_ns))
            funding = data.get("funding")
            if funding is not None:  # {"time", "coin", "usdc", "szi", "fundingRate"}
                result.events.append(Funding(str(funding["coin"]), _amount(funding["usdc"]), _amount(funding["szi"]),
                                             _amount(funding["fundingRate"]), int(funding["time"]), recv_ns))
        elif channel == "subscriptionResponse":
            result.ack = data
        elif channel == "pong":
            result.pong = True
        elif channel == "error":
            result.errors.append("error_channel")
            result.error_text = str(data)[:200]
        else:
            result.errors.append("unknown_channel")
    except (KeyError, TypeError, ValueError, AttributeError):
        result.errors.append(f"bad_{channel}" if isinstance(channel, str) else "malformed_json")
    return result


def as_replay(trades: list[Trade]) -> list[Trade]:
    """A replay of recent trades (the first trades frame for a coin on a new connection), oldest
    first whatever the server's order, all but the newest marked `replay`: history for candles,
    while the newest is still the last price."""
    trades = sorted(trades, key=lambda t: (t.time_ms, t.tid))
    return [t._replace(replay=True) for t in trades[:-1]] + trades[-1:]
