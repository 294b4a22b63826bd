"""The simulator's `POST /exchange`: signed actions checked as the exchange does, then executed.

Owns: reading the signed body (a 422 when it does not deserialize), recovering the L1 signer,
refusing a stale `expiresAfter` (charged 5x), the address-based weight charged per signer, the
"does not exist" answer for an unknown signer, nonce checks, one `/exchange` log entry per
request, and acting on the engine: order, cancel, cancelByCloid, updateLeverage, scheduleCancel;
the fills and order updates an action makes go to the user's WebSocket subscribers.
Must not: hold exchange rules (engine.py does), throttle (weight is only counted), or answer
anything but `/exchange`.
"""
from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from signing import recover_l1_signer

from .state import SimState, now_ms
from .wire import DESERIALIZE_ERROR
from .ws import WebSocketEndpoint

# The exchange refuses an L1 action once its signed `expiresAfter` (ms) has passed, and such a
# refusal costs the signer 5x the usual address-based weight (docs: "Exchange endpoint", Expires
# After). The docs do not quote the error text and no public recording of it was found: this
# wording is unconfirmed.
EXPIRED_ERROR = "Action expired."
EXPIRED_WEIGHT_FACTOR = 5

Answer = dict[str, Any]  # {"status": "ok" | "err", "response": ...}


def action_weight(action: dict[str, Any]) -> int:
    """Address-based weight: a batch of n orders or cancels counts n, any other action 1."""
    batch = action.get("orders", action.get("cancels"))
    return max(1, len(batch)) if isinstance(batch, list) else 1


def parse_body(body: Any) -> tuple[Any, int, Any, Any, int | None]:
    """(action, nonce, signature, vaultAddress, expiresAfter); ValueError/KeyError/TypeError/
    AttributeError when the body does not deserialize (the exchange's 422)."""
    action, nonce, signature = body["action"], int(body["nonce"]), body["signature"]
    vault, expires = body.get("vaultAddress"), body.get("expiresAfter")
    if expires is not None and (not isinstance(expires, int) or isinstance(expires, bool) or expires < 0):
        raise TypeError("expiresAfter must be a u64")
    return action, nonce, signature, vault, expires


class ExchangeEndpoint:
    def __init__(self, state: SimState, ws: WebSocketEndpoint, is_mainnet: bool) -> None:
        self._state = state
        self._ws = ws
        self._is_mainnet = is_mainnet

    async def handle(self, request: web.Request) -> web.Response:
        self._state.stats["exchange_requests"] += 1
        recv_ns = time.monotonic_ns()
        try:
            action, nonce, signature, vault, expires = parse_body(await request.json())
        except (ValueError, KeyError, TypeError, AttributeError):
            return web.Response(status=422, text=DESERIALIZE_ERROR)
        entry: dict[str, Any] = {"recv_ns": recv_ns, "user": None, "action": action, "nonce": nonce}
        self._state.exchange_log.append(entry)
        try:
            user = recover_l1_signer(action, signature, vault, nonce, expires, self._is_mainnet)
        except (ValueError, TypeError):
            return answer(entry, {"status": "err", "response": "Invalid signature."})
        entry["user"] = user
        problem = self._admit(user, action, nonce, expires)
        if problem:
            return answer(entry, {"status": "err", "response": problem})
        try:
            result = await self._act(user, action)
        except (KeyError, TypeError, ValueError, IndexError):
            return web.Response(status=422, text=DESERIALIZE_ERROR)
        return answer(entry, result)

    def _admit(self, user: str, action: Any, nonce: int, expires: int | None) -> str | None:
        """Charge the signer and say why the action is refused (expired, unknown user, nonce), or None."""
        weight = action_weight(action) if isinstance(action, dict) else 1
        if expires is not None and expires < now_ms():
            self._state.stats["expired_actions"] += 1
            self._charge(user, EXPIRED_WEIGHT_FACTOR * weight)
            return EXPIRED_ERROR
        self._charge(user, weight)
        if user not in self._state.engine.accounts:
            return f"User or API Wallet {user.lower()} does not exist."
        return self._state.engine.check_nonce(user, nonce, now_ms())

    def _charge(self, user: str, weight: int) -> None:
        """Count address-based weight against the signer (counted only: the sim does not throttle)."""
        self._state.address_weight[user] = self._state.address_weight.get(user, 0) + weight

    async def _act(self, user: str, action: dict[str, Any]) -> Answer:
        kind = action["type"]
        if kind == "order":
            return await self._order(user, action)
        if kind in ("cancel", "cancelByCloid"):
            return self._cancel(user, action, by_cloid=kind == "cancelByCloid")
        if kind == "updateLeverage":
            return self._update_leverage(user, action)
        if kind == "scheduleCancel":
            if "time" in action and int(action["time"]) < now_ms() + 5000:
                return {"status": "err", "response": "Scheduled cancel time too early, must be at least 5 seconds from now."}
            return {"status": "err", "response": "Cannot set scheduled cancel time until enough volume traded."}
        raise ValueError(kind)

    async def _order(self, user: str, action: dict[str, Any]) -> Answer:
        statuses = []
        for order_wire in action["orders"]:
            status, fills, updates = self._state.engine.place(user, order_wire, now_ms())
            statuses.append(status)
            await self._ws.user_events(user, fills, updates)
        return {"status": "ok", "response": {"type": "order", "data": {"statuses": statuses}}}

    def _cancel(self, user: str, action: dict[str, Any], by_cloid: bool) -> Answer:
        engine = self._state.engine
        statuses = []
        for c in action["cancels"]:
            if by_cloid:
                statuses.append(engine.cancel(user, cloid=c["cloid"]))
            else:
                statuses.append(engine.cancel(user, oid=int(c["o"])))
        return {"status": "ok", "response": {"type": "cancel", "data": {"statuses": statuses}}}

    def _update_leverage(self, user: str, action: dict[str, Any]) -> Answer:
        engine = self._state.engine
        coin = engine.names[int(action["asset"])]
        lev = int(action["leverage"])
        if not 1 <= lev <= engine.coins[coin][1]:
            return {"status": "err", "response": "Invalid leverage value"}
        engine.account(user).leverage[coin] = (lev, bool(action["isCross"]))
        return {"status": "ok", "response": {"type": "default"}}


def answer(entry: dict[str, Any], result: Answer) -> web.Response:
    """Note the answer in the request's log entry and send it."""
    entry["status"] = result.get("status")
    entry["response"] = result.get("response")
    return web.json_response(result)
