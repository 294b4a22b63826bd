"""Exit rules and the trailing stop: tables of cases, long and short, exact boundaries and gaps."""
from __future__ import annotations

from decimal import Decimal, localcontext

import pytest

from exits import ExitDecision, ExitRules, PositionView, TrailingStop, validate_against_liquidation

D = Decimal
SL = ExitRules(D(2), None, None)          # long stop 98, short stop 102 (entry 100)
TP = ExitRules(None, D(4), None)          # long target 104, short target 96
TR = ExitRules(None, None, D(1))          # 1 % behind the high-water mark
ALL = ExitRules(D(2), D(4), D(1))
TR_OFF = ExitRules(None, None, D(1), trailing_offset_pct=D(2))  # active once 2 % in favour
NONE = ExitRules(None, None, None)

# (case, rules, side, high_water, price, expected (reason, trigger) or None); entry is always 100
CASES = [
    # stop-loss alone
    ("long SL exact boundary", SL, "long", None, "98", ("stop_loss", "98")),
    ("long SL one tick inside", SL, "long", None, "98.01", None),
    ("long SL gap through", SL, "long", None, "90", ("stop_loss", "98")),
    ("long SL only: big profit does nothing", SL, "long", None, "150", None),
    ("short SL exact boundary", SL, "short", None, "102", ("stop_loss", "102")),
    ("short SL one tick inside", SL, "short", None, "101.99", None),
    ("short SL gap through", SL, "short", None, "110", ("stop_loss", "102")),
    ("short SL only: big profit does nothing", SL, "short", None, "50", None),
    # take-profit alone
    ("long TP exact boundary", TP, "long", None, "104", ("take_profit", "104")),
    ("long TP one tick inside", TP, "long", None, "103.99", None),
    ("long TP gap through", TP, "long", None, "120", ("take_profit", "104")),
    ("long TP only: big loss does nothing", TP, "long", None, "1", None),
    ("short TP exact boundary", TP, "short", None, "96", ("take_profit", "96")),
    ("short TP one tick inside", TP, "short", None, "96.01", None),
    ("short TP gap through", TP, "short", None, "80", ("take_profit", "96")),
    ("short TP only: big loss does nothing", TP, "short", None, "500", None),
    # trailing alone
    ("long trail from entry, exact", TR, "long", None, "99", ("trailing_stop", "99")),
    ("long trail from entry, one tick inside", TR, "long", None, "99.01", None),
    ("long trail from mark, exact", TR, "long", "110", "108.9", ("trailing_stop", "108.9")),
    ("long trail from mark, one tick inside", TR, "long", "110", "108.91", None),
    ("long trail gap through", TR, "long", "110", "100", ("trailing_stop", "108.9")),
    ("long trail new high never fires", TR, "long", "110", "120", None),
    ("short trail from entry, exact", TR, "short", None, "101", ("trailing_stop", "101")),
    ("short trail from mark, exact", TR, "short", "90", "90.9", ("trailing_stop", "90.9")),
    ("short trail from mark, one tick inside", TR, "short", "90", "90.89", None),
    ("short trail gap through", TR, "short", "90", "95", ("trailing_stop", "90.9")),
    ("short trail new low never fires", TR, "short", "90", "80", None),
    # trailing with an activation offset (2 %): long activates at 102, short at 98
    ("long offset: not active below activation", TR_OFF, "long", None, "50", None),
    ("long offset: mark just short of activation", TR_OFF, "long", "101.99", "100", None),
    ("long offset: active at activation, exact", TR_OFF, "long", "102", "100.98", ("trailing_stop", "100.98")),
    ("long offset: active, one tick inside", TR_OFF, "long", "102", "100.99", None),
    ("long offset: ratcheted", TR_OFF, "long", "105", "103.95", ("trailing_stop", "103.95")),
    ("short offset: not active above activation", TR_OFF, "short", "98.01", "150", None),
    ("short offset: active at activation", TR_OFF, "short", "98", "98.98", ("trailing_stop", "98.98")),
    # all together (long: SL 98, TP 104, trail 1 %; short: SL 102, TP 96)
    ("long all: inside every level", ALL, "long", "100", "100.5", None),
    ("long all: trailing only", ALL, "long", "100", "99", ("trailing_stop", "99")),
    ("long all: SL and trailing at once -> SL", ALL, "long", "100", "98", ("stop_loss", "98")),
    ("long all: gap below both -> SL", ALL, "long", "103", "97", ("stop_loss", "98")),
    ("long all: TP exact (mark follows price)", ALL, "long", "100", "104", ("take_profit", "104")),
    ("long all: trailing and TP at once -> trailing", ALL, "long", "106", "104.5", ("trailing_stop", "104.94")),
    ("short all: inside every level", ALL, "short", "100", "99.5", None),
    ("short all: trailing only", ALL, "short", "100", "101", ("trailing_stop", "101")),
    ("short all: SL and trailing at once -> SL", ALL, "short", "100", "102", ("stop_loss", "102")),
    ("short all: TP exact", ALL, "short", "100", "96", ("take_profit", "96")),
    ("short all: trailing and TP at once -> trailing", ALL, "short", "94", "95.5", ("trailing_stop", "94.94")),
    # every rule disabled
    ("long none: crash", NONE, "long", None, "0.0001", None),
    ("long none: moon", NONE, "long", None, "1000000", None),
    ("short none: moon", NONE, "short", None, "1000000", None),
]


@pytest.mark.parametrize("case,rules,side,high_water,price,expected", CASES, ids=[c[0] for c in CASES])
def test_exit_table(case, rules, side, high_water, price, expected):
    position = PositionView(side=side, entry_px=D(100), size=D("0.5"),
                            high_water=None if high_water is None else D(high_water))
    decision = rules.check(position, D(price), now_ms=1_700_000_000_000)
    if expected is None:
        assert decision is None
    else:
        reason, trigger = expected
        assert decision == ExitDecision(reason, D(trigger), D(price))


def test_decision_does_not_depend_on_time():
    position = PositionView("long", D(100), D(1), None)
    assert ALL.check(position, D(98), 0) == ALL.check(position, D(98), 10**13)


def test_gap_reports_actual_price_and_level():
    decision = SL.check(PositionView("long", D(100), D(1)), D("87.5"), 0)
    assert decision is not None
    assert (decision.trigger_price, decision.price) == (D(98), D("87.5"))


def test_decision_is_frozen():
    decision = ExitDecision("stop_loss", D(98), D(97))
    with pytest.raises(AttributeError):
        decision.price = D(1)  # type: ignore[misc]


# ---- trailing stop over price series -----------------------------------------------------------

# (side, offset, prices, triggers after each update); distance 1 %, entry 100
SERIES = [
    ("long", "0", ["100", "101", "103", "102", "99", "104", "100"],
     ["99", "99.99", "101.97", "101.97", "101.97", "102.96", "102.96"]),
    ("short", "0", ["100", "99", "97", "98", "101", "96", "100"],
     ["101", "99.99", "97.97", "97.97", "97.97", "96.96", "96.96"]),
    # offset 2 %: silent until the mark reaches 102 (long) / 98 (short), then ratchets; stays
    # active after the price falls back below the activation price
    ("long", "2", ["101", "101.99", "102", "101", "103", "90"],
     [None, None, "100.98", "100.98", "101.97", "101.97"]),
    ("short", "2", ["99", "98.01", "98", "99", "97", "110"],
     [None, None, "98.98", "98.98", "97.97", "97.97"]),
]


@pytest.mark.parametrize("side,offset,prices,triggers", SERIES)
def test_trailing_series_never_loosens(side, offset, prices, triggers):
    stop = TrailingStop(side, D(1), D(100), activation_offset_pct=D(offset))
    got = [stop.update(D(p)) for p in prices]
    assert got == [None if t is None else D(t) for t in triggers]
    assert stop.trigger == got[-1]


@pytest.mark.parametrize("side,saved,price,mark,trigger", [
    ("long", "110", "105", "110", "108.9"),     # resumes the saved mark, ignores a lower price
    ("long", "110", "112", "112", "110.88"),    # and keeps ratcheting
    ("long", "95", "99.5", "100", "99"),        # a saved mark behind the entry is not trusted
    ("short", "90", "95", "90", "90.9"),
    ("short", "105", "100.5", "100", "101"),
])
def test_trailing_resumes_from_saved_high_water(side, saved, price, mark, trigger):
    stop = TrailingStop(side, D(1), D(100), high_water=D(saved))
    assert stop.update(D(price)) == D(trigger)
    assert stop.high_water == D(mark)


def test_trailing_resume_keeps_activation():
    # activated before the restart (mark 103 >= 102): active again straight away
    resumed = TrailingStop("long", D(1), D(100), activation_offset_pct=D(2), high_water=D(103))
    assert resumed.active and resumed.trigger == D("101.97")
    fresh = TrailingStop("long", D(1), D(100), activation_offset_pct=D(2))
    assert not fresh.active and fresh.trigger is None and fresh.high_water == D(100)


def test_trailing_activation_price():
    assert TrailingStop("long", D(1), D(100), D(2)).activation_price == D(102)
    assert TrailingStop("short", D(1), D(100), D(2)).activation_price == D(98)
    # a short can never fall 100 %: the stop never activates
    never = TrailingStop("short", D(1), D(100), D(100))
    assert never.update(D("0.000001")) is None


def test_rules_build_matching_trailing_stop():
    stop = TR_OFF.trailing_stop("long", D(100), high_water=D(105))
    assert stop is not None and stop.trigger == D("103.95")
    assert SL.trailing_stop("long", D(100)) is None


# ---- levels, precision, liquidation ------------------------------------------------------------

@pytest.mark.parametrize("rules,side,entry,stop,target", [
    (ALL, "long", "100", "98", "104"),
    (ALL, "short", "100", "102", "96"),
    (SL, "long", "100", "98", None),
    (TP, "short", "100", None, "96"),
    (NONE, "long", "100", None, None),
    (ExitRules(D("1.5"), D("2.5"), None), "long", "50123.7", "49371.8445", "51376.7925"),
    (ExitRules(D("1.5"), D("2.5"), None), "short", "0.001604", "0.00162806", "0.0015639"),
    (ExitRules(None, D(100), None), "short", "100", None, None),    # short target at 0: unreachable
    (ExitRules(None, D(250), None), "long", "100", None, "350"),
])
def test_levels(rules, side, entry, stop, target):
    expected = {"stop_loss": None if stop is None else D(stop),
                "take_profit": None if target is None else D(target)}
    assert rules.levels(PositionView(side, D(entry), D(1))) == expected
    assert rules.levels(side, D(entry)) == expected   # the (side, entry_px) form


def test_decimal_exactness_where_float_would_miss():
    # 0.3 * 1.1 in binary floating point is 0.33000000000000007: the boundary would be missed
    rules = ExitRules(None, D(10), None)
    assert rules.levels("long", D("0.3"))["take_profit"] == D("0.33")
    decision = rules.check(PositionView("long", D("0.3"), D(1)), D("0.33"), 0)
    assert decision is not None and decision.reason == "take_profit"


def test_results_independent_of_callers_decimal_context():
    with localcontext() as ctx:
        ctx.prec = 3
        assert ExitRules(D("1.5"), None, None).levels("long", D("50123.7"))["stop_loss"] == D("49371.8445")
        assert TrailingStop("long", D("0.7"), D("50123.7")).trigger == D("49772.8341")


@pytest.mark.parametrize("bad", [
    lambda: ExitRules(2.0, None, None),                     # float pct
    lambda: TrailingStop("long", 1.0, D(100)),
    lambda: TrailingStop("long", D(1), 100.0),
    lambda: TrailingStop("long", D(1), D(100)).update(99.5),
    lambda: ALL.check(PositionView("long", D(100), D(1)), 99.5, 0),
])
def test_floats_refused(bad):
    with pytest.raises(TypeError):
        bad()


@pytest.mark.parametrize("bad", [
    lambda: ExitRules(D(0), None, None),
    lambda: ExitRules(D(-1), None, None),
    lambda: ExitRules(D(100), None, None),
    lambda: ExitRules(None, D(0), None),
    lambda: ExitRules(None, None, D(100)),
    lambda: ExitRules(None, None, D(1), trailing_offset_pct=D(-1)),
    lambda: TrailingStop("long", D(0), D(100)),
    lambda: TrailingStop("long", D(1), D(0)),
    lambda: TrailingStop("flat", D(1), D(100)),  # type: ignore[arg-type]
    lambda: ALL.check(PositionView("flat", D(100), D(1)), D(100), 0),  # type: ignore[arg-type]
    lambda: ALL.levels("long"),
])
def test_bad_settings_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        bad()


@pytest.mark.parametrize("side,stop,liq,ok", [
    ("long", "98", "70", True),
    ("long", "98", "98", False),      # at liquidation: too late
    ("long", "98", "99", False),      # past liquidation: protects nothing
    ("short", "102", "130", True),
    ("short", "102", "102", False),
    ("short", "102", "101", False),
    ("long", "98", None, True),       # no liquidation price (e.g. no leverage risk)
    ("short", "102", None, True),
])
def test_validate_against_liquidation(side, stop, liq, ok):
    assert validate_against_liquidation(side, D(stop), None if liq is None else D(liq)) is ok
