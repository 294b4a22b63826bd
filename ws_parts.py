"""The WebSocket thread's self-contained parts: a reconnect schedule, liveness deadlines, a stats
record, a frame reader.

Owns: `Backoff` (capped, jittered exponential delays; pure), `Liveness` (one connection's ping,
pong and no-data deadlines; pure: times are arguments), `WsStats` (the immutable snapshot
`HyperliquidWebSocketClient.stats()` returns) and `BufferedWebSocket` (websocket-client's
socket reads served from 64 KB chunks).
Must not: open a connection, send, touch the event queue, or log: the client in
hyperliquid_websocket.py does all of that.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import websocket


# ---- backoff (pure) ---------------------------------------------------------------------------

class Backoff:
    """Exponential delay from `base_s`, doubled per failure, capped at `cap_s`, with proportional
    jitter: each delay is drawn in [d * (1 - jitter), d] so a crowd of clients spreads out and the
    cap is never exceeded."""

    def __init__(self, base_s: float, cap_s: float, jitter: float = 0.2,
                 rng: Callable[[], float] = random.random) -> None:
        if base_s <= 0 or cap_s < base_s or not 0 <= jitter < 1:
            raise ValueError("Backoff needs 0 < base_s <= cap_s and 0 <= jitter < 1")
        self.base_s, self.cap_s, self.jitter, self._rng = base_s, cap_s, jitter, rng
        self.failures = 0

    def next_delay(self) -> float:
        nominal = min(self.cap_s, self.base_s * 2 ** min(self.failures, 60))
        self.failures += 1
        return nominal * (1 - self.jitter * self._rng())

    def reset(self) -> None:
        self.failures = 0


# ---- liveness (pure) -------------------------------------------------------------------------

class Liveness:
    """One connection's deadlines, on data and pongs rather than on connection state: no message
    for `data_timeout_s` is a dead connection, and so is a ping unanswered (nothing received since)
    for `pong_timeout_s`. A ping is due when nothing was sent for `ping_interval_s` (the server's
    60 s idle rule) and when nothing came in for half the data deadline: the pong proves a quiet
    market is not a dead socket, so a symbol without trades does not reconnect every data_timeout."""

    def __init__(self, now: float, ping_interval_s: float, pong_timeout_s: float, data_timeout_s: float) -> None:
        self.ping_interval_s, self.pong_timeout_s, self.data_timeout_s = ping_interval_s, pong_timeout_s, data_timeout_s
        self.quiet_ping_s = min(ping_interval_s, data_timeout_s / 2)
        self.last_sent = self.last_rx = now
        self.ping_sent_at: float | None = None  # the oldest ping not answered yet

    def failure(self, now: float, last_rx: float) -> str | None:
        """Why the connection counts as dead at `now`, having last received at `last_rx`; else None."""
        self.last_rx = last_rx
        if now - last_rx > self.data_timeout_s:
            return f"no message for {self.data_timeout_s:.1f}s"
        if self.ping_sent_at is not None and last_rx >= self.ping_sent_at:
            self.ping_sent_at = None
        if self.ping_sent_at is not None and now - self.ping_sent_at > self.pong_timeout_s:
            return f"no pong within {self.pong_timeout_s:.1f}s"
        return None

    def ping_due(self, now: float) -> bool:
        """Whether to ping at `now` (asked after `failure()`, which records the last receipt)."""
        return now - self.last_sent >= self.ping_interval_s or (
            self.ping_sent_at is None and now - self.last_rx >= self.quiet_ping_s)

    def sent(self, now: float, ping: bool = False) -> None:
        self.last_sent = now
        if ping and self.ping_sent_at is None:
            self.ping_sent_at = now


# ---- stats --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WsStats:
    connected: bool
    subscriptions_confirmed: int
    subscriptions_total: int
    last_message_age_s: float | None
    reconnects: int
    consecutive_failures: int
    fallback: bool
    dropped_market_data: int
    parse_errors_total: int
    parse_errors: Mapping[str, int]
    messages_received: int
    pending_priority: int
    internal_errors: int  # exceptions from the client's own code (bugs), each handled as a lost connection


# ---- the frame reader ---------------------------------------------------------------------------

class BufferedWebSocket(websocket.WebSocket):
    """websocket-client reads every frame with two or three small socket reads (header, length,
    payload), each a system call that gives up and takes back the GIL; in a burst those hand-overs
    cost more than parsing. Here frames are served from 64 KB reads: one call per chunk of frames,
    and one (not three) for a lone frame. Timeouts and a closed connection surface unchanged, from
    the underlying read when the buffer is empty. (Hooks `WebSocket._recv`, which the frame reader
    calls for every read; websocket-client is pinned.)"""

    _CHUNK = 65536

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._rx = b""
        self._rx_pos = 0

    def _recv(self, bufsize: int) -> bytes:
        if self._rx_pos >= len(self._rx):
            self._rx = super()._recv(self._CHUNK)  # blocks (with the socket timeout) or raises
            self._rx_pos = 0
        start = self._rx_pos
        self._rx_pos = start + bufsize
        return self._rx[start:start + bufsize]
