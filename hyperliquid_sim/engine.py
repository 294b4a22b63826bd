"""The simulator's exchange model (pure, synchronous; no sockets): prices, accounts, matching.

Owns: a seeded random-walk price per coin, accounts (USDC, positions
with entry price, leverage, margin and unrealized PnL), orders (IOC/GTC/ALO limits, reduce-only,
cloids, trigger TP/SL on the last price), takers walking the book (book.py: seeded levels and users'
resting orders; several fills, the average price, an IOC's rest canceled, makers' fills kept for the
server to send), fills with fees and unique trade ids, nonce rules, and the trade history every
print lands in (candles.py keeps it and builds candles from it; replay.py parses recordings).
Must not: do I/O. The server's parts read files and turn these results into wire frames.
"""
from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from signing import is_valid_price, is_valid_size, round_price

from .book import HALF_SPREAD, DEFAULT_DEPTH_USD, Offer, SeededBook, offers, plain, wire_levels  # noqa: F401
from .candles import TradeHistory
from .replay import ReplayTrade, parse_replay  # noqa: F401 - re-exported: the feed reads recordings

TAKER_FEE = Decimal("0.00045")
MAKER_FEE = Decimal("0.00015")
MIN_NOTIONAL = Decimal("10")
BACKFILL_MINUTES = 200  # of seeded prints before the first live one, for candle warm-up

# name -> (szDecimals, maxLeverage, start price)
DEFAULT_COINS: dict[str, tuple[int, int, Decimal]] = {
    "BTC": (5, 50, Decimal("50000")), "ETH": (4, 50, Decimal("3000")), "SOL": (2, 20, Decimal("150")),
}


@dataclass
class Order:
    oid: int
    user: str
    coin: str
    is_buy: bool
    px: Decimal
    size: Decimal
    orig_size: Decimal
    reduce_only: bool
    tif: str | None
    trigger_px: Decimal | None
    tpsl: str | None
    is_market: bool
    cloid: str | None
    timestamp: int
    status: str = "open"
    status_time: int = 0

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"coin": self.coin, "side": "B" if self.is_buy else "A", "limitPx": str(self.px),
                               "sz": str(self.size), "oid": self.oid, "timestamp": self.timestamp,
                               "origSz": str(self.orig_size)}
        if self.cloid:
            out["cloid"] = self.cloid
        return out


@dataclass
class Account:
    usdc: Decimal
    positions: dict[str, list[Decimal]] = field(default_factory=dict)  # coin -> [szi, entry_px]
    leverage: dict[str, tuple[int, bool]] = field(default_factory=dict)
    fills: list[dict[str, Any]] = field(default_factory=list)
    fundings: list[dict[str, Any]] = field(default_factory=list)  # `userFunding` entries, oldest first (funding.py)


class Engine:
    def __init__(self, seed: int, coins: dict[str, tuple[int, int, Decimal]] | None = None,
                 start_prices: dict[str, Decimal] | None = None, volatility: float = 0.0005,
                 initial_usdc: Decimal = Decimal("10000"), depth_usd: Decimal = DEFAULT_DEPTH_USD) -> None:
        self.rng = random.Random(seed)
        self.coins = dict(coins or DEFAULT_COINS)
        self.names = list(self.coins)
        self.prices = {c: Decimal(str((start_prices or {}).get(c, spec[2]))) for c, spec in self.coins.items()}
        self.volatility = volatility
        self.initial_usdc = initial_usdc
        self.accounts: dict[str, Account] = {}
        self.orders: dict[int, Order] = {}
        self.by_cloid: dict[tuple[str, str], int] = {}
        self.nonce_sets: dict[str, list[int]] = {}  # per signer: an agent has its own, apart from its master's
        self.history = TradeHistory(self.coins)
        self.seeded = SeededBook(seed, self.coins, depth_usd)
        self.maker_events: list[tuple[str, list[dict], list[dict]]] = []  # drained by the server after an order
        now_ms = time.time_ns() // 1_000_000
        for coin, (sz_dec, _lev, _px) in self.coins.items():
            self.history.backfill(coin, self.prices[coin], sz_dec, self.rng, volatility * 3, now_ms, BACKFILL_MINUTES)
        self._done: dict[int, Order] = {}  # filled/canceled orders, for orderStatus
        self._oids = itertools.count(1000)
        self._tids = itertools.count(10**9)

    # ---- prices ----

    def account(self, user: str) -> Account:
        if user not in self.accounts:
            self.accounts[user] = Account(self.initial_usdc)
        return self.accounts[user]

    def next_tid(self) -> int:
        """A trade id no print or fill has used, for trades sent around the engine."""
        return next(self._tids)

    def walk(self, coin: str) -> Decimal:
        sz_dec = self.coins[coin][0]
        step = Decimal(str(self.rng.gauss(0, self.volatility)))
        return round_price(self.prices[coin] * (1 + step), sz_dec)

    def print_trade(self, coin: str, px: Decimal, now_ms: int, size: Decimal | None = None,
                    side: str | None = None) -> tuple[dict[str, Any], list[tuple[str, list[dict], list[dict]]]]:
        """A market trade at px: moves the price, fills crossed resting and trigger orders.

        Returns the trade dict and, per affected user, (user, fills, order updates)."""
        self.prices[coin] = px
        self.seeded.renew(coin)
        sz_dec = self.coins[coin][0]
        if size is None:
            size = Decimal(str(round(self.rng.uniform(0.001, 0.5), sz_dec))) or Decimal(1).scaleb(-sz_dec)
        tid = next(self._tids)
        trade = {"coin": coin, "side": side or self.rng.choice("AB"), "px": str(px), "sz": str(size),
                 "hash": "0x" + format(tid, "064x"), "time": now_ms, "tid": tid,
                 "users": ["0x" + "0" * 40, "0x" + "0" * 40]}
        self.history.record(coin, px, size, now_ms)
        return trade, self._cross_resting(coin, px, now_ms)

    def _cross_resting(self, coin: str, px: Decimal, now_ms: int) -> list[tuple[str, list[dict], list[dict]]]:
        touched: dict[str, tuple[list[dict], list[dict]]] = {}
        for order in list(self.orders.values()):
            if order.coin != coin or order.status != "open":
                continue
            if order.trigger_px is not None:
                # a stop buys when the price rises to it and sells when it falls; take-profit the reverse
                if order.tpsl == "sl":
                    hit = px >= order.trigger_px if order.is_buy else px <= order.trigger_px
                else:
                    hit = px <= order.trigger_px if order.is_buy else px >= order.trigger_px
                if not hit:
                    continue
                limit = px * (Decimal("1.1") if order.is_buy else Decimal("0.9")) if order.is_market else order.px
                fills, updates = touched.setdefault(order.user, ([], []))
                order.status, order.status_time = "triggered", now_ms
                updates.append(self._update(order))
                fill_px = px if (order.is_buy and px <= limit) or (not order.is_buy and px >= limit) else None
                fill = self._fill(order, fill_px, order.size, now_ms, crossed=True) if fill_px is not None else None
                if fill:
                    fills.append(fill)
                # A reduce-only trigger with no position left to reduce is canceled, as the exchange
                # says it: "filled" with no fill would be a fill that never happened.
                order.status = "filled" if fill else "reduceOnlyCanceled" if fill_px is not None else "canceled"
                updates.append(self._update(order))
                del self.orders[order.oid]
                self._done[order.oid] = order
                continue
            if (order.is_buy and px <= order.px) or (not order.is_buy and px >= order.px):
                fills, updates = touched.setdefault(order.user, ([], []))
                fill = self._fill(order, order.px, order.size, now_ms, crossed=False)
                if fill:
                    fills.append(fill)
                order.status, order.status_time = "filled", now_ms
                updates.append(self._update(order))
                del self.orders[order.oid]
                self._done[order.oid] = order
        return [(user, f, u) for user, (f, u) in touched.items()]

    @staticmethod
    def _update(order: Order) -> dict[str, Any]:
        return {"order": order.wire(), "status": order.status, "statusTimestamp": order.status_time}

    # ---- accounts ----

    def _fill(self, order: Order, px: Decimal, size: Decimal, now_ms: int, crossed: bool) -> dict[str, Any] | None:
        acct = self.account(order.user)
        pos = acct.positions.setdefault(order.coin, [Decimal(0), Decimal(0)])
        szi, entry = pos
        if order.reduce_only:
            if szi == 0 or (szi > 0) == order.is_buy:
                return None
            size = min(size, abs(szi))
        signed = size if order.is_buy else -size
        closed_pnl = Decimal(0)
        if szi != 0 and (szi > 0) != (signed > 0):
            closing = min(abs(signed), abs(szi))
            closed_pnl = (px - entry) * closing * (1 if szi > 0 else -1)
        new = szi + signed
        if new == 0:
            entry = Decimal(0)
        elif szi == 0 or (szi > 0) != (new > 0):
            entry = px
        elif (szi > 0) == (signed > 0):
            entry = (entry * abs(szi) + px * size) / abs(new)
        fee = (px * size * (TAKER_FEE if crossed else MAKER_FEE)).quantize(Decimal("0.000001"))
        acct.usdc += closed_pnl - fee
        pos[0], pos[1] = new, entry
        start = szi
        order.size -= size
        direction = ("Open Long" if order.is_buy else "Open Short") if szi == 0 or (szi > 0) == order.is_buy \
            else ("Close Short" if order.is_buy else "Close Long")
        fill = {"coin": order.coin, "px": str(px), "sz": str(size), "side": "B" if order.is_buy else "A",
                "time": now_ms, "startPosition": str(start), "dir": direction, "closedPnl": str(closed_pnl),
                "hash": "0x" + format(order.oid, "064x"), "oid": order.oid, "crossed": crossed, "fee": str(fee),
                "feeToken": "USDC", "tid": next(self._tids), "twapId": None}
        if order.cloid:
            fill["cloid"] = order.cloid
        acct.fills.append(fill)
        return fill

    def margin_used(self, user: str) -> Decimal:
        acct = self.account(user)
        total = Decimal(0)
        for coin, (szi, _entry) in acct.positions.items():
            lev = acct.leverage.get(coin, (20, True))[0]
            total += abs(szi) * self.prices[coin] / lev
        return total

    def account_value(self, user: str) -> Decimal:
        acct = self.account(user)
        upnl = sum(((self.prices[c] - e) * s for c, (s, e) in acct.positions.items() if s), Decimal(0))
        return acct.usdc + upnl

    def check_nonce(self, signer: str, nonce: int, now_ms: int) -> str | None:
        """Keep the signer's 100 highest nonces; refuse one outside the time window, reused, or too low."""
        nonces = self.nonce_sets.setdefault(signer, [])
        if not now_ms - 2 * 86_400_000 < nonce < now_ms + 86_400_000:
            return f"Invalid nonce: nonce {nonce} is outside the allowed time window"
        if nonce in nonces or (len(nonces) >= 100 and nonce <= nonces[0]):
            return f"Invalid nonce: duplicate nonce {nonce}" if nonce in nonces else \
                f"Invalid nonce: nonce {nonce} is too low"
        nonces.append(nonce)
        nonces.sort()
        del nonces[:-100]
        return None

    # ---- actions ----

    def place(self, user: str, wire: dict[str, Any], now_ms: int) -> tuple[dict[str, Any], list[dict], list[dict]]:
        """One order wire -> (status, fills, order updates)."""
        try:
            coin = self.names[int(wire["a"])]
        except (IndexError, KeyError, ValueError, TypeError):
            return {"error": "Invalid asset."}, [], []
        sz_dec = self.coins[coin][0]
        px, size = Decimal(str(wire["p"])), Decimal(str(wire["s"]))
        if not is_valid_price(px, sz_dec):
            return {"error": "Order has invalid price."}, [], []
        if not is_valid_size(size, sz_dec):
            return {"error": "Order has invalid size."}, [], []
        cloid = wire.get("c")
        if cloid and (user, cloid) in self.by_cloid:
            return {"error": "Duplicate cloid."}, [], []
        t = wire["t"]
        trigger = t.get("trigger")
        order = Order(oid=next(self._oids), user=user, coin=coin, is_buy=bool(wire["b"]), px=px, size=size,
                      orig_size=size, reduce_only=bool(wire["r"]), tif=(t.get("limit") or {}).get("tif"),
                      trigger_px=Decimal(str(trigger["triggerPx"])) if trigger else None,
                      tpsl=trigger.get("tpsl") if trigger else None,
                      is_market=bool(trigger.get("isMarket")) if trigger else False, cloid=cloid,
                      timestamp=now_ms, status_time=now_ms)
        mark = self.prices[coin]
        if not order.reduce_only and px * size < MIN_NOTIONAL:
            return {"error": "Order must have minimum value of $10."}, [], []
        acct = self.account(user)
        szi = acct.positions.get(coin, [Decimal(0)])[0]
        if order.reduce_only and (szi == 0 or (szi > 0) == order.is_buy):
            return {"error": "Reduce only order would increase position."}, [], []
        if not order.reduce_only:
            lev = acct.leverage.get(coin, (20, True))[0]
            if self.margin_used(user) + mark * size / lev > self.account_value(user):
                return {"error": "Insufficient margin to place order."}, [], []
        if cloid:
            self.by_cloid[(user, cloid)] = order.oid
        if trigger:
            self.orders[order.oid] = order
            return {"resting": {"oid": order.oid}}, [], [self._update(order)]
        side = self.book_side(coin, not order.is_buy, skip_user=user)
        crosses = bool(side) and ((order.is_buy and px >= side[0].px) or (not order.is_buy and px <= side[0].px))
        if order.tif == "Alo" and crosses:
            order.status = "rejected"
            self._done[order.oid] = order
            return {"error": "Post only order would have immediately matched, bbo was " + str(side[0].px)}, [], []
        fills = self._take(order, side, now_ms) if crosses else []
        if crosses and not fills:
            order.status, order.status_time = "canceled", now_ms
            self._done[order.oid] = order
            return {"error": "Reduce only order would increase position."}, [], []
        if fills and (order.size == 0 or order.tif == "Ioc" or order.reduce_only):
            # an IOC's rest (and a reduce-only's beyond the position) is canceled, never rests
            flat = order.reduce_only and self.account(user).positions[coin][0] == 0
            order.status, order.status_time = ("filled" if order.size == 0 or flat else "canceled"), now_ms
            self._done[order.oid] = order
            total = sum((Decimal(f["sz"]) for f in fills), Decimal(0))
            avg = sum((Decimal(f["px"]) * Decimal(f["sz"]) for f in fills), Decimal(0)) / total
            avg_px = fills[0]["px"] if len(fills) == 1 else format(avg.quantize(Decimal("1e-8")).normalize(), "f")
            return ({"filled": {"totalSz": str(plain(total)), "avgPx": avg_px, "oid": order.oid}}, fills,
                    [self._update(order)])
        if order.tif == "Ioc":
            order.status = "canceled"
            self._done[order.oid] = order
            return {"error": "Order could not immediately match against any resting orders."}, [], []
        self.orders[order.oid] = order  # a limit's unfilled part rests (and shows in the book)
        return {"resting": {"oid": order.oid}}, fills, [self._update(order)]

    # ---- the book ----

    def book_side(self, coin: str, is_bid: bool, skip_user: str | None = None) -> list[Offer]:
        """Bids (or asks) best first: users' resting limit orders and the seeded liquidity."""
        return offers(self.seeded, self.orders.values(), coin, self.prices[coin], self.coins[coin][0], is_bid,
                      skip_user)

    def levels(self, coin: str, depth: int = 20) -> list[list[dict[str, Any]]]:
        """The l2Book `levels`: `[bids, asks]`, best first, aggregated by price."""
        return [wire_levels(self.book_side(coin, True), depth), wire_levels(self.book_side(coin, False), depth)]

    def _take(self, order: Order, side: list[Offer], now_ms: int) -> list[dict[str, Any]]:
        """The taker walks `side` up to its limit: one fill per offer it meets, at that offer's
        price; a user's order it meets gets its maker fill (kept in maker_events)."""
        fills: list[dict[str, Any]] = []
        for offer in side:
            if order.size <= 0 or (order.px < offer.px if order.is_buy else order.px > offer.px):
                break
            fill = self._fill(order, offer.px, min(order.size, offer.size), now_ms, crossed=True)
            if fill is None:
                break  # a reduce-only with nothing left to reduce
            fills.append(fill)
            size = Decimal(fill["sz"])
            maker = offer.order
            if maker is None:
                self.seeded.take(order.coin, not order.is_buy, offer.px, size)
                continue
            maker_fill = self._fill(maker, offer.px, size, now_ms, crossed=False)
            if maker.size <= 0:
                maker.status, maker.status_time = "filled", now_ms
                del self.orders[maker.oid]
                self._done[maker.oid] = maker
            self.maker_events.append((maker.user, [maker_fill] if maker_fill else [],
                                      [self._update(maker)] if maker.status == "filled" else []))
        return fills

    def take_maker_events(self) -> list[tuple[str, list[dict], list[dict]]]:
        """The makers' (user, fills, order updates) of the orders placed since the last call."""
        events, self.maker_events = self.maker_events, []
        return events

    def cancel(self, user: str, oid: int | None = None, cloid: str | None = None,
               now_ms: int = 0) -> str | dict[str, str]:
        """"success", or the exchange's error; the canceled order's update is `_update(order)`."""
        if cloid is not None:
            oid = self.by_cloid.get((user, cloid))
        order = self.orders.get(oid) if oid is not None else None
        if order is None or order.user != user:
            return {"error": "Order was never placed, already canceled, or filled."}
        order.status, order.status_time = "canceled", now_ms or order.status_time
        del self.orders[order.oid]
        self._done[order.oid] = order
        return "success"

    def order_status(self, user: str, ref: int | str) -> dict[str, Any]:
        oid = self.by_cloid.get((user, ref)) if isinstance(ref, str) else ref
        order = self.orders.get(oid) or self._done.get(oid) if oid is not None else None
        if order is None or order.user != user:
            return {"status": "unknownOid"}
        return {"status": "order", "order": {"order": order.wire(), "status": order.status,
                                             "statusTimestamp": order.status_time}}
