"""hlbot entry point: the command line and the wiring of the parts.

`python trading_bot.py --config config/config.json [--dry-run] [--check-config] [--report [--html [PATH]]]`
`python trading_bot.py --config config/config.json --ctl status|pause|resume|close [COIN]`
`python trading_bot.py --config config/config.json --backtest FILE... [--html PATH] [--fills book|paper]`

Owns: dispatching `--report` and `--backtest` (backtest_report.py), start-up (config, logging,
instance lock, state, simulator for `network: local`, meta and the account over REST with a few
quick tries, leverage per market, candle warm-up, the WebSocket and health threads, notifications
and the control socket), building the parts (docs/ARCHITECTURE.md) and running the loop until
SIGINT or SIGTERM, then the shutdown steps in reverse order.
Must not: trade (loop.py and market.py do), or print a key: a bad config or setup is one line and
exit status 2. What can be known before anything is signed is checked first, the same for
`--check-config [--online]` and a start (preflight.py); `--version` prints the version.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import queue
import secrets
import signal
import sys
import threading
import time
from typing import Any, Callable

from backtest_report import backtest_command, report_command
from banner import log_banner
from config_load import ConfigError, load_private_key, load_settings
from ctl import run_ctl, serve_ctl, socket_path
from execution import OrderExecutor
from health_server import HealthServer
from hyperliquid_rest import HyperliquidRestClient
from hyperliquid_websocket import HyperliquidWebSocketClient
from logsetup import FORMAT as LOG_FORMAT, setup_logging
from loop import TradingLoop
from market import MarketTrader
from notify import Notifier, build_notifier
from paper import PaperExchange
from preflight import StartError, check_authority, check_exchange, check_offline, check_online
from protection import Protection
from reconcile import Reconciler
from recorder import FrameRecorder
from rest_errors import HyperliquidError
from rest_gate import InfoGate
from settings import Settings, resolved_view, with_dry_run
from signing import L1Signer
from state import InstanceLock, StateError, StateStore
from state_writer import StateWriter
from strategies import build_strategy, interval_ms
from version import __version__
from wire import Meta

log = logging.getLogger("bot")


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="trading_bot.py", description="hlbot: a Hyperliquid trading bot")
    parser.add_argument("--version", action="version", version=f"hlbot {__version__}")
    parser.add_argument("--online", action="store_true",
                        help="with --check-config: also ask the exchange (coins, leverage, the key's authority; "
                             "nothing signed)")
    parser.add_argument("--config", required=True, help="path to a .json, .yaml or .yml config")
    parser.add_argument("--dry-run", action="store_true", help="paper trading whatever the config says")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config, print the resolved settings and exit (0 valid, 2 not)")
    parser.add_argument("--report", action="store_true", help="print the trade journal and exit")
    parser.add_argument("--ctl", nargs="+", metavar="COMMAND", help="talk to the running bot: status, pause [COIN], "
                        "resume [COIN], close [COIN] (exit 1 if no bot runs)")
    parser.add_argument("--html", nargs="?", const="", metavar="PATH",
                        help="with --report: also draw the journal as an HTML file (default reports/ beside the "
                             "config); with --backtest: where its HTML report goes")
    parser.add_argument("--backtest", nargs="+", metavar="FILE",
                        help="run the configured strategy and exits over recorded frame files (record.dir), paper "
                             "fills, no network; print the report, write the HTML picture")
    parser.add_argument("--fills", choices=("book", "paper"), default="book",
                        help="with --backtest: paper fills walk the recorded l2Book when fresh, as a dry run's "
                             "(book), or always fill by the slippage rule (paper)")
    args = parser.parse_args(argv)
    if args.html is not None and not (args.report or args.backtest):
        parser.error("--html goes with --report or --backtest")
    return args


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # state, journal and logs are the owner's alone (positions, fills, addresses)
    args = parse_args(argv)
    if args.online and not args.check_config:
        print("--online goes with --check-config", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.config)
        if args.dry_run:
            settings = with_dry_run(settings)
        if args.backtest:  # no key, no network: paper fills over the recording
            logging.basicConfig(level=logging.ERROR, format=LOG_FORMAT)  # a backtest logs only errors
            return backtest_command(settings, args.backtest, args.html, use_book=args.fills == "book")
        key = load_private_key(settings)
        notes = [] if args.report or args.ctl else check_offline(settings, key)  # --ctl: no key needed
    except ConfigError as exc:
        print(f"config: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        return check_config(settings, key, notes, args.online)
    if args.report:
        return report_command(settings, args.html)
    if args.ctl:
        return run_ctl(settings.state.path, args.ctl)
    setup_logging(settings.logging)
    return run_bot(settings, key)


def check_config(settings: Settings, key: bytes | None, notes: list[str], online: bool) -> int:
    """`--check-config`: the offline checks passed; with `online`, ask the exchange too (nothing
    signed), then print the resolved settings. 0 valid, 2 not (1: the exchange did not answer)."""
    if online:
        cleanup: list[Callable[[], None]] = []
        try:
            rest_url, _ = _endpoints(settings, cleanup)
            signer = L1Signer(key or secrets.token_bytes(32), is_mainnet=settings.is_mainnet).address
            check_online(settings, rest_url, signer, threading.Event())
        except StartError as exc:
            print(exc, file=sys.stderr)
            return exc.code
        finally:
            for step in reversed(cleanup):
                step()
    view = resolved_view(settings, key is not None)
    view["checks"] = {"version": __version__, "offline": "passed", "notes": notes,
                      "online": "passed" if online else "not run (add --online to ask the exchange)"}
    print(json.dumps(view, indent=2))
    return 0


def run_bot(settings: Settings, key: bytes | None) -> int:
    lock = InstanceLock(settings.state.path)
    try:
        acquired = lock.acquire()
    except OSError as exc:
        log.error("state: cannot open %s for the instance lock (%s)", lock.path, exc.strerror or exc)
        return 2
    if not acquired:
        log.info("another instance is running (pid %s); exiting", lock.holder_pid())
        return 0
    stop_event = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stop_event.is_set():
            log.info("received %s: shutting down", signal.Signals(signum).name)
        stop_event.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    store = StateStore(settings.state.path)
    try:
        store.open()
    except StateError as exc:
        log.error("state: %s", exc)
        lock.release()
        return 2
    cleanup: list[Callable[[], None]] = [lock.release, store.close]
    try:
        return _run(settings, key, store, stop_event, cleanup)
    finally:
        for step in reversed(cleanup):
            try:
                step()
            except Exception:  # a failing cleanup step must not hide the others
                log.exception("shutdown step failed")


def build_bot(settings: Settings, key: bytes | None, store: StateStore, stop_event: threading.Event,
              cleanup: list[Callable[[], None]]) -> TradingLoop:
    """Wire everything up to, not including, starting the WebSocket and health threads.

    Appends the matching shutdown steps to `cleanup` (run in reverse order by the caller).
    """
    rest_url, ws_url = _endpoints(settings, cleanup)
    signer = _signer(settings, key)
    account = settings.account.vault_address or settings.account.address or signer.address
    try:
        notifier = build_notifier(settings.notify, os.environ, account)  # before anything is signed
    except ConfigError as exc:
        raise StartError(2, f"config: {exc}") from exc
    api = settings.api
    rest = HyperliquidRestClient(rest_url, signer=signer, info_deadline_s=api.info_timeout_s,
                                 exchange_deadline_s=api.exchange_timeout_s, expires_after_s=api.order_expires_after_s,
                                 vault_address=settings.account.vault_address)
    cleanup.append(rest.close)
    log_banner(settings, account, signer.address, rest_url, ws_url)
    meta = check_exchange(settings, rest, account, stop_event)
    check_authority(settings, rest, signer.address, stop_event)
    try:
        store.bind(account, settings.network)
    except StateError as exc:
        raise StartError(2, f"state: {exc}") from exc
    exchange: Any = PaperExchange(lambda coin: meta.asset(coin).sz_decimals) if settings.dry_run else rest
    strategies = _strategies(settings)
    if not settings.dry_run:
        _set_leverage(settings, rest)
    events: queue.Queue[Any] = queue.Queue(maxsize=settings.websocket.queue_size)
    ws_client = _ws_client(settings, ws_url, account, events)
    loop = _assemble(settings, rest, exchange, StateWriter(store), meta, strategies, events, ws_client,
                     account, stop_event, notifier)
    loop.signer = signer.address
    if settings.dry_run:  # paper fills walk each market's latest l2Book
        exchange.book_of = lambda coin: loop.traders[coin].quotes.fresh_book() if coin in loop.traders else None
    if ws_client is not None:
        if ws_client.recorder is not None:
            cleanup.append(ws_client.recorder.stop)  # after the socket thread: its last frames are written
        cleanup.append(lambda: loop.ws.stop() if loop.ws is not None else None)  # the thread the loop has now
    for trader in loop.traders.values():
        _warm_up(trader, rest)
    loop.reconciler.at_start()
    # Start-up objects (modules, meta, candle history) live for the whole run: out of the
    # collector's sight, full collections stay short, which trims the tail of tick latency.
    gc.freeze()
    return loop


def _assemble(settings: Settings, rest: HyperliquidRestClient, exchange: Any, store: StateWriter, meta: Meta,
              strategies: dict[str, Any], events: "queue.Queue[Any]", ws: HyperliquidWebSocketClient | None,
              address: str, stop_event: threading.Event, notifier: Notifier) -> TradingLoop:
    """The parts, each given what it needs (docs/ARCHITECTURE.md)."""
    clock, paper = time.monotonic, settings.dry_run
    gate = InfoGate(clock)
    traders: dict[str, MarketTrader] = {}
    late: dict[str, TradingLoop] = {}  # the loop, once built: the executor's callbacks reach it
    executor = OrderExecutor(exchange, rest, store, gate, address, settings.api.order_expires_after_s, paper,
                             clock, wall_ms, want_check=lambda why: late["loop"].want_check(why),
                             on_protective=lambda coin, cloid, resting: late["loop"].protective_settled(coin, cloid,
                                                                                                         resting))
    reconciler = Reconciler(rest, store, executor, gate, traders, address, paper, clock, wall_ms, notifier)
    loop = TradingLoop(traders, executor, reconciler, gate, store, rest, events, ws, settings.websocket,
                       settings.check_interval, settings.risk, paper, address, stop_event, clock, wall_ms, notifier)
    late["loop"] = loop
    for market in settings.markets:
        sz_decimals = meta.asset(market.coin).sz_decimals
        trader_rules = MarketTrader.rules_for(market)
        protection = Protection(market.coin, sz_decimals, trader_rules, executor, store,
                                market.trading.exits_on_exchange and not paper, clock, wall_ms)
        traders[market.coin] = MarketTrader(market, sz_decimals, strategies[market.coin], executor, protection,
                                            store, loop, paper, clock, wall_ms, notifier)
    return loop


def _endpoints(settings: Settings, cleanup: list[Callable[[], None]]) -> tuple[str, str]:
    rest_url, ws_url = settings.rest_url, settings.ws_url
    if settings.embedded_simulator:
        from hyperliquid_sim import SimConfig, SimServer  # only for network: local (aiohttp stays optional)
        sim = SimServer(SimConfig(port=0, seed=settings.simulator.seed,
                                  trade_rate_hz=settings.simulator.trade_rate_hz,
                                  volatility=settings.simulator.volatility,
                                  initial_usdc=settings.simulator.initial_usdc))
        sim.start()
        cleanup.append(sim.stop)
        rest_url, ws_url = sim.rest_url, sim.ws_url
        log.info("network local: embedded simulator at %s", rest_url)
    assert rest_url is not None and ws_url is not None
    return rest_url, ws_url


def _signer(settings: Settings, key: bytes | None) -> L1Signer:
    if key is None:
        if settings.network != "local" and not settings.dry_run:
            raise StartError(2, f"no private key: set {settings.account.private_key_env} or "
                                f"account.private_key_file (needed to trade on {settings.network})")
        key = secrets.token_bytes(32)
        log.info("no private key configured: using a throwaway key")
    signer = L1Signer(key, is_mainnet=settings.is_mainnet)
    log.info("account %s on %s (%s)", signer.address, settings.network,
             "paper trading" if settings.dry_run else
             "orders to the local simulator" if settings.network == "local" else "live orders")
    if settings.live_trading:
        log.warning("LIVE TRADING ON MAINNET: orders use real money")
    return signer


def _strategies(settings: Settings) -> dict[str, Any]:
    out = {}
    for market in settings.markets:
        try:
            out[market.coin] = build_strategy(market.strategy.name, dict(market.strategy.params))
        except ValueError as exc:
            raise StartError(2, f"strategy of {market.coin}: {exc}") from exc
    return out


def _set_leverage(settings: Settings, rest: HyperliquidRestClient) -> None:
    for market in settings.markets:
        leverage = market.trading.leverage
        try:
            rest.update_leverage(market.coin, leverage, is_cross=True)
        except HyperliquidError as exc:  # unknown or refused: not trading on a leverage we cannot vouch for
            raise StartError(1, f"could not set leverage on {market.coin}: {exc}") from exc
        log.info("leverage set to %dx cross on %s", leverage, market.coin)


def _ws_client(settings: Settings, ws_url: str, address: str,
               events: "queue.Queue[Any]") -> HyperliquidWebSocketClient | None:
    if not settings.websocket.enabled:
        return None
    subs: list[dict[str, Any]] = []
    for coin in settings.coins:
        subs += [{"type": "trades", "coin": coin}, {"type": "bbo", "coin": coin}]
    if settings.dry_run:  # the depth paper fills walk (a live order meets the exchange's own book)
        subs += [{"type": "l2Book", "coin": coin} for coin in settings.coins]
    else:
        subs += [{"type": "userFills", "user": address}, {"type": "orderUpdates", "user": address},
                 {"type": "userEvents", "user": address}]
    ws = settings.websocket
    return HyperliquidWebSocketClient(
        ws_url, subs, events, reconnect_interval_s=ws.reconnect_interval, max_backoff_s=ws.max_backoff,
        max_reconnect_attempts=ws.max_reconnect_attempts, ping_interval_s=ws.ping_interval,
        pong_timeout_s=ws.pong_timeout, data_timeout_s=ws.data_timeout, subscribe_timeout_s=ws.subscribe_timeout,
        recorder=FrameRecorder(settings.record.dir) if settings.record.dir else None)


def _run(settings: Settings, key: bytes | None, store: Any, stop_event: threading.Event,
         cleanup: list[Callable[[], None]]) -> int:
    try:
        loop = build_bot(settings, key, store, stop_event, cleanup)
    except StartError as exc:
        log.error("%s", exc)
        return exc.code
    if settings.health.enabled:
        health = HealthServer(settings.health.host, settings.health.port, loop.health_snapshot)
        try:
            health.start()
        except OSError as exc:  # taken since the check: a monitor would ask another program
            log.error("health.port must be a port free on %s, got %d (%s); not trading", settings.health.host,
                      settings.health.port, exc.strerror or exc)
            return 2
        cleanup.append(health.stop)
        log.info("health endpoint on http://%s:%d/health", settings.health.host, health.port)
    if loop.ws is not None:
        loop.ws.start()
    else:
        log.info("WebSocket disabled: polling REST prices every %.0fs", settings.check_interval)
    loop.publish_health()
    loop.notifier.start()  # notifications: their own threads
    cleanup.append(loop.notifier.stop)
    serve_ctl(socket_path(settings.state.path), loop.desk.requests, cleanup)
    loop.desk.announce_start(settings.network)
    try:
        loop.run()
    finally:
        loop.shutdown()
        loop.desk.announce_stop()  # queued; the notifier's shutdown step delivers it
    log.info("stopped cleanly")
    return 0


def _warm_up(trader: MarketTrader, rest: HyperliquidRestClient) -> None:
    interval = trader.candle_interval
    end = wall_ms()
    try:
        candles = rest.candle_snapshot(trader.coin, interval, end - 200 * interval_ms(interval), end)
    except HyperliquidError as exc:
        log.warning("%s candle warm-up failed: %s; the strategy starts cold", trader.coin, exc)
        return
    trader.candles.load(candles)
    log.info("warmed up %d %s candles for %s", len(candles), interval, trader.coin)


if __name__ == "__main__":
    sys.exit(main())
