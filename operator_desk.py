"""The operator's side of the trading thread: control commands, the status they read, and the
events no single part owns (start, stop, health degraded and recovered).

Owns: draining the control socket's requests (a timer of the loop, a few per turn) and answering
each in its reply slot: `status` (markets, positions, exchange-side protection, unrealized PnL,
entries, stream, account: read from trading state on the trading thread, no network),
`pause`/`resume` (a market's entries, or every market's; not kept across a restart), `close` (the
market's normal exit path now: a reduce-only IOC on its reserved cloid, reason "manual close",
retried like any exit until the position is gone); the health watch (the published snapshot
rendered once a second while notifications are on); the start and stop events.
Must not: run on another thread, sleep, or send an order other than through a market's exit path.
"""
from __future__ import annotations

import logging
import queue
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable

import health
from ctl import CtlRequest
from market import pnl_usd
from notify import HealthWatch, Notifier

if TYPE_CHECKING:
    from loop import TradingLoop
    from market import MarketTrader, OpenPosition

log = logging.getLogger("bot")

MANUAL_CLOSE = "manual close"
COMMANDS_PER_TURN = 4          # requests answered per loop turn (each is quick; a close sends one order)
HEALTH_WATCH_EVERY_S = 1.0
CENT = Decimal("0.01")


def unrealized_pnl(pos: "OpenPosition", price: Decimal | None) -> Decimal | None:
    return None if price is None else pnl_usd(pos.side, pos.entry_px, price, pos.size).quantize(CENT)


class OperatorDesk:
    """Built by the loop; `timer` is one of its timers. `requests` is the control socket's queue."""

    def __init__(self, loop: "TradingLoop", notifier: Notifier, clock: Callable[[], float]) -> None:
        self.loop, self.notifier, self.clock = loop, notifier, clock
        self.requests: queue.Queue[CtlRequest] = queue.Queue(maxsize=16)
        self.watch = HealthWatch()
        self.next_watch = 0.0
        self.network = ""  # for status and the start event (the loop does not know it)

    def timer(self, now: float) -> None:
        for _ in range(COMMANDS_PER_TURN):
            try:
                request = self.requests.get_nowait()
            except queue.Empty:
                break
            try:
                request.reply.set(self.execute(request.command, request.coin))
            except Exception as exc:
                request.reply.set({"ok": False, "error": f"the bot failed on it ({type(exc).__name__}: {exc})"})
                raise  # logged and counted by the loop
        if self.notifier.enabled and now >= self.next_watch:
            self.next_watch = now + HEALTH_WATCH_EVERY_S
            _, body = health.render(self.loop.health_snapshot(), now)
            news = self.watch.update(body["status"], body.get("reasons", []), now)
            if news is not None:
                self.notifier.notify(news[0], None, news[1], source="health", status=body["status"],
                                     reasons=body.get("reasons", []))

    # ---- commands --------------------------------------------------------------------------

    def execute(self, command: str, coin: str | None) -> dict[str, Any]:
        traders = self._traders(coin)
        if traders is None:
            return {"ok": False, "error": f"no market {coin}; the bot trades {', '.join(self.loop.traders)}"}
        if command == "status":
            return {"ok": True, "status": self.status(traders)}
        if command in ("pause", "resume"):
            for trader in traders:
                trader.entries.enabled = command == "resume"
            coins = ", ".join(t.coin for t in traders)
            log.info("operator: entries %s on %s", "resumed" if command == "resume" else "paused", coins)
            return {"ok": True, "message": f"entries {'on' if command == 'resume' else 'paused'}: {coins}"
                    + ("" if command == "resume" else " (exits still run; a restart turns entries back on)")}
        if command == "close":
            lines = [self._close(t) for t in traders if t.position is not None or coin is not None]
            paused = all(not t.entries.enabled for t in traders)
            hint = "" if paused else "\nentries are on: the strategy may enter again (--ctl pause to keep it flat)"
            return {"ok": True, "message": ("\n".join(lines) or "no open position") + hint}
        return {"ok": False, "error": f"unknown command {command}"}

    def _traders(self, coin: str | None) -> list["MarketTrader"] | None:
        traders = self.loop.traders
        if coin is None:
            return list(traders.values())
        found = traders.get(coin) or next((t for c, t in traders.items() if c.lower() == coin.lower()), None)
        return None if found is None else [found]

    def _close(self, trader: "MarketTrader") -> str:
        pos = trader.position
        if pos is None:
            if trader.entries.maker.give_up("the operator's close"):
                return f"{trader.coin}: no position; its resting post-only entry is being canceled"
            return f"{trader.coin}: no position"
        was = f"{pos.side} {pos.size} (entry {pos.entry_px})"
        size = pos.size
        log.warning("operator: closing %s %s now", trader.coin, was)
        trader.close_now(MANUAL_CLOSE)
        left = trader.position
        if left is None:
            last = trader.last_close
            at = f" at {last[2]}" if last is not None and last[0] == MANUAL_CLOSE else ""
            return f"{trader.coin}: closed {was}{at}"
        if trader.current_price is None:
            return f"{trader.coin}: no price yet; the exit goes out on the first price"
        if left.size < size:
            return f"{trader.coin}: partly closed, {left.size} left; the bot keeps closing it"
        return (f"{trader.coin}: exit not filled ({trader.exit_failures} failure(s)); the bot retries until it is "
                "closed (see the log)")

    # ---- status ----------------------------------------------------------------------------

    def status(self, traders: list["MarketTrader"]) -> dict[str, Any]:
        loop = self.loop
        now = self.clock()
        _, body = health.render(loop.health_snapshot(), now)
        ws = body.get("websocket", {})
        markets = [self._market(t, now) for t in traders]
        total = sum((Decimal(m["upnl"]) for m in markets if m["upnl"] is not None), Decimal(0))
        return {
            "account": loop.address, "signer": loop.signer, "network": self.network,
            "mode": "paper trading" if loop.paper else "live orders",
            "health": body["status"], "reasons": body.get("reasons", []), "uptime_s": body.get("uptime_s"),
            "stream": {"mode": loop.mode, "connected": bool(ws.get("connected")),
                       "last_message_age_s": ws.get("last_message_age_s"), "reconnects": ws.get("reconnects", 0)},
            "markets": markets, "total_upnl": str(total.quantize(CENT)),
            "unmanaged": {c: {"size": str(size), "entry_px": str(px)} for c, (size, px) in loop.reconciler.unmanaged.items()},
            "notifications": self.notifier.stats(),
        }

    def _market(self, t: "MarketTrader", now: float) -> dict[str, Any]:
        pos, price = t.position, t.current_price
        upnl = unrealized_pnl(pos, price) if pos is not None else None
        return {
            "coin": t.coin, "price": None if price is None else str(price),
            "source": None if price is None else t.price_source,
            "age_s": None if price is None else round(now - t.price_at, 1),
            "position": None if pos is None else {"side": pos.side, "size": str(pos.size),
                                                  "entry_px": str(pos.entry_px)},
            "upnl": None if upnl is None else str(upnl),
            "protection": "-" if pos is None else self.protection(t),
            "entries": self.entries(t),
            "exit_failures": t.exit_failures,
        }

    @staticmethod
    def entries(t: "MarketTrader") -> str:
        """"on" or "paused", and a post-only entry being worked: `on, buy 0.004 resting at 49995`."""
        state = "on" if t.entries.enabled else "paused"
        work = t.entries.maker.work
        if work is not None:
            where = f"resting at {work.px}" if work.record is not None else "being placed"
            state += f", {'buy' if work.is_buy else 'sell'} {format(work.size.normalize(), 'f')} {where}"
        return state

    @staticmethod
    def protection(t: "MarketTrader") -> str:
        """The position's exchange-side SL/TP as they stand in the journal ("none" when none rests)."""
        pos = t.position
        if pos is None:
            return "-"
        levels = []
        for cloid in pos.protective_cloids:
            record = t.store.order(cloid)
            if record is not None and not record.is_terminal:
                state = "" if record.status == "resting" else f" ({record.status})"
                levels.append(f"{record.purpose.upper()} {record.limit_px}{state}")
        if levels:
            return ", ".join(levels)
        return "none" if t.protection.enabled else "none (exits_on_exchange off or paper)"

    # ---- start and stop --------------------------------------------------------------------

    def announce_start(self, network: str) -> None:
        loop = self.loop
        self.network = network
        mode = "paper trading" if loop.paper else "live orders"
        open_ = self._positions_text()
        self.notifier.notify("start", None, f"hlbot started on {network} ({mode}): {', '.join(loop.traders)}; "
                                            f"account {loop.address}; {open_}",
                             network=network, paper=loop.paper, markets=list(loop.traders))

    def announce_stop(self) -> None:
        self.notifier.notify("stop", None, f"hlbot stopped; {self._positions_text(protection=True)}",
                             positions={c: {"side": t.position.side, "size": t.position.size,
                                            "entry_px": t.position.entry_px}
                                        for c, t in self.loop.traders.items() if t.position is not None})

    def _positions_text(self, protection: bool = False) -> str:
        held = [t for t in self.loop.traders.values() if t.position is not None]
        if not held:
            return "no open position"
        parts = []
        for t in held:
            pos = t.position
            assert pos is not None
            guard = f" (exchange-side: {self.protection(t)})" if protection else ""
            parts.append(f"{t.coin} {pos.side} {pos.size} at {pos.entry_px}{guard}")
        return "open: " + "; ".join(parts)
