"""What the exchange's JSON means, as typed values: the answers of `/info` and `/exchange` parsed.

Owns: the frozen result types (`Meta`, `AccountState`, `Position`, `OpenOrder`, `Fill`,
`OrderStatusResult`, `OrderResult`, `Candle`), the pure parsers from wire dicts (`px`, `sz`,
`oid` stay here) to those types, and `parsed()`, which turns a body of the wrong shape into
`MalformedAnswer`.
Must not: do I/O, read a clock, log, or guess: a value it cannot read is an error, never a default
that looks like an answer (an order's result is then unknown, never "not filled").
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Literal, Mapping, NamedTuple, Sequence, TypeVar

from rest_errors import MalformedAnswer


@dataclass(frozen=True)
class AssetMeta:
    name: str
    asset_id: int
    sz_decimals: int
    max_leverage: int


@dataclass(frozen=True)
class Meta:
    assets: Mapping[str, AssetMeta]

    def asset(self, coin: str) -> AssetMeta:
        return self.assets[coin]


@dataclass(frozen=True)
class Position:
    coin: str
    size: Decimal
    entry_px: Decimal
    leverage: int | None
    liquidation_px: Decimal | None
    unrealized_pnl: Decimal
    margin_used: Decimal


@dataclass(frozen=True)
class AccountState:
    account_value: Decimal
    withdrawable: Decimal
    positions: tuple[Position, ...]
    time_ms: int | None


@dataclass(frozen=True)
class OpenOrder:
    coin: str
    side: Literal["buy", "sell"]
    limit_px: Decimal
    size: Decimal
    oid: int
    cloid: str | None
    timestamp_ms: int


@dataclass(frozen=True)
class Fill:
    coin: str
    px: Decimal
    size: Decimal
    side: Literal["buy", "sell"]
    time_ms: int
    oid: int
    tid: int | None  # absent in fills recorded before the exchange added trade ids
    cloid: str | None
    fee: Decimal
    closed_pnl: Decimal
    dir: str
    hash: str

    @property
    def dedupe_key(self) -> str:
        """The trade id; for old fills without one, hash + oid + time (never oid alone: partials)."""
        return str(self.tid) if self.tid is not None else f"{self.hash}:{self.oid}:{self.time_ms}:{self.size}"


@dataclass(frozen=True)
class OrderStatusResult:
    status: str
    order: Mapping[str, Any] | None


@dataclass(frozen=True)
class OrderResult:
    kind: Literal["resting", "filled", "error"]
    oid: int | None
    total_size: Decimal | None
    avg_px: Decimal | None
    message: str | None
    cloid: str | None


class Candle(NamedTuple):
    """One OHLCV candle; `open_time_ms` is the start of its interval. (A NamedTuple: one is built
    per trade for the forming candle, and a frozen dataclass costs ~4x as much to build.)"""
    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


def parse_candle(raw: Mapping[str, Any]) -> Candle:
    """A Candle from one `candleSnapshot` element, e.g. (recorded, mainnet):
    {"T": 1684702799999, "c": "0.001604", "h": "0.001616", "i": "1h", "l": "0.001601",
     "n": 709, "o": "0.001601", "s": "kPEPE", "t": 1684699200000, "v": "520665683.0"}
    """
    return Candle(open_time_ms=int(raw["t"]), open=Decimal(raw["o"]), high=Decimal(raw["h"]),
                  low=Decimal(raw["l"]), close=Decimal(raw["c"]), volume=Decimal(raw["v"]))


_SIDE = {"B": "buy", "A": "sell"}


def _dec(value: Any, default: str = "0") -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(default)


def parse_meta(raw: Mapping[str, Any]) -> Meta:
    return Meta({a["name"]: AssetMeta(a["name"], i, int(a["szDecimals"]), int(a.get("maxLeverage", 1)))
                 for i, a in enumerate(raw["universe"])})


def parse_account(raw: Mapping[str, Any]) -> AccountState:
    positions = []
    for item in raw.get("assetPositions", []):
        p = item["position"]
        lev = p.get("leverage")
        positions.append(Position(
            coin=p["coin"], size=_dec(p["szi"]), entry_px=_dec(p.get("entryPx")),
            leverage=int(lev["value"]) if isinstance(lev, Mapping) else None,
            liquidation_px=None if p.get("liquidationPx") is None else _dec(p["liquidationPx"]),
            unrealized_pnl=_dec(p.get("unrealizedPnl")), margin_used=_dec(p.get("marginUsed"))))
    summary = raw.get("marginSummary", {})
    return AccountState(account_value=_dec(summary.get("accountValue")), withdrawable=_dec(raw.get("withdrawable")),
                        positions=tuple(positions), time_ms=raw.get("time"))


def parse_open_order(o: Mapping[str, Any]) -> OpenOrder:
    return OpenOrder(coin=o["coin"], side=_SIDE[o["side"]], limit_px=_dec(o["limitPx"]), size=_dec(o["sz"]),
                     oid=int(o["oid"]), cloid=o.get("cloid"), timestamp_ms=int(o.get("timestamp", 0)))


def parse_fill(f: Mapping[str, Any]) -> Fill:
    return Fill(coin=f["coin"], px=_dec(f["px"]), size=_dec(f["sz"]), side=_SIDE[f["side"]], time_ms=int(f["time"]),
                oid=int(f["oid"]), tid=int(f["tid"]) if f.get("tid") is not None else None, cloid=f.get("cloid"), fee=_dec(f.get("fee")),
                closed_pnl=_dec(f.get("closedPnl")), dir=str(f.get("dir", "")), hash=str(f.get("hash", "")))


def parse_order_status(raw: Mapping[str, Any]) -> OrderStatusResult:
    """`orderStatus` by oid or cloid, e.g. {"status": "order", "order": {"order": {...}, "status":
    "filled", "statusTimestamp": 1}} or {"status": "unknownOid"}."""
    if raw.get("status") != "order":
        return OrderStatusResult(str(raw.get("status", "unknownOid")), None)
    order = raw["order"]
    return OrderStatusResult(str(order["status"]), order)


def _positive(value: Any) -> Decimal:
    number = Decimal(str(value))
    if not number.is_finite() or number <= 0:
        raise ValueError(f"expected a number > 0, got {value!r}")
    return number


def parse_statuses(statuses: Sequence[Any], cloids: Sequence[str | None]) -> list[OrderResult]:
    """One OrderResult per status of an order answer, e.g. [{"filled": {"totalSz": "0.02",
    "avgPx": "1891.4", "oid": 77738308}}, {"resting": {"oid": 77738309}}, {"error": "..."}].
    Raises ValueError on anything else (an unknown word, a fill of 0 or NaN): the caller cannot
    tell what happened, so the order's result is unknown, never "not filled"."""
    out = []
    for status, cloid in zip(statuses, list(cloids) + [None] * (len(statuses) - len(cloids))):
        if not isinstance(status, Mapping) or len(status) != 1:
            raise ValueError(f"unexpected order status {str(status)[:80]}")
        if "resting" in status:
            out.append(OrderResult("resting", int(status["resting"]["oid"]), None, None, None, cloid))
        elif "filled" in status:
            f = status["filled"]
            out.append(OrderResult("filled", int(f["oid"]), _positive(f["totalSz"]), _positive(f["avgPx"]), None,
                                   cloid))
        elif "error" in status:
            out.append(OrderResult("error", None, None, None, str(status["error"]), cloid))
        else:
            raise ValueError(f"unexpected order status {str(status)[:80]}")
    return out


# What the parsers raise on a body of the wrong shape; turned into MalformedAnswer.
PARSE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError)
T = TypeVar("T")


def parsed(parse: Callable[[Any], T], raw: Any, what: str) -> T:
    """`parse(raw)`, with any error of a malformed body raised as MalformedAnswer naming `what`."""
    try:
        return parse(raw)
    except PARSE_ERRORS as exc:
        raise MalformedAnswer(f"{what}: malformed answer ({type(exc).__name__}: {exc})"[:300]) from exc


@dataclass(frozen=True)
class Agent:
    """An API wallet approved by an account (`extraAgents`)."""
    name: str
    address: str
    valid_until_ms: int | None

    def valid_at(self, now_ms: int) -> bool:
        return self.valid_until_ms is None or now_ms < self.valid_until_ms


def parse_agent(raw: Mapping[str, Any]) -> Agent:
    """One `extraAgents` entry, e.g. {"name": "hlbot", "address": "0x...", "validUntil": 1735689600000}."""
    until = raw.get("validUntil")
    return Agent(name=str(raw.get("name") or ""), address=str(raw["address"]),
                 valid_until_ms=int(until) if until is not None else None)


@dataclass(frozen=True)
class FundingPayment:
    """A funding payment of the account: `usdc` > 0 received, < 0 paid."""
    coin: str
    time_ms: int
    usdc: Decimal
    szi: Decimal
    rate: Decimal


def parse_funding(raw: Mapping[str, Any]) -> FundingPayment:
    """One `userFunding` entry, e.g. (recorded): {"delta": {"coin": "APE", "fundingRate": "-0.00029319",
    "nSamples": 3, "szi": "40.13333333", "type": "funding", "usdc": "0.145796"}, "hash": "0xe3f4…",
    "time": 1681948800000}."""
    delta = raw["delta"]
    if delta.get("type") != "funding":
        raise ValueError(f"not a funding entry: {str(delta)[:80]}")
    return FundingPayment(coin=str(delta["coin"]), time_ms=int(raw["time"]), usdc=Decimal(str(delta["usdc"])),
                          szi=Decimal(str(delta["szi"])), rate=Decimal(str(delta["fundingRate"])))
