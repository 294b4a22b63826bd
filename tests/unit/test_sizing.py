"""Order sizing, IOC slippage prices (checked against the official SDK) and the risk guard."""
from __future__ import annotations

import random
from decimal import ROUND_HALF_EVEN, Decimal
from types import SimpleNamespace

import pytest

from signing import is_valid_price, is_valid_size
from sizing import RiskGuard, order_size, slippage_price

D = Decimal


# ---- order_size --------------------------------------------------------------------------------

@pytest.mark.parametrize("usd,price,sz_decimals,size", [
    ("100", "50000", 5, "0.002"),
    ("100", "30000", 5, "0.00333"),       # 0.003333.. rounded DOWN to the lot
    ("100", "3012.35", 4, "0.0331"),
    ("100", "3", 0, "33"),                 # never 34: that would spend $102
    ("100", "0.001604", 0, "62344"),
    ("10", "50000", 5, "0.0002"),          # exactly the $10 minimum
    ("15", "7", 0, "2"),                   # $14 >= $10
    ("1000000", "0.5", 1, "2000000"),
])
def test_order_size_rounds_down_to_the_lot(usd, price, sz_decimals, size):
    got = order_size(D(usd), D(price), sz_decimals)
    assert got == D(size)
    assert is_valid_size(got, sz_decimals)
    assert got * D(price) <= D(usd)


@pytest.mark.parametrize("usd,price,sz_decimals,words", [
    ("100", "50000", 0, "rounds to 0"),       # 0.002 BTC in whole coins
    ("10", "50001", 5, "minimum of $10"),     # 0.00019 * 50001 = $9.50
    ("10", "3", 0, "minimum of $10"),         # 3 coins = $9
    ("9", "1", 0, "minimum of $10"),
])
def test_order_size_refuses_what_the_exchange_would_reject(usd, price, sz_decimals, words):
    with pytest.raises(ValueError) as info:
        order_size(D(usd), D(price), sz_decimals)
    assert words in str(info.value)
    assert "order_size_usd" in str(info.value)


@pytest.mark.parametrize("args", [
    (D(0), D(100), 2), (D(100), D(0), 2), (D(100), D(-5), 2), (D(100), D(100), -1),
])
def test_order_size_bad_inputs(args):
    with pytest.raises(ValueError):
        order_size(*args)


def test_order_size_refuses_float():
    with pytest.raises(TypeError):
        order_size(100.0, D(50000), 5)  # type: ignore[arg-type]


# ---- slippage_price ----------------------------------------------------------------------------

@pytest.mark.parametrize("price,is_buy,slippage_pct,sz_decimals,expected", [
    ("50000", True, "0.5", 5, "50250"),
    ("50000", False, "0.5", 5, "49750"),
    ("50123.7", True, "5", 5, "52630"),        # 52629.885 -> 5 significant figures
    ("3012.35", False, "1", 4, "2982.2"),      # 2982.2265 -> 5 sig figs
    ("142.567", True, "0.5", 2, "143.28"),     # 143.279835 -> 5 sig figs, 4 decimals allowed
    ("0.001604", True, "1", 0, "0.00162"),     # 0.00162004 -> 6 - 0 decimals
    ("0.001604", False, "0", 0, "0.001604"),
    ("123456", True, "0", 3, "123460"),        # 5 significant figures even on integers
])
def test_slippage_price_table(price, is_buy, slippage_pct, sz_decimals, expected):
    got = slippage_price(D(price), is_buy, D(slippage_pct), sz_decimals)
    assert got == D(expected)
    assert is_valid_price(got, sz_decimals)


def _sdk_slippage_price(price: float, is_buy: bool, slippage: float, sz_decimals: int) -> float:
    """The official SDK's own `Exchange._slippage_price`, on a stub `Info` (no network)."""
    from hyperliquid.exchange import Exchange
    exchange = object.__new__(Exchange)
    exchange.info = SimpleNamespace(name_to_coin={"X": "X"}, coin_to_asset={"X": 0},
                                    asset_to_sz_decimals={0: sz_decimals})
    return exchange._slippage_price("X", is_buy, slippage, px=price)


def _is_decimal_tie(x: Decimal, sz_decimals: int) -> bool:
    """True when x sits exactly half-way at the 5-significant-figure or the decimals rounding."""
    sig = D(1).scaleb(x.adjusted() - 4)
    five = x.quantize(sig, rounding=ROUND_HALF_EVEN)
    tick = D(1).scaleb(-(6 - sz_decimals))
    return (x / sig) % 1 == D("0.5") or (five / tick) % 1 == D("0.5")


def test_slippage_price_matches_the_sdk():
    """Same price as the SDK, except on exact decimal ties, where the SDK's float arithmetic goes
    either way by binary representation; there we round half-even and both are valid ticks."""
    rng = random.Random(7)
    ties = 0
    for _ in range(3000):
        sz_decimals = rng.randint(0, 5)
        price = D(rng.randint(10, 10**7)).scaleb(-rng.randint(0, 6 - sz_decimals))
        slip_pct = D(rng.choice([0, 1, 5, 10, 50, 100, 500])) / 100
        is_buy = rng.random() < 0.5
        ours = slippage_price(price, is_buy, slip_pct, sz_decimals)
        theirs = D(repr(_sdk_slippage_price(float(price), is_buy, float(slip_pct / 100), sz_decimals)))
        if ours != theirs:
            exact = price * (1 + slip_pct / 100 if is_buy else 1 - slip_pct / 100)
            assert _is_decimal_tie(exact, sz_decimals), (price, is_buy, slip_pct, sz_decimals, ours, theirs)
            assert abs(ours - theirs) <= D(1).scaleb(exact.adjusted() - 4)
            ties += 1
        assert is_valid_price(ours, sz_decimals)
    assert ties < 60   # ties are rare; anything else is a real difference


def test_slippage_price_bad_inputs():
    with pytest.raises(ValueError):
        slippage_price(D(100), True, D(-1), 2)
    with pytest.raises(ValueError):
        slippage_price(D(100), False, D(100), 2)
    with pytest.raises(TypeError):
        slippage_price(D(100), True, 0.5, 2)  # type: ignore[arg-type]


# ---- RiskGuard ---------------------------------------------------------------------------------

def test_guard_position_cap():
    guard = RiskGuard(D(1000), 100)
    assert guard.check_entry(D(900), D(100), 0) is None                # exactly at the cap
    reason = guard.check_entry(D(900), D("100.01"), 0)
    assert reason is not None and "max_position_usd" in reason
    assert guard.check_entry(D(-900), D(101), 0) is not None          # a short's notional counts too


# (max per minute, order times recorded, time of the check, allowed?)
WINDOWS = [
    (3, [0, 1_000, 2_000], 2_500, False),
    (3, [0, 1_000, 2_000], 59_999, False),        # the first order is still inside the 60 s
    (3, [0, 1_000, 2_000], 60_000, True),         # ... and leaves it at exactly 60 s
    (3, [30_000, 50_000, 70_000], 85_000, False),  # sliding, not per calendar minute
    (3, [30_000, 50_000, 70_000], 90_000, True),
    (1, [], 0, True),
    (1, [5_000], 64_999, False),
    (1, [5_000], 65_000, True),
    (2, [0, 0], 1, False),                        # two orders in the same millisecond both count
]


@pytest.mark.parametrize("limit,times,now,allowed", WINDOWS)
def test_guard_orders_per_minute_window(limit, times, now, allowed):
    guard = RiskGuard(D(1000), limit)
    for t in times:
        guard.record_order(t)
    reason = guard.check_entry(D(0), D(100), now)
    assert (reason is None) is allowed
    if not allowed:
        assert "max_orders_per_minute" in reason


def test_checking_an_entry_does_not_spend_budget():
    guard = RiskGuard(D(1000), 1)
    for t in range(100):
        assert guard.check_entry(D(0), D(100), t) is None
    assert guard.orders_in_window(100) == 0


def test_exits_are_never_refused_but_are_counted():
    guard = RiskGuard(D(1000), 2)
    for t in (0, 1, 2, 3):                # more exits than the budget: all allowed
        assert guard.check_exit(t) is None
    assert guard.orders_in_window(3) == 4
    assert guard.check_entry(D(0), D(100), 10) is not None   # they held back a new entry
    assert guard.check_entry(D(0), D(100), 60_003) is None   # until they left the window


def test_guard_forgets_old_orders():
    guard = RiskGuard(D(1000), 5)
    for t in range(0, 10_000_000, 1_000):
        guard.record_order(t)
    assert guard.orders_in_window(10_000_000) == 59   # only the last minute is kept


@pytest.mark.parametrize("args", [(D(0), 1), (D(1000), 0), (D(1000), True), (D(-1), 5)])
def test_guard_bad_settings(args):
    with pytest.raises(ValueError):
        RiskGuard(*args)
