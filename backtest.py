"""Backtest: the bot's own trading code driven by recorded frames, with paper fills, no network.

`run(settings, files) -> BacktestResult`; `python trading_bot.py --config CFG --backtest FILE...`.

Owns: building the markets as the wiring does (market.MarketTrader with its entries.Entries,
exits, strategy and sizing, execution.OrderExecutor, protection off as in paper trading) over an
in-memory state store, a clock that follows the frames' receive times, and a backtest exchange
(backtest_parts); then feeding every recorded frame in time order through
`stream_events.parse_frame` as the trading loop would: trades to their market (the first trades
frame after a subscription acknowledgement is the server's replay: history for the candles, as
live), best bids and asks and l2Books to their market (exits are priced from the first, paper
fills walk the second, as in a dry run), then the timers of every market once per loop turn (a
frame with events and what came within `LOOP_BATCH_S` of it: a burst the live loop drains in one
turn), and every `TIMER_TICK_S` of recorded time in between (the loop's idle wake-ups, for up to
`IDLE_TICKS_FOR_S` after a turn). Also: silences longer than `gap_after_s` (3x
websocket.stale_after by default) as gaps, the price and mark-to-market equity series, drawdown,
exposure, and the result.
Must not: open a socket, ask the exchange, read the wall clock for a decision, write a file, or
trade differently from the bot: every decision is the bot's own code.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping

from backtest_parts import BacktestAccount, BacktestExchange, JournalOnly, NoNetwork, ReplayClock, SimFill
from execution import OrderExecutor
from loop import MAX_LOOP_WAIT_S, STEP_BATCH
from market import MarketTrader
from protection import Protection
from recording import read_frames
from report import Report, journal_report
from rest_gate import InfoGate
from settings import Settings
from state import StateStore
from strategies import build_strategy
from stream_events import Bbo, L2Book, Trade, as_replay, parse_frame

log = logging.getLogger("backtest")

TIMER_TICK_S = MAX_LOOP_WAIT_S   # the loop runs its timers at least this often, frames or not
LOOP_BATCH_S = 0.0005            # frames within this of the one that woke the loop share its turn (a burst)
IDLE_TICKS_FOR_S = 60.0          # after this long without a frame nothing new can fall due (cooldowns, retries)
SAMPLE_EVERY_MS = 1000           # price and equity points kept for the report, per coin
# Size decimals of the exchange's main coins (meta's szDecimals); others are read off the recording.
KNOWN_SZ_DECIMALS = {"BTC": 5, "ETH": 4, "SOL": 2}
_INFER_FROM_TRADES = 500
_ADDRESS = "0x" + "0" * 40       # the paper account's address (nothing is ever sent)

Point = tuple[int, "float | None"]  # (time_ms, value); None breaks the line at a gap


@dataclass(frozen=True)
class Gap:
    """No frame at all from `start_ms` to `end_ms`: the socket was down (or the recording stopped)."""
    start_ms: int
    end_ms: int

    @property
    def duration_s(self) -> float:
        return (self.end_ms - self.start_ms) / 1000


@dataclass(frozen=True)
class OpenAtEnd:
    coin: str
    side: Literal["long", "short"]
    size: Decimal
    entry_px: Decimal
    opened_ms: int
    unrealized: Decimal


@dataclass(frozen=True)
class BacktestResult:
    files: tuple[str, ...]
    frames: int                     # every recorded frame read
    trade_frames: int               # frames that carried trades
    first_ms: int | None
    last_ms: int | None
    wall_s: float
    report: Report                  # the closed trades, from the journal as `--report` reads it
    fills: tuple[SimFill, ...]
    priced: Mapping[str, int]       # fills by how they were priced (l2Book, bbo, paper)
    gaps: tuple[Gap, ...]
    gap_after_s: float
    last_prices: Mapping[str, Decimal]
    open_at_end: tuple[OpenAtEnd, ...]
    max_drawdown: float             # USDC, peak to trough of the mark-to-market equity
    exposure_ms: int                # time with a position open (summed over markets)
    handler_errors: int
    sz_decimals: Mapping[str, int]
    prices: Mapping[str, tuple[Point, ...]] = field(default_factory=dict)
    equity: tuple[Point, ...] = ()

    @property
    def span_ms(self) -> int:
        return 0 if self.first_ms is None or self.last_ms is None else self.last_ms - self.first_ms

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def unrealized(self) -> Decimal:
        return sum((p.unrealized for p in self.open_at_end), Decimal(0))

    @property
    def net_pnl(self) -> Decimal:
        """Closed trades net of fees, plus what the positions still open would make at the last price."""
        return self.report.net_pnl + self.unrealized


def run(settings: Settings, files: Iterable[str | Path], *, use_book: bool = True,
        sz_decimals: Mapping[str, int] | None = None, gap_after_s: float | None = None,
        timer_tick_s: float = TIMER_TICK_S) -> BacktestResult:
    """Backtest the configured markets over recorded frame files (recording.py format).

    `use_book` False: every paper fill by the slippage rule. `timer_tick_s`: how often the loop
    runs its timers with no frame (the bot's is `loop.MAX_LOOP_WAIT_S`; a loop driven otherwise,
    as the tests' harness does, wakes more often)."""
    paths = tuple(str(p) for p in files)
    decimals = dict(sz_decimals or {})
    unknown = [c for c in settings.coins if c not in decimals and c not in KNOWN_SZ_DECIMALS]
    decimals = {c: decimals.get(c, KNOWN_SZ_DECIMALS.get(c, 0)) for c in settings.coins}
    decimals.update(infer_sz_decimals(paths, unknown))
    gap_s = gap_after_s if gap_after_s is not None else 3 * settings.websocket.stale_after
    sim = _Simulation(settings, decimals, use_book, gap_s, timer_tick_s)
    started = time.perf_counter()
    try:
        sim.feed(read_frames(paths))
        wall_s = time.perf_counter() - started
        return sim.result(paths, wall_s)
    finally:
        sim.store.close()


def infer_sz_decimals(paths: Iterable[str], coins: list[str]) -> dict[str, int]:
    """Size decimals of coins the backtest does not know, read off the recorded trade sizes (the
    most decimals among a coin's first trades: sizes are whole lots)."""
    found = {c: 0 for c in coins}
    seen = {c: 0 for c in coins}
    if not coins:
        return found
    for t_ns, raw in read_frames(paths):
        for event in parse_frame(raw, t_ns).events:
            if type(event) is Trade and event.coin in seen:
                seen[event.coin] += 1
                found[event.coin] = max(found[event.coin], -min(0, event.size.normalize().as_tuple().exponent))
        if all(n >= _INFER_FROM_TRADES for n in seen.values()):
            break
    log.info("size decimals read off the recording: %s", found)
    return found


class _Simulation:
    """One backtest's parts and running figures (built once per `run`)."""

    def __init__(self, settings: Settings, sz_decimals: Mapping[str, int], use_book: bool, gap_after_s: float,
                 timer_tick_s: float) -> None:
        self.clock = clock = ReplayClock()
        self.timer_tick_s = timer_tick_s
        self.sz_decimals = dict(sz_decimals)
        self.gap_after_s = gap_after_s
        self.store = StateStore(":memory:")
        self.store.open()
        writer = JournalOnly(self.store, clock.seconds)
        book_of = (lambda coin: self.traders[coin].quotes.fresh_book() if coin in self.traders else None) if use_book else None
        self.exchange = BacktestExchange(self.sz_decimals.__getitem__, clock.nanos, book_of)
        self.account = account = BacktestAccount(settings.risk)
        self.executor = OrderExecutor(self.exchange, NoNetwork(), writer, InfoGate(clock.seconds), _ADDRESS,
                                      settings.api.order_expires_after_s, True, clock.seconds, clock.ms,
                                      want_check=account.want_check, on_protective=lambda *_: None)
        account.executor = self.executor
        for market in settings.markets:
            rules = MarketTrader.rules_for(market)
            protection = Protection(market.coin, self.sz_decimals[market.coin], rules, self.executor, writer, False,
                                    clock.seconds, clock.ms)
            strategy = build_strategy(market.strategy.name, dict(market.strategy.params))
            account.traders[market.coin] = MarketTrader(market, self.sz_decimals[market.coin], strategy,
                                                        self.executor, protection, writer, account, True,
                                                        clock.seconds, clock.ms)
        self.traders = account.traders
        self.timers = [timer for trader in self.traders.values() for timer in trader.timers]
        self.frames = self.trade_frames = self.handler_errors = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.gaps: list[Gap] = []
        self.prices: dict[str, list[Point]] = {coin: [] for coin in self.traders}
        self.next_sample_ms: dict[str, int] = {coin: 0 for coin in self.traders}
        self.equity: list[Point] = []
        self.next_equity_ms = 0
        self.peak = self.max_drawdown = 0.0
        self._replay_pending: set[str] = set()
        self._fills_seen = 0

    # ---- the frames --------------------------------------------------------------------------

    def feed(self, frames: Iterator[tuple[int, str]]) -> None:
        """Every frame in order and the timers as the trading loop would have run them: a frame with
        events wakes the loop; what arrives within `LOOP_BATCH_S` of it (up to `STEP_BATCH` events)
        is handled in the same turn; then the timers, at the time of the turn's last frame. (The
        hot loop of a backtest: what it touches per frame is held in locals.)"""
        clock, traders, exchange = self.clock, self.traders, self.exchange
        replay_pending, next_sample = self._replay_pending, self.next_sample_ms
        gap_ns, batch_ns = int(self.gap_after_s * 1e9), int(LOOP_BATCH_S * 1e9)
        tick_ns, idle_ns = int(self.timer_tick_s * 1e9), int(IDLE_TICKS_FOR_S * 1e9)
        last_ns = next_tick = idle_end = turn_until = -1  # turn_until >= 0: a turn is open until then
        count = trade_frames = in_turn = 0
        for t_ns, raw in frames:
            if turn_until >= 0 and t_ns > turn_until:
                self._turn(clock.s)  # the turn the last frames opened ends before this one
                turn_until, next_tick, idle_end = -1, last_ns + tick_ns, last_ns + idle_ns
            if last_ns < 0:
                self.first_ns = t_ns
            elif t_ns - last_ns > gap_ns:
                self._gap(last_ns, t_ns)
            if 0 <= next_tick < t_ns and turn_until < 0:
                self._idle(next_tick, min(t_ns, idle_end), tick_ns)
            last_ns = clock.ns = t_ns
            clock.s = t_ns / 1e9
            count += 1
            parsed = parse_frame(raw, t_ns)
            if parsed.ack is not None:
                self._acknowledged(parsed.ack)
            events = parsed.events
            if not events:
                continue  # a pong, an ack: nothing wakes the loop
            try:
                first = events[0]
                if type(first) is Trade:
                    trade_frames += 1
                    coin = first.coin
                    trader = traders.get(coin)
                    if trader is not None:
                        if coin in replay_pending:
                            replay_pending.discard(coin)
                            events = as_replay(events)
                        for event in events:
                            trader.on_trade(event)
                        t_ms = t_ns // 1_000_000
                        if exchange.open or t_ms >= next_sample[coin] or t_ms >= self.next_equity_ms:
                            self._sampled(coin, trader.current_price, t_ms)
                elif type(first) is Bbo:  # as the loop: exits are priced from a fresh best bid/ask
                    trader = traders.get(first.coin)
                    if trader is not None:
                        trader.quotes.on_bbo(first.bid, first.ask)
                elif type(first) is L2Book:  # as the loop: paper fills walk the market's fresh l2Book
                    trader = traders.get(first.coin)
                    if trader is not None:
                        trader.quotes.on_l2book(first)
            except Exception as exc:  # noqa: BLE001 - as the loop: logged, counted, the run goes on
                self._failed(exc)
            if turn_until < 0:
                turn_until, in_turn = t_ns + batch_ns, 0
            in_turn += len(events)
            if in_turn >= STEP_BATCH:  # the loop's batch is full: its timers now
                self._turn(clock.s)
                turn_until, next_tick, idle_end = -1, t_ns + tick_ns, t_ns + idle_ns
        if turn_until >= 0:
            self._turn(clock.s)
        self.frames, self.trade_frames = count, trade_frames
        self.last_ns = last_ns if last_ns >= 0 else None

    def _acknowledged(self, ack: Mapping[str, Any]) -> None:
        """A trades subscription was confirmed: the server's replay of recent trades comes next."""
        sub = ack.get("subscription") if isinstance(ack, Mapping) else None
        if ack.get("method") == "subscribe" and isinstance(sub, Mapping) and sub.get("type") == "trades":
            self._replay_pending.add(str(sub.get("coin")))

    def _idle(self, from_ns: int, until_ns: int, tick_ns: int) -> None:
        """The loop's wake-ups with no frame: timers at the last price."""
        for t_ns in range(from_ns, until_ns, tick_ns):
            self.clock.set(t_ns)
            self._turn(self.clock.s)

    def _turn(self, now: float) -> None:
        """The end of a loop turn: every market's timers (one entry per turn across markets)."""
        try:
            self.account.entry_slots = 1
            for timer in self.timers:
                timer(now)
            if len(self.exchange.fills) != self._fills_seen:
                self._fills_seen = len(self.exchange.fills)
                self._mark(self.clock.ns // 1_000_000, force=True)
        except Exception as exc:  # noqa: BLE001 - as the loop: logged, counted, the run goes on
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.handler_errors += 1
        if self.handler_errors <= 3:
            log.error("backtest: handling a frame failed (%s: %s); the run goes on", type(exc).__name__, exc,
                      exc_info=exc)

    def _gap(self, last_ns: int, t_ns: int) -> None:
        gap = Gap(last_ns // 1_000_000, t_ns // 1_000_000)
        self.gaps.append(gap)
        for series in self.prices.values():
            series.append((gap.start_ms + 1, None))
        self.equity.append((gap.start_ms + 1, None))

    # ---- prices and equity -------------------------------------------------------------------

    def _sampled(self, coin: str, price: Decimal | None, t_ms: int) -> None:
        if price is not None and t_ms >= self.next_sample_ms[coin]:
            self.next_sample_ms[coin] = t_ms + SAMPLE_EVERY_MS
            self.prices[coin].append((t_ms, float(price)))
        if self.exchange.open:
            self._mark(t_ms)
        elif t_ms >= self.next_equity_ms:
            self._mark(t_ms)

    def _mark(self, t_ms: int, force: bool = False) -> None:
        """The mark-to-market equity now: drawdown on every price while a position is open; a point
        for the chart once a second and at every fill."""
        equity = self.exchange.cash
        for coin, size in self.exchange.open.items():
            price = self.traders[coin].current_price
            if price is not None:
                equity += size * float(price)
        if equity > self.peak:
            self.peak = equity
        elif self.peak - equity > self.max_drawdown:
            self.max_drawdown = self.peak - equity
        if force or t_ms >= self.next_equity_ms:
            self.next_equity_ms = t_ms + SAMPLE_EVERY_MS
            self.equity.append((t_ms, equity))

    # ---- the result --------------------------------------------------------------------------

    def result(self, paths: tuple[str, ...], wall_s: float) -> BacktestResult:
        last_ms = None if self.last_ns is None else self.last_ns // 1_000_000
        report = journal_report(self.store, paper=True)
        exposure = sum(t.closed_ms - t.opened_ms for t in report.trades)
        still_open = []
        for coin, trader in self.traders.items():
            pos = trader.position
            if pos is None or trader.current_price is None:
                continue
            sign = 1 if pos.side == "long" else -1
            still_open.append(OpenAtEnd(coin, pos.side, pos.size, pos.entry_px, pos.opened_ms,
                                        (trader.current_price - pos.entry_px) * pos.size * sign))
            exposure += max(0, (last_ms or pos.opened_ms) - pos.opened_ms)
        return BacktestResult(
            files=paths, frames=self.frames, trade_frames=self.trade_frames,
            first_ms=None if self.first_ns is None else self.first_ns // 1_000_000, last_ms=last_ms, wall_s=wall_s,
            report=report, fills=tuple(self.exchange.fills), priced=dict(self.exchange.priced),
            gaps=tuple(self.gaps), gap_after_s=self.gap_after_s,
            last_prices={c: t.current_price for c, t in self.traders.items() if t.current_price is not None},
            open_at_end=tuple(still_open), max_drawdown=self.max_drawdown, exposure_ms=exposure,
            handler_errors=self.handler_errors, sz_decimals=self.sz_decimals,
            prices={c: tuple(points) for c, points in self.prices.items()}, equity=tuple(self.equity))
