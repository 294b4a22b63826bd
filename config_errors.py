"""The config's error, and how a value is shown in it (pure).

Owns: `ConfigError` (`<key> must be <expectation>, got <value>`), quoting a bad value (short,
JSON-ish) or a path (whole), and `mask_secrets`, which hides key-length hex strings in any text
shown to a person: config errors echo values, and a key pasted into the wrong field must not be
echoed back (logsetup.py masks every log line with it too).
Must not: know the schema, read anything, or log.
"""
from __future__ import annotations

import json
import re
from typing import Any

# 64 hex digits is a private key (or a signature); a few more or fewer is one with a typo, longer
# runs hold one. Addresses (40) and cloids (32) stay readable.
_KEY_LIKE = re.compile(r"(?<![0-9a-fA-F])(?:0[xX])?[0-9a-fA-F]{60,}(?![0-9a-fA-F])")
MASK = "[hidden: key-length hex]"


def mask_secrets(text: str) -> str:
    """`text` with every key-length hex string (with or without 0x) replaced by MASK."""
    return _KEY_LIKE.sub(MASK, text)


class ConfigError(ValueError):
    """A config problem, phrased for a person: `<key> must be <expectation>, got <value>`. Any
    key-length hex string in the message is masked (a key pasted into the wrong field)."""

    def __init__(self, message: str) -> None:
        super().__init__(mask_secrets(message))


def show_value(value: Any) -> str:
    """How a bad value is quoted in a message: JSON-ish, short, never a long secret-looking blob."""
    try:
        shown = json.dumps(value, default=str)
    except (TypeError, ValueError):
        shown = repr(value)
    shown = mask_secrets(shown)  # before cutting: a cut key is no longer key-length
    return shown if len(shown) <= 60 else shown[:57] + "..."


def quote_path(path: Any) -> str:
    """Paths are quoted whole: a truncated path helps nobody find the file."""
    return json.dumps(str(path))
