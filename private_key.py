"""The private key: from an environment variable or an owner-only file, checked before use.

Owns: reading the key (the environment variable `account.private_key_env`, or the file
`account.private_key_file`: a regular, owner-only, readable text file) and checking it is one
secp256k1 signs with (32 bytes of hex, not zero, below the group order).
Must not: show the key or any part of it in a message, or log: each problem is one `ConfigError`
naming the variable or the file's path.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Mapping

from config_errors import ConfigError, quote_path
from settings import Settings
from signing import SECP256K1_N  # the group order: a private key is an integer in [1, N)


def _parse_key(text_: str, where: str) -> bytes:
    """32 bytes of hex (0x optional) that secp256k1 accepts: not zero, below the group order."""
    raw = text_.strip()
    if raw.startswith(("0x", "0X")):
        raw = raw[2:]
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    # Never echo the content: it may be a real key with a typo.
    if len(key) != 32:
        raise ConfigError(f"{where} must hold a 32-byte hex private key (64 hex digits), got a value that is not one")
    number_ = int.from_bytes(key, "big")
    if number_ == 0:
        raise ConfigError(f"{where} must hold a private key, got zero (all 64 digits 0)")
    if number_ >= SECP256K1_N:
        raise ConfigError(f"{where} must hold a private key below the secp256k1 group order, got a value "
                          "out of range (it signs nothing)")
    return key


def _read_key_file(path: Path) -> str:
    """The key file's text; a ConfigError naming the path for each way it cannot be the key."""
    key = "account.private_key_file"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{key} must name an existing file, got {quote_path(path)} (not found)") from None
    except OSError as exc:
        raise ConfigError(f"{key} must name a readable file, got {quote_path(path)} ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{key} must name a file, got {quote_path(path)} (a directory)")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{key} must name a regular file, got {quote_path(path)} ({stat.filemode(info.st_mode)})")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{key} must be readable by its owner only (chmod 600), got {quote_path(path)} "
                          f"with mode {stat.filemode(info.st_mode)}")
    try:
        content = path.read_bytes()[:4096]
    except OSError as exc:
        raise ConfigError(f"{key} must name a readable file, got {quote_path(path)} ({exc.strerror})") from None
    try:
        return content.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"{key} must hold the key as hex text, got {quote_path(path)} (binary content)") from None


def load_private_key(settings: Settings, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The private key from the env var or the owner-only key file; None if neither is set."""
    env = os.environ if environ is None else environ
    account = settings.account
    if account.private_key_file:
        path = Path(account.private_key_file)
        return _parse_key(_read_key_file(path), f"account.private_key_file {quote_path(path)}")
    value = env.get(account.private_key_env)
    if value:
        return _parse_key(value, f"environment variable {account.private_key_env}")
    return None
