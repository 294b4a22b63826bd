"""The WebSocket thread's self-contained parts: a reconnect schedule, a stats record, a frame reader.

Owns: `Backoff` (capped, jittered exponential delays; pure), `WsStats` (the immutable snapshot
`HyperliquidWebSocketClient.stats()` returns) and `BufferedWebSocket` (websocket-client's
socket reads served from 64 KB chunks).
Must not: hold connection state, open a connection, touch the event queue, or log: the client
in hyperliquid_websocket.py does all of that.
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
