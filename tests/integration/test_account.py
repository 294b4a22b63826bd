"""The account the bot trades, on the simulator: a position in a coin the bot does not trade is
reported and left alone, a state file belongs to one account, fills are journaled as they happen
even without the stream, and paths in a config file are relative to its folder."""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
from decimal import Decimal as D
from pathlib import Path

import eth_account
import pytest
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info

import health
import trading_bot
from config_load import load_settings, settings_from_dict
from hyperliquid_sim import SimServer
from report import format_report, journal_report
from state import StateStore
from harness.bot import make_bot
from harness.waiting import wait_until


def test_a_position_in_another_coin_is_reported_and_left_alone(
        sim: SimServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    h = make_bot(sim, tmp_path)
    try:
        sim.set_price("ETH", "3000")
        h.bot.rest.market_order("ETH", True, D("0.05"), D("0.5"), reference_px=D("3000"))  # by hand, same account
        h.bot.want_check("test")
        wait_until(lambda: "ETH" in h.bot.reconciler.unmanaged, 5, h.step)
        assert "unmanaged position: ETH 0.05" in caplog.text
        h.bot.publish_health()
        _, body = health.render(h.bot.health_snapshot(), h.bot.clock())
        assert body["positions"]["ETH"]["managed"] is False and body["positions"]["ETH"]["size"] == 0.05
        assert body["account"] == h.bot.address and body["signer"] == h.bot.signer
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)  # BTC trades on
        h.bot.publish_health()
        _, body = health.render(h.bot.health_snapshot(), h.bot.clock())
        assert body["positions"]["BTC"]["managed"] is True
        eth_orders = [e for e in sim.exchange_log() if e["action"].get("type") == "order"
                      and any(o["a"] == 1 for o in e["action"]["orders"])]
        assert len(eth_orders) == 1  # only the manual one: the bot never touches ETH
        caplog.clear()
        h.bot.want_check("again")
        wait_until(lambda: h.bot.reconciler.due is None, 5, h.step)
        assert "unmanaged position" not in caplog.text  # warned when it appears or changes, not every check
    finally:
        h.close()


def test_a_state_file_of_another_account_is_refused(sim: SimServer, tmp_path: Path) -> None:
    make_bot(sim, tmp_path).close()  # a first account's bot ran on this state file
    with pytest.raises(trading_bot.StartError) as err:
        make_bot(sim, tmp_path)  # another key, the same state.path
    assert err.value.code == 2 and "belongs to account" in str(err.value)


def test_without_the_stream_fills_are_journaled_as_they_happen(sim: SimServer, tmp_path: Path) -> None:
    h = make_bot(sim, tmp_path, websocket={"enabled": False}, check_interval=0.2)
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        wait_until(lambda: len(h.store.fills()) == 1, 10, h.step)  # the entry's fill, from a userFills poll
        fill = h.store.fills()[0]
        assert fill["coin"] == "BTC" and not fill["paper"]
    finally:
        h.close()


def test_paths_in_a_config_are_relative_to_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    config = folder / "bot.json"
    config.write_text(json.dumps({"state": {"path": "../data/bot.db"}, "logging": {"file": "bot.log"}}))
    s = load_settings(config)
    assert s.state.path == str(tmp_path / "data/bot.db") and s.logging.file == str(folder / "bot.log")
    assert Path(load_settings(config).state.path).is_absolute()
    default = folder / "default.json"
    default.write_text("{}")
    assert load_settings(default).state.path == str(folder / "state/bot.db")
    assert settings_from_dict({}).state.path == "state/bot.db"  # a document without a file: as given


def test_state_and_logs_are_created_owner_only(sim: SimServer, tmp_path: Path) -> None:
    config = tmp_path / "bot.json"
    config.write_text(json.dumps({"network": "local", "api": {"rest_url": sim.rest_url}, "dry_run": False,
                                  "symbol": "BTC", "strategy": {"name": "always_long"}, "health": {"enabled": False},
                                  "state": {"path": "state/bot.db"}, "logging": {"file": "logs/bot.log"}}))
    log_file = tmp_path / "logs" / "bot.log"

    def stop_once_trading() -> None:  # SIGINT once the loop runs (its handler is installed by then)
        wait_until(lambda: log_file.exists() and "start-up reconciliation done" in log_file.read_text(), 20)
        os.kill(os.getpid(), signal.SIGINT)
    stopper = threading.Thread(target=stop_once_trading, daemon=True)
    old_umask = os.umask(0o022)
    stopper.start()
    try:
        assert trading_bot.main(["--config", str(config)]) == 0
    finally:
        stopper.join(timeout=25)
        os.umask(old_umask)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_hlbot", False)]:  # the bot's console and file
            root.removeHandler(handler)
            handler.close()
    for path in (tmp_path / "state" / "bot.db", tmp_path / "logs" / "bot.log"):
        assert path.stat().st_mode & 0o077 == 0, path
    store = StateStore(str(tmp_path / "state" / "bot.db"))
    store.open()
    assert store.get("account") is not None
    store.close()


def test_an_api_wallet_approved_with_the_sdk_trades_for_the_master(sim: SimServer, tmp_path: Path) -> None:
    master = eth_account.Account.create()
    Info(sim.rest_url, skip_ws=True).user_state(master.address)  # the faucet funds the master
    answer, agent_key = Exchange(master, base_url=sim.rest_url).approve_agent("hlbot")
    assert answer["status"] == "ok"
    h = make_bot(sim, tmp_path, key=bytes.fromhex(agent_key[2:]), account={"address": master.address})
    try:
        assert h.bot.address == master.address and h.bot.signer.lower() != master.address.lower()
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        assert D(sim.account(master.address)["positions"]["BTC"]["szi"]) == h.trader.position.size
        order = [e for e in sim.exchange_log() if e["action"].get("type") == "order"][-1]
        assert order["user"].lower() == h.bot.signer.lower()  # signed by the agent, for the master
        wait_until(lambda: h.store.fills(), 10, h.step)  # the master's fills reach the journal
    finally:
        h.close()


def test_a_key_that_is_no_api_wallet_of_the_account_is_refused_at_start(sim: SimServer, tmp_path: Path) -> None:
    master = eth_account.Account.create()
    with pytest.raises(trading_bot.StartError) as err:
        make_bot(sim, tmp_path, account={"address": master.address})
    assert err.value.code == 2
    assert master.address in str(err.value) and "may not trade for account" in str(err.value)
    assert not [e for e in sim.exchange_log() if e["action"].get("type") == "updateLeverage"]  # nothing signed


def test_vault_orders_carry_the_vault_address(sim: SimServer, tmp_path: Path) -> None:
    leader_key = os.urandom(32)
    leader = eth_account.Account.from_key(leader_key)
    vault = sim.create_vault(leader.address)["vault"]
    h = make_bot(sim, tmp_path, key=leader_key, account={"vault_address": vault})
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        order = [e for e in sim.exchange_log() if e["action"].get("type") == "order"][-1]
        assert order["account"].lower() == vault.lower()
        assert D(sim.account(vault)["positions"]["BTC"]["szi"]) == h.trader.position.size
        assert not sim.account(leader.address)["positions"].get("BTC")
    finally:
        h.close()


def test_funding_reaches_the_journal_and_the_report(sim: SimServer, tmp_path: Path) -> None:
    h = make_bot(sim, tmp_path)
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        paid = sim.pay_funding("BTC", "0.0001")["payments"]
        assert len(paid) == 1
        usdc = D(paid[0]["delta"]["usdc"])
        assert usdc < 0  # a long pays a positive rate
        wait_until(lambda: h.store.funding(), 5, h.step)  # over the stream (userEvents)
        assert h.store.funding()[0]["usdc"] == usdc and h.store.funding()[0]["coin"] == "BTC"
        report = journal_report(h.store)
        assert report.funding == {"BTC": usdc}
        assert f"funding BTC: {usdc:.4f}" in format_report(report)
    finally:
        h.close()


def test_funding_missed_by_the_stream_is_fetched_over_rest(sim: SimServer, tmp_path: Path) -> None:
    h = make_bot(sim, tmp_path, websocket={"enabled": False}, check_interval=0.2)
    try:
        sim.set_price("BTC", "50000")
        wait_until(lambda: h.trader.position is not None, 10, h.step)
        sim.pay_funding("BTC", "-0.0002")  # a long receives a negative rate
        assert h.bot.reconciler.reconcile_funding()
        (payment,) = h.store.funding()
        assert payment["usdc"] > 0 and payment["rate"] == D("-0.0002")
    finally:
        h.close()
