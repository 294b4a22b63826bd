"""Tick-to-order and the /exchange round trip of one source tree, for A/B comparisons between commits.

    python bench/ab_orders.py TREE     # e.g. a `git worktree add /tmp/old <commit>` and this checkout, alternately

Runs `bench/run.py`'s `bench_tick_to_order` and `bench_exchange_round_trip` from TREE against a fresh
simulator process of that tree (BENCH_ORDERS exits, default 20) and prints one line. Run the trees in
alternating rounds: this machine's noise is larger than most differences.
"""
from __future__ import annotations

import logging
import os
import sys

tree = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
sys.path[:0] = [tree, os.path.join(tree, "bench")]
os.chdir(tree)
logging.basicConfig(level=logging.ERROR)

import run  # noqa: E402 - the tree's own bench/run.py

sim = run.SimProcess()
try:
    tick = run.bench_tick_to_order(sim)
    exchange = run.bench_exchange_round_trip(sim)
    print(f"{tree}: tick-to-order p50 {tick['p50_ms']:.3f} ms, p99 {tick['p99_ms']:.3f} ms; "
          f"/exchange round trip {exchange['exchange_round_trip_ms']['median']:.3f} ms")
finally:
    sim.stop()
