"""When the trading loop may call `/info` again after a failure (timing only; no I/O).

Owns: the pause of `/info` calls after a failure, as a timer of the loop: a 429's Retry-After
(capped), else a backoff from 0.5 s to 5 s while calls keep failing, so that a hung exchange costs
the loop one deadline per pause, not one per timer; the log of it: an exchange that cannot be
reached (connection failed, timeout, 5xx) is one outage, told in one line when it starts, one line
with its length and failure count at most every 30 s, and one when it ends, whatever kinds of call
failed; other failures (429, a refused or malformed query) one warning a minute per kind of call.
Must not: sleep, call the exchange, or hold `/exchange` actions (exits never wait for `/info`).
"""
from __future__ import annotations

import logging
from typing import Callable

from logsetup import RateLimitedLog
from rest_errors import HyperliquidError, NetworkError, RateLimited, ServerError

log = logging.getLogger("bot")

HOLD_429_MAX_S = 30.0       # a 429's Retry-After pauses /info calls up to this long
HOLD_FAIL_BASE_S = 0.5      # other failures pause /info calls from this...
HOLD_FAIL_MAX_S = 5.0       # ...doubling up to this while they keep failing
OUTAGE_LOG_EVERY_S = 30.0   # an unreachable exchange: one line at most this often


class InfoGate:
    """Shared by everything on the trading thread that asks `/info`."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.hold_until = 0.0
        self.failures = 0  # in a row
        self._quiet = RateLimitedLog(every_s=60.0, clock=clock)
        self.outage_since: float | None = None  # when the exchange stopped answering (None: it answers)
        self.outage_failures = 0
        self._next_outage_log = 0.0

    def held(self, now: float) -> bool:
        return now < self.hold_until

    def ok(self) -> None:
        self.failures = 0
        if self.outage_since is not None:
            log.info("exchange reachable again after %.0f s (%d failures)", self.clock() - self.outage_since,
                     self.outage_failures)
            self.outage_since, self.outage_failures = None, 0

    def failed(self, what: str, exc: HyperliquidError) -> None:
        """Log the failure (as part of an outage, or once a minute per kind) and pause `/info` calls."""
        if isinstance(exc, RateLimited):
            hold_s = min(exc.retry_after_s, HOLD_429_MAX_S)
        elif exc.retryable:
            self.failures += 1
            hold_s = min(HOLD_FAIL_BASE_S * 2 ** (self.failures - 1), HOLD_FAIL_MAX_S)
        else:  # the exchange refused this query (4xx): other queries are not the worse for it
            hold_s = 0.0
        self.hold_until = max(self.hold_until, self.clock() + hold_s)
        if isinstance(exc, (NetworkError, ServerError)):
            self._unreachable(what, exc)
            return
        suppressed = self._quiet.allow(f"rest:{what}")
        if suppressed is not None:
            log.warning("%s failed: %s; /info paused %.1fs (exits are not)%s", what, exc, hold_s,
                        f" ({suppressed} more failures)" if suppressed else "")

    def _unreachable(self, what: str, exc: HyperliquidError) -> None:
        now = self.clock()
        self.outage_failures += 1
        if self.outage_since is None:
            self.outage_since, self._next_outage_log = now, now + OUTAGE_LOG_EVERY_S
            log.warning("exchange unreachable: %s failed: %s; /info calls back off up to %.0fs (exits are not held); "
                        "one line every %.0fs while it lasts", what, exc, HOLD_FAIL_MAX_S, OUTAGE_LOG_EVERY_S)
        elif now >= self._next_outage_log:
            self._next_outage_log = now + OUTAGE_LOG_EVERY_S
            log.warning("exchange unreachable for %.0f s (%d failures; last: %s: %s)", now - self.outage_since,
                        self.outage_failures, what, exc)
