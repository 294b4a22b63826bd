"""L1 action signing and wire-number formatting for Hyperliquid (pure; no I/O).

Owns: msgpack action hashing, the phantom-agent EIP-712 digest, signing with a private key,
recovering the signer (used by the simulator), nonces, cloids and price/size wire rules.
Must not: log, touch the network, or keep a key anywhere but inside the signer object.

The EIP-712 domain and type hashes never change, so they are computed once at import; a
signature is then one keccak of the action, two small keccaks and one secp256k1 sign
(coincurve), which is what makes signing cost well under a millisecond.
"""
from __future__ import annotations

import secrets
import threading
import time
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Literal

import msgpack
from coincurve import PrivateKey, PublicKey
from Crypto.Hash import keccak as _keccak
from eth_utils import to_checksum_address

Signature = dict[str, Any]


def keccak(data: bytes) -> bytes:
    """Keccak-256 (Ethereum's, not SHA3-256). pycryptodome directly: eth_utils' generic wrapper
    around the same code costs ~100 us more on a signature made after the bot sat idle."""
    return _keccak.new(data=data, digest_bits=256).digest()

_DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
_AGENT_TYPE_HASH = keccak(b"Agent(string source,bytes32 connectionId)")
_DOMAIN_SEPARATOR = keccak(
    keccak(_DOMAIN_TYPE)
    + keccak(b"Exchange")
    + keccak(b"1")
    + (1337).to_bytes(32, "big")
    + bytes(32)  # verifyingContract 0x000...0, left-padded to 32 bytes
)
_SOURCE_HASH = {True: keccak(b"a"), False: keccak(b"b")}  # mainnet "a", testnet "b"

# secp256k1 group order: private keys are in [1, N); the low-s rule (EIP-2) when verifying.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def address_to_bytes(address: str) -> bytes:
    """`0x`-prefixed 20-byte hex address to its raw bytes."""
    raw = address[2:] if address.startswith(("0x", "0X")) else address
    data = bytes.fromhex(raw)
    if len(data) != 20:
        raise ValueError(f"address must be 20 bytes, got {len(data)}")
    return data


def action_hash(action: dict[str, Any], vault_address: str | None, nonce: int,
                expires_after: int | None) -> bytes:
    """keccak256(msgpack(action) || nonce || vault tag || optional expiry), as the exchange hashes it."""
    data = msgpack.packb(action)
    data += nonce.to_bytes(8, "big")
    if vault_address is None:
        data += b"\x00"
    else:
        data += b"\x01" + address_to_bytes(vault_address)
    if expires_after is not None:
        data += b"\x00" + expires_after.to_bytes(8, "big")
    return keccak(data)


def l1_digest(connection_id: bytes, is_mainnet: bool) -> bytes:
    """EIP-712 digest of the phantom agent `Agent(source, connectionId)` in the Exchange domain."""
    struct_hash = keccak(_AGENT_TYPE_HASH + _SOURCE_HASH[is_mainnet] + connection_id)
    return keccak(b"\x19\x01" + _DOMAIN_SEPARATOR + struct_hash)


def _private_key_bytes(wallet: Any) -> bytes:
    """Raw 32-byte key from an eth_account LocalAccount (or raw bytes / hex string)."""
    if isinstance(wallet, bytes):
        return wallet
    if isinstance(wallet, str):
        return bytes.fromhex(wallet[2:] if wallet.startswith("0x") else wallet)
    return bytes(wallet.key)


def sign_digest(private_key: PrivateKey, digest: bytes) -> Signature:
    """Sign a 32-byte digest; r and s without leading zeros, as the official SDK writes them."""
    sig = private_key.sign_recoverable(digest, hasher=None)
    r = int.from_bytes(sig[0:32], "big")
    s = int.from_bytes(sig[32:64], "big")
    return {"r": hex(r), "s": hex(s), "v": 27 + sig[64]}


def sign_l1_action(wallet: Any, action: dict[str, Any], vault_address: str | None, nonce: int,
                   expires_after: int | None, is_mainnet: bool) -> Signature:
    """Sign an L1 action exactly as the official SDK's `sign_l1_action` does.

    `wallet` is an eth_account LocalAccount (raw key bytes are accepted too). For repeated signing
    use `L1Signer`, which converts the key once.
    """
    key = PrivateKey(_private_key_bytes(wallet))
    digest = l1_digest(action_hash(action, vault_address, nonce, expires_after), is_mainnet)
    return sign_digest(key, digest)


def _sig_int(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value, 16)
    raise ValueError("signature component must be a hex string or int")


def recover_l1_signer(action: dict[str, Any], signature: Signature, vault_address: str | None,
                      nonce: int, expires_after: int | None, is_mainnet: bool) -> str:
    """Checksummed address that produced `signature` over this action; ValueError if malformed."""
    return recover_digest_signer(l1_digest(action_hash(action, vault_address, nonce, expires_after), is_mainnet),
                                 signature)


def recover_digest_signer(digest: bytes, signature: Signature) -> str:
    """Checksummed address that signed this 32-byte digest; ValueError if the signature is malformed
    (bad r/s/v, high s) or recovers no key."""
    try:
        r = _sig_int(signature["r"])
        s = _sig_int(signature["s"])
        v = int(signature["v"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("malformed signature") from exc
    if v not in (27, 28) or not (0 < r < SECP256K1_N) or not (0 < s <= SECP256K1_N // 2):
        raise ValueError("malformed signature")
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v - 27])
    try:
        public = PublicKey.from_signature_and_message(raw, digest, hasher=None)
    except Exception as exc:  # coincurve raises plain Exception on an unrecoverable signature
        raise ValueError("unrecoverable signature") from exc
    return to_checksum_address(keccak(public.format(compressed=False)[1:])[-20:])


class L1Signer:
    """Holds one private key (never printed) and signs L1 actions with it.

    `repr()` shows only the address. Keep one per process: the exchange keeps only the 100
    highest nonces per signer, so nonces must come from one `NonceClock`.
    """

    __slots__ = ("_key", "address", "is_mainnet")

    def __init__(self, private_key: bytes, is_mainnet: bool) -> None:
        self._key = PrivateKey(private_key)
        public = self._key.public_key.format(compressed=False)[1:]
        self.address = to_checksum_address(keccak(public)[-20:])
        self.is_mainnet = is_mainnet

    def __repr__(self) -> str:
        return f"L1Signer(address={self.address}, mainnet={self.is_mainnet})"

    def sign(self, action: dict[str, Any], nonce: int, vault_address: str | None = None,
             expires_after: int | None = None) -> Signature:
        digest = l1_digest(action_hash(action, vault_address, nonce, expires_after), self.is_mainnet)
        return sign_digest(self._key, digest)


class NonceClock:
    """Strictly increasing millisecond nonces: max(now_ms, last + 1), under a lock."""

    def __init__(self, clock_ms: Any = None) -> None:
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(int(self._clock_ms()), self._last + 1)
            return self._last


def new_cloid() -> str:
    """A fresh random client order id: `0x` + 32 hex digits."""
    return "0x" + secrets.token_hex(16)


def is_cloid(value: str) -> bool:
    if not isinstance(value, str) or len(value) != 34 or not value.startswith("0x"):
        return False
    try:
        int(value[2:], 16)
    except ValueError:
        return False
    return True


# ---- wire numbers -------------------------------------------------------------------------

def float_to_wire(x: float | Decimal | str) -> str:
    """The SDK's float_to_wire: 8 decimals, error if that rounds, trailing zeros stripped.

    Unlike the SDK (which emits "-0" for -0.0), negative zero is written as "0", as the
    exchange's documentation says.
    """
    value = Decimal(str(x)) if not isinstance(x, Decimal) else x
    rounded = value.quantize(Decimal("0.00000001"), rounding=ROUND_HALF_EVEN)
    if abs(rounded - value) >= Decimal("1e-12"):
        raise ValueError(f"float_to_wire causes rounding: {x}")
    if rounded == 0:
        return "0"
    return f"{rounded.normalize():f}"


def max_price_decimals(sz_decimals: int, is_spot: bool = False) -> int:
    return (8 if is_spot else 6) - sz_decimals


def _strip(value: Decimal) -> Decimal:
    """Drop trailing zeros without switching to exponent notation (50000, not 5E+4)."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


def round_price(px: Decimal, sz_decimals: int, is_spot: bool = False) -> Decimal:
    """Round to 5 significant figures, then to the asset's decimal limit (half-even), as the SDK does."""
    px = Decimal(px)
    if not px.is_finite() or px <= 0:
        raise ValueError(f"price must be finite and > 0, got {px}")
    five_sig = px.quantize(Decimal(1).scaleb(px.adjusted() - 4), rounding=ROUND_HALF_EVEN)
    decimals = max_price_decimals(sz_decimals, is_spot)
    rounded = five_sig.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN)
    if rounded <= 0:
        raise ValueError(f"price {px} rounds to zero with {decimals} decimals")
    return _strip(rounded)


def is_valid_price(px: Decimal, sz_decimals: int, is_spot: bool = False) -> bool:
    """The exchange's tick rule: integer, or <= 5 significant figures and <= 6 - szDecimals decimals."""
    try:
        px = Decimal(px)
    except (InvalidOperation, TypeError, ValueError):
        return False
    if not px.is_finite() or px <= 0:
        return False
    if px == px.to_integral_value():
        return True
    normalized = px.normalize()
    decimals = -normalized.as_tuple().exponent
    if decimals > max_price_decimals(sz_decimals, is_spot):
        return False
    return len(normalized.as_tuple().digits) <= 5


def round_size(sz: Decimal, sz_decimals: int) -> Decimal:
    """Round a size down to the asset's lot (szDecimals): never trade more than asked."""
    return Decimal(sz).quantize(Decimal(1).scaleb(-sz_decimals), rounding=ROUND_DOWN)


def is_valid_size(sz: Decimal, sz_decimals: int) -> bool:
    try:
        sz = Decimal(sz)
    except (InvalidOperation, TypeError, ValueError):
        return False
    if not sz.is_finite() or sz <= 0:
        return False
    return sz == sz.quantize(Decimal(1).scaleb(-sz_decimals), rounding=ROUND_DOWN)


Side = Literal["buy", "sell"]
