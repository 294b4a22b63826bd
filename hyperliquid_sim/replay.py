"""Recorded trade streams for the simulator's replay: parsing and checking a JSONL recording.

Owns: `ReplayTrade` and `parse_replay` (every bad line is an error naming its line number).
Must not: do I/O (the feed opens the file) or know about the engine.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Iterable


@dataclass(frozen=True)
class ReplayTrade:
    """One line of a recorded trade stream: `{"coin","px","sz","side","time"}` (see parse_replay)."""
    coin: str
    px: Decimal
    size: Decimal
    side: str  # "B" (buyer aggressed) or "A"
    time_ms: int


def parse_replay(lines: Iterable[str], coins: Iterable[str]) -> list[ReplayTrade]:
    """JSONL trades in file order, e.g. `{"coin":"BTC","px":"50010.5","sz":"0.02","side":"B","time":1700000000000}`.

    `px`/`sz` may be strings or numbers; blank lines are skipped. Times must not go backwards:
    the replay keeps the recorded spacing, and a backwards step has no spacing to keep. Any bad
    line is a ValueError naming its line number, so a broken recording fails at start, not midway.
    """
    known = set(coins)
    out: list[ReplayTrade] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            trade = ReplayTrade(str(row["coin"]), Decimal(str(row["px"])), Decimal(str(row["sz"])),
                                str(row["side"]), int(row["time"]))
        except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
            raise ValueError(f"replay line {number}: not a trade ({exc!r})") from exc
        if trade.coin not in known:
            raise ValueError(f"replay line {number}: coin {trade.coin} is not one of {sorted(known)}")
        finite = trade.px.is_finite() and trade.size.is_finite()
        if trade.side not in ("A", "B") or not finite or trade.px <= 0 or trade.size <= 0:
            raise ValueError(f"replay line {number}: side must be A or B and px, sz > 0")
        if out and trade.time_ms < out[-1].time_ms:
            raise ValueError(f"replay line {number}: time goes backwards")
        out.append(trade)
    if not out:
        raise ValueError("replay: no trades")
    return out
