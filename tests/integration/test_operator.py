"""The operator's side of a bot on the simulator (issue 18): notifications to a local webhook and a
fake Telegram API (start, entry, exit, exit_failed, fallback, recovered, stop), the trading loop's
timing while both hang, and `--ctl status|pause|resume|close` against a running bot.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import statistics
import subprocess
import sys
import threading
import time
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

import ctl
import entries
import stream_events as stream
from ctl import CtlServer, socket_path
from hyperliquid_sim import SimServer
from signing import L1Signer
from harness.bot import Harness, make_bot
from harness.faultproxy import Fault, FaultProxy
from harness.receivers import Receiver
from harness.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "123456789:AAHfake-token_for_tests_only_0123456789"
KEY = bytes(range(1, 33))
FAST_WS = {"enabled": True, "reconnect_interval": 0.1, "max_backoff": 0.5, "stale_after": 1.0,
           "fallback_poll_interval": 0.1, "data_timeout": 2.0, "ping_interval": 1.0, "pong_timeout": 1.0,
           "subscribe_timeout": 1.0}


def ioc_exit(body: dict[str, Any]) -> bool:
    """The bot's exit: a reduce-only IOC (not an exchange-side trigger)."""
    action = body.get("action", {})
    if action.get("type") != "order":
        return False
    order = action["orders"][0]
    return bool(order.get("r")) and order.get("t", {}).get("limit", {}).get("tif") == "Ioc"


class BotProcess:
    """trading_bot.py in a subprocess on the test's simulator; `ctl(...)` runs `--ctl` against it."""

    def __init__(self, tmp_path: Path, rest_url: str, ws_url: str, trading: dict[str, Any] | None = None,
                 **over: Any) -> None:
        cfg = json.loads((ROOT / "config" / "config.example.json").read_text())
        cfg.update({"api": {"rest_url": rest_url, "ws_url": ws_url}, "websocket": FAST_WS,
                    "health": {"enabled": False}, "logging": {"file": str(tmp_path / "bot.log"), "level": "INFO"},
                    "state": {"path": str(tmp_path / "bot.db")}})
        cfg["trading"].update({"stop_loss_pct": 1.0, "take_profit_pct": 5.0, "trailing_stop_pct": 0.5, **(trading or {})})
        cfg.update(over)
        self.config = tmp_path / "config.json"
        self.config.write_text(json.dumps(cfg))
        self.log = tmp_path / "bot.log"
        self.state = str(tmp_path / "bot.db")
        self.env = {**os.environ, "HL_PRIVATE_KEY": KEY.hex(), "HLBOT_TG_TOKEN": TOKEN}
        self.address = L1Signer(KEY, is_mainnet=False).address
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "BotProcess":
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "trading_bot.py"), "--config", str(self.config)],
                                     cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def ctl(self, *words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(ROOT / "trading_bot.py"), "--config", str(self.config), "--ctl",
                               *words], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=30)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def btc_size(sim: SimServer, address: str) -> D:
    return D(sim.account(address)["positions"].get("BTC", {}).get("szi", "0"))


# ---- notifications ------------------------------------------------------------------------------

def test_a_running_bot_notifies_webhook_and_telegram(sim: SimServer, tmp_path: Path) -> None:
    with Receiver() as hook, Receiver(telegram_token=TOKEN) as tg, FaultProxy(upstream=sim.rest_url) as proxy:
        # No exchange-side stop: the one at 49500 would close the position before the bot's retry.
        bot = BotProcess(tmp_path, proxy.url, sim.ws_url, trading={"exits_on_exchange": False}, notify={
            "webhook_url": hook.url + "/hlbot?src=test",
            "telegram": {"bot_token_env": "HLBOT_TG_TOKEN", "chat_id": -1001234567890, "api_url": tg.url}})
        try:
            bot.start()
            start = hook.wait_for("start", 30)
            assert start["market"] is None and start["account"] == bot.address and start["network"] == "local"
            sim.set_price("BTC", "50000")
            entry = hook.wait_for("entry", 10)
            assert (entry["market"], entry["side"], entry["size"]) == ("BTC", "long", 0.004)
            rule = proxy.inject("/exchange", Fault.STATUS_BEFORE, status=400, body="refused by the test",
                                match=ioc_exit)
            sim.set_price("BTC", "49000")  # through the 1 % stop: the exit is refused once, then retried
            failed = hook.wait_for("exit_failed", 10)
            exit_ = hook.wait_for("exit", 10)
            assert rule.hits == 1 and failed["market"] == "BTC" and failed["attempt"] == 1
            assert exit_["reason"] == "stop_loss" and exit_["entry_px"] == entry["price"]
            assert exit_["text"].startswith("BTC closed by stop_loss: long 0.004 at ")
            sim.silence()
            fallback = hook.wait_for("fallback", 10)
            assert fallback["text"] == "WebSocket starved for 1.0s; falling back to REST polling"
            sim.unsilence()
            wait_until(lambda: hook.bodies("recovered"), 15, lambda: sim.set_price("BTC", "49010"))
            assert hook.bodies("recovered")[0]["text"] == "WebSocket recovered; leaving REST fallback"
            assert bot.stop() == 0
            stop = hook.wait_for("stop", 5)
            assert stop["text"].startswith("hlbot stopped; ")
        finally:
            bot.kill()
        order = ["start", "entry", "exit_failed", "exit", "fallback", "recovered", "stop"]
        events = [b["event"] for b in hook.bodies() if b["event"] in order]
        assert [e for e in order if e in events] == order
        assert all(path == "/hlbot?src=test" for path, _ in hook.received)
        assert all(set(b) >= {"event", "market", "text", "time_ms"} for b in hook.bodies())
        tg.wait_for(text="hlbot stopped", timeout_s=5)
        assert [b["text"] for b in hook.bodies()] == tg.texts()  # the same events, as messages
        assert {path for path, _ in tg.received} == {f"/bot{TOKEN}/sendMessage"}
        assert {b["chat_id"] for _, b in tg.received} == {"-1001234567890"}
        text = bot.log.read_text()
        assert "notifications on: webhook (127.0.0.1), telegram (chat -1001234567890)" in text
        assert TOKEN.split(":")[1] not in text and "src=test" not in text


def exit_cycles(sim: SimServer, h: Harness, cycles: int) -> dict[str, list[float]]:
    """`cycles` entries and stop-loss exits. Returns, in ms: each exit's tick-to-order (the tick
    reaching the socket thread to the exit order being sent), the main thread's handling of each
    event, each pass of the timers that sent an entry and each that did not, and each `notify` call."""
    last_recv_ns, entries_sent = [0], [0]
    figures: dict[str, list[float]] = {"tick_to_order_ms": [], "handle_ms": [], "entry_timers_ms": [],
                                       "idle_timers_ms": [], "notify_ms": []}
    real_handle, real_timers, real_order = h.bot.handle, h.bot._timers, h.bot.rest.market_order
    notifier = h.bot.notifier
    real_notify = notifier.notify

    def notify(*args: Any, **kw: Any) -> None:
        began = time.perf_counter_ns()
        real_notify(*args, **kw)
        figures["notify_ms"].append((time.perf_counter_ns() - began) / 1e6)

    def handle(event: Any) -> None:
        if type(event) is stream.Trade:
            last_recv_ns[0] = event.recv_ns
        began = time.perf_counter_ns()
        real_handle(event)
        figures["handle_ms"].append((time.perf_counter_ns() - began) / 1e6)

    def timers() -> None:
        before, began = entries_sent[0], time.perf_counter_ns()
        real_timers()
        kind = "idle_timers_ms" if entries_sent[0] == before else "entry_timers_ms"
        figures[kind].append((time.perf_counter_ns() - began) / 1e6)

    def market_order(*args: Any, **kw: Any) -> Any:
        if kw.get("reduce_only"):
            figures["tick_to_order_ms"].append((time.monotonic_ns() - last_recv_ns[0]) / 1e6)
        else:
            entries_sent[0] += 1
        return real_order(*args, **kw)

    h.bot.handle, h.bot._timers = handle, timers  # type: ignore[method-assign]
    notifier.notify = notify  # type: ignore[method-assign] # the traders and the loop share this object
    h.bot.rest.market_order = market_order  # type: ignore[method-assign]
    for _ in range(cycles):
        h.trader.entries.enabled = True
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        h.trader.entries.enabled = False  # one entry per cycle
        sim.set_price("BTC", "49000")
        wait_until(lambda: h.trader.position is None, 10, h.step)
    return figures


def test_hanging_endpoints_leave_the_loop_timing_unchanged(sim: SimServer, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entries, "ENTRY_COOLDOWN_S", 0.0)
    monkeypatch.setattr(entries, "ENTRY_EVAL_EVERY_S", 0.0)
    monkeypatch.setenv("HLBOT_TG_TOKEN", TOKEN)
    cycles = 12
    figures = {}
    many = {"max_orders_per_minute": 1000}  # the risk guard would stop the cycles
    plain = make_bot(sim, tmp_path / "plain", trading=many)
    try:
        figures["none"] = exit_cycles(sim, plain, cycles)
    finally:
        plain.close()
    with Receiver(hang=True) as hook, Receiver(hang=True, telegram_token=TOKEN) as tg:
        h = make_bot(sim, tmp_path / "hanging", trading=many, notify={
            "webhook_url": hook.url, "timeout_s": 5.0,
            "telegram": {"bot_token_env": "HLBOT_TG_TOKEN", "chat_id": 42, "api_url": tg.url}})
        h.bot.notifier.start()
        try:
            figures["hanging"] = exit_cycles(sim, h, cycles)
            hook.wait_requests(1, 5)
            tg.wait_requests(1, 5)
            stats = h.bot.notifier.stats()
            assert stats["webhook"]["sent"] == 0 and stats["telegram"]["sent"] == 0  # all still hanging
            assert stats["webhook"]["queued"] >= 2 * cycles - 1  # entries and exits wait behind the first
        finally:
            hook.release()
            tg.release()
            h.bot.notifier.stop()
            h.close()
    summary = {}
    for name, f in figures.items():
        summary[name] = {key: {"p50": round(statistics.median(v), 3), "max": round(max(v), 3), "n": len(v)}
                         for key, v in f.items() if v}
    print("\nloop timing, no notifier vs webhook + Telegram hanging (ms):", json.dumps(summary))
    none, hanging = summary["none"], summary["hanging"]
    # A delivery waited on by the loop would cost a whole timeout (5 s) at the first event.
    assert hanging["tick_to_order_ms"]["max"] < 1000 and hanging["handle_ms"]["max"] < 1000
    assert hanging["tick_to_order_ms"]["p50"] <= 2 * none["tick_to_order_ms"]["p50"] + 2.0
    assert hanging["handle_ms"]["p50"] <= 2 * none["handle_ms"]["p50"] + 0.5
    assert hanging["entry_timers_ms"]["max"] < 1000 and hanging["idle_timers_ms"]["max"] < 1000
    assert hanging["entry_timers_ms"]["p50"] <= 2 * none["entry_timers_ms"]["p50"] + 2.0
    assert hanging["notify_ms"]["n"] >= 2 * cycles and hanging["notify_ms"]["max"] < 5.0  # a put_nowait per endpoint


# ---- --ctl ------------------------------------------------------------------------------------

def ctl_call(h: Harness, path: str, command: str, coin: str | None = None) -> dict[str, Any]:
    """One ctl request from another thread while this one steps the loop (as the bot's main thread)."""
    answer: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: answer.update(ctl.request(path, command, coin)))
    thread.start()
    wait_until(lambda: answer, 10, h.step)
    thread.join(5)
    return answer


def test_ctl_close_takes_the_exit_path_and_pause_stops_entries(sim: SimServer, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entries, "ENTRY_COOLDOWN_S", 0.0)
    h = make_bot(sim, tmp_path)
    server = CtlServer(socket_path(str(tmp_path / "bot.db")), h.bot.desk.requests)
    server.start()
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None and h.trader.exit_cloid is not None, 10, h.step)
        reserved = h.trader.exit_cloid
        status = ctl_call(h, server.path, "status")["status"]
        btc = status["markets"][0]
        assert (btc["coin"], btc["position"]["side"], btc["entries"]) == ("BTC", "long", "on")
        assert status["health"] in ("ok", "degraded") and status["mode"] == "live orders"
        assert ctl_call(h, server.path, "pause") == {
            "ok": True, "message": "entries paused: BTC (exits still run; a restart turns entries back on)"}
        answer = ctl_call(h, server.path, "close", "btc")
        assert answer["ok"] and answer["message"].startswith("BTC: closed long 0.004 (entry ")
        assert h.trader.position is None and btc_size(sim, h.bot.address) == 0
        sent = [e["action"]["orders"][0] for e in sim.exchange_log() if e["action"].get("type") == "order"]
        assert sent[-1]["r"] is True and sent[-1]["c"] == reserved  # reduce-only IOC on the reserved cloid
        assert h.store.order(reserved).reason == "manual close"
        entries_before = len(sent)
        deadline = time.monotonic() + 2.5  # past the strategy's one-second pace, twice: no entry while paused
        while time.monotonic() < deadline:
            h.step()
        assert len([e for e in sim.exchange_log() if e["action"].get("type") == "order"]) == entries_before
        assert ctl_call(h, server.path, "status")["status"]["markets"][0]["entries"] == "paused"
        assert ctl_call(h, server.path, "resume", "BTC")["message"] == "entries on: BTC"
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        assert ctl_call(h, server.path, "close", "DOGE") == {"ok": False,
                                                            "error": "no market DOGE; the bot trades BTC"}
    finally:
        server.stop()
        h.close()


def test_ctl_against_a_bot_process(sim: SimServer, tmp_path: Path) -> None:
    bot = BotProcess(tmp_path, sim.rest_url, sim.ws_url)
    sock = socket_path(bot.state)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # left by a bot killed earlier
    stale.bind(sock)
    stale.close()
    gone = bot.ctl("status")
    assert gone.returncode == 1 and gone.stderr == f"ctl: no bot is running for this config (nobody answers on {sock})\n"
    try:
        bot.start()
        wait_until(lambda: bot.log.exists() and "control socket at" in bot.log.read_text(), 30)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        sim.set_price("BTC", "50000")
        wait_until(lambda: btc_size(sim, bot.address) > 0, 10)
        wait_until(lambda: "long 0.004" in bot.ctl("status").stdout, 10)
        status = bot.ctl("status")
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0].startswith(f"bot      account {bot.address} on local, live orders, up ")
        assert lines[4].split() == ["COIN", "PRICE", "SOURCE", "AGE", "POSITION", "ENTRY", "UPNL", "PROTECTION",
                                    "ENTRIES"]
        row = lines[5].split()
        assert row[:2] == ["BTC", "50000"] and row[4:6] == ["long", "0.004"]
        assert "SL " in lines[5] and "TP " in lines[5] and row[-1] == "on"  # exchange-side stops rest
        paused = bot.ctl("pause")
        assert (paused.returncode, paused.stdout) == (0, "entries paused: BTC (exits still run; a restart turns "
                                                         "entries back on)\n")
        closed = bot.ctl("close", "BTC")
        assert closed.returncode == 0 and closed.stdout.startswith("BTC: closed long 0.004 (entry ")
        assert btc_size(sim, bot.address) == 0
        flat = bot.ctl("status").stdout.splitlines()[5].split()
        assert flat[0] == "BTC" and "flat" in flat and flat[-1] == "paused"
        assert bot.ctl("close").stdout == "no open position\n"
        assert bot.ctl("resume").stdout == "entries on: BTC\n"
        wait_until(lambda: btc_size(sim, bot.address) > 0, 10)  # the strategy enters again
        assert bot.stop() == 0
    finally:
        bot.kill()
    assert not os.path.exists(sock)  # removed at a clean stop
    after = bot.ctl("close")
    assert after.returncode == 1 and after.stdout == ""
    assert after.stderr == f"ctl: no bot is running for this config (no control socket at {sock})\n"
    assert "replaced" in bot.log.read_text() and "operator: closing BTC long 0.004" in bot.log.read_text()


def test_check_config_wants_the_telegram_token_and_ctl_wants_no_key(tmp_path: Path) -> None:
    cfg = {"network": "testnet", "dry_run": False, "health": {"enabled": False},
           "logging": {"file": str(tmp_path / "bot.log")}, "state": {"path": str(tmp_path / "bot.db")},
           "notify": {"telegram": {"bot_token_env": "HLBOT_TG_TOKEN", "chat_id": 42}}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("HL_PRIVATE_KEY", "HLBOT_TG_TOKEN")}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(ROOT / "trading_bot.py"), "--config", str(path), *args], cwd=ROOT,
                              env={**env, **extra}, capture_output=True, text=True, timeout=30)

    # The operator's shell has no key: --ctl still answers (no bot here: exit 1, not a config error).
    ctl_run = run("--ctl", "status")
    assert ctl_run.returncode == 1 and ctl_run.stderr.startswith("ctl: no bot is running for this config")
    missing = run("--check-config", HL_PRIVATE_KEY=KEY.hex())
    assert missing.returncode == 2 and missing.stderr == (
        "config: notify.telegram.bot_token_env names HLBOT_TG_TOKEN, which must hold the Telegram bot token, got an "
        "unset or empty variable\n")
    wrong = run("--check-config", HL_PRIVATE_KEY=KEY.hex(), HLBOT_TG_TOKEN="pasted-the-chat-id-by-mistake")
    assert wrong.returncode == 2 and "pasted" not in wrong.stderr and len(wrong.stderr.splitlines()) == 1
    assert run("--check-config", HL_PRIVATE_KEY=KEY.hex(), HLBOT_TG_TOKEN=TOKEN).returncode == 0
