"""REST client: `/info` queries and signed `/exchange` actions, with typed results and errors.

Owns: one `requests.Session` for `/info` and one `http_line.HttpLine` for `/exchange` (both
keep-alive, a timeout on every call), mapping of transport failures
and HTTP statuses to a small exception hierarchy, retries of `/info` with backoff and jitter, a
client-side weight budget under the exchange's 1200/min, order wire dicts (key order as the
official SDK), signing through `signing.L1Signer`, and the rule that an order is never re-sent
blindly: after a transport failure it is looked up by its cloid first.
Must not: log a key or a signature, or return the exchange's `{"status":"err"}` like a success.
"""
from __future__ import annotations

import collections
import json
import logging
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Literal, Mapping, Sequence

import requests
from requests.structures import CaseInsensitiveDict

from http_line import HttpLine, LineError
from signing import (L1Signer, NonceClock, float_to_wire, is_valid_price, is_valid_size, new_cloid,
                     sign_l1_action)
from sizing import slippage_price

log = logging.getLogger("rest")

__all__ = ["sign_l1_action", "HyperliquidRestClient", "HyperliquidError", "NetworkError", "RateLimited",
           "ServerError", "RequestRejected", "OrderRejected", "OrderStatusUnknown", "OrderResult", "Meta",
           "AssetMeta", "AccountState", "Position", "OpenOrder", "Fill", "OrderStatusResult"]


# ---- errors -----------------------------------------------------------------------------------

class HyperliquidError(Exception):
    """Base of every error this client raises; `retryable` says whether trying again can help."""

    retryable = False


class NetworkError(HyperliquidError):
    retryable = True


class RateLimited(HyperliquidError):
    retryable = True

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limited (HTTP 429); retry after {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


class ServerError(HyperliquidError):
    retryable = True

    def __init__(self, status: int, body: str = "") -> None:
        super().__init__(f"server error HTTP {status}: {body[:200]}")
        self.status = status


class RequestRejected(HyperliquidError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"request rejected (HTTP {status}): {body[:300]}")
        self.status = status
        self.body = body


class OrderRejected(HyperliquidError):
    def __init__(self, message: str, cloid: str | None) -> None:
        super().__init__(f"order {cloid} rejected: {message}")
        self.message = message
        self.cloid = cloid


class OrderStatusUnknown(HyperliquidError):
    """The order was sent, the answer was lost, and the exchange could not be asked about it."""

    def __init__(self, cloid: str) -> None:
        super().__init__(f"order {cloid}: result unknown after a network failure; look it up by cloid")
        self.cloid = cloid


# ---- results ----------------------------------------------------------------------------------

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


def parse_statuses(statuses: Sequence[Any], cloids: Sequence[str | None]) -> list[OrderResult]:
    out = []
    for status, cloid in zip(statuses, list(cloids) + [None] * (len(statuses) - len(cloids))):
        if isinstance(status, Mapping) and "resting" in status:
            out.append(OrderResult("resting", int(status["resting"]["oid"]), None, None, None, cloid))
        elif isinstance(status, Mapping) and "filled" in status:
            f = status["filled"]
            out.append(OrderResult("filled", int(f["oid"]), _dec(f["totalSz"]), _dec(f["avgPx"]), None, cloid))
        elif isinstance(status, Mapping) and "error" in status:
            out.append(OrderResult("error", None, None, None, str(status["error"]), cloid))
        else:
            out.append(OrderResult("error", None, None, None, f"unexpected status {status!r}", cloid))
    return out


# ---- the client -------------------------------------------------------------------------------

_INFO_WEIGHT_2 = frozenset({"l2Book", "allMids", "clearinghouseState", "orderStatus", "exchangeStatus",
                            "spotClearinghouseState"})
WEIGHT_PER_MINUTE = 1200
# After an order's answer was lost, ask about it no sooner than this after sending: a request that
# reached the exchange is in a block by then, so "unknownOid" means it never arrived. (Asked at once
# after a reset, it could be answered before the order is processed, and the order re-sent twice.)
LOST_ORDER_GRACE_S = 2.0


class WeightBudget:
    """Sliding 60 s window of request weight; `take()` sleeps rather than go over the limit."""

    def __init__(self, limit: int, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.limit, self.clock, self.sleep = limit, clock, sleep
        self._spent: collections.deque[tuple[float, int]] = collections.deque()
        self._total = 0

    def take(self, weight: int) -> float:
        waited = 0.0
        while True:
            now = self.clock()
            while self._spent and now - self._spent[0][0] >= 60.0:
                self._total -= self._spent.popleft()[1]
            if self._total + weight <= self.limit or not self._spent:
                self._spent.append((now, weight))
                self._total += weight
                return waited
            wait = 60.0 - (now - self._spent[0][0])
            log.warning("REST weight budget spent (%d/%d per minute); waiting %.1fs", self._total, self.limit, wait)
            self.sleep(wait)
            waited += wait


_HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "hlbot",
            "Connection": "keep-alive", "Accept-Encoding": "gzip, deflate"}


def _session_for(base_url: str) -> requests.Session:
    """A keep-alive session whose environment settings are read once, here.

    With `trust_env` on, requests scans the whole environment on every call (about 0.5 ms of an
    order's path on this machine); resolving it once keeps HTTPS_PROXY/NO_PROXY and
    REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE working."""
    session = requests.Session()
    env = session.merge_environment_settings(base_url, {}, None, None, None)
    session.proxies.update(env["proxies"])
    session.verify = env["verify"]
    session.trust_env = False
    return session


class HyperliquidRestClient:
    """Typed access to `/info` and `/exchange`. No I/O in the constructor."""

    def __init__(self, base_url: str, session: requests.Session | None = None,
                 timeout_s: tuple[float, float] = (3.05, 10.0), signer: L1Signer | None = None,
                 order_line: bool = True,
                 nonce_clock: NonceClock | None = None, vault_address: str | None = None,
                 expires_after_ms: int | None = None, max_info_retries: int = 3,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or _session_for(self.base_url)
        # Signed actions go over their own kept-alive http.client connection (HttpLine), verified
        # against the CA bundle requests uses, unless a proxy is configured for this URL or
        # verification is off (requests handles both), or the caller passes order_line=False
        # (tests that mock requests with `responses`).
        self.line: HttpLine | None = None
        verify = self.session.verify
        if order_line and verify is not False and not requests.utils.select_proxy(self.base_url, self.session.proxies):
            bundle = verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
            self.line = HttpLine(self.base_url, *timeout_s, ca_bundle=bundle)
        self.timeout_s = timeout_s
        self.signer = signer
        self.nonces = nonce_clock or NonceClock()
        self.vault_address = vault_address
        self.expires_after_ms = expires_after_ms
        self.max_info_retries = max_info_retries
        self.clock = clock
        self.sleep = sleep
        self.rng = rng
        self.budget = WeightBudget(WEIGHT_PER_MINUTE, clock, sleep)
        self._meta: Meta | None = None

    def close(self) -> None:
        self.session.close()
        if self.line is not None:
            self.line.close()

    # ---- transport ----

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        data = json.dumps(body, separators=(",", ":")).encode()
        if self.line is not None and path == "/exchange":
            try:
                status, retry_after, raw = self.line.post(path, data)
            except LineError as exc:
                raise NetworkError(str(exc)) from exc
        else:
            status, retry_after, raw = self._requests_post(path, data)
        if status == 429:
            try:
                wait_s = float(retry_after or "1")
            except ValueError:
                wait_s = 1.0
            raise RateLimited(wait_s)
        if status >= 500:
            raise ServerError(status, raw.decode("utf-8", "replace"))
        if status >= 300:
            raise RequestRejected(status, raw.decode("utf-8", "replace"))
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ServerError(status, "answer is not JSON") from exc

    def _requests_post(self, path: str, data: bytes) -> tuple[int, str | None, bytes]:
        # A request prepared by hand: Session.post's generic merging (cookies, auth, hooks, env)
        # costs about 0.6 ms per call and we use none of it. Bytes, so that headers and body
        # leave in one send.
        prepared = requests.PreparedRequest()
        prepared.method = "POST"
        prepared.url = self.base_url + path
        prepared.headers = CaseInsensitiveDict(_HEADERS)
        prepared.headers["Content-Length"] = str(len(data))
        prepared.body = data
        prepared.hooks = {"response": []}
        prepared._cookies = requests.cookies.RequestsCookieJar()  # requests reads it on a 3xx answer
        try:
            # No redirects: the API never sends one, and following it would re-POST a signed action.
            resp = self.session.send(prepared, timeout=self.timeout_s, allow_redirects=False)
        except requests.Timeout as exc:
            raise NetworkError(f"{path}: timed out") from exc
        except requests.ConnectionError as exc:
            raise NetworkError(f"{path}: connection failed") from exc
        except requests.RequestException as exc:
            raise NetworkError(f"{path}: {type(exc).__name__}") from exc
        return resp.status_code, resp.headers.get("Retry-After"), resp.content

    def info(self, body: Mapping[str, Any]) -> Any:
        """POST /info with the weight budget and retries of retryable errors (backoff + jitter)."""
        weight = 2 if body.get("type") in _INFO_WEIGHT_2 else 20
        attempt = 0
        while True:
            self.budget.take(weight)
            try:
                return self._post("/info", body)
            except HyperliquidError as exc:
                attempt += 1
                if not exc.retryable or attempt > self.max_info_retries:
                    raise
                delay = exc.retry_after_s if isinstance(exc, RateLimited) else min(8.0, 0.25 * 2 ** (attempt - 1))
                delay *= 1 + 0.2 * self.rng()
                log.warning("/info %s failed (%s); retry %d/%d in %.2fs", body.get("type"), exc, attempt,
                            self.max_info_retries, delay)
                self.sleep(delay)

    # ---- /info ----

    def meta(self) -> Meta:
        if self._meta is None:
            self._meta = parse_meta(self.info({"type": "meta"}))
        return self._meta

    def all_mids(self) -> dict[str, Decimal]:
        return {coin: Decimal(px) for coin, px in self.info({"type": "allMids"}).items()}

    def mid(self, coin: str) -> Decimal | None:
        return self.all_mids().get(coin)

    def l2_book(self, coin: str) -> Mapping[str, Any]:
        return self.info({"type": "l2Book", "coin": coin})

    def candle_snapshot(self, coin: str, interval: str, start_ms: int, end_ms: int) -> list[Any]:
        from strategies import parse_candle
        raw = self.info({"type": "candleSnapshot",
                         "req": {"coin": coin, "interval": interval, "startTime": start_ms, "endTime": end_ms}})
        return [parse_candle(c) for c in raw]

    def clearinghouse_state(self, user: str) -> AccountState:
        return parse_account(self.info({"type": "clearinghouseState", "user": user}))

    def open_orders(self, user: str) -> list[OpenOrder]:
        return [parse_open_order(o) for o in self.info({"type": "openOrders", "user": user})]

    def user_fills(self, user: str) -> list[Fill]:
        return [parse_fill(f) for f in self.info({"type": "userFills", "user": user})]

    def user_fills_by_time(self, user: str, start_ms: int, end_ms: int | None = None) -> list[Fill]:
        body: dict[str, Any] = {"type": "userFillsByTime", "user": user, "startTime": start_ms}
        if end_ms is not None:
            body["endTime"] = end_ms
        return [parse_fill(f) for f in self.info(body)]

    def order_status(self, user: str, oid_or_cloid: int | str) -> OrderStatusResult:
        raw = self.info({"type": "orderStatus", "user": user, "oid": oid_or_cloid})
        if raw.get("status") != "order":
            return OrderStatusResult(str(raw.get("status", "unknownOid")), None)
        order = raw["order"]
        return OrderStatusResult(str(order.get("status")), order)

    # ---- /exchange ----

    def _exchange(self, action: dict[str, Any]) -> Any:
        if self.signer is None:
            raise HyperliquidError("no signer: this client cannot send /exchange actions")
        nonce = self.nonces.next()
        expires = self.expires_after_ms
        signature = self.signer.sign(action, nonce, self.vault_address, expires)
        self.budget.take(1 + len(action.get("orders", ())) // 40)
        return self._post("/exchange", {"action": action, "nonce": nonce, "signature": signature,
                                        "vaultAddress": self.vault_address, "expiresAfter": expires})

    def _checked(self, answer: Any, cloid: str | None = None) -> Any:
        if not isinstance(answer, Mapping) or answer.get("status") != "ok":
            text = answer.get("response") if isinstance(answer, Mapping) else answer
            if cloid is not None:
                raise OrderRejected(str(text), cloid)
            raise RequestRejected(200, str(text))
        return answer.get("response")

    def order_wire(self, coin: str, is_buy: bool, size: Decimal, limit_px: Decimal, order_type: dict[str, Any],
                   reduce_only: bool, cloid: str | None) -> dict[str, Any]:
        asset = self.meta().asset(coin)
        if not is_valid_price(limit_px, asset.sz_decimals):
            raise ValueError(f"{coin} price {limit_px} breaks the tick rule (5 significant figures, "
                             f"{6 - asset.sz_decimals} decimals)")
        if not is_valid_size(size, asset.sz_decimals):
            raise ValueError(f"{coin} size {size} breaks the lot rule ({asset.sz_decimals} decimals, > 0)")
        wire: dict[str, Any] = {"a": asset.asset_id, "b": is_buy, "p": float_to_wire(limit_px),
                                "s": float_to_wire(size), "r": reduce_only, "t": order_type}
        if cloid is not None:
            wire["c"] = cloid
        return wire

    def bulk_orders(self, wires: list[dict[str, Any]], grouping: str = "na") -> list[OrderResult]:
        """Send order wires; on a transport failure, look each up by cloid instead of re-sending."""
        action = {"type": "order", "orders": wires, "grouping": grouping}
        cloids = [w.get("c") for w in wires]
        sent_at = self.clock()
        try:
            answer = self._exchange(action)
        except NetworkError:
            if len(wires) != 1 or cloids[0] is None:
                raise
            wait_s = LOST_ORDER_GRACE_S - (self.clock() - sent_at)
            if wait_s > 0:
                self.sleep(wait_s)
            return [self._resolve_lost_order(action, cloids[0])]
        response = self._checked(answer, cloids[0] if len(cloids) == 1 else None)
        return parse_statuses(response["data"]["statuses"], cloids)

    def _resolve_lost_order(self, action: dict[str, Any], cloid: str) -> OrderResult:
        """The answer to an order was lost: ask the exchange by cloid; re-send only if it never saw it."""
        if self.signer is None:
            raise OrderStatusUnknown(cloid)
        for attempt in range(3):
            try:
                status = self.order_status(self.signer.address, cloid)
                break
            except HyperliquidError:
                self.sleep(0.2 * (attempt + 1))
        else:
            raise OrderStatusUnknown(cloid)
        if status.status == "unknownOid":
            log.warning("order %s: answer lost and the exchange never saw it; sending it once more", cloid)
            response = self._checked(self._exchange(action), cloid)  # same cloid: a duplicate is refused
            return parse_statuses(response["data"]["statuses"], [cloid])[0]
        log.warning("order %s: answer lost; the exchange says %s", cloid, status.status)
        order = (status.order or {}).get("order", {})
        oid = order.get("oid")
        if status.status == "filled":
            size = _dec(order.get("origSz"))
            return OrderResult("filled", oid, size, _dec(order.get("limitPx")), None, cloid)
        if status.status in ("open", "triggered"):
            return OrderResult("resting", oid, None, None, None, cloid)
        return OrderResult("error", oid, None, None, status.status, cloid)

    def place_order(self, coin: str, is_buy: bool, size: Decimal, limit_px: Decimal, tif: str = "Gtc",
                    reduce_only: bool = False, cloid: str | None = None) -> list[OrderResult]:
        wire = self.order_wire(coin, is_buy, size, limit_px, {"limit": {"tif": tif}}, reduce_only,
                               cloid or new_cloid())
        return self.bulk_orders([wire])

    def market_order(self, coin: str, is_buy: bool, size: Decimal, slippage_pct: Decimal,
                     reference_px: Decimal | None = None, reduce_only: bool = False,
                     cloid: str | None = None) -> list[OrderResult]:
        """An IOC limit at the reference (or mid) price moved by `slippage_pct` percent."""
        px = reference_px if reference_px is not None else self.mid(coin)
        if px is None:
            raise HyperliquidError(f"no price for {coin}")
        limit = slippage_price(px, is_buy, slippage_pct, self.meta().asset(coin).sz_decimals)
        return self.place_order(coin, is_buy, size, limit, tif="Ioc", reduce_only=reduce_only, cloid=cloid)

    def trigger_order(self, coin: str, is_buy: bool, size: Decimal, trigger_px: Decimal, tpsl: str,
                      is_market: bool = True, limit_px: Decimal | None = None, reduce_only: bool = True,
                      cloid: str | None = None, grouping: str = "na") -> list[OrderResult]:
        order_type = {"trigger": {"isMarket": is_market, "triggerPx": float_to_wire(trigger_px), "tpsl": tpsl}}
        wire = self.order_wire(coin, is_buy, size, limit_px if limit_px is not None else trigger_px, order_type,
                               reduce_only, cloid or new_cloid())
        return self.bulk_orders([wire], grouping)

    def cancel(self, coin: str, oid: int) -> bool:
        action = {"type": "cancel", "cancels": [{"a": self.meta().asset(coin).asset_id, "o": oid}]}
        return self._cancel_result(self._checked(self._exchange(action)))

    def cancel_by_cloid(self, coin: str, cloid: str) -> bool:
        action = {"type": "cancelByCloid", "cancels": [{"asset": self.meta().asset(coin).asset_id, "cloid": cloid}]}
        return self._cancel_result(self._checked(self._exchange(action)))

    @staticmethod
    def _cancel_result(response: Any) -> bool:
        statuses = response["data"]["statuses"]
        return all(s == "success" for s in statuses)

    def update_leverage(self, coin: str, leverage: int, is_cross: bool = True) -> None:
        action = {"type": "updateLeverage", "asset": self.meta().asset(coin).asset_id, "isCross": is_cross,
                  "leverage": leverage}
        self._checked(self._exchange(action))

    def schedule_cancel(self, time_ms: int | None) -> None:
        action: dict[str, Any] = {"type": "scheduleCancel"}
        if time_ms is not None:
            action["time"] = time_ms
        self._checked(self._exchange(action))
