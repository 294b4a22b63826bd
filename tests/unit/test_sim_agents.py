"""Who may sign for whom (hyperliquid_sim/agents.py) and how an approval reads (user_signed.py)."""
from __future__ import annotations

import pytest
from eth_utils import to_checksum_address

from hyperliquid_sim.agents import Delegations
from hyperliquid_sim.user_signed import AgentApproval, read_approval

NOW = 1_700_000_000_000
LATER = NOW + 1000


def addr(n: int) -> str:
    return to_checksum_address("0x" + format(n, "040x"))


MASTER, OTHER, A1, A2, A3 = (addr(n) for n in (1, 2, 11, 12, 13))
ACCOUNTS = {MASTER: object(), OTHER: object()}


@pytest.mark.parametrize("name, expected", [
    ("hlbot", AgentApproval(A1, "hlbot", None)),
    ("", AgentApproval(A1, "", None)),
    (None, AgentApproval(A1, "", None)),
    ("bot valid_until 1893456000000", AgentApproval(A1, "bot", 1893456000000)),
    ("bot valid_until soon", AgentApproval(A1, "bot valid_until soon", None)),
])
def test_read_approval(name: str | None, expected: AgentApproval) -> None:
    action = {"type": "approveAgent", "agentAddress": A1.lower(), "nonce": NOW}
    if name is not None:
        action["agentName"] = name
    assert read_approval(action) == expected


def test_names_replace_their_agent_and_the_unnamed_replaces_the_unnamed() -> None:
    book = Delegations()
    assert book.approve(MASTER, A1, "x", LATER) is None
    assert book.approve(MASTER, A2, "", LATER) is None
    assert book.approve(MASTER, A3, "x", LATER) is None  # replaces A1
    assert (book.master_of(A1, NOW), book.master_of(A2, NOW), book.master_of(A3, NOW)) == (None, MASTER, MASTER)
    assert [a["address"] for a in book.extra_agents(MASTER, NOW)] == [A3.lower()]
    assert book.approve(MASTER, A1, "", LATER) is None  # an old address may come back; replaces A2
    assert book.master_of(A2, NOW) is None and book.master_of(A1, NOW) == MASTER


def test_renaming_an_agent_moves_it() -> None:
    book = Delegations()
    book.approve(MASTER, A1, "old", LATER)
    book.approve(MASTER, A1, "new", LATER)
    assert [a["name"] for a in book.extra_agents(MASTER, NOW)] == ["new"]


def test_acting_user() -> None:
    book = Delegations()
    book.approve(MASTER, A1, "x", LATER)
    book.approve(MASTER, A2, "y", NOW)  # expires now
    vault = book.create_vault(MASTER)
    assert book.acting_user(MASTER, None, ACCOUNTS, NOW) == (MASTER, None)
    assert book.acting_user(A1, None, ACCOUNTS, NOW) == (MASTER, None)
    assert book.acting_user(A1, vault.lower(), ACCOUNTS, NOW) == (vault, None)
    assert book.acting_user(A2, None, ACCOUNTS, NOW) == ("", f"User or API Wallet {A2.lower()} does not exist.")
    assert book.acting_user(A3, None, ACCOUNTS, NOW)[1] == f"User or API Wallet {A3.lower()} does not exist."
    assert book.acting_user(OTHER, vault, ACCOUNTS, NOW)[1] == \
        f"User or API Wallet {OTHER.lower()} may not act for vault {vault.lower()}."
    assert book.acting_user(A1, OTHER, ACCOUNTS, NOW)[1] == f"Vault not registered: {OTHER.lower()}"
    # another master cannot take the agent over
    assert book.approve(OTHER, A1, "mine", LATER) == f"Agent {A1.lower()} is already approved by another user."
    assert book.acting_user(A1, None, ACCOUNTS, NOW) == (MASTER, None)


def test_a_retired_agent_never_acts_as_itself() -> None:
    book = Delegations()
    book.approve(MASTER, A1, "x", LATER)
    book.approve(MASTER, A2, "x", LATER)
    accounts = {**ACCOUNTS, A1: object()}  # the faucet made an (empty) account for its address
    assert book.acting_user(A1, None, accounts, NOW)[1] == f"User or API Wallet {A1.lower()} does not exist."


def test_vault_addresses_differ_per_leader_and_per_vault() -> None:
    book = Delegations()
    vaults = {book.create_vault(MASTER), book.create_vault(MASTER), book.create_vault(OTHER)}
    assert len(vaults) == 3 and not vaults & {MASTER, OTHER}
