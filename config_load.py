"""Loading the config: a JSON/YAML file or a parsed document to checked, frozen `Settings`; the key.

Owns: the config schema (keys and their checks; INTERFACES.md is the contract, defaults live on
the dataclasses in settings.py), unknown keys refused, the `markets` section over the top-level
defaults, cross-field rules (each market's strategy checked against the strategy's declared
parameters among them), and reading `.json`/`.yaml`/`.yml` files (a key given twice in one
object, or an empty file, is an error). The private key is private_key.py's (`load_private_key`
is re-exported here).
Must not: start anything, log a secret, or accept a key it does not know (a misspelt key is an
error, never silently ignored). Every error is a `ConfigError` (config_errors.py) naming the key,
the value and what was expected, with key-length hex strings masked; `trading_bot.py` prints it
as `config: <message>` and exits 2.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import yaml

from config_checks import Bad, Check, address, boolean, coin, decimal, env_name, mapping, number, one_of, text
from config_checks import chat_id, env_name_or_null, url
from config_errors import ConfigError, quote_path as _quote_path, show_value as _show
from private_key import load_private_key  # noqa: F401 - part of the loader's interface
from settings import (AccountSettings, ApiSettings, HealthSettings, LoggingSettings, MarketSettings, RecordSettings,
                      RiskSettings, Settings, SimulatorSettings, StateSettings, StrategySettings, TradingSettings,
                      WebSocketSettings)
from settings import ORDER_EXPIRES_AFTER_MAX_S, NotifySettings, TelegramSettings
from strategies import StrategyParamError, check_strategy

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
CANDLE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d")


# The schema: section -> key -> check. Defaults live on the dataclasses (settings.py).
SECTIONS: dict[str, tuple[type, dict[str, Check]]] = {
    "api": (ApiSettings, {
        "rest_url": text(optional=True, prefixes=("http://", "https://")),
        "ws_url": text(optional=True, prefixes=("ws://", "wss://")),
        "exchange_timeout_s": number(0.5, 30, lo_open=False),
        "info_timeout_s": number(0.5, 30, lo_open=False),
        "order_expires_after_s": number(1, ORDER_EXPIRES_AFTER_MAX_S, lo_open=False),
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
        "entry_order": one_of("ioc", "post_only", optional=True),
        "maker_repeg_s": number(0.5, 3600, lo_open=False),
        "maker_timeout_s": number(1, 86_400, lo_open=False),
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
        "address": address,
        "vault_address": address,
    }),
    "risk": (RiskSettings, {
        "max_open_positions": number(1, 1000, lo_open=False, integer=True, optional=True),
        "max_total_position_usd": decimal(0, optional=True),
    }),
    "notify": (NotifySettings, {
        "webhook_url": url("http", "https", optional=True),
        "telegram": lambda body: _telegram(body),  # a section of its own, checked key by key
        "timeout_s": number(0.5, 60, lo_open=False),
        "max_per_minute": number(1, 1000, lo_open=False, integer=True),
        "queue_size": number(1, 100_000, lo_open=False, integer=True),
    }),
    "record": (RecordSettings, {"dir": text(optional=True)}),
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
            except Bad as bad:
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
        except Bad as bad:
            raise _fail(dotted, bad.expectation, value) from None
    return replace(base, **kwargs) if base is not None else cls(**kwargs)


_TELEGRAM: dict[str, Check] = {"bot_token_env": env_name_or_null, "chat_id": chat_id, "api_url": url("https", "http")}


def _telegram(body: Any) -> TelegramSettings:
    """`notify.telegram`: chat_id and bot_token_env go together; the token travels in the API URL's
    path, so plain http is for a loopback host only (a local fake in tests)."""
    if body is None:
        return TelegramSettings()
    if not isinstance(body, dict):
        raise Bad("an object with bot_token_env, chat_id and api_url")
    env = body.get("bot_token_env")
    try:
        env_name_or_null(env)
    except Bad as bad:  # maybe the token itself, pasted into the wrong field: never echoed
        raise _fail("notify.telegram.bot_token_env", f"{bad.expectation} (the variable's name, not the token)",
                    env, secret=True) from None
    tg = _section("notify.telegram", TelegramSettings, _TELEGRAM, body)
    if (tg.chat_id is None) != (tg.bot_token_env is None):
        raise ConfigError("notify.telegram.chat_id and notify.telegram.bot_token_env must be set together (the chat "
                          "and the environment variable holding the bot token), got "
                          + ("chat_id alone" if tg.bot_token_env is None else "bot_token_env alone"))
    host = urlsplit(tg.api_url).hostname or ""
    if tg.api_url.startswith("http://") and not (host in ("localhost", "::1") or host.startswith("127.")):
        raise _fail("notify.telegram.api_url", "https (the bot token travels in its path; plain http only to "
                    "127.0.0.1 or localhost)", tg.api_url)
    return tg


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
        except Bad as bad:
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
        base = getattr(s, section)
        if section == "strategy" and part.get("name", base.name) != base.name and "params" not in part:
            base = replace(base, params={})  # parameters belong to their strategy: another one starts afresh
        cls, checks = SECTIONS[section]
        parts[section] = _section(f"{where}.{section}", cls, checks, part, base=base)
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
    if s.record.dir is not None and not ws.enabled:
        raise ConfigError(f"record.dir needs websocket.enabled: true (the stream is what is recorded), got "
                          f"{_show(s.record.dir)} with the WebSocket disabled")
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
    _check_strategy(market, prefix)
    if market.strategy.name == "always_long" and s.network == "mainnet" and not s.dry_run:
        raise ConfigError(f'{prefix}strategy.name "always_long" is a demo (it buys whenever flat): not with '
                          'real money; use it on local or testnet, or set dry_run: true, got "always_long" '
                          'on mainnet')


def _check_strategy(market: MarketSettings, prefix: str) -> None:
    """The strategy exists and takes these parameters (its own schema: strategies.py)."""
    strategy = market.strategy
    try:
        check_strategy(strategy.name, strategy.params)
    except StrategyParamError as exc:
        if exc.param is None:
            raise ConfigError(f"{prefix}strategy.name must be one of the registered strategies ({exc.expectation}), "
                              f"got {_show(exc.value)}") from None
        if not exc.param:
            raise ConfigError(f"{prefix}strategy.params must be parameters {exc.strategy} accepts "
                              f"({exc.expectation}), got {_show(exc.value)}") from None
        key = f"{prefix}strategy.params.{exc.param}"
        if exc.unknown:
            raise ConfigError(f"{key} is not a parameter of strategy {exc.strategy}; expected one of: "
                              f"{exc.expectation.removeprefix('accepted: ')}") from None
        raise ConfigError(f"{key} must be {exc.expectation}, got {_show(exc.value)}") from None


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
    if not text_.strip():
        raise ConfigError(f"{_quote_path(p)} must hold the settings, got an empty file")
    try:
        if suffix == ".json":
            raw = json.loads(text_, object_pairs_hook=_unique_keys)
        else:
            raw = yaml.load(text_, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except _RepeatedKey as exc:
        where = f" (line {exc.line})" if exc.line else ""
        raise ConfigError(f"{_quote_path(p)} must give each key once, got {_show(exc.key)} twice in one "
                          f"object{where}; the second would silently win") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p} must be valid JSON, got an error at line {exc.lineno} "
                          f"column {exc.colno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "unparseable"
        raise ConfigError(f"{p} must be valid YAML, got an error{where}: {problem}") from None
    if raw is None and suffix != ".json":  # JSON's null is refused as any non-object is
        raise ConfigError(f"{_quote_path(p)} must hold the settings, got only comments")
    return with_paths_from(settings_from_dict(raw, source=str(p)), p.resolve().parent)


class _RepeatedKey(Exception):
    def __init__(self, key: Any, line: int | None = None) -> None:
        super().__init__(key)
        self.key, self.line = key, line


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: an object that repeats a key is refused (json keeps the last)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping repeating a key (PyYAML keeps the last). Keys a merge
    (`<<`) brings in may be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:
                continue  # unhashable: SafeLoader's own error says so
            if repeated:
                raise _RepeatedKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def with_paths_from(settings: Settings, folder: Path) -> Settings:
    """Relative paths in the config (state, log file, key file, record dir) and their defaults are
    relative to the config file's folder, not to wherever the bot was started from (cron, --report)."""
    def absolute(path: str | None) -> str | None:
        return None if path is None else os.path.normpath(folder / path) if not Path(path).is_absolute() else path
    return replace(settings,
                   state=replace(settings.state, path=absolute(settings.state.path)),
                   logging=replace(settings.logging, file=absolute(settings.logging.file)),
                   account=replace(settings.account, private_key_file=absolute(settings.account.private_key_file)),
                   record=replace(settings.record, dir=absolute(settings.record.dir)))
