"""Exit invariants over arbitrary price paths (hypothesis)."""
from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exits import ExitRules, PositionView, TrailingStop

prices = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("1000000"), places=4,
                     allow_nan=False, allow_infinity=False)
paths = st.lists(prices, min_size=1, max_size=40)
sides = st.sampled_from(["long", "short"])
distances = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("50"), places=2)
offsets = st.one_of(st.just(Decimal(0)), st.decimals(min_value=Decimal(0), max_value=Decimal("20"), places=2))
maybe_pct = st.one_of(st.none(), st.decimals(min_value=Decimal("0.01"), max_value=Decimal("50"), places=2))

# No deadline and no "too slow" check: on a loaded 2-core CI machine generation speed is not the property.
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(side=sides, distance=distances, offset=offsets, entry=prices, path=paths)
def test_trailing_trigger_only_tightens(side, distance, offset, entry, path):
    stop = TrailingStop(side, distance, entry, activation_offset_pct=offset)
    previous = None
    for price in path:
        trigger = stop.update(price)
        if previous is not None:
            assert trigger is not None, "an active trailing stop never deactivates"
            assert trigger >= previous if side == "long" else trigger <= previous
        previous = trigger if trigger is not None else previous


@FAST
@given(side=sides, distance=distances, offset=offsets, entry=prices, path=paths, cut=st.integers(0, 40))
def test_restart_from_saved_mark_is_seamless(side, distance, offset, entry, path, cut):
    continuous = TrailingStop(side, distance, entry, activation_offset_pct=offset)
    expected = [continuous.update(p) for p in path]
    first = TrailingStop(side, distance, entry, activation_offset_pct=offset)
    got = [first.update(p) for p in path[:cut]]
    resumed = TrailingStop(side, distance, entry, activation_offset_pct=offset, high_water=first.high_water)
    got += [resumed.update(p) for p in path[cut:]]
    assert got == expected


@FAST
@given(side=sides, entry=prices, path=paths, sl=maybe_pct, tp=maybe_pct, trail=maybe_pct, offset=offsets)
def test_exit_fires_exactly_when_a_level_is_reached(side, entry, path, sl, tp, trail, offset):
    """No exit while the price is strictly inside every level; an exit as soon as it is not."""
    rules = ExitRules(sl, tp, trail, offset)
    stop = rules.trailing_stop(side, entry)
    levels = rules.levels(side, entry)
    long = side == "long"
    for price in path:
        trigger = stop.update(price) if stop is not None else None
        view = PositionView(side, entry, Decimal(1), stop.high_water if stop is not None else None)
        decision = rules.check(view, price, now_ms=0)
        loss_level, gain_level = levels["stop_loss"], levels["take_profit"]
        fired = []
        if loss_level is not None and (price <= loss_level if long else price >= loss_level):
            fired.append("stop_loss")
        if trigger is not None and (price <= trigger if long else price >= trigger):
            fired.append("trailing_stop")
        if gain_level is not None and (price >= gain_level if long else price <= gain_level):
            fired.append("take_profit")
        if not fired:
            assert decision is None
        else:
            assert decision is not None
            assert decision.reason == fired[0]        # precedence: SL, trailing, TP
            assert decision.price == price
            if decision.reason == "stop_loss":
                assert decision.trigger_price == loss_level
            elif decision.reason == "trailing_stop":
                assert decision.trigger_price == trigger
            else:
                assert decision.trigger_price == gain_level
