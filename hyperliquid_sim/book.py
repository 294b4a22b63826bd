"""The simulator's order book per coin: seeded liquidity around the price plus users' resting orders.

Owns: the seeded levels (level i sits i+1 half-spreads from the price; its size is a seeded share
of `depth_usd` that grows away from the touch), what takers have taken from them since the coin's
last print (a print moves the price and so renews them), merging them with users' resting limit
orders into best-first offers (what a taker meets, and what l2Book and bbo show), and the wire
levels `[bids, asks]` with `{"px","sz","n"}`.
Must not: fill orders or change accounts (engine.py does, walking these offers), or do I/O.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable, Protocol

from signing import round_price

HALF_SPREAD = Decimal("0.0001")  # the seeded touch sits 1 bp either side of the price
SEEDED_LEVELS = 20               # per side, as many as the exchange's l2Book sends
# Seeded notional at the touch: $100,000 (2 BTC at 50,000), so the sizes tests and bots use
# fill in full at the touch; deeper levels hold more (1 + i/2 times, with seeded jitter).
DEFAULT_DEPTH_USD = Decimal("100000")


class RestingOrder(Protocol):
    user: str
    coin: str
    is_buy: bool
    px: Decimal
    size: Decimal
    trigger_px: Decimal | None


@dataclass
class Offer:
    """One thing a taker can hit, best first: a seeded level (`order` None) or a user's order."""
    px: Decimal
    size: Decimal
    order: Any = None  # engine.Order


class SeededBook:
    """The seeded liquidity of every coin; deterministic for a seed."""

    def __init__(self, seed: int, coins: Iterable[str], depth_usd: Decimal = DEFAULT_DEPTH_USD) -> None:
        rng = random.Random(seed * 1_000_003 + 17)  # its own stream: the price walk stays as it was
        self.depth_usd = Decimal(depth_usd)
        # coin -> (bid shares, ask shares): level i's share of depth_usd
        self._shares = {c: tuple(tuple(Decimal(1 + i / 2 * rng.uniform(0.8, 1.2)).quantize(Decimal("0.001"))
                                       for i in range(SEEDED_LEVELS)) for _side in (0, 1)) for c in coins}
        self._taken: dict[str, dict[tuple[bool, Decimal], Decimal]] = {c: {} for c in coins}

    def renew(self, coin: str) -> None:
        """A print moved the price: the seeded levels are whole again around it."""
        self._taken[coin].clear()

    def take(self, coin: str, is_bid: bool, px: Decimal, size: Decimal) -> None:
        key = (is_bid, px)
        taken = self._taken[coin]
        taken[key] = taken.get(key, Decimal(0)) + size

    def levels(self, coin: str, mark: Decimal, sz_decimals: int, is_bid: bool) -> list[Offer]:
        """The seeded side, best first, less what takers took; one offer per distinct price."""
        shares = self._shares[coin][0 if is_bid else 1]
        taken = self._taken[coin]
        tick = mark * HALF_SPREAD
        unit = Decimal(1).scaleb(-sz_decimals)
        out: list[Offer] = []
        for i, share in enumerate(shares):
            px = round_price(mark - tick * (i + 1) if is_bid else mark + tick * (i + 1), sz_decimals)
            size = plain((self.depth_usd * share / mark).quantize(unit)) or unit
            if out and out[-1].px == px:  # a cheap coin's adjacent levels may round to one price
                out[-1].size += size
                continue
            out.append(Offer(px, size))
        for offer in out:
            offer.size -= taken.get((is_bid, offer.px), Decimal(0))
        return [o for o in out if o.size > 0]


def plain(value: Decimal) -> Decimal:
    """Without trailing zeros and never in exponent form: "2", not "2.00000" or "2E+1"."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


def offers(seeded: SeededBook, resting: Iterable[RestingOrder], coin: str, mark: Decimal, sz_decimals: int,
           is_bid: bool, skip_user: str | None = None) -> list[Offer]:
    """One side of the book best first: users' resting limit orders (before seeded liquidity at
    one price: they were there first) and the seeded levels. Seeded levels through the other
    side's best user order are left out, so the book never crosses. `skip_user`'s orders are
    left out too: a taker does not trade with itself."""
    mine = [Offer(o.px, o.size, o) for o in resting
            if o.coin == coin and o.trigger_px is None and o.is_buy == is_bid and o.user != skip_user and o.size > 0]
    facing = [o.px for o in resting if o.coin == coin and o.trigger_px is None and o.is_buy != is_bid]
    seeded = seeded.levels(coin, mark, sz_decimals, is_bid)
    if facing:
        wall = min(facing) if is_bid else max(facing)  # the other side's best user order
        seeded = [s for s in seeded if (s.px < wall if is_bid else s.px > wall)]
    merged = mine + seeded
    # stable sort: at one price the user orders (listed first) stay ahead of the seeded level
    merged.sort(key=lambda o: -o.px if is_bid else o.px)
    return merged


def wire_levels(side: list[Offer], depth: int) -> list[dict[str, Any]]:
    """Offers aggregated by price as l2Book levels: `{"px","sz","n"}`, `n` counting the orders
    (a seeded level counts as one)."""
    out: list[dict[str, Any]] = []
    last_px: Decimal | None = None
    for offer in side:
        if offer.px == last_px:
            level = out[-1]
            level["sz"] += offer.size
            level["n"] += 1
            continue
        if len(out) == depth:
            break
        out.append({"px": offer.px, "sz": offer.size, "n": 1})
        last_px = offer.px
    return [{"px": str(lv["px"]), "sz": str(plain(lv["sz"])), "n": lv["n"]} for lv in out]
