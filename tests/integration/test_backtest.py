"""Record the stream of a bot trading on the simulator, then backtest the recording: the same
entries and exits on the same prices; two backtests alike; a gap in the recording shown; the HTML
picture written; the simulator replaying the recording; a stuck recorder never holding up the
socket thread."""
from __future__ import annotations

import dataclasses
import os
import queue
import time
from decimal import Decimal as D
from pathlib import Path
from typing import Any, Iterator

import pytest

import backtest
import entries
import stream_events as ev
from backtest_report import backtest_chart, format_summary
from charts import write_html
from config_load import settings_from_dict
from hyperliquid_sim import SimConfig, SimServer
from hyperliquid_websocket import HyperliquidWebSocketClient
from report import journal_report
from strategies import STRATEGIES, register
from tests.integration.test_websocket import drain
from tests.unit.test_recording import StuckDisk
from harness.bot import TEST_CONFIG, bot_config, make_bot
from harness.waiting import wait_until

COOLDOWN_S = 0.5  # entries.ENTRY_COOLDOWN_S for both runs: the live one and its backtest
SILENCE_S = 4.0   # the socket goes quiet this long once: a gap in the recording
GAP_AFTER_S = 2.5  # the backtest's gap threshold here (pongs come every second otherwise)
TICK_S = 0.02  # the harness turns the loop with a 20 ms wait (Harness.step): its timers run that often
TRADING = {"stop_loss_pct": 1.0, "take_profit_pct": 2.0, "trailing_stop_pct": 0.5, "slippage_pct": 0.1}
WS = {"stale_after": 30.0}  # no REST fallback: prices polled over REST are not in the recording


class Session:
    """What the live run left: its settings, the recording, its journal's trades, its open position."""

    def __init__(self, settings: Any, files: list[Path], trades: tuple, position: Any, sim_prices: list[D]) -> None:
        self.settings, self.files, self.trades, self.position = settings, files, trades, position
        self.sim_prices = sim_prices


def _px(value: D) -> str:
    return str(value.quantize(D(1)))


class LongAbove:
    """Long whenever flat and the price is above `above`: the entries come on the test's own
    prices, not on the newest trade of the server's replay (whether the loop had the book then is
    a race in the live run)."""

    name = "long_above"

    def __init__(self, above: int) -> None:
        self.above = D(above)

    def on_candles(self, candles: Any, price: D, has_position: bool) -> Any:
        return "long" if not has_position and price > self.above else None


STRATEGY = {"name": "long_above", "params": {"above": 50150}}


@pytest.fixture(scope="module", autouse=True)
def long_above() -> Iterator[None]:
    """The test's strategy, selectable by name for this module's live run and backtests only."""
    register("long_above")(LongAbove)
    yield
    STRATEGIES.pop("long_above", None)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    """The bot (dry run: paper fills walk the simulator's l2Book) on the simulator with record.dir
    on; prices drive a trailing stop, a stop-loss and a take-profit, with a 4 s silence in the
    middle; then it stops. Each price comes 50 ms after the frames before it, and the test waits for
    the book that follows it, so what the bot fills on does not depend on how its loop happened to
    batch the frames (the backtest models a turn as the frames within LOOP_BATCH_S)."""
    tmp = tmp_path_factory.mktemp("recorded")
    saved_cooldown, entries.ENTRY_COOLDOWN_S = entries.ENTRY_COOLDOWN_S, COOLDOWN_S
    sim = SimServer(SimConfig(port=0, seed=7, feed=False, start_prices={"BTC": D("50000")}))
    sim.start()
    record_dir = tmp / "frames"
    over = {"dry_run": True, "trading": TRADING, "websocket": WS, "strategy": STRATEGY}
    h = make_bot(sim, tmp, record={"dir": str(record_dir)}, **over)
    prices: list[D] = []

    def price(px: D) -> None:
        settle = time.monotonic() + 0.05  # the price comes well after the last frames: never in their loop turn
        wait_until(lambda: time.monotonic() > settle, 1, h.step)
        book = h.trader.quotes.book
        sim.set_price("BTC", _px(px))
        prices.append(D(_px(px)))
        wait_until(lambda: h.trader.current_price == D(_px(px)) and h.trader.quotes.book is not book, 5, h.step)

    def closes() -> int:
        return len(journal_report(h.store, paper=True).trades)

    def entered(after: Any = None) -> D:
        wait_until(lambda: h.trader.position is not None and h.trader.position is not after, 10, h.step)
        return h.trader.position.entry_px

    def closed(count: int) -> None:
        """The `count`th trade closed (the next entry may have come already)."""
        wait_until(lambda: closes() >= count, 5, h.step)

    try:
        h.wait_subscribed()
        wait_until(lambda: h.trader.quotes.book is not None, 10, h.step)
        price(D(50600))
        e1 = entered()
        first = h.trader.position
        price(e1 * D("1.004"))
        price(e1 * D("1.010"))
        price(e1 * D("1.003"))  # 0.69 % under the top: trailing stop
        closed(1)
        e2 = entered(after=first)  # after the cooldown, at that price
        sim.silence(SILENCE_S)  # nothing at all for 4 s: the bot reconnects after it
        wait_until(lambda: h.bot.ws.stats().reconnects >= 1, 20, h.step)
        h.wait_subscribed(20)
        price(e2 * D("0.985"))  # stop-loss (and under 50150: no entry)
        closed(2)
        price(D(50600))
        e3 = entered()
        third = h.trader.position
        price(e3 * D("1.030"))  # take-profit (the trail is 0.5 % under the new top: not hit)
        closed(3)
        e4 = entered(after=third)  # left open at the end
        price(h.trader.current_price)  # frames after that entry: the recording covers when it happened
        assert h.trader.position.entry_px == e4
        position = h.trader.position
        trades = journal_report(h.store, paper=True).trades
    finally:
        h.close()
        sim.stop()
        entries.ENTRY_COOLDOWN_S = saved_cooldown
    # the live run's own config (the backtest needs no endpoint, state or key: it opens none)
    settings = settings_from_dict(bot_config(TEST_CONFIG, "http://127.0.0.1:1", tmp / "unused.db", over))
    files = sorted(record_dir.glob("frames-*.jsonl.gz"))
    return Session(settings, files, trades, position, prices)


def _same_times(live: Any, mine: Any) -> Any:
    return dataclasses.replace(live, opened_ms=mine.opened_ms, closed_ms=mine.closed_ms)


@pytest.fixture
def cooldown() -> Any:
    saved, entries.ENTRY_COOLDOWN_S = entries.ENTRY_COOLDOWN_S, COOLDOWN_S
    yield
    entries.ENTRY_COOLDOWN_S = saved


def test_recording_is_hourly_gzip_owner_only(session: Session) -> None:
    assert session.files and all(f.name.startswith("frames-") and f.name.endswith(".jsonl.gz") for f in session.files)
    assert all(os.stat(f).st_mode & 0o077 == 0 for f in session.files)


def test_backtest_of_the_recording_makes_the_live_runs_trades(session: Session, cooldown: Any) -> None:
    """Paper fills as the live dry run makes them (walking the recorded l2Book when fresh, else the
    slippage rule: the same PaperExchange): every entry and exit the same (side, size, prices,
    fees, exit reason), at the same moments (receive time vs the live clock: within 1 s)."""
    live = session.trades
    assert [t.exit_reason for t in live] == ["trailing_stop", "stop_loss", "take_profit"]
    result = backtest.run(session.settings, session.files, gap_after_s=GAP_AFTER_S, timer_tick_s=TICK_S)
    got = result.report.trades
    assert [_same_times(theirs, mine) for theirs, mine in zip(live, got)] == list(got) and len(got) == len(live)
    for mine, theirs in zip(got, live):
        assert abs(mine.opened_ms - theirs.opened_ms) < 1000 and abs(mine.closed_ms - theirs.closed_ms) < 1000
    assert [(p.side, p.size, p.entry_px) for p in result.open_at_end] == \
        [(session.position.side, session.position.size, session.position.entry_px)]
    assert result.last_prices["BTC"] == session.sim_prices[-1]
    assert result.priced.get("l2Book", 0) > 0 and len(result.fills) == 7 and result.handler_errors == 0


def test_the_paper_rule_alone_fills_at_the_slippage_limit(session: Session, cooldown: Any) -> None:
    """`use_book=False` (`--fills paper`): no book walked, every fill at the reference price moved
    by the slippage, never better than the dry run's fill on the recorded book."""
    result = backtest.run(session.settings, session.files, use_book=False, gap_after_s=GAP_AFTER_S,
                          timer_tick_s=TICK_S)
    assert set(result.priced) == {"paper"}
    first_live, first = session.trades[0], result.report.trades[0]
    assert first.side == first_live.side and first.size == first_live.size
    assert first.entry_px >= first_live.entry_px


def test_two_backtests_give_the_same_trades(session: Session, cooldown: Any) -> None:
    runs = [backtest.run(session.settings, session.files, gap_after_s=GAP_AFTER_S, timer_tick_s=TICK_S)
            for _ in range(2)]
    a, b = runs
    assert a.report.trades == b.report.trades
    assert [(f.time_ms, f.side, f.size, f.px, f.fee, f.priced_by) for f in a.fills] == \
        [(f.time_ms, f.side, f.size, f.px, f.fee, f.priced_by) for f in b.fills]
    assert a.equity == b.equity and a.prices == b.prices and a.gaps == b.gaps and a.max_drawdown == b.max_drawdown


def test_the_silence_is_a_gap_in_the_report_and_the_picture(session: Session, cooldown: Any,
                                                             tmp_path: Path) -> None:
    result = backtest.run(session.settings, session.files, use_book=False, gap_after_s=GAP_AFTER_S,
                          timer_tick_s=TICK_S)
    assert len(result.gaps) == 1 and SILENCE_S - 0.5 < result.gaps[0].duration_s < SILENCE_S + 5
    text = format_summary(result)
    assert "gaps (no frame for over 2.5 s" in text and "no prices, no exits could fire" in text
    assert any(v is None for _, v in result.prices["BTC"])  # the price line breaks there, not bridged
    pytest.importorskip("plotly")
    html = write_html(backtest_chart(result), tmp_path / "report.html").read_text()
    assert "no data" in html


def test_html_report_has_price_entries_exits_and_equity(session: Session, cooldown: Any, tmp_path: Path) -> None:
    pytest.importorskip("plotly")
    result = backtest.run(session.settings, session.files, timer_tick_s=TICK_S)
    path = write_html(backtest_chart(result), tmp_path / "out" / "bt.html")
    html = path.read_text()
    for name in ('"name":"BTC price"', '"name":"BTC entries"', '"name":"BTC exits"', '"name":"equity"'):
        assert name in html
    for reason in ("trailing_stop", "stop_loss", "take_profit"):
        assert reason in html
    assert "plotly.js" in html or "Plotly" in html  # the library is inside: one self-contained file
    assert os.stat(path).st_size > 1_000_000


def test_the_simulator_replays_the_recording(session: Session) -> None:
    """`--replay` detects recorded frames: the live trades come out again, in order."""
    sim = SimServer(SimConfig(port=0, seed=7, replay_path=tuple(map(str, session.files)), replay_speed=50.0))
    sim.start()
    try:
        wait_until(lambda: sim.stats()["replayed_trades"] >= len(session.sim_prices), 20)
        assert sim.engine.prices["BTC"] == session.sim_prices[-1]
    finally:
        sim.stop()


def test_a_stuck_recorder_never_holds_up_the_socket_thread(tmp_path: Path) -> None:
    sim = SimServer(SimConfig(port=0, seed=3, feed=False, start_prices={"BTC": D("50000")}))
    sim.start()
    recorder = StuckDisk(str(tmp_path / "frames"), capacity=20)
    events: queue.Queue[Any] = queue.Queue(maxsize=100_000)
    client = HyperliquidWebSocketClient(sim.ws_url, [{"type": "trades", "coin": "BTC"}], events, recorder=recorder)
    try:
        client.start()
        wait_until(lambda: client.stats().subscriptions_confirmed == 1, 10)
        started = time.monotonic()
        sim.emit_trades("BTC", 500, rate_hz=2000)
        seen: list[Any] = []
        wait_until(lambda: seen.extend(drain(events)) or sum(type(e) is ev.Trade and not e.replay for e in seen) >= 500,
                   15)
        assert time.monotonic() - started < 10
        stats = recorder.stats()
        assert stats.dropped > 0 and stats.written == 0 and stats.queued == 20  # bounded, counted
        assert client.stats().dropped_market_data == 0  # the stream lost nothing
    finally:
        recorder.release.set()
        client.stop()
        recorder.stop()
        sim.stop()
    assert recorder.stats().written >= 20  # what waited, then whatever came after the release

