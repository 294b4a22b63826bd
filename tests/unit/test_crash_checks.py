"""The crash test's checks bite: each pure check of harness/crash.py on small cases,
clean and broken, and the recorder's ideas of "covered by a stop" and "a resting entry" on the
simulator's engine."""
from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from hyperliquid_sim import SimConfig, SimServer
from harness.crash import (ExchangeRecorder, RunRecord, accepted_cloids, cover_violations, entry_placements,
                           entry_violations, journal_violations, maker_figures, order_violations)

S = 1_000_000_000  # ns per second


def xfill(tid: int, sz: str = "0.004", dir_: str = "Open Long", start: str = "0", cloid: str | None = "0xa") -> dict:
    f = {"coin": "BTC", "px": "50000", "sz": sz, "side": "B", "time": tid, "startPosition": start, "dir": dir_,
         "oid": 1000 + tid, "tid": tid}
    if cloid:
        f["cloid"] = cloid
    return f


def jfill(tid: int, sz: str = "0.004", cloid: str | None = "0xa") -> dict:
    return {"tid": str(tid), "coin": "BTC", "px": D("50000"), "size": D(sz), "side": "buy", "time_ms": tid,
            "oid": 1000 + tid, "cloid": cloid, "fee": None, "closed_pnl": None, "paper": False}


@pytest.mark.parametrize("exchange, journal, expected", [
    ([xfill(1), xfill(2)], [jfill(1), jfill(2)], []),
    ([xfill(1), xfill(2)], [jfill(1)], ["(a) exchange fill tid 2"]),
    ([xfill(1)], [jfill(1), jfill(3)], ["(a) journal fill tid 3 unknown"]),
    ([xfill(1)], [jfill(1), jfill(1)], ["(a) fill tid 1 journaled 2 times"]),
    ([xfill(1)], [jfill(1, sz="0.005")], ["(a) fill tid 1: journal"]),
    ([xfill(1)], [jfill(1, cloid=None)], ["(a) fill tid 1: journal"]),
], ids=["same", "lost", "invented", "twice", "wrong size", "wrong cloid"])
def test_journal_check(exchange: list, journal: list, expected: list[str]) -> None:
    got = journal_violations(exchange, journal)
    assert len(got) == len(expected) and all(g.startswith(e) for g, e in zip(got, expected)), got


def request(cloid: str, status: Any) -> dict:
    return {"action": {"type": "order", "orders": [{"a": 0, "c": cloid}]}, "nonce": 1,
            "response": {"type": "order", "data": {"statuses": [status]}}}


@pytest.mark.parametrize("requests, fills, expected, refused", [
    ([request("0x1", {"filled": {}}), request("0x2", {"resting": {"oid": 3}})], [xfill(1)], [], 0),
    ([request("0x1", {"filled": {}}), request("0x1", {"filled": {}})], [], ["(b) cloid 0x1 accepted 2 times"], 0),
    ([request("0x1", {"resting": {"oid": 3}}), request("0x1", {"error": "Duplicate cloid."})], [], [], 1),
    ([request("0x1", {"error": "Order could not immediately match"})] * 2, [], [], 0),
    ([], [xfill(1), xfill(2, dir_="Close Long", start="0.004"), xfill(3, start="0.004")],
     ["(b) fill tid 3 (Open Long"], 0),
], ids=["distinct", "accepted twice", "refused duplicate", "errors", "entry on a position"])
def test_order_check(requests: list, fills: list, expected: list[str], refused: int) -> None:
    accepted, refused_n = accepted_cloids(requests)
    got = order_violations(accepted, fills)
    assert refused_n == refused
    assert len(got) == len(expected) and all(g.startswith(e) for g, e in zip(got, expected)), got


def run(index: int, reconciled_s: float | None, ended_s: float) -> RunRecord:
    return RunRecord(index=index, plan="t", started_ns=0,
                     reconciled_ns=None if reconciled_s is None else int(reconciled_s * S), ended_ns=int(ended_s * S))


@pytest.mark.parametrize("stretches, runs, expected", [
    ([(1.0, 1.01)], [run(0, 0.5, 3.0)], []),                         # entry, stop 10 ms later
    ([(1.0, 5.0)], [run(0, 0.5, 1.2), run(1, None, 3.0), run(2, 4.9, 9.0)], ["(d) run 2 finished"]),
    ([(1.0, 4.8)], [run(0, 0.5, 1.2), run(1, None, 3.0), run(2, 4.9, 9.0)], []),  # covered by run 2's start-up
    ([(1.0, 3.0)], [run(0, 0.5, 9.0)], ["(d) run 0 was up"]),         # a live bot left it naked for 2 s
    ([(1.0, 3.0)], [run(0, 0.5, 1.1)], []),                          # killed 0.1 s in: the next start's job
    ([(1.0, 10.0)], [run(0, 0.5, 1.1)], ["(d) the position is naked"]),
], ids=["short", "spans a reconciliation", "closed before it", "naked under a live bot", "killed", "naked at end"])
def test_cover_check(stretches: list, runs: list[RunRecord], expected: list[str]) -> None:
    ns = [(int(a * S), int(b * S)) for a, b in stretches]
    got = cover_violations(ns, runs, slack_ns=S // 50, limit_ns=S, end_ns=10 * S)
    got = [g.replace(" (t)", "") for g in got]
    assert len(got) == len(expected) and all(g.startswith(e) for g, e in zip(got, expected)), got


def recorded_sim() -> tuple[SimServer, str, ExchangeRecorder]:
    """An engine (not served) with BTC at 50000, a funded user, and the crash test's recorder on it."""
    sim = SimServer(SimConfig(port=0, seed=1, feed=False, start_prices={"BTC": D("50000")}))
    user = "0x" + "ab" * 20
    sim.engine.account(user)
    return sim, user, ExchangeRecorder(sim, user)


def test_recorder_counts_only_a_reduce_only_sl_of_full_size_as_cover() -> None:
    sim, user, rec = recorded_sim()
    try:
        e = sim.engine

        def trigger(cloid: str, size: str, tpsl: str) -> dict:
            return {"a": 0, "b": False, "p": "49900", "s": size, "r": True, "c": cloid,
                    "t": {"trigger": {"isMarket": True, "triggerPx": "49900", "tpsl": tpsl}}}

        e.place(user, {"a": 0, "b": True, "p": "50500", "s": "0.004", "r": False, "c": "0x" + "1" * 32,
                       "t": {"limit": {"tif": "Ioc"}}}, 1)
        assert rec.changes[-1][1:] == (D("0.004"), False)   # entry filled: naked
        e.place(user, trigger("0x" + "2" * 32, "0.004", "tp"), 2)
        e.place(user, trigger("0x" + "3" * 32, "0.002", "sl"), 3)
        assert rec.changes[-1][1:] == (D("0.004"), False)   # a take-profit or a half-size stop is no cover
        e.place(user, trigger("0x" + "4" * 32, "0.004", "sl"), 4)
        assert rec.changes[-1][1:] == (D("0.004"), True)
        e.cancel(user, cloid="0x" + "4" * 32)
        assert rec.changes[-1][1:] == (D("0.004"), False)
        e.print_trade("BTC", D("49800"), 5)                 # the half-size stop fires: 0.002 left, naked
        assert rec.changes[-1][1:] == (D("0.002"), False)
        e.place(user, trigger("0x" + "5" * 32, "0.002", "sl"), 6)
        assert rec.changes[-1][1:] == (D("0.002"), True)
        assert len(rec.naked_stretches(end_ns=rec.changes[-1][0] + 1)) == 2
    finally:
        sim.loop.close()


def started(index: int, started_s: float, reconciled_s: float | None, ended_s: float) -> RunRecord:
    return RunRecord(index=index, plan="t", started_ns=int(started_s * S), ended_ns=int(ended_s * S),
                     reconciled_ns=None if reconciled_s is None else int(reconciled_s * S))


def resting(*at: tuple[float, tuple[str, ...]]) -> list[tuple[int, frozenset[tuple[str, str]]]]:
    """An entry timeline: (time s, cloids resting then); a cloid "e:x" is ETH's, the rest BTC's."""
    return [(int(t * S), frozenset(("ETH", c[2:]) if c.startswith("e:") else ("BTC", c) for c in cloids))
            for t, cloids in at]


TWO_RUNS = [started(0, 0.0, 0.5, 2.0), started(1, 3.0, 3.5, 9.0)]
PLACED = {"0xa": int(1.0 * S), "0xb": int(4.0 * S), "0xc": int(5.0 * S), "0xd": int(4.5 * S)}


@pytest.mark.parametrize("entries, expected", [
    (resting((0, ()), (1.0, ("0xa",)), (1.2, ()), (4.0, ("0xb",)), (5.0, ()), (5.0, ("0xc",))), []),
    (resting((0, ()), (1.0, ("0xa",)), (3.4, ())), []),                      # the start canceled run 0's entry
    (resting((0, ()), (1.0, ("0xa",)), (3.6, ()), (4.0, ("0xb",))), ["(f) run 1 (t) finished start-up"]),
    (resting((0, ()), (1.0, ("0xa",)), (3.4, ()), (4.0, ("0xb",)), (4.5, ("0xb", "0xd")), (4.6, ("0xd",))),
     ["(f) 2 entry orders resting at once in BTC: 0xb (run 1), 0xd (run 1)"]),
    (resting((0, ()), (1.0, ("0xa",)), (4.0, ("0xa", "0xb"))),
     ["(f) 2 entry orders resting at once in BTC: 0xa (run 0), 0xb (run 1)", "(f) run 1 (t) finished start-up"]),
    (resting((0, ()), (4.0, ("0xb", "e:0xc")), (5.0, ())), []),              # one per coin
], ids=["one at a time", "canceled at start", "left past a start", "two from one run", "two from two runs",
        "two coins"])
def test_entry_check(entries: list, expected: list[str]) -> None:
    got = entry_violations(entries, TWO_RUNS, PLACED, slack_ns=S // 50)
    assert len(got) == len(expected) and all(g.startswith(e) for g, e in zip(got, expected)), got


def test_maker_figures_count_what_a_kill_left_resting_and_what_of_it_filled() -> None:
    runs = [started(0, 0.0, 0.5, 2.0), started(1, 3.0, 3.5, 9.0)]
    runs[0].killed_ns = int(1.9 * S)
    entries = resting((0, ()), (1.0, ("0xa",)), (2.5, ()), (4.0, ("0xb",)), (5.0, ()))
    figures = maker_figures(entries, runs, {"0xa": S, "0xb": 4 * S}, [xfill(1, cloid="0xa"), xfill(2, cloid=None)])
    assert (figures.rested, figures.maker_fills, figures.left_by_kill, figures.left_filled, figures.most_resting) == \
        (2, 1, 1, 1, 1)


def test_entry_placements_are_the_post_only_orders_booked_resting_by_their_signed_time() -> None:
    def alo(cloid: str, tif: str = "Alo") -> dict:
        return {"a": 0, "c": cloid, "t": {"limit": {"tif": tif}}}

    def req(nonce_ms: int, wires: list, statuses: list) -> dict:
        return {"action": {"type": "order", "orders": wires}, "nonce": nonce_ms,
                "response": {"type": "order", "data": {"statuses": statuses}}}

    got = entry_placements([
        req(1, [alo("0x1")], [{"resting": {"oid": 5}}]),
        req(2, [alo("0x2")], [{"error": "Post only order would have immediately matched, bbo was 49995"}]),
        req(3, [alo("0x3", "Ioc")], [{"filled": {"totalSz": "0.004", "avgPx": "50000", "oid": 6}}]),
        {"action": {"type": "order", "orders": [alo("0x4")]}, "nonce": 4, "response": None},  # no answer
    ])
    assert got == {"0x1": 1_000_000}


def test_recorder_counts_the_accounts_resting_limit_orders_as_its_entries() -> None:
    sim, user, rec = recorded_sim()
    try:
        e = sim.engine

        def limit(cloid: str, px: str, tif: str, is_buy: bool = True, reduce_only: bool = False) -> dict:
            return {"a": 0, "b": is_buy, "p": px, "s": "0.004", "r": reduce_only, "c": "0x" + cloid * 32,
                    "t": {"limit": {"tif": tif}}}

        e.place(user, limit("1", "49995", "Alo"), 1)
        assert rec.entries[-1][1] == {("BTC", "0x" + "1" * 32)}
        e.place(user, limit("2", "50500", "Ioc"), 2)          # an IOC entry fills, never rests
        e.place(user, limit("3", "50100", "Alo", is_buy=False, reduce_only=True), 3)  # a resting reduce-only exit
        e.place(user, limit("4", "49990", "Alo"), 4)
        assert rec.entries[-1][1] == {("BTC", "0x" + "1" * 32), ("BTC", "0x" + "4" * 32)}
        e.cancel(user, cloid="0x" + "4" * 32)
        e.print_trade("BTC", D("49990"), 5)                   # the bid at 49995 fills
        assert rec.entries[-1][1] == frozenset()
        assert [len(r) for _t, r in rec.entries] == [0, 1, 2, 1, 0]
    finally:
        sim.loop.close()
