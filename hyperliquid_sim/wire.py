"""Wire shapes and texts that more than one of the simulator's parts sends.

Owns: the candle interval names, the 422 text of both HTTP endpoints, compact JSON, and the
market-data views of the engine: the l2 book (the levels takers walk: book.py), the best bid and
offer (its touch, so the two always agree), all mids.
Must not: change the engine or send anything; callers put these on the wire.
"""
from __future__ import annotations

import json
from typing import Any

from .engine import Engine

INTERVALS_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
                "2h": 7_200_000, "4h": 14_400_000, "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000,
                "3d": 259_200_000, "1w": 604_800_000, "1M": 2_592_000_000}
DESERIALIZE_ERROR = "Failed to deserialize the JSON body into the target type"

Level = dict[str, Any]  # {"px": "50005", "sz": "0.1", "n": 1}


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def book(engine: Engine, coin: str, depth: int = 20) -> list[list[Level]]:
    """`[bids, asks]`, best first: users' resting orders and the seeded levels (engine.levels)."""
    return engine.levels(coin, depth)


def bbo(engine: Engine, coin: str) -> tuple[Level | None, Level | None]:
    """The touch of the same book; None for an empty side (as the exchange sends it)."""
    bids, asks = engine.levels(coin, 1)
    return (bids[0] if bids else None), (asks[0] if asks else None)


def mids(engine: Engine) -> dict[str, str]:
    return {c: str(p) for c, p in engine.prices.items()}
