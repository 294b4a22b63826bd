"""Backtest speed: recorded trade frames replayed through the bot's trading code per second of wall time.

A seeded recording in the `record.dir` format is written first (one-trade `trades` frames shaped as
the exchange sends them, `hash` and `users` included, 10-200 ms apart, a random walk; with
`--bbo`, a `bbo` frame after each, as the bot's own recordings have), then `backtest.run` reads it
R times per strategy: `ema_cross` (the bot's default, mostly flat) and `always_long` (in a
position nearly all the time: the exit rules on every price). Printed per strategy: trade frames
per second of wall time and CPU microseconds per frame, median (min-max); PASS/FAIL against the
target of 100,000 trade frames/s.

    python bench/backtest_speed.py [--frames N] [--runs R] [--bbo]

(Its own file: bench/run.py is `make bench`'s, edited elsewhere; this one can join it as one call.)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300_000, help="trade frames in the recording")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bbo", action="store_true", help="a bbo frame after every trades frame")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the trading code's warnings (refused entries) are not the figure
    strategies = {"ema_cross": {"name": "ema_cross", "params": {"fast": 9, "slow": 21}},
                  "always_long": {"name": "always_long"}}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "frames-20260101-00.jsonl.gz"
        write_recording(path, args.frames, args.bbo)
        print(f"recording: {args.frames} trade frames{' + as many bbo frames' if args.bbo else ''}, "
              f"{path.stat().st_size / 1e6:.1f} MB gzip")
        verdicts = []
        for name, strategy in strategies.items():
            settings = settings_for(strategy)
            rates, cpu_us = [], []
            trades = 0
            for _ in range(args.runs):
                cpu0, wall0 = time.process_time(), time.perf_counter()
                result = backtest.run(settings, [path])
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                rates.append(result.trade_frames / wall)
                cpu_us.append(cpu / result.frames * 1e6)
                trades = len(result.report.trades)
            rate = statistics.median(rates)
            print(f"{name:12s} {rate:>9,.0f} trade frames/s ({min(rates):,.0f}-{max(rates):,.0f}); "
                  f"CPU {statistics.median(cpu_us):.2f} us/frame ({min(cpu_us):.2f}-{max(cpu_us):.2f}); "
                  f"{trades} round trips")
            verdicts.append((name, rate))
        for name, rate in verdicts:
            verdict = "PASS" if rate >= TARGET_FRAMES_PER_S else "FAIL"
            print(f"{verdict} backtest {name} >= {TARGET_FRAMES_PER_S:,} trade frames/s of wall time")


if __name__ == "__main__":
    main()
