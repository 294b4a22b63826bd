"""The WebSocket thread: one websocket-client connection to Hyperliquid, parsed events on a queue.

Owns: the thread and its story, top to bottom: connect, subscribe all (trades first), pump frames
(parse, enqueue, and every few milliseconds the deadlines, pings and acknowledgements); on failure
log, count, wait the capped, jittered exponential backoff and repeat, resubscribing on every
connect. Survives its own bugs: any exception in a session is logged, counted
(`WsStats.internal_errors`) and handled as a lost connection; `restarted()` builds a fresh client
should the thread ever end anyway. With a `FrameRecorder` (record.dir), every text frame is handed
to it with its receive time before it is parsed: one call, the recorder's thread writes. Its collaborators: `SubscriptionRegistry` (ws_subscriptions:
what to subscribe, acknowledgements and their timeout), `StreamCounters` (ws_counters: the record
`stats()` reads, rate-limited error logging), `EventEmitter` (ws_emitter: the bounded queue,
priority events never shed), `Liveness`, `Backoff`, `BufferedWebSocket` (ws_parts); events and
their pure parser are in `stream_events`.
Must not: run trading logic or call into the bot; block on the queue (a stuck consumer never
stops reads or pings); drop a fill, order update or connection event; let a bad price through;
end its thread before `stop()`. Only this thread touches the socket.
"""
from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import websocket

from stream_events import (Connected, Disconnected, StreamDown, StreamRecovered, SubscriptionFailed, Trade,
                           as_replay, parse_frame)
from recorder import FrameRecorder
from ws_counters import StreamCounters, describe_error
from ws_emitter import EventEmitter
from ws_parts import Backoff, BufferedWebSocket, Liveness, WsStats
from ws_subscriptions import SubscriptionRegistry, describe

log = logging.getLogger("websocket")

_RECV_POLL_S = 0.2  # socket read timeout: bounds how fast stop() and deadlines are noticed
_CHECK_EVERY_S = 0.02  # during a burst: how often deadlines, pings and shared stats are updated
_BOOKKEEPING_RETRY_S = 5.0  # wait after a failure between sessions when the backoff itself failed


class _Dead(Exception):
    """The connection must be dropped and re-opened; the message says why."""


def _abort(ws: websocket.WebSocket | None) -> None:
    if ws is not None:
        try:
            ws.abort()
        except Exception:  # noqa: BLE001 - best effort on teardown
            pass


class HyperliquidWebSocketClient:
    """One connection in one named thread; events go to `out_queue` (bounded, never blocking)."""

    def __init__(self, url: str, subscriptions: Sequence[Mapping[str, Any]], out_queue: "queue.Queue[Any]", *,
                 reconnect_interval_s: float = 5.0, max_backoff_s: float = 60.0, max_reconnect_attempts: int = 10,
                 ping_interval_s: float = 30.0, pong_timeout_s: float = 10.0, data_timeout_s: float = 20.0,
                 subscribe_timeout_s: float = 5.0, healthy_after_s: float = 30.0, max_frame_bytes: int = 1 << 20,
                 clock: Callable[[], float] = time.monotonic, rng: Callable[[], float] | None = None,
                 name: str = "hl-websocket", recorder: FrameRecorder | None = None) -> None:
        self._options: dict[str, Any] = dict(
            reconnect_interval_s=reconnect_interval_s, max_backoff_s=max_backoff_s,
            max_reconnect_attempts=max_reconnect_attempts, ping_interval_s=ping_interval_s,
            pong_timeout_s=pong_timeout_s, data_timeout_s=data_timeout_s, subscribe_timeout_s=subscribe_timeout_s,
            healthy_after_s=healthy_after_s, max_frame_bytes=max_frame_bytes, clock=clock, rng=rng, name=name,
            recorder=recorder)
        self.recorder = recorder
        self._record = recorder.record if recorder is not None else None  # (t_ns, text): one call per frame
        self._subs = SubscriptionRegistry(subscriptions, subscribe_timeout_s)
        self.subscriptions = self._subs.subscriptions  # trades first
        self.url = url
        self.out = out_queue
        self.backoff = Backoff(reconnect_interval_s, max(max_backoff_s, reconnect_interval_s), rng=rng or random.random)
        self.max_attempts = max_reconnect_attempts
        self.healthy_after_s = healthy_after_s
        self.max_frame_bytes = max_frame_bytes
        self.clock = clock
        self.name = name
        self.data_timeout_s = data_timeout_s
        self._deadlines = (ping_interval_s, pong_timeout_s, data_timeout_s)  # Liveness's
        self._counters = StreamCounters(clock)
        self._emitter = EventEmitter(out_queue, self._counters, clock)
        self._emit = self._emitter.emit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ws: websocket.WebSocket | None = None
        self._replay_coins: set[str] = set()

    # ---- lifecycle ----

    def start(self) -> None:
        """Start the socket thread (and the recorder's writer, shared with a restarted client)."""
        if self._thread is not None:
            return
        if self.recorder is not None:
            self.recorder.start()
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        _abort(self._ws)  # wakes a blocked recv/connect at once
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
        fresh._counters.carry_over(self._counters)
        return fresh

    def stats(self) -> WsStats:
        return self._counters.snapshot(len(self.subscriptions), len(self._emitter.backlog))

    # ---- the thread: connect, subscribe all, pump frames; on failure log, back off, repeat ----

    def run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            try:
                if not self._one_connection(attempt):
                    break
            except Exception as exc:  # noqa: BLE001 - a bug between sessions must not end the thread
                self._counters.disconnected()
                self._counters.internal_error(exc)
                if self._stop.wait(self._safe_delay()):
                    break
        self._counters.disconnected()

    def _one_connection(self, attempt: int) -> bool:
        """One session, then the failure bookkeeping and the backoff wait; False when stopping."""
        session_start = self.clock()
        try:
            self._session(attempt)
            reason = "closed by server"
        except _Dead as exc:
            reason = str(exc)
        except (websocket.WebSocketException, OSError, ValueError) as exc:
            reason = describe_error(exc)
        except Exception as exc:  # noqa: BLE001 - our own bug: counted, logged, then a normal reconnect
            self._counters.internal_error(exc)
            reason = f"internal error: {describe_error(exc)}"
        finally:
            self._close()
        if self._stop.is_set():
            if self._counters.disconnected():
                log.info("WebSocket connection closed (client stopping)")
            return False
        healthy = self._mark_disconnected(reason) and self.clock() - session_start >= self.healthy_after_s
        if healthy:
            self.backoff.reset()
        failures = self._counters.session_failed(healthy)
        if failures >= self.max_attempts and not self._counters.fallback:
            self._counters.fall_back()
            log.warning("WebSocket down after %d consecutive failures; the bot falls back to REST", failures)
            self._emit(StreamDown(failures, reason))
        delay = self.backoff.next_delay()
        log.info("Reconnecting in %.1fs (attempt %d/%d)...", delay, failures, self.max_attempts)
        if self._stop.wait(delay):
            return False
        self._counters.reconnected()
        return True

    def _safe_delay(self) -> float:
        try:
            return self.backoff.next_delay()
        except Exception:  # noqa: BLE001 - the backoff is what failed: wait a fixed time instead
            return _BOOKKEEPING_RETRY_S

    def _session(self, attempt: int) -> None:
        ws = BufferedWebSocket(skip_utf8_validation=True, enable_multithread=False)
        self._ws = ws
        ws.settimeout(min(10.0, max(1.0, self.data_timeout_s)))
        ws.connect(self.url, suppress_origin=True)
        if self._stop.is_set():
            return
        ws.settimeout(_RECV_POLL_S)
        now = self.clock()
        self._counters.connected_now(now)
        log.info("WebSocket connected successfully")
        self._emit(Connected(attempt, time.monotonic_ns()))
        # The first trades frame per coin on a new connection is the server's replay of recent trades.
        self._replay_coins = self._subs.trade_coins()
        for sub in self._subs.subscribe_all(now):
            self._send(ws, {"method": "subscribe", "subscription": sub})
        self._pump(ws, Liveness(now, *self._deadlines))

    def _pump(self, ws: BufferedWebSocket, liveness: Liveness) -> None:
        """Read frames until stopped or the connection is dead (raises `_Dead` or the socket's error)."""
        backlog, flush = self._emitter.backlog, self._emitter.flush
        last_rx = next_check = liveness.last_rx
        unpublished = 0  # messages not yet counted in the shared stats
        recovered = False
        while not self._stop.is_set():
            if backlog:
                flush()
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
                self._on_payload(opcode, payload)
                if now < next_check:
                    continue  # in a burst, stats and deadlines are looked at every _CHECK_EVERY_S
            next_check = now + _CHECK_EVERY_S
            if unpublished:
                self._counters.received(unpublished, last_rx)
                unpublished = 0
            failure = liveness.failure(now, last_rx)
            if failure:
                raise _Dead(failure)
            if liveness.ping_due(now):
                self._send(ws, {"method": "ping"})
                liveness.sent(now, ping=True)
            if self._subs.pending:
                self._check_subscriptions(ws, liveness, now)
            if not recovered and not self._subs.pending and self._counters.fallback:
                recovered = True
                down_for = self._counters.recover()
                self.backoff.reset()
                log.info("WebSocket stream healthy again after %.1fs down", down_for)
                self._emit(StreamRecovered(down_for))

    def _check_subscriptions(self, ws: BufferedWebSocket, liveness: Liveness, now: float) -> None:
        resend, failed = self._subs.overdue(now)
        for sub in resend:
            self._send(ws, {"method": "subscribe", "subscription": sub})
            liveness.sent(now)
        for sub in failed:
            self._emit(SubscriptionFailed(sub, "not confirmed"))
        unconfirmed = [describe(sub) for sub in failed if sub.get("type") == "trades"]
        if unconfirmed:
            # Pongs alone would keep this connection "alive" without the prices we came for:
            # start over on a fresh connection (with backoff), which resubscribes everything.
            # Other channels only get reported: the server may refuse them for good (user limits).
            raise _Dead(f"subscription not confirmed ({', '.join(unconfirmed)})")

    def _on_payload(self, opcode: int, payload: bytes) -> None:
        if opcode != websocket.ABNF.OPCODE_TEXT:
            self._counters.frame_error("binary_frame")
            return
        if len(payload) > self.max_frame_bytes:
            self._counters.frame_error("oversized_frame")
            return
        text = payload.decode("utf-8", "replace")
        if self._record is not None:  # record.dir: the frame goes to the recorder's queue (never blocks)
            self._record(time.time_ns(), text)
        result = parse_frame(text, time.monotonic_ns())
        for kind in result.errors:
            if kind != "greeting":
                self._counters.frame_error(kind, result.error_text)
        if result.ack is not None:
            key = self._subs.acknowledge(result.ack)
            if key is not None:
                self._counters.confirm(key)
        events = result.events
        if self._replay_coins and events and type(events[0]) is Trade and events[0].coin in self._replay_coins:
            # a first frame that was live (one trade, no replay sent) stays unmarked: the newest never is
            self._replay_coins.discard(events[0].coin)
            events = as_replay(events)
        emit = self._emit
        for event in events:
            emit(event)

    def _send(self, ws: websocket.WebSocket, message: Mapping[str, Any]) -> None:
        ws.send(json.dumps(message))

    def _mark_disconnected(self, reason: str) -> bool:
        was = self._counters.disconnected(forget_confirmed=True)
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
                _abort(ws)


__all__ = ["HyperliquidWebSocketClient"]
