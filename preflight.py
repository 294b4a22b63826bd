"""What can be known before trading, checked before anything is signed: `--check-config` and
every start run the same checks.

Owns: the offline checks (a key present for a live network; the Telegram token's variable set
when Telegram is on; the state and log paths usable: no path under a file, a folder the bot can
create files in, an existing file it can write; the health port free: bound, then released), the
online ones that only ask `/info` (every coin listed, leverage within each coin's maximum, the
account readable, the key allowed to trade the account), the start-up retry of those queries, and
`StartError` (start-up cannot go on; its exit status).
Must not: sign or send anything to `/exchange`, create the bot's folders or files (a probe file
is created and removed at once), or print: each failure is one `ConfigError` or `StartError`
naming the key and the path or value, which `trading_bot.py` shows as one line.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from config_errors import ConfigError
from hyperliquid_rest import HyperliquidRestClient
from notify import telegram_token
from rest_errors import HyperliquidError
from settings import Settings
from wire import Meta

log = logging.getLogger("bot")

START_TRIES = 3
START_RETRY_MAX_S = 2.0  # start-up waits at most this between tries (a 429's Retry-After included)


class StartError(Exception):
    """Start-up cannot go on; `code` is the exit status (1 exchange unreachable, 2 bad setup)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---- offline ------------------------------------------------------------------------------

def check_offline(settings: Settings, key: bytes | None) -> list[str]:
    """Every check that needs no exchange; raises ConfigError on the first failure. Returns notes
    for `--check-config` (e.g. the health port held by this config's running bot)."""
    if key is None and settings.network != "local" and not settings.dry_run:
        account = settings.account
        raise ConfigError(f"account.private_key_env must name a set environment variable holding the key (or set "
                          f"account.private_key_file): trading on {settings.network} signs every order, got "
                          f"{account.private_key_env} not set")
    check_writable_file("state.path", settings.state.path)
    check_writable_file("logging.file", settings.logging.file)
    if settings.notify.telegram.chat_id is not None:
        telegram_token(settings.notify.telegram, os.environ)  # the token's variable is set and holds one
    return _slippage_notes(settings) + _check_health_port(settings)


def _slippage_notes(settings: Settings) -> list[str]:
    """A warning, not an error: an exit's limit as far from the price as the stop is from entry
    can fill worse than the stop distance itself."""
    notes = []
    for market in settings.markets:
        tr = market.trading
        stops = [pct for pct in (tr.stop_loss_pct, tr.trailing_stop_pct) if pct is not None]
        if stops and tr.slippage_pct >= min(stops):
            notes.append(f"warning: {market.coin} trading.slippage_pct {tr.slippage_pct} is at or above its stop "
                         f"distance {min(stops)} %: an exit may fill further from the stop than the stop is from entry")
    return notes


def check_writable_file(key: str, path_text: str) -> None:
    """The file at `path_text` can be created (or, if it exists, written) by this process, as can
    files beside it (SQLite's journal, the lock's pid file, rotated logs)."""
    path = Path(path_text)
    shown = f'"{path}"'
    folder = path.parent
    existing = folder
    while not existing.exists():
        if existing.is_symlink():
            raise ConfigError(f"{key} must be in a folder that exists or can be created, got {shown} "
                              f"({existing} is a broken link)")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key} must be in a folder, got {shown} ({existing} is a file, not a folder)")
    if path.is_dir():
        raise ConfigError(f"{key} must name a file, got {shown} (a directory)")
    _probe_folder(key, shown, existing, creating=existing != folder)
    if path.exists():
        try:
            with open(path, "ab"):
                pass
        except OSError as exc:
            raise ConfigError(f"{key} must name a file this user can write, got {shown} ({exc.strerror})") from None


def _probe_folder(key: str, shown: str, folder: Path, creating: bool) -> None:
    """A file can be made in `folder`: the only sure test (permissions, read-only mounts, ACLs and
    special file systems all answer it) is to make one, then remove it."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".hlbot-probe-", dir=folder)
    except OSError as exc:
        what = f"cannot create folders in {folder}" if creating else f"cannot create files in {folder}"
        raise ConfigError(f"{key} must be in a folder this user can write, got {shown} ({what}: "
                          f"{exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def running_instance(state_path: str) -> bool:
    """True when a bot holds the instance lock on this state file (state.InstanceLock's flock)."""
    try:
        fd = os.open(state_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


def _check_health_port(settings: Settings) -> list[str]:
    health = settings.health
    if not health.enabled or health.port == 0:
        return []
    if running_instance(settings.state.path):
        # Its own bot holds the port: a cron start goes on to "another instance is running" and exits 0.
        return [f"health.port {health.port}: not tried, a bot runs on this state file (it holds the port)"]
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the health server binds
    try:
        probe.bind((health.host, health.port))
        probe.listen(1)
    except socket.gaierror as exc:
        raise ConfigError(f'health.host must be an IPv4 address or name of this machine, got "{health.host}" '
                          f"({exc.strerror})") from None
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f'health.host must be an address of this machine, got "{health.host}" '
                              f"({exc.strerror})") from None
        raise ConfigError(f"health.port must be a port free on {health.host}, got {health.port} ({exc.strerror}; "
                          "another program listens there, so a monitor would ask it instead)") from None
    finally:
        probe.close()
    return []


# ---- online: /info only -------------------------------------------------------------------

def at_start(call: Callable[[], Any], stop_event: threading.Event) -> Any:
    """A start-up query, tried up to START_TRIES times on retryable errors with short waits
    (before the loop runs; a signal cuts the wait short). Raises the last error."""
    for attempt in range(1, START_TRIES + 1):
        try:
            return call()
        except HyperliquidError as exc:
            if not exc.retryable or attempt == START_TRIES:
                raise
            wait_s = min(getattr(exc, "retry_after_s", 0.5 * attempt), START_RETRY_MAX_S)
            log.warning("start-up query failed (%s); trying again in %.1fs", exc, wait_s)
            if stop_event.wait(wait_s):
                raise
    raise AssertionError("unreachable")


def check_exchange(settings: Settings, rest: HyperliquidRestClient, address: str,
                   stop_event: threading.Event) -> Meta:
    """The exchange answers, lists every market's coin with a maximum leverage at or above the
    configured one, and knows the account."""
    try:
        meta = at_start(rest.meta, stop_event)
    except HyperliquidError as exc:
        raise StartError(1, f"cannot reach the exchange at {rest.base_url}: {exc}") from exc
    single = len(settings.markets) == 1 and settings.markets[0].coin == settings.symbol
    for market in settings.markets:
        where = "symbol" if single else f"markets.{market.coin}"
        if market.coin not in meta.assets:
            raise StartError(2, f"{where}: coin {market.coin} is not listed on {settings.network} "
                                f"({rest.base_url})")
        most = meta.asset(market.coin).max_leverage
        if market.trading.leverage > most:
            key = "trading.leverage" if single else f"markets.{market.coin}.trading.leverage"
            raise StartError(2, f"{key} must be <= {most} (the most {market.coin} allows on {settings.network}), "
                                f"got {market.trading.leverage}")
    try:
        account = at_start(lambda: rest.clearinghouse_state(address), stop_event)
        log.info("account value %s USDC, %d open position(s)", account.account_value, len(account.positions))
    except HyperliquidError as exc:
        raise StartError(1, f"cannot read the account at {rest.base_url}: {exc}") from exc
    return meta


def check_authority(settings: Settings, rest: HyperliquidRestClient, signer: str,
                    stop_event: threading.Event) -> None:
    """The key may trade for the account: it is the account, or an API wallet the account approved
    (`extraAgents`). Otherwise StartError(2) naming both, before anything is signed."""
    master = settings.account.address
    if master is None or master.lower() == signer.lower():
        if settings.account.vault_address:
            log.info("trading for vault %s, signed by %s (the exchange refuses orders if it does not lead it)",
                     settings.account.vault_address, signer)
        return
    try:
        agents = at_start(lambda: rest.extra_agents(master), stop_event)
    except HyperliquidError as exc:
        raise StartError(1, f"cannot ask the exchange which API wallets {master} approved: {exc}") from exc
    now_ms = time.time_ns() // 1_000_000
    if not any(a.address.lower() == signer.lower() and a.valid_at(now_ms) for a in agents):
        raise StartError(2, f"account: the key's address {signer} may not trade for account {master}: it is not "
                            "an API wallet the account approved (or its approval expired); approve it on the exchange "
                            "first, or set account.address to the key's own account")
    log.info("API wallet %s trades for account %s", signer, master)


def check_online(settings: Settings, rest_url: str, signer: str, stop_event: threading.Event) -> None:
    """`--check-config --online`: the checks a start makes of the exchange, over `/info` only."""
    account = settings.account.vault_address or settings.account.address or signer
    rest = HyperliquidRestClient(rest_url, signer=None, info_deadline_s=settings.api.info_timeout_s)
    try:
        check_exchange(settings, rest, account, stop_event)
        check_authority(settings, rest, signer, stop_event)
    finally:
        rest.close()
