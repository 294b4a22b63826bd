"""Config validation: every bad config exits 2 with one line naming key, value and expectation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from config_load import ConfigError, load_private_key, load_settings, settings_from_dict

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_JSON = ROOT / "config" / "config.example.json"
EXAMPLE_YAML = ROOT / "config" / "config.example.yaml"

# (name, config document, key the message must name, a word the message must contain)
BAD_CONFIGS = [
    ("symbol and markets", {"symbol": "BTC", "markets": {"ETH": {}}}, "markets", "one of the two"),
    ("markets empty", {"markets": {}}, "markets", "at least one coin"),
    ("market not an object", {"markets": {"BTC": 3}}, "markets.BTC", "an object"),
    ("market unknown section", {"markets": {"BTC": {"risk": {}}}}, "markets.BTC.risk", "not a known setting"),
    ("market bad trading key", {"markets": {"BTC": {"trading": {"leverage": 0}}}}, "markets.BTC.trading.leverage",
     "integer"),
    ("market cross rule", {"markets": {"BTC": {}, "ETH": {"trading": {"stop_loss_pct": 40, "leverage": 3}}}},
     "markets.ETH.trading.stop_loss_pct", "liquidation"),
    ("risk max positions", {"risk": {"max_open_positions": 0}}, "risk.max_open_positions", "integer >= 1"),
    ("unknown top key", {"symbl": "BTC"}, "symbl", "not a known setting"),
    ("unknown section key", {"websocket": {"enable": True}}, "websocket.enable", "not a known setting"),
    ("key in config", {"account": {"private_key": "0x" + "1" * 64}}, "account.private_key", "never go in the config"),
    ("top-level key", {"private_key": "0x" + "1" * 64}, "private_key", "private_key_env"),
    ("network", {"network": "devnet"}, "network", '"local"'),
    ("symbol type", {"symbol": 5}, "symbol", "coin name"),
    ("symbol empty", {"symbol": ""}, "symbol", "coin name"),
    ("check_interval zero", {"check_interval": 0}, "check_interval", "> 0"),
    ("check_interval string", {"check_interval": "300"}, "check_interval", "a number"),
    ("dry_run string", {"dry_run": "yes"}, "dry_run", "true or false"),
    ("dry_run int", {"dry_run": 1}, "dry_run", "true or false"),
    ("reconnect abc", {"websocket": {"reconnect_interval": "abc"}}, "websocket.reconnect_interval", "a number > 0"),
    ("reconnect negative", {"websocket": {"reconnect_interval": -1}}, "websocket.reconnect_interval", "> 0"),
    ("attempts float", {"websocket": {"max_reconnect_attempts": 2.5}}, "websocket.max_reconnect_attempts", "an integer"),
    ("attempts zero", {"websocket": {"max_reconnect_attempts": 0}}, "websocket.max_reconnect_attempts", ">= 1"),
    ("enabled null", {"websocket": {"enabled": None}}, "websocket.enabled", "true or false"),
    ("stale_after bool", {"websocket": {"stale_after": True}}, "websocket.stale_after", "a number"),
    ("fallback poll tiny", {"websocket": {"fallback_poll_interval": 0.01}}, "websocket.fallback_poll_interval", ">= 0.1"),
    ("ping too slow", {"websocket": {"ping_interval": 90}}, "websocket.ping_interval", "<= 55"),
    ("ping+pong over 60", {"websocket": {"ping_interval": 50, "pong_timeout": 15}}, "websocket.pong_timeout", "< 60"),
    ("backoff cap below base", {"websocket": {"reconnect_interval": 10, "max_backoff": 5}}, "websocket.max_backoff", ">="),
    ("websocket not object", {"websocket": [1, 2]}, "websocket", "an object"),
    ("stop loss string", {"trading": {"stop_loss_pct": "2%"}}, "trading.stop_loss_pct", "a number"),
    ("stop loss 100", {"trading": {"stop_loss_pct": 100}}, "trading.stop_loss_pct", "<= 99"),
    ("no stop at all", {"trading": {"stop_loss_pct": None, "trailing_stop_pct": None}}, "trading.stop_loss_pct", "at least one stop"),
    ("stop past liquidation", {"trading": {"stop_loss_pct": 30, "leverage": 5}}, "trading.stop_loss_pct", "liquidation"),
    ("order size below minimum", {"trading": {"order_size_usd": 5}}, "trading.order_size_usd", ">= 10"),
    ("leverage too high", {"trading": {"leverage": 100}}, "trading.leverage", "<= 50"),
    ("slippage zero", {"trading": {"slippage_pct": 0}}, "trading.slippage_pct", "> 0"),
    ("entry order", {"trading": {"entry_order": "maker"}}, "trading.entry_order", '"post_only" or null'),
    ("re-peg too soon", {"markets": {"BTC": {"trading": {"maker_repeg_s": 0.1}}}},
     "markets.BTC.trading.maker_repeg_s", ">= 0.5"),
    ("max position below order", {"trading": {"order_size_usd": 500, "max_position_usd": 100}}, "trading.max_position_usd", ">="),
    ("nan number", {"trading": {"take_profit_pct": float("nan")}}, "trading.take_profit_pct", "a number"),
    ("candle interval", {"strategy": {"candle_interval": "7m"}}, "strategy.candle_interval", '"1m"'),
    ("strategy params list", {"strategy": {"params": [9, 21]}}, "strategy.params", "an object"),
    ("health port", {"health": {"port": 70000}}, "health.port", "<= 65535"),
    ("log level", {"logging": {"level": "LOUD"}}, "logging.level", '"INFO"'),
    ("backup count", {"logging": {"backup_count": 0}}, "logging.backup_count", ">= 1"),
    ("rest url scheme", {"api": {"rest_url": "ftp://x"}}, "api.rest_url", "http://"),
    ("ws url scheme", {"api": {"rest_url": "http://127.0.0.1:1", "ws_url": "http://x"}}, "api.ws_url", "ws://"),
    ("plain http on mainnet", {"network": "mainnet", "api": {"rest_url": "http://example.org"}}, "api.rest_url", "https"),
    ("key env name", {"account": {"private_key_env": "MY KEY"}}, "account.private_key_env", "environment variable"),
    ("sim seed", {"simulator": {"seed": -1}}, "simulator.seed", ">= 0"),
    ("document is a list", [1, 2, 3], "the config", "an object"),
    ("demo strategy with real money", {"network": "mainnet", "dry_run": False, "strategy": {"name": "always_long"}},
     "strategy.name", "real money"),
]


@pytest.mark.parametrize("name,doc,key,word", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_names_key_and_expectation(name: str, doc: object, key: str, word: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_dict(doc)
    message = str(err.value)
    assert message.startswith(key), message
    assert word in message, message
    assert "\n" not in message
    assert "1111111111" not in message  # a key-looking value is never echoed back


def test_at_least_25_bad_configs() -> None:
    assert len(BAD_CONFIGS) >= 25


def _run_bot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "trading_bot.py"), *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=full_env)


@pytest.mark.parametrize("name,doc,key,word", BAD_CONFIGS[:6] + BAD_CONFIGS[11:13],
                         ids=[c[0] for c in BAD_CONFIGS[:6] + BAD_CONFIGS[11:13]])
def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path, name: str, doc: object, key: str,
                                               word: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    result = _run_bot("--config", str(path), "--check-config")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"config: {key}"), lines[0]


@pytest.mark.parametrize("content,suffix,word", [
    ('{"network": "local",', ".json", "valid JSON"),
    ("network: [local\n", ".yaml", "valid YAML"),
    ("{}", ".toml", ".json, .yaml or .yml"),
])
def test_cli_unparseable_file(tmp_path: Path, content: str, suffix: str, word: str) -> None:
    path = tmp_path / f"cfg{suffix}"
    path.write_text(content)
    result = _run_bot("--config", str(path), "--check-config")
    assert result.returncode == 2
    assert word in result.stderr and result.stderr.startswith("config: ")


def test_cli_missing_file(tmp_path: Path) -> None:
    result = _run_bot("--config", str(tmp_path / "nope.json"), "--check-config")
    assert result.returncode == 2
    assert "not found" in result.stderr and "nope.json" in result.stderr


def test_committed_bad_example_says_what_is_wrong() -> None:
    result = _run_bot("--config", "config/bad.json", "--check-config")
    assert result.returncode == 2
    assert result.stderr.strip() == \
        'config: websocket.reconnect_interval must be a number > 0 and <= 3600, got "abc"'


def test_yaml_and_json_examples_are_identical() -> None:
    a = load_settings(EXAMPLE_JSON)
    b = load_settings(EXAMPLE_YAML)
    assert replace(a, source="") == replace(b, source="")
    assert a.websocket.enabled is True and a.network == "local"


def test_defaults_match_interfaces() -> None:
    s = settings_from_dict({})
    assert (s.network, s.symbol, s.check_interval, s.dry_run) == ("local", "BTC", 300.0, True)
    assert (s.websocket.enabled, s.websocket.reconnect_interval, s.websocket.max_reconnect_attempts) == \
        (False, 5.0, 10)
    assert (s.websocket.fallback_poll_interval, s.websocket.stale_after) == (2.0, 10.0)
    assert (s.health.enabled, s.health.host, s.health.port) == (True, "127.0.0.1", 8080)
    assert (s.logging.file, s.logging.level, s.state.path) == ("logs/bot.log", "INFO", "state/bot.db")
    assert s.account.private_key_env == "HL_PRIVATE_KEY"
    assert s.embedded_simulator and s.rest_url is None


def test_endpoints_follow_network_and_overrides() -> None:
    main = settings_from_dict({"network": "mainnet"})
    assert main.rest_url == "https://api.hyperliquid.xyz" and main.ws_url == "wss://api.hyperliquid.xyz/ws"
    local = settings_from_dict({"api": {"rest_url": "http://127.0.0.1:9000"}})
    assert local.ws_url == "ws://127.0.0.1:9000/ws" and not local.embedded_simulator
    assert settings_from_dict({"network": "mainnet", "dry_run": False}).live_trading


def test_percentages_are_decimals() -> None:
    s = settings_from_dict({"trading": {"stop_loss_pct": 0.1}})
    assert s.trading.stop_loss_pct == Decimal("0.1")


KEY = "0x" + "ab" * 32


def test_private_key_from_env() -> None:
    s = settings_from_dict({"account": {"private_key_env": "MY_KEY"}})
    assert load_private_key(s, {"MY_KEY": KEY}) == bytes.fromhex("ab" * 32)
    assert load_private_key(s, {}) is None


def test_private_key_file_must_be_owner_only(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o644)
    s = settings_from_dict({"account": {"private_key_file": str(key_file)}})
    with pytest.raises(ConfigError) as err:
        load_private_key(s, {})
    assert "account.private_key_file" in str(err.value) and str(key_file) in str(err.value)
    assert "abab" not in str(err.value)
    key_file.chmod(0o600)
    assert load_private_key(s, {}) == bytes.fromhex("ab" * 32)


def test_bad_key_is_not_echoed() -> None:
    s = settings_from_dict({})
    with pytest.raises(ConfigError) as err:
        load_private_key(s, {"HL_PRIVATE_KEY": "0xdeadbeefcafe"})
    assert "deadbeef" not in str(err.value)


def test_check_config_masks_the_key(tmp_path: Path) -> None:
    result = _run_bot("--config", str(EXAMPLE_JSON), "--check-config", env={"HL_PRIVATE_KEY": KEY})
    assert result.returncode == 0, result.stderr
    assert "abab" not in result.stdout + result.stderr
    assert "set (hidden)" in result.stdout
    shown = json.loads(result.stdout)
    assert shown["websocket"]["enabled"] is True


def test_markets_override_the_defaults_key_by_key() -> None:
    s = settings_from_dict({
        "trading": {"order_size_usd": 100, "leverage": 3},
        "strategy": {"name": "ema_cross", "params": {"fast": 9, "slow": 21}},
        "markets": {"BTC": {}, "ETH": {"trading": {"order_size_usd": 50}, "strategy": {"name": "always_long"}}},
        "risk": {"max_open_positions": 2, "max_total_position_usd": 500},
    })
    assert s.coins == ("BTC", "ETH")
    btc, eth = s.market("BTC"), s.market("ETH")
    assert btc.trading == s.trading and btc.strategy == s.strategy
    assert eth.trading.order_size_usd == Decimal("50") and eth.trading.leverage == 3  # the rest from the default
    assert eth.strategy.name == "always_long" and eth.strategy.candle_interval == s.strategy.candle_interval
    assert (s.risk.max_open_positions, s.risk.max_total_position_usd) == (2, Decimal("500"))


def test_symbol_alone_is_one_market_and_risk_has_no_limit_by_default() -> None:
    s = settings_from_dict({"symbol": "ETH", "trading": {"order_size_usd": 20}})
    assert s.coins == ("ETH",) and s.market("ETH").trading.order_size_usd == Decimal("20")
    assert s.risk.max_open_positions is None and s.risk.max_total_position_usd is None


def test_the_markets_example_loads() -> None:
    s = load_settings(ROOT / "config" / "config.markets.example.json")
    assert s.coins == ("BTC", "ETH", "SOL") and s.risk.max_open_positions == 2
    assert s.market("SOL").strategy.name == "ema_cross" and s.market("SOL").trading.leverage == 2
    assert s.market("ETH").trading.stop_loss_pct == Decimal("0.5") and s.market("ETH").strategy.name == "always_long"


# (name, document, the message's start, a word it must contain): strategies by their own schema
BAD_STRATEGIES = [
    ("unknown strategy", {"strategy": {"name": "ema_crossover"}}, "strategy.name", "always_long, ema_cross"),
    ("unknown parameter", {"strategy": {"params": {"fsat": 5}}}, "strategy.params.fsat", "fast, slow"),
    ("mistyped parameter", {"strategy": {"params": {"fast": "9"}}}, "strategy.params.fast", 'integer >= 1, got "9"'),
    ("fast not below slow", {"strategy": {"params": {"fast": 21}}}, "strategy.params.fast", "< slow (21), got 21"),
    ("a market's strategy", {"markets": {"BTC": {}, "ETH": {"strategy": {"params": {"slow": 2, "fast": 3}}}}},
     "markets.ETH.strategy.params.fast", "< slow (2)"),
    ("params of another strategy", {"strategy": {"name": "always_long", "params": {"fast": 9}}},
     "strategy.params.fast", "not a parameter of strategy always_long"),
]


@pytest.mark.parametrize("name,doc,key,word", BAD_STRATEGIES, ids=[c[0] for c in BAD_STRATEGIES])
def test_strategies_are_checked_by_their_own_schema(name: str, doc: dict, key: str, word: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_dict(doc)
    assert str(err.value).startswith(key) and word in str(err.value), str(err.value)


def test_a_market_with_another_strategy_does_not_inherit_the_default_params() -> None:
    s = settings_from_dict({"strategy": {"name": "ema_cross", "params": {"fast": 5, "slow": 8}},
                            "markets": {"BTC": {}, "ETH": {"strategy": {"name": "always_long"}},
                                        "SOL": {"strategy": {"params": {"fast": 3}}}}})
    assert dict(s.market("BTC").strategy.params) == {"fast": 5, "slow": 8}
    assert dict(s.market("ETH").strategy.params) == {}
    assert dict(s.market("SOL").strategy.params) == {"fast": 3}  # params replace params, as any key does


@pytest.mark.parametrize("suffix,text,words", [
    (".json", '{"trading": {"leverage": 3, "leverage": 5}}', ['"leverage" twice']),
    (".json", '{"markets": {"BTC": {}, "BTC": {"trading": {}}}}', ['"BTC" twice']),
    (".json", '{"network": "local", "network": "mainnet"}', ['"network" twice']),
    (".yaml", "network: local\nnetwork: mainnet\n", ['"network" twice', "line 2"]),
    (".yml", "markets:\n  BTC: {}\n  ETH: {}\n  BTC: {}\n", ['"BTC" twice', "line 4"]),
    (".json", "", ["empty file"]),
    (".json", " \n\t\n", ["empty file"]),
    (".yaml", "\n\n   \n", ["empty file"]),
    (".yaml", "# nothing yet\n", ["only comments"]),
    (".json", "null", ["an object of settings"]),
])
def test_repeated_keys_and_empty_files_are_errors(tmp_path: Path, suffix: str, text: str, words: list[str]) -> None:
    path = tmp_path / f"config{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_yaml_merge_keys_may_override(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("trading: &t\n  leverage: 3\n  order_size_usd: 50\n"
                    "markets:\n  BTC:\n    trading:\n      <<: *t\n      leverage: 4\n")
    assert load_settings(path).market("BTC").trading.leverage == 4


@pytest.mark.parametrize("content,word", [
    ("0x" + "0" * 64, "zero"),
    ("0" * 64, "zero"),
    ("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", "out of range"),  # the group order
    ("0x" + "f" * 64, "out of range"),
    ("0x" + "ab" * 31, "32-byte"),
    ("ab" * 32 + "zz", "32-byte"),
])
def test_a_key_secp256k1_refuses_is_refused_by_name(content: str, word: str) -> None:
    s = settings_from_dict({})
    with pytest.raises(ConfigError) as err:
        load_private_key(s, {"HL_PRIVATE_KEY": content})
    assert str(err.value).startswith("environment variable HL_PRIVATE_KEY") and word in str(err.value)
    assert "abab" not in str(err.value) and "ffff" not in str(err.value).lower()


def test_the_largest_key_in_range_is_accepted() -> None:
    largest = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364140"
    assert load_private_key(settings_from_dict({}), {"HL_PRIVATE_KEY": largest}) == bytes.fromhex(largest)


def test_a_key_in_a_wrong_field_is_masked_in_the_error() -> None:
    for doc in ({"symbol": KEY}, {"api": {"rest_url": KEY}}, {"logging": {"level": KEY}},
                {"markets": {KEY[2:]: {}}}, {"account": {"address": KEY}}):
        with pytest.raises(ConfigError) as err:
            settings_from_dict(doc)
        assert "abababab" not in str(err.value) and "[hidden" in str(err.value), str(err.value)


def test_check_config_warns_when_slippage_reaches_the_stop(tmp_path: Path) -> None:
    from preflight import check_offline
    s = settings_from_dict({"state": {"path": str(tmp_path / "s.db")}, "logging": {"file": str(tmp_path / "b.log")},
                            "health": {"enabled": False},
                            "trading": {"stop_loss_pct": 0.3, "trailing_stop_pct": None, "slippage_pct": 0.5}})
    notes = check_offline(s, None)
    assert any("slippage_pct 0.5 is at or above its stop distance 0.3" in n for n in notes)
    calm = settings_from_dict({"state": {"path": str(tmp_path / "s.db")}, "logging": {"file": str(tmp_path / "b.log")},
                               "health": {"enabled": False}, "trading": {"stop_loss_pct": 2, "slippage_pct": 0.5}})
    assert not [n for n in check_offline(calm, None) if "slippage" in n]
