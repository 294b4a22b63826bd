"""Order sizing and pre-trade risk limits (pure; no I/O, no clock, no logging).

Owns: turning a USD order size into an exchange-valid lot size, the limit price of an IOC
"market" order (price moved by the slippage, rounded to the exchange's tick rule), and the risk
guard that may refuse an entry (position notional cap, orders per sliding minute).
Must not: send orders, read a clock (time is an argument), or re-implement the exchange's
rounding: `signing.round_size` / `signing.round_price` are the single source of those rules.

Percentages are percent (0.5 means 0.5 %).
"""
from __future__ import annotations

from bisect import insort
from decimal import Decimal

from signing import round_price, round_size

MIN_NOTIONAL_USD = Decimal(10)  # the exchange rejects orders below $10 notional
WINDOW_MS = 60_000              # the orders-per-minute window (sliding)
_HUNDRED = Decimal(100)


def _positive(name: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise TypeError(f"{name} must be a Decimal (not {type(value).__name__}), got {value!r}")
    value = Decimal(value)
    if not value.is_finite() or value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def order_size(order_size_usd: Decimal, price: Decimal, sz_decimals: int) -> Decimal:
    """Size in coins for `order_size_usd` at `price`, rounded DOWN to the lot (never more than asked).

    Raises ValueError when the size rounds to 0 or its notional falls below the exchange's $10
    minimum (the exchange would reject the order), naming the figures and the remedy.
    """
    usd = _positive("order_size_usd", order_size_usd)
    px = _positive("price", price)
    if isinstance(sz_decimals, bool) or not isinstance(sz_decimals, int) or sz_decimals < 0:
        raise ValueError(f"sz_decimals must be an integer >= 0, got {sz_decimals!r}")
    size = round_size(usd / px, sz_decimals)
    if size <= 0:
        raise ValueError(f"order size ${usd} at price {px} rounds to 0 coins with {sz_decimals} size "
                         f"decimals; raise trading.order_size_usd")
    notional = size * px
    if notional < MIN_NOTIONAL_USD:
        raise ValueError(f"order notional ${notional} ({size} at {px}) is below the exchange minimum of "
                         f"${MIN_NOTIONAL_USD} after rounding down to the lot; raise trading.order_size_usd")
    return size


def slippage_price(price: Decimal, is_buy: bool, slippage_pct: Decimal, sz_decimals: int) -> Decimal:
    """The limit price of an IOC "market" order: the worst price it may fill at.

    price * (1 + slippage) for a buy, * (1 - slippage) for a sell, then rounded as the official SDK
    does (5 significant figures, then 6 - szDecimals decimals: `signing.round_price`).
    """
    px = _positive("price", price)
    if isinstance(slippage_pct, bool) or not isinstance(slippage_pct, (Decimal, int)):
        raise TypeError(f"slippage_pct must be a Decimal, got {slippage_pct!r}")
    slip = Decimal(slippage_pct)
    if not slip.is_finite() or not 0 <= slip < _HUNDRED:
        raise ValueError(f"slippage_pct must be >= 0 and < 100, got {slip}")
    step = slip / _HUNDRED
    return round_price(px * (1 + step if is_buy else 1 - step), sz_decimals)


class RiskGuard:
    """Refuses entries that would break the position cap or the orders-per-minute budget.

    Mutable (it remembers recent order times). The window is sliding: an order at time t counts
    while now_ms - t < 60 000. Exits are never refused (they reduce risk) but are counted, so a
    burst of exits still holds back new entries.
    """

    def __init__(self, max_position_usd: Decimal, max_orders_per_minute: int) -> None:
        self.max_position_usd = _positive("max_position_usd", max_position_usd)
        if isinstance(max_orders_per_minute, bool) or not isinstance(max_orders_per_minute, int) \
                or max_orders_per_minute < 1:
            raise ValueError(f"max_orders_per_minute must be an integer >= 1, got {max_orders_per_minute!r}")
        self.max_orders_per_minute = max_orders_per_minute
        self._times_ms: list[int] = []  # sorted; only times inside the window are kept

    def _prune(self, now_ms: int) -> None:
        cutoff = now_ms - WINDOW_MS
        times = self._times_ms
        drop = 0
        while drop < len(times) and times[drop] <= cutoff:
            drop += 1
        if drop:
            del times[:drop]

    def orders_in_window(self, now_ms: int) -> int:
        """Orders (entries and exits) counted in the 60 s ending at now_ms."""
        self._prune(now_ms)
        return len(self._times_ms)

    def check_entry(self, current_notional: Decimal, order_notional: Decimal, now_ms: int) -> str | None:
        """None when the entry may go; otherwise the reason it may not (for the log)."""
        total = abs(Decimal(current_notional)) + abs(Decimal(order_notional))
        if total > self.max_position_usd:
            return (f"position notional ${abs(Decimal(current_notional))} + order ${abs(Decimal(order_notional))} "
                    f"would exceed max_position_usd ${self.max_position_usd}")
        count = self.orders_in_window(now_ms)
        if count >= self.max_orders_per_minute:
            return (f"{count} orders in the last 60 s reached max_orders_per_minute "
                    f"{self.max_orders_per_minute}")
        return None

    def record_order(self, now_ms: int) -> None:
        """Count an order sent at now_ms (call after sending an entry)."""
        self._prune(now_ms)
        insort(self._times_ms, now_ms)

    def check_exit(self, now_ms: int) -> None:
        """Exits are always allowed (they reduce risk); the exit is counted in the window."""
        self.record_order(now_ms)
