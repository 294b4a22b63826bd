"""The trade journal as a report: round trips rebuilt from the journaled fills, with fees and
funding, per coin and per exit reason, real trading and paper apart (pure; reads the store only).

Owns: `journal_report(store)` and `format_report(report, path)`, what `--report` prints.
Must not: write to the store or ask the exchange (the journal is the bot's own record; the bot
keeps it in step with the exchange while it runs).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Mapping

from state import StateStore

_REASONS = {"sl": "exchange stop-loss", "tp": "exchange take-profit"}


@dataclass(frozen=True)
class RoundTrip:
    coin: str
    side: Literal["long", "short"]
    size: Decimal
    entry_px: Decimal
    exit_px: Decimal
    pnl: Decimal
    fees: Decimal
    opened_ms: int
    closed_ms: int
    exit_reason: str = "outside the bot"


@dataclass(frozen=True)
class Report:
    trades: tuple[RoundTrip, ...]   # every coin's, in the order they closed
    fills: int
    fees: Decimal
    open_sizes: Mapping[str, Decimal]  # signed size still open per coin (coins with none left out)
    funding: Mapping[str, Decimal]  # USDC received (+) or paid (-) per coin

    @property
    def gross_pnl(self) -> Decimal:
        return sum((t.pnl for t in self.trades), Decimal(0))

    @property
    def funding_total(self) -> Decimal:
        return sum(self.funding.values(), Decimal(0))

    @property
    def net_pnl(self) -> Decimal:
        return self.gross_pnl - self.fees + self.funding_total

    @property
    def win_rate(self) -> float | None:
        if not self.trades:
            return None
        return sum(1 for t in self.trades if t.pnl - t.fees > 0) / len(self.trades)


def journal_report(store: StateStore, paper: bool = False) -> Report:
    """Round trips rebuilt from the fill journal (real fills, or `paper` ones), coin by coin: a
    trade opens from flat and closes back to flat. Funding counts for real trading only."""
    fills = [f for f in store.fills() if f["paper"] is paper]
    by_coin: dict[str, list[dict[str, Any]]] = {}
    for f in fills:
        by_coin.setdefault(str(f["coin"]), []).append(f)
    trades: list[RoundTrip] = []
    open_sizes: dict[str, Decimal] = {}
    for coin, coin_fills in by_coin.items():
        coin_trades, open_size = _round_trips(coin_fills, lambda cloid: _exit_reason(store, cloid))
        trades += coin_trades
        if open_size:
            open_sizes[coin] = open_size
    funding: dict[str, Decimal] = {}
    if not paper:
        for payment in store.funding():
            funding[payment["coin"]] = funding.get(payment["coin"], Decimal(0)) + payment["usdc"]
    total_fees = sum((f["fee"] or Decimal(0) for f in fills), Decimal(0))
    return Report(trades=tuple(sorted(trades, key=lambda t: t.closed_ms)), fills=len(fills), fees=total_fees,
                  open_sizes=open_sizes, funding=funding)


def _exit_reason(store: StateStore, cloid: str | None) -> str:
    record = store.order(cloid) if cloid else None
    if record is None:
        return "outside the bot"
    if record.purpose == "exit":
        return record.reason if record.reason and record.status == "filled" else "exit"
    return _REASONS.get(record.purpose, record.purpose)


def _round_trips(fills: list[dict[str, Any]], reason_of: Any) -> tuple[list[RoundTrip], Decimal]:
    """One coin's fills, in time order -> its closed round trips and the signed size still open."""
    trades: list[RoundTrip] = []
    position = Decimal(0)
    cost = Decimal(0)      # signed size * price of the open part
    pnl = fees = exit_value = exit_size = Decimal(0)
    opened_ms = 0
    for f in fills:
        size = f["size"] if f["side"] == "buy" else -f["size"]
        px, fee = f["px"], f["fee"] or Decimal(0)
        if position == 0:
            opened_ms, cost, pnl, fees, exit_value, exit_size = f["time_ms"], Decimal(0), Decimal(0), Decimal(0), Decimal(0), Decimal(0)
        fees += fee
        if position == 0 or (position > 0) == (size > 0):
            position += size
            cost += size * px
            continue
        closing = min(abs(size), abs(position))
        avg = cost / position
        sign = 1 if position > 0 else -1
        pnl += (px - avg) * closing * sign
        exit_value += px * closing
        exit_size += closing
        position += sign * -closing
        cost = avg * position
        if position == 0:
            trades.append(RoundTrip(coin=f["coin"], side="long" if sign > 0 else "short", size=exit_size,
                                    entry_px=avg, exit_px=exit_value / exit_size, pnl=pnl, fees=fees,
                                    opened_ms=opened_ms, closed_ms=f["time_ms"], exit_reason=reason_of(f["cloid"])))
            rest = abs(size) - closing
            if rest > 0:  # the fill flipped the position: the remainder opens a new trade
                position = rest if size > 0 else -rest
                cost = position * px
                opened_ms, pnl, fees, exit_value, exit_size = f["time_ms"], Decimal(0), Decimal(0), Decimal(0), Decimal(0)
    return trades, position


def format_report(report: Report, title: str = "", max_rows: int | None = None) -> str:
    """The journal as a person reads it: one row per closed trade (the last `max_rows` when given),
    then rows per coin and per exit reason, and the totals (fees and funding included)."""
    lines = [title] if title else []
    lines.append(f"fills journaled: {report.fills}    closed trades: {len(report.trades)}")
    if report.trades:
        shown = report.trades if max_rows is None else report.trades[-max_rows:]
        if len(shown) < len(report.trades):
            lines.append(f"(the last {len(shown)} trades; {len(report.trades) - len(shown)} before them not shown)")
        lines.append(f"{'closed (UTC)':<20} {'coin':<8} {'side':<6} {'size':>10} {'entry':>12} {'exit':>12} "
                     f"{'pnl':>10} {'fees':>8}  exit")
        for t in shown:
            when = dt.datetime.fromtimestamp(t.closed_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(f"{when:<20} {t.coin:<8} {t.side:<6} {t.size:>10} {t.entry_px:>12.2f} {t.exit_px:>12.2f} "
                         f"{t.pnl:>10.2f} {t.fees:>8.4f}  {t.exit_reason}")
        rate = report.win_rate
        lines.append(f"win rate: {rate * 100:.1f}%" if rate is not None else "win rate: n/a")
        lines += _rows("per coin", report, lambda t: t.coin)
        lines += _rows("per exit reason", report, lambda t: t.exit_reason)
    lines.append(f"gross pnl: {report.gross_pnl:.2f}  fees: {report.fees:.4f}  funding: {report.funding_total:.4f}  "
                 f"net pnl: {report.net_pnl:.2f}")
    for coin, usdc in sorted(report.funding.items()):
        lines.append(f"funding {coin}: {usdc:.4f}")
    for coin, size in sorted(report.open_sizes.items()):
        lines.append(f"open position from fills: {coin} {size}")
    return "\n".join(lines)


def _rows(what: str, report: Report, key: Any) -> list[str]:
    groups: dict[str, list[RoundTrip]] = {}
    for t in report.trades:
        groups.setdefault(key(t), []).append(t)
    lines = [f"{what}:"]
    for name, trades in sorted(groups.items()):
        net = sum((t.pnl - t.fees for t in trades), Decimal(0))
        if what == "per coin":
            net += report.funding.get(name, Decimal(0))
        lines.append(f"  {name}: {len(trades)} trades, net pnl {net:.2f}")
    return lines
