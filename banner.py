"""What an operator reads in the log: the start-up banner, the status line, the shutdown line.

Owns: the words of those lines, built from the settings and from the trading loop's own state
(each market's position, price and exchange-side stops; the stream's state), and logging the
banner as one block at INFO.
Must not: change anything it reads, call the exchange, or read a clock: the loop runs
`StatusTimer` as one of its timers on the main thread and `log_shutdown` after its last turn.
"""
from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping, Protocol

from settings import MarketSettings, Settings
from strategies import STRATEGIES, StrategyParamError, check_strategy, entry_order_of
from version import __version__

log = logging.getLogger("bot")

STATUS_EVERY_S = 60.0  # the status line (positions, unrealized PnL, stream) this often


# ---- the banner ---------------------------------------------------------------------------

def log_banner(settings: Settings, account: str, signer: str, rest_url: str, ws_url: str) -> None:
    for line in banner_lines(settings, account, signer, rest_url, ws_url):
        log.info("%s", line)


def banner_lines(settings: Settings, account: str, signer: str, rest_url: str, ws_url: str) -> list[str]:
    """What is at risk and where, a few lines a person reads once at start."""
    s = settings
    where = " (embedded simulator)" if s.embedded_simulator else ""
    stream = "streaming" if s.websocket.enabled else f"off: REST prices every {s.check_interval:g} s"
    lines = [f"==== hlbot {__version__} starting: config {s.source or '(none)'}",
             f"network    {s.network}{where}: REST {rest_url}, WebSocket {ws_url} ({stream})"]
    if account.lower() == signer.lower():
        lines.append(f"account    {account} (signs its own orders)")
    elif s.account.vault_address:
        lines.append(f"account    vault {account}, signed by {signer}")
    else:
        lines.append(f"account    {account}, signed by API wallet {signer}")
    lines.append(f"mode       {_mode(s)}")
    lines += [_market_line(s, m) for m in s.markets]
    risk = s.risk
    limits = ([f"at most {risk.max_open_positions} open positions"] if risk.max_open_positions else []) + \
        ([f"{_num(risk.max_total_position_usd)} USD in total"] if risk.max_total_position_usd else [])
    lines.append(f"risk       {', '.join(limits) if limits else 'no account-wide limit'}")
    health = f"http://{s.health.host}:{s.health.port}/health" if s.health.enabled else "off"
    lines.append(f"files      state {s.state.path}, log {s.logging.file}; health {health}")
    return lines


def _mode(s: Settings) -> str:
    if s.dry_run:
        return "PAPER (dry run): no order is sent; fills are simulated at the current price"
    if s.network == "mainnet":
        return "LIVE on mainnet: orders are sent, with real money"
    if s.network == "testnet":
        return "live on testnet: orders are sent (test money)"
    return "live on the local simulator: orders are sent to it"


def _market_line(s: Settings, m: MarketSettings) -> str:
    tr = m.trading
    exits = [f"{label} {_num(pct)}%" for label, pct in
             (("SL", tr.stop_loss_pct), ("TP", tr.take_profit_pct), ("trailing", tr.trailing_stop_pct))
             if pct is not None]
    if tr.trailing_stop_pct is not None and tr.trailing_offset_pct:
        exits[-1] += f" (from +{_num(tr.trailing_offset_pct)}%)"
    if s.dry_run:
        resting = "none (paper)"
    elif not tr.exits_on_exchange:
        resting = "no (exits_on_exchange: false; the bot's exits only)"
    elif tr.stop_loss_pct is None and tr.take_profit_pct is None:
        resting = "none (trailing stop only, kept by the bot)"
    else:
        resting = "yes, " + " and ".join(k for k, v in (("SL", tr.stop_loss_pct), ("TP", tr.take_profit_pct))
                                         if v is not None)
    entries = ""
    if entry_order_of(tr.entry_order, STRATEGIES.get(m.strategy.name)) == "post_only":
        entries = f"post-only entries (re-peg after {tr.maker_repeg_s:g} s, canceled after {tr.maker_timeout_s:g} s); "
    return (f"market {m.coin:<4} {_strategy(m)} on {m.strategy.candle_interval} candles; "
            f"{_num(tr.order_size_usd)} USD a trade, {tr.leverage}x cross, at most {_num(tr.max_position_usd)} USD; "
            f"{entries}exits {', '.join(exits)}; exchange-side stops rest: {resting}")


def _strategy(m: MarketSettings) -> str:
    try:
        params = check_strategy(m.strategy.name, m.strategy.params)
    except StrategyParamError:  # the loader checked it; a banner never stops a start
        params = dict(m.strategy.params)
    inner = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{m.strategy.name}({inner})" if inner else m.strategy.name


def _num(value: Decimal | float | None) -> str:
    if value is None:
        return "-"
    return f"{Decimal(str(value)).normalize():f}"


# ---- status and shutdown ------------------------------------------------------------------

class Record(Protocol):
    purpose: str
    status: str
    limit_px: Decimal


class Position(Protocol):
    side: str
    size: Decimal
    entry_px: Decimal
    protective_cloids: tuple[str, ...]


class Market(Protocol):
    """What these lines read of a market (market.MarketTrader)."""
    coin: str
    position: Position | None
    current_price: Decimal | None
    price_at: float  # when current_price came (the loop's monotonic clock)
    paper: bool

    @property
    def store(self) -> Any: ...  # .order(cloid) -> Record | None

    @property
    def protection(self) -> Any: ...  # .enabled


def unrealized_pnl(pos: Position, price: Decimal | None) -> Decimal | None:
    if price is None:
        return None
    move = price - pos.entry_px
    return (move if pos.side == "long" else -move) * pos.size


def protection_words(market: Market) -> tuple[str, bool]:
    """What guards the market's position while the bot is down, and whether anything does."""
    pos = market.position
    assert pos is not None
    if market.paper:
        return "paper: nothing on the exchange", True
    if not market.protection.enabled:
        return "NOT protected while the bot is down (no exchange-side stop: exits_on_exchange is off)", False
    resting, doubt = [], []
    for cloid in pos.protective_cloids:
        record = market.store.order(cloid)
        if record is None or record.purpose not in ("sl", "tp"):
            continue
        level = f"{record.purpose.upper()} {_num(record.limit_px)}"
        if record.status == "resting":
            resting.append(level)
        elif record.status in ("pending", "submitted", "unknown"):
            doubt.append(level)
    if not resting and not doubt:
        return "NOT protected while the bot is down (no exchange-side stop resting)", False
    words = f"exchange-side {' and '.join(resting)} resting" if resting else ""
    if doubt:
        words += ("; " if words else "exchange-side ") + f"{' and '.join(doubt)} in doubt (being looked up)"
    return words, bool(resting)


def _position(market: Market) -> str:
    pos = market.position
    assert pos is not None
    return f"{market.coin} {pos.side} {_num(pos.size)} at {_num(pos.entry_px)}"


STALE_PRICE_S = 10.0  # a price older than this is shown with its age


def status_line(markets: Iterable[Market], stream: str, unmanaged: Mapping[str, tuple[Decimal, Decimal]],
                now: float | None = None) -> str:
    """One line: each market's position with its unrealized PnL and protection, then the stream.
    With `now` (the loop's clock), a price older than STALE_PRICE_S says how old it is."""
    markets = list(markets)
    parts, total, priced = [], Decimal(0), True
    for market in markets:
        pos = market.position
        if pos is None:
            parts.append(f"{market.coin} flat")
            continue
        pnl = unrealized_pnl(pos, market.current_price)
        if pnl is None:
            priced = False
            money = "no price yet"
        else:
            total += pnl
            age = None if now is None else now - market.price_at
            old = f" ({age:.0f} s old)" if age is not None and age >= STALE_PRICE_S else ""
            money = f"now {_num(market.current_price)}{old}, uPnL {pnl:+.2f} USD"
        parts.append(f"{_position(market)} ({money}; {protection_words(market)[0]})")
    line = "status: " + "; ".join(parts)
    if sum(m.position is not None for m in markets) > 1:
        line += f" | total uPnL {total:+.2f} USD" + ("" if priced else " (some without a price)")
    if unmanaged:
        line += " | unmanaged: " + ", ".join(f"{c} {_num(size)}" for c, (size, _) in unmanaged.items())
    return f"{line} | {stream}"


def stream_words(enabled: bool, fallback: bool, stats: Any, check_interval_s: float) -> str:
    """The stream's state for the status line (`stats`: the socket thread's WsStats or None)."""
    if not enabled:
        return f"prices: REST polling every {check_interval_s:g} s (WebSocket disabled)"
    connected = stats is not None and stats.connected
    state = "connected" if connected else "disconnected"
    age = stats.last_message_age_s if stats is not None else None
    seen = f", last message {age:.1f} s ago" if age is not None else ", no message yet"
    reconnects = f", {stats.reconnects} reconnects" if stats is not None and stats.reconnects else ""
    if fallback:
        return f"prices: REST FALLBACK (WebSocket {state}{seen}{reconnects})"
    return f"prices: WebSocket {state}{seen}{reconnects}"


def shutdown_lines(markets: Iterable[Market], unmanaged: Mapping[str, tuple[Decimal, Decimal]]) -> list[tuple[int, str]]:
    """(level, line) for each open position and what protects it after the bot is gone."""
    out: list[tuple[int, str]] = []
    for market in markets:
        if market.position is None:
            continue
        words, guarded = protection_words(market)
        out.append((logging.INFO if guarded else logging.WARNING,
                    f"stopping with an open position: {_position(market)}: {words}"))
    for coin, (size, entry_px) in unmanaged.items():
        out.append((logging.INFO, f"stopping: {coin} {_num(size)} at {_num(entry_px)} is open on the account, "
                                  "not managed by the bot"))
    if not out:
        out.append((logging.INFO, "stopping flat: no open position"))
    return out


def log_shutdown(markets: Iterable[Market], unmanaged: Mapping[str, tuple[Decimal, Decimal]]) -> None:
    try:
        for level, line in shutdown_lines(markets, unmanaged):
            log.log(level, "%s", line)
    except Exception as exc:  # noqa: BLE001 - called in a `finally`: must not hide why the loop ended
        log.error("stopping: the open positions could not be listed (%s)", exc)


class StatusTimer:
    """The status line every `every_s`, a timer of the trading loop (`loop`: loop.TradingLoop,
    read on the main thread: its markets, the stream's stats and fallback, unmanaged positions)."""

    def __init__(self, loop: Any, clock: Callable[[], float], every_s: float = STATUS_EVERY_S) -> None:
        self.loop, self.every_s = loop, every_s
        self.next_at = clock() + every_s

    def __call__(self, now: float) -> None:
        if now < self.next_at:
            return
        self.next_at = now + self.every_s
        loop = self.loop
        stats = loop.ws.stats() if loop.ws is not None else None
        stream = stream_words(loop.ws_settings.enabled, loop.fallback, stats, loop.check_interval_s)
        log.info("%s", status_line(loop.traders.values(), stream, loop.reconciler.unmanaged, now))
