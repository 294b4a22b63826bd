"""`--ctl status` for a person: the status a bot sends (operator_desk.status) as a few lines and a table (pure).

Owns: the layout: the bot's account, mode, health and stream on top, one row per market (price,
source, age, position, entry, unrealized PnL, exchange-side protection, entries on or paused),
then unmanaged positions and the notifications' counters.
Must not: do I/O or ask anything of the bot: it formats what it is given.

Example:
```
bot      account 0x5B…9f2 on testnet, live orders, up 2h03m
health   ok
stream   websocket, connected, last message 0.2 s ago, 0 reconnects

COIN  PRICE    SOURCE     AGE   POSITION    ENTRY    UPNL   PROTECTION          ENTRIES
BTC   50012.5  websocket  0.2s  long 0.004  50001.0  +0.05  SL 49001, TP 52001  on
ETH   3001.2   rest       1.1s  flat        -        -      -                   paused

unrealized PnL  +0.05 USDC
```
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

COLUMNS = ("COIN", "PRICE", "SOURCE", "AGE", "POSITION", "ENTRY", "UPNL", "PROTECTION", "ENTRIES")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _signed(value: str | None) -> str:
    if value is None:
        return "-"
    return value if value.startswith("-") else "+" + value


def _stream(stream: Mapping[str, Any]) -> str:
    mode = stream.get("mode")
    if mode == "rest":
        return "disabled (REST polling)"
    parts = ["REST fallback (stream starved or down)" if mode == "rest_fallback" else "websocket",
             "connected" if stream.get("connected") else "not connected"]
    age_s = stream.get("last_message_age_s")
    if age_s is not None:
        parts.append(f"last message {age_s:.1f} s ago")
    parts.append(f"{stream.get('reconnects', 0)} reconnects")
    return ", ".join(parts)


def _row(market: Mapping[str, Any]) -> list[str]:
    pos = market.get("position")
    age_s = market.get("age_s")
    failing = market.get("exit_failures") or 0
    return [
        market["coin"],
        market.get("price") or "-",
        market.get("source") or "-",
        "-" if age_s is None else f"{age_s:.1f}s",
        "flat" if pos is None else f"{pos['side']} {pos['size']}" + (f" (EXIT FAILING x{failing})" if failing else ""),
        "-" if pos is None else pos["entry_px"],
        _signed(market.get("upnl")),
        market.get("protection") or "-",
        market.get("entries") or "-",
    ]


def table(rows: Sequence[Sequence[str]], header: Sequence[str] = COLUMNS) -> list[str]:
    """Columns as wide as their widest cell, two spaces apart."""
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(w) for cell, w in zip(r, widths)).rstrip() for r in (header, *rows)]


def format_status(s: Mapping[str, Any]) -> str:
    account = f"account {s.get('account')}"
    if s.get("signer") and str(s.get("signer")).lower() != str(s.get("account")).lower():
        account += f" (signed by API wallet {s['signer']})"
    health = s.get("health", "?")
    if s.get("reasons"):
        health += ": " + "; ".join(s["reasons"])
    lines = [f"bot      {account} on {s.get('network') or '?'}, {s.get('mode')}, up {_duration(s.get('uptime_s'))}",
             f"health   {health}",
             f"stream   {_stream(s.get('stream') or {})}",
             ""]
    lines += table([_row(m) for m in s.get("markets", [])])
    lines += ["", f"unrealized PnL  {_signed(s.get('total_upnl'))} USDC"]
    unmanaged = s.get("unmanaged") or {}
    if unmanaged:
        lines.append("unmanaged       " + ", ".join(f"{coin} {p['size']} at {p['entry_px']}"
                                                   for coin, p in unmanaged.items()) + " (left alone)")
    for name, n in (s.get("notifications") or {}).items():
        lines.append(f"{name:<16}{n['sent']} sent, {n['failed']} failed, {n['dropped']} dropped, "
                     f"{n['held_back']} held back by the rate limit")
    return "\n".join(lines)
