"""The WebSocket thread's shared record: what `stats()` reports, and the warnings about what it counts.

Owns: `StreamCounters`, the one place the socket thread writes and other threads read (under its
lock): connection and subscription state, the failure streak and REST-fallback state, counters
(messages, reconnects, dropped market data, ignored frames by kind, internal errors), the
immutable `WsStats` snapshot, and the rate-limited log lines for ignored frames (one a kind per
10 s) and internal errors (one traceback a site, then a count at most once a minute).
Must not: touch the socket or the event queue, or decide what happens to the connection: the
client in hyperliquid_websocket.py says what happened, this records and reports it.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from ws_parts import WsStats

log = logging.getLogger("websocket")

_FRAME_ERROR_LOG_EVERY_S = 10.0  # an ignored frame kind: one warning this often at the most
_INTERNAL_LOG_EVERY_S = 60.0  # a repeating internal error: one traceback, then a count this often


def describe_error(exc: BaseException) -> str:
    """`Type: message`, or the type alone when the message is empty."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _error_site(exc: BaseException) -> str:
    """Where an exception was raised (innermost frame): the same bug repeating has the same site."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
    return f"{type(exc).__name__}{where}"


class StreamCounters:
    """Written by the socket thread only; each change and `snapshot()` hold `lock`, so a reader
    never sees half a change (a new connection with the last one's confirmations)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.connected = False
        self.confirmed: set[str] = set()
        self.last_message: float | None = None
        self.reconnects = 0
        self.failures = 0  # the streak of failed sessions; a healthy session or a recovery resets it
        self.fallback = False  # StreamDown sent, StreamRecovered not yet
        self.down_since: float | None = None
        self.dropped = 0
        self.errors: dict[str, int] = {}
        self.messages = 0
        self.internal_errors = 0
        self._last_error_log: dict[str, float] = {}
        self._internal_log: dict[str, tuple[float, int]] = {}  # site -> (last logged at, count since)

    def carry_over(self, old: "StreamCounters") -> None:
        """Take over an ended client's counters and fallback state (not its connection state)."""
        with old.lock:
            self.reconnects, self.failures, self.dropped = old.reconnects, old.failures, old.dropped
            self.fallback, self.down_since = old.fallback, old.down_since
            self.errors, self.messages = dict(old.errors), old.messages
            self.internal_errors = old.internal_errors

    def snapshot(self, subscriptions_total: int, pending_priority: int) -> WsStats:
        now = self.clock()
        with self.lock:
            return WsStats(
                connected=self.connected, subscriptions_confirmed=len(self.confirmed),
                subscriptions_total=subscriptions_total,
                last_message_age_s=None if self.last_message is None else now - self.last_message,
                reconnects=self.reconnects, consecutive_failures=self.failures, fallback=self.fallback,
                dropped_market_data=self.dropped, parse_errors_total=sum(self.errors.values()),
                parse_errors=dict(self.errors), messages_received=self.messages,
                pending_priority=pending_priority, internal_errors=self.internal_errors)

    # ---- connection and subscriptions ----

    def connected_now(self, now: float) -> None:
        with self.lock:
            self.connected = True
            self.confirmed = set()
            self.last_message = now

    def disconnected(self, forget_confirmed: bool = False) -> bool:
        """Mark the connection gone (a lost one also forgets its confirmations); True if it was up."""
        with self.lock:
            was = self.connected
            self.connected = False
            if forget_confirmed:
                self.confirmed = set()
        return was

    def confirm(self, key: str) -> None:
        with self.lock:
            self.confirmed.add(key)

    def received(self, count: int, last_at: float) -> None:
        with self.lock:
            self.messages += count
            self.last_message = last_at

    # ---- the failure streak and the REST fallback ----

    def session_failed(self, healthy: bool) -> int:
        """Count a failed session (after a healthy one, the first of a new streak); the streak."""
        with self.lock:
            self.failures = 1 if healthy else self.failures + 1
            return self.failures

    def fall_back(self) -> None:
        with self.lock:
            self.fallback = True
            self.down_since = self.clock()

    def recover(self) -> float:
        """Leave the fallback state; how long the stream was down, in seconds."""
        with self.lock:
            down_for = self.clock() - (self.down_since or self.clock())
            self.fallback = False
            self.failures = 0
        return down_for

    def reconnected(self) -> None:
        with self.lock:
            self.reconnects += 1

    # ---- what went wrong ----

    def dropped_one(self) -> int:
        """Count one shed market data event; the total so far."""
        with self.lock:
            self.dropped += 1
            return self.dropped

    def frame_error(self, kind: str, detail: str | None = None) -> None:
        """Count an ignored frame; warn about its kind at most every 10 s."""
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            total = self.errors[kind]
        now = self.clock()
        if now - self._last_error_log.get(kind, -1e9) >= _FRAME_ERROR_LOG_EVERY_S:
            self._last_error_log[kind] = now
            log.warning("ignored frame (%s)%s; %d so far", kind, f": {detail}" if detail else "", total)

    def internal_error(self, exc: Exception) -> None:
        """Count a bug; log its traceback the first time, then a count at most once a minute."""
        with self.lock:
            self.internal_errors += 1
            total = self.internal_errors
        site = _error_site(exc)
        now = self.clock()
        logged_at, since = self._internal_log.get(site, (None, 0))
        if logged_at is None:
            self._internal_log[site] = (now, 0)
            log.error("internal error in the WebSocket thread (%d so far): %s", total, describe_error(exc),
                      exc_info=exc)
        elif now - logged_at >= _INTERNAL_LOG_EVERY_S:
            self._internal_log[site] = (now, 0)
            log.error("internal error %s repeated %d more time(s) (%d so far): %s", site, since + 1, total,
                      describe_error(exc))
        else:
            self._internal_log[site] = (logged_at, since + 1)
