"""The per-key checks of the config (pure): each returns the converted value or raises `Bad`.

Owns: `Bad(expectation)` and the small named checks the schema is built from (`number`,
`decimal`, `boolean`, `one_of`, `text`, `url`, `coin`, `env_name`, `chat_id`, `mapping`); each says what it expects
in words a person reads (`a number > 0 and <= 99`).
Must not: know a key's name or section (config_load.py names the key in the `ConfigError`), read
anything, or log.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any, Callable
from urllib.parse import urlsplit

from eth_utils import to_checksum_address


class Bad(Exception):
    def __init__(self, expectation: str) -> None:
        super().__init__(expectation)
        self.expectation = expectation


Check = Callable[[Any], Any]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = True,
           integer: bool = False, optional: bool = False) -> Check:
    kind = "an integer" if integer else "a number"
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"<= {hi:g}")
    expectation = f"{kind} {' and '.join(parts)}".strip() + (" or null" if optional else "")

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if not _is_number(value) or (integer and not isinstance(value, int)):
            raise Bad(expectation)
        if isinstance(value, float) and not math.isfinite(value):
            raise Bad(expectation)
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise Bad(expectation)
        if hi is not None and value > hi:
            raise Bad(expectation)
        return int(value) if integer else float(value)
    return check


def decimal(lo: float | None = None, hi: float | None = None, *, lo_open: bool = True,
            optional: bool = False) -> Check:
    inner = number(lo, hi, lo_open=lo_open)

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        try:
            inner(value)
        except Bad as bad:
            raise Bad(bad.expectation + (" or null" if optional else "")) from None
        return Decimal(str(value))
    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Bad("true or false")
    return value


def one_of(*choices: str, optional: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if value not in choices:
            raise Bad("one of " + ", ".join(f'"{c}"' for c in choices) + (" or null" if optional else ""))
        return value
    return check


def text(*, optional: bool = False, prefixes: tuple[str, ...] = ()) -> Check:
    expectation = "a non-empty string"
    if prefixes:
        expectation = "a URL starting with " + " or ".join(prefixes)
    if optional:
        expectation += " or null"

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise Bad(expectation)
        if prefixes and not value.startswith(prefixes):
            raise Bad(expectation)
        return value
    return check


def url(*schemes: str, optional: bool = False) -> Check:
    """A URL with one of `schemes` and a host (no spaces); kept as given."""
    expectation = "a URL starting with " + " or ".join(f"{s}://" for s in schemes) + " and naming a host" \
        + (" or null" if optional else "")

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or any(c.isspace() for c in value):
            raise Bad(expectation)
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a port that is no number
        except ValueError:
            raise Bad(expectation) from None
        if parts.scheme not in schemes or not parts.hostname:
            raise Bad(expectation)
        return value
    return check


_CHAT_ID = re.compile(r"-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31}")


def chat_id(value: Any) -> str | None:
    """A Telegram chat: a numeric id (a number or a string of digits, "-100…" for groups) or
    "@channelname"; kept as a string (the API takes either)."""
    if value is None:
        return None
    shown = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(shown, str) or not _CHAT_ID.fullmatch(shown):
        raise Bad('a Telegram chat id: a number such as -1001234567890, or "@channelname", or null')
    return shown


def coin(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 20 or not value.replace("-", "").isalnum():
        raise Bad('a coin name such as "BTC"')
    return value


def env_name(value: Any) -> str:
    if not isinstance(value, str) or not value or not value.replace("_", "").isalnum():
        raise Bad("an environment variable name")
    return value


def env_name_or_null(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return env_name(value)
    except Bad:
        raise Bad("an environment variable name or null") from None


def address(value: Any) -> str | None:
    """An account address: 0x and 40 hex digits (or null), kept in checksum form."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 42 or not value.startswith("0x"):
        raise Bad("an address: 0x and 40 hex digits, or null")
    try:
        int(value[2:], 16)
    except ValueError:
        raise Bad("an address: 0x and 40 hex digits, or null") from None
    return to_checksum_address(value)


def mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Bad("an object")
    return dict(value)
