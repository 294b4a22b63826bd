"""Backtest speed: recorded trade frames replayed through the bot's trading code per second of wall time.

A seeded recording in the `record.dir` format is written first (one-trade `trades` frames shaped as
the exchange sends them, `hash` and `users` included, 10-200 ms apart, a random walk; with
`--bbo`, a `bbo` frame after each, as the bot's own recordings have), then `backtest.run` reads it
R times per strategy: `ema_cross` (the bot's default, mostly flat) and `always_long` (in a
position nearly all the time: the exit rules on every price). Printed per strategy: trade frames
per second of wall time and CPU microseconds per frame, median (min-max); PASS/FAIL against the
target of 100,000 trade frames/s.

    python bench/backtest_speed.py [--frames N] [--runs R] [--bbo]

`make bench` (bench/run.py) runs it too, on a 100,000-frame recording, 3 runs (`add_to`).
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

import backtest  # noqa: E402 - after the path: the tree this script sits in
from config_load import settings_from_dict  # noqa: E402
from recording import frame_line  # noqa: E402

TARGET_FRAMES_PER_S = 100_000
T0_NS = 1_767_225_600_000_000_000  # 2026-01-01 00:00 UTC


def write_recording(path: Path, frames: int, bbo: bool, seed: int = 1) -> None:
    rng = random.Random(seed)
    t_ns, px, tid = T0_NS, 50_000.0, 10_000
    ack = {"channel": "subscriptionResponse", "data": {"method": "subscribe",
                                                       "subscription": {"type": "trades", "coin": "BTC"}}}
    with gzip.open(path, "wt", compresslevel=6) as f:
        f.write(frame_line(t_ns, json.dumps(ack)))
        for _ in range(frames):
            t_ns += rng.randint(10, 200) * 1_000_000
            px *= 1 + rng.gauss(0, 0.0004)
            tid += 1
            trade = {"coin": "BTC", "side": rng.choice("AB"), "px": f"{px:.1f}", "sz": f"{rng.randint(1, 5000) / 1e5:.5f}",
                     "hash": "0x" + f"{tid:064x}", "time": t_ns // 1_000_000, "tid": tid,
                     "users": ["0x" + "cd" * 20, "0x" + "ef" * 20]}
            f.write(frame_line(t_ns, json.dumps({"channel": "trades", "data": [trade]})))
            if bbo:
                level = {"px": f"{px - 0.5:.1f}", "sz": "1.2", "n": 3}, {"px": f"{px + 0.5:.1f}", "sz": "0.8", "n": 2}
                f.write(frame_line(t_ns + 50_000, json.dumps({"channel": "bbo", "data": {
                    "coin": "BTC", "time": t_ns // 1_000_000, "bbo": list(level)}})))


def settings_for(strategy: dict) -> object:
    return settings_from_dict({"symbol": "BTC", "websocket": {"enabled": True}, "strategy": strategy,
                               "trading": {"stop_loss_pct": 1.0, "take_profit_pct": 2.0, "trailing_stop_pct": 0.5,
                                           "order_size_usd": 200, "exits_on_exchange": False}})


STRATEGIES = {"ema_cross": {"name": "ema_cross", "params": {"fast": 9, "slow": 21}},
              "always_long": {"name": "always_long"}}


def summary(values: list[float], digits: int) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def measure(frames: int = 300_000, runs: int = 5, bbo: bool = False) -> dict[str, Any]:
    """Per strategy: trade frames per second of wall time, CPU us per frame, round trips."""
    figures: dict[str, Any] = {"frames": frames, "runs": runs, "bbo": bbo, "target_frames_per_s": TARGET_FRAMES_PER_S}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "frames-20260101-00.jsonl.gz"
        write_recording(path, frames, bbo)
        for name, strategy in STRATEGIES.items():
            settings = settings_for(strategy)
            rates, cpu_us = [], []
            trades = 0
            for _ in range(runs):
                cpu0, wall0 = time.process_time(), time.perf_counter()
                result = backtest.run(settings, [path])
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                rates.append(result.trade_frames / wall)
                cpu_us.append(cpu / result.frames * 1e6)
                trades = len(result.report.trades)
            figures[name] = {"trade_frames_per_s": summary(rates, 0), "cpu_us_per_frame": summary(cpu_us, 2),
                             "round_trips": trades}
    return figures


def report(figures: dict[str, Any]) -> list[str]:
    lines = []
    for name in STRATEGIES:
        rate, cpu = figures[name]["trade_frames_per_s"], figures[name]["cpu_us_per_frame"]
        lines.append(f"backtest {name:12s} {rate['median']:>9,.0f} trade frames/s ({rate['min']:,.0f}-{rate['max']:,.0f}); "
                     f"CPU {cpu['median']:.2f} us/frame ({cpu['min']:.2f}-{cpu['max']:.2f}); "
                     f"{figures[name]['round_trips']} round trips")
    return lines


def add_to(results: dict[str, Any], frames: int = 100_000, runs: int = 3) -> None:
    """For bench/run.py: measure, keep the figures under "backtest", print the summary."""
    logging.getLogger().setLevel(logging.ERROR)  # the trading code's warnings are not the figure
    results["backtest"] = measure(frames, runs)
    for line in report(results["backtest"]):
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300_000, help="trade frames in the recording")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bbo", action="store_true", help="a bbo frame after every trades frame")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the trading code's warnings (refused entries) are not the figure
    figures = measure(args.frames, args.runs, args.bbo)
    print(f"recording: {args.frames} trade frames{' + as many bbo frames' if args.bbo else ''}")
    for line in report(figures):
        print(line)
    for name in STRATEGIES:
        rate = figures[name]["trade_frames_per_s"]["median"]
        verdict = "PASS" if rate >= TARGET_FRAMES_PER_S else "FAIL"
        print(f"{verdict} backtest {name} >= {TARGET_FRAMES_PER_S:,} trade frames/s of wall time")


if __name__ == "__main__":
    main()
