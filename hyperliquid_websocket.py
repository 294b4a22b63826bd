"""The WebSocket thread: one websocket-client connection to Hyperliquid, parsed events on a queue.

Owns: connect, subscribe (trades first) and confirm every subscription, ping when quiet, detect a
dead or silent connection (pong and data deadlines), reconnect with capped, jittered exponential
backoff, resubscribe on every connect, and put typed, immutable events on a bounded queue.
Survives its own bugs: any exception in a session is logged (one traceback, then a count at most
once a minute), counted (`WsStats.internal_errors`) and handled as a lost connection (reconnect
with backoff); `restarted()` builds a fresh client should the thread ever end anyway. (The
events and their pure parser are in `stream_events`; `Backoff`, `WsStats` and the buffered frame
reader in `ws_parts`.)
Must not: run trading logic or call into the bot; block on the queue (a stuck consumer never
stops reads or pings); drop a fill, order update or connection event; let a bad price through;
end its thread before `stop()`. Only this thread touches the socket.
"""
from __future__ import annotations

import collections
import json
import logging
import queue
import random
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import websocket

from stream_events import (Bbo, Connected, Disconnected, L2Book, Mids, StreamDown, StreamRecovered, SubscriptionFailed,
                           Trade, parse_frame)
from ws_parts import Backoff, BufferedWebSocket, WsStats

log = logging.getLogger("websocket")

_RECV_POLL_S = 0.2  # socket read timeout: bounds how fast stop() and deadlines are noticed
_CHECK_EVERY_S = 0.02  # during a burst: how often deadlines, pings and shared stats are updated
_INTERNAL_LOG_EVERY_S = 60.0  # a repeating internal error: one traceback, then a count this often
_BOOKKEEPING_RETRY_S = 5.0  # wait after a failure between sessions when the backoff itself failed

_MARKET = (Trade, L2Book, Bbo, Mids)  # what a full queue may shed; never fills, orders or connection events


def _describe(sub: Mapping[str, Any]) -> str:
    target = sub.get("coin") or sub.get("user") or ""
    if isinstance(target, str) and target.startswith("0x") and len(target) > 12:
        target = f"{target[:6]}…{target[-4:]}"
    return f"{sub.get('type')} for {target}".rstrip(" for")


def _sub_key(sub: Mapping[str, Any]) -> str:
    return json.dumps(sub, sort_keys=True, separators=(",", ":"))


class _Dead(Exception):
    """The connection must be dropped and re-opened; the message says why."""


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _error_site(exc: BaseException) -> str:
    """Where an exception was raised (innermost frame): the same bug repeating has the same site."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
    return f"{type(exc).__name__}{where}"


class HyperliquidWebSocketClient:
    """One connection in one named thread; events go to `out_queue` (bounded, never blocking)."""

    def __init__(self, url: str, subscriptions: Sequence[Mapping[str, Any]], out_queue: "queue.Queue[Any]", *,
                 reconnect_interval_s: float = 5.0, max_backoff_s: float = 60.0, max_reconnect_attempts: int = 10,
                 ping_interval_s: float = 30.0, pong_timeout_s: float = 10.0, data_timeout_s: float = 20.0,
                 subscribe_timeout_s: float = 5.0, healthy_after_s: float = 30.0, max_frame_bytes: int = 1 << 20,
                 clock: Callable[[], float] = time.monotonic, rng: Callable[[], float] | None = None,
                 name: str = "hl-websocket") -> None:
        self._options: dict[str, Any] = dict(
            reconnect_interval_s=reconnect_interval_s, max_backoff_s=max_backoff_s,
            max_reconnect_attempts=max_reconnect_attempts, ping_interval_s=ping_interval_s,
            pong_timeout_s=pong_timeout_s, data_timeout_s=data_timeout_s, subscribe_timeout_s=subscribe_timeout_s,
            healthy_after_s=healthy_after_s, max_frame_bytes=max_frame_bytes, clock=clock, rng=rng, name=name)
        # trades first: the core feed is flowing before anything else is asked for
        self.subscriptions = sorted((dict(s) for s in subscriptions), key=lambda s: s.get("type") != "trades")
        self.url = url
        self.out = out_queue
        self.backoff = Backoff(reconnect_interval_s, max(max_backoff_s, reconnect_interval_s), rng=rng or random.random)
        self.max_attempts = max_reconnect_attempts
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s
        self.data_timeout_s = data_timeout_s
        self.subscribe_timeout_s = subscribe_timeout_s
        self.healthy_after_s = healthy_after_s
        self.max_frame_bytes = max_frame_bytes
        self.clock = clock
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ws: websocket.WebSocket | None = None
        self._lock = threading.Lock()
        self._priority: collections.deque[Any] = collections.deque()
        self._replay_coins: set[str] = set()
        self._quiet_ping_s = min(ping_interval_s, data_timeout_s / 2)
        # stats (written by the socket thread under the lock)
        self._connected = False
        self._confirmed: set[str] = set()
        self._last_message: float | None = None
        self._reconnects = 0
        self._failures = 0
        self._fallback = False
        self._down_since: float | None = None
        self._dropped = 0
        self._errors: dict[str, int] = {}
        self._messages = 0
        self._last_drop_log = -1e9  # the first drop is always logged, whatever the clock
        self._last_error_log: dict[str, float] = {}
        self._internal_errors = 0
        self._internal_log: dict[str, tuple[float, int]] = {}  # site -> (last logged at, count since)

    # ---- lifecycle ----

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            try:
                ws.abort()  # wakes a blocked recv/connect at once
            except Exception:  # noqa: BLE001 - best effort on teardown
                pass
        if self._thread is not None:
            self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        """True while the socket thread runs (as `threading.Thread.is_alive`); False before `start()`."""
        return self._thread is not None and self._thread.is_alive()

    def thread_died(self) -> bool:
        """True once the started thread has ended, `stop()` included: the caller knows whether it
        asked for that; otherwise it replaces this client with `restarted()`."""
        return self._thread is not None and not self._thread.is_alive()

    def restarted(self) -> "HyperliquidWebSocketClient":
        """A new, not started client with this one's url, subscriptions, queue and settings, for when
        this thread has ended (a thread cannot be started twice). Counters carry over (reconnects,
        drops, parse and internal errors, messages), and so do the failure streak and the fallback
        state, so the bot still gets `StreamRecovered` after a `StreamDown` this client sent. This
        client is told to stop, so two threads never feed one queue."""
        self.stop(timeout_s=0.0)
        fresh = HyperliquidWebSocketClient(self.url, self.subscriptions, self.out, **self._options)
        fresh.backoff.failures = self.backoff.failures
        with self._lock:
            fresh._reconnects, fresh._failures, fresh._dropped = self._reconnects, self._failures, self._dropped
            fresh._fallback, fresh._down_since = self._fallback, self._down_since
            fresh._errors, fresh._messages = dict(self._errors), self._messages
            fresh._internal_errors = self._internal_errors
        return fresh

    def stats(self) -> WsStats:
        now = self.clock()
        with self._lock:
            return WsStats(
                connected=self._connected, subscriptions_confirmed=len(self._confirmed),
                subscriptions_total=len(self.subscriptions),
                last_message_age_s=None if self._last_message is None else now - self._last_message,
                reconnects=self._reconnects, consecutive_failures=self._failures, fallback=self._fallback,
                dropped_market_data=self._dropped, parse_errors_total=sum(self._errors.values()),
                parse_errors=dict(self._errors), messages_received=self._messages,
                pending_priority=len(self._priority), internal_errors=self._internal_errors)

    # ---- the thread ----

    def run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            try:
                if not self._one_connection(attempt):
                    break
            except Exception as exc:  # noqa: BLE001 - a bug between sessions must not end the thread
                with self._lock:
                    self._connected = False
                self._internal_error(exc)
                if self._stop.wait(self._safe_delay()):
                    break
        with self._lock:
            self._connected = False

    def _one_connection(self, attempt: int) -> bool:
        """One session, then the failure bookkeeping and the backoff wait; False when stopping."""
        session_start = self.clock()
        try:
            self._session(attempt)
            reason = "closed by server"
        except _Dead as exc:
            reason = str(exc)
        except (websocket.WebSocketException, OSError, ValueError) as exc:
            reason = _reason(exc)
        except Exception as exc:  # noqa: BLE001 - our own bug: counted, logged, then a normal reconnect
            self._internal_error(exc)
            reason = f"internal error: {_reason(exc)}"
        finally:
            self._close()
        if self._stop.is_set():
            with self._lock:
                was, self._connected = self._connected, False
            if was:
                log.info("WebSocket connection closed (client stopping)")
            return False
        was_connected = self._mark_disconnected(reason)
        if was_connected and self.clock() - session_start >= self.healthy_after_s:
            self.backoff.reset()
            with self._lock:
                self._failures = 0
        with self._lock:
            self._failures += 1
            failures = self._failures
        if failures >= self.max_attempts and not self._fallback:
            with self._lock:
                self._fallback = True
                self._down_since = self.clock()
            log.warning("WebSocket down after %d consecutive failures; the bot falls back to REST", failures)
            self._emit(StreamDown(failures, reason))
        delay = self.backoff.next_delay()
        log.info("Reconnecting in %.1fs (attempt %d/%d)...", delay, failures, self.max_attempts)
        if self._stop.wait(delay):
            return False
        with self._lock:
            self._reconnects += 1
        return True

    def _safe_delay(self) -> float:
        try:
            return self.backoff.next_delay()
        except Exception:  # noqa: BLE001 - the backoff is what failed: wait a fixed time instead
            return _BOOKKEEPING_RETRY_S

    def _internal_error(self, exc: Exception) -> None:
        """Count a bug; log its traceback the first time, then a count at most once a minute."""
        with self._lock:
            self._internal_errors += 1
            total = self._internal_errors
        site = _error_site(exc)
        now = self.clock()
        logged_at, since = self._internal_log.get(site, (None, 0))
        if logged_at is None:
            self._internal_log[site] = (now, 0)
            log.error("internal error in the WebSocket thread (%d so far): %s", total, _reason(exc), exc_info=exc)
        elif now - logged_at >= _INTERNAL_LOG_EVERY_S:
            self._internal_log[site] = (now, 0)
            log.error("internal error %s repeated %d more time(s) (%d so far): %s", site, since + 1, total,
                      _reason(exc))
        else:
            self._internal_log[site] = (logged_at, since + 1)

    def _session(self, attempt: int) -> None:
        ws = BufferedWebSocket(skip_utf8_validation=True, enable_multithread=False)
        self._ws = ws
        ws.settimeout(min(10.0, max(1.0, self.data_timeout_s)))
        ws.connect(self.url, suppress_origin=True)
        if self._stop.is_set():
            return
        ws.settimeout(_RECV_POLL_S)
        now = self.clock()
        with self._lock:
            self._connected = True
            self._confirmed = set()
            self._last_message = now
        log.info("WebSocket connected successfully")
        self._emit(Connected(attempt, time.monotonic_ns()))
        pending: dict[str, tuple[dict[str, Any], float, int]] = {}
        # The first trades frame per coin on a new connection is the server's replay of recent trades.
        self._replay_coins = {sub["coin"] for sub in self.subscriptions if sub.get("type") == "trades"}
        for sub in self.subscriptions:
            self._send(ws, {"method": "subscribe", "subscription": sub})
            pending[_sub_key(sub)] = (sub, now, 1)
        last_sent = now
        last_rx = now
        ping_sent_at: float | None = None
        recovered = False
        unpublished = 0  # messages not yet counted in the shared stats
        next_check = now
        while not self._stop.is_set():
            if self._priority:
                self._flush_priority()
            try:
                opcode, payload = ws.recv_data(control_frame=False)
            except websocket.WebSocketTimeoutException:
                opcode, payload = None, b""
            now = self.clock()
            if opcode is not None:
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    raise _Dead("WebSocket connection closed")
                last_rx = now
                unpublished += 1
                self._on_payload(opcode, payload, pending)
                if now < next_check:
                    continue  # in a burst, stats and deadlines are looked at every _CHECK_EVERY_S
            next_check = now + _CHECK_EVERY_S
            if unpublished:
                with self._lock:
                    self._messages += unpublished
                    self._last_message = last_rx
                unpublished = 0
            # liveness: deadlines on data and pongs, not on connection state
            if now - last_rx > self.data_timeout_s:
                raise _Dead(f"no message for {self.data_timeout_s:.1f}s")
            if ping_sent_at is not None and last_rx >= ping_sent_at:
                ping_sent_at = None
            if ping_sent_at is not None and now - ping_sent_at > self.pong_timeout_s:
                raise _Dead(f"no pong within {self.pong_timeout_s:.1f}s")
            # Ping when we have sent nothing for ping_interval (the server's 60 s idle rule), and when
            # nothing came in for half the data deadline: the pong proves a quiet market is not a
            # dead socket, so a symbol without trades does not reconnect every data_timeout.
            if now - last_sent >= self.ping_interval_s or (ping_sent_at is None and now - last_rx >= self._quiet_ping_s):
                self._send(ws, {"method": "ping"})
                last_sent = now
                if ping_sent_at is None:
                    ping_sent_at = now
            unconfirmed: list[str] = []
            for key, (sub, sent_at, tries) in list(pending.items()):
                if now - sent_at < self.subscribe_timeout_s:
                    continue
                if tries == 1:
                    log.warning("subscription %s not confirmed in %.1fs; re-sending", _describe(sub),
                                self.subscribe_timeout_s)
                    self._send(ws, {"method": "subscribe", "subscription": sub})
                    last_sent = now
                    pending[key] = (sub, now, 2)
                else:
                    log.warning("subscription %s failed: no confirmation", _describe(sub))
                    self._emit(SubscriptionFailed(sub, "not confirmed"))
                    del pending[key]
                    if sub.get("type") == "trades":
                        unconfirmed.append(_describe(sub))
            if unconfirmed:
                # Pongs alone would keep this connection "alive" without the prices we came for:
                # start over on a fresh connection (with backoff), which resubscribes everything.
                # Other channels only get reported: the server may refuse them for good (user limits).
                raise _Dead(f"subscription not confirmed ({', '.join(unconfirmed)})")
            if not recovered and not pending and self._fallback:
                recovered = True
                with self._lock:
                    down_for = self.clock() - (self._down_since or self.clock())
                    self._fallback = False
                    self._failures = 0
                self.backoff.reset()
                log.info("WebSocket stream healthy again after %.1fs down", down_for)
                self._emit(StreamRecovered(down_for))

    def _on_payload(self, opcode: int, payload: bytes, pending: dict[str, Any]) -> None:
        if opcode != websocket.ABNF.OPCODE_TEXT:
            self._count("binary_frame")
            return
        if len(payload) > self.max_frame_bytes:
            self._count("oversized_frame")
            return
        result = parse_frame(payload.decode("utf-8", "replace"), time.monotonic_ns())
        for kind in result.errors:
            if kind != "greeting":
                self._count(kind, result.error_text)
        if result.ack is not None:
            sub = result.ack.get("subscription") if isinstance(result.ack, Mapping) else None
            if isinstance(sub, Mapping):
                key = _sub_key(sub)
                if key in pending:
                    del pending[key]
                    with self._lock:
                        self._confirmed.add(key)
                    log.info("✅ Subscribed to WebSocket %s", _describe(sub))
        events = result.events
        if self._replay_coins and events and type(events[0]) is Trade and events[0].coin in self._replay_coins:
            # The replay of recent trades: history for candles. Its newest trade is still the last
            # price, and a first frame that was live (one trade, no replay sent) stays unmarked.
            self._replay_coins.discard(events[0].coin)
            events = sorted(events, key=lambda e: (e.time_ms, e.tid))  # oldest first, whatever the server's order
            events = [e._replace(replay=True) for e in events[:-1]] + events[-1:]
        for event in events:
            self._emit(event)

    def _emit(self, event: Any) -> None:
        """Queue an event without ever blocking; only market data may be dropped."""
        if type(event) in _MARKET:
            if self._priority:
                self._flush_priority()
            try:
                self.out.put_nowait(event)
            except queue.Full:
                with self._lock:
                    self._dropped += 1
                    dropped = self._dropped
                now = self.clock()
                if now - self._last_drop_log >= 10.0:
                    self._last_drop_log = now
                    log.warning("consumer lagging: queue full, %d market data event(s) dropped so far", dropped)
            return
        self._priority.append(event)
        self._flush_priority()

    def _flush_priority(self) -> None:
        while self._priority:
            try:
                self.out.put_nowait(self._priority[0])
            except queue.Full:
                return
            self._priority.popleft()

    def _count(self, kind: str, detail: str | None = None) -> None:
        with self._lock:
            self._errors[kind] = self._errors.get(kind, 0) + 1
            total = self._errors[kind]
        now = self.clock()
        if now - self._last_error_log.get(kind, -1e9) >= 10.0:
            self._last_error_log[kind] = now
            log.warning("ignored frame (%s)%s; %d so far", kind, f": {detail}" if detail else "", total)

    def _send(self, ws: websocket.WebSocket, message: Mapping[str, Any]) -> None:
        ws.send(json.dumps(message))

    def _mark_disconnected(self, reason: str) -> bool:
        with self._lock:
            was = self._connected
            self._connected = False
            self._confirmed = set()
        if was:
            log.info("WebSocket connection closed")
        log.warning("Error in WebSocket listener: %s", reason)
        self._emit(Disconnected(reason, time.monotonic_ns()))
        return was

    def _close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close(timeout=0.2)
            except Exception:  # noqa: BLE001 - the socket may already be gone
                try:
                    ws.abort()
                except Exception:  # noqa: BLE001
                    pass


__all__ = ["HyperliquidWebSocketClient"]
