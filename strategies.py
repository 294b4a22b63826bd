"""Entry strategies (pure; no I/O, no clock, no logging).

Owns: the `Strategy` protocol, the built-in strategies, their registry and their declared
parameters (`Param`, `check_strategy`: what a config may give each strategy, checked before the
bot starts). The candles they read are candles.py's (`CandleSeries`, re-exported here).
Must not: send orders, size positions or decide exits (exits.py, sizing.py do); read a clock
(time comes with each trade); keep references to the caller's lists.

Adding a strategy (one file, this one, or any module imported before the config is loaded):
write a class with a `name` attribute and an `on_candles` method, decorate it with
`@register("my_name")`, and select it in the config with `strategy.name: my_name`. Declare its
parameters in `PARAMS` (type, default, bounds) and, for rules across parameters, a
`check_params(values)` static method: `--check-config` and every start check `strategy.params`
against them before anything is sent, and the error names the parameter
(`strategy.params.lookback must be an integer >= 2, got 1`). The checked values, defaults filled
in, are passed to the constructor as keyword arguments:

    @register("breakout")
    class Breakout:
        name = "breakout"
        PARAMS = {"lookback": Param(int, 20, minimum=2)}

        def __init__(self, lookback: int = 20) -> None:
            self.lookback = resolve_params(Breakout, {"lookback": lookback})["lookback"]

        def on_candles(self, candles, price, has_position):
            if has_position or len(candles) < self.lookback:
                return None
            return "long" if price > max(c.high for c in candles[-self.lookback:]) else None

(A class without `PARAMS` still works: its constructor's keyword arguments are the accepted
parameters, and building it is the check, so its constructor must stay pure.)

A strategy sees CLOSED candles only (the forming candle changes until it closes) and the
current price; it returns "long", "short" or None.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

from candles import CandleSeries, interval_ms  # noqa: F401 - re-exported: what strategies read
from wire import Candle

Signal = Literal["long", "short"] | None

# ---- strategies -----------------------------------------------------------------------------

@runtime_checkable
class Strategy(Protocol):
    name: str

    def on_candles(self, candles: Sequence[Candle], price: Decimal, has_position: bool) -> Signal:
        """Given closed candles (oldest first) and the current price, return an entry signal."""
        ...


STRATEGIES: dict[str, Callable[..., Strategy]] = {}

_T = TypeVar("_T")


def register(name: str) -> Callable[[_T], _T]:
    """Class decorator: make a strategy selectable as `strategy.name: <name>`."""
    def add(cls: _T) -> _T:
        if name in STRATEGIES and STRATEGIES[name] is not cls:
            raise ValueError(f"strategy {name!r} is already registered")
        STRATEGIES[name] = cls  # type: ignore[assignment]
        return cls
    return add


# ---- parameters ---------------------------------------------------------------------------

class StrategyParamError(ValueError):
    """A strategy name or parameter the strategy refuses. `param` is the parameter's name (None:
    the strategy's name itself); `unknown` says the name is not one the strategy knows at all;
    `expectation` and `value` say what was wanted and what came (`param` "": the parameters as a
    whole, refused by the constructor of a strategy that declares none). The config loader turns the
    fields into `strategy.params.<param> must be <expectation>, got <value>`."""

    def __init__(self, strategy: str, param: str | None, expectation: str, value: Any,
                 unknown: bool = False) -> None:
        self.strategy, self.param, self.expectation, self.value, self.unknown = \
            strategy, param, expectation, value, unknown
        if param is None:
            text = f"unknown strategy {value!r} ({expectation})"
        elif not param:  # the parameters as a whole (a strategy without declared ones refused them)
            text = f"strategy {strategy}: {expectation}"
        elif unknown:
            text = f"strategy {strategy}: unknown parameter {param!r} ({expectation})"
        else:
            text = f"strategy {strategy}: {param} must be {expectation}, got {value!r}"
        super().__init__(text)


@dataclass(frozen=True)
class Param:
    """One declared strategy parameter: its type (int, float, bool or str), default and bounds."""

    kind: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None

    @property
    def expectation(self) -> str:
        words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[self.kind]
        bounds = ([f">= {self.minimum:g}"] if self.minimum is not None else []) + \
            ([f"<= {self.maximum:g}"] if self.maximum is not None else [])
        return " and ".join([words + (" " + bounds[0] if bounds else "")] + bounds[1:])

    def check(self, value: Any) -> Any:
        """The value, converted (an integer is a valid float); ValueError(expectation) if not one."""
        ok = (isinstance(value, self.kind) and not (self.kind is not bool and isinstance(value, bool))) \
            or (self.kind is float and isinstance(value, int) and not isinstance(value, bool))
        if self.kind is float and ok and not math.isfinite(value):
            ok = False
        if ok and self.minimum is not None and value < self.minimum:
            ok = False
        if ok and self.maximum is not None and value > self.maximum:
            ok = False
        if not ok:
            raise ValueError(self.expectation)
        return float(value) if self.kind is float else value


def resolve_params(cls: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` checked against `cls.PARAMS` and `cls.check_params`, defaults filled in
    (StrategyParamError naming the first bad parameter)."""
    name = getattr(cls, "name", cls.__name__)
    schema: Mapping[str, Param] = cls.PARAMS
    values: dict[str, Any] = {}
    for key, value in given.items():
        if key not in schema:
            accepted = ", ".join(schema) or "none"
            raise StrategyParamError(name, key, f"accepted: {accepted}", value, unknown=True)
        try:
            values[key] = schema[key].check(value)
        except ValueError as exc:
            raise StrategyParamError(name, key, str(exc), value) from None
    for key, param in schema.items():
        values.setdefault(key, param.default)
    rule = getattr(cls, "check_params", None)
    if rule is not None:
        rule(values)
    return values


def entry_order_of(configured: str | None, strategy: object) -> str:
    """How entries go out: `trading.entry_order` when set, else the strategy's (class or instance)
    `entry_order` attribute if it declares one ("ioc" or "post_only"), else "ioc"."""
    preferred = getattr(strategy, "entry_order", None)
    return configured or (preferred if preferred in ("ioc", "post_only") else "ioc")


def check_strategy(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters `name` would be built with (StrategyParamError naming what is wrong): what
    `--check-config` and a start check before anything is sent."""
    factory = STRATEGIES.get(name)
    if factory is None:
        raise StrategyParamError(name, None, f"known: {', '.join(sorted(STRATEGIES))}", name)
    if hasattr(factory, "PARAMS"):
        return resolve_params(factory, params)
    # No declared schema: the constructor's keyword arguments are the parameters, building it the check.
    signature = inspect.signature(factory).parameters.values()
    accepted = [p.name for p in signature if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    open_ended = any(p.kind is p.VAR_KEYWORD for p in signature)
    for key in params:
        if key not in accepted and not open_ended:
            raise StrategyParamError(name, key, f"accepted: {', '.join(accepted) if accepted else 'none'}",
                                     params[key], unknown=True)
    try:
        factory(**params)
    except StrategyParamError:
        raise
    except (TypeError, ValueError) as exc:
        raise StrategyParamError(name, "", str(exc), dict(params)) from exc
    return dict(params)


def build_strategy(name: str, params: Mapping[str, Any]) -> Strategy:
    """The strategy `name` built with `params`; ValueError naming an unknown strategy or parameter."""
    values = check_strategy(name, params)
    try:
        return STRATEGIES[name](**values)
    except StrategyParamError:
        raise
    except (TypeError, ValueError) as exc:
        raise ValueError(f"strategy {name}: {exc}") from exc


def ema(values: Sequence[Decimal], period: int) -> list[Decimal | None]:
    """Exponential moving average, alpha = 2 / (period + 1), seeded with the simple average of the
    first `period` values; None where there is not enough history yet."""
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")
    out: list[Decimal | None] = [None] * min(len(values), period - 1)
    if len(values) < period:
        return out
    alpha = Decimal(2) / (period + 1)
    value = sum(values[:period], Decimal(0)) / period
    out.append(value)
    for x in values[period:]:
        value = alpha * x + (1 - alpha) * value
        out.append(value)
    return out


@register("ema_cross")
class EmaCross:
    """Long when the fast EMA crosses above the slow EMA, short when it crosses below, computed on
    closed candles' closes. A cross is the sign of (fast - slow) going from <= 0 to > 0 (up) or
    from >= 0 to < 0 (down) between the last two closed candles; it needs `slow + 1` candles.

    Each cross is reported once, to the first call that sees it (keyed by the candle it happened
    on): asking again before the next candle closes returns None, so a stop-out is not followed by a
    re-entry on the same stale cross. So asking again with the same closed candles always answers
    None, and does so without computing the averages again (the bot asks every second; a backtest
    asks as often over hours of data). That is the only state.
    """

    name = "ema_cross"
    PARAMS = {"fast": Param(int, 9, minimum=1), "slow": Param(int, 21, minimum=2)}

    @staticmethod
    def check_params(values: Mapping[str, Any]) -> None:
        if values["fast"] >= values["slow"]:
            raise StrategyParamError("ema_cross", "fast", f"< slow ({values['slow']})", values["fast"])

    def __init__(self, fast: int = 9, slow: int = 21) -> None:
        values = resolve_params(EmaCross, {"fast": fast, "slow": slow})
        self.fast, self.slow = values["fast"], values["slow"]
        self._reported_ms: int | None = None
        self._evaluated: tuple[int, Decimal, int] | None = None  # the last closed candle already looked at

    def cross(self, closes: Sequence[Decimal]) -> Signal:
        """The cross on the last close, if any (stateless)."""
        if len(closes) < self.slow + 1:
            return None
        fast, slow = ema(closes, self.fast), ema(closes, self.slow)
        before = fast[-2] - slow[-2]  # type: ignore[operator]
        now = fast[-1] - slow[-1]  # type: ignore[operator]
        if before <= 0 < now:
            return "long"
        if before >= 0 > now:
            return "short"
        return None

    def on_candles(self, candles: Sequence[Candle], price: Decimal, has_position: bool) -> Signal:
        if len(candles) < self.slow + 1:
            return None
        last = (candles[-1].open_time_ms, candles[-1].close, len(candles))
        if last == self._evaluated:
            return None  # the same closed candles: their cross, if any, was reported already
        self._evaluated = last
        signal = self.cross([c.close for c in candles])
        if signal is None:
            return None
        at = candles[-1].open_time_ms
        if at == self._reported_ms:
            return None
        self._reported_ms = at
        return signal


@register("always_long")
class AlwaysLong:
    """Long whenever flat (demos and smoke tests): the quickest way to see a full trade cycle."""

    name = "always_long"
    PARAMS: Mapping[str, Param] = {}

    def on_candles(self, candles: Sequence[Candle], price: Decimal, has_position: bool) -> Signal:
        return None if has_position else "long"
