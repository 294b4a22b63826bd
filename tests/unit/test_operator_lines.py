"""The operator's lines (pure): banner, status line, protection words, shutdown lines; the masking
of key-length hex strings; the exchange-outage line of the /info gate."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal as D
from typing import Any

import pytest

from banner import banner_lines, protection_words, shutdown_lines, status_line, stream_words
from config_errors import MASK, mask_secrets
from config_load import settings_from_dict
from logsetup import MaskingFormatter
from rest_errors import NetworkError, RequestRejected, ServerError
from rest_gate import OUTAGE_LOG_EVERY_S, InfoGate
from version import __version__

KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
MASTER = "0x1111111111111111111111111111111111111111"
AGENT = "0x2222222222222222222222222222222222222222"


# ---- banner -------------------------------------------------------------------------------

def test_banner_says_what_is_at_risk_and_where() -> None:
    s = settings_from_dict({
        "network": "mainnet", "dry_run": False, "account": {"address": MASTER},
        "strategy": {"name": "ema_cross", "params": {"fast": 5}},
        "markets": {"BTC": {}, "ETH": {"trading": {"exits_on_exchange": False, "trailing_offset_pct": 0.5}}},
        "risk": {"max_open_positions": 2}, "health": {"port": 9000},
    }, source="/etc/hlbot/config.json")
    lines = banner_lines(s, MASTER, AGENT, "https://api.hyperliquid.xyz", "wss://api.hyperliquid.xyz/ws")
    text = "\n".join(lines)
    assert lines[0] == f"==== hlbot {__version__} starting: config /etc/hlbot/config.json"
    assert "network    mainnet: REST https://api.hyperliquid.xyz, WebSocket wss://api.hyperliquid.xyz/ws " \
           "(off: REST prices every 300 s)" in text
    assert f"account    {MASTER}, signed by API wallet {AGENT}" in text
    assert "mode       LIVE on mainnet: orders are sent, with real money" in text
    assert ("market BTC  ema_cross(fast=5, slow=21) on 1m candles; 100 USD a trade, 3x cross, at most 1000 USD; "
            "exits SL 2%, TP 4%, trailing 1%; exchange-side stops rest: yes, SL and TP") in lines
    assert "trailing 1% (from +0.5%); exchange-side stops rest: no (exits_on_exchange: false" in text
    assert "risk       at most 2 open positions" in text and "health http://127.0.0.1:9000/health" in text


def test_banner_in_paper_mode_and_own_key() -> None:
    s = settings_from_dict({"network": "testnet", "dry_run": True, "trading": {"stop_loss_pct": None,
                                                                              "take_profit_pct": None}})
    text = "\n".join(banner_lines(s, AGENT, AGENT, "https://x", "wss://x/ws"))
    assert "mode       PAPER (dry run): no order is sent" in text
    assert f"account    {AGENT} (signs its own orders)" in text
    assert "exits trailing 1%; exchange-side stops rest: none (paper)" in text
    assert "risk       no account-wide limit" in text


def test_banner_names_post_only_entries() -> None:
    s = settings_from_dict({"trading": {"entry_order": "post_only", "maker_repeg_s": 2}})
    text = "\n".join(banner_lines(s, AGENT, AGENT, "https://x", "wss://x/ws"))
    assert "post-only entries (re-peg after 2 s, canceled after 30 s); exits SL 2%" in text
    plain = "\n".join(banner_lines(settings_from_dict({}), AGENT, AGENT, "https://x", "wss://x/ws"))
    assert "post-only" not in plain


# ---- status and shutdown ------------------------------------------------------------------

@dataclass
class Rec:
    purpose: str
    status: str
    limit_px: D


@dataclass
class Pos:
    side: str
    size: D
    entry_px: D
    protective_cloids: tuple[str, ...] = ()


@dataclass
class Store:
    records: dict[str, Rec] = field(default_factory=dict)

    def order(self, cloid: str) -> Rec | None:
        return self.records.get(cloid)


@dataclass
class Prot:
    enabled: bool = True


@dataclass
class Mkt:
    coin: str
    position: Pos | None = None
    current_price: D | None = None
    price_at: float = 0.0
    paper: bool = False
    store: Store = field(default_factory=Store)
    protection: Prot = field(default_factory=Prot)


def _guarded(coin: str, side: str, size: str, entry: str, price: str | None, **statuses: str) -> Mkt:
    records = {f"c-{p}": Rec(p, status, D(px)) for p, (status, px) in
               ((p, v.split("@")) for p, v in statuses.items())}
    return Mkt(coin, Pos(side, D(size), D(entry), tuple(records)), D(price) if price else None, store=Store(records))


@pytest.mark.parametrize("market,words,guarded", [
    (_guarded("BTC", "long", "0.01", "50000", None, sl="resting@49000", tp="resting@52000"),
     "exchange-side SL 49000 and TP 52000 resting", True),
    (_guarded("BTC", "long", "0.01", "50000", None, sl="unknown@49000", tp="resting@52000"),
     "exchange-side TP 52000 resting; SL 49000 in doubt (being looked up)", True),
    (_guarded("BTC", "long", "0.01", "50000", None, sl="canceled@49000"),
     "NOT protected while the bot is down (no exchange-side stop resting)", False),
    (Mkt("BTC", Pos("long", D(1), D(1)), protection=Prot(False)), "exits_on_exchange is off", False),
    (Mkt("BTC", Pos("long", D(1), D(1)), paper=True), "paper: nothing on the exchange", True),
])
def test_protection_words(market: Mkt, words: str, guarded: bool) -> None:
    got, is_guarded = protection_words(market)
    assert words in got and is_guarded is guarded


def test_status_line_positions_pnl_and_stream() -> None:
    markets = [_guarded("BTC", "long", "0.01", "50000", "50500", sl="resting@49000"),
               _guarded("ETH", "short", "2", "3000", "3010", tp="resting@2900"),
               Mkt("SOL"), _guarded("AVAX", "long", "1", "20", None)]
    line = status_line(markets, "prices: WebSocket connected", {"DOGE": (D("-100"), D("0.1"))})
    assert line.startswith("status: BTC long 0.01 at 50000 (now 50500, uPnL +5.00 USD; exchange-side SL 49000 "
                           "resting); ETH short 2 at 3000 (now 3010, uPnL -20.00 USD; exchange-side TP 2900 resting)")
    assert "; SOL flat; AVAX long 1 at 20 (no price yet; NOT protected" in line
    assert "| total uPnL -15.00 USD (some without a price) | unmanaged: DOGE -100 | prices: WebSocket connected" \
        in line


def test_status_line_flat() -> None:
    assert status_line([Mkt("BTC")], "s", {}) == "status: BTC flat | s"


def test_status_line_says_how_old_an_old_price_is() -> None:
    market = _guarded("BTC", "long", "1", "100", "101")
    market.price_at = 1000.0
    assert "(now 101, uPnL +1.00 USD;" in status_line([market], "s", {}, now=1009.0)
    assert "(now 101 (52 s old), uPnL +1.00 USD;" in status_line([market], "s", {}, now=1052.0)


@dataclass
class Stats:
    connected: bool
    last_message_age_s: float | None
    reconnects: int


@pytest.mark.parametrize("args,words", [
    ((False, False, None, 300.0), "prices: REST polling every 300 s (WebSocket disabled)"),
    ((True, False, Stats(True, 0.25, 0), 300.0), "prices: WebSocket connected, last message 0.2 s ago"),
    ((True, True, Stats(False, 42.0, 3), 300.0),
     "prices: REST FALLBACK (WebSocket disconnected, last message 42.0 s ago, 3 reconnects)"),
    ((True, False, None, 300.0), "prices: WebSocket disconnected, no message yet"),
])
def test_stream_words(args: tuple[Any, ...], words: str) -> None:
    assert stream_words(*args) == words


def test_shutdown_lines() -> None:
    markets = [_guarded("BTC", "long", "0.01", "50000", "1", sl="resting@49000"),
               Mkt("ETH", Pos("short", D(2), D(3000)), protection=Prot(False)), Mkt("SOL")]
    lines = shutdown_lines(markets, {"DOGE": (D(5), D("0.1"))})
    assert lines[0] == (logging.INFO, "stopping with an open position: BTC long 0.01 at 50000: "
                                      "exchange-side SL 49000 resting")
    assert lines[1][0] == logging.WARNING and "ETH short 2 at 3000: NOT protected" in lines[1][1]
    assert lines[2] == (logging.INFO, "stopping: DOGE 5 at 0.1 is open on the account, not managed by the bot")
    assert shutdown_lines([Mkt("BTC")], {}) == [(logging.INFO, "stopping flat: no open position")]


# ---- masking ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,shown", [
    (f"got {KEY}", f"got {MASK}"),
    (f'got "0x{KEY}"', f'got "{MASK}"'),
    (f"got 0X{KEY.upper()}.", f"got {MASK}."),
    (f"a typo {KEY[:-1]}", f"a typo {MASK}"),
    (f"two {KEY}{KEY}", f"two {MASK}"),
    (f"address {MASTER}, cloid 0x{'ab' * 16}", f"address {MASTER}, cloid 0x{'ab' * 16}"),
])
def test_mask_secrets(text: str, shown: str) -> None:
    assert mask_secrets(text) == shown


def test_log_lines_mask_key_length_hex() -> None:
    record = logging.LogRecord("bot", logging.ERROR, __file__, 1, "signed with %s", (KEY,), None)
    assert KEY not in MaskingFormatter("%(message)s").format(record)


# ---- the exchange-outage line -------------------------------------------------------------

def test_an_unreachable_exchange_is_one_line_per_30_s_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    now = [100.0]
    gate = InfoGate(lambda: now[0])
    kinds = ["REST price poll", "position check (periodic check)", "fill reconciliation", "funding reconciliation"]
    for second in range(70):  # four kinds of call failing every 2 s, as a stopped exchange makes them
        now[0] = 100.0 + second
        if second % 2 == 0:
            for kind in kinds:
                gate.failed(kind, NetworkError("/info: connect failed (ConnectionRefusedError)", sent=False))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("exchange unreachable: REST price poll failed: /info: connect failed")
    assert lines[1] == ("exchange unreachable for 30 s (61 failures; last: REST price poll: "
                        "/info: connect failed (ConnectionRefusedError))")
    assert lines[2].startswith("exchange unreachable for 60 s (121 failures")
    assert OUTAGE_LOG_EVERY_S == 30.0
    gate.failed("position check", ServerError(502, "bad gateway"))  # a 5xx is the same outage
    caplog.clear()
    now[0] = 200.0
    gate.ok()
    assert [r.getMessage() for r in caplog.records] == ["exchange reachable again after 100 s (141 failures)"]
    gate.ok()
    assert len(caplog.records) == 1  # said once


def test_other_failures_stay_one_line_a_minute_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    gate = InfoGate(lambda: now[0])
    for second in range(0, 61, 2):
        now[0] = second
        gate.failed("funding reconciliation", RequestRejected(422, "Failed to deserialize"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "funding reconciliation failed: request rejected (HTTP 422)" in lines[0]
    assert "(29 more failures)" in lines[1] and "unreachable" not in " ".join(lines)
