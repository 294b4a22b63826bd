"""The crash harness: a live bot SIGKILLed again and again against one simulator, then checked.

Owns: running `trading_bot.py` as a subprocess (strategy `always_long`, tight exits, exchange-side
SL/TP on) against a `SimServer` that lives in *this* process and outlives every bot; killing each
bot at a seeded moment; mangling the answers to some runs' orders (a `FaultProxy`, also in this
process, between those bots and the simulator); recording, inside the simulator, every change of
the bot account's position, stop cover and resting entry orders; and the checks that prove nothing
was lost, doubled or left naked.
Used by tests/integration/test_crash.py (short, in `make test`) and bench/crash.py (long).
Must not: change how the bot or the simulator behave (it only wraps the engine to observe it and
to fire a kill at an exact order; the engine's answers are untouched: the proxy mangles an answer
only after the simulator has executed the order, as a bad exchange or network would).

How a run ends (the first six walk a fixed tour of order windows, then a seeded RNG picks):
- `timer`: SIGKILL after a random 0.3–2 s from spawn (often mid start-up or mid reconciliation);
- `in-flight`: SIGKILL from inside the simulator while it handles the run's n-th order, after the
  exchange booked it and before the answer leaves: the bot never learns the order's fate;
- `after-order`: SIGKILL a few ms after the run's n-th order was booked (between an entry fill
  and its stop, between stop and take-profit, before the position is saved, ...).
`in-flight`/`after-order` runs that send no n-th order fall back to a timer.

Answer faults (after the opening six, a fixed tour of three, then about a third of the runs by
the seeded RNG): the run's REST traffic goes through a `FaultProxy` (its WebSocket still goes to
the simulator) that forwards every request, so each order executes, and then answers some of the
run's orders (the n-th order action, or each of a seeded set) badly:
- `STATUS_AFTER 502`: an HTML 502 instead of the exchange's answer;
- `DROP_AFTER`: the connection reset, no answer at all;
- `DRIBBLE`: the real answer, one byte every `dribble_interval_s`: every read gets a byte, so only
  the bot's total deadline (`api.exchange_timeout_s`) cuts it off.
The bot must take each as "unknown" and settle it by cloid; a faulted run gets `fault_extra_s`
more time, so that it may be killed (as above) while the order is in doubt or after it settled.
All runs use short deadlines and expiry (`api_timeout_s`, `order_expires_after_s`) so that an
unknown order settles within a run; the report counts faulted runs and injected answers per kind.

The checks (`CrashRun.check`), after a final clean run (feed paused so nothing can trade once it
stops, SIGTERM once it is quiet):
(a) journal == exchange fills: every fill the simulator booked for the account is in the bot's
    journal exactly once (by `tid`, with the same px, size, side, oid and cloid), and the journal
    holds no fill the simulator does not know;
(b) no order placed twice: no cloid was accepted (resting or filled) by two order requests, and
    no fill opened a position on top of an existing one (an `Open` fill whose `startPosition`
    is not 0 would be an entry sent twice, e.g. after a crash hid the first one);
(c) final position: the simulator's position equals the bot's saved position and the position
    rebuilt from the journal; the saved exchange-side orders are exactly the account's open
    orders (nothing left behind by a killed run to fire on a later position);
(d) stop cover: from the simulator's own timeline of (position, covered), where covered means a
    resting reduce-only `sl` trigger order on the closing side of at least the position's size,
    a naked stretch (position != 0 and not covered) may not span the end of any run's start-up
    reconciliation (the bot's `start-up reconciliation done` log line, `slack_s` either side),
    and while a reconciled bot is alive the position may not stay naked for more than
    `naked_limit_s`. So a position is left without a stop for at most one restart: a stretch
    opened by a kill must be closed by the next bot that gets through start-up.
(e) every killed run died of the SIGKILL (no run exited on its own, no traceback in any log),
    and the final run exited 0 on SIGTERM.
(f) resting entries (`entry_order: post_only`; the simulator's timeline of the account's resting
    non-reduce-only limit orders, which only maker entries are): at most one rests per coin at any
    moment, and none placed by an earlier run still rests `slack_s` after a run's start-up
    reconciliation (a killed run's entry may rest, or fill, while no bot runs: the next start
    must cancel it, or adopt and protect what filled, which (a)-(d) check). A run that placed an
    entry is known by the entry's signed nonce. With IOC entries nothing ever rests: (f) holds
    trivially.

Prices: the seeded walk moves BTC ~6 bp a print, ~20 prints a second. A post-only bid rests 1 bp
under the price, so on that walk nearly every one fills within a few prints, and one left by a
killed run is filled long before the next start could cancel it. `post_only_settings` keeps the
same ~0.27 %/s but in fewer, larger steps (~5 BTC prints a second of ~12 bp): most entries
still fill within a second (a walk's time to cross a line has a long tail), and a fair share of
those left by a kill are still resting when the next start cancels them; the report counts both.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from harness.faultproxy import Fault, FaultProxy
from hyperliquid_sim import SimConfig, SimServer
from signing import L1Signer

ROOT = Path(__file__).resolve().parents[1]

KEY_ENV = "HLBOT_CRASH_TEST_KEY"
TEST_KEY = "0x" + "c0ffee00" * 8  # a fixed throwaway key: the account must survive restarts
COIN = "BTC"
RECONCILED_LINE = "start-up reconciliation done"


@dataclass(frozen=True)
class CrashSettings:
    kills: int = 20
    seed: int = 1
    min_wait_s: float = 0.3
    max_wait_s: float = 2.0
    trade_rate_hz: float = 60.0      # prints per second over the 3 simulated coins (BTC gets ~1/3)
    volatility: float = 0.0006       # per print: ~0.27 %/s on BTC, so 0.2-0.3 % exits fire every run
    stop_loss_pct: str = "0.2"
    take_profit_pct: str = "0.3"
    trailing_stop_pct: str = "0.15"
    exits_on_exchange: bool = True   # False only to see check (d) bite
    slack_s: float = 0.02            # clock/log resolution allowed around a reconciliation moment
    # Longest naked stretch a live, reconciled bot may leave: an entry whose answer never completes
    # is a position the bot learns of only at its exchange deadline (api_timeout_s), then its stop
    # goes out at once. (Sending the stop with the entry, grouping normalTpsl, would close this.)
    naked_limit_s: float = 1.5
    start_timeout_s: float = 20.0    # final run: time allowed to get through start-up
    quiet_s: float = 2.5             # final run: no change for this long before SIGTERM
    fault_share: float = 1 / 3       # share of the RNG-planned runs whose order answers are mangled
    fault_extra_s: float = 3.0       # more time for a faulted run: a lookup settles ~2 s after the answer
    dribble_interval_s: float = 0.05  # DRIBBLE: a byte this often, far below the deadline (the answer takes seconds)
    api_timeout_s: float = 1.0       # api.exchange_timeout_s and api.info_timeout_s of every run
    order_expires_after_s: float = 1.0  # api.order_expires_after_s of every run
    entry_order: str = "ioc"         # trading.entry_order of every run: "ioc" (the bot's default) or "post_only"
    maker_repeg_s: float = 0.5       # post_only: trading.maker_repeg_s (the least the config allows)
    maker_timeout_s: float = 5.0     # post_only: trading.maker_timeout_s


def post_only_settings(**overrides: Any) -> CrashSettings:
    """Post-only entries on a walk of fewer, larger steps (same ~0.27 %/s; see the module's "Prices")."""
    return CrashSettings(**{"entry_order": "post_only", "trade_rate_hz": 15.0, "volatility": 0.0012, **overrides})


# The answer faults, by the name the report gives them (all forward first: the order executes).
FAULTS = {"STATUS_AFTER 502": Fault.STATUS_AFTER, "DROP_AFTER": Fault.DROP_AFTER, "DRIBBLE": Fault.DRIBBLE}
FAULT_KINDS = tuple(FAULTS)


@dataclass(frozen=True)
class AnswerFault:
    """Bad answers to some of a run's orders: `kind` (one of FAULT_KINDS) on the run's order actions
    numbered `orders` (1 = the first order action the run sends)."""

    kind: str
    orders: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.kind} on order {','.join(map(str, self.orders))}"


class OrderNumbers:
    """A FaultProxy `match`: counts a run's order actions as they arrive and accepts the listed ones.
    (Other /exchange actions, like the leverage at start or a cancel, pass and are not counted.)"""

    def __init__(self, orders: tuple[int, ...]) -> None:
        self.orders = frozenset(orders)
        self.seen = 0

    def __call__(self, body: dict[str, Any]) -> bool:
        action = body.get("action")
        if not isinstance(action, dict) or action.get("type") != "order":
            return False
        self.seen += 1
        return self.seen in self.orders


@dataclass(frozen=True)
class RunPlan:
    name: str                       # timer, in-flight, after-order
    wait_s: float                   # SIGKILL this long after spawn, if the order kill has not fired
    nth: int = 0                    # in-flight / after-order: the run's order that fires the kill
    delay_s: float = 0.0            # after-order: how long after it was booked
    fault: AnswerFault | None = None


@dataclass
class RunRecord:
    index: int
    plan: str
    fault: AnswerFault | None = None
    fault_hits: int = 0             # answers the proxy actually mangled in this run
    pid: int = 0
    started_ns: int = 0
    killed_ns: int = 0              # when the harness sent the SIGKILL (first, if twice)
    ended_ns: int = 0
    reconciled_ns: int | None = None
    returncode: int | None = None
    exited_by_itself: bool = False
    orders: int = 0


@dataclass(frozen=True)
class MakerFigures:
    """What a post-only session exercised: entries rested, filled as a maker, left by a kill."""

    rested: int              # entry orders the exchange booked as resting
    maker_fills: int         # fills of them
    left_by_kill: int        # resting when a run was killed
    left_filled: int         # of those, filled (while no bot ran, or in the next start-up)
    most_resting: int        # most entry orders resting in one coin at one moment

    def summary(self) -> str:
        return (f"post-only entries: {self.rested} rested, {self.maker_fills} maker fills; left resting by a kill: "
                f"{self.left_by_kill} ({self.left_filled} of them filled, the rest canceled); "
                f"most resting at once in one coin: {self.most_resting}")


@dataclass
class CrashReport:
    runs: list[RunRecord]
    violations: list[str]
    fills: int
    journal_fills: int
    order_requests: int
    orders_accepted: int
    duplicate_cloid_refusals: int
    entries: int
    naked_stretches: int
    longest_naked_s: float
    most_starts_while_naked: int     # bot processes started during one naked stretch (all but the last cut short)
    final_position: Decimal
    open_orders: int
    elapsed_s: float
    plans: dict[str, int] = field(default_factory=dict)
    fault_runs: dict[str, int] = field(default_factory=dict)   # kind -> runs planned with it
    fault_hits: dict[str, int] = field(default_factory=dict)   # kind -> answers mangled (rule hits)
    makers: MakerFigures | None = None  # post_only sessions only

    @property
    def kills(self) -> int:
        return sum(1 for r in self.runs if r.plan != "final")

    @property
    def reconciled_runs(self) -> int:
        return sum(1 for r in self.runs if r.reconciled_ns is not None)

    def summary(self) -> str:
        lines = [
            f"kills: {self.kills} ({', '.join(f'{k} {v}' for k, v in sorted(self.plans.items()))}); "
            f"runs through start-up reconciliation: {self.reconciled_runs}/{len(self.runs)}",
            f"fills on the exchange: {self.fills}; in the journal: {self.journal_fills}; entries: {self.entries}",
            f"order requests: {self.order_requests}; orders accepted: {self.orders_accepted}; "
            f"duplicate cloids refused: {self.duplicate_cloid_refusals}",
            f"naked stretches (position without a stop): {self.naked_stretches}, longest {self.longest_naked_s:.3f}s, "
            f"most bot starts within one: {self.most_starts_while_naked}",
            "answer faults (runs, bad answers injected): " + "; ".join(
                f"{kind} {self.fault_runs.get(kind, 0)}, {self.fault_hits.get(kind, 0)}" for kind in FAULT_KINDS)
            + f"; killed runs without: {sum(1 for r in self.runs if r.fault is None and r.plan != 'final')}",
            f"final position: {self.final_position}; open orders: {self.open_orders}",
            *([self.makers.summary()] if self.makers is not None else []),
            f"elapsed: {self.elapsed_s:.1f}s",
            f"violations: {len(self.violations)}",
        ]
        lines += [f"  - {v}" for v in self.violations]
        return "\n".join(lines)


def _naked(szi: Decimal, covered: bool) -> bool:
    return szi != 0 and not covered


class ExchangeRecorder:
    """Wraps the simulator engine's mutators to record the account's (position, covered) changes.

    `place`, `cancel` and `print_trade` are the only calls that change positions or resting
    orders; each runs on the simulator's loop thread, so reading the engine right after is exact.
    `arm()` makes the n-th order the account sends (from now) kill the bot: at once (before the
    simulator answers) or `delay_s` later.
    """

    def __init__(self, sim: SimServer, user: str, coin: str = COIN) -> None:
        self.engine = sim.engine
        self.user = user
        self.coin = coin
        self.changes: list[tuple[int, Decimal, bool]] = [(time.time_ns(), Decimal(0), False)]
        # The account's resting entry orders (coin, cloid), each time they change (post-only entries)
        self.entries: list[tuple[int, frozenset[tuple[str, str]]]] = [(time.time_ns(), frozenset())]
        self.max_abs_position = Decimal(0)
        self.fired = threading.Event()
        self._lock = threading.Lock()
        self._kill: Callable[[], None] | None = None
        self._nth = 0
        self._delay_s = 0.0
        self._timer: threading.Timer | None = None
        self.orders_seen = 0
        engine = self.engine
        place, cancel, print_trade = engine.place, engine.cancel, engine.print_trade

        def placed(user: str, *args: Any, **kwargs: Any) -> Any:
            result = place(user, *args, **kwargs)
            if user == self.user:
                self._record()
                self._on_order()
            return result

        def canceled(user: str, *args: Any, **kwargs: Any) -> Any:
            result = cancel(user, *args, **kwargs)
            if user == self.user:
                self._record()
            return result

        def printed(*args: Any, **kwargs: Any) -> Any:
            result = print_trade(*args, **kwargs)
            self._record()
            return result

        engine.place, engine.cancel, engine.print_trade = placed, canceled, printed

    def _state(self) -> tuple[Decimal, bool]:
        acct = self.engine.accounts.get(self.user)
        szi = Decimal(acct.positions.get(self.coin, [Decimal(0)])[0]) if acct is not None else Decimal(0)
        covered = szi != 0 and any(
            o.user == self.user and o.coin == self.coin and o.status == "open" and o.trigger_px is not None
            and o.tpsl == "sl" and o.reduce_only and o.is_buy == (szi < 0) and o.size >= abs(szi)
            for o in list(self.engine.orders.values()))
        return szi, covered

    def _resting_entries(self) -> frozenset[tuple[str, str]]:
        """(coin, cloid) of the account's resting non-reduce-only limit orders: its maker entries
        (an IOC never rests; stops are triggers, exits reduce-only)."""
        return frozenset((o.coin, o.cloid or f"oid {o.oid}") for o in list(self.engine.orders.values())
                         if o.user == self.user and o.status == "open" and o.trigger_px is None
                         and not o.reduce_only)

    def _record(self) -> None:
        szi, covered = self._state()
        last = self.changes[-1]
        now_ns = time.time_ns()
        if (szi, covered) != (last[1], last[2]):
            self.changes.append((now_ns, szi, covered))
            self.max_abs_position = max(self.max_abs_position, abs(szi))
        entries = self._resting_entries()
        if entries != self.entries[-1][1]:
            self.entries.append((now_ns, entries))

    def _on_order(self) -> None:
        with self._lock:
            self.orders_seen += 1
            if self._kill is None or self.orders_seen != self._nth:
                return
            kill = self._kill
            if self._delay_s <= 0:
                kill()
                self.fired.set()
                return
            self._timer = threading.Timer(self._delay_s, self._fire, args=(kill,))
            self._timer.daemon = True
            self._timer.start()

    def _fire(self, kill: Callable[[], None]) -> None:
        with self._lock:
            if self._kill is kill:
                kill()
                self.fired.set()

    def arm(self, kill: Callable[[], None] | None, nth: int = 0, delay_s: float = 0.0) -> None:
        with self._lock:
            self._kill, self._nth, self._delay_s = kill, nth, delay_s
            self.orders_seen = 0
            self.fired.clear()

    def disarm(self) -> int:
        """Stop any pending kill; returns how many orders the account sent since `arm`."""
        with self._lock:
            self._kill = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return self.orders_seen

    def naked_stretches(self, end_ns: int) -> list[tuple[int, int]]:
        """[(start_ns, end_ns)] while the position was non-zero and not covered by a stop."""
        out = []
        start: int | None = None
        for t, szi, covered in self.changes:
            if _naked(szi, covered) and start is None:
                start = t
            elif not _naked(szi, covered) and start is not None:
                out.append((start, t))
                start = None
        if start is not None:
            out.append((start, end_ns))
        return out


# ---- the checks, pure (tests/unit/test_crash_checks.py shows each one bites) -------------------

def journal_violations(exchange_fills: list[dict[str, Any]], journal: list[dict[str, Any]]) -> list[str]:
    """(a) The journal (`StateStore.fills()`) holds exactly the exchange's fills: by tid, once, same figures."""
    out = []
    by_tid = {str(f["tid"]): f for f in exchange_fills}
    counts = Counter(str(f["tid"]) for f in journal)
    for tid, n in counts.items():
        if n > 1:
            out.append(f"(a) fill tid {tid} journaled {n} times")
    for tid in sorted(set(by_tid) - set(counts)):
        f = by_tid[tid]
        out.append(f"(a) exchange fill tid {tid} ({f['dir']} {f['sz']} at {f['px']}, oid {f['oid']}) "
                   f"missing from the journal")
    for tid in sorted(set(counts) - set(by_tid)):
        out.append(f"(a) journal fill tid {tid} unknown to the exchange")
    for j in journal:
        f = by_tid.get(str(j["tid"]))
        if f is None:
            continue
        want = (Decimal(f["px"]), Decimal(f["sz"]), "buy" if f["side"] == "B" else "sell", f["oid"], f.get("cloid"))
        got = (j["px"], j["size"], j["side"], j["oid"], j["cloid"])
        if want != got or j["paper"]:
            out.append(f"(a) fill tid {j['tid']}: journal {got} != exchange {want}")
    return out


def accepted_cloids(order_requests: list[dict[str, Any]]) -> tuple[Counter[str], int]:
    """From the simulator's exchange log: how often each cloid was accepted (resting or filled),
    and how many wires the exchange refused as a duplicate cloid."""
    accepted: Counter[str] = Counter()
    refused = 0
    for e in order_requests:
        response = e.get("response")
        statuses = (response.get("data") or {}).get("statuses", []) if isinstance(response, dict) else []
        for i, (wire, status) in enumerate(zip(e["action"]["orders"], statuses)):
            if isinstance(status, dict) and ("resting" in status or "filled" in status):
                accepted[wire.get("c") or f"(no cloid: nonce {e.get('nonce')} #{i})"] += 1
            elif isinstance(status, dict) and "Duplicate cloid" in str(status.get("error")):
                refused += 1
    return accepted, refused


def order_violations(accepted: Counter[str], exchange_fills: list[dict[str, Any]]) -> list[str]:
    """(b) No cloid accepted twice; no fill opened a position on top of one (an entry sent twice)."""
    out = [f"(b) cloid {cloid} accepted {n} times" for cloid, n in accepted.items() if n > 1]
    for f in exchange_fills:
        if str(f["dir"]).startswith("Open") and Decimal(f["startPosition"]) != 0:
            out.append(f"(b) fill tid {f['tid']} ({f['dir']} {f['sz']}, cloid {f.get('cloid')}) opened on top of a "
                       f"position of {f['startPosition']}: an entry sent twice")
    return out


def cover_violations(stretches: list[tuple[int, int]], runs: list[RunRecord], slack_ns: int, limit_ns: int,
                     end_ns: int) -> list[str]:
    """(d) No naked stretch spans a run's end of start-up reconciliation; none lasts over `limit_ns`
    under a live, reconciled bot; none is open at `end_ns`."""
    out = []
    for run in runs:
        r = run.reconciled_ns
        if r is None:
            continue
        for a, b in stretches:
            if a < r - slack_ns and b > r + slack_ns:
                out.append(f"(d) run {run.index} ({run.plan}) finished start-up reconciliation with the position "
                           f"naked since {(r - a) / 1e9:.3f}s before (until {(b - r) / 1e9:.3f}s after)")
            overlap = min(b, run.ended_ns) - max(a, r)
            if overlap > limit_ns:
                out.append(f"(d) run {run.index} ({run.plan}) was up and reconciled while the position stayed naked "
                           f"for {overlap / 1e9:.3f}s")
    if stretches and stretches[-1][1] >= end_ns:
        out.append("(d) the position is naked at the end")
    return out


def entry_violations(entries: list[tuple[int, frozenset[tuple[str, str]]]], runs: list[RunRecord],
                     placed_ns: dict[str, int], slack_ns: int) -> list[str]:
    """(f) At most one entry order of ours rests per coin at any moment; none placed by an earlier
    run (its signed time, `placed_ns`, before the run's start; unknown: earlier) still rests
    `slack_ns` after a run's start-up reconciliation."""
    out = []
    seen: set[frozenset[str]] = set()
    for _t, resting in entries:
        for coin in sorted({coin for coin, _cloid in resting}):
            cloids = frozenset(cloid for c, cloid in resting if c == coin)
            if len(cloids) > 1 and cloids not in seen:
                seen.add(cloids)
                placed = ", ".join(f"{cloid} (run {_run_at(runs, placed_ns.get(cloid))})" for cloid in sorted(cloids))
                out.append(f"(f) {len(cloids)} entry orders resting at once in {coin}: {placed}")
    for run in runs:
        if run.reconciled_ns is None:
            continue
        resting = _resting_at(entries, run.reconciled_ns + slack_ns)
        for coin, cloid in sorted(resting):
            if placed_ns.get(cloid, 0) < run.started_ns:
                out.append(f"(f) run {run.index} ({run.plan}) finished start-up reconciliation with {coin} entry "
                           f"{cloid} of run {_run_at(runs, placed_ns.get(cloid))} still resting")
    return out


def _resting_at(entries: list[tuple[int, frozenset[tuple[str, str]]]], t_ns: int) -> frozenset[tuple[str, str]]:
    resting: frozenset[tuple[str, str]] = frozenset()
    for t, now in entries:
        if t > t_ns:
            break
        resting = now
    return resting


def _run_at(runs: list[RunRecord], t_ns: int | None) -> str:
    """The index of the run alive at `t_ns`, else "?"."""
    for run in runs:
        if t_ns is not None and run.started_ns <= t_ns <= (run.ended_ns or t_ns):
            return str(run.index)
    return "?"


def entry_placements(order_requests: list[dict[str, Any]]) -> dict[str, int]:
    """cloid -> the signed time (the nonce, ns) of each post-only order the exchange booked as resting."""
    out = {}
    for e in order_requests:
        response = e.get("response")
        statuses = (response.get("data") or {}).get("statuses", []) if isinstance(response, dict) else []
        for wire, status in zip(e["action"]["orders"], statuses):
            tif = ((wire.get("t") or {}).get("limit") or {}).get("tif")
            if tif == "Alo" and isinstance(status, dict) and "resting" in status and wire.get("c"):
                out[wire["c"]] = int(e["nonce"]) * 1_000_000
    return out


def maker_figures(entries: list[tuple[int, frozenset[tuple[str, str]]]], runs: list[RunRecord],
                  placed_ns: dict[str, int], exchange_fills: list[dict[str, Any]]) -> MakerFigures:
    """The report's figures of a post-only session (not checks: they show what it exercised)."""
    filled = {str(f.get("cloid")) for f in exchange_fills}
    left = set()
    for run in runs:
        if run.killed_ns:
            left |= {cloid for _coin, cloid in _resting_at(entries, run.killed_ns)}
    most = max((Counter(coin for coin, _c in resting).most_common(1)[0][1] for _t, resting in entries if resting),
               default=0)
    maker_fills = sum(1 for f in exchange_fills if f.get("cloid") in placed_ns)
    return MakerFigures(rested=len(placed_ns), maker_fills=maker_fills, left_by_kill=len(left),
                        left_filled=len(left & filled), most_resting=most)


def _log_time_ns(line: str) -> int:
    """The wall time of a `%(asctime)s` log line ("2026-01-02 03:04:05,678 ...", local time)."""
    stamp, ms = line[:19], line[20:23]
    return int((time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) * 1000 + int(ms)) * 1_000_000)


class CrashRun:
    """One crash session: `run()` does the kill loop and the final run, `check()` the checks."""

    def __init__(self, settings: CrashSettings, workdir: Path, log: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.workdir = Path(workdir)
        self.log = log or (lambda _msg: None)
        self.rng = random.Random(settings.seed)
        self.address = L1Signer(bytes.fromhex(TEST_KEY[2:]), is_mainnet=False).address
        self.state_path = self.workdir / "state" / "bot.db"
        self.runs: list[RunRecord] = []
        self.sim: SimServer | None = None
        self.proxy: FaultProxy | None = None
        self.recorder: ExchangeRecorder | None = None
        self.started = 0.0
        self.finished = 0.0
        self.final_returncode: int | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> "CrashRun":
        s = self.settings
        self.sim = SimServer(SimConfig(port=0, seed=s.seed, trade_rate_hz=s.trade_rate_hz, volatility=s.volatility,
                                       start_prices={COIN: Decimal("50000")}))
        self.sim.start()
        self.proxy = FaultProxy(upstream=self.sim.rest_url)
        self.proxy.start()
        self.recorder = ExchangeRecorder(self.sim, self.address)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        if self.sim is not None:
            self.sim.stop()

    def _config(self, index: int, proxied: bool) -> Path:
        s = self.settings
        assert self.sim is not None and self.proxy is not None
        doc = {
            "network": "local", "dry_run": False, "symbol": COIN,
            "api": {"rest_url": self.proxy.url if proxied else self.sim.rest_url, "ws_url": self.sim.ws_url,
                    "exchange_timeout_s": s.api_timeout_s, "info_timeout_s": s.api_timeout_s,
                    "order_expires_after_s": s.order_expires_after_s},
            "websocket": {"enabled": True, "reconnect_interval": 0.1, "max_backoff": 0.5, "stale_after": 1.0,
                          "fallback_poll_interval": 0.2, "data_timeout": 2.0, "ping_interval": 1.0,
                          "pong_timeout": 1.0, "subscribe_timeout": 1.0},
            "trading": {"stop_loss_pct": float(s.stop_loss_pct), "take_profit_pct": float(s.take_profit_pct),
                        "trailing_stop_pct": float(s.trailing_stop_pct), "order_size_usd": 200, "leverage": 3,
                        "slippage_pct": 0.5, "max_position_usd": 1000, "max_orders_per_minute": 1000,
                        "exits_on_exchange": s.exits_on_exchange},
            "strategy": {"name": "always_long", "candle_interval": "1m"},
            "health": {"enabled": False},
            "logging": {"file": str(self.log_path(index)), "level": "INFO", "console": False},
            "state": {"path": str(self.state_path)},
            "account": {"private_key_env": KEY_ENV},
        }
        if s.entry_order != "ioc":
            doc["trading"].update(entry_order=s.entry_order, maker_repeg_s=s.maker_repeg_s,
                                  maker_timeout_s=s.maker_timeout_s)
        path = self.workdir / f"config-{index:04d}.json"
        path.write_text(json.dumps(doc))
        return path

    def log_path(self, index: int) -> Path:
        return self.workdir / "logs" / f"run-{index:04d}.log"

    def _spawn(self, index: int, proxied: bool = False) -> subprocess.Popen[bytes]:
        env = dict(os.environ, **{KEY_ENV: TEST_KEY})
        stderr = open(self.workdir / "logs" / f"run-{index:04d}.stderr", "wb")
        try:
            return subprocess.Popen([sys.executable, str(ROOT / "trading_bot.py"), "--config",
                                     str(self._config(index, proxied))], cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=stderr)
        finally:
            stderr.close()

    # The first runs walk the worst windows for sure (then the RNG takes over): on the fresh account
    # run 0's first order is the entry, so it dies with a booked position and no stop; run 1 adopts
    # it and dies just after booking the new stop, before the take-profit or the save; and so on.
    OPENING = (("in-flight", 1, 0.0), ("after-order", 1, 0.002), ("in-flight", 2, 0.0),
               ("after-order", 2, 0.002), ("in-flight", 3, 0.0), ("after-order", 3, 0.03))
    # Then one run per answer fault, each on the run's first order (an entry when flat, else an SL/TP
    # or an exit), so that the short test injects every kind. On a flat account: the 502'd entry is
    # adopted and the run dies in flight on the stop it places; the dribbled one dies just after its
    # take-profit is booked, before the lookup settles the entry (the next start does); the dropped
    # one lives until the lookup has settled it (about 2 s after the answer).
    FAULT_TOUR = (("in-flight", 2, 0.0, "STATUS_AFTER 502"), ("after-order", 3, 0.01, "DRIBBLE"),
                  ("timer", 0, 0.0, "DROP_AFTER"))

    def _plan(self, index: int) -> RunPlan:
        s, r = self.settings, self.rng
        if index < len(self.OPENING):  # patient: these must reach their order even on a loaded machine
            name, nth, delay_s = self.OPENING[index]
            return RunPlan(name, 6.0, nth, delay_s)
        tour = index - len(self.OPENING)
        if tour < len(self.FAULT_TOUR):
            name, nth, delay_s, kind = self.FAULT_TOUR[tour]
            return RunPlan(name, 3.5 if name == "timer" else 5.0, nth, delay_s, AnswerFault(kind, (1,)))
        fault = None
        if r.random() < s.fault_share:
            kind = r.choice(FAULT_KINDS)
            if r.random() < 0.5:
                orders: tuple[int, ...] = (r.randint(1, 3),)
            else:  # each of the run's first six orders with a probability
                orders = tuple(n for n in range(1, 7) if r.random() < 0.4) or (1,)
            fault = AnswerFault(kind, orders)
        extra_s = s.fault_extra_s if fault is not None else 0.0
        wait = r.uniform(s.min_wait_s, s.max_wait_s + extra_s)
        roll = r.random()
        fallback = s.max_wait_s + 1.0 + extra_s
        if roll < 0.5:
            return RunPlan("timer", wait, fault=fault)
        nth = r.randint(1, 3)
        if roll < 0.75:
            return RunPlan("in-flight", fallback, nth, fault=fault)
        return RunPlan("after-order", fallback, nth, r.uniform(0.002, 0.08), fault)

    def run(self) -> None:
        assert self.sim is not None and self.recorder is not None
        self.started = time.monotonic()
        for index in range(self.settings.kills):
            self._killed_run(index)
        self._final_run(self.settings.kills)
        self.finished = time.monotonic()

    def _killed_run(self, index: int) -> None:
        assert self.recorder is not None and self.proxy is not None
        p = self._plan(index)
        plan, wait_s, nth, delay_s = p.name, p.wait_s, p.nth, p.delay_s
        record = RunRecord(index=index, plan=plan, fault=p.fault)
        rule = None
        if p.fault is not None:
            rule = self.proxy.inject("/exchange", FAULTS[p.fault.kind], status=502, count=None,
                                     match=OrderNumbers(p.fault.orders), interval_s=self.settings.dribble_interval_s)
        proc = self._spawn(index, proxied=rule is not None)
        record.pid, record.started_ns = proc.pid, time.time_ns()

        def kill() -> None:
            record.killed_ns = record.killed_ns or time.time_ns()
            proc.send_signal(signal.SIGKILL)

        self.recorder.arm(kill if nth else None, nth, delay_s)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not self.recorder.fired.is_set():
            if proc.poll() is not None:  # exited on its own: never expected
                record.exited_by_itself = True
                break
            self.recorder.fired.wait(0.01)
        plan_fired = self.recorder.fired.is_set()
        record.orders = self.recorder.disarm()
        if not record.exited_by_itself:
            kill()  # no-op if the simulator already killed it
        record.returncode = proc.wait()
        record.ended_ns = time.time_ns()
        if rule is not None:  # the bot is gone: the next run gets its own rule (or none)
            self.proxy.clear(rule)
            record.fault_hits = rule.hits
        if nth and not plan_fired:
            record.plan = f"{plan} (no order {nth}: timer)"
        record.reconciled_ns = self._reconciled_at(index)
        self.runs.append(record)
        fault_note = f", {record.fault}: {record.fault_hits} bad answer(s)" if record.fault else ""
        self.log(f"run {index}: {record.plan}, {record.orders} order(s){fault_note}, "
                 f"{'reconciled' if record.reconciled_ns else 'killed in start-up'}, rc {record.returncode}")

    def _reconciled_at(self, index: int) -> int | None:
        try:
            text = self.log_path(index).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            if RECONCILED_LINE in line:
                return _log_time_ns(line)
        return None

    def _final_run(self, index: int) -> None:
        """Feed paused (no print, so no trigger can fill once the bot is gone); SIGTERM when quiet."""
        assert self.sim is not None and self.recorder is not None
        s = self.settings
        self.sim.pause_feed()
        self.recorder.arm(None)
        record = RunRecord(index=index, plan="final")
        proc = self._spawn(index)
        record.pid, record.started_ns = proc.pid, time.time_ns()
        try:
            deadline = time.monotonic() + s.start_timeout_s
            while self._reconciled_at(index) is None and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            quiet_since, last = time.monotonic(), None
            deadline = time.monotonic() + s.start_timeout_s
            while time.monotonic() < deadline and proc.poll() is None:
                now = (len(self.recorder.changes), self.recorder.orders_seen, self._journal_count(),
                       self._saved_signed_position())
                if now != last:
                    quiet_since, last = time.monotonic(), now
                elif time.monotonic() - quiet_since >= s.quiet_s:
                    break
                time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                record.returncode = proc.wait(timeout=10)
            else:
                record.exited_by_itself = True
                record.returncode = proc.returncode
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        record.ended_ns = time.time_ns()
        record.orders = self.recorder.disarm()
        record.reconciled_ns = self._reconciled_at(index)
        self.final_returncode = record.returncode
        self.runs.append(record)
        self.log(f"final run: {record.orders} order(s), rc {record.returncode}")

    def _ro(self) -> sqlite3.Connection | None:
        if not self.state_path.exists():
            return None
        return sqlite3.connect(f"file:{self.state_path}?mode=ro", uri=True, timeout=1.0)

    def _journal_count(self) -> int:
        db = self._ro()
        if db is None:
            return 0
        try:
            return db.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
        except sqlite3.Error:
            return -1
        finally:
            db.close()

    def _saved_signed_position(self) -> Decimal | None:
        db = self._ro()
        if db is None:
            return None
        try:
            row = db.execute("SELECT side, size FROM position").fetchone()
        except sqlite3.Error:
            return None
        finally:
            db.close()
        if row is None:
            return Decimal(0)
        return Decimal(row[1]) if row[0] == "long" else -Decimal(row[1])

    # ---- the checks ----------------------------------------------------------------------

    def check(self) -> CrashReport:
        from report import journal_report
        from state import StateStore
        assert self.sim is not None and self.recorder is not None
        s = self.settings
        violations: list[str] = []
        account = self.sim.account(self.address)
        sim_fills = account["fills"]
        store = StateStore(str(self.state_path))
        store.open()
        try:
            journal = store.fills()
            saved = store.load_position(COIN)
            journal_open = journal_report(store).open_sizes.get(COIN, Decimal(0))
        finally:
            store.close()

        violations += journal_violations(sim_fills, journal)
        order_requests = [e for e in self.sim.exchange_log()
                          if (e.get("user") or "").lower() == self.address.lower()
                          and e["action"].get("type") == "order"]
        accepted, refused_dupes = accepted_cloids(order_requests)
        violations += order_violations(accepted, sim_fills)
        entries = [f for f in sim_fills if str(f["dir"]).startswith("Open")]

        # (c) final position and resting orders
        pos = account["positions"].get(COIN)
        sim_szi = Decimal(pos["szi"]) if pos else Decimal(0)
        saved_szi = Decimal(0) if saved is None else (saved.size if saved.side == "long" else -saved.size)
        if sim_szi != saved_szi:
            violations.append(f"(c) exchange position {sim_szi} != saved position {saved_szi}")
        if sim_szi != journal_open:
            violations.append(f"(c) exchange position {sim_szi} != position rebuilt from the journal {journal_open}")
        open_cloids = {o.get("cloid") for o in account["open_orders"]}
        saved_cloids = set(saved.protective_cloids) if saved is not None else set()
        if open_cloids != saved_cloids:
            violations.append(f"(c) open orders on the exchange {sorted(map(str, open_cloids))} != the saved "
                              f"position's exchange-side orders {sorted(saved_cloids)}")

        end_ns = time.time_ns()
        stretches = self.recorder.naked_stretches(end_ns)
        violations += cover_violations(stretches, self.runs, int(s.slack_s * 1e9), int(s.naked_limit_s * 1e9),
                                       end_ns)
        placed_ns = entry_placements(order_requests)
        violations += entry_violations(self.recorder.entries, self.runs, placed_ns, int(s.slack_s * 1e9))
        makers = None if s.entry_order == "ioc" else \
            maker_figures(self.recorder.entries, self.runs, placed_ns, sim_fills)

        # (e) processes
        for run in self.runs:
            if run.plan != "final" and (run.exited_by_itself or run.returncode != -signal.SIGKILL):
                violations.append(f"(e) run {run.index} ({run.plan}) ended with rc {run.returncode} before its kill")
            for suffix in (".log", ".stderr"):
                path = self.workdir / "logs" / f"run-{run.index:04d}{suffix}"
                if path.exists() and "Traceback" in path.read_text(encoding="utf-8", errors="replace"):
                    violations.append(f"(e) run {run.index}: a traceback in {path.name}")
        if self.final_returncode != 0:
            violations.append(f"(e) the final run exited {self.final_returncode} on SIGTERM, not 0")
        final = self.runs[-1] if self.runs else None
        if final is None or final.reconciled_ns is None:
            violations.append("(e) the final run never finished start-up reconciliation")

        plans = Counter(r.plan.split(" ")[0] for r in self.runs if r.plan != "final")
        fault_runs: Counter[str] = Counter(r.fault.kind for r in self.runs if r.fault is not None)
        fault_hits: Counter[str] = Counter()
        for r in self.runs:
            if r.fault is not None:
                fault_hits[r.fault.kind] += r.fault_hits
        return CrashReport(
            runs=self.runs, violations=violations, fills=len(sim_fills), journal_fills=len(journal),
            order_requests=len(order_requests), orders_accepted=sum(accepted.values()),
            duplicate_cloid_refusals=refused_dupes, entries=len(entries), naked_stretches=len(stretches),
            longest_naked_s=max(((b - a) / 1e9 for a, b in stretches), default=0.0),
            most_starts_while_naked=max((sum(1 for r in self.runs if a < r.started_ns < b) for a, b in stretches),
                                        default=0),
            final_position=sim_szi,
            open_orders=len(account["open_orders"]), elapsed_s=self.finished - self.started, plans=dict(plans),
            fault_runs=dict(fault_runs), fault_hits=dict(fault_hits), makers=makers)


def crash_session(settings: CrashSettings, workdir: Path, log: Callable[[str], None] | None = None) -> CrashReport:
    """Run a whole session (kill loop, final run) and return the checked report."""
    with CrashRun(settings, workdir, log) as session:
        session.run()
        return session.check()
