"""Configuration: parse JSON/YAML, validate every key, build frozen settings (pure; no network).

Owns: the config schema (keys, types, ranges, defaults; INTERFACES.md is the contract), cross-field
rules, and loading the private key from an environment variable or an owner-only file.
Must not: start anything, log a secret, or accept a key it does not know (a misspelt key is an
error, never silently ignored). Every error is a `ConfigError` naming the key, the value and what
was expected; `trading_bot.py` prints it as `config: <message>` and exits 2.
"""
from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import yaml

Network = Literal["local", "testnet", "mainnet"]

ENDPOINTS: dict[str, tuple[str, str]] = {
    "mainnet": ("https://api.hyperliquid.xyz", "wss://api.hyperliquid.xyz/ws"),
    "testnet": ("https://api.hyperliquid-testnet.xyz", "wss://api.hyperliquid-testnet.xyz/ws"),
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
CANDLE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d")


class ConfigError(ValueError):
    """A config problem, phrased for a person: `<key> must be <expectation>, got <value>`."""


# ---- settings objects ---------------------------------------------------------------------

@dataclass(frozen=True)
class ApiSettings:
    rest_url: str | None = None
    ws_url: str | None = None
    exchange_timeout_s: float = 5.0   # the most one /exchange call may take, connect to last byte
    info_timeout_s: float = 3.0       # the same for /info
    order_expires_after_s: float = 5.0  # signed expiresAfter: later, the exchange refuses the action


@dataclass(frozen=True)
class WebSocketSettings:
    enabled: bool = False
    reconnect_interval: float = 5.0
    max_reconnect_attempts: int = 10
    fallback_poll_interval: float = 2.0
    stale_after: float = 10.0
    max_backoff: float = 60.0
    ping_interval: float = 30.0
    pong_timeout: float = 10.0
    data_timeout: float = 20.0
    subscribe_timeout: float = 5.0
    queue_size: int = 10000


@dataclass(frozen=True)
class TradingSettings:
    stop_loss_pct: Decimal | None = Decimal("2")
    take_profit_pct: Decimal | None = Decimal("4")
    trailing_stop_pct: Decimal | None = Decimal("1")
    trailing_offset_pct: Decimal = Decimal("0")
    order_size_usd: Decimal = Decimal("100")
    leverage: int = 3
    slippage_pct: Decimal = Decimal("0.5")
    max_position_usd: Decimal = Decimal("1000")
    max_orders_per_minute: int = 10
    exits_on_exchange: bool = False


@dataclass(frozen=True)
class StrategySettings:
    name: str = "ema_cross"
    candle_interval: str = "1m"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MarketSettings:
    """One traded coin: its own exits, sizing, leverage and strategy (the top-level `trading`
    and `strategy` sections are the defaults each market may override key by key)."""
    coin: str
    trading: TradingSettings
    strategy: StrategySettings


@dataclass(frozen=True)
class RiskSettings:
    """Account-wide limits across all markets, checked before every entry (None: no limit)."""
    max_open_positions: int | None = None
    max_total_position_usd: Decimal | None = None


@dataclass(frozen=True)
class HealthSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True)
class LoggingSettings:
    file: str = "logs/bot.log"
    level: str = "INFO"
    max_bytes: int = 10_000_000
    backup_count: int = 5
    console: bool = True


@dataclass(frozen=True)
class StateSettings:
    path: str = "state/bot.db"


@dataclass(frozen=True)
class AccountSettings:
    private_key_env: str = "HL_PRIVATE_KEY"
    private_key_file: str | None = None


@dataclass(frozen=True)
class SimulatorSettings:
    seed: int = 42
    trade_rate_hz: float = 5.0
    volatility: float = 0.0005
    initial_usdc: Decimal = Decimal("10000")


@dataclass(frozen=True)
class Settings:
    network: Network = "local"
    symbol: str = "BTC"
    check_interval: float = 300.0
    dry_run: bool = True
    api: ApiSettings = ApiSettings()
    websocket: WebSocketSettings = WebSocketSettings()
    trading: TradingSettings = TradingSettings()
    strategy: StrategySettings = StrategySettings()
    health: HealthSettings = HealthSettings()
    logging: LoggingSettings = LoggingSettings()
    state: StateSettings = StateSettings()
    account: AccountSettings = AccountSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    risk: RiskSettings = RiskSettings()
    markets: tuple[MarketSettings, ...] = ()  # filled by the loader: `symbol` alone is one market
    source: str = ""  # the file these settings came from

    @property
    def coins(self) -> tuple[str, ...]:
        return tuple(m.coin for m in self.markets)

    def market(self, coin: str) -> MarketSettings:
        return next(m for m in self.markets if m.coin == coin)

    @property
    def rest_url(self) -> str | None:
        """REST base URL; None for `local` without an override (the embedded simulator's)."""
        if self.api.rest_url:
            return self.api.rest_url
        return ENDPOINTS[self.network][0] if self.network in ENDPOINTS else None

    @property
    def ws_url(self) -> str | None:
        if self.api.ws_url:
            return self.api.ws_url
        if self.api.rest_url:
            return derive_ws_url(self.api.rest_url)
        return ENDPOINTS[self.network][1] if self.network in ENDPOINTS else None

    @property
    def embedded_simulator(self) -> bool:
        return self.network == "local" and not self.api.rest_url

    @property
    def is_mainnet(self) -> bool:
        return self.network == "mainnet"

    @property
    def live_trading(self) -> bool:
        return self.network == "mainnet" and not self.dry_run


def derive_ws_url(rest_url: str) -> str:
    """As the official SDK does: http -> ws, https -> wss, plus `/ws`."""
    base = rest_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + "/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://"):] + "/ws"
    return base + "/ws"


# ---- checks: each returns the converted value or raises _Bad(expectation) ------------------

class _Bad(Exception):
    def __init__(self, expectation: str) -> None:
        super().__init__(expectation)
        self.expectation = expectation


Check = Callable[[Any], Any]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = True,
           integer: bool = False, optional: bool = False) -> Check:
    kind = "an integer" if integer else "a number"
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"<= {hi:g}")
    expectation = f"{kind} {' and '.join(parts)}".strip() + (" or null" if optional else "")

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if not _is_number(value) or (integer and not isinstance(value, int)):
            raise _Bad(expectation)
        if isinstance(value, float) and not math.isfinite(value):
            raise _Bad(expectation)
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise _Bad(expectation)
        if hi is not None and value > hi:
            raise _Bad(expectation)
        return int(value) if integer else float(value)
    return check


def decimal(lo: float | None = None, hi: float | None = None, *, lo_open: bool = True,
            optional: bool = False) -> Check:
    inner = number(lo, hi, lo_open=lo_open)

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        try:
            inner(value)
        except _Bad as bad:
            raise _Bad(bad.expectation + (" or null" if optional else "")) from None
        return Decimal(str(value))
    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad("true or false")
    return value


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise _Bad("one of " + ", ".join(f'"{c}"' for c in choices))
        return value
    return check


def text(*, optional: bool = False, prefixes: tuple[str, ...] = ()) -> Check:
    expectation = "a non-empty string"
    if prefixes:
        expectation = "a URL starting with " + " or ".join(prefixes)
    if optional:
        expectation += " or null"

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise _Bad(expectation)
        if prefixes and not value.startswith(prefixes):
            raise _Bad(expectation)
        return value
    return check


def coin(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 20 or not value.replace("-", "").isalnum():
        raise _Bad('a coin name such as "BTC"')
    return value


def env_name(value: Any) -> str:
    if not isinstance(value, str) or not value or not value.replace("_", "").isalnum():
        raise _Bad("an environment variable name")
    return value


def mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad("an object")
    return dict(value)


# The schema: section -> key -> check. Defaults live on the dataclasses above.
SECTIONS: dict[str, tuple[type, dict[str, Check]]] = {
    "api": (ApiSettings, {
        "rest_url": text(optional=True, prefixes=("http://", "https://")),
        "ws_url": text(optional=True, prefixes=("ws://", "wss://")),
        "exchange_timeout_s": number(0.5, 30, lo_open=False),
        "info_timeout_s": number(0.5, 30, lo_open=False),
        "order_expires_after_s": number(1, 60, lo_open=False),
    }),
    "websocket": (WebSocketSettings, {
        "enabled": boolean,
        "reconnect_interval": number(0, 3600),
        "max_reconnect_attempts": number(1, 1000, lo_open=False, integer=True),
        "fallback_poll_interval": number(0.1, 3600, lo_open=False),
        "stale_after": number(0, 3600),
        "max_backoff": number(0, 3600),
        "ping_interval": number(1, 55, lo_open=False),
        "pong_timeout": number(0, 60),
        "data_timeout": number(0, 3600),
        "subscribe_timeout": number(0, 60),
        "queue_size": number(100, 10_000_000, lo_open=False, integer=True),
    }),
    "trading": (TradingSettings, {
        "stop_loss_pct": decimal(0, 99, optional=True),
        "take_profit_pct": decimal(0, 1000, optional=True),
        "trailing_stop_pct": decimal(0, 99, optional=True),
        "trailing_offset_pct": decimal(0, 1000, lo_open=False),
        "order_size_usd": decimal(10, None, lo_open=False),
        "leverage": number(1, 50, lo_open=False, integer=True),
        "slippage_pct": decimal(0, 10),
        "max_position_usd": decimal(0),
        "max_orders_per_minute": number(1, 1000, lo_open=False, integer=True),
        "exits_on_exchange": boolean,
    }),
    "strategy": (StrategySettings, {
        "name": text(),
        "candle_interval": one_of(*CANDLE_INTERVALS),
        "params": mapping,
    }),
    "health": (HealthSettings, {
        "enabled": boolean,
        "host": text(),
        "port": number(0, 65535, lo_open=False, integer=True),
    }),
    "logging": (LoggingSettings, {
        "file": text(),
        "level": one_of(*LOG_LEVELS),
        "max_bytes": number(10_000, None, lo_open=False, integer=True),
        "backup_count": number(1, 100, lo_open=False, integer=True),
        "console": boolean,
    }),
    "state": (StateSettings, {"path": text()}),
    "account": (AccountSettings, {
        "private_key_env": env_name,
        "private_key_file": text(optional=True),
    }),
    "risk": (RiskSettings, {
        "max_open_positions": number(1, 1000, lo_open=False, integer=True, optional=True),
        "max_total_position_usd": decimal(0, optional=True),
    }),
    "simulator": (SimulatorSettings, {
        "seed": number(0, None, lo_open=False, integer=True),
        "trade_rate_hz": number(0, 10_000),
        "volatility": number(0, 0.1, lo_open=False),
        "initial_usdc": decimal(0),
    }),
}
TOP_LEVEL: dict[str, Check] = {
    "network": one_of("local", "testnet", "mainnet"),
    "symbol": coin,
    "check_interval": number(0, 86_400),
    "dry_run": boolean,
}
_SECRET_LOOKING = ("private_key", "secret", "mnemonic", "seed_phrase")


def _show(value: Any) -> str:
    """How a bad value is quoted in a message: JSON-ish, short, never a long secret-looking blob."""
    try:
        shown = json.dumps(value, default=str)
    except (TypeError, ValueError):
        shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _quote_path(path: Any) -> str:
    """Paths are quoted whole: a truncated path helps nobody find the file."""
    return json.dumps(str(path))


def _fail(key: str, expectation: str, value: Any, secret: bool = False) -> ConfigError:
    shown = "(hidden)" if secret else _show(value)
    return ConfigError(f"{key} must be {expectation}, got {shown}")


def settings_from_dict(raw: Any, source: str = "") -> Settings:
    """Validate a parsed config document and build `Settings` (raises ConfigError)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be an object of settings, got {_show(raw)}")
    known = set(TOP_LEVEL) | set(SECTIONS) | {"markets"}
    for key in raw:
        if not isinstance(key, str) or key not in known:
            secret = isinstance(key, str) and any(s in key.lower() for s in _SECRET_LOOKING)
            hint = " (private keys never go in the config: use account.private_key_env)" if secret else ""
            raise ConfigError(f"{key} is not a known setting{hint}; expected one of: "
                              + ", ".join(sorted(known)))
    values: dict[str, Any] = {"source": source}
    for key, check in TOP_LEVEL.items():
        if key in raw:
            try:
                values[key] = check(raw[key])
            except _Bad as bad:
                raise _fail(key, bad.expectation, raw[key]) from None
    for section, (cls, checks) in SECTIONS.items():
        if section not in raw:
            continue
        body = raw[section]
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise _fail(section, "an object", body)
        values[section] = _section(section, cls, checks, body)
    settings = Settings(**values)
    settings = replace(settings, markets=_markets(raw, settings))
    _check_cross_fields(settings)
    return settings


def _section(section: str, cls: type, checks: Mapping[str, Check], body: Mapping[str, Any],
             base: Any = None) -> Any:
    """One section's object: every key checked; keys not given come from `base` (or the defaults)."""
    kwargs: dict[str, Any] = {}
    for key, value in body.items():
        dotted = f"{section}.{key}"
        if key not in checks:
            secret = isinstance(key, str) and any(s in key.lower() for s in _SECRET_LOOKING)
            if secret:
                raise ConfigError(f"{dotted} is not allowed: private keys never go in the config; "
                                  "set account.private_key_env or account.private_key_file")
            raise ConfigError(f"{dotted} is not a known setting; expected one of: " + ", ".join(sorted(checks)))
        try:
            kwargs[key] = checks[key](value)
        except _Bad as bad:
            raise _fail(dotted, bad.expectation, value) from None
    return replace(base, **kwargs) if base is not None else cls(**kwargs)


_MARKET_SECTIONS = ("trading", "strategy")


def _markets(raw: Mapping[str, Any], s: Settings) -> tuple[MarketSettings, ...]:
    """`markets: {COIN: {trading: {...}, strategy: {...}}}`, each over the top-level defaults;
    without it, `symbol` is the one market."""
    if "markets" not in raw:
        return (MarketSettings(s.symbol, s.trading, s.strategy),)
    if "symbol" in raw:
        raise ConfigError(f"markets and symbol: give one of the two (symbol is shorthand for one market), "
                          f"got symbol {_show(raw['symbol'])} and markets")
    body = raw["markets"]
    if not isinstance(body, dict) or not body:
        raise _fail("markets", "an object of at least one coin, e.g. {\"BTC\": {}, \"ETH\": {}}", body)
    out = []
    for name, market in body.items():
        try:
            coin_name = coin(name)
        except _Bad as bad:
            raise _fail("markets", f"keys that are coin names ({bad.expectation})", name) from None
        out.append(_market(coin_name, market, s))
    return tuple(out)


def _market(coin_name: str, body: Any, s: Settings) -> MarketSettings:
    where = f"markets.{coin_name}"
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise _fail(where, "an object with trading and/or strategy", body)
    for key in body:
        if key not in _MARKET_SECTIONS:
            raise ConfigError(f"{where}.{key} is not a known setting; expected one of: trading, strategy")
    parts = {}
    for section in _MARKET_SECTIONS:
        part = body.get(section) or {}
        if not isinstance(part, dict):
            raise _fail(f"{where}.{section}", "an object", part)
        cls, checks = SECTIONS[section]
        parts[section] = _section(f"{where}.{section}", cls, checks, part, base=getattr(s, section))
    return MarketSettings(coin_name, parts["trading"], parts["strategy"])


def _check_cross_fields(s: Settings) -> None:
    ws = s.websocket
    if ws.max_backoff < ws.reconnect_interval:
        raise ConfigError(f"websocket.max_backoff must be >= websocket.reconnect_interval "
                          f"({ws.reconnect_interval:g}), got {ws.max_backoff:g}")
    if ws.ping_interval + ws.pong_timeout >= 60:
        raise ConfigError("websocket.pong_timeout must keep ping_interval + pong_timeout < 60 "
                          f"(the server drops a connection silent for 60 s), got {ws.pong_timeout:g}")
    single = len(s.markets) == 1 and s.markets[0].coin == s.symbol
    for market in s.markets:
        prefix = "" if single else f"markets.{market.coin}."
        _check_market(s, market, prefix)
    if s.network != "local" and s.api.rest_url and s.api.rest_url.startswith("http://") \
            and not s.api.rest_url.startswith(("http://127.", "http://localhost")):
        raise ConfigError(f"api.rest_url must use https for network {s.network}, got {_show(s.api.rest_url)}")
    if s.api.ws_url and not s.api.rest_url:
        raise ConfigError(f"api.rest_url must be set when api.ws_url is set, got {_show(s.api.ws_url)} "
                          "for ws_url alone")


def _check_market(s: Settings, market: MarketSettings, prefix: str) -> None:
    tr = market.trading
    if tr.max_position_usd < tr.order_size_usd:
        raise ConfigError(f"{prefix}trading.max_position_usd must be >= trading.order_size_usd "
                          f"({tr.order_size_usd}), got {tr.max_position_usd}")
    if tr.stop_loss_pct is None and tr.trailing_stop_pct is None:
        raise ConfigError(f"{prefix}trading.stop_loss_pct must be set when trading.trailing_stop_pct is null "
                          "(a position needs at least one stop), got null")
    if tr.stop_loss_pct is not None and tr.stop_loss_pct * tr.leverage >= 100:
        raise ConfigError(f"{prefix}trading.stop_loss_pct must be below 100 / leverage ({100 / tr.leverage:g}) "
                          f"or the stop sits past liquidation, got {tr.stop_loss_pct}")
    if market.strategy.name == "always_long" and s.network == "mainnet" and not s.dry_run:
        raise ConfigError(f'{prefix}strategy.name "always_long" is a demo (it buys whenever flat): not with '
                          'real money; use it on local or testnet, or set dry_run: true, got "always_long" '
                          'on mainnet')


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read, parse and validate a `.json`, `.yaml` or `.yml` config file."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"--config must be a .json, .yaml or .yml file, got {_quote_path(p)}")
    try:
        text_ = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config must name an existing file, got {_quote_path(p)} (not found)") from None
    except OSError as exc:
        raise ConfigError(f"--config must name a readable file, got {_quote_path(p)} "
                          f"({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config must be UTF-8 text, got {_quote_path(p)}") from None
    try:
        if suffix == ".json":
            raw = json.loads(text_)
        else:
            raw = yaml.safe_load(text_)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p} must be valid JSON, got an error at line {exc.lineno} "
                          f"column {exc.colno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "unparseable"
        raise ConfigError(f"{p} must be valid YAML, got an error{where}: {problem}") from None
    if raw is None:
        raw = {}
    return settings_from_dict(raw, source=str(p))


# ---- private key --------------------------------------------------------------------------

def _parse_key(text_: str, where: str) -> bytes:
    raw = text_.strip()
    if raw.startswith(("0x", "0X")):
        raw = raw[2:]
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    if len(key) != 32:
        # Never echo the content: it may be a real key with a typo.
        raise ConfigError(f"{where} must hold a 32-byte hex private key, got a value that is not one")
    return key


def load_private_key(settings: Settings, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The private key from the env var or the owner-only key file; None if neither is set."""
    env = os.environ if environ is None else environ
    account = settings.account
    if account.private_key_file:
        path = Path(account.private_key_file)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise ConfigError(f"account.private_key_file must name an existing file, "
                              f"got {_quote_path(path)} (not found)") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"account.private_key_file must be readable by its owner only "
                              f"(chmod 600), got {_quote_path(path)} with mode {stat.filemode(mode)}")
        return _parse_key(path.read_text(encoding="utf-8"), "account.private_key_file")
    value = env.get(account.private_key_env)
    if value:
        return _parse_key(value, f"environment variable {account.private_key_env}")
    return None


# ---- display ------------------------------------------------------------------------------

def resolved_view(settings: Settings, key_present: bool) -> dict[str, Any]:
    """The resolved settings as plain data for `--check-config` (no secret can appear)."""
    def plain(obj: Any) -> Any:
        if hasattr(obj, "__dataclass_fields__"):
            return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}
        if isinstance(obj, Decimal):
            return float(obj)
        if isinstance(obj, Mapping):
            return {k: plain(v) for k, v in obj.items()}
        if isinstance(obj, (tuple, list)):
            return [plain(v) for v in obj]
        return obj

    view = plain(settings)
    view.pop("source", None)
    view["markets"] = {m.coin: {"trading": plain(m.trading), "strategy": plain(m.strategy)} for m in settings.markets}
    view["resolved"] = {
        "rest_url": settings.rest_url or "(embedded simulator)",
        "ws_url": settings.ws_url or "(embedded simulator)",
        "live_trading": settings.live_trading,
        "private_key": "set (hidden)" if key_present else "not set",
    }
    return view


def with_dry_run(settings: Settings) -> Settings:
    """`--dry-run`: force paper trading whatever the config says."""
    return replace(settings, dry_run=True)


def market_of(coin_name: str, trading: TradingSettings | None = None,
              strategy: StrategySettings | None = None) -> MarketSettings:
    """A market with the given (or default) settings: for tests and tools."""
    return MarketSettings(coin_name, trading or TradingSettings(), strategy or StrategySettings())
