"""Candles from trades, EMA values, cross detection, the strategy registry and declared parameters."""
from __future__ import annotations

from decimal import Decimal

import pytest

import strategies
from strategies import (STRATEGIES, AlwaysLong, CandleSeries, EmaCross, Param, Strategy, StrategyParamError,
                        build_strategy, check_strategy, ema, interval_ms, register, resolve_params)
from wire import Candle, parse_candle

D = Decimal
MIN = 60_000
T0 = 1_700_000_040_000   # a minute boundary (divisible by 60 000)


def candles_from_closes(closes, start_ms=T0, step_ms=MIN):
    return [Candle(start_ms + i * step_ms, D(c), D(c), D(c), D(c), D(1)) for i, c in enumerate(closes)]


# ---- intervals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,ms", [("1m", 60_000), ("3m", 180_000), ("15m", 900_000), ("1h", 3_600_000),
                                     ("4h", 14_400_000), ("12h", 43_200_000), ("1d", 86_400_000),
                                     ("1w", 604_800_000)])
def test_interval_ms(name, ms):
    assert interval_ms(name) == ms


@pytest.mark.parametrize("bad", ["", "m", "0m", "1M", "1s", "1 m", "01m", 60])
def test_interval_ms_rejects(bad):
    with pytest.raises(ValueError):
        interval_ms(bad)


# ---- candles from trades -----------------------------------------------------------------------

def test_trades_in_one_interval_make_one_forming_candle():
    series = CandleSeries(MIN, maxlen=10)
    for price, size, t in [("100", "1", T0), ("103", "0.5", T0 + 10), ("99", "2", T0 + 30_000),
                           ("101", "0.25", T0 + MIN - 1)]:                 # last ms of the interval
        assert series.add_trade(D(price), D(size), t) == 0
    assert series.closed() == [] and series.closed_count == 0
    assert series.current == Candle(T0, D(100), D(103), D(99), D(101), D("3.75"))
    assert series.closes() == [] and series.closes(include_forming=True) == [D(101)]


def test_trade_on_the_boundary_opens_the_next_candle():
    series = CandleSeries(MIN, maxlen=10)
    series.add_trade(D(100), D(1), T0 + 5)
    assert series.add_trade(D(102), D(1), T0 + MIN) == 1       # exactly the next interval's start
    assert series.closed() == [Candle(T0, D(100), D(100), D(100), D(100), D(1))]
    assert series.current == Candle(T0 + MIN, D(102), D(102), D(102), D(102), D(1))
    assert series.closed_count == 1


def test_trade_mid_interval_is_bucketed_to_the_interval_start():
    series = CandleSeries(MIN, maxlen=10)
    series.add_trade(D(100), D(1), T0 + 42_123)
    assert series.current.open_time_ms == T0


def test_gaps_are_filled_with_flat_candles_at_the_last_close():
    series = CandleSeries(MIN, maxlen=10)
    series.add_trade(D(100), D(1), T0)
    series.add_trade(D(105), D(1), T0 + 20)
    assert series.add_trade(D(90), D(2), T0 + 3 * MIN + 500) == 3   # closes T0, fills T0+1, T0+2
    assert series.closed() == [
        Candle(T0, D(100), D(105), D(100), D(105), D(2)),
        Candle(T0 + MIN, D(105), D(105), D(105), D(105), D(0)),
        Candle(T0 + 2 * MIN, D(105), D(105), D(105), D(105), D(0)),
    ]
    assert series.current == Candle(T0 + 3 * MIN, D(90), D(90), D(90), D(90), D(2))
    assert series.closes() == [D(105), D(105), D(105)]


def test_late_trade_never_changes_a_closed_candle():
    series = CandleSeries(MIN, maxlen=10)
    series.add_trade(D(100), D(1), T0)
    series.add_trade(D(101), D(1), T0 + MIN)
    assert series.add_trade(D(500), D(1), T0 + 10) == 0
    assert series.late_trades == 1
    assert series.closed()[0].high == D(100) and series.current.high == D(101)


def test_maxlen_caps_memory_not_the_count():
    series = CandleSeries(MIN, maxlen=5)
    series.add_trade(D(100), D(1), T0)
    assert series.add_trade(D(101), D(1), T0 + 1_000 * MIN) == 1_000   # a long silence
    assert len(series) == 5 and series.closed_count == 1_000
    assert [c.open_time_ms for c in series.closed()] == [T0 + k * MIN for k in range(995, 1_000)]
    assert all(c.close == D(100) and c.volume == 0 for c in series.closed())


# Three elements of a real candleSnapshot answer (mainnet, kPEPE 1h; recorded by the official SDK's
# test suite, tests/cassettes/test_get_candles_snapshot.yaml, May 2023).
WIRE = [
    {"T": 1684702799999, "c": "0.001604", "h": "0.001616", "i": "1h", "l": "0.001601", "n": 709,
     "o": "0.001601", "s": "kPEPE", "t": 1684699200000, "v": "520665683.0"},
    {"T": 1684706399999, "c": "0.001591", "h": "0.001603", "i": "1h", "l": "0.001584", "n": 802,
     "o": "0.001603", "s": "kPEPE", "t": 1684702800000, "v": "682593287.0"},
    {"T": 1684709999999, "c": "0.001605", "h": "0.001609", "i": "1h", "l": "0.001591", "n": 424,
     "o": "0.001591", "s": "kPEPE", "t": 1684706400000, "v": "316205596.0"},
]
HOUR = 3_600_000


def test_parse_candle():
    assert parse_candle(WIRE[0]) == Candle(1684699200000, D("0.001601"), D("0.001616"), D("0.001601"),
                                           D("0.001604"), D("520665683.0"))


def test_load_snapshot_last_candle_is_forming():
    series = CandleSeries(HOUR, maxlen=100)
    series.load(WIRE)    # a snapshot up to "now" ends with the forming candle
    assert [c.close for c in series.closed()] == [D("0.001604"), D("0.001591")]
    assert series.current == parse_candle(WIRE[2])
    assert series.closed_count == 2
    # live trades continue the forming candle, then roll it
    series.add_trade(D("0.00162"), D(10), 1684706400000 + 5)
    assert series.current.high == D("0.00162") and series.current.volume == D("316205606.0")
    assert series.add_trade(D("0.0016"), D(1), 1684706400000 + HOUR) == 1
    assert series.closes()[-1] == D("0.00162")


def test_load_with_now_treats_ended_candles_as_closed_and_fills_gaps():
    series = CandleSeries(MIN, maxlen=100)
    history = candles_from_closes(["1", "2"]) + candles_from_closes(["4"], start_ms=T0 + 3 * MIN)
    series.load(history, now_ms=T0 + 4 * MIN)
    assert series.closes() == [D(1), D(2), D(2), D(4)]      # T0+2 filled flat at 2
    assert series.current is None and series.closed_count == 4
    assert series.add_trade(D(7), D(1), T0 + 6 * MIN) == 2   # fills T0+4 and T0+5 at 4
    assert series.closes() == [D(1), D(2), D(2), D(4), D(4), D(4)]
    assert series.add_trade(D(9), D(1), T0 + 3 * MIN) == 0 and series.late_trades == 1


def test_load_merges_with_live_candles_live_wins():
    series = CandleSeries(MIN, maxlen=100)
    series.add_trade(D(50), D(1), T0 + 2 * MIN)
    series.load(candles_from_closes(["1", "2", "3", "4"]))   # T0 .. T0+3; T0+3 is newer than live
    assert series.closes() == [D(1), D(2)]
    assert series.current.close == D(50) and series.current.open_time_ms == T0 + 2 * MIN


def test_load_rejects_misaligned_candles():
    with pytest.raises(ValueError):
        CandleSeries(MIN, maxlen=10).load([Candle(T0 + 1, D(1), D(1), D(1), D(1), D(0))])


# ---- EMA ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("values,period,expected", [
    # seed = simple average of the first `period` values, then alpha = 2 / (period + 1)
    (["2", "4", "6", "8", "10", "12"], 3, [None, None, "4", "6", "8", "10"]),               # alpha 1/2
    (["10", "11", "12", "13", "20", "8"], 4, [None, None, None, "11.5", "14.9", "12.14"]),  # alpha 2/5
    (["5", "7"], 1, ["5", "7"]),                                                          # alpha 1
    (["1", "2"], 3, [None, None]),                                                        # too short
])
def test_ema_hand_computed(values, period, expected):
    got = ema([D(v) for v in values], period)
    assert got == [None if e is None else D(e) for e in expected]


# ---- EmaCross ----------------------------------------------------------------------------------
# fast 2 (alpha 2/3), slow 3 (alpha 1/2) on 10 9 8 7 6 7 8, by hand:
#   fast: -, 9.5, 8.5, 7.5, 6.5, 6.8333, 7.6111     slow: -, -, 9, 8, 7, 7, 7.5
#   fast - slow: -0.5 -0.5 -0.5 -0.1667 +0.1111  -> the cross up is on the 7th close only
DIP = ["10", "9", "8", "7", "6", "7", "8"]
PEAK = [str(20 - int(c)) for c in DIP]   # the mirror image: a cross down on the 7th close


@pytest.mark.parametrize("closes,expected_at", [(DIP, {7: "long"}), (PEAK, {7: "short"})])
def test_cross_detected_on_the_right_candle_only(closes, expected_at):
    signals = {}
    for n in range(1, len(closes) + 1):
        signal = EmaCross(fast=2, slow=3).on_candles(candles_from_closes(closes[:n]), D(closes[n - 1]), False)
        if signal is not None:
            signals[n] = signal
    assert signals == expected_at


@pytest.mark.parametrize("closes,expected", [
    (["100"] * 6 + ["101"], "long"),     # from equal to above counts as a cross up
    (["100"] * 6 + ["99"], "short"),
    (["100"] * 7, None),                 # flat: no cross
    ([str(x) for x in range(1, 11)], None),          # steady rise: fast stays above, no cross
    ([str(x) for x in range(10, 0, -1)], None),      # steady fall
    (["100"] * 3 + ["101"], "long"),     # exactly slow + 1 candles: enough
    (["100"] * 2 + ["101"], None),       # slow candles: not enough history
    ([], None),
])
def test_cross_table(closes, expected):
    assert EmaCross(fast=2, slow=3).on_candles(candles_from_closes(closes), D(100), False) == expected


def test_default_ema_cross_needs_22_candles():
    rise = ["100"] * 21 + ["110"]
    assert EmaCross().on_candles(candles_from_closes(rise[1:]), D(110), False) is None
    assert EmaCross().on_candles(candles_from_closes(rise), D(110), False) == "long"


def test_a_cross_is_reported_once():
    strategy = EmaCross(fast=2, slow=3)
    candles = candles_from_closes(DIP)
    assert strategy.on_candles(candles, D(8), False) == "long"
    assert strategy.on_candles(candles, D(8), False) is None        # same candle: already reported
    later = candles_from_closes(DIP + ["9", "10", "5"])              # a new cross, later: reported
    assert strategy.on_candles(later[:-1], D(10), False) is None
    assert strategy.on_candles(later, D(5), False) == "short"


def test_ema_cross_reads_closes_not_the_live_price():
    candles = candles_from_closes(["100"] * 7)
    assert EmaCross(fast=2, slow=3).on_candles(candles, D(1_000_000), False) is None


# ---- AlwaysLong, registry ----------------------------------------------------------------------

def test_always_long():
    strategy = AlwaysLong()
    assert strategy.on_candles([], D(100), has_position=False) == "long"
    assert strategy.on_candles([], D(100), has_position=True) is None


def test_registry_and_build():
    assert set(STRATEGIES) >= {"ema_cross", "always_long"}
    built = build_strategy("ema_cross", {"fast": 5, "slow": 8})
    assert isinstance(built, EmaCross) and (built.fast, built.slow) == (5, 8)
    assert isinstance(built, Strategy) and built.name == "ema_cross"
    assert isinstance(build_strategy("always_long", {}), AlwaysLong)
    assert isinstance(build_strategy("ema_cross", {}), EmaCross)


@pytest.mark.parametrize("name,params,words", [
    ("ema_crossover", {}, ["unknown strategy 'ema_crossover'", "ema_cross", "always_long"]),
    ("ema_cross", {"fsat": 5}, ["unknown parameter 'fsat'", "fast", "slow"]),
    ("ema_cross", {"fast": 0}, ["fast", ">= 1"]),
    ("ema_cross", {"fast": "9"}, ["fast", "'9'"]),
    ("ema_cross", {"fast": 9.5}, ["fast"]),
    ("ema_cross", {"slow": True}, ["slow"]),
    ("ema_cross", {"fast": 21, "slow": 21}, ["fast must be < slow"]),
    ("always_long", {"size": 1}, ["unknown parameter 'size'", "none"]),
])
def test_build_strategy_errors_name_the_problem(name, params, words):
    with pytest.raises(ValueError) as info:
        build_strategy(name, params)
    for word in words:
        assert word in str(info.value)


def test_register_a_user_strategy(monkeypatch):
    monkeypatch.setattr(strategies, "STRATEGIES", dict(STRATEGIES))

    @register("never")
    class Never:
        name = "never"

        def __init__(self, patience: int = 1) -> None:
            self.patience = patience

        def on_candles(self, candles, price, has_position):
            return None

    built = build_strategy("never", {"patience": 3})
    assert isinstance(built, Never) and built.patience == 3
    with pytest.raises(ValueError):
        register("never")(AlwaysLong)


# ---- declared parameters ------------------------------------------------------------------

def test_declared_parameters_are_checked_and_defaults_filled() -> None:
    assert check_strategy("ema_cross", {}) == {"fast": 9, "slow": 21}
    assert check_strategy("ema_cross", {"slow": 30}) == {"fast": 9, "slow": 30}
    assert check_strategy("always_long", {}) == {}


@pytest.mark.parametrize("name,params,param,expectation,unknown", [
    ("nope", {}, None, "known: always_long, ema_cross", False),
    ("ema_cross", {"fsat": 5}, "fsat", "accepted: fast, slow", True),
    ("ema_cross", {"fast": "9"}, "fast", "an integer >= 1", False),
    ("ema_cross", {"slow": 1}, "slow", "an integer >= 2", False),
    ("ema_cross", {"fast": True}, "fast", "an integer >= 1", False),
    ("ema_cross", {"fast": 30}, "fast", "< slow (21)", False),
])
def test_a_refused_parameter_is_named(name: str, params: dict, param: str | None, expectation: str,
                                      unknown: bool) -> None:
    with pytest.raises(StrategyParamError) as info:
        check_strategy(name, params)
    err = info.value
    assert (err.param, err.expectation, err.unknown) == (param, expectation, unknown)


@pytest.mark.parametrize("param,value,ok", [
    (Param(int, 1, minimum=1, maximum=5), 5, 5),
    (Param(int, 1, minimum=1, maximum=5), 6, None),
    (Param(int, 1), 2.0, None),
    (Param(float, 1.0, minimum=0), 2, 2.0),
    (Param(float, 1.0), float("nan"), None),
    (Param(float, 1.0), True, None),
    (Param(bool, False), True, True),
    (Param(bool, False), 1, None),
    (Param(str, "a"), "b", "b"),
])
def test_param_check(param: Param, value: object, ok: object) -> None:
    if ok is None:
        with pytest.raises(ValueError, match=param.expectation):
            param.check(value)
    else:
        assert param.check(value) == ok and type(param.check(value)) is type(ok)


def test_a_user_strategy_declares_its_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strategies, "STRATEGIES", dict(STRATEGIES))

    @register("band")
    class Band:
        name = "band"
        PARAMS = {"low": Param(float, 1.0, minimum=0), "high": Param(float, 2.0, minimum=0)}

        @staticmethod
        def check_params(values):
            if values["low"] >= values["high"]:
                raise StrategyParamError("band", "low", f"< high ({values['high']:g})", values["low"])

        def __init__(self, low: float = 1.0, high: float = 2.0) -> None:
            values = resolve_params(Band, {"low": low, "high": high})
            self.low, self.high = values["low"], values["high"]

        def on_candles(self, candles, price, has_position):
            return None

    assert check_strategy("band", {"high": 3}) == {"low": 1.0, "high": 3.0}
    assert build_strategy("band", {"low": 1.5}).low == 1.5
    with pytest.raises(StrategyParamError, match="low must be < high"):
        build_strategy("band", {"low": 5})


def test_a_strategy_without_declared_parameters_is_checked_by_building_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strategies, "STRATEGIES", dict(STRATEGIES))

    @register("picky")
    class Picky:
        name = "picky"

        def __init__(self, lookback: int = 20) -> None:
            if lookback < 2:
                raise ValueError(f"lookback must be >= 2, got {lookback}")

        def on_candles(self, candles, price, has_position):
            return None

    assert check_strategy("picky", {"lookback": 5}) == {"lookback": 5}
    with pytest.raises(StrategyParamError) as info:
        check_strategy("picky", {"lookback": 1})
    assert info.value.param == "" and "lookback must be >= 2" in str(info.value)
