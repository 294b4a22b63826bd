"""The operator's view on the simulator: `--check-config --online` asks the exchange and signs
nothing, a start refuses the same configs before anything is signed, the banner says what is at
risk, the status line comes every minute, the shutdown line names what protects each position,
and a cron start while a bot runs is not refused for the port the running bot holds."""
from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import eth_account
import pytest

import trading_bot
from harness.bot import make_bot
from harness.waiting import wait_until
from hyperliquid_sim import SimServer
from version import __version__

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, sim: SimServer, **over: Any) -> Path:
    doc: dict[str, Any] = {"network": "local", "dry_run": False, "api": {"rest_url": sim.rest_url},
                           "strategy": {"name": "always_long"}, "health": {"enabled": False},
                           "state": {"path": str(tmp_path / "bot.db")}, "logging": {"file": str(tmp_path / "bot.log")}}
    doc.update(over)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


def _signed(sim: SimServer) -> list[dict]:
    return sim.exchange_log()


def test_check_config_online_asks_the_exchange_and_signs_nothing(
        sim: SimServer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = _config(tmp_path, sim, markets={"BTC": {}, "SOL": {"trading": {"leverage": 20}}})
    assert trading_bot.main(["--config", str(config), "--check-config", "--online"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["checks"]["online"] == "passed" and view["checks"]["version"] == __version__
    assert _signed(sim) == []


MASTER = eth_account.Account.create().address
ONLINE_CASES = [
    ("coin not listed", {"markets": {"BTC": {}, "DOGEX": {}}}, ["markets.DOGEX", "not listed"]),
    ("leverage over the coin's maximum", {"markets": {"BTC": {}, "SOL": {"trading": {"leverage": 25}}}},
     ["markets.SOL.trading.leverage", "<= 20", "got 25"]),
    ("one market's leverage over the maximum", {"trading": {"leverage": 50, "stop_loss_pct": 1}, "symbol": "SOL"},
     ["trading.leverage", "<= 20"]),
    ("key no API wallet of the account", {"account": {"address": MASTER}}, [MASTER, "may not trade for account"]),
]


@pytest.mark.parametrize("name,over,words", ONLINE_CASES, ids=[c[0] for c in ONLINE_CASES])
def test_check_config_online_refuses_what_a_start_refuses_and_nothing_is_signed(
        sim: SimServer, tmp_path: Path, capsys: pytest.CaptureFixture, name: str, over: dict, words: list[str]) -> None:
    config = _config(tmp_path, sim, **over)
    assert trading_bot.main(["--config", str(config), "--check-config", "--online"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines
    with pytest.raises(trading_bot.StartError) as err:  # a start: refused before anything is signed
        make_bot(sim, tmp_path, **({"symbol": None, **over} if "markets" in over else over))
    assert err.value.code == 2 and all(w in str(err.value) for w in words)
    assert _signed(sim) == []  # no updateLeverage, no order


def test_a_strategy_typo_fails_before_anything_is_signed(sim: SimServer, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    config = _config(tmp_path, sim, strategy={"name": "ema_cross", "params": {"fast": 9, "slwo": 21}})
    assert trading_bot.main(["--config", str(config)]) == 2
    assert capsys.readouterr().err.strip() == \
        "config: strategy.params.slwo is not a parameter of strategy ema_cross; expected one of: fast, slow"
    assert _signed(sim) == []


def test_banner_status_line_and_shutdown_line(sim: SimServer, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    h = make_bot(sim, tmp_path, trading={"exits_on_exchange": True})
    try:
        banner = caplog.text
        assert f"==== hlbot {__version__} starting" in banner
        assert "mode       live on the local simulator" in banner
        assert "market BTC  always_long on 1m candles; 200 USD a trade, 3x cross" in banner
        assert "exits SL 1%, TP 5%, trailing 0.5%; exchange-side stops rest: yes, SL and TP" in banner
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None and len(h.trader.position.protective_cloids) == 2, 10, h.step)
        sim.set_price("BTC", "50100")
        wait_until(lambda: str(h.trader.current_price) == "50100", 5, h.step)
        caplog.clear()
        h.bot.step(timeout_s=0.01)
        assert "status:" not in caplog.text  # once a minute, not every turn
        h.bot.status_timer.next_at = 0.0  # the minute is up
        h.bot.step(timeout_s=0.01)
        status = [r.getMessage() for r in caplog.records if r.getMessage().startswith("status:")]
        assert len(status) == 1, status
        pos = h.trader.position
        assert status[0].startswith(f"status: BTC long {pos.size} at {pos.entry_px} (now 50100, uPnL +")
        assert "exchange-side SL" in status[0] and "TP" in status[0] and "resting" in status[0]
        assert "prices: WebSocket connected" in status[0]
        caplog.clear()
        h.bot.shutdown()
        assert f"stopping with an open position: BTC long {pos.size} at {pos.entry_px}: exchange-side SL" \
            in caplog.text
        assert "resting" in caplog.text
    finally:
        h.close()


def test_shutdown_warns_about_an_unprotected_position(sim: SimServer, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    h = make_bot(sim, tmp_path)  # exits_on_exchange: false
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        caplog.clear()
        caplog.set_level(logging.INFO)
        h.bot.shutdown()
        line = next(r for r in caplog.records if r.getMessage().startswith("stopping with an open position"))
        assert line.levelno == logging.WARNING and "NOT protected while the bot is down" in line.getMessage()
    finally:
        h.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_running_bot_keeps_its_port_from_refusing_a_cron_start(sim: SimServer, tmp_path: Path) -> None:
    port = _free_port()
    config = _config(tmp_path, sim, health={"enabled": True, "port": port}, websocket={"enabled": True})
    log_path = tmp_path / "bot.log"
    command = [sys.executable, str(ROOT / "trading_bot.py"), "--config", str(config)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: log_path.exists() and f"health endpoint on http://127.0.0.1:{port}" in log_path.read_text(),
                   20)
        second = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert second.returncode == 0, second.stderr
        assert f"another instance is running (pid {proc.pid}); exiting" in log_path.read_text()
        check = subprocess.run(command + ["--check-config"], capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert check.returncode == 0, check.stderr
        assert any(f"health.port {port}" in note for note in json.loads(check.stdout)["checks"]["notes"])
        wait_until(lambda: "position opened" in log_path.read_text(), 20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        text = log_path.read_text()
        assert "==== hlbot" in text and "stopping with an open position: BTC long" in text
    finally:
        if proc.poll() is None:
            proc.kill()


def test_version_prints_the_version_and_exits_0() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "trading_bot.py"), "--version"], capture_output=True, text=True,
                          timeout=30, cwd=ROOT)
    assert (done.returncode, done.stdout.strip()) == (0, f"hlbot {__version__}")
