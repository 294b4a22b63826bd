"""A bot built exactly as `trading_bot.py` builds it (`build_bot`), in this process, pointed at a
simulator: the in-process `SimServer` of the tests or the simulator process of the benchmarks
(anything with a `rest_url`).

Owns: the tests' config (live orders, `always_long`, a 0.5 % trail, fast reconnects and fallback,
no exchange-side stops) with overrides merged per section, the state file (in a given directory,
or a temporary one removed at close), starting the socket thread, one loop turn (`step`), the
shutdown steps in reverse order of wiring, and `LongWhenAsked` (a strategy a test fires at will).
Must not: patch the bot or the simulator (a test or a benchmark that wraps a method does it on
the instance it gets), or start the health server.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Protocol

from config_load import settings_from_dict
from harness.waiting import wait_until
from hyperliquid_sim import SimServer
from loop import TradingLoop
from market import MarketTrader
from state import StateStore
from trading_bot import build_bot

# The tests' bot (exits sent by the bot only, unless a test turns exits_on_exchange on);
# `make_bot(..., base=...)` takes another (the benchmarks' dry-run bot).
TEST_CONFIG: dict[str, Any] = {
    "network": "local", "dry_run": False, "symbol": "BTC",
    "websocket": {"enabled": True, "reconnect_interval": 0.1, "max_backoff": 0.5, "stale_after": 1.0,
                  "fallback_poll_interval": 0.1, "data_timeout": 2.0, "ping_interval": 1.0,
                  "pong_timeout": 1.0, "subscribe_timeout": 1.0},
    "trading": {"stop_loss_pct": 1.0, "take_profit_pct": 5.0, "trailing_stop_pct": 0.5,
                "order_size_usd": 200, "leverage": 3, "slippage_pct": 0.5, "exits_on_exchange": False},
    "strategy": {"name": "always_long"},
    "health": {"enabled": False},
}


class LongWhenAsked:
    """A test strategy: goes long once `go` is set (e.g. after the book arrived), once."""
    name = "long_when_asked"

    def __init__(self) -> None:
        self.go = False

    def on_candles(self, candles: Any, price: Any, has_position: bool) -> str | None:
        if not self.go or has_position:
            return None
        self.go = False
        return "long"


class Simulator(Protocol):
    rest_url: str


class Harness:
    """The wired bot (`bot`, a TradingLoop), its shutdown steps and its state store."""

    def __init__(self, bot: TradingLoop, cleanup: list[Callable[[], None]], store: StateStore,
                 temp_dir: Path | None = None) -> None:
        self.bot, self.cleanup, self.store = bot, cleanup, store
        self._temp_dir = temp_dir

    @property
    def trader(self) -> MarketTrader:
        """The BTC market (the one symbol of the default config)."""
        return self.bot.traders["BTC"]

    def step(self, timeout_s: float = 0.02) -> None:
        """One turn of the real loop: a blocking get, the events queued, the timers."""
        self.bot.step(timeout_s=timeout_s)

    def wait_subscribed(self, timeout_s: float = 10.0) -> None:
        """Turn the loop until the simulator has confirmed every subscription."""
        ws = self.bot.ws
        assert ws is not None
        wait_until(lambda: ws.stats().subscriptions_confirmed == len(ws.subscriptions), timeout_s, self.step)

    def close(self) -> None:
        for fn in reversed(self.cleanup):
            fn()
        self.store.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)


def bot_config(base: dict[str, Any], rest_url: str, state_path: Path, over: dict[str, Any]) -> dict[str, Any]:
    """`base` pointed at the simulator and the state file, then `over` section by section: a dict
    updates its section (except `markets`, replaced whole), None removes the key (e.g.
    `symbol=None` with `markets=`), anything else replaces it."""
    doc = copy.deepcopy(base)
    doc["api"] = {**doc.get("api", {}), "rest_url": rest_url}
    doc["state"] = {**doc.get("state", {}), "path": str(state_path)}
    for section, values in over.items():
        if values is None:
            doc.pop(section, None)
        elif isinstance(values, dict) and section != "markets":
            doc.setdefault(section, {}).update(values)
        else:
            doc[section] = values
    return doc


def make_bot(sim: Simulator, state_dir: Path | None, *, key: bytes | None = None,
             base: dict[str, Any] = TEST_CONFIG, **over: Any) -> Harness:
    """The bot on `sim` with its socket thread started (no loop turn yet), signing with `key` (a
    fresh one when None). State in `state_dir`, or in a temporary directory removed by `close()`
    when None."""
    temp_dir = Path(tempfile.mkdtemp(prefix="hlbot-harness-")) if state_dir is None else None
    settings = settings_from_dict(bot_config(base, sim.rest_url, (state_dir or temp_dir) / "bot.db", over))
    store = StateStore(settings.state.path)
    store.open()
    cleanup: list[Callable[[], None]] = []
    bot = build_bot(settings, key or os.urandom(32), store, threading.Event(), cleanup)
    if bot.ws is not None:
        bot.ws.start()
    return Harness(bot, cleanup, store, temp_dir)


def orders_sent(sim: SimServer) -> list[dict[str, Any]]:
    """The order actions the simulator received, in order (its /exchange log)."""
    return [e for e in sim.exchange_log() if e["action"].get("type") == "order"]
