"""Order records and their state machine (pure; no I/O).

Owns: the life of one order from "saved before sending" to a terminal status, checked against a
transition table, so a status never moves backwards (a late "open" after "filled" is refused), and
how long after its sending its signed expiry can be (`expires_within_ms`).
Must not: send anything or persist anything (state.py stores the records).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal

OrderStatus = Literal["reserved", "pending", "submitted", "resting", "filled", "canceled", "rejected", "unknown"]
Purpose = Literal["entry", "exit", "tp", "sl"]

TERMINAL: frozenset[str] = frozenset({"filled", "canceled", "rejected"})
TRANSITIONS: dict[str, frozenset[str]] = {
    # "reserved": an exit's cloid saved ahead of need, so the exit itself sends with no write first.
    # Once sent it moves on like "pending"; one never sent is canceled ("reserved, not used"), at
    # once or at the next start when the exchange does not know it.
    "reserved": frozenset({"pending", "submitted", "resting", "filled", "canceled", "rejected", "unknown"}),
    "pending": frozenset({"submitted", "resting", "filled", "canceled", "rejected", "unknown"}),
    "submitted": frozenset({"resting", "filled", "canceled", "rejected", "unknown"}),
    "unknown": frozenset({"resting", "filled", "canceled", "rejected"}),
    "resting": frozenset({"filled", "canceled"}),
    "filled": frozenset(),
    "canceled": frozenset(),
    "rejected": frozenset(),
}
# What the exchange's orderStatus words mean for us ("unknownOid": it never saw the order).
_EXCHANGE_STATUS = {
    "open": "resting", "filled": "filled", "triggered": "resting", "rejected": "rejected",
    "unknownOid": "rejected",
}


class InvalidTransition(ValueError):
    """A status change the table does not allow."""


@dataclass(frozen=True)
class OrderRecord:
    cloid: str
    coin: str
    side: Literal["buy", "sell"]
    size: Decimal
    limit_px: Decimal
    reduce_only: bool
    purpose: str
    status: str
    created_ms: int
    updated_ms: int
    oid: int | None = None
    filled_size: Decimal = Decimal(0)
    avg_px: Decimal | None = None
    reason: str | None = None
    # How long after its sending the order's signed expiresAfter can be, at most (the length of
    # the run that made the record): the order is sent with `expires_by_ms` as the latest
    # expiresAfter the client may sign. None: not known (a record saved before schema 4, or made
    # by a caller that signs no bound): a restart then assumes the longest the config allows.
    expires_within_ms: int | None = None

    @classmethod
    def new(cls, *, cloid: str, coin: str, side: Literal["buy", "sell"], size: Decimal,
            limit_px: Decimal, reduce_only: bool, purpose: str, created_ms: int,
            status: Literal["pending", "reserved"] = "pending",
            expires_within_ms: int | None = None) -> "OrderRecord":
        """A record saved before the order is sent (status `pending`), or its cloid saved ahead of
        need (`reserved`)."""
        return cls(cloid=cloid, coin=coin, side=side, size=size, limit_px=limit_px,
                   reduce_only=reduce_only, purpose=purpose, status=status,
                   created_ms=created_ms, updated_ms=created_ms, expires_within_ms=expires_within_ms)

    @property
    def expires_by_ms(self) -> int | None:
        """The latest expiresAfter (wall clock ms) the order sent with this record may be signed
        with (the client signs no later one). It bounds a record made just before its send; a
        reserved cloid's saved record was made ahead of need (its exit is sent with a new record,
        made at the send), so after a restart it bounds nothing (execution.py `resolve_at_start`)."""
        return None if self.expires_within_ms is None else self.created_ms + self.expires_within_ms

    def to(self, status: str, now_ms: int, **changes: object) -> "OrderRecord":
        """This record moved to `status`; raises InvalidTransition if the table forbids it."""
        if status != self.status and status not in TRANSITIONS[self.status]:
            raise InvalidTransition(f"order {self.cloid}: {self.status} -> {status} is not allowed")
        return replace(self, status=status, updated_ms=now_ms, **changes)  # type: ignore[arg-type]

    def filled_by_result(self, size: Decimal, avg_px: Decimal, now_ms: int) -> "OrderRecord":
        return self.to("filled", now_ms, filled_size=size, avg_px=avg_px)

    def rejected(self, message: str, now_ms: int) -> "OrderRecord":
        return self.to("rejected", now_ms, reason=message)

    def resolved_by_status(self, exchange_status: str, now_ms: int) -> "OrderRecord":
        """Map the exchange's orderStatus answer for our cloid onto this record."""
        if exchange_status.endswith("Canceled") or exchange_status == "canceled":
            return self.to("canceled", now_ms, reason=exchange_status)
        if exchange_status.endswith("Rejected"):
            return self.to("rejected", now_ms, reason=exchange_status)
        status = _EXCHANGE_STATUS.get(exchange_status, "unknown")
        reason = "never reached the exchange" if exchange_status == "unknownOid" else self.reason
        return self.to(status, now_ms, reason=reason)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL
