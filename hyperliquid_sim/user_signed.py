"""User-signed actions as the exchange checks them: EIP-712 over the action's own fields.

Owns: the typed-data digest of a user-signed action (domain `HyperliquidSignTransaction`, version
"1", chainId read from the action's `signatureChainId`, verifying contract 0x0…0), the signed
fields of the one kind the simulator accepts (`approveAgent`), recovering the signer, and reading
an approval: the agent's address, its name and the expiry a `valid_until` suffix sets.
Must not: hold state, look up accounts or answer a request: exchange.py and agents.py do.

The SDK (`hyperliquid/utils/signing.py`, `sign_user_signed_action` + `sign_agent`) signs
`{"type":"approveAgent","agentAddress":A,"agentName":N,"nonce":T,"signatureChainId":"0x66eee",
"hyperliquidChain":"Testnet"}` as typed data of primary type `HyperliquidTransaction:ApproveAgent`
with fields `hyperliquidChain:string, agentAddress:address, agentName:string, nonce:uint64`;
keys outside those fields (`type`, `signatureChainId`) are not in the struct.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from signing import Signature, address_to_bytes, keccak, recover_digest_signer

USER_SIGNED_DOMAIN_NAME = b"HyperliquidSignTransaction"
_DOMAIN_TYPE_HASH = keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")

# action type -> (primary type, signed fields in order); only what the simulator executes
USER_SIGNED_TYPES: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "approveAgent": ("HyperliquidTransaction:ApproveAgent",
                     (("hyperliquidChain", "string"), ("agentAddress", "address"),
                      ("agentName", "string"), ("nonce", "uint64"))),
}

# An agent's name may end in " valid_until <ms>": the exchange reads the expiry out of it and lists
# the agent under the name before it (extraAgents answers the bare name, e.g. "a3").
VALID_UNTIL = " valid_until "


def is_user_signed(action: Any) -> bool:
    return isinstance(action, dict) and action.get("type") in USER_SIGNED_TYPES


def _encode(kind: str, value: Any) -> bytes:
    """One field's 32-byte EIP-712 encoding; TypeError for a value of the wrong type."""
    if kind == "string":
        if not isinstance(value, str):
            raise TypeError("string field")
        return keccak(value.encode())
    if kind == "address":
        try:
            return address_to_bytes(value).rjust(32, b"\x00")
        except (AttributeError, ValueError) as exc:
            raise TypeError("address field") from exc
    if kind == "uint64":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
            raise TypeError("uint64 field")
        return value.to_bytes(32, "big")
    raise TypeError(kind)


def signed_message(action: dict[str, Any]) -> dict[str, Any]:
    """The message the signer signed: an `agentName` left out of the posted action (the SDK drops
    it for an unnamed agent) or null was signed as ""."""
    if action.get("type") == "approveAgent":
        return {**action, "agentName": action.get("agentName") or ""}
    return action


def user_signed_digest(action: dict[str, Any]) -> bytes:
    """The EIP-712 digest of a user-signed action; KeyError/TypeError when a signed field is missing
    or malformed (the exchange's 422)."""
    primary, fields = USER_SIGNED_TYPES[action["type"]]
    try:
        chain_id = int(action["signatureChainId"], 16)
    except ValueError as exc:
        raise TypeError("signatureChainId is not a hex number") from exc
    if not 0 <= chain_id < 1 << 256:
        raise TypeError("signatureChainId is not a uint256")
    type_hash = keccak(f"{primary}({','.join(f'{kind} {name}' for name, kind in fields)})".encode())
    message = signed_message(action)
    struct_hash = keccak(type_hash + b"".join(_encode(kind, message[name]) for name, kind in fields))
    domain = keccak(_DOMAIN_TYPE_HASH + keccak(USER_SIGNED_DOMAIN_NAME) + keccak(b"1")
                    + chain_id.to_bytes(32, "big") + bytes(32))
    return keccak(b"\x19\x01" + domain + struct_hash)


def recover_user_signer(action: dict[str, Any], signature: Signature) -> str:
    """Checksummed address that signed this user-signed action. KeyError/TypeError for a malformed
    action (422); ValueError for a malformed or unrecoverable signature."""
    digest = user_signed_digest(action)  # before the signature: a bad field is a 422, not a bad signature
    return recover_digest_signer(digest, signature)


@dataclass(frozen=True)
class AgentApproval:
    """What an `approveAgent` asks for; `name` "" is the unnamed agent."""
    agent: str  # checksummed
    name: str
    valid_until_ms: int | None  # from a `valid_until` suffix; None: the default validity


def read_approval(action: dict[str, Any]) -> AgentApproval:
    """The approval in a verified `approveAgent` action."""
    name = signed_message(action)["agentName"]
    base, sep, until = name.rpartition(VALID_UNTIL)
    valid_until = int(until) if sep and until.isdigit() else None
    return AgentApproval(to_checksum_address(action["agentAddress"]), base if valid_until is not None else name,
                         valid_until)
