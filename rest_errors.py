"""The errors of the REST client: one small hierarchy, named by what the caller can do about them.

Owns: `HyperliquidError` and its subclasses, each with a class flag `retryable`, and the two
"result unknown" errors that carry what settles them (the signed expiry, a cloid to look up).
Must not: do I/O, log, or decide anything: the client raises these, the trading loop decides.
"""
from __future__ import annotations


class HyperliquidError(Exception):
    """Base of every error this client raises; `retryable` says whether trying again can help."""

    retryable = False


class NetworkError(HyperliquidError):
    """The request failed on the wire. `sent`: False only when no byte of it can have reached the
    server (connect refused or failed); otherwise the server may have seen it."""

    retryable = True

    def __init__(self, message: str, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class RateLimited(HyperliquidError):
    retryable = True

    def __init__(self, retry_after_s: float, message: str | None = None) -> None:
        super().__init__(message or f"rate limited (HTTP 429); retry after {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


class ServerError(HyperliquidError):
    retryable = True

    def __init__(self, status: int, body: str = "") -> None:
        super().__init__(f"server error HTTP {status}: {body[:200]}")
        self.status = status


class MalformedAnswer(HyperliquidError):
    """The answer arrived but is not what the endpoint returns (not JSON, missing keys, bad numbers)."""

    retryable = True


class RequestRejected(HyperliquidError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"request rejected (HTTP {status}): {body[:300]}")
        self.status = status
        self.body = body


class OrderRejected(HyperliquidError):
    def __init__(self, message: str, cloid: str | None) -> None:
        super().__init__(f"order {cloid} rejected: {message}")
        self.message = message
        self.cloid = cloid


class ResultUnknown(HyperliquidError):
    """A signed action may or may not have executed: it was sent and no answer we could parse came
    back (5xx, garbage, reset, timeout, a dribbled answer). Never a failure: it is settled by a
    lookup. `expires_after_ms`: the action's signed expiry (wall clock, ms); once it has passed
    the exchange can no longer execute it. `retry_after_s`: set when the answer was a 429."""

    def __init__(self, message: str, expires_after_ms: int | None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.expires_after_ms = expires_after_ms
        self.retry_after_s = retry_after_s


class OrderStatusUnknown(ResultUnknown):
    """An order's result is unknown; look it up by `cloid` (after `expires_after_ms` an
    `unknownOid` answer means it can never execute)."""

    def __init__(self, cloid: str, expires_after_ms: int | None = None, why: str = "no answer",
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"order {cloid}: result unknown ({why}); look it up by cloid", expires_after_ms,
                         retry_after_s)
        self.cloid = cloid
