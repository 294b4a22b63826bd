"""Logging handlers for the bot process: console and a size-rotated `logs/bot.log`.

Owns: handler installation (called once, by trading_bot.py only), the formatter that masks
key-length hex strings in every line (a key or signature never reaches a log), and the rate
limiter that keeps repeated warnings from flooding the log. Must not: be called from library modules (they only do
`logging.getLogger(component)`).
"""
from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
import time
from pathlib import Path

from config_errors import mask_secrets
from settings import LoggingSettings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class MaskingFormatter(logging.Formatter):
    """The standard line, with key-length hex strings masked (exception text included)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


def setup_logging(config: LoggingSettings) -> None:
    """Install the console and rotating-file handlers on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_hlbot", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(config.level)
    formatter = MaskingFormatter(FORMAT)
    path = Path(config.file)
    path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=config.max_bytes, backupCount=config.backup_count, encoding="utf-8")
    file_handler.setFormatter(formatter)
    file_handler._hlbot = True  # type: ignore[attr-defined]
    root.addHandler(file_handler)
    if config.console:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(formatter)
        console._hlbot = True  # type: ignore[attr-defined]
        root.addHandler(console)
    # Third-party chatter stays out of the bot's story unless asked for.
    # (websocket-client logs under "websocket" too, our stream component's name: that is wanted.)
    for noisy in ("urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class RateLimitedLog:
    """Lets one message key through at most once per `every_s`, counting what it held back."""

    def __init__(self, every_s: float = 10.0, clock=time.monotonic) -> None:
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> int | None:
        """None to stay quiet; otherwise how many were suppressed since the last line."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._every_s:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._held.pop(key, 0)
