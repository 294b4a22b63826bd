"""The simulator's `POST /exchange`: signed actions checked as the exchange does, then executed.

Owns: reading the signed body (a 422 when it does not deserialize), recovering the L1 signer,
refusing a stale `expiresAfter` (charged 5x), the address-based weight charged per signer, the
account an action acts for (the signer, its master when it is an agent, or `vaultAddress`;
agents.py says which and the refusals), nonce checks per signer, one `/exchange` log entry per
request, and acting on the engine: order, cancel, cancelByCloid, updateLeverage, scheduleCancel;
the fills and order updates an action makes go to that account's WebSocket subscribers. The
user-signed `approveAgent`: its EIP-712 signature (user_signed.py), chain and nonce checked, the
agent recorded for the signer.
Must not: hold exchange rules (engine.py does), throttle (weight is only counted), or answer
anything but `/exchange`.
"""
from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from signing import recover_l1_signer

from .agents import DEFAULT_AGENT_VALIDITY_MS
from .state import SimState, now_ms
from .user_signed import is_user_signed, read_approval, recover_user_signer
from . import wire
from .wire import DESERIALIZE_ERROR
from .ws import WebSocketEndpoint

# The exchange refuses an L1 action once its signed `expiresAfter` (ms) has passed, and such a
# refusal costs the signer 5x the usual address-based weight (docs: "Exchange endpoint", Expires
# After). The docs do not quote the error text and no public recording of it was found: this
# wording is unconfirmed.
EXPIRED_ERROR = "Action expired."
EXPIRED_WEIGHT_FACTOR = 5
# User-signed actions take no `expiresAfter` (/work/shared/hyperliquid-api.md section 4, from the
# docs' "Expires After"); the refusal's wording is unconfirmed.
USER_SIGNED_EXPIRES_ERROR = "expiresAfter is not supported on user signed actions."
# A user-signed action signed for the other chain (its `hyperliquidChain` is signed); unconfirmed.
WRONG_CHAIN_ERROR = "Invalid hyperliquidChain: this is {chain}."
# A user-signed action's own `nonce`/`time` equals the request's nonce (hyperliquid-api.md section 5;
# the SDK sets both from one timestamp); the refusal's wording is unconfirmed.
NONCE_MISMATCH_ERROR = "Invalid nonce: the action's nonce {signed} is not the request's {nonce}."


def must_deposit(user: str) -> str:
    """The exchange's answer to a user-signed action from an address that holds nothing, which is
    also what a bad signature recovers to (recorded: nomeida/hyperliquid issue #77, approveBuilderFee
    with a bad signature, "the response User is always changed")."""
    return f"Must deposit before performing actions. User: {user.lower()}"


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
    if vault is not None and not isinstance(vault, str):
        raise TypeError("vaultAddress must be an address")
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
        if is_user_signed(action):
            try:
                return answer(entry, self._user_signed(entry, action, nonce, signature, expires))
            except (KeyError, TypeError, AttributeError):
                return web.Response(status=422, text=DESERIALIZE_ERROR)
        try:
            signer = recover_l1_signer(action, signature, vault, nonce, expires, self._is_mainnet)
        except (ValueError, TypeError):
            return answer(entry, {"status": "err", "response": "Invalid signature."})
        entry["user"] = signer
        user, problem = self._admit(signer, action, nonce, expires, vault)
        if problem:
            return answer(entry, {"status": "err", "response": problem})
        entry["account"] = user
        try:
            result = await self._act(user, action)
        except (KeyError, TypeError, ValueError, IndexError):
            return web.Response(status=422, text=DESERIALIZE_ERROR)
        return answer(entry, result)

    def _admit(self, signer: str, action: Any, nonce: int, expires: int | None,
               vault: str | None) -> tuple[str, str | None]:
        """Charge the signer; (the account the action acts for, None), or ("", why it is refused:
        expired, unknown signer, not the vault's leader, nonce)."""
        weight = action_weight(action) if isinstance(action, dict) else 1
        if expires is not None and expires < now_ms():
            self._state.stats["expired_actions"] += 1
            self._charge(signer, EXPIRED_WEIGHT_FACTOR * weight)
            return "", EXPIRED_ERROR
        self._charge(signer, weight)
        state = self._state
        user, problem = state.delegations.acting_user(signer, vault, state.engine.accounts, now_ms())
        return user, problem or state.engine.check_nonce(signer, nonce, now_ms())

    def _user_signed(self, entry: dict[str, Any], action: dict[str, Any], nonce: int, signature: Any,
                     expires: int | None) -> Answer:
        """approveAgent, signed by the master with EIP-712 over its fields; `vaultAddress` plays no
        part (the signature does not cover it). KeyError/TypeError: a 422."""
        if expires is not None:
            return {"status": "err", "response": USER_SIGNED_EXPIRES_ERROR}
        if action["nonce"] != nonce:  # what was signed must be what the nonce check sees
            return {"status": "err", "response": NONCE_MISMATCH_ERROR.format(signed=action["nonce"], nonce=nonce)}
        try:
            master = recover_user_signer(action, signature)
        except ValueError:
            return {"status": "err", "response": "Invalid signature."}
        entry["user"] = master
        self._charge(master, 1)
        chain = "Mainnet" if self._is_mainnet else "Testnet"
        if action["hyperliquidChain"] != chain:
            return {"status": "err", "response": WRONG_CHAIN_ERROR.format(chain=chain)}
        state = self._state
        if master not in state.engine.accounts or state.delegations.is_agent_address(master):
            return {"status": "err", "response": must_deposit(master)}
        problem = state.engine.check_nonce(master, nonce, now_ms())
        if problem:
            return {"status": "err", "response": problem}
        approval = read_approval(action)
        valid_until = approval.valid_until_ms
        if valid_until is None:
            valid_until = nonce + DEFAULT_AGENT_VALIDITY_MS
        problem = state.approve_agent(master, approval.agent, approval.name, valid_until)
        if problem:
            return {"status": "err", "response": problem}
        return {"status": "ok", "response": {"type": "default"}}

    def _charge(self, user: str, weight: int) -> None:
        """Count address-based weight against the signer (counted only: the sim does not throttle)."""
        self._state.address_weight[user] = self._state.address_weight.get(user, 0) + weight

    async def _act(self, user: str, action: dict[str, Any]) -> Answer:
        kind = action["type"]
        if kind == "order":
            return await self._order(user, action)
        if kind in ("cancel", "cancelByCloid"):
            return await self._cancel(user, action, by_cloid=kind == "cancelByCloid")
        if kind == "updateLeverage":
            return self._update_leverage(user, action)
        if kind == "scheduleCancel":
            if "time" in action and int(action["time"]) < now_ms() + 5000:
                return {"status": "err", "response": "Scheduled cancel time too early, must be at least 5 seconds from now."}
            return {"status": "err", "response": "Cannot set scheduled cancel time until enough volume traded."}
        raise ValueError(kind)

    async def _order(self, user: str, action: dict[str, Any]) -> Answer:
        engine = self._state.engine
        statuses = []
        touches = {coin: wire.bbo(engine, coin) for coin in engine.names}
        for order_wire in action["orders"]:
            status, fills, updates = engine.place(user, order_wire, now_ms())
            statuses.append(status)
            await self._ws.user_events(user, fills, updates)
            for maker, maker_fills, maker_updates in engine.take_maker_events():
                await self._ws.user_events(maker, maker_fills, maker_updates)
        await self._push_moved_touches(touches)  # a taker that emptied a level, an order resting inside the spread
        return {"status": "ok", "response": {"type": "order", "data": {"statuses": statuses}}}

    async def _cancel(self, user: str, action: dict[str, Any], by_cloid: bool) -> Answer:
        """Each cancel's status; a canceled order's `orderUpdates`, and the bbo when the touch moved."""
        engine = self._state.engine
        statuses = []
        touches = {coin: wire.bbo(engine, coin) for coin in engine.names}
        for c in action["cancels"]:
            ref: int | str = c["cloid"] if by_cloid else int(c["o"])
            status = engine.cancel(user, cloid=ref, now_ms=now_ms()) if by_cloid else \
                engine.cancel(user, oid=int(ref), now_ms=now_ms())
            statuses.append(status)
            if status == "success":
                await self._ws.user_events(user, [], [engine.order_status(user, ref)["order"]])
        await self._push_moved_touches(touches)
        return {"status": "ok", "response": {"type": "cancel", "data": {"statuses": statuses}}}

    async def _push_moved_touches(self, before: dict[str, Any]) -> None:
        """A `bbo` for each coin whose best bid/ask is not what it was `before` the action."""
        for coin, touch in before.items():
            if wire.bbo(self._state.engine, coin) != touch:
                await self._ws.push_bbo(coin, now_ms())

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
