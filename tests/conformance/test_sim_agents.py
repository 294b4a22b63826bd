"""API (agent) wallets and vaults on the simulator, driven by the official SDK.

The SDK's `Exchange.approve_agent` signs the user-signed `approveAgent`; an `Exchange` built with
the agent's key and `account_address=master` then trades for the master, and one built with
`vault_address=` trades for a vault. Refusals carry the exchange's texts (agents.py, exchange.py).
"""
from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import eth_account
import pytest
import requests
from eth_account.signers.local import LocalAccount
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info
from hyperliquid.utils.signing import get_timestamp_ms, sign_agent, sign_l1_action

from hyperliquid_sim import SimConfig, SimServer
from hyperliquid_sim.agents import DEFAULT_AGENT_VALIDITY_MS
from hyperliquid_sim.user_signed import recover_user_signer

OK = {"status": "ok", "response": {"type": "default"}}


@pytest.fixture(scope="module")
def sim():
    server = SimServer(SimConfig(port=0, seed=5, feed=False))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def info(sim: SimServer) -> Info:
    return Info(sim.rest_url, skip_ws=True)


def funded(info: Info) -> LocalAccount:
    """A fresh wallet the sim's faucet funded (an /info query naming it)."""
    wallet = eth_account.Account.create()
    info.user_state(wallet.address)
    return wallet


def low_bid(info: Info) -> float:
    """A BTC buy price well under the market: the order rests."""
    return round(float(f"{float(D(info.all_mids()['BTC']) * D('0.9')):.5g}"), 1)


def resting_oid(answer: dict[str, Any]) -> int:
    assert answer["status"] == "ok", answer
    return answer["response"]["data"]["statuses"][0]["resting"]["oid"]


def post(sim: SimServer, action: dict[str, Any], nonce: int, signature: Any, vault: str | None = None,
         expires: int | None = None) -> dict[str, Any]:
    body = {"action": action, "nonce": nonce, "signature": signature, "vaultAddress": vault, "expiresAfter": expires}
    return requests.post(sim.rest_url + "/exchange", json=body, timeout=5).json()


def approve(sim: SimServer, master: LocalAccount, agent: str, name: str | None, *, is_mainnet: bool = False,
            tamper: dict[str, Any] | None = None, expires: int | None = None) -> dict[str, Any]:
    """approveAgent built and signed exactly as `Exchange.approve_agent`, optionally changed after signing."""
    nonce = get_timestamp_ms()
    action = {"type": "approveAgent", "agentAddress": agent, "agentName": name or "", "nonce": nonce}
    signature = sign_agent(master, action, is_mainnet)
    if name is None:
        del action["agentName"]
    action.update(tamper or {})
    return post(sim, action, nonce, signature, expires=expires)


def test_signer_recovered_from_sdk_signed_approvals() -> None:
    """The sim's EIP-712 digest is the SDK's: named, unnamed (signed as ""), either chain."""
    master = eth_account.Account.create()
    for name, mainnet in [("hlbot", False), (None, False), ("x valid_until 1700000000000", True)]:
        action = {"type": "approveAgent", "agentAddress": eth_account.Account.create().address,
                  "agentName": name or "", "nonce": 1700000000000}
        signature = sign_agent(master, action, mainnet)
        if name is None:
            del action["agentName"]
        assert recover_user_signer(action, signature) == master.address


def test_agent_trades_for_its_master(sim: SimServer, info: Info) -> None:
    master = funded(info)
    answer, agent_key = Exchange(master, base_url=sim.rest_url).approve_agent("hlbot")
    assert answer == OK
    agent = eth_account.Account.from_key(agent_key)
    ex = Exchange(agent, base_url=sim.rest_url, account_address=master.address)

    oid = resting_oid(ex.order("BTC", True, 0.001, low_bid(info), {"limit": {"tif": "Gtc"}}))
    assert [o["oid"] for o in info.open_orders(master.address)] == [oid]
    assert info.query_order_by_oid(master.address, oid)["order"]["status"] == "open"
    assert ex.cancel("BTC", oid)["response"]["data"]["statuses"] == ["success"]
    assert ex.update_leverage(7, "BTC")["status"] == "ok"
    opened = ex.market_open("BTC", True, 0.002)
    assert "filled" in opened["response"]["data"]["statuses"][0], opened
    position = info.user_state(master.address)["assetPositions"][0]["position"]
    assert D(position["szi"]) == D("0.002") and position["leverage"]["value"] == 7
    assert "filled" in ex.market_close("BTC")["response"]["data"]["statuses"][0]
    assert len(info.user_fills(master.address)) == 2

    # the agent's own address holds nothing: queries must name the master
    state = info.user_state(agent.address)
    assert D(state["marginSummary"]["accountValue"]) == 0 and state["assetPositions"] == []
    assert info.open_orders(agent.address) == [] and info.user_fills(agent.address) == []
    assert sim.exchange_log()[-1]["user"] == agent.address and sim.exchange_log()[-1]["account"] == master.address


def test_extra_agents_lists_named_agents(sim: SimServer, info: Info) -> None:
    master = funded(info)
    ex = Exchange(master, base_url=sim.rest_url)
    before = get_timestamp_ms()
    _, named_key = ex.approve_agent("hlbot")
    _, dated_key = ex.approve_agent("spare valid_until 1893456000000")
    _, unnamed_key = ex.approve_agent()
    listed = info.extra_agents(master.address)
    named, dated = (eth_account.Account.from_key(k).address for k in (named_key, dated_key))
    assert [(a["name"], a["address"]) for a in listed] == [("hlbot", named.lower()), ("spare", dated.lower())]
    assert before + DEFAULT_AGENT_VALIDITY_MS <= listed[0]["validUntil"] <= get_timestamp_ms() + DEFAULT_AGENT_VALIDITY_MS
    assert listed[1]["validUntil"] == 1893456000000
    unnamed = eth_account.Account.from_key(unnamed_key)
    assert resting_oid(Exchange(unnamed, base_url=sim.rest_url).order(
        "BTC", True, 0.001, low_bid(info), {"limit": {"tif": "Gtc"}})) in {o["oid"] for o in info.open_orders(master.address)}
    assert info.extra_agents(funded(info).address) == []


def test_a_reused_name_replaces_its_agent(sim: SimServer, info: Info) -> None:
    master = funded(info)
    ex = Exchange(master, base_url=sim.rest_url)
    _, old_key = ex.approve_agent("hlbot")
    _, new_key = ex.approve_agent("hlbot")
    _, first_unnamed = ex.approve_agent()
    _, second_unnamed = ex.approve_agent()
    new = eth_account.Account.from_key(new_key)
    assert [a["address"] for a in info.extra_agents(master.address)] == [new.address.lower()]
    for key in (old_key, first_unnamed):
        retired = eth_account.Account.from_key(key)
        answer = Exchange(retired, base_url=sim.rest_url).update_leverage(3, "BTC")
        assert answer == {"status": "err", "response": f"User or API Wallet {retired.address.lower()} does not exist."}
    for key in (new_key, second_unnamed):
        assert Exchange(eth_account.Account.from_key(key), base_url=sim.rest_url).update_leverage(3, "BTC") == OK


def test_an_agent_address_the_faucet_funded_is_emptied_on_approval(sim: SimServer, info: Info) -> None:
    master, agent = funded(info), funded(info)
    assert approve(sim, master, agent.address, "early") == OK
    assert D(info.user_state(agent.address)["marginSummary"]["accountValue"]) == 0


def test_unapproved_or_expired_agent_is_refused(sim: SimServer, info: Info) -> None:
    master = funded(info)
    stranger = eth_account.Account.create()
    answer = Exchange(stranger, base_url=sim.rest_url, account_address=master.address).order(
        "BTC", True, 0.001, low_bid(info), {"limit": {"tif": "Gtc"}})
    assert answer == {"status": "err", "response": f"User or API Wallet {stranger.address.lower()} does not exist."}
    expired = eth_account.Account.create()
    assert approve(sim, master, expired.address, f"old valid_until {get_timestamp_ms() - 1}") == OK
    assert Exchange(expired, base_url=sim.rest_url).update_leverage(3, "BTC")["status"] == "err"
    assert info.extra_agents(master.address) == [] and info.open_orders(master.address) == []


def test_bad_approvals_are_refused(sim: SimServer, info: Info) -> None:
    master = funded(info)
    agent = eth_account.Account.create()
    tampered = approve(sim, master, agent.address, "hlbot", tamper={"agentName": "other"})
    assert tampered["status"] == "err" and tampered["response"].startswith("Must deposit before performing actions. User: 0x")
    assert master.address.lower() not in tampered["response"]
    mainnet = approve(sim, master, agent.address, "hlbot", is_mainnet=True)
    assert mainnet["status"] == "err" and "hyperliquidChain" in mainnet["response"]
    expiring = approve(sim, master, agent.address, "hlbot", expires=get_timestamp_ms() + 60_000)
    assert expiring["status"] == "err" and "expiresAfter" in expiring["response"]
    unknown = approve(sim, eth_account.Account.create(), agent.address, "hlbot")
    assert unknown["status"] == "err" and unknown["response"].startswith("Must deposit before performing actions.")
    nonce = get_timestamp_ms()
    action = {"type": "approveAgent", "agentAddress": agent.address, "agentName": "", "nonce": nonce}
    signature = sign_agent(master, action, False)
    assert post(sim, action, nonce, {**signature, "s": "0x0"}) == {"status": "err", "response": "Invalid signature."}
    assert requests.post(sim.rest_url + "/exchange", json={"action": {**action, "agentAddress": "0x12"}, "nonce": nonce,
                         "signature": signature}, timeout=5).status_code == 422
    assert post(sim, action, nonce, signature) == OK
    again = post(sim, action, nonce, signature)
    assert again["status"] == "err" and "nonce" in again["response"]
    # none of the refused approvals took: only the last one did, as the unnamed agent
    assert info.extra_agents(master.address) == []
    assert Exchange(agent, base_url=sim.rest_url).update_leverage(3, "BTC") == OK


def test_an_agent_acts_only_for_its_own_master(sim: SimServer, info: Info) -> None:
    alice, bob = funded(info), funded(info)
    _, agent_key = Exchange(alice, base_url=sim.rest_url).approve_agent("hlbot")
    agent = eth_account.Account.from_key(agent_key)
    # the SDK's account_address is only where it reads; what the agent signs lands on its master
    oid = resting_oid(Exchange(agent, base_url=sim.rest_url, account_address=bob.address).order(
        "BTC", True, 0.001, low_bid(info), {"limit": {"tif": "Gtc"}}))
    assert info.open_orders(bob.address) == [] and [o["oid"] for o in info.open_orders(alice.address)] == [oid]
    # bob cannot take alice's agent over
    taken = approve(sim, bob, agent.address, "mine")
    assert taken["status"] == "err" and info.extra_agents(bob.address) == []
    # nor can the agent trade bob's vault
    bobs_vault = sim.create_vault(bob.address)["vault"]
    refused = Exchange(agent, base_url=sim.rest_url, vault_address=bobs_vault).update_leverage(3, "BTC")
    assert refused == {"status": "err", "response":
                       f"User or API Wallet {agent.address.lower()} may not act for vault {bobs_vault.lower()}."}


def test_vault_orders_land_on_the_vault(sim: SimServer, info: Info) -> None:
    leader = funded(info)
    created = sim.create_vault(leader.address)
    vault = created["vault"]
    assert created["leader"] == leader.address and vault != leader.address
    assert D(info.user_state(vault)["marginSummary"]["accountValue"]) == D("10000")
    ex = Exchange(leader, base_url=sim.rest_url, vault_address=vault)
    oid = resting_oid(ex.order("BTC", True, 0.001, low_bid(info), {"limit": {"tif": "Gtc"}}))
    assert [o["oid"] for o in info.open_orders(vault)] == [oid] and info.open_orders(leader.address) == []
    assert "filled" in ex.market_open("ETH", False, 0.01)["response"]["data"]["statuses"][0]
    assert D(info.user_state(vault)["assetPositions"][0]["position"]["szi"]) == D("-0.01")
    assert info.user_state(leader.address)["assetPositions"] == [] and info.user_fills(leader.address) == []
    assert [f["coin"] for f in info.user_fills(vault)] == ["ETH"]
    # the leader's agent may trade the vault too
    _, agent_key = Exchange(leader, base_url=sim.rest_url).approve_agent("vaultbot")
    by_agent = Exchange(eth_account.Account.from_key(agent_key), base_url=sim.rest_url, vault_address=vault)
    assert "filled" in by_agent.market_close("ETH")["response"]["data"]["statuses"][0]
    assert info.user_state(vault)["assetPositions"] == []


def test_vault_refusals(sim: SimServer, info: Info) -> None:
    leader, outsider = funded(info), funded(info)
    vault = sim.create_vault(leader.address)["vault"]
    refused = Exchange(outsider, base_url=sim.rest_url, vault_address=vault).order(
        "BTC", True, 0.001, low_bid(info), {"limit": {"tif": "Gtc"}})
    assert refused == {"status": "err", "response":
                       f"User or API Wallet {outsider.address.lower()} may not act for vault {vault.lower()}."}
    assert info.open_orders(vault) == []
    not_a_vault = Exchange(leader, base_url=sim.rest_url, vault_address=outsider.address).update_leverage(3, "BTC")
    assert not_a_vault == {"status": "err", "response": f"Vault not registered: {outsider.address.lower()}"}


def test_agent_and_master_keep_separate_nonces(sim: SimServer, info: Info) -> None:
    master = funded(info)
    _, agent_key = Exchange(master, base_url=sim.rest_url).approve_agent("nonces")
    agent = eth_account.Account.from_key(agent_key)
    action = {"type": "updateLeverage", "asset": 0, "isCross": True, "leverage": 4}
    nonce = get_timestamp_ms() + 1000  # after the approval's
    for signer in (master, agent):
        assert post(sim, action, nonce, sign_l1_action(signer, action, None, nonce, None, False)) == OK
    again = post(sim, action, nonce, sign_l1_action(agent, action, None, nonce, None, False))
    assert again["status"] == "err" and "nonce" in again["response"]
