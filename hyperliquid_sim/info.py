"""The simulator's `POST /info`: market and account queries answered from the engine.

Owns: the answer shapes of meta, spotMeta, perpDexs, allMids, metaAndAssetCtxs, l2Book,
candleSnapshot, clearinghouseState, openOrders, frontendOpenOrders, userFills, userFillsByTime,
userFunding (funding.py), orderStatus and extraAgents (from agents.py); the 422 for a body it
cannot read, and the 429 window `/control` opens.
Must not: change the engine beyond creating the account a user query names (the faucet), or
push anything on the WebSocket.
"""
from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, Callable

from aiohttp import web

from . import funding, wire
from .engine import Engine, Order
from .state import SimState, now_ms


class InfoEndpoint:
    def __init__(self, state: SimState) -> None:
        self._state = state

    async def handle(self, request: web.Request) -> web.Response:
        self._state.stats["info_requests"] += 1
        if time.monotonic() < self._state.faults.info_429_until:
            return web.Response(status=429, text="Too many requests")
        try:
            body = await request.json()
            answer = self.answer(body)
        except (ValueError, KeyError, TypeError, IndexError):
            return web.Response(status=422, text=wire.DESERIALIZE_ERROR)
        return web.json_response(answer)

    def answer(self, body: dict[str, Any]) -> Any:
        """The answer to one request body; KeyError/ValueError/TypeError/IndexError mean a 422."""
        kind, engine = body["type"], self._state.engine
        known = isinstance(kind, str)  # an unhashable "type" takes the unknown-query path too
        market = MARKET_QUERIES.get(kind) if known else None
        if market is not None:
            return market(engine, body)
        user = self._state.faucet(body["user"])  # an unknown query naming a user still funds it
        if kind == "extraAgents":
            return self._state.delegations.extra_agents(user, now_ms())
        query = USER_QUERIES.get(kind) if known else None
        if query is None:
            raise ValueError(kind)
        return query(engine, user, body)


# ---- market queries: (engine, body) -> answer ----

def meta(engine: Engine, body: dict[str, Any]) -> dict[str, Any]:
    return {"universe": [{"name": c, "szDecimals": engine.coins[c][0], "maxLeverage": engine.coins[c][1]}
                         for c in engine.names]}


def meta_and_asset_ctxs(engine: Engine, body: dict[str, Any]) -> list[Any]:
    ctxs = []
    for coin in engine.names:
        px = str(engine.prices[coin])
        ctxs.append({"funding": "0.0000125", "openInterest": "1000", "prevDayPx": px, "dayNtlVlm": "0",
                     "premium": "0", "oraclePx": px, "markPx": px, "midPx": px, "impactPxs": [px, px],
                     "dayBaseVlm": "0"})
    return [meta(engine, body), ctxs]


def l2_book(engine: Engine, body: dict[str, Any]) -> dict[str, Any]:
    return {"coin": body["coin"], "time": now_ms(), "levels": wire.book(engine, body["coin"])}


def candle_snapshot(engine: Engine, body: dict[str, Any]) -> list[dict[str, Any]]:
    req = body["req"]
    step = wire.INTERVALS_MS[req["interval"]]
    candles = engine.history.candles(req["coin"], step, int(req["startTime"]), int(req.get("endTime") or now_ms()))
    return [c.wire(req["interval"]) for c in candles]


MARKET_QUERIES: dict[str, Callable[[Engine, dict[str, Any]], Any]] = {
    "meta": meta,
    "spotMeta": lambda engine, body: {"universe": [], "tokens": []},
    "perpDexs": lambda engine, body: [None],
    "allMids": lambda engine, body: wire.mids(engine),
    "metaAndAssetCtxs": meta_and_asset_ctxs,
    "l2Book": l2_book,
    "candleSnapshot": candle_snapshot,
}


# ---- user queries: (engine, user, body) -> answer; the user's account exists ----

def asset_position(engine: Engine, user: str, coin: str) -> dict[str, Any]:
    acct = engine.account(user)
    szi, entry = acct.positions[coin]
    lev, cross = acct.leverage.get(coin, (20, True))
    mark = engine.prices[coin]
    liq = entry * (1 - Decimal(1) / lev) if szi > 0 else entry * (1 + Decimal(1) / lev)
    return {"type": "oneWay", "position": {
        "coin": coin, "szi": str(szi), "entryPx": str(entry), "positionValue": str(abs(szi) * mark),
        "unrealizedPnl": str((mark - entry) * szi), "returnOnEquity": "0", "liquidationPx": str(liq),
        "marginUsed": str(abs(szi) * mark / lev), "maxLeverage": engine.coins[coin][1],
        "leverage": {"type": "cross" if cross else "isolated", "value": lev},
        "cumFunding": {"allTime": "0", "sinceOpen": "0", "sinceChange": "0"}}}


def clearinghouse_state(engine: Engine, user: str, body: dict[str, Any]) -> dict[str, Any]:
    acct = engine.account(user)
    positions = [asset_position(engine, user, coin) for coin, (szi, _) in acct.positions.items() if szi != 0]
    value, used = engine.account_value(user), engine.margin_used(user)
    notional = sum(abs(s) * engine.prices[c] for c, (s, _) in acct.positions.items())
    summary = {"accountValue": str(value), "totalNtlPos": str(notional), "totalRawUsd": str(acct.usdc),
               "totalMarginUsed": str(used)}
    return {"assetPositions": positions, "marginSummary": summary, "crossMarginSummary": summary,
            "crossMaintenanceMarginUsed": str(used / 2), "withdrawable": str(value - used), "time": now_ms()}


def open_orders(engine: Engine, user: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [o.wire() for o in engine.orders.values() if o.user == user]


def frontend_open_orders(engine: Engine, user: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**o.wire(), **frontend_fields(o)} for o in engine.orders.values() if o.user == user]


def frontend_fields(order: Order) -> dict[str, Any]:
    if order.trigger_px is None:
        order_type = "Limit"
    else:
        order_type = "Stop Market" if order.tpsl == "sl" else "Take Profit Market"
    return {"orderType": order_type, "triggerPx": str(order.trigger_px or 0), "isTrigger": order.trigger_px is not None,
            "reduceOnly": order.reduce_only, "tif": order.tif, "isPositionTpsl": False,
            "triggerCondition": "N/A", "children": []}


def user_fills(engine: Engine, user: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(reversed(engine.account(user).fills[-2000:]))


def user_fills_by_time(engine: Engine, user: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    start, end = int(body["startTime"]), int(body.get("endTime") or now_ms())
    return [f for f in engine.account(user).fills if start <= f["time"] <= end][:2000]


def user_funding(engine: Engine, user: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    start, end = int(body["startTime"]), int(body.get("endTime") or now_ms())
    return funding.in_window(engine.account(user).fundings, start, end)


USER_QUERIES: dict[str, Callable[[Engine, str, dict[str, Any]], Any]] = {
    "clearinghouseState": clearinghouse_state,
    "openOrders": open_orders,
    "frontendOpenOrders": frontend_open_orders,
    "userFills": user_fills,
    "userFillsByTime": user_fills_by_time,
    "userFunding": user_funding,
    "orderStatus": lambda engine, user, body: engine.order_status(user, body["oid"]),
}
