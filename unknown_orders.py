"""Orders whose result is unknown, when to look each up, and what the answer means (pure; no I/O).

An order is "unknown" when it was sent and no answer we could parse came back (5xx after sending,
garbage, a reset, a timeout, a dribbled answer). It may have filled. Until a lookup by cloid
settles it, it counts as possibly filled: the trading loop blocks entries and checks the position.
Every order is signed with `expiresAfter`; once that has passed (plus a margin for the exchange's
clock and block time), `unknownOid` means the order can never execute, so sending again is safe.

Owns: the registry of unknown orders (main thread only), the bound on the signed expiry of one
saved by an earlier run (`saved_expiry_ms`), the lookup schedule (first after
`LOST_ORDER_GRACE_S`, when an order that arrived has been processed; again after its expiry while
the exchange has not seen it; backing off while lookups fail), and `settle()`: the verdict from
the exchange's `orderStatus` word and the order's fills. Fill sizes and prices come from fills,
never from the order's limit price or original size (an IOC that filled in part reads `canceled`).
Must not: send or persist anything, read a clock (times are arguments), or log.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable, Literal

from settings import ORDER_EXPIRES_AFTER_MAX_S

LOST_ORDER_GRACE_S = 2.0     # ask no sooner than this after sending
EXPIRY_MARGIN_MS = 1_000     # after expiresAfter: the exchange's clock and the block in flight
LOOKUP_BACKOFF_MAX_S = 5.0   # a failing lookup is tried again at most this far apart
FILLS_WAIT_MAX = 5           # lookups that say "filled" before the fills show; then settle by position
EXPIRES_WITHIN_MAX_MS = ORDER_EXPIRES_AFTER_MAX_S * 1000  # the longest expiry any config signs

# executed: filled (in part or whole), size and price from its fills; filled_unpriced: the exchange
# says filled but its fills never showed (the position check is then the only truth).
Verdict = Literal["wait", "never_executed", "executed", "filled_unpriced", "not_filled", "resting"]


@dataclass
class UnknownOrder:
    """One order in doubt. `expires_after_ms` is wall-clock ms (as signed); `*_s` are monotonic."""

    cloid: str
    purpose: str
    is_buy: bool
    size: Decimal
    notional_usd: Decimal
    created_ms: int
    expires_after_ms: int | None
    next_lookup_s: float
    lookups: int = 0
    failures: int = 0
    since_s: float = 0.0  # when it went into doubt (monotonic)
    coin: str = ""


@dataclass(frozen=True)
class Settlement:
    verdict: Verdict
    filled_size: Decimal = Decimal(0)
    avg_px: Decimal | None = None
    exchange_status: str = ""


def expired(order: UnknownOrder, now_ms: int) -> bool:
    """True once the exchange can no longer execute the order."""
    return order.expires_after_ms is not None and now_ms >= order.expires_after_ms + EXPIRY_MARGIN_MS


def saved_expiry_ms(reserved: bool, created_ms: int, expires_within_ms: int | None, now_ms: int) -> int:
    """The latest expiresAfter (wall clock ms) an order saved by an earlier run can carry.

    A record made just before its send (saved then, or after with its result) says it: the client
    signed no later than `created_ms + expires_within_ms`. A reserved cloid's record was saved ahead
    of need: its exit may have gone out any time up to the last stop (before `now_ms`), signed to
    expire within `expires_within_ms` (that run's length, whatever the config says now). A record
    from before schema 4 does not say: it was signed by a client that added its own length (at
    most the config's maximum) to the time of signing, anywhere between `created_ms` and the last
    stop, so only the maximum after now is sure."""
    if expires_within_ms is None:
        return max(now_ms, created_ms) + EXPIRES_WITHIN_MAX_MS
    if reserved:
        return max(now_ms, created_ms) + expires_within_ms
    return created_ms + expires_within_ms


def settle(order: UnknownOrder, exchange_status: str, fills: Iterable[tuple[Decimal, Decimal]],
           now_ms: int) -> Settlement:
    """The verdict on `order` from its `orderStatus` word and its fills ((size, price) pairs)."""
    if exchange_status == "unknownOid":
        return Settlement("never_executed" if expired(order, now_ms) else "wait", exchange_status=exchange_status)
    if exchange_status in ("open", "triggered"):
        return Settlement("resting", exchange_status=exchange_status)
    size = Decimal(0)
    notional = Decimal(0)
    for fill_size, px in fills:
        size += fill_size
        notional += fill_size * px
    if size > 0:
        return Settlement("executed", size, notional / size, exchange_status)
    if exchange_status == "filled":
        if order.lookups < FILLS_WAIT_MAX:
            return Settlement("wait", exchange_status=exchange_status)  # its fills are not visible yet
        return Settlement("filled_unpriced", exchange_status=exchange_status)
    return Settlement("not_filled", exchange_status=exchange_status)


@dataclass
class UnknownOrders:
    """The orders in doubt, by cloid."""

    orders: dict[str, UnknownOrder] = field(default_factory=dict)

    def add(self, order: UnknownOrder) -> None:
        self.orders[order.cloid] = order

    def remove(self, cloid: str) -> UnknownOrder | None:
        return self.orders.pop(cloid, None)

    def __contains__(self, cloid: object) -> bool:
        return cloid in self.orders

    def __len__(self) -> int:
        return len(self.orders)

    def due(self, now_s: float) -> list[UnknownOrder]:
        return [o for o in self.orders.values() if now_s >= o.next_lookup_s]

    def has(self, *purposes: str, coin: str | None = None) -> bool:
        """An order in doubt of one of `purposes` (of `coin`, when given)?"""
        orders = self.orders  # asked on every loop turn while flat: mostly empty
        return bool(orders) and any(o.purpose in purposes and (coin is None or o.coin == coin)
                                    for o in orders.values())

    def oldest_since_s(self) -> float | None:
        return min((o.since_s for o in self.orders.values()), default=None)

    def notional_usd(self, purpose: str) -> Decimal:
        return sum((o.notional_usd for o in self.orders.values() if o.purpose == purpose), Decimal(0))


def first_lookup_s(sent_at_s: float) -> float:
    return sent_at_s + LOST_ORDER_GRACE_S


def after_wait_s(order: UnknownOrder, now_s: float, now_ms: int) -> float:
    """When to ask again after a "wait" verdict: just past the expiry if it is still ahead."""
    if order.expires_after_ms is not None and not expired(order, now_ms):
        return now_s + (order.expires_after_ms + EXPIRY_MARGIN_MS - now_ms) / 1000
    return now_s + min(LOOKUP_BACKOFF_MAX_S, 0.5 * 2 ** order.lookups)


def after_failure_s(order: UnknownOrder, now_s: float) -> float:
    """When to ask again after the lookup itself failed."""
    return now_s + min(LOOKUP_BACKOFF_MAX_S, 0.5 * 2 ** order.failures)
