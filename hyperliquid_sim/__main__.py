"""`python -m hyperliquid_sim --host 127.0.0.1 --port 8765 [--seed N] [--chain testnet|mainnet] [--replay FILE...]`.

`--port 0` picks a free port; the log line `simulator listening on http://HOST:PORT` names it.
SIGINT or SIGTERM stops it and exits 0; a bad replay file exits 2 before listening.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from decimal import Decimal

from .server import SimConfig, SimServer


def test_coins(count: int) -> dict[str, tuple[int, int, Decimal]]:
    """`--extra-coins N`: TEST1..TESTN, each (szDecimals 2, maxLeverage 20, start price 100)."""
    return {f"TEST{i}": (2, 20, Decimal(100)) for i in range(1, count + 1)}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m hyperliquid_sim", description="local Hyperliquid simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--chain", choices=("testnet", "mainnet"), default="testnet")
    p.add_argument("--trade-rate", type=float, default=5.0, help="random-walk trades per second (0: none)")
    p.add_argument("--volatility", type=float, default=0.0005, help="per-trade relative sigma")
    p.add_argument("--initial-usdc", type=Decimal, default=Decimal("10000"))
    p.add_argument("--extra-coins", type=int, default=0, metavar="N",
                   help="N test coins TEST1..TESTN after BTC ETH SOL (szDecimals 2, maxLeverage 20, price 100)")
    p.add_argument("--replay", metavar="FILE", nargs="+",
                   help='JSONL trades {"coin","px","sz","side","time"}, or the bot\'s recorded frames '
                        "(record.dir files frames-*.jsonl.gz, one or more), to replay instead of the random walk")
    p.add_argument("--replay-speed", type=float, default=1.0, help="2 replays twice as fast (default 1)")
    p.add_argument("--book-depth-usd", type=Decimal, default=Decimal("100000"),
                   help="seeded notional at the book's touch; deeper levels hold more (default 100000)")
    args = p.parse_args()
    if args.replay_speed <= 0:
        p.error("--replay-speed must be > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sim = SimServer(SimConfig(host=args.host, port=args.port, seed=args.seed, chain=args.chain,
                              trade_rate_hz=args.trade_rate, volatility=args.volatility,
                              initial_usdc=args.initial_usdc,
                              replay_path=tuple(args.replay) if args.replay else None,
                              extra_coins=test_coins(args.extra_coins),
                              replay_speed=args.replay_speed, book_depth_usd=args.book_depth_usd))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        sim.start()
    except (OSError, ValueError) as exc:
        print(f"hyperliquid_sim: {exc}", file=sys.stderr)
        sys.exit(2)
    stop.wait()
    sim.stop()
    logging.getLogger("sim").info("simulator stopped")


if __name__ == "__main__":
    main()
