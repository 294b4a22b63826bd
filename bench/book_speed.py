"""Book frames: how many `l2Book` frames per second the bot handles, and what keeping the book costs.

Frames are the simulator's own (20 levels a side, BTC around 50,000, a different book each time),
as the exchange sends them. Figures, each the median (min-max) over the rounds:
- `frames_per_s`: frames through parse_frame (the socket thread's share) and the market keeping
  the book (Quotes.on_l2book, the main thread's share), one after the other on one thread;
- `parse_us_per_frame`: parse_frame alone, per frame;
- `keep_us_per_frame`: Quotes.on_l2book alone (the levels into an order_book.Book), per frame;
- `walk_us`: one paper order walking five levels of such a book (order_book.walk).

    python bench/book_speed.py [--frames N] [--rounds R]

bench/run.py calls `add_to(results)`: the figures go under "book" in bench/results.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hyperliquid_sim.engine import Engine  # noqa: E402
from order_book import Quotes, walk  # noqa: E402
from stream_events import L2Book, parse_frame  # noqa: E402


def frames(count: int) -> list[str]:
    """`count` distinct l2Book frames: the simulator's book at a walking price."""
    engine = Engine(seed=3, start_prices={"BTC": Decimal("50000")})
    out = []
    for i in range(count):
        engine.prices["BTC"] = engine.walk("BTC")
        data = {"coin": "BTC", "time": 1_700_000_000_000 + i * 500, "levels": engine.levels("BTC", 20)}
        out.append(json.dumps({"channel": "l2Book", "data": data}, separators=(",", ":")))
    return out


def summary(values: list[float], digits: int) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def measure(frame_count: int = 2000, rounds: int = 5) -> dict[str, Any]:
    texts = frames(frame_count)
    market = Quotes(time.monotonic)  # a market's quotes, as MarketTrader keeps them
    keep = Quotes.on_l2book
    events = [e for t in texts for e in parse_frame(t, 0).events if type(e) is L2Book]
    assert len(events) == frame_count
    rates, parse_us, keep_us, walk_us = [], [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for text in texts:
            for event in parse_frame(text, time.monotonic_ns()).events:
                keep(market, event)  # type: ignore[arg-type]
        rates.append(frame_count / (time.perf_counter() - start))
        start = time.perf_counter()
        for text in texts:
            parse_frame(text, 0)
        parse_us.append((time.perf_counter() - start) / frame_count * 1e6)
        start = time.perf_counter()
        for event in events:
            keep(market, event)  # type: ignore[arg-type]
        keep_us.append((time.perf_counter() - start) / frame_count * 1e6)
        book = market.book
        size = sum(sz for _px, sz in book.bids[:5]) - Decimal("0.001")  # into the fifth level
        start = time.perf_counter()
        for _ in range(frame_count):
            walk(book, False, size, book.bids[10][0], book.bids[0][0])
        walk_us.append((time.perf_counter() - start) / frame_count * 1e6)
    return {"frames": frame_count, "rounds": rounds, "levels_per_side": 20,
            "frames_per_s": summary(rates, 0), "parse_us_per_frame": summary(parse_us, 1),
            "keep_us_per_frame": summary(keep_us, 2), "walk_us": summary(walk_us, 2)}


def report(figures: dict[str, Any]) -> str:
    def m(key: str) -> str:
        d = figures[key]
        return f"{d['median']} ({d['min']}-{d['max']})"
    return (f"book: {m('frames_per_s')} l2Book frames/s handled (parse + keep, {figures['levels_per_side']} levels "
            f"a side); parse {m('parse_us_per_frame')} us, keeping the book {m('keep_us_per_frame')} us per frame; "
            f"a paper walk of 5 levels {m('walk_us')} us")


def add_to(results: dict[str, Any]) -> None:
    """For bench/run.py: measure, keep the figures under "book", print the one-line summary."""
    results["book"] = measure()
    print(report(results["book"]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    figures = measure(args.frames, args.rounds)
    print(json.dumps(figures, indent=2))
    print(report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
