"""The backtest on made-up recordings: the server's replay is history, not a price; the loop's idle
wake-ups; gaps reported, not bridged; fills from a recorded book; the summary, the picture, the
command line (plotly or not) and `--report --html` from a journal."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

import backtest
import entries
from backtest_parts import BacktestExchange
from backtest_report import backtest_command, format_summary, report_command
from config_load import settings_from_dict
from recording import frame_line
from state import StateStore
from order_book import Book

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_767_225_600_000_000_000  # 2026-01-01 00:00:00 UTC
S = 1_000_000_000


def _settings(**trading: Any) -> Any:
    return settings_from_dict({"symbol": "BTC", "websocket": {"enabled": True, "stale_after": 10.0},
                               "strategy": {"name": "always_long"},
                               "trading": {"stop_loss_pct": 1.0, "take_profit_pct": 2.0, "trailing_stop_pct": None,
                                           "slippage_pct": 0.1, "order_size_usd": 200, **trading}})


def _trades(t_ns: int, *trades: tuple[str, int], first_tid: int = 0) -> tuple[int, str]:
    data = [{"coin": "BTC", "side": "B", "px": px, "sz": "0.01", "hash": "0x0", "time": t_ns // 10**6 - 5 + i,
             "tid": first_tid + i, "users": []} for i, (px, _) in enumerate(trades)]
    return t_ns, json.dumps({"channel": "trades", "data": data})


def _ack(t_ns: int) -> tuple[int, str]:
    return t_ns, json.dumps({"channel": "subscriptionResponse",
                             "data": {"method": "subscribe", "subscription": {"type": "trades", "coin": "BTC"}}})


def _recording(path: Path, frames: list[tuple[int, str]]) -> Path:
    with gzip.open(path, "wt") as f:
        f.writelines(frame_line(t, raw) for t, raw in frames)
    return path


def test_the_servers_replay_is_history_and_idle_wakeups_enter(tmp_path: Path) -> None:
    """The first trades frame after the ack is the server's replay: its old trades (one far under
    any stop) never act; the newest is the price. The entry after a stop comes at the loop's idle
    wake-up once the cooldown is over, before the next frame, at the price of that moment."""
    frames = [_ack(T0), _trades(T0 + S // 10, ("40000", 0), ("50000", 0), first_tid=1),
              _ack(T0 + S), _trades(T0 + S + S // 10, ("48000", 0), ("50100", 0), first_tid=5),  # a reconnect
              _trades(T0 + 2 * S, ("49000", 0), first_tid=10),       # stop-loss of the first entry
              _trades(T0 + 20 * S, ("49100", 0), first_tid=11)]      # long after the cooldown
    path = _recording(tmp_path / "f.jsonl.gz", frames)
    result = backtest.run(_settings(), [path])
    trades = result.report.trades
    assert [(t.entry_px, t.exit_px, t.exit_reason) for t in trades] == [(D("50050"), D("48951"), "stop_loss")]
    assert trades[0].opened_ms == (T0 + S // 10) // 10**6
    reentry = result.open_at_end[0]
    assert reentry.entry_px == D("49049")  # 49000 + 0.1 %: the price when the cooldown ended
    cooled = (T0 + 2 * S) // 10**6 + int(entries.ENTRY_COOLDOWN_S * 1000)
    assert cooled <= reentry.opened_ms <= cooled + int(backtest.TIMER_TICK_S * 1000)
    assert result.last_prices == {"BTC": D("49100")}


def test_a_silence_is_a_gap_reported_and_not_bridged(tmp_path: Path) -> None:
    frames = [_ack(T0), _trades(T0 + S, ("50000", 0), first_tid=1), _trades(T0 + 2 * S, ("50010", 0), first_tid=2),
              _trades(T0 + 300 * S, ("50020", 0), first_tid=3), _trades(T0 + 301 * S, ("50030", 0), first_tid=4)]
    result = backtest.run(_settings(), [_recording(tmp_path / "f.jsonl.gz", frames)])
    assert [(g.start_ms, g.end_ms) for g in result.gaps] == [((T0 + 2 * S) // 10**6, (T0 + 300 * S) // 10**6)]
    assert result.gap_after_s == 30.0  # 3x websocket.stale_after
    assert (result.gaps[0].start_ms + 1, None) in result.prices["BTC"]
    text = format_summary(result)
    assert "gaps (no frame for over 30 s" in text and "2026-01-01 00:00:02 to 2026-01-01 00:05:00 (4m 58s)" in text


def test_the_exchange_is_the_paper_exchange_keeping_the_account() -> None:
    """Fills are PaperExchange's (the market's fresh book walked, else the slippage rule); the
    backtest's exchange adds what each was priced by and the paper account."""
    book: list[Book | None] = [Book(bids=((D("49990"), D("0.01")),),
                                    asks=((D("50010"), D("0.01")), (D("50020"), D("0.01")), (D("50100"), D("5"))),
                                    at=0.0)]
    ex = BacktestExchange(lambda coin: 5, lambda: T0, lambda coin: book[0])
    result = ex.market_order("BTC", True, D("0.02"), D("0.1"), reference_px=D("50010"))[0]
    assert (result.total_size, result.avg_px) == (D("0.02"), D("50015"))  # 0.01 at 50010, 0.01 at 50020
    book[0] = None  # no fresh book: the slippage rule
    result = ex.market_order("BTC", False, D("0.02"), D("0.1"), reference_px=D("50000"))[0]
    assert result.avg_px == D("49950")
    assert [f.priced_by for f in ex.fills] == ["l2Book", "paper"] and dict(ex.priced) == {"l2Book": 1, "paper": 1}
    assert ex.open == {} and round(ex.cash, 6) == round(-0.02 * 50015 + 0.02 * 49950 - float(sum(f.fee for f in ex.fills)), 6)


def test_backtest_command_prints_the_summary_and_the_html_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("plotly")
    frames = [_ack(T0), _trades(T0 + S, ("50000", 0), first_tid=1), _trades(T0 + 2 * S, ("49000", 0), first_tid=2)]
    path = _recording(tmp_path / "f.jsonl.gz", frames)
    assert backtest_command(_settings(), [str(path)], str(tmp_path / "bt.html"), use_book=True) == 0
    out = capsys.readouterr().out
    assert "trades: 1  win rate: 0.0%" in out and "max drawdown:" in out and "last price: BTC 49000" in out
    assert f"html: {tmp_path / 'bt.html'}" in out and (tmp_path / "bt.html").stat().st_size > 1_000_000


def test_without_plotly_the_summary_still_prints(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "plotly", None)  # import plotly... raises ImportError
    frames = [_ack(T0), _trades(T0 + S, ("50000", 0), first_tid=1)]
    assert backtest_command(_settings(), [str(_recording(tmp_path / "f.jsonl.gz", frames))], None, True) == 0
    out = capsys.readouterr().out
    assert "trades: 0" in out
    assert out.strip().endswith("html: not written: plotly is not installed (pip install -r requirements-dev.txt)")


def test_a_missing_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert backtest_command(_settings(), [str(tmp_path / "nope.gz")], None, True) == 2
    assert "is not a file" in capsys.readouterr().err


def test_report_html_draws_the_journal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("plotly")
    store = StateStore(str(tmp_path / "bot.db"))
    store.open()
    for tid, side, px, t in (("1", "buy", "50000", 1000), ("2", "sell", "50500", 5000)):
        store.record_fill(tid=tid, coin="BTC", px=D(px), size=D("0.01"), side=side, time_ms=T0 // 10**6 + t,
                          oid=None, cloid=None, fee=D("0.2"), closed_pnl=None, paper=False)
    store.close()
    settings = settings_from_dict({"state": {"path": str(tmp_path / "bot.db")}}, source=str(tmp_path / "cfg.json"))
    assert report_command(settings, "") == 0
    out = capsys.readouterr().out
    html = tmp_path / "reports" / "journal.html"
    assert f"html: {html}" in out
    text = html.read_text()
    assert '"name":"BTC price"' in text and '"name":"BTC exits"' in text and "outside the bot" in text


def test_the_command_line_backtest_needs_no_key_and_no_network(tmp_path: Path) -> None:
    frames = [_ack(T0), _trades(T0 + S, ("50000", 0), first_tid=1), _trades(T0 + 2 * S, ("49000", 0), first_tid=2)]
    recording = _recording(tmp_path / "frames-20260101-00.jsonl.gz", frames)
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"network": "mainnet", "dry_run": False, "symbol": "BTC",
                                  "websocket": {"enabled": True}, "strategy": {"name": "ema_cross"}}))
    env = {k: v for k, v in os.environ.items() if k != "HL_PRIVATE_KEY"}
    done = subprocess.run([sys.executable, str(ROOT / "trading_bot.py"), "--config", str(config), "--backtest",
                           str(recording), "--html", str(tmp_path / "bt.html")], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "backtest: 1 file(s), 3 frames (2 with trades)" in done.stdout and "last price: BTC 49000" in done.stdout
    assert "html: " in done.stdout


def _book(t_ns: int, bid: str, ask: str) -> tuple[int, str]:
    return t_ns, json.dumps({"channel": "l2Book", "data": {"coin": "BTC", "time": t_ns // 10**6, "levels": [
        [{"px": bid, "sz": "5", "n": 1}], [{"px": ask, "sz": "5", "n": 1}]]}})


@pytest.mark.parametrize("book_after_us, entry_px", [(200, D("50010")), (2000, D("50050"))])
def test_a_burst_is_one_loop_turn(tmp_path: Path, book_after_us: int, entry_px: D) -> None:
    """The loop handles what is queued before its timers run: a book 0.2 ms after the trades is in
    the entry's turn (it walks the book), one 2 ms later is not (the slippage rule)."""
    start = T0 + S // 10
    frames = [_ack(T0), _trades(start, ("50000", 0), first_tid=1), _book(start + book_after_us * 1000, "49990", "50010")]
    result = backtest.run(_settings(), [_recording(tmp_path / "f.jsonl.gz", frames)])
    assert result.open_at_end[0].entry_px == entry_px


def _bbo(t_ns: int, bid: str, ask: str) -> tuple[int, str]:
    return t_ns, json.dumps({"channel": "bbo", "data": {"coin": "BTC", "time": t_ns // 10**6,
                                                        "bbo": [{"px": bid, "sz": "1", "n": 1},
                                                                {"px": ask, "sz": "1", "n": 1}]}})


def test_a_post_only_entry_fills_as_a_maker_in_the_backtest_and_the_account_adds_up(tmp_path: Path) -> None:
    frames = [_ack(T0), _trades(T0 + S // 10, ("50000", 0), first_tid=1),  # the replay: history
              _bbo(T0 + S // 2, "49990", "50010"),
              _trades(T0 + S, ("50000", 0), first_tid=2),        # live: the signal; it rests at the bid
              _bbo(T0 + S + S // 2, "49990", "50010"),
              _trades(T0 + 2 * S, ("49990", 0), first_tid=3),    # at its price: the queue ahead fills first
              _trades(T0 + 3 * S, ("49985", 0), first_tid=4),    # through it: filled, a maker
              _bbo(T0 + 3 * S + S // 2, "49980", "49990"),
              _trades(T0 + 4 * S, ("49400", 0), first_tid=5)]    # through the 1 % stop: an IOC exit
    result = backtest.run(_settings(entry_order="post_only"), [_recording(tmp_path / "f.jsonl.gz", frames)])
    buy, sell = result.fills[0], result.fills[1]
    assert (buy.side, buy.px, buy.priced_by, buy.reduce_only) == ("buy", D("49990"), "maker", False)
    assert buy.fee == (buy.size * D("49990") * D("0.00015")).quantize(D("0.000001"))
    assert (sell.side, sell.reduce_only) == ("sell", True) and sell.size == buy.size
    (trade,) = result.report.trades
    assert (trade.entry_px, trade.exit_reason) == (D("49990"), "stop_loss")
    assert not result.open_at_end or result.open_at_end[0].opened_ms > buy.time_ms  # no phantom of the first
