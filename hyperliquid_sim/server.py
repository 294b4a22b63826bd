"""The simulator's network face: `POST /info`, `POST /exchange`, WebSocket `/ws`, `POST /control`.

Owns: an aiohttp application on one loopback port in its own thread and event loop, the trade
feed (seeded random walk, or replay of a recorded JSONL stream), WebSocket subscriptions (acks,
"Already subscribed" errors, the snapshots sent right after a subscribe: recent trades, l2Book,
the current candle, userFills with `isSnapshot`), pushes (trades, bbo, allMids, candle on each
print; l2Book at most every 0.5 s and only when it changed; orderUpdates, userFills, userEvents),
ping/pong, idle close, the exchange's per-IP WebSocket limits with its error texts, signature
and `expiresAfter` checks on every `/exchange` request (with the address-based weight each signer
was charged, 5x for a stale action), and fault injection for tests (drop, silence, refuse,
garbage, 429).
Must not: hold exchange rules itself (engine.py does) or accept control requests from anywhere
but loopback.
"""
from __future__ import annotations

import asyncio
import collections
import ipaddress
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

from aiohttp import WSCloseCode, WSMsgType, web
from eth_utils import to_checksum_address

from signing import recover_l1_signer

from .engine import DEFAULT_COINS, Engine, ReplayTrade, parse_replay

log = logging.getLogger("sim")
INTERVALS_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
                "2h": 7_200_000, "4h": 14_400_000, "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000,
                "3d": 259_200_000, "1w": 604_800_000, "1M": 2_592_000_000}
DESERIALIZE_ERROR = "Failed to deserialize the JSON body into the target type"


# The exchange's per-IP WebSocket limits are in its docs ("Rate limits and user limits"); the
# error texts are not. The subscription, user and message texts below are the ones the real
# server sent on the `error` channel as quoted by a client SDK's maintainer (nktkas/hyperliquid
# issue #78, 2025-11); later reports quote the user limit as 15, so the number follows the config.
# The connection text is NOT confirmed anywhere: what the real server does with one connection
# too many is undocumented, so the sim accepts it, says why on the `error` channel and closes it.
def subscriptions_error(limit: int) -> str:
    return f"Cannot subscribe to more than {limit} channels."


def users_error(limit: int) -> str:
    return f"Cannot track more than {limit} total users."


def messages_error(limit: int) -> str:
    return f"Cannot send more than {limit} messages per minute."


def connections_error(limit: int) -> str:
    return f"Cannot have more than {limit} websocket connections."  # unconfirmed wording


# The exchange refuses an L1 action once its signed `expiresAfter` (ms) has passed, and such a
# refusal costs the signer 5x the usual address-based weight (docs: "Exchange endpoint", Expires
# After). The docs do not quote the error text and no public recording of it was found: this
# wording is unconfirmed.
EXPIRED_ERROR = "Action expired."
EXPIRED_WEIGHT_FACTOR = 5


def action_weight(action: dict[str, Any]) -> int:
    """Address-based weight: a batch of n orders or cancels counts n, any other action 1."""
    batch = action.get("orders", action.get("cancels"))
    return max(1, len(batch)) if isinstance(batch, list) else 1


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
    # the exchange's WebSocket limits, per client IP (here: nearly always 127.0.0.1)
    max_connections: int = 100
    max_subscriptions: int = 1000  # across the IP's connections
    max_users: int = 10  # unique users across its user subscriptions
    max_messages_per_min: int = 2000  # client frames (pings included) in any rolling 60 s
    book_interval_s: float = 0.5  # l2Book pushes at most this often, and only when it changed
    replay_path: str | None = None  # JSONL trades (engine.parse_replay) instead of the random walk
    replay_speed: float = 1.0  # 2.0 replays the recording twice as fast


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    ip: str
    subs: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_rx: float = field(default_factory=time.monotonic)


def _key(sub: dict[str, Any]) -> str:
    """Subscriptions match whatever the case of the address in them, as on the exchange."""
    if isinstance(sub.get("user"), str):
        sub = {**sub, "user": sub["user"].lower()}
    return json.dumps(sub, sort_keys=True)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _is_loopback(remote: str | None) -> bool:
    try:
        addr = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


class SimServer:
    """Start with `start()` (returns once listening); `stop()` closes everything; context manager."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.engine = self._make_engine({})
        self.is_mainnet = self.config.chain == "mainnet"
        self.loop = asyncio.new_event_loop()
        self.conns: set[_Conn] = set()
        self.port = self.config.port
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._feed_on = asyncio.Event()  # cleared by pause_feed; the random walk and replay wait on it
        if self.config.feed:
            self._feed_on.set()
        self._replay: list[ReplayTrade] = []
        self._silent_until: float | None = None  # monotonic; inf = until unsilence
        self._refuse_until = 0.0
        self._429_until = 0.0
        self._exchange_log: list[dict[str, Any]] = []
        self._emitted: dict[int, int] = {}  # tid -> send time of trades emitted with a delay
        self._messages: dict[str, collections.deque[float]] = {}  # ip -> monotonic times in the last minute
        self._stats = {"ws_messages_in": 0, "ws_messages_out": 0, "info_requests": 0, "exchange_requests": 0,
                       "ws_connections_refused": 0, "ws_limit_errors": 0, "replayed_trades": 0,
                       "expired_actions": 0}
        self._address_weight: dict[str, int] = {}  # recovered signer -> address-based weight charged
        self._tasks: list[asyncio.Task[Any]] = []
        self._book_sent: dict[str, str] = {}  # l2Book subscription key -> the levels its subscribers last got

    def _make_engine(self, replay_prices: dict[str, Decimal]) -> Engine:
        coins = {c: DEFAULT_COINS[c] for c in self.config.coins}
        prices = {k: Decimal(str(v)) for k, v in (self.config.start_prices or {}).items()}
        prices.update(replay_prices)  # the candle warm-up history should end where the recording starts
        return Engine(self.config.seed, coins, prices, self.config.volatility, Decimal(str(self.config.initial_usdc)))

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
        """Raises ValueError/OSError for an unreadable or malformed replay file, before listening."""
        if self.config.replay_path:
            self._load_replay(Path(self.config.replay_path))
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
        prices = self._replay_prices() if self._replay else self._feed()
        self._tasks = [asyncio.ensure_future(prices), asyncio.ensure_future(self._idle_reaper()),
                       asyncio.ensure_future(self._book_pusher())]

    def _load_replay(self, path: Path) -> None:
        with path.open(encoding="utf-8") as f:
            self._replay = parse_replay(f, self.config.coins)
        first: dict[str, Decimal] = {}
        for trade in self._replay:
            first.setdefault(trade.coin, trade.px)
        self.engine = self._make_engine(first)
        log.info("replaying %d trades from %s at %gx", len(self._replay), path, self.config.replay_speed)

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
        # together and bounded: a close waits for the client's close reply, which a client that
        # is not reading never sends; cleanup() below aborts whatever is left
        closes = [conn.ws.close() for conn in list(self.conns)]
        if closes:
            try:
                await asyncio.wait_for(asyncio.gather(*closes, return_exceptions=True), 2.0)
            except asyncio.TimeoutError:
                log.info("some clients did not answer the close; aborting them")
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
            await self._feed_on.wait()
            if rate > 0:
                coin = self.engine.rng.choice(self.engine.names)
                await self._print(coin, self.engine.walk(coin))

    async def _replay_prices(self) -> None:
        """Print the recording in order, keeping its spacing (divided by replay_speed).

        Trades are stamped with the current time, not the recorded one: clients judge staleness
        and build live candles from trade times. A pause shifts the rest of the timeline."""
        speed = self.config.replay_speed if self.config.replay_speed > 0 else 1.0
        origin_ms, started = self._replay[0].time_ms, self.loop.time()
        for trade in self._replay:
            delay = started + (trade.time_ms - origin_ms) / 1000 / speed - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self._feed_on.is_set():
                paused_at = self.loop.time()
                await self._feed_on.wait()
                started += self.loop.time() - paused_at
            await self._print(trade.coin, trade.px, trade.size, trade.side)
            self._stats["replayed_trades"] += 1
        log.info("replay finished after %d trades; prices stay where it ended", len(self._replay))

    async def _idle_reaper(self) -> None:
        # a fraction of the timeout, so a short test timeout closes within about its own length
        period = min(1.0, max(0.02, self.config.idle_timeout_s / 4))
        while True:
            await asyncio.sleep(period)
            cutoff = time.monotonic() - self.config.idle_timeout_s
            for conn in list(self.conns):
                if conn.last_rx < cutoff:
                    log.info("closing a connection idle for %.0fs", self.config.idle_timeout_s)
                    await conn.ws.close()

    async def _book_pusher(self) -> None:
        """l2Book is a full snapshot each time, at most every book_interval_s, only on a change."""
        last_sent = self._book_sent
        while True:
            await asyncio.sleep(self.config.book_interval_s)
            subs = self._subscribed("l2Book")
            for key in set(last_sent) - set(subs):
                del last_sent[key]
            for key, sub in subs.items():
                coin = sub.get("coin")
                if coin not in self.engine.prices:
                    continue
                levels = self._book(coin)
                text = json.dumps(levels)
                if last_sent.get(key) == text:
                    continue
                last_sent[key] = text
                await self._broadcast(sub, json.dumps(
                    {"channel": "l2Book", "data": {"coin": coin, "time": now_ms(), "levels": levels}}))

    def _subscribed(self, kind: str, coin: str | None = None) -> dict[str, dict[str, Any]]:
        """Distinct live subscriptions of a type (and coin), by key: what a push must serve."""
        found: dict[str, dict[str, Any]] = {}
        for conn in list(self.conns):
            for key, sub in conn.subs.items():
                if sub["type"] == kind and (coin is None or sub.get("coin") == coin):
                    found[key] = sub
        return found

    async def _print(self, coin: str, px: Decimal, size: Decimal | None = None, side: str | None = None) -> int:
        trade, touched = self.engine.print_trade(coin, px, now_ms(), size, side)
        await self._broadcast({"type": "trades", "coin": coin},
                              json.dumps({"channel": "trades", "data": [trade]}))
        bid, ask = self._bbo(coin)
        await self._broadcast({"type": "bbo", "coin": coin}, json.dumps(
            {"channel": "bbo", "data": {"coin": coin, "time": trade["time"], "bbo": [bid, ask]}}))
        await self._broadcast({"type": "allMids"}, json.dumps({"channel": "allMids", "data": {"mids": self._mids()}}))
        for sub in self._subscribed("candle", coin).values():
            candle = self.engine.latest_candle(coin, INTERVALS_MS[sub["interval"]])
            if candle is not None:
                await self._broadcast(sub, json.dumps({"channel": "candle", "data": candle.wire(sub["interval"])}))
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
        addr = user.lower()  # subscription keys hold the address in lower case (see _key)
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
        ip = request.remote or "unknown"
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        if sum(1 for c in self.conns if c.ip == ip) >= self.config.max_connections:
            self._stats["ws_connections_refused"] += 1
            await self._refuse(ws, connections_error(self.config.max_connections))
            return ws
        conn = _Conn(ws, ip)
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

    async def _refuse(self, ws: web.WebSocketResponse, text: str) -> None:
        await ws.send_str(_compact({"channel": "error", "data": text}))
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=text.encode()[:120])

    async def _error(self, conn: _Conn, text: str) -> None:
        await conn.ws.send_str(_compact({"channel": "error", "data": text}))

    def _admit_message(self, ip: str) -> bool:
        """The per-IP rolling-minute message budget. A refused message does not count against it
        (unconfirmed either way), so a client that backs off gets its budget back as time passes."""
        window = self._messages.setdefault(ip, collections.deque())
        now = time.monotonic()
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= self.config.max_messages_per_min:
            return False
        window.append(now)
        return True

    async def _on_ws_message(self, conn: _Conn, text: str) -> None:
        if not self._admit_message(conn.ip):
            # answered and dropped, the connection stays open: whether the real server also
            # closes it is undocumented
            self._stats["ws_limit_errors"] += 1
            await self._error(conn, messages_error(self.config.max_messages_per_min))
            return
        try:
            body = json.loads(text)
            method = body["method"]
        except (ValueError, KeyError, TypeError):
            await self._error(conn, f"Error parsing JSON into valid websocket request: {text[:100]}")
            return
        if method == "ping":
            await conn.ws.send_str('{"channel":"pong"}')
            return
        sub = body.get("subscription")
        if method not in ("subscribe", "unsubscribe") or not isinstance(sub, dict) or "type" not in sub:
            await self._error(conn, f"Invalid request: {text[:100]}")
            return
        key = _key(sub)
        if method == "unsubscribe":
            if conn.subs.pop(key, None) is None:
                await self._error(conn, f"Already unsubscribed: {_compact(sub)}")
                return
            await conn.ws.send_str(json.dumps({"channel": "subscriptionResponse", "data": body}))
            return
        problem = self._subscribe_problem(conn, sub, key)
        if problem:
            await self._error(conn, problem)
            return
        conn.subs[key] = sub
        await conn.ws.send_str(json.dumps({"channel": "subscriptionResponse", "data": body}))
        await self._snapshot(conn, sub)

    def _subscribe_problem(self, conn: _Conn, sub: dict[str, Any], key: str) -> str | None:
        """Why this subscribe is refused (the exchange's texts), or None; a user sub funds its user."""
        if key in conn.subs:
            return f"Already subscribed: {_compact(sub)}"
        if sub["type"] == "candle" and sub.get("interval") not in INTERVALS_MS:
            return f"Invalid subscription: {_compact(sub)}"  # wording unconfirmed
        peers = [c for c in self.conns if c.ip == conn.ip]
        if sum(len(c.subs) for c in peers) >= self.config.max_subscriptions:
            self._stats["ws_limit_errors"] += 1
            return subscriptions_error(self.config.max_subscriptions)
        user = sub.get("user")
        if user is None:
            return None
        users = {s["user"].lower() for c in peers for s in c.subs.values() if isinstance(s.get("user"), str)}
        if str(user).lower() not in users and len(users) >= self.config.max_users:
            self._stats["ws_limit_errors"] += 1
            return users_error(self.config.max_users)
        try:
            self._faucet(user)
        except ValueError:
            return f"Invalid subscription: {_compact(sub)}"  # wording unconfirmed
        return None

    async def _snapshot(self, conn: _Conn, sub: dict[str, Any]) -> None:
        """What the exchange sends right after the ack. orderUpdates and userEvents get nothing:
        the real server does not replay them, so a client must reconcile over REST."""
        kind, coin = sub["type"], sub.get("coin")
        if kind == "trades" and coin in self.engine.history:
            recent = [{"coin": coin, "side": "B", "px": str(px), "sz": str(sz), "hash": "0x" + "0" * 64, "time": t,
                       "tid": i, "users": []} for i, (t, px, sz) in enumerate(self.engine.history[coin][-10:])]
            if recent:
                await conn.ws.send_str(json.dumps({"channel": "trades", "data": recent}))
        elif kind == "userFills":
            acct = self.engine.account(self._faucet(sub["user"]))
            await conn.ws.send_str(json.dumps({"channel": "userFills", "data": {
                "isSnapshot": True, "user": sub["user"].lower(), "fills": acct.fills[-100:]}}))
        elif kind == "l2Book" and coin in self.engine.prices:
            levels = self._book(coin)
            # the first subscriber's snapshot is what the pusher compares with next; later ones
            # may get the next push twice over, which a full-snapshot channel makes harmless
            self._book_sent.setdefault(_key(sub), json.dumps(levels))
            await conn.ws.send_str(json.dumps({"channel": "l2Book", "data": {
                "coin": coin, "time": now_ms(), "levels": levels}}))
        elif kind == "candle" and coin in self.engine.prices:
            # the candle being built (or the latest one with prints), as a live chart needs
            candle = self.engine.latest_candle(coin, INTERVALS_MS[sub["interval"]])
            if candle is not None:
                await conn.ws.send_str(json.dumps({"channel": "candle", "data": candle.wire(sub["interval"])}))

    def _user(self, address: str) -> str:
        """Accounts are keyed by checksummed address; requests may use any case."""
        for known in self.engine.accounts:
            if known.lower() == address.lower():
                return known
        return address

    def _faucet(self, address: Any) -> str:
        """The account key for an address, creating the account with `initial_usdc` if new.

        The faucet: an address named in an `/info` query or a user subscription becomes an
        account. A signer that never did so "does not exist", as on the real exchange, which is
        what a signature over tampered content recovers to. ValueError if not an address."""
        if not (isinstance(address, str) and address.startswith("0x") and len(address) == 42):
            raise ValueError("user")
        known = self._user(address)
        if known in self.engine.accounts:
            return known
        user = to_checksum_address(address)
        self.engine.account(user)
        return user

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
            return [c.wire(req["interval"]) for c in candles]
        user = self._faucet(body["user"])
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
                                 "triggerCondition": "N/A", "children": []})
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
            if expires is not None and (not isinstance(expires, int) or isinstance(expires, bool) or expires < 0):
                raise TypeError("expiresAfter must be a u64")
        except (ValueError, KeyError, TypeError, AttributeError):
            return web.Response(status=422, text=DESERIALIZE_ERROR)
        entry: dict[str, Any] = {"recv_ns": recv_ns, "user": None, "action": action, "nonce": nonce}
        self._exchange_log.append(entry)
        try:
            user = recover_l1_signer(action, signature, vault, nonce, expires, self.is_mainnet)
        except (ValueError, TypeError):
            return self._answer(entry, {"status": "err", "response": "Invalid signature."})
        entry["user"] = user
        weight = action_weight(action) if isinstance(action, dict) else 1
        if expires is not None and expires < now_ms():
            self._stats["expired_actions"] += 1
            self._charge(user, EXPIRED_WEIGHT_FACTOR * weight)
            return self._answer(entry, {"status": "err", "response": EXPIRED_ERROR})
        self._charge(user, weight)
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

    def _charge(self, user: str, weight: int) -> None:
        """Count address-based weight against the signer (counted only: the sim does not throttle)."""
        self._address_weight[user] = self._address_weight.get(user, 0) + weight

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
        if not _is_loopback(request.remote):
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
                              px: Any = None, delay_s: float = 0.0) -> dict[str, Any]:
        """Send `count` trades at `px` (default: the current price), as fast as possible or at
        `rate_hz`. Each send time (monotonic ns, taken just before the frame goes out) is returned
        with its tid. With `delay_s` the call returns at once with the tids and the trades go out
        later: a benchmark's answer then does not land while the client is busy with the trade;
        `emitted` gives the send times afterwards."""
        price = Decimal(str(px)) if px is not None else self.engine.prices[coin]
        tids = [next(self.engine._tids) for _ in range(count)]
        if delay_s > 0:
            async def later() -> None:
                await asyncio.sleep(delay_s)
                for tid, ns in zip(tids, await self._emit(coin, tids, rate_hz, price)):
                    self._emitted[tid] = ns
                while len(self._emitted) > 100_000:
                    self._emitted.pop(next(iter(self._emitted)))
            asyncio.ensure_future(later())
            return {"scheduled": count, "tids": tids}
        return {"sent": count, "send_ns": await self._emit(coin, tids, rate_hz, price), "tids": tids}

    async def _op_emitted(self, tids: list[int]) -> dict[str, Any]:
        return {"send_ns": [self._emitted.get(int(t)) for t in tids]}

    async def _emit(self, coin: str, tids: list[int], rate_hz: float | None, price: Decimal) -> list[int]:
        send_ns = []
        key = _key({"type": "trades", "coin": coin})
        started = time.monotonic()
        for i, tid in enumerate(tids):
            text = ('{"channel":"trades","data":[{"coin":"%s","side":"B","px":"%s","sz":"0.01","hash":"0x0",'
                    '"time":%d,"tid":%d,"users":[]}]}' % (coin, price, now_ms(), tid))
            send_ns.append(time.monotonic_ns())
            for conn in list(self.conns):
                if key in conn.subs and not conn.ws.closed and not self._silent:
                    await conn.ws.send_str(text)
            if rate_hz:
                delay = started + (i + 1) / rate_hz - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i % 256 == 255:
                await asyncio.sleep(0)
        self.engine.prices[coin] = price
        return send_ns

    async def _op_pause_feed(self) -> dict[str, Any]:
        self._feed_on.clear()
        return {"feed": False}

    async def _op_resume_feed(self) -> dict[str, Any]:
        self._feed_on.set()
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
        return {"connections": len(self.conns), "subscriptions": sum(len(c.subs) for c in self.conns), **self._stats,
                "address_weight": dict(self._address_weight)}

    # thread-safe public control methods (same names as the ops)
    def set_price(self, coin: str, px: Any) -> dict[str, Any]:
        return self._run(self._op_set_price(coin, px))

    def move_price(self, coin: str, path: Iterable[Any], interval_s: float = 0.05) -> dict[str, Any]:
        return self._run(self._op_move_price(coin, list(path), interval_s))

    def emit_trades(self, coin: str, count: int, rate_hz: float | None = None, px: Any = None,
                    delay_s: float = 0.0) -> dict[str, Any]:
        return self._run(self._op_emit_trades(coin, count, rate_hz, px, delay_s))

    def emitted(self, tids: list[int]) -> dict[str, Any]:
        return self._run(self._op_emitted(tids))

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
