"""The settings objects: frozen, typed, with their defaults (pure; reads nothing).

Owns: one frozen dataclass per config section and `Settings` over them (every key's default is
here), the values derived from them (REST and WebSocket URLs, live trading, notifications on), `resolved_view` for
`--check-config` and `with_dry_run`.
Must not: read a file or the environment, or check a document: config_load.py builds these from a
config (config_checks.py holds the per-key checks). No secret is ever a setting.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

Network = Literal["local", "testnet", "mainnet"]

TELEGRAM_API_URL = "https://api.telegram.org"
# The longest `api.order_expires_after_s` a config may set (config_load.py; 60 since it exists). A
# restart assumes it for an order whose record does not say how long it was signed for.
ORDER_EXPIRES_AFTER_MAX_S = 60

ENDPOINTS: dict[str, tuple[str, str]] = {
    "mainnet": ("https://api.hyperliquid.xyz", "wss://api.hyperliquid.xyz/ws"),
    "testnet": ("https://api.hyperliquid-testnet.xyz", "wss://api.hyperliquid-testnet.xyz/ws"),
}


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
    exits_on_exchange: bool = True
    entry_order: str | None = None  # "ioc" or "post_only" (maker.py); None: the strategy's `entry_order`, else "ioc"
    maker_repeg_s: float = 5.0      # a post-only entry left behind by the touch this long is moved to it
    maker_timeout_s: float = 30.0   # a post-only entry still unfilled this long after its signal is canceled


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
    address: str | None = None        # the account traded (master); None: the key's own address
    vault_address: str | None = None  # trade for this vault or sub-account (orders carry vaultAddress)


@dataclass(frozen=True)
class RecordSettings:
    dir: str | None = None  # every raw WebSocket frame, hourly gzip JSONL files (recorder.py); None: off


@dataclass(frozen=True)
class SimulatorSettings:
    seed: int = 42
    trade_rate_hz: float = 5.0
    volatility: float = 0.0005
    initial_usdc: Decimal = Decimal("10000")


@dataclass(frozen=True)
class TelegramSettings:
    """Telegram messages: on when `chat_id` and `bot_token_env` are set (the token itself is read
    from that environment variable at start, never from the config)."""
    bot_token_env: str | None = None
    chat_id: str | None = None        # a numeric chat id ("-1001234567890") or "@channelname"
    api_url: str = TELEGRAM_API_URL   # overridable for tests (a local fake)


@dataclass(frozen=True)
class NotifySettings:
    """Where the bot's events go (webhook, Telegram) and how hard it tries (notify.py)."""
    webhook_url: str | None = None
    telegram: TelegramSettings = TelegramSettings()
    timeout_s: float = 5.0            # the most one delivery may take, connect to last byte
    max_per_minute: int = 10          # per event kind and endpoint; more are held back and counted
    queue_size: int = 100             # events waiting per endpoint; when full, the oldest is dropped

    @property
    def enabled(self) -> bool:
        return self.webhook_url is not None or self.telegram.chat_id is not None


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
    notify: NotifySettings = NotifySettings()
    record: RecordSettings = RecordSettings()
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
    if settings.notify.webhook_url:  # a webhook's path or query often is its secret (Slack, Discord)
        url = urlsplit(settings.notify.webhook_url)
        host = f"{url.hostname}:{url.port}" if url.port else url.hostname
        view["notify"]["webhook_url"] = f"{url.scheme}://{host}/... (path hidden)"
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

