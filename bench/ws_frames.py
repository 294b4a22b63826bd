"""Per-frame cost of HyperliquidWebSocketClient: N trade frames through its frame handling.

The fake exchange of harness/fake_ws.py runs in a child process (so it takes no GIL from
the client), sends N one-trade `trades` frames as fast as it can, and the main thread drains the
client's queue as the bot would. Figures per burst: the socket thread's CPU time per frame (its
own clock, `pthread_getcpuclockid`) and frames/s from the burst request to the last Trade on the
queue. Printed: the median (min-max) over the bursts.

    python bench/ws_frames.py [--root DIR] [--frames N] [--bursts R] [--record DIR]

`--root` picks the code to measure (a checkout of another revision), default this one; `--record`
turns recording on (record.dir), to see what it costs the socket thread.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
NAME = "bench-ws"


def serve(conn: Any) -> None:
    """Child process: a FakeExchange answering ("burst", n) with n trade frames, then "done"."""
    sys.path.insert(0, str(HERE))
    from harness.fake_ws import FakeExchange

    server = FakeExchange().start()
    conn.send(server.url)
    tid = 0
    while True:
        cmd, n = conn.recv()
        if cmd == "stop":
            break
        frames = []
        for _ in range(n):
            tid += 1
            frames.append(json.dumps({"channel": "trades", "data": [
                {"coin": "BTC", "side": "B" if tid % 2 else "A", "px": f"{50000 + tid % 100}.5", "sz": "0.0123",
                 "hash": "0x" + "ab" * 32, "time": 1700000000000 + tid, "tid": tid}]}))

        async def go() -> None:
            for ws in list(server.clients):
                for frame in frames:
                    await ws.send_str(frame)
        server._call(go())
        conn.send("done")
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=str(HERE))
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--bursts", type=int, default=7)
    parser.add_argument("--record", metavar="DIR", help="record every frame to DIR (record.dir; this tree's recorder)")
    args = parser.parse_args()
    sys.path.insert(0, args.root)
    from hyperliquid_websocket import HyperliquidWebSocketClient
    from stream_events import Trade
    options: dict[str, Any] = {}
    if args.record:
        from recorder import FrameRecorder
        options["recorder"] = recorder = FrameRecorder(args.record)

    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    child = ctx.Process(target=serve, args=(there,), daemon=True)
    child.start()
    url = here.recv()
    q: queue.Queue = queue.Queue(args.frames + 1000)
    client = HyperliquidWebSocketClient(url, [{"type": "trades", "coin": "BTC"}], q, name=NAME, **options)
    client.start()
    deadline = time.monotonic() + 10
    while client.stats().subscriptions_confirmed != 1:
        assert time.monotonic() < deadline, "no subscription ack"
        time.sleep(0.01)
    thread = next(t for t in threading.enumerate() if t.name == NAME)
    cpu_clock = time.pthread_getcpuclockid(thread.ident)  # type: ignore[arg-type]

    def burst(n: int) -> tuple[float, float]:
        while True:  # start empty
            try:
                q.get_nowait()
            except queue.Empty:
                break
        cpu0, t0 = time.clock_gettime(cpu_clock), time.perf_counter()
        here.send(("burst", n))
        seen = 0
        while seen < n:
            if type(q.get(timeout=30)) is Trade:
                seen += 1
        t1, cpu1 = time.perf_counter(), time.clock_gettime(cpu_clock)
        here.recv()
        return (cpu1 - cpu0) / n * 1e6, n / (t1 - t0)

    burst(2000)  # warm-up: the first frame's replay bookkeeping, caches
    cpu_us, rate = [], []
    for _ in range(args.bursts):
        c, r = burst(args.frames)
        cpu_us.append(c)
        rate.append(r)
    client.stop()
    recorded = ""
    if args.record:
        recorder.stop()
        stats = recorder.stats()
        recorded = f"; recorded {stats.written}, dropped {stats.dropped}, failed {stats.failed}"
    here.send(("stop", 0))
    child.join(5)
    assert client.stats().dropped_market_data == 0

    def fmt(xs: list[float], spec: str) -> str:
        return f"{statistics.median(xs):{spec}} ({min(xs):{spec}}-{max(xs):{spec}})"
    print(f"root={args.root} frames={args.frames} bursts={args.bursts}: socket-thread CPU us/frame "
          f"{fmt(cpu_us, '.2f')}; frames/s {fmt(rate, '.0f')}{recorded}")


if __name__ == "__main__":
    main()
