"""What the simulator's parts share: its settings and the state more than one of them reads.

Owns: `SimConfig` (every knob, with the exchange's own limits as defaults), `SimState` (the
engine, who may sign for whom (agents.py), the `stats()` counters, the address-based weight
charged per signer, the `/exchange` log and the fault windows `/control` opens), the account an
address names (the faucet; an agent's address stays empty, and is emptied when approved),
vault creation, and `now_ms`.
Must not: do I/O, hold a socket or a task, or answer a request: the parts (feed, ws, info,
exchange, control) do, each with this object passed in.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from eth_utils import to_checksum_address

from .agents import Delegations
from .book import DEFAULT_DEPTH_USD
from .engine import DEFAULT_COINS, Account, Engine


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 1
    chain: str = "testnet"
    coins: tuple[str, ...] = ("BTC", "ETH", "SOL")
    # test coins after `coins` (benchmarks of many markets): name -> (szDecimals, maxLeverage, start price)
    extra_coins: dict[str, tuple[int, int, Decimal]] = field(default_factory=dict)
    start_prices: dict[str, Any] | None = None
    trade_rate_hz: float = 5.0
    volatility: float = 0.0005
    feed: bool = True
    initial_usdc: Decimal = Decimal("10000")
    idle_timeout_s: float = 60.0
    # the exchange's WebSocket limits, per client IP (here: nearly always 127.0.0.1)
    max_connections: int = 100
    max_subscriptions: int = 1000  # across the IP's connections
    max_users: int = 10  # unique users across its user subscriptions
    max_messages_per_min: int = 2000  # client frames (pings included) in any rolling 60 s
    book_interval_s: float = 0.5  # l2Book pushes at most this often, and only when it changed
    book_resend_s: float = 5.0  # an unchanged l2Book is sent again this often (a 2026 probe: ~5 s)
    book_depth_usd: Decimal = DEFAULT_DEPTH_USD  # seeded notional at the book's touch (deeper levels hold more)
    replay_path: str | tuple[str, ...] | None = None  # JSONL trades, or recorded frame files, instead of the walk
    replay_speed: float = 1.0  # 2.0 replays the recording twice as fast


def make_engine(config: SimConfig, replay_prices: dict[str, Decimal]) -> Engine:
    """An engine for the configured and the extra coins; a replay's first prices override the start prices."""
    coins = {c: DEFAULT_COINS[c] for c in config.coins}
    coins.update(config.extra_coins)
    prices = {k: Decimal(str(v)) for k, v in (config.start_prices or {}).items()}
    prices.update(replay_prices)  # the candle warm-up history should end where the recording starts
    return Engine(config.seed, coins, prices, config.volatility, Decimal(str(config.initial_usdc)),
                  Decimal(str(config.book_depth_usd)))


def new_stats() -> dict[str, int]:
    """The counters `stats()` reports, all zero (the key order is the order it reports them in)."""
    return {"ws_messages_in": 0, "ws_messages_out": 0, "info_requests": 0, "exchange_requests": 0,
            "ws_connections_refused": 0, "ws_limit_errors": 0, "replayed_trades": 0, "expired_actions": 0}


@dataclass
class FaultWindows:
    """Faults `/control` switches on; times are `time.monotonic()` seconds."""
    silent_until: float | None = None  # inf = until unsilence: the WebSocket sends and reads nothing
    refuse_ws_until: float = 0.0  # new WebSocket connections get a 503
    info_429_until: float = 0.0  # POST /info answers 429

    @property
    def silent(self) -> bool:
        return self.silent_until is not None and time.monotonic() < self.silent_until


@dataclass
class SimState:
    """Read it fresh each time: `engine` is replaced once at start when a replay sets the prices."""
    engine: Engine
    stats: dict[str, int] = field(default_factory=new_stats)
    address_weight: dict[str, int] = field(default_factory=dict)  # recovered signer -> weight charged
    exchange_log: list[dict[str, Any]] = field(default_factory=list)  # one entry per /exchange request
    faults: FaultWindows = field(default_factory=FaultWindows)
    delegations: Delegations = field(default_factory=Delegations)

    def user(self, address: str) -> str:
        """Accounts are keyed by checksummed address; requests may use any case."""
        for known in self.engine.accounts:
            if known.lower() == address.lower():
                return known
        return address

    def faucet(self, address: Any) -> str:
        """The account key for an address, creating the account with `initial_usdc` if new.

        The faucet: an address named in an `/info` query or a user subscription becomes an
        account. A signer that never did so "does not exist", as on the real exchange, which is
        what a signature over tampered content recovers to. An agent's address only signs: named
        in a query it shows an empty account, as the exchange's does. ValueError if not an address."""
        if not (isinstance(address, str) and address.startswith("0x") and len(address) == 42):
            raise ValueError("user")
        known = self.user(address)
        if known in self.engine.accounts:
            return known
        user = to_checksum_address(address)
        if self.delegations.is_agent_address(user):
            self.engine.accounts[user] = Account(Decimal(0))
        else:
            self.engine.account(user)
        return user

    def approve_agent(self, master: str, agent: str, name: str, valid_until_ms: int) -> str | None:
        """Record the agent (agents.py; an error text if refused). An account the faucet made for its
        address before, never used, is emptied: an agent only signs and holds nothing."""
        problem = self.delegations.approve(master, agent, name, valid_until_ms)
        acct = self.engine.accounts.get(agent)
        untouched = acct is not None and not acct.fills and not any(s for s, _ in acct.positions.values()) \
            and not any(o.user == agent for o in self.engine.orders.values())
        if problem is None and untouched:
            self.engine.accounts[agent] = Account(Decimal(0))
        return problem

    def create_vault(self, leader: Any) -> str:
        """A vault led by `leader`, funded as the faucet funds an account; the leader's own account
        is made too if new (a vault needs a leader that exists)."""
        leader_key = self.faucet(leader)
        vault = self.delegations.create_vault(leader_key)
        self.engine.account(vault)
        return vault
