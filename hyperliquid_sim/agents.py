"""Who may sign for whom on the simulated exchange: API (agent) wallets and vaults.

Owns: the agents each master approved (address, name, expiry; a name approved again replaces its
agent, an unnamed approval replaces the unnamed agent), every address ever approved (it never signs
as itself again), the vaults and their leaders, the account an L1 signer acts for (itself, its
master, or a vault its master leads) with the exchange's refusals, and the `extraAgents` listing.
Must not: verify signatures, check nonces, move funds or answer a request: exchange.py, info.py
and state.py do, with this object in the shared state.
"""
from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from signing import address_to_bytes, keccak

# Third-party docs (nktkas "Agent wallets and vaults" guide): an approval without `valid_until`
# runs 90 days. The official docs say only that agents expire; this default is unconfirmed.
DEFAULT_AGENT_VALIDITY_MS = 90 * 86_400_000

# Recorded by users of the official SDK (hyperliquid-python-sdk issue #172; nomeida/hyperliquid #85
# with an "L1 error: " prefix): an L1 action naming a `vaultAddress` that is no vault.
VAULT_NOT_REGISTERED = "Vault not registered: {vault}"
# No recording found of the refusal when the vault exists but the signer does not lead it: unconfirmed.
NOT_VAULT_LEADER = "User or API Wallet {signer} may not act for vault {vault}."
# Unconfirmed too: approving an address that is already another master's live agent.
AGENT_TAKEN = "Agent {agent} is already approved by another user."


def does_not_exist(signer: str) -> str:
    """The exchange's answer to an L1 action from an address that is neither an account nor a live
    agent (also what a signature over tampered content recovers to)."""
    return f"User or API Wallet {signer.lower()} does not exist."


@dataclass(frozen=True)
class Agent:
    address: str  # checksummed
    name: str  # "" for the unnamed agent
    valid_until_ms: int

    def wire(self) -> dict[str, Any]:
        """One `extraAgents` entry, as recorded: lowercase address, the bare name."""
        return {"name": self.name, "address": self.address.lower(), "validUntil": self.valid_until_ms}


class Delegations:
    """Addresses are checksummed throughout; callers pass recovered signers or `to_checksum_address`."""

    def __init__(self) -> None:
        self._agents: dict[str, dict[str, Agent]] = {}  # master -> name -> agent
        self._master_of: dict[str, str] = {}  # agent address -> master, while approved
        self._ever_agents: set[str] = set()
        self._leaders: dict[str, str] = {}  # vault -> leader

    # ---- agents ----

    def approve(self, master: str, agent: str, name: str, valid_until_ms: int) -> str | None:
        """Record `agent` for `master` under `name`, replacing the agent of that name; an error text
        if the address is another master's agent."""
        owner = self._master_of.get(agent)
        if owner is not None and owner != master:
            return AGENT_TAKEN.format(agent=agent.lower())
        named = self._agents.setdefault(master, {})
        for old_name, old in list(named.items()):
            if old_name == name or old.address == agent:  # the name is reused, or the agent renamed
                del named[old_name]
                self._master_of.pop(old.address, None)
        named[name] = Agent(agent, name, valid_until_ms)
        self._master_of[agent] = master
        self._ever_agents.add(agent)
        return None

    def master_of(self, signer: str, now_ms: int) -> str | None:
        """The master a live (approved, unexpired) agent signs for; None for any other address."""
        master = self._master_of.get(signer)
        if master is None:
            return None
        agent = next(a for a in self._agents[master].values() if a.address == signer)
        return master if agent.valid_until_ms > now_ms else None

    def is_agent_address(self, address: str) -> bool:
        """True for an address ever approved as an agent: it holds nothing and never acts as itself."""
        return address in self._ever_agents

    def extra_agents(self, master: str, now_ms: int) -> list[dict[str, Any]]:
        """The master's live named agents (the unnamed one is not listed), in approval order."""
        return [a.wire() for a in self._agents.get(master, {}).values() if a.name and a.valid_until_ms > now_ms]

    # ---- vaults ----

    def create_vault(self, leader: str) -> str:
        """A new vault led by `leader`; its address is derived from the leader and a count."""
        count = sum(1 for led_by in self._leaders.values() if led_by == leader)
        vault = to_checksum_address(keccak(b"vault" + address_to_bytes(leader) + count.to_bytes(8, "big"))[-20:])
        self._leaders[vault] = leader
        return vault

    # ---- who an L1 action acts for ----

    def acting_user(self, signer: str, vault: str | None, accounts: Container[str],
                    now_ms: int) -> tuple[str, str | None]:
        """(account the action acts for, None) or ("", the exchange's error text).

        The signer acts for itself when it is an account, for its master when it is a live agent;
        with `vaultAddress` set, for the vault when that account leads it."""
        master = self.master_of(signer, now_ms)
        if master is None:
            if signer in self._ever_agents or signer not in accounts:
                return "", does_not_exist(signer)
            master = signer
        if vault is None:
            return master, None
        try:
            vault_key = to_checksum_address(vault)
        except ValueError:
            return "", VAULT_NOT_REGISTERED.format(vault=str(vault).lower())
        leader = self._leaders.get(vault_key)
        if leader is None:
            return "", VAULT_NOT_REGISTERED.format(vault=vault_key.lower())
        if leader != master:
            return "", NOT_VAULT_LEADER.format(signer=signer.lower(), vault=vault_key.lower())
        return vault_key, None
