"""The simulator's WebSocket endpoint `/ws`: connections, subscriptions, snapshots and pushes.

Owns: the live connections, the exchange's per-IP limits (connections, subscriptions, users,
messages per minute) with its error texts, subscribe/unsubscribe with acks and "Already
subscribed" errors, the snapshots sent right after a subscribe (recent trades, l2Book, the current
candle, userFills with `isSnapshot`), sending frames to the subscribers of a channel (user events
included: fills, and funding payments as funding.py shapes them), l2Book pushes when the book
changed (an unchanged one again every book_resend_s), bbo pushes of the same book's touch,
ping/pong and the idle close. It honours the silence and refusal windows of `state.faults`.
Must not: make prices or trades (feed.py does), answer REST, or change the engine other than
creating the account a user subscription names (the faucet).
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from . import wire
from .engine import Engine
from .state import SimConfig, SimState, now_ms

log = logging.getLogger("sim")


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


@dataclass(eq=False)
class Connection:
    ws: web.WebSocketResponse
    ip: str
    subs: dict[str, dict[str, Any]] = field(default_factory=dict)  # subscription_key -> subscription
    last_rx: float = field(default_factory=time.monotonic)


def subscription_key(sub: dict[str, Any]) -> str:
    """Subscriptions match whatever the case of the address in them, as on the exchange."""
    if isinstance(sub.get("user"), str):
        sub = {**sub, "user": sub["user"].lower()}
    return json.dumps(sub, sort_keys=True)


def recent_trades_frame(engine: Engine, coin: Any) -> str | None:
    """The trades snapshot: the last 10 prints of the coin, or None when it has none."""
    recent = [{"coin": coin, "side": "B", "px": str(px), "sz": str(sz), "hash": "0x" + "0" * 64, "time": t,
               "tid": i, "users": []} for i, (t, px, sz) in enumerate(engine.history.recent(coin, 10))]
    return json.dumps({"channel": "trades", "data": recent}) if recent else None


class IpLimits:
    """The exchange's per-IP WebSocket limits over the live connections; each refusal is counted."""

    def __init__(self, config: SimConfig, state: SimState) -> None:
        self._config = config
        self._state = state
        self._messages: dict[str, collections.deque[float]] = {}  # ip -> monotonic times in the last minute

    def connection_refusal(self, conns: set[Connection], ip: str) -> str | None:
        if sum(1 for c in conns if c.ip == ip) < self._config.max_connections:
            return None
        self._state.stats["ws_connections_refused"] += 1
        return connections_error(self._config.max_connections)

    def message_refusal(self, ip: str) -> str | None:
        """The rolling-minute message budget. A refused message does not count against it
        (unconfirmed either way), so a client that backs off gets its budget back as time passes."""
        window = self._messages.setdefault(ip, collections.deque())
        now = time.monotonic()
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) < self._config.max_messages_per_min:
            window.append(now)
            return None
        self._state.stats["ws_limit_errors"] += 1
        return messages_error(self._config.max_messages_per_min)

    def subscription_refusal(self, conns: set[Connection], ip: str, sub: dict[str, Any]) -> str | None:
        """Subscriptions across the IP's connections, and distinct users across its user subs."""
        peers = [c for c in conns if c.ip == ip]
        if sum(len(c.subs) for c in peers) >= self._config.max_subscriptions:
            self._state.stats["ws_limit_errors"] += 1
            return subscriptions_error(self._config.max_subscriptions)
        user = sub.get("user")
        if user is None:
            return None
        users = {s["user"].lower() for c in peers for s in c.subs.values() if isinstance(s.get("user"), str)}
        if str(user).lower() not in users and len(users) >= self._config.max_users:
            self._state.stats["ws_limit_errors"] += 1
            return users_error(self._config.max_users)
        return None


class WebSocketEndpoint:
    """`handle` is the aiohttp handler; the feed, /exchange and /control send through the rest."""

    def __init__(self, config: SimConfig, state: SimState) -> None:
        self._config = config
        self._state = state
        self._limits = IpLimits(config, state)
        self.conns: set[Connection] = set()
        # l2Book subscription key -> the levels its subscribers last got, and when (monotonic)
        self._book_sent: dict[str, tuple[str, float]] = {}

    # ---- connections ----

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if time.monotonic() < self._state.faults.refuse_ws_until:
            return web.Response(status=503, text="Service temporarily unavailable")
        ip = request.remote or "unknown"
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        refusal = self._limits.connection_refusal(self.conns, ip)
        if refusal:
            await self._refuse(ws, refusal)
            return ws
        conn = Connection(ws, ip)
        self.conns.add(conn)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                conn.last_rx = time.monotonic()
                self._state.stats["ws_messages_in"] += 1
                if self._state.faults.silent:
                    continue
                await self._on_message(conn, msg.data)
        finally:
            self.conns.discard(conn)
        return ws

    async def _refuse(self, ws: web.WebSocketResponse, text: str) -> None:
        await ws.send_str(wire.compact({"channel": "error", "data": text}))
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=text.encode()[:120])

    async def reap_idle(self) -> None:
        """Runs until cancelled: closes connections that sent nothing for idle_timeout_s."""
        # a fraction of the timeout, so a short test timeout closes within about its own length
        period = min(1.0, max(0.02, self._config.idle_timeout_s / 4))
        while True:
            await asyncio.sleep(period)
            cutoff = time.monotonic() - self._config.idle_timeout_s
            for conn in list(self.conns):
                if conn.last_rx < cutoff:
                    log.info("closing a connection idle for %.0fs", self._config.idle_timeout_s)
                    await conn.ws.close()

    async def close_all(self) -> None:
        # together and bounded: a close waits for the client's close reply, which a client that
        # is not reading never sends; the runner's cleanup aborts whatever is left
        closes = [conn.ws.close() for conn in list(self.conns)]
        if closes:
            try:
                await asyncio.wait_for(asyncio.gather(*closes, return_exceptions=True), 2.0)
            except asyncio.TimeoutError:
                log.info("some clients did not answer the close; aborting them")

    def drop_all(self) -> int:
        """Abort every connection's transport (no close frame); how many were dropped."""
        dropped = 0
        for conn in list(self.conns):
            transport = conn.ws._req.transport if conn.ws._req is not None else None  # type: ignore[attr-defined]
            if transport is not None:
                transport.abort()
                dropped += 1
        return dropped

    def counts(self) -> tuple[int, int]:
        """(connections, subscriptions) across all IPs."""
        return len(self.conns), sum(len(c.subs) for c in self.conns)

    # ---- client messages ----

    async def _error(self, conn: Connection, text: str) -> None:
        await conn.ws.send_str(wire.compact({"channel": "error", "data": text}))

    async def _on_message(self, conn: Connection, text: str) -> None:
        refusal = self._limits.message_refusal(conn.ip)
        if refusal:
            # answered and dropped, the connection stays open: whether the real server also
            # closes it is undocumented
            await self._error(conn, refusal)
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
        if method == "unsubscribe":
            await self._unsubscribe(conn, body, sub)
        else:
            await self._subscribe(conn, body, sub)

    async def _unsubscribe(self, conn: Connection, body: dict[str, Any], sub: dict[str, Any]) -> None:
        if conn.subs.pop(subscription_key(sub), None) is None:
            await self._error(conn, f"Already unsubscribed: {wire.compact(sub)}")
            return
        await conn.ws.send_str(json.dumps({"channel": "subscriptionResponse", "data": body}))

    async def _subscribe(self, conn: Connection, body: dict[str, Any], sub: dict[str, Any]) -> None:
        key = subscription_key(sub)
        problem = self._subscribe_problem(conn, sub, key)
        if problem:
            await self._error(conn, problem)
            return
        conn.subs[key] = sub
        await conn.ws.send_str(json.dumps({"channel": "subscriptionResponse", "data": body}))
        frame = self._snapshot(sub)
        if frame is not None:
            await conn.ws.send_str(frame)

    def _subscribe_problem(self, conn: Connection, sub: dict[str, Any], key: str) -> str | None:
        """Why this subscribe is refused (the exchange's texts), or None; a user sub funds its user."""
        if key in conn.subs:
            return f"Already subscribed: {wire.compact(sub)}"
        if sub["type"] == "candle" and sub.get("interval") not in wire.INTERVALS_MS:
            return f"Invalid subscription: {wire.compact(sub)}"  # wording unconfirmed
        refusal = self._limits.subscription_refusal(self.conns, conn.ip, sub)
        if refusal or sub.get("user") is None:
            return refusal
        try:
            self._state.faucet(sub["user"])
        except ValueError:
            return f"Invalid subscription: {wire.compact(sub)}"  # wording unconfirmed
        return None

    def _snapshot(self, sub: dict[str, Any]) -> str | None:
        """What the exchange sends right after the ack, if anything. orderUpdates and userEvents
        get nothing: the real server does not replay them, so a client must reconcile over REST."""
        kind, coin, engine = sub["type"], sub.get("coin"), self._state.engine
        if kind == "trades":
            return recent_trades_frame(engine, coin)
        if kind == "userFills":
            acct = engine.account(self._state.faucet(sub["user"]))
            return json.dumps({"channel": "userFills", "data": {
                "isSnapshot": True, "user": sub["user"].lower(), "fills": acct.fills[-100:]}})
        if kind == "l2Book" and coin in engine.prices:
            levels = wire.book(engine, coin)
            # the first subscriber's snapshot is what push_books compares with next; later ones
            # may get the next push twice over, which a full-snapshot channel makes harmless
            self._book_sent.setdefault(subscription_key(sub), (json.dumps(levels), time.monotonic()))
            return json.dumps({"channel": "l2Book", "data": {"coin": coin, "time": now_ms(), "levels": levels}})
        if kind == "candle" and coin in engine.prices:
            # the candle being built (or the latest one with prints), as a live chart needs
            candle = engine.history.latest_candle(coin, wire.INTERVALS_MS[sub["interval"]])
            if candle is not None:
                return json.dumps({"channel": "candle", "data": candle.wire(sub["interval"])})
        return None

    # ---- pushes ----

    def subscribed(self, kind: str, coin: str | None = None) -> dict[str, dict[str, Any]]:
        """Distinct live subscriptions of a type (and coin), by key: what a push must serve."""
        found: dict[str, dict[str, Any]] = {}
        for conn in list(self.conns):
            for key, sub in conn.subs.items():
                if sub["type"] == kind and (coin is None or sub.get("coin") == coin):
                    found[key] = sub
        return found

    async def broadcast(self, sub: dict[str, Any], text: str) -> None:
        """Send a frame to every connection subscribed to `sub` (counted; a broken one is skipped)."""
        if self._state.faults.silent:
            return
        key = subscription_key(sub)
        for conn in list(self.conns):
            if key in conn.subs and not conn.ws.closed:
                try:
                    await conn.ws.send_str(text)
                    self._state.stats["ws_messages_out"] += 1
                except ConnectionError:
                    pass

    async def send_fast(self, key: str, text: str) -> None:
        """`broadcast` for the benchmark path: by key, not counted, a send error propagates."""
        for conn in list(self.conns):
            if key in conn.subs and not conn.ws.closed and not self._state.faults.silent:
                await conn.ws.send_str(text)

    async def send_all(self, frames: list[str | bytes]) -> None:
        """Every frame to every connection, subscribed or not (malformed-frame tests)."""
        for conn in list(self.conns):
            for frame in frames:
                if isinstance(frame, bytes):
                    await conn.ws.send_bytes(frame)
                else:
                    await conn.ws.send_str(frame)

    async def user_events(self, user: str, fills: list[dict], updates: list[dict]) -> None:
        addr = user.lower()  # subscription keys hold the address in lower case (see subscription_key)
        if updates:  # in causal order: a stop triggers, then it fills
            await self.broadcast({"type": "orderUpdates", "user": addr},
                                 json.dumps({"channel": "orderUpdates", "data": updates}))
        if fills:
            await self.broadcast({"type": "userFills", "user": addr}, json.dumps(
                {"channel": "userFills", "data": {"user": addr, "fills": fills}}))
            await self.broadcast({"type": "userEvents", "user": addr},
                                 json.dumps({"channel": "user", "data": {"fills": fills}}))

    async def funding_event(self, user: str, event: dict[str, Any]) -> None:
        """One funding payment (funding.user_event) to the user's userEvents subscribers; the
        exchange names that channel `user`, as it does for fills."""
        addr = user.lower()
        await self.broadcast({"type": "userEvents", "user": addr}, json.dumps({"channel": "user", "data": event}))

    async def push_bbo(self, coin: str, time_ms: int) -> None:
        """The book's touch (wire.bbo) to the coin's bbo subscribers."""
        bid, ask = wire.bbo(self._state.engine, coin)
        await self.broadcast({"type": "bbo", "coin": coin}, json.dumps(
            {"channel": "bbo", "data": {"coin": coin, "time": time_ms, "bbo": [bid, ask]}}))

    async def push_books(self) -> None:
        """One l2Book round: a full snapshot to each subscription whose book changed since it
        last got one, or that got none for book_resend_s (the exchange re-sends an unchanged book
        every few seconds); feed.py decides how often a round runs."""
        subs = self.subscribed("l2Book")
        for key in set(self._book_sent) - set(subs):
            del self._book_sent[key]
        engine = self._state.engine
        for key, sub in subs.items():
            coin = sub.get("coin")
            if coin not in engine.prices:
                continue
            levels = wire.book(engine, coin)
            text = json.dumps(levels)
            sent = self._book_sent.get(key)
            now = time.monotonic()
            if sent is not None and sent[0] == text and now - sent[1] < self._config.book_resend_s:
                continue
            self._book_sent[key] = (text, now)
            await self.broadcast(sub, json.dumps(
                {"channel": "l2Book", "data": {"coin": coin, "time": now_ms(), "levels": levels}}))
