"""Exit decisions: stop-loss, take-profit and trailing stop as pure functions of prices (no I/O).

Owns: the exit rules of an open position, the trailing-stop ratchet and its restart-safe
high-water mark, the static SL/TP levels (for display and exchange-side trigger orders), and the
check that a stop sits on the safe side of the liquidation price.
Must not: send orders, read clocks, log, or persist anything. Time is an argument (`now_ms`);
the caller decides what to do with a decision and saves `TrailingStop.high_water` itself.

Which price drives the exits: whatever price the caller passes (the bot passes the last trade
price, or the REST mid while the stream is down). Hyperliquid's own exchange-side TP/SL triggers
fire on the mark price instead, so the two can differ by the mark/last spread; the exchange-side
orders are the backstop, these rules are the primary exit.

Percentages are percent (2 means 2 %), of the entry price for SL/TP and of the high-water mark for
the trailing stop. All arithmetic is `Decimal` in a fixed context (prec 34, half-even), so results
do not depend on the caller's decimal context; floats are refused.

Boundaries are inclusive: a price exactly at a level fires it. A gap through a level fires with the
actual price in `ExitDecision.price` and the level in `ExitDecision.trigger_price`.

Precedence when several rules fire on the same price (a gap, or a retry after a failed exit):
stop_loss, then trailing_stop, then take_profit. The action is the same (close at market); the
reason is what the trader reads in the log and the journal, so the loss-bounding rule is named
whenever its line was crossed: an exit never reports "take_profit" or "trailing_stop" when the hard
stop was breached, and the result is deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Literal

Side = Literal["long", "short"]
ExitReason = Literal["stop_loss", "take_profit", "trailing_stop"]

_CTX = Context(prec=34, rounding=ROUND_HALF_EVEN)
_ONE = Decimal(1)
_HUNDRED = Decimal(100)
_ZERO = Decimal(0)
_SIDES = ("long", "short")


def _decimal(name: str, value: object) -> Decimal:
    """Accept Decimal or int (exact); refuse float (binary noise in money) and anything else."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise TypeError(f"{name} must be a Decimal (not {type(value).__name__}), got {value!r}")
    value = Decimal(value)
    if not value.is_finite():
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _side(value: object) -> Side:
    if value not in _SIDES:
        raise ValueError(f"side must be 'long' or 'short', got {value!r}")
    return value  # type: ignore[return-value]


def _pct_factor(pct: Decimal, sign: int) -> Decimal:
    """1 + sign * pct / 100, exactly (pct has far fewer digits than the context precision)."""
    step = _CTX.divide(pct, _HUNDRED)
    return _CTX.add(_ONE, step) if sign > 0 else _CTX.subtract(_ONE, step)


class TrailingStop:
    """A trailing stop: the best price since entry, and a trigger `distance_pct` behind it.

    A small MUTABLE object (the bot keeps one per position): `update(price)` moves the mark in
    place and returns the current trigger. The mark is the highest price seen for a long, the
    lowest for a short, starting at `entry`; `high_water` lets a restart resume from a saved mark
    (a saved mark worse than the entry is ignored: the mark never starts behind the entry).

    Activation: the trigger exists only once the mark has moved `activation_offset_pct` in the
    position's favour from the entry (offset 0: active from entry, trigger = entry -/+ distance).
    Before that `update` returns None. Because the activation depends only on the mark, a resumed
    stop is active exactly when the original was.

    Ratchet: the mark only moves in the position's favour, so the trigger only tightens (rises for
    a long, falls for a short) and never loosens on a reversal.
    """

    __slots__ = ("_side", "_distance_pct", "_entry", "_offset_pct", "_activation_px", "_factor", "_hw")

    def __init__(self, side: Side, distance_pct: Decimal, entry: Decimal,
                 activation_offset_pct: Decimal = Decimal(0), high_water: Decimal | None = None) -> None:
        self._side = _side(side)
        distance = _decimal("distance_pct", distance_pct)
        if not _ZERO < distance < _HUNDRED:
            raise ValueError(f"distance_pct must be > 0 and < 100, got {distance}")
        offset = _decimal("activation_offset_pct", activation_offset_pct)
        if offset < 0:
            raise ValueError(f"activation_offset_pct must be >= 0, got {offset}")
        entry = _decimal("entry", entry)
        if entry <= 0:
            raise ValueError(f"entry must be > 0, got {entry}")
        long = self._side == "long"
        self._distance_pct = distance
        self._offset_pct = offset
        self._entry = entry
        # A short's activation at >= 100 % is <= 0: unreachable, so the stop never activates.
        self._activation_px = _CTX.multiply(entry, _pct_factor(offset, 1 if long else -1))
        self._factor = _pct_factor(distance, -1 if long else 1)
        self._hw = entry
        if high_water is not None:
            self._advance(_decimal("high_water", high_water))

    def _advance(self, price: Decimal) -> None:
        if (price > self._hw) if self._side == "long" else (price < self._hw):
            self._hw = price

    def resumed(self, high_water: Decimal | None) -> "TrailingStop":
        """A new stop with this one's settings and entry, resumed from `high_water` as the constructor
        would (the settings, checked once, are not checked again: the exit check runs on every price)."""
        clone = object.__new__(TrailingStop)
        clone._side, clone._distance_pct, clone._entry = self._side, self._distance_pct, self._entry
        clone._offset_pct, clone._activation_px, clone._factor = self._offset_pct, self._activation_px, self._factor
        clone._hw = self._entry
        if high_water is not None:
            clone._advance(_decimal("high_water", high_water))
        return clone

    def update(self, price: Decimal) -> Decimal | None:
        """Feed one price; return the trigger price, or None while not yet active."""
        if type(price) is float:
            raise TypeError(f"price must be a Decimal (not float), got {price!r}")
        self._advance(price)
        return self.trigger

    @property
    def side(self) -> Side:
        return self._side

    @property
    def entry(self) -> Decimal:
        return self._entry

    @property
    def distance_pct(self) -> Decimal:
        return self._distance_pct

    @property
    def activation_offset_pct(self) -> Decimal:
        return self._offset_pct

    @property
    def activation_price(self) -> Decimal:
        """The mark at which the stop activates (entry when the offset is 0)."""
        return self._activation_px

    @property
    def high_water(self) -> Decimal:
        """The best price since entry (persist it; pass it back as `high_water` after a restart)."""
        return self._hw

    @property
    def active(self) -> bool:
        if self._side == "long":
            return self._hw >= self._activation_px
        return self._hw <= self._activation_px

    @property
    def trigger(self) -> Decimal | None:
        """The price at or beyond which the trailing stop fires; None while not active."""
        if not self.active:
            return None
        return _CTX.multiply(self._hw, self._factor)

    def __repr__(self) -> str:
        return (f"TrailingStop({self._side}, distance_pct={self._distance_pct}, entry={self._entry}, "
                f"activation_offset_pct={self._offset_pct}, high_water={self._hw}, trigger={self.trigger})")


@dataclass(frozen=True)
class PositionView:
    """What the exit rules need to know about an open position (read-only snapshot).

    `high_water` is the trailing stop's mark (`TrailingStop.high_water`); None means "no mark
    yet", which the rules treat as the entry price.
    """
    side: Side
    entry_px: Decimal
    size: Decimal
    high_water: Decimal | None = None


@dataclass(frozen=True)
class ExitDecision:
    """Close the position: `reason` fired at level `trigger_price`; `price` is the price that did it."""
    reason: ExitReason
    trigger_price: Decimal
    price: Decimal


@dataclass(frozen=True)
class ExitRules:
    """The configured exits. None disables a rule; percentages are percent of the entry price
    (trailing: of the high-water mark). Stateless: the trailing mark travels in `PositionView`.
    """
    stop_loss_pct: Decimal | None
    take_profit_pct: Decimal | None
    trailing_stop_pct: Decimal | None
    trailing_offset_pct: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        for name, hi in (("stop_loss_pct", _HUNDRED), ("take_profit_pct", None), ("trailing_stop_pct", _HUNDRED)):
            value = getattr(self, name)
            if value is None:
                continue
            value = _decimal(name, value)
            if value <= 0 or (hi is not None and value >= hi):
                bound = f"> 0 and < {hi}" if hi is not None else "> 0"
                raise ValueError(f"{name} must be {bound} (or None to disable), got {value}")
            object.__setattr__(self, name, value)
        offset = _decimal("trailing_offset_pct", self.trailing_offset_pct)
        if offset < 0:
            raise ValueError(f"trailing_offset_pct must be >= 0, got {offset}")
        object.__setattr__(self, "trailing_offset_pct", offset)
        # (side, entry) -> (stop-loss level, take-profit level, trailing stop at entry): computed once
        # per position, not on every price (not a field: equality and repr stay the rules').
        object.__setattr__(self, "_levels", {})

    # ---- static levels ---------------------------------------------------------------------

    def stop_loss_price(self, side: Side, entry_px: Decimal) -> Decimal | None:
        if self.stop_loss_pct is None:
            return None
        return _CTX.multiply(entry_px, _pct_factor(self.stop_loss_pct, -1 if _side(side) == "long" else 1))

    def take_profit_price(self, side: Side, entry_px: Decimal) -> Decimal | None:
        """None when disabled, or for a short whose target is at or below zero (unreachable)."""
        if self.take_profit_pct is None:
            return None
        level = _CTX.multiply(entry_px, _pct_factor(self.take_profit_pct, 1 if _side(side) == "long" else -1))
        return level if level > 0 else None

    def levels(self, position: PositionView | Side, entry_px: Decimal | None = None) -> dict[str, Decimal | None]:
        """Static levels: {"stop_loss": px | None, "take_profit": px | None}, unrounded.

        Call as `levels(position_view)` or `levels(side, entry_px)`. Round with
        `signing.round_price` before sending an exchange-side trigger order. The trailing trigger
        is not static; read it from `TrailingStop.trigger`.
        """
        if isinstance(position, PositionView):
            side, entry = position.side, position.entry_px
        else:
            if entry_px is None:
                raise TypeError("levels(side, entry_px): entry_px is required with a side")
            side, entry = position, entry_px
        entry = _decimal("entry_px", entry)
        return {"stop_loss": self.stop_loss_price(side, entry), "take_profit": self.take_profit_price(side, entry)}

    def trailing_stop(self, side: Side, entry_px: Decimal, high_water: Decimal | None = None) -> TrailingStop | None:
        """A TrailingStop built from these rules (None when the trailing stop is disabled)."""
        if self.trailing_stop_pct is None:
            return None
        return TrailingStop(side, self.trailing_stop_pct, entry_px, self.trailing_offset_pct, high_water)

    # ---- the decision ----------------------------------------------------------------------

    def _position_levels(self, side: Side, entry: Decimal) -> tuple[Decimal | None, Decimal | None,
                                                                    TrailingStop | None]:
        memo: dict[tuple[str, Decimal], tuple[Decimal | None, Decimal | None, TrailingStop | None]] = \
            self._levels  # type: ignore[attr-defined]
        found = memo.get((side, entry))
        if found is None:
            if len(memo) >= 64:
                memo.clear()
            found = (self.stop_loss_price(side, entry), self.take_profit_price(side, entry),
                     self.trailing_stop(side, entry))
            memo[(side, entry)] = found
        return found

    def check(self, position: PositionView, price: Decimal, now_ms: int) -> ExitDecision | None:
        """Should the position close at `price`? Returns the first rule that fires, by the
        precedence stop_loss > trailing_stop > take_profit, or None.

        `now_ms` is accepted for time-based rules; none of the current rules use it.
        """
        if type(price) is float:
            raise TypeError(f"price must be a Decimal (not float), got {price!r}")
        side = _side(position.side)
        long = side == "long"
        entry = position.entry_px

        stop, target, at_entry = self._position_levels(side, entry)
        if stop is not None and (price <= stop if long else price >= stop):
            return ExitDecision("stop_loss", stop, price)

        if at_entry is not None:
            trigger = at_entry.resumed(position.high_water).update(price)
            if trigger is not None and (price <= trigger if long else price >= trigger):
                return ExitDecision("trailing_stop", trigger, price)

        if target is not None and (price >= target if long else price <= target):
            return ExitDecision("take_profit", target, price)
        return None


def validate_against_liquidation(side: Side, stop_px: Decimal, liquidation_px: Decimal | None) -> bool:
    """True when the stop fires before liquidation: a long's stop above liquidationPx, a short's
    below. A stop at or past liquidation protects nothing. None (no liquidation price, e.g. no
    leverage risk) is fine.
    """
    if liquidation_px is None:
        return True
    if _side(side) == "long":
        return stop_px > liquidation_px
    return stop_px < liquidation_px
