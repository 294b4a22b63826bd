"""The simulator's network face: `POST /info`, `POST /exchange`, WebSocket `/ws`, `POST /control`.

Owns: an aiohttp application on one loopback port in its own thread and event loop, the trade
feed, WebSocket subscriptions (acks, trades with a recent-trades snapshot, bbo, allMids, userFills
with an `isSnapshot` first message, orderUpdates), ping/pong, idle close, signature checks on
every `/exchange` request, and fault injection for tests (drop, silence, refuse, garbage, 429).
Must not: hold exchange rules itself (engine.py does) or accept control requests from anywhere
but loopback.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable

from aiohttp import WSMsgType, web

from signing import recover_l1_signer

from .engine import Engine

log = logging.getLogger("sim")
INTERVALS_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
                "2h": 7_200_000, "4h": 14_400_000, "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000,
                "3d": 259_200_000, "1w": 604_800_000, "1M": 2_592_000_000}
MAX_SUBSCRIPTIONS = 1000
DESERIALIZE_ERROR = "Failed to deserialize the JSON body into the target type"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 1
    chain: str = "testnet"
    coins: tuple[str, ...] = ("BTC", "ETH", "SOL")
    start_prices: dict[str, Any] | None = None
    trade_rate_hz: float = 5.0
    volatility: float = 0.0005
    feed: bool = True
    initial_usdc: Decimal = Decimal("10000")
    idle_timeout_s: float = 60.0


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    subs: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_rx: float = field(default_factory=time.monotonic)


def _key(sub: dict[str, Any]) -> str:
    return json.dumps(sub, sort_keys=True)


class SimServer:
    """Start with `start()` (returns once listening); `stop()` closes everything; context manager."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        from .engine import DEFAULT_COINS
        coins = {c: DEFAULT_COINS[c] for c in self.config.coins}
        self.engine = Engine(self.config.seed, coins, {k: Decimal(str(v)) for k, v in
                                                       (self.config.start_prices or {}).items()},
                             self.config.volatility, Decimal(str(self.config.initial_usdc)))
        self.is_mainnet = self.config.chain == "mainnet"
        self.loop = asyncio.new_event_loop()
        self.conns: set[_Conn] = set()
        self.port = self.config.port
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._feed_on = self.config.feed
        self._silent_until: float | None = None  # monotonic; inf = until unsilence
        self._refuse_until = 0.0
        self._429_until = 0.0
        self._exchange_log: list[dict[str, Any]] = []
        self._stats = {"ws_messages_in": 0, "ws_messages_out": 0, "info_requests": 0, "exchange_requests": 0}
        self._tasks: list[asyncio.Task[Any]] = []

    # ---- lifecycle ----

    @property
    def rest_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}/ws"

    def __enter__(self) -> "SimServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.loop.run_forever, name="hl-sim", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        log.info("simulator listening on %s (chain %s)", self.rest_url, self.config.chain)

    async def _start(self) -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/info", self._info)
        app.router.add_post("/exchange", self._exchange)
        app.router.add_get("/ws", self._ws)
        app.router.add_post("/control", self._control_http)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._tasks = [asyncio.ensure_future(self._feed()), asyncio.ensure_future(self._idle_reaper())]

    def stop(self) -> None:
        if self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(2)
            self._thread = None

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for conn in list(self.conns):
            await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(600)

    # ---- feed ----

    @property
    def _silent(self) -> bool:
        return self._silent_until is not None and time.monotonic() < self._silent_until

    async def _feed(self) -> None:
        while True:
            rate = self.config.trade_rate_hz
            await asyncio.sleep(1.0 / rate if rate > 0 else 0.5)
            if self._feed_on and rate > 0:
                coin = self.engine.rng.choice(self.engine.names)
                await self._print(coin, self.engine.walk(coin))

    async def _idle_reaper(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            cutoff = time.monotonic() - self.config.idle_timeout_s
            for conn in list(self.conns):
                if conn.last_rx < cutoff:
                    log.info("closing a connection idle for %.0fs", self.config.idle_timeout_s)
                    await conn.ws.close()

    async def _print(self, coin: str, px: Decimal, size: Decimal | None = None) -> int:
        trade, touched = self.engine.print_trade(coin, px, now_ms(), size)
        await self._broadcast({"type": "trades", "coin": coin},
                              json.dumps({"channel": "trades", "data": [trade]}))
        bid, ask = self._bbo(coin)
        await self._broadcast({"type": "bbo", "coin": coin}, json.dumps(
            {"channel": "bbo", "data": {"coin": coin, "time": trade["time"], "bbo": [bid, ask]}}))
        await self._broadcast({"type": "allMids"}, json.dumps({"channel": "allMids", "data": {"mids": self._mids()}}))
        for user, fills, updates in touched:
            await self._user_events(user, fills, updates)
        return int(trade["tid"])

    def _bbo(self, coin: str) -> tuple[dict[str, Any], dict[str, Any]]:
        book = self._book(coin, 1)
        return book[0][0], book[1][0]

    def _book(self, coin: str, depth: int = 20) -> list[list[dict[str, Any]]]:
        from signing import round_price
        px, sz_dec = self.engine.prices[coin], self.engine.coins[coin][0]
        tick = px * Decimal("0.0001")
        bids = [{"px": str(round_price(px - tick * (i + 1), sz_dec)), "sz": str(Decimal(i + 1) / 10), "n": i + 1}
                for i in range(depth)]
        asks = [{"px": str(round_price(px + tick * (i + 1), sz_dec)), "sz": str(Decimal(i + 1) / 10), "n": i + 1}
                for i in range(depth)]
        return [bids, asks]

    def _mids(self) -> dict[str, str]:
        return {c: str(p) for c, p in self.engine.prices.items()}

    async def _broadcast(self, sub: dict[str, Any], text: str) -> None:
        if self._silent:
            return
        key = _key(sub)
        for conn in list(self.conns):
            if key in conn.subs and not conn.ws.closed:
                try:
                    await conn.ws.send_str(text)
                    self._stats["ws_messages_out"] += 1
                except ConnectionError:
                    pass

    async def _user_events(self, user: str, fills: list[dict], updates: list[dict]) -> None:
        for addr in {user, user.lower()}:
            if fills:
                await self._broadcast({"type": "userFills", "user": addr}, json.dumps(
                    {"channel": "userFills", "data": {"user": addr, "fills": fills}}))
                await self._broadcast({"type": "userEvents", "user": addr},
                                      json.dumps({"channel": "user", "data": {"fills": fills}}))
            if updates:
                await self._broadcast({"type": "orderUpdates", "user": addr},
                                      json.dumps({"channel": "orderUpdates", "data": updates}))

    # ---- websocket ----

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if time.monotonic() < self._refuse_until:
            return web.Response(status=503, text="Service temporarily unavailable")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = _Conn(ws)
        self.conns.add(conn)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                conn.last_rx = time.monotonic()
                self._stats["ws_messages_in"] += 1
                if self._silent:
                    continue
                await self._on_ws_message(conn, msg.data)
        finally:
            self.conns.discard(conn)
        return ws

    async def _on_ws_message(self, conn: _Conn, text: str) -> None:
        try:
            body = json.loads(text)
            method = body["method"]
        except (ValueError, KeyError, TypeError):
            await conn.ws.send_str(json.dumps({"channel": "error", "data": f"Error parsing JSON into valid websocket request: {text[:100]}"}))
            return
        if method == "ping":
            await conn.ws.send_str('{"channel":"pong"}')
            return
        sub = body.get("subscription")
        if method not in ("subscribe", "unsubscribe") or not isinstance(sub, dict) or "type" not in sub:
            await conn.ws.send_str(json.dumps({"channel": "error", "data": f"Invalid request: {text[:100]}"}))
            return
        key = _key(sub)
        if method == "unsubscribe":
            conn.subs.pop(key, None)
            await conn.ws.send_str(json.dumps({"channel": "subscriptionResponse", "data": body}))
            return
        if len(conn.subs) >= MAX_SUBSCRIPTIONS:
            await conn.ws.send_str(json.dumps({"channel": "error", "data": "Cannot track more than 1000 total subscriptions"}))
            return
        conn.subs[key] = sub
        await conn.ws.send_str(json.dumps({"channel": "subscriptionResponse", "data": body}))
        await self._snapshot(conn, sub)

    async def _snapshot(self, conn: _Conn, sub: dict[str, Any]) -> None:
        kind, coin = sub["type"], sub.get("coin")
        if kind == "trades" and coin in self.engine.history:
            recent = [{"coin": coin, "side": "B", "px": str(px), "sz": str(sz), "hash": "0x" + "0" * 64, "time": t,
                       "tid": i, "users": []} for i, (t, px, sz) in enumerate(self.engine.history[coin][-10:])]
            if recent:
                await conn.ws.send_str(json.dumps({"channel": "trades", "data": recent}))
        elif kind == "userFills":
            acct = self.engine.account(self._user(sub.get("user", "")))
            await conn.ws.send_str(json.dumps({"channel": "userFills", "data": {
                "isSnapshot": True, "user": sub.get("user"), "fills": acct.fills[-100:]}}))
        elif kind == "l2Book" and coin in self.engine.prices:
            await conn.ws.send_str(json.dumps({"channel": "l2Book", "data": {
                "coin": coin, "time": now_ms(), "levels": self._book(coin)}}))

    def _user(self, address: str) -> str:
        """Accounts are keyed by checksummed address; requests may use any case.

        The faucet: an address named in an `/info` query (or a user subscription) becomes an
        account with `initial_usdc`. A signer that never did so "does not exist", as on the real
        exchange, which is what a signature over tampered content recovers to."""
        for known in self.engine.accounts:
            if known.lower() == address.lower():
                return known
        return address

    # ---- /info ----

    async def _info(self, request: web.Request) -> web.Response:
        self._stats["info_requests"] += 1
        if time.monotonic() < self._429_until:
            return web.Response(status=429, text="Too many requests")
        try:
            body = await request.json()
            answer = self._info_answer(body)
        except (ValueError, KeyError, TypeError, IndexError):
            return web.Response(status=422, text=DESERIALIZE_ERROR)
        return web.json_response(answer)

    def _info_answer(self, body: dict[str, Any]) -> Any:
        kind = body["type"]
        e = self.engine
        if kind == "meta":
            return {"universe": [{"name": c, "szDecimals": e.coins[c][0], "maxLeverage": e.coins[c][1]} for c in e.names]}
        if kind == "spotMeta":
            return {"universe": [], "tokens": []}
        if kind == "perpDexs":
            return [None]
        if kind == "allMids":
            return self._mids()
        if kind == "metaAndAssetCtxs":
            ctxs = [{"funding": "0.0000125", "openInterest": "1000", "prevDayPx": str(e.prices[c]), "dayNtlVlm": "0",
                     "premium": "0", "oraclePx": str(e.prices[c]), "markPx": str(e.prices[c]), "midPx": str(e.prices[c]),
                     "impactPxs": [str(e.prices[c]), str(e.prices[c])], "dayBaseVlm": "0"} for c in e.names]
            return [self._info_answer({"type": "meta"}), ctxs]
        if kind == "l2Book":
            return {"coin": body["coin"], "time": now_ms(), "levels": self._book(body["coin"])}
        if kind == "candleSnapshot":
            req = body["req"]
            step = INTERVALS_MS[req["interval"]]
            candles = e.candles(req["coin"], step, int(req["startTime"]), int(req.get("endTime") or now_ms()))
            for c in candles:
                c["i"] = req["interval"]
            return candles
        user = self._user(body["user"])
        if not (user.startswith("0x") and len(user) == 42):
            raise ValueError("user")
        from eth_utils import to_checksum_address
        user = to_checksum_address(user) if user not in e.accounts else user
        acct = e.account(user)
        if kind == "clearinghouseState":
            positions = []
            for coin, (szi, entry) in acct.positions.items():
                if szi == 0:
                    continue
                lev, cross = acct.leverage.get(coin, (20, True))
                mark = e.prices[coin]
                upnl = (mark - entry) * szi
                liq = entry * (1 - Decimal(1) / lev) if szi > 0 else entry * (1 + Decimal(1) / lev)
                positions.append({"type": "oneWay", "position": {
                    "coin": coin, "szi": str(szi), "entryPx": str(entry), "positionValue": str(abs(szi) * mark),
                    "unrealizedPnl": str(upnl), "returnOnEquity": "0", "liquidationPx": str(liq),
                    "marginUsed": str(abs(szi) * mark / lev), "maxLeverage": e.coins[coin][1],
                    "leverage": {"type": "cross" if cross else "isolated", "value": lev},
                    "cumFunding": {"allTime": "0", "sinceOpen": "0", "sinceChange": "0"}}})
            value, used = e.account_value(user), e.margin_used(user)
            summary = {"accountValue": str(value), "totalNtlPos": str(sum(abs(s) * e.prices[c] for c, (s, _) in acct.positions.items())),
                       "totalRawUsd": str(acct.usdc), "totalMarginUsed": str(used)}
            return {"assetPositions": positions, "marginSummary": summary, "crossMarginSummary": summary,
                    "crossMaintenanceMarginUsed": str(used / 2), "withdrawable": str(value - used), "time": now_ms()}
        if kind in ("openOrders", "frontendOpenOrders"):
            out = []
            for o in e.orders.values():
                if o.user != user:
                    continue
                item = o.wire()
                if kind == "frontendOpenOrders":
                    item.update({"orderType": "Limit" if o.trigger_px is None else ("Stop Market" if o.tpsl == "sl" else "Take Profit Market"),
                                 "triggerPx": str(o.trigger_px or 0), "isTrigger": o.trigger_px is not None,
                                 "reduceOnly": o.reduce_only, "tif": o.tif, "isPositionTpsl": False,
                                 "triggerCondition": "N/A"})
                out.append(item)
            return out
        if kind == "userFills":
            return list(reversed(acct.fills[-2000:]))
        if kind == "userFillsByTime":
            start, end = int(body["startTime"]), int(body.get("endTime") or now_ms())
            return [f for f in acct.fills if start <= f["time"] <= end][:2000]
        if kind == "orderStatus":
            return e.order_status(user, body["oid"])
        raise ValueError(kind)

    # ---- /exchange ----

    async def _exchange(self, request: web.Request) -> web.Response:
        self._stats["exchange_requests"] += 1
        recv_ns = time.monotonic_ns()
        try:
            body = await request.json()
            action, nonce, signature = body["action"], int(body["nonce"]), body["signature"]
            vault, expires = body.get("vaultAddress"), body.get("expiresAfter")
        except (ValueError, KeyError, TypeError):
            return web.Response(status=422, text=DESERIALIZE_ERROR)
        entry: dict[str, Any] = {"recv_ns": recv_ns, "user": None, "action": action, "nonce": nonce}
        self._exchange_log.append(entry)
        try:
            user = recover_l1_signer(action, signature, vault, nonce, expires, self.is_mainnet)
        except (ValueError, TypeError):
            return self._answer(entry, {"status": "err", "response": "Invalid signature."})
        entry["user"] = user
        if expires is not None and int(expires) < now_ms():
            return self._answer(entry, {"status": "err", "response": "Action expired."})
        if user not in self.engine.accounts:
            return self._answer(entry, {"status": "err", "response": f"User or API Wallet {user.lower()} does not exist."})
        problem = self.engine.check_nonce(user, nonce, now_ms())
        if problem:
            return self._answer(entry, {"status": "err", "response": problem})
        try:
            answer = await self._act(user, action)
        except (KeyError, TypeError, ValueError, IndexError):
            return web.Response(status=422, text=DESERIALIZE_ERROR)
        return self._answer(entry, answer)

    def _answer(self, entry: dict[str, Any], answer: dict[str, Any]) -> web.Response:
        entry["status"] = answer.get("status")
        entry["response"] = answer.get("response")
        return web.json_response(answer)

    async def _act(self, user: str, action: dict[str, Any]) -> dict[str, Any]:
        kind = action["type"]
        e = self.engine
        if kind == "order":
            statuses = []
            for wire in action["orders"]:
                status, fills, updates = e.place(user, wire, now_ms())
                statuses.append(status)
                await self._user_events(user, fills, updates)
            return {"status": "ok", "response": {"type": "order", "data": {"statuses": statuses}}}
        if kind in ("cancel", "cancelByCloid"):
            statuses = []
            for c in action["cancels"]:
                if kind == "cancel":
                    statuses.append(e.cancel(user, oid=int(c["o"])))
                else:
                    statuses.append(e.cancel(user, cloid=c["cloid"]))
            return {"status": "ok", "response": {"type": "cancel", "data": {"statuses": statuses}}}
        if kind == "updateLeverage":
            coin = e.names[int(action["asset"])]
            lev = int(action["leverage"])
            if not 1 <= lev <= e.coins[coin][1]:
                return {"status": "err", "response": "Invalid leverage value"}
            e.account(user).leverage[coin] = (lev, bool(action["isCross"]))
            return {"status": "ok", "response": {"type": "default"}}
        if kind == "scheduleCancel":
            if "time" in action and int(action["time"]) < now_ms() + 5000:
                return {"status": "err", "response": "Scheduled cancel time too early, must be at least 5 seconds from now."}
            return {"status": "err", "response": "Cannot set scheduled cancel time until enough volume traded."}
        raise ValueError(kind)

    # ---- control ----

    async def _control_http(self, request: web.Request) -> web.Response:
        if request.remote not in ("127.0.0.1", "::1"):
            return web.Response(status=403, text="control is loopback only")
        try:
            body = await request.json()
            op = body.pop("op")
            fn = getattr(self, "_op_" + op)
        except (ValueError, KeyError, AttributeError):
            return web.Response(status=400, text="unknown control op")
        return web.json_response(await fn(**body))

    async def _op_set_price(self, coin: str, px: Any) -> dict[str, Any]:
        tid = await self._print(coin, Decimal(str(px)))
        return {"coin": coin, "px": str(px), "tid": tid}

    async def _op_move_price(self, coin: str, path: Iterable[Any], interval_s: float = 0.05) -> dict[str, Any]:
        async def walk() -> None:
            for px in path:
                await self._print(coin, Decimal(str(px)))
                await asyncio.sleep(interval_s)
        asyncio.ensure_future(walk())
        return {"started": True}

    async def _op_emit_trades(self, coin: str, count: int, rate_hz: float | None = None,
                              px: Any = None) -> dict[str, Any]:
        send_ns, tids = [], []
        price = Decimal(str(px)) if px is not None else self.engine.prices[coin]
        key = _key({"type": "trades", "coin": coin})
        started = time.monotonic()
        for i in range(count):
            tid = next(self.engine._tids)
            text = ('{"channel":"trades","data":[{"coin":"%s","side":"B","px":"%s","sz":"0.01","hash":"0x0",'
                    '"time":%d,"tid":%d,"users":[]}]}' % (coin, price, now_ms(), tid))
            for conn in list(self.conns):
                if key in conn.subs and not conn.ws.closed and not self._silent:
                    await conn.ws.send_str(text)
            send_ns.append(time.monotonic_ns())
            tids.append(tid)
            if rate_hz:
                delay = started + (i + 1) / rate_hz - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i % 256 == 255:
                await asyncio.sleep(0)
        self.engine.prices[coin] = price
        return {"sent": count, "send_ns": send_ns, "tids": tids}

    async def _op_pause_feed(self) -> dict[str, Any]:
        self._feed_on = False
        return {"feed": False}

    async def _op_resume_feed(self) -> dict[str, Any]:
        self._feed_on = True
        return {"feed": True}

    async def _op_drop_connections(self) -> dict[str, Any]:
        dropped = 0
        for conn in list(self.conns):
            transport = conn.ws._req.transport if conn.ws._req is not None else None  # type: ignore[attr-defined]
            if transport is not None:
                transport.abort()  # abrupt: no close frame
                dropped += 1
        return {"dropped": dropped}

    async def _op_silence(self, seconds: float | None = None) -> dict[str, Any]:
        self._silent_until = float("inf") if seconds is None else time.monotonic() + seconds
        return {"silent": True}

    async def _op_unsilence(self) -> dict[str, Any]:
        self._silent_until = None
        return {"silent": False}

    async def _op_refuse_connections(self, seconds: float) -> dict[str, Any]:
        self._refuse_until = time.monotonic() + seconds
        return {"refusing_for_s": seconds}

    async def _op_send_malformed(self, count: int = 1) -> dict[str, Any]:
        frames: list[str | bytes] = ["{not json", b"\x00binary", json.dumps({"channel": "trades", "data": [
            {"coin": "BTC", "side": "B", "px": "abc", "sz": "1", "time": 1, "tid": 1}]}), json.dumps(
            {"channel": "trades", "data": [{"coin": "BTC", "side": "B", "px": "-5", "sz": "1", "time": 1, "tid": 2}]}),
            json.dumps({"channel": "trades", "data": [{"coin": "BTC", "side": "B", "sz": "1", "time": 1, "tid": 3}]}),
            json.dumps({"channel": "mystery", "data": {}}), json.dumps({"channel": "error", "data": "simulated error"})]
        for _ in range(count):
            for conn in list(self.conns):
                for frame in frames:
                    if isinstance(frame, bytes):
                        await conn.ws.send_bytes(frame)
                    else:
                        await conn.ws.send_str(frame)
        return {"sent": count * len(frames)}

    async def _op_info_429(self, seconds: float) -> dict[str, Any]:
        self._429_until = time.monotonic() + seconds
        return {"429_for_s": seconds}

    async def _op_exchange_log(self) -> list[dict[str, Any]]:
        return list(self._exchange_log)

    async def _op_account(self, address: str) -> dict[str, Any]:
        user = self._user(address)
        acct = self.engine.account(user)
        return {"usdc": str(acct.usdc), "positions": {c: {"szi": str(s), "entryPx": str(p)}
                                                      for c, (s, p) in acct.positions.items()},
                "open_orders": [o.wire() for o in self.engine.orders.values() if o.user == user],
                "fills": list(acct.fills)}

    async def _op_stats(self) -> dict[str, Any]:
        return {"connections": len(self.conns), "subscriptions": sum(len(c.subs) for c in self.conns), **self._stats}

    # thread-safe public control methods (same names as the ops)
    def set_price(self, coin: str, px: Any) -> dict[str, Any]:
        return self._run(self._op_set_price(coin, px))

    def move_price(self, coin: str, path: Iterable[Any], interval_s: float = 0.05) -> dict[str, Any]:
        return self._run(self._op_move_price(coin, list(path), interval_s))

    def emit_trades(self, coin: str, count: int, rate_hz: float | None = None, px: Any = None) -> dict[str, Any]:
        return self._run(self._op_emit_trades(coin, count, rate_hz, px))

    def pause_feed(self) -> dict[str, Any]:
        return self._run(self._op_pause_feed())

    def resume_feed(self) -> dict[str, Any]:
        return self._run(self._op_resume_feed())

    def drop_connections(self) -> dict[str, Any]:
        return self._run(self._op_drop_connections())

    def silence(self, seconds: float | None = None) -> dict[str, Any]:
        return self._run(self._op_silence(seconds))

    def unsilence(self) -> dict[str, Any]:
        return self._run(self._op_unsilence())

    def refuse_connections(self, seconds: float) -> dict[str, Any]:
        return self._run(self._op_refuse_connections(seconds))

    def send_malformed(self, count: int = 1) -> dict[str, Any]:
        return self._run(self._op_send_malformed(count))

    def info_429(self, seconds: float) -> dict[str, Any]:
        return self._run(self._op_info_429(seconds))

    def exchange_log(self) -> list[dict[str, Any]]:
        return self._run(self._op_exchange_log())

    def account(self, address: str) -> dict[str, Any]:
        return self._run(self._op_account(address))

    def stats(self) -> dict[str, Any]:
        return self._run(self._op_stats())
