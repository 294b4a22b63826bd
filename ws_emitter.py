"""The WebSocket thread's way onto the bot's queue: never blocks, never sheds what the bot must see.

Owns: `EventEmitter`, which puts events on the bounded queue with `put_nowait`. Market data
(`Trade`, `L2Book`, `Bbo`, `Mids`) is shed when the queue is full (counted, a warning at most every
10 s); every other event (fills, order updates, connection events) waits in a backlog that is
flushed, in order, before anything newer goes on the queue.
Must not: block (a stuck consumer never stops reads or pings), drop a non-market event, or look
inside an event.
"""
from __future__ import annotations

import collections
import logging
import queue
from typing import Any, Callable

from stream_events import Bbo, L2Book, Mids, Trade
from ws_counters import StreamCounters

log = logging.getLogger("websocket")

_MARKET = (Trade, L2Book, Bbo, Mids)  # what a full queue may shed; never fills, orders or connection events
_DROP_LOG_EVERY_S = 10.0


class EventEmitter:
    """The socket thread's only writer to the queue; `backlog` is what waits for room."""

    def __init__(self, out: "queue.Queue[Any]", counters: StreamCounters, clock: Callable[[], float]) -> None:
        self.out = out
        self.backlog: collections.deque[Any] = collections.deque()  # priority events the full queue refused
        self._put = out.put_nowait
        self._counters = counters
        self._clock = clock
        self._last_drop_log = -1e9  # the first drop is always logged, whatever the clock

    def emit(self, event: Any) -> None:
        """Queue an event without ever blocking; only market data may be dropped."""
        if type(event) in _MARKET:
            if self.backlog:
                self.flush()
            try:
                self._put(event)
            except queue.Full:
                dropped = self._counters.dropped_one()
                now = self._clock()
                if now - self._last_drop_log >= _DROP_LOG_EVERY_S:
                    self._last_drop_log = now
                    log.warning("consumer lagging: queue full, %d market data event(s) dropped so far", dropped)
            return
        self.backlog.append(event)
        self.flush()

    def flush(self) -> None:
        """Move what the backlog holds onto the queue, oldest first, as far as there is room."""
        backlog = self.backlog
        while backlog:
            try:
                self._put(backlog[0])
            except queue.Full:
                return
            backlog.popleft()
