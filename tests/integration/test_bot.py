"""The bot end to end against the simulator on 127.0.0.1: entries, trailing exits, gaps,
REST fallback and recovery, dry run, and the process-level contract (signals, instance lock)."""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

import stream_events as ev
from harness.bot import make_bot, orders_sent
from harness.waiting import wait_until
from hyperliquid_sim import SimServer

ROOT = Path(__file__).resolve().parents[2]


def test_long_entry_trailing_follows_then_exit_on_reversal(sim: SimServer, tmp_path: Path) -> None:
    h = make_bot(sim, tmp_path)
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        entry = h.trader.position.entry_px
        for px in ("50100", "50300", "50500"):
            sim.set_price("BTC", px)
            wait_until(lambda px=px: h.trader.current_price == D(px), 5, h.step)
        assert h.trader.position.trailing.high_water == D("50500")
        saved = h.store.load_position("BTC")
        assert saved is not None and saved.high_water == D("50500")  # restart-safe mark
        sim.set_price("BTC", "50400")  # 0.2 % below the top: inside the 0.5 % trail
        wait_until(lambda: h.trader.current_price == D("50400"), 5, h.step)
        assert h.trader.position is not None
        sim.set_price("BTC", "50200")  # 0.59 % below the top: trailing stop
        wait_until(lambda: h.trader.position is None, 5, h.step)
        sent = orders_sent(sim)
        exit_order = sent[-1]["action"]["orders"][0]
        assert exit_order["r"] is True and exit_order["b"] is False and "c" in exit_order
        assert h.store.load_position("BTC") is None
        assert entry > 0
    finally:
        h.close()


class ShortOnce:
    name = "short_once"

    def __init__(self) -> None:
        self.fired = False

    def on_candles(self, candles, price, has_position):  # type: ignore[no-untyped-def]
        if self.fired:
            return None
        self.fired = True
        return "short"


def test_short_stop_loss_on_a_gap(sim: SimServer, tmp_path: Path) -> None:
    h = make_bot(sim, tmp_path)
    h.trader.entries.strategy = ShortOnce()
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        assert h.trader.position.side == "short"
        sim.set_price("BTC", "52000")  # gaps 4 % through the 1 % stop in one print
        wait_until(lambda: h.trader.position is None, 5, h.step)
        exit_order = orders_sent(sim)[-1]["action"]["orders"][0]
        assert exit_order["b"] is True and exit_order["r"] is True
        assert D(exit_order["p"]) >= D("52000")  # a buy-to-close IOC priced above the gap
    finally:
        h.close()


def test_websocket_outage_falls_back_to_rest_and_recovers(sim: SimServer, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    h = make_bot(sim, tmp_path)
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        sim.silence()  # TCP up, nothing flowing
        wait_until(lambda: h.bot.fallback, 5, h.step)
        assert "falling back to REST polling" in caplog.text
        sim.set_price("BTC", "49000")  # only REST can see this: the stop must still fire
        wait_until(lambda: h.trader.position is None, 5, h.step)
        assert h.trader.price_source == "rest"
        sim.unsilence()
        sim.set_price("BTC", "49010")
        wait_until(lambda: not h.bot.fallback, 15, lambda: (sim.set_price("BTC", "49010"), h.step()))
        assert "WebSocket recovered; leaving REST fallback" in caplog.text
    finally:
        h.close()


def test_dry_run_sends_no_exchange_request(sim: SimServer, tmp_path: Path) -> None:
    h = make_bot(sim, tmp_path, dry_run=True)
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        sim.set_price("BTC", "49000")
        wait_until(lambda: h.trader.position is None, 5, h.step)
        assert sim.exchange_log() == []
        paper = [f for f in h.store.fills() if f["paper"]]
        assert len(paper) == 2 and {f["side"] for f in paper} == {"buy", "sell"}
    finally:
        h.close()


def test_fills_queued_at_stop_are_journaled_and_market_data_dropped(sim: SimServer, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    h = make_bot(sim, tmp_path, strategy={"name": "ema_cross"})
    try:
        h.bot.ws.stop()  # nothing else arrives: the queue holds exactly what the test puts
        while not h.bot.events.empty():
            h.bot.events.get_nowait()
        fill = ev.Fill("BTC", D("50000"), D("0.004"), "buy", 1_700_000_000_000, 11, 987654, None, D("0.1"),
                       D(0), "Open Long", D(0), True, False, 0)
        h.bot.events.put(ev.Trade("BTC", D("1"), D("1"), "buy", 1_700_000_000_001, 5, 0))
        h.bot.events.put(fill)
        h.bot.stop_event.set()
        h.bot.run()  # returns at once: stopping
        h.bot.shutdown()
        assert [(f["tid"], f["size"]) for f in h.store.fills()] == [("987654", D("0.004"))]
        assert h.trader.current_price != D("1") and h.bot.events.empty()
        assert "stopping: 1 queued fill(s) journaled" in caplog.text
    finally:
        h.close()


def test_stop_saves_the_position_even_when_journaling_queued_fills_fails(
        sim: SimServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import sqlite3

    h = make_bot(sim, tmp_path)
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        h.bot.ws.stop()
        h.store.clear_position("BTC")  # so that what is on disk afterwards was written by shutdown()

        def disk_full(**kw: Any) -> bool:
            raise sqlite3.OperationalError("database or disk is full")
        h.store.record_fill = disk_full  # type: ignore[method-assign]
        h.bot.events.put(ev.Fill("BTC", D("50000"), D("0.004"), "buy", 1_700_000_000_000, 11, 987655, None, D(0),
                                 D(0), "Open Long", D(0), True, False, 0))
        h.bot.shutdown()  # no exception: it runs in a `finally` and must not hide why the loop ended
        saved = h.store.load_position("BTC")
        assert saved is not None and saved.size == h.trader.position.size
        assert "not writable: journaling a fill failed (OperationalError: database or disk is full)" in caplog.text
        assert "state write(s) could not be saved" in caplog.text  # kept in memory until then
    finally:
        h.close()


def _config(tmp_path: Path, sim: SimServer) -> Path:
    cfg = json.loads((ROOT / "config" / "config.example.json").read_text())
    cfg["api"] = {"rest_url": sim.rest_url}
    cfg["health"] = {"enabled": True, "host": "127.0.0.1", "port": 0}
    cfg["logging"] = {"file": str(tmp_path / "bot.log"), "level": "INFO"}
    cfg["state"] = {"path": str(tmp_path / "bot.db")}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def test_process_sigterm_exits_0_quickly_and_second_instance_exits_0(sim: SimServer, tmp_path: Path) -> None:
    cfg = _config(tmp_path, sim)
    log_path = tmp_path / "bot.log"
    proc = subprocess.Popen([sys.executable, str(ROOT / "trading_bot.py"), "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: log_path.exists() and "WebSocket connected successfully" in log_path.read_text(), 20)
        second = subprocess.run([sys.executable, str(ROOT / "trading_bot.py"), "--config", str(cfg)], cwd=ROOT,
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 0
        assert f"another instance is running (pid {proc.pid}); exiting" in log_path.read_text()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 5
        text = log_path.read_text()
        assert "stopped cleanly" in text
        assert text.count("WebSocket connected successfully") == 1
    finally:
        if proc.poll() is None:
            proc.kill()


def test_an_exit_is_priced_from_the_book_when_the_last_trade_is_stale(sim: SimServer, tmp_path: Path) -> None:
    import stream_events as ev
    h = make_bot(sim, tmp_path)
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        # The book has fallen to 49000 while the last print (the stop's trigger) still reads 49400.
        h.bot.handle(ev.Bbo("BTC", D("49000"), D("49010"), 1, 0))
        h.bot.handle(ev.Trade("BTC", D("49400"), D("0.001"), "sell", 4 * 10**12, 10**12, 0))  # a later trade than any the sim printed
        exit_order = orders_sent(sim)[-1]["action"]["orders"][0]
        assert exit_order["r"] is True and D(exit_order["p"]) == D("48755")  # the bid less the 0.5 % cap
        assert h.trader.position is None  # filled within the cap
        h.bot.publish_health()
        market = h.bot.health_snapshot()["markets"]["BTC"]
        assert (market["bid"], market["ask"]) == (49000.0, 49010.0) and market["spread_bps"] == 2.04
    finally:
        h.close()


def test_without_a_fresh_book_the_exit_is_priced_from_the_last_trade(sim: SimServer, tmp_path: Path) -> None:
    import stream_events as ev
    h = make_bot(sim, tmp_path, websocket={"enabled": True})
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        h.trader.quotes.bid, h.trader.quotes.bbo_at = D("49000"), h.bot.clock() - 60  # a minute old: not a price
        h.bot.handle(ev.Trade("BTC", D("49400"), D("0.001"), "sell", 4 * 10**12, 10**12, 0))  # a later trade than any the sim printed
        assert D(orders_sent(sim)[-1]["action"]["orders"][0]["p"]) == D("49153")  # 49400 less 0.5 %
    finally:
        h.close()
