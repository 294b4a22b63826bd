"""The health snapshot the trading loop publishes, built from plain figures (pure; no I/O).

Owns: the snapshot's shape (health.py's contract), read from the markets and the socket thread's
stats: monotonic stamps, never ages (the health thread
computes ages when asked), the first market's figures at the top level and every market under
`markets`. Must not: read a clock, change trading state, or be mutated after it is built (the loop
publishes it as a read-only mapping for the health thread).
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from market import MarketTrader
from recorder import RecorderStats
from ws_parts import WsStats


def market_view(trader: MarketTrader) -> dict[str, Any]:
    """One market's figures (stamps, not ages)."""
    pos = trader.position
    return {
        "current_price": float(trader.current_price) if trader.current_price is not None else None,
        "price_source": "rest" if trader.price_source == "rest" else "websocket",
        "price_at_s": trader.price_at if trader.current_price is not None else None,
        "position": None if pos is None else {
            "side": pos.side, "size": float(pos.size), "entry_px": float(pos.entry_px),
            "high_water": float(pos.trailing.high_water) if pos.trailing and pos.trailing.high_water else None,
        },
        "exit_failures": trader.exit_failures,
        "maker_entry": trader.entries.maker.work.view() if trader.entries.maker.work is not None else None,
        "trades_seen": trader.trades_seen,
        **book_view(trader),
    }


def book_view(trader: MarketTrader) -> dict[str, Any]:
    """The market's best bid and ask, the spread in basis points, and when they came (a stamp)."""
    quotes = trader.quotes
    bid, ask = quotes.bid, quotes.ask
    spread_bps = None
    if bid is not None and ask is not None and bid > 0:
        spread_bps = round(float((ask - bid) / ((ask + bid) / 2) * 10_000), 2)
    return {"bid": float(bid) if bid is not None else None, "ask": float(ask) if ask is not None else None,
            "spread_bps": spread_bps, "book_at_s": quotes.bbo_at if bid is not None or ask is not None else None}


def stream_view(stats: WsStats | None, enabled: bool, fallback: bool, queue_depth: int, thread_restarts: int,
                now_s: float, record: RecorderStats | None = None) -> dict[str, Any]:
    """The `websocket` section: the socket thread's stats turned into stamps (and the recorder's
    counts under `record` when record.dir is set)."""
    age_s = stats.last_message_age_s if stats is not None else None
    view = {
        "enabled": enabled,
        "connected": stats is not None and stats.connected,
        "subscriptions": stats.subscriptions_confirmed if stats else 0,
        "last_message_at_s": None if age_s is None else now_s - age_s,
        "reconnects": stats.reconnects if stats else 0,
        "fallback": fallback and enabled,
        "dropped_market_data": stats.dropped_market_data if stats else 0,
        "parse_errors": stats.parse_errors_total if stats else 0,
        "queue_depth": queue_depth,
        "internal_errors": stats.internal_errors if stats else 0,
        "thread_restarts": thread_restarts,
    }
    if record is not None:
        view["record"] = {"written": record.written, "dropped": record.dropped, "failed": record.failed,
                          "queued": record.queued}
    return view


def build_snapshot(*, now_s: float, started_s: float, markets: Mapping[str, Mapping[str, Any]],
                   stream: Mapping[str, Any], loop: Mapping[str, Any],
                   positions: Mapping[str, Mapping[str, Any]] | None = None) -> Mapping[str, Any]:
    """`markets`: each coin's `market_view()`, in config order; `loop`: the loop's own
    figures (account, signer, mode, dry_run, price_fresh_limit_s, state_writable, state_error,
    handler_errors, unknown_orders, oldest_unknown_order_at_s, rss_bytes); `positions`: every
    position on the account, `{coin: {size, entry_px, managed}}`."""
    first_coin = next(iter(markets))
    first = markets[first_coin]
    exit_failures = max((m["exit_failures"] for m in markets.values()), default=0)
    snapshot: dict[str, Any] = {
        "published_at_s": now_s,
        "started_at_s": started_s,
        "symbol": first_coin,
        "current_price": first["current_price"],
        "price_source": first["price_source"],
        "price_at_s": first["price_at_s"],
        **{k: v for k, v in loop.items() if k != "exit_failures"},
        "websocket": dict(stream),
        "position": first["position"],
        "exit_failures": exit_failures,
        "trades_seen": sum(m["trades_seen"] for m in markets.values()),
        "markets": {coin: {k: v for k, v in m.items() if k != "trades_seen"} for coin, m in markets.items()},
        "positions": dict(positions or {}),
    }
    return MappingProxyType(snapshot)
