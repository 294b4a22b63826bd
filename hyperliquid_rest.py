"""REST client: `/info` queries and signed `/exchange` actions, with typed results and errors.

Owns: two kept-alive transports (`http_line`: one for `/info`, one for `/exchange`, sharing one
`name_lookup.Resolver`), each call one request within a total deadline (name lookup to last
byte), the mapping of transport failures,
HTTP statuses and malformed bodies to a small exception hierarchy (`rest_errors`; the answers'
types and parsers are in `wire`), a client-side weight budget
under the exchange's 1200/min, order wire dicts (key order as the official SDK), signing through
`signing.L1Signer` with a short `expiresAfter` on every action (an order's never later than the
caller's `expires_by_ms`: its record promises that to the next start), and the three outcomes of
an action: done (an answer we parsed), not executed (nothing reached the exchange, or it refused
the whole request) or unknown (`ResultUnknown`: anything else).
Must not: sleep, retry, or re-send anything (the trading loop decides, with timers); log a key or
a signature; return the exchange's `{"status":"err"}` like a success.
"""
from __future__ import annotations

import collections
import json
import logging
import time
from decimal import Decimal
from typing import Any, Callable, Mapping, Protocol

import requests

from http_line import HttpLine, LineError, RequestsLine, session_for
from name_lookup import Resolver
from rest_errors import (HyperliquidError, MalformedAnswer, NetworkError, OrderRejected, OrderStatusUnknown,
                         RateLimited, RequestRejected, ResultUnknown, ServerError)
from signing import (L1Signer, NonceClock, float_to_wire, is_valid_price, is_valid_size, new_cloid,
                     sign_l1_action)
from sizing import slippage_price
from wire import (PARSE_ERRORS, AccountState, Agent, Fill, FundingPayment, Meta, OpenOrder, OrderResult,
                  OrderStatusResult, parse_account, parse_agent, parse_candle, parse_fill, parse_funding, parse_meta,
                  parse_open_order, parse_order_status, parse_statuses, parsed)

log = logging.getLogger("rest")

__all__ = ["sign_l1_action", "HyperliquidRestClient"]  # sign_l1_action: INTERFACES.md


# ---- the client -------------------------------------------------------------------------------

_INFO_WEIGHT_2 = frozenset({"l2Book", "allMids", "clearinghouseState", "orderStatus", "exchangeStatus",
                            "spotClearinghouseState"})
WEIGHT_PER_MINUTE = 1200


class WeightBudget:
    """Sliding 60 s window of request weight under the exchange's per-IP limit. `take()` never
    waits: over the budget it raises RateLimited with the time until weight frees up."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit, self.clock = limit, clock
        self._spent: collections.deque[tuple[float, int]] = collections.deque()
        self._total = 0

    def take(self, weight: int, refuse: bool = True) -> None:
        """Spend `weight`; over the budget raise RateLimited, unless `refuse` is False (signed
        actions: an exit must never wait for /info traffic; they are counted all the same)."""
        now = self.clock()
        while self._spent and now - self._spent[0][0] >= 60.0:
            self._total -= self._spent.popleft()[1]
        if refuse and self._total + weight > self.limit and self._spent:
            wait_s = 60.0 - (now - self._spent[0][0])
            raise RateLimited(wait_s, f"client-side weight budget spent ({self._total}/{self.limit} per "
                                      f"minute); free again in {wait_s:.1f}s")
        self._spent.append((now, weight))
        self._total += weight


class Transport(Protocol):
    def post(self, path: str, body: bytes, deadline_s: float | None = None) -> tuple[int, str | None, bytes]: ...

    def close(self) -> None: ...


class HyperliquidRestClient:
    """Typed access to `/info` and `/exchange`. No I/O in the constructor, no sleeping, no retries:
    every call is one request within a total deadline, and the caller (the trading loop) decides
    when to try again.

    `info_deadline_s` / `exchange_deadline_s`: the most one call may take, connect to last byte.
    `expires_after_s`: every signed action carries `expiresAfter` = now + this, so that once it
    has passed an order the exchange never saw can no longer arrive (None: not sent)."""

    def __init__(self, base_url: str, signer: L1Signer | None = None, *, session: requests.Session | None = None,
                 connect_timeout_s: float = 3.05, info_deadline_s: float = 3.0, exchange_deadline_s: float = 5.0,
                 expires_after_s: float | None = 5.0, order_line: bool = True,
                 nonce_clock: NonceClock | None = None, vault_address: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or session_for(self.base_url)
        self.info_line, self.exchange_line = self._transports(order_line, connect_timeout_s)
        self.info_deadline_s = info_deadline_s
        self.exchange_deadline_s = exchange_deadline_s
        self.expires_after_ms = None if expires_after_s is None else int(expires_after_s * 1000)
        self.signer = signer
        self.nonces = nonce_clock or NonceClock()
        self.vault_address = vault_address
        self.clock = clock
        self.wall_ms = wall_ms
        self.budget = WeightBudget(WEIGHT_PER_MINUTE, clock)
        self._meta: Meta | None = None

    def _transports(self, order_line: bool, connect_timeout_s: float) -> tuple[Transport, Transport]:
        """One kept-alive http.client line each for /info and /exchange, verified against the CA
        bundle requests uses; through `requests` instead when a proxy is configured for this URL,
        verification is off, or the caller asks (`order_line=False`: tests mocking requests)."""
        verify = self.session.verify
        proxied = requests.utils.select_proxy(self.base_url, self.session.proxies)
        if not order_line or verify is False or proxied:
            line = RequestsLine(self.session, self.base_url, connect_timeout_s)
            return line, line
        bundle = verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
        resolver = Resolver()  # one lookup thread and one last good address for both lines (same host)
        return (HttpLine(self.base_url, connect_timeout_s, ca_bundle=bundle, resolver=resolver),
                HttpLine(self.base_url, connect_timeout_s, ca_bundle=bundle, resolver=resolver))

    @property
    def address(self) -> str | None:
        return None if self.signer is None else self.signer.address

    def close(self) -> None:
        self.session.close()
        self.info_line.close()
        self.exchange_line.close()

    # ---- transport ----

    def _post(self, line: Transport, path: str, body: Mapping[str, Any], deadline_s: float) -> Any:
        """One POST within `deadline_s`; the parsed JSON answer, or a typed error."""
        data = json.dumps(body, separators=(",", ":")).encode()
        try:
            status, retry_after, raw = line.post(path, data, deadline_s)
        except LineError as exc:
            raise NetworkError(f"{path}: {exc}", sent=exc.sent) from exc
        if status == 429:
            raise RateLimited(_retry_after_s(retry_after))
        if status >= 500:
            raise ServerError(status, raw.decode("utf-8", "replace"))
        if status >= 300:
            raise RequestRejected(status, raw.decode("utf-8", "replace"))
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
            raise MalformedAnswer(f"{path}: answer is not JSON ({raw[:80]!r})") from exc

    def info(self, body: Mapping[str, Any]) -> Any:
        """POST /info once, inside the weight budget and the info deadline."""
        self.budget.take(2 if body.get("type") in _INFO_WEIGHT_2 else 20)
        return self._post(self.info_line, "/info", body, self.info_deadline_s)

    # ---- /info ----

    def meta(self) -> Meta:
        if self._meta is None:
            self._meta = parsed(parse_meta, self.info({"type": "meta"}), "meta")
        return self._meta

    def all_mids(self) -> dict[str, Decimal]:
        return parsed(lambda raw: {coin: Decimal(px) for coin, px in raw.items()},
                      self.info({"type": "allMids"}), "allMids")

    def mid(self, coin: str) -> Decimal | None:
        return self.all_mids().get(coin)

    def l2_book(self, coin: str) -> Mapping[str, Any]:
        return self.info({"type": "l2Book", "coin": coin})

    def candle_snapshot(self, coin: str, interval: str, start_ms: int, end_ms: int) -> list[Any]:
        raw = self.info({"type": "candleSnapshot",
                         "req": {"coin": coin, "interval": interval, "startTime": start_ms, "endTime": end_ms}})
        return parsed(lambda items: [parse_candle(c) for c in items], raw, "candleSnapshot")

    def clearinghouse_state(self, user: str) -> AccountState:
        return parsed(parse_account, self.info({"type": "clearinghouseState", "user": user}), "clearinghouseState")

    def open_orders(self, user: str) -> list[OpenOrder]:
        return parsed(lambda items: [parse_open_order(o) for o in items],
                      self.info({"type": "openOrders", "user": user}), "openOrders")

    def user_fills(self, user: str) -> list[Fill]:
        return parsed(lambda items: [parse_fill(f) for f in items],
                      self.info({"type": "userFills", "user": user}), "userFills")

    def user_fills_by_time(self, user: str, start_ms: int, end_ms: int | None = None) -> list[Fill]:
        body: dict[str, Any] = {"type": "userFillsByTime", "user": user, "startTime": start_ms}
        if end_ms is not None:
            body["endTime"] = end_ms
        return parsed(lambda items: [parse_fill(f) for f in items], self.info(body), "userFillsByTime")

    def order_status(self, user: str, oid_or_cloid: int | str) -> OrderStatusResult:
        return parsed(parse_order_status, self.info({"type": "orderStatus", "user": user, "oid": oid_or_cloid}),
                      "orderStatus")

    def user_funding(self, user: str, start_ms: int, end_ms: int | None = None) -> list[FundingPayment]:
        body: dict[str, Any] = {"type": "userFunding", "user": user, "startTime": start_ms}
        if end_ms is not None:
            body["endTime"] = end_ms
        return parsed(lambda items: [parse_funding(f) for f in items], self.info(body), "userFunding")

    def extra_agents(self, user: str) -> list[Agent]:
        """The API (agent) wallets `user` has approved."""
        return parsed(lambda items: [parse_agent(a) for a in items], self.info({"type": "extraAgents", "user": user}),
                      "extraAgents")

    # ---- /exchange ----

    def _exchange(self, action: dict[str, Any], cloid: str | None = None, expires_by_ms: int | None = None) -> Any:
        """Sign and send one action; return the answer's `response`.

        `expires_by_ms`: the latest expiresAfter the caller allows (its order record promises no
        later one to the next start: execution.py); signed is the earlier of it and now + ours.

        Raises the "not executed" errors (NetworkError with sent=False, RequestRejected for the
        exchange's whole-request `err`, RateLimited from the client-side budget, OrderRejected for
        a single order's `err`, HyperliquidError when `expires_by_ms` has already passed) or
        ResultUnknown (OrderStatusUnknown when `cloid` is given) for anything after which the
        action may have executed."""
        if self.signer is None:
            raise HyperliquidError("no signer: this client cannot send /exchange actions")
        expires = self._expires_after(expires_by_ms)
        self.budget.take(1 + len(action.get("orders", ())) // 40, refuse=False)
        nonce = self.nonces.next()
        signature = self.signer.sign(action, nonce, self.vault_address, expires)
        body = {"action": action, "nonce": nonce, "signature": signature, "vaultAddress": self.vault_address,
                "expiresAfter": expires}
        try:
            answer = self._post(self.exchange_line, "/exchange", body, self.exchange_deadline_s)
        except NetworkError as exc:
            if not exc.sent:
                raise
            raise _unknown(cloid, expires, str(exc)) from exc
        except RateLimited as exc:  # a 429 after the request left: refused, most likely; not known
            raise _unknown(cloid, expires, str(exc), exc.retry_after_s) from exc
        except HyperliquidError as exc:  # 5xx, another status, not JSON
            raise _unknown(cloid, expires, str(exc)) from exc
        if not isinstance(answer, Mapping) or answer.get("status") not in ("ok", "err"):
            raise _unknown(cloid, expires, f"unexpected answer {str(answer)[:120]}")
        if answer["status"] == "err":  # the whole request refused: nothing executed
            if cloid is not None:
                raise OrderRejected(str(answer.get("response")), cloid)
            raise RequestRejected(200, str(answer.get("response")))
        return answer.get("response"), expires

    def _expires_after(self, bound_ms: int | None) -> int | None:
        """The expiresAfter to sign: now + `expires_after_ms`, never later than `bound_ms`."""
        now_ms = self.wall_ms()
        own = None if self.expires_after_ms is None else now_ms + self.expires_after_ms
        if bound_ms is None:
            return own
        if bound_ms <= now_ms:  # the exchange would refuse it as expired (and charge for it)
            raise HyperliquidError(f"not sent: its expiry bound passed {now_ms - bound_ms} ms before signing")
        return bound_ms if own is None else min(own, bound_ms)

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

    def bulk_orders(self, wires: list[dict[str, Any]], grouping: str = "na",
                    expires_by_ms: int | None = None) -> list[OrderResult]:
        """Send order wires once, signed to expire by `expires_by_ms` at the latest (`_exchange`).
        A lost or unreadable answer raises OrderStatusUnknown (for a single order with a cloid;
        ResultUnknown otherwise): never re-sent here, the caller looks the cloid up once the
        order's expiry has passed."""
        action = {"type": "order", "orders": wires, "grouping": grouping}
        cloids = [w.get("c") for w in wires]
        single = cloids[0] if len(cloids) == 1 else None
        response, expires = self._exchange(action, single, expires_by_ms)
        try:
            statuses = response["data"]["statuses"]
            if not isinstance(statuses, list) or len(statuses) != len(wires):
                raise ValueError(f"{len(wires)} orders, statuses {str(statuses)[:80]}")
            return parse_statuses(statuses, cloids)
        except PARSE_ERRORS as exc:
            raise _unknown(single, expires, f"unreadable order answer ({type(exc).__name__}: {exc})") from exc

    def place_order(self, coin: str, is_buy: bool, size: Decimal, limit_px: Decimal, tif: str = "Gtc",
                    reduce_only: bool = False, cloid: str | None = None,
                    expires_by_ms: int | None = None) -> list[OrderResult]:
        wire = self.order_wire(coin, is_buy, size, limit_px, {"limit": {"tif": tif}}, reduce_only,
                               cloid or new_cloid())
        return self.bulk_orders([wire], expires_by_ms=expires_by_ms)

    def market_order(self, coin: str, is_buy: bool, size: Decimal, slippage_pct: Decimal,
                     reference_px: Decimal | None = None, reduce_only: bool = False,
                     cloid: str | None = None, expires_by_ms: int | None = None) -> list[OrderResult]:
        """An IOC limit at the reference (or mid) price moved by `slippage_pct` percent."""
        px = reference_px if reference_px is not None else self.mid(coin)
        if px is None:
            raise HyperliquidError(f"no price for {coin}")
        limit = slippage_price(px, is_buy, slippage_pct, self.meta().asset(coin).sz_decimals)
        return self.place_order(coin, is_buy, size, limit, tif="Ioc", reduce_only=reduce_only, cloid=cloid,
                                expires_by_ms=expires_by_ms)

    def trigger_order(self, coin: str, is_buy: bool, size: Decimal, trigger_px: Decimal, tpsl: str,
                      is_market: bool = True, limit_px: Decimal | None = None, reduce_only: bool = True,
                      cloid: str | None = None, grouping: str = "na",
                      expires_by_ms: int | None = None) -> list[OrderResult]:
        order_type = {"trigger": {"isMarket": is_market, "triggerPx": float_to_wire(trigger_px), "tpsl": tpsl}}
        wire = self.order_wire(coin, is_buy, size, limit_px if limit_px is not None else trigger_px, order_type,
                               reduce_only, cloid or new_cloid())
        return self.bulk_orders([wire], grouping, expires_by_ms)

    def cancel(self, coin: str, oid: int) -> bool:
        action = {"type": "cancel", "cancels": [{"a": self.meta().asset(coin).asset_id, "o": oid}]}
        return self._cancel_result(*self._exchange(action))

    def cancel_by_cloid(self, coin: str, cloid: str) -> bool:
        action = {"type": "cancelByCloid", "cancels": [{"asset": self.meta().asset(coin).asset_id, "cloid": cloid}]}
        return self._cancel_result(*self._exchange(action))

    @staticmethod
    def _cancel_result(response: Any, expires: int | None) -> bool:
        try:
            return all(s == "success" for s in response["data"]["statuses"])
        except PARSE_ERRORS as exc:
            raise ResultUnknown(f"unreadable cancel answer ({type(exc).__name__})", expires) from exc

    def update_leverage(self, coin: str, leverage: int, is_cross: bool = True) -> None:
        action = {"type": "updateLeverage", "asset": self.meta().asset(coin).asset_id, "isCross": is_cross,
                  "leverage": leverage}
        self._exchange(action)

    def schedule_cancel(self, time_ms: int | None) -> None:
        action: dict[str, Any] = {"type": "scheduleCancel"}
        if time_ms is not None:
            action["time"] = time_ms
        self._exchange(action)


def _retry_after_s(header: str | None) -> float:
    try:
        return max(0.0, float(header or "1"))
    except ValueError:
        return 1.0


def _unknown(cloid: str | None, expires: int | None, why: str,
             retry_after_s: float | None = None) -> ResultUnknown:
    if cloid is not None:
        return OrderStatusUnknown(cloid, expires, why, retry_after_s)
    return ResultUnknown(f"action result unknown ({why})", expires, retry_after_s)
