"""The simulator's `POST /control`: what tests and benchmarks do to it, over HTTP or in process.

Owns: the loopback-only check, the op dispatch (`{"op": NAME, ...args}` calls `op_NAME(**args)`),
and the ops: prices (set_price, move_price), benchmark trades (emit_trades, emitted), the feed
(pause_feed, resume_feed), faults (drop_connections, silence, unsilence, refuse_connections,
send_malformed, info_429), accounts (create_vault, pay_funding) and reads (exchange_log, account,
stats). An op refusing its arguments (ValueError) is answered 400 with the reason.
Must not: answer from anywhere but loopback, or hold exchange rules or WebSocket bookkeeping:
it acts through the feed, the WebSocket endpoint and the shared state.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from decimal import Decimal
from typing import Any, Iterable

from aiohttp import web

from . import funding
from .feed import PriceFeed
from .state import SimState, now_ms
from .ws import WebSocketEndpoint, subscription_key

EMITTED_KEPT = 100_000  # send times remembered for `emitted`, oldest dropped first


def is_loopback(remote: str | None) -> bool:
    try:
        addr = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


def malformed_frames() -> list[str | bytes]:
    """One of each kind of frame a client must survive: bad JSON, binary, bad or missing
    fields, an unknown channel, an error."""
    def trade(**fields: Any) -> str:
        return json.dumps({"channel": "trades", "data": [{"coin": "BTC", "side": "B", **fields}]})
    return ["{not json", b"\x00binary",
            trade(px="abc", sz="1", time=1, tid=1), trade(px="-5", sz="1", time=1, tid=2),
            trade(sz="1", time=1, tid=3),
            json.dumps({"channel": "mystery", "data": {}}), json.dumps({"channel": "error", "data": "simulated error"})]


class ControlOps:
    def __init__(self, state: SimState, feed: PriceFeed, ws: WebSocketEndpoint) -> None:
        self._state = state
        self._feed = feed
        self._ws = ws
        self._emitted: dict[int, int] = {}  # tid -> send time of trades emitted with a delay

    async def handle(self, request: web.Request) -> web.Response:
        if not is_loopback(request.remote):
            return web.Response(status=403, text="control is loopback only")
        try:
            body = await request.json()
            op = body.pop("op")
            fn = getattr(self, "op_" + op)
        except (ValueError, KeyError, AttributeError):
            return web.Response(status=400, text="unknown control op")
        try:
            return web.json_response(await fn(**body))
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))

    # ---- prices ----

    async def op_set_price(self, coin: str, px: Any) -> dict[str, Any]:
        tid = await self._feed.print_trade(coin, Decimal(str(px)))
        return {"coin": coin, "px": str(px), "tid": tid}

    async def op_move_price(self, coin: str, path: Iterable[Any], interval_s: float = 0.05) -> dict[str, Any]:
        async def walk() -> None:
            for px in path:
                await self._feed.print_trade(coin, Decimal(str(px)))
                await asyncio.sleep(interval_s)
        asyncio.ensure_future(walk())
        return {"started": True}

    # ---- benchmark trades ----

    async def op_emit_trades(self, coin: str | list[str], count: int, rate_hz: float | None = None,
                             px: Any = None, delay_s: float = 0.0) -> dict[str, Any]:
        """Send `count` trades at `px` (default: the coin's current price), as fast as possible or
        at `rate_hz`; `coin` a list: the trades go to its coins in turn, `rate_hz` in total. Each
        send time (monotonic ns, taken just before the frame goes out) is returned with its tid.
        With `delay_s` the call returns at once with the tids and the trades go out later: a
        benchmark's answer then does not land while the client is busy with the trade; `emitted`
        gives the send times afterwards."""
        engine = self._state.engine
        coins = [coin] if isinstance(coin, str) else list(coin)
        prices = {c: Decimal(str(px)) if px is not None else engine.prices[c] for c in coins}
        tids = [engine.next_tid() for _ in range(count)]
        if delay_s > 0:
            async def later() -> None:
                await asyncio.sleep(delay_s)
                for tid, ns in zip(tids, await self._emit(coins, tids, rate_hz, prices)):
                    self._emitted[tid] = ns
                while len(self._emitted) > EMITTED_KEPT:
                    self._emitted.pop(next(iter(self._emitted)))
            asyncio.ensure_future(later())
            return {"scheduled": count, "tids": tids}
        return {"sent": count, "send_ns": await self._emit(coins, tids, rate_hz, prices), "tids": tids}

    async def op_emitted(self, tids: list[int]) -> dict[str, Any]:
        return {"send_ns": [self._emitted.get(int(t)) for t in tids]}

    async def _emit(self, coins: list[str], tids: list[int], rate_hz: float | None,
                    prices: dict[str, Decimal]) -> list[int]:
        """Trades straight to the subscribers, bypassing the engine (no fills, no history), the
        i-th to coins[i % len(coins)]; the prices are set once at the end."""
        send_ns = []
        keys = [subscription_key({"type": "trades", "coin": c}) for c in coins]
        started = time.monotonic()
        for i, tid in enumerate(tids):
            coin = coins[i % len(coins)]
            text = ('{"channel":"trades","data":[{"coin":"%s","side":"B","px":"%s","sz":"0.01","hash":"0x0",'
                    '"time":%d,"tid":%d,"users":[]}]}' % (coin, prices[coin], now_ms(), tid))
            send_ns.append(time.monotonic_ns())
            await self._ws.send_fast(keys[i % len(coins)], text)
            if rate_hz:
                delay = started + (i + 1) / rate_hz - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i % 256 == 255:
                await asyncio.sleep(0)
        self._state.engine.prices.update(prices)
        return send_ns

    # ---- the feed and faults ----

    async def op_pause_feed(self) -> dict[str, Any]:
        self._feed.pause()
        return {"feed": False}

    async def op_resume_feed(self) -> dict[str, Any]:
        self._feed.resume()
        return {"feed": True}

    async def op_drop_connections(self) -> dict[str, Any]:
        return {"dropped": self._ws.drop_all()}

    async def op_silence(self, seconds: float | None = None) -> dict[str, Any]:
        self._state.faults.silent_until = float("inf") if seconds is None else time.monotonic() + seconds
        return {"silent": True}

    async def op_unsilence(self) -> dict[str, Any]:
        self._state.faults.silent_until = None
        return {"silent": False}

    async def op_refuse_connections(self, seconds: float) -> dict[str, Any]:
        self._state.faults.refuse_ws_until = time.monotonic() + seconds
        return {"refusing_for_s": seconds}

    async def op_send_malformed(self, count: int = 1) -> dict[str, Any]:
        frames = malformed_frames()
        for _ in range(count):
            await self._ws.send_all(frames)
        return {"sent": count * len(frames)}

    async def op_info_429(self, seconds: float) -> dict[str, Any]:
        self._state.faults.info_429_until = time.monotonic() + seconds
        return {"429_for_s": seconds}

    # ---- accounts ----

    async def op_create_vault(self, leader: str) -> dict[str, Any]:
        """A vault led by `leader` (an address), funded as the faucet funds an account; L1 actions
        with `vaultAddress` set to it act for it when the leader or one of its agents signs."""
        return {"vault": self._state.create_vault(leader), "leader": self._state.faucet(leader)}

    async def op_pay_funding(self, coin: str, rate: Any) -> dict[str, Any]:
        """One funding round of `coin` at `rate` (e.g. "0.0001") and the current mark price: every
        account and vault with a position pays (long, positive rate) or receives usdc = -szi * markPx
        * rate, recorded for `userFunding` and pushed to its `userEvents` subscribers (funding.py).
        Answers the payments made, each with the account (`user`, lower case)."""
        engine = self._state.engine
        value = funding.parse_rate(coin, rate, engine)
        mark = engine.prices[coin]
        paid = funding.settle(engine, coin, value, now_ms())
        for user, payment in paid:
            await self._ws.funding_event(user, funding.user_event(payment))
        return {"coin": coin, "fundingRate": funding.wire_decimal(value), "markPx": str(mark),
                "payments": [{"user": user.lower(), **payment} for user, payment in paid]}

    # ---- reads ----

    async def op_exchange_log(self) -> list[dict[str, Any]]:
        return list(self._state.exchange_log)

    async def op_account(self, address: str) -> dict[str, Any]:
        engine = self._state.engine
        user = self._state.faucet(address)
        acct = engine.account(user)
        return {"usdc": str(acct.usdc), "positions": {c: {"szi": str(s), "entryPx": str(p)}
                                                      for c, (s, p) in acct.positions.items()},
                "open_orders": [o.wire() for o in engine.orders.values() if o.user == user],
                "fills": list(acct.fills)}

    async def op_stats(self) -> dict[str, Any]:
        connections, subscriptions = self._ws.counts()
        return {"connections": connections, "subscriptions": subscriptions, **self._state.stats,
                "address_weight": dict(self._state.address_weight)}
