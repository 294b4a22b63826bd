"""Notifications: the bot's events as a webhook POST and a Telegram message, from their own threads.

Owns: the event body (INTERFACES.md "Notification events": `{"event", "market", "text",
"time_ms", ...details}`), one sender thread per endpoint with a bounded queue (full: the oldest
event is dropped, counted), a deadline per delivery (`http_line.RequestsLine`: proxies from the
environment, any keep-alive or close behaviour of the endpoint), a
rate limit per event kind (at most `max_per_minute` a minute; the rest are held back, counted, and
the next one sent says how many), retries with backoff inside the sender thread, the Telegram
token read from the environment at start, and `HealthWatch` (when the health status is news).
Must not: block or raise in the caller (the trading thread only builds a dict and `put_nowait`s
it), log a token or a webhook URL (either may be a secret: no URL or path is ever logged), or
touch trading state.

Example body (the webhook gets it as JSON; Telegram gets `text`):
`{"event": "exit", "market": "BTC", "text": "BTC closed by stop_loss: long 0.004 at 49400 (entry
50000, PnL -2.40 USDC)", "time_ms": 1735689601450, "account": "0x…", "reason": "stop_loss", ...}`
"""
from __future__ import annotations

import collections
import json
import logging
import queue
import re
import threading
import time
from decimal import Decimal
from typing import Any, Callable, Mapping, Protocol, Sequence
from urllib.parse import urlsplit

from config_errors import ConfigError
from http_line import LineError, RequestsLine, session_for
from logsetup import RateLimitedLog
from settings import NotifySettings, TelegramSettings

log = logging.getLogger("notify")

EVENTS = frozenset({"start", "stop", "entry", "exit", "exit_failed", "fallback", "recovered", "degraded",
                    "unmanaged_position"})
RETRY_DELAYS_S = (1.0, 4.0)   # waits between the attempts of one delivery; then it is given up (counted)
RETRY_AFTER_CAP_S = 30.0      # an endpoint's own Retry-After is honoured up to this
RATE_WINDOW_S = 60.0
TELEGRAM_MAX_TEXT = 4096     # sendMessage's limit, in characters
STOP_DEADLINE_S = 2.0         # at shutdown, what is queued gets this long (SIGTERM: exit within 5 s)
_TOKEN = re.compile(r"[0-9]{3,20}:[A-Za-z0-9_-]{20,}")
_STOP = object()              # queued by `stop()` behind the last event


class DeliveryError(Exception):
    """One delivery failed; `retryable`: trying again may help; `retry_after_s`: the endpoint said when."""

    def __init__(self, message: str, retryable: bool = True, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable, self.retry_after_s = retryable, retry_after_s


class Endpoint(Protocol):
    name: str
    where: str  # for the start-up line: a host or a chat, never a URL (it may carry a secret)

    def deliver(self, body: Mapping[str, Any], deadline_s: float) -> None: ...

    def close(self) -> None: ...


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _post(line: Any, path: str, body: Mapping[str, Any], deadline_s: float) -> tuple[int, str | None, bytes]:
    data = json.dumps(body, default=_json_default).encode()
    try:
        return line.post(path, data, deadline_s)
    except LineError as exc:  # its message names no URL
        raise DeliveryError(str(exc)) from exc


def _status_error(status: int, retry_after: str | None, detail: str = "") -> DeliveryError:
    try:
        after_s = float(retry_after) if retry_after is not None else None
    except ValueError:
        after_s = None
    retryable = status in (408, 429) or status >= 500
    return DeliveryError(f"HTTP {status}{detail}", retryable, after_s)


class Webhook:
    """POST the event as one JSON object to a URL (any 2xx is delivered)."""

    name = "webhook"

    def __init__(self, url: str, connect_timeout_s: float) -> None:
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.where = parts.hostname or ""
        self.line = RequestsLine(session_for(base), base, connect_timeout_s)

    def deliver(self, body: Mapping[str, Any], deadline_s: float) -> None:
        status, retry_after, _ = _post(self.line, self.path, body, deadline_s)
        if not 200 <= status < 300:
            raise _status_error(status, retry_after)

    def close(self) -> None:
        self.line.close()


class Telegram:
    """`sendMessage` of the event's text to one chat (Bot API; the token is in the path, never logged)."""

    name = "telegram"

    def __init__(self, api_url: str, token: str, chat_id: str, connect_timeout_s: float) -> None:
        base = api_url.rstrip("/")
        self._path = f"/bot{token}/sendMessage"
        self.chat_id = chat_id
        self.where = f"chat {chat_id}"
        self.line = RequestsLine(session_for(base), base, connect_timeout_s)

    def deliver(self, body: Mapping[str, Any], deadline_s: float) -> None:
        message = {"chat_id": self.chat_id, "text": body["text"][:TELEGRAM_MAX_TEXT],
                   "disable_web_page_preview": True}
        status, retry_after, answer = _post(self.line, self._path, message, deadline_s)
        if status == 200:
            return
        try:  # {"ok": false, "error_code": 429, "description": "...", "parameters": {"retry_after": 3}}
            parsed = json.loads(answer)
            detail = f": {str(parsed.get('description', ''))[:120]}"
            retry_after = str(parsed.get("parameters", {}).get("retry_after", retry_after))
        except (ValueError, AttributeError):
            detail = ""
        raise _status_error(status, retry_after, _TOKEN.sub("<token>", detail))

    def close(self) -> None:
        self.line.close()


class Sender:
    """One endpoint's queue and thread: rate limit, deliver with retries, count what happened."""

    def __init__(self, endpoint: Endpoint, queue_size: int, max_per_minute: int, timeout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint, self.max_per_minute, self.timeout_s, self.clock = endpoint, max_per_minute, timeout_s, clock
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._stop_by = float("inf")
        self._sent_at: dict[str, collections.deque[float]] = {}
        self._held: dict[str, int] = {}
        self._quiet = RateLimitedLog(every_s=60.0, clock=clock)
        self._thread: threading.Thread | None = None
        self.sent = self.failed = self.dropped = self.held_back = self.retries = 0
        self._dropped_logged = 0

    def offer(self, body: Mapping[str, Any]) -> None:
        """The caller's side (the trading thread): never blocks; a full queue drops its oldest."""
        try:
            self._queue.put_nowait(body)
            return
        except queue.Full:
            pass
        try:
            self._queue.get_nowait()
            self.dropped += 1
        except queue.Empty:
            pass
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self.dropped += 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"notify-{self.endpoint.name}", daemon=True)
        self._thread.start()

    def stop(self, deadline_s: float = STOP_DEADLINE_S) -> None:
        self.begin_stop(deadline_s)
        self.join(deadline_s)

    def begin_stop(self, deadline_s: float = STOP_DEADLINE_S) -> None:
        """What is queued gets one attempt each, for at most `deadline_s` in all; no more retries."""
        self._stop_by = self.clock() + deadline_s
        self._stopping.set()
        self.offer(_STOP)

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(max(timeout_s, 0.0))
            if self._thread.is_alive():  # a daemon thread: it does not hold the process up
                log.warning("%s: endpoint still busy at shutdown; %d event(s) not delivered", self.endpoint.name,
                            self._queue.qsize())
                return
        self.endpoint.close()

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped, "held_back": self.held_back,
                "retries": self.retries, "queued": self._queue.qsize()}

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            if body is _STOP:
                return
            try:
                self._handle(body)
            except Exception as exc:  # noqa: BLE001 - a bug here must not end notifications
                self.failed += 1
                log.error("%s: event %s failed in the sender (%s: %s)", self.endpoint.name, body.get("event"),
                          type(exc).__name__, exc, exc_info=exc)

    def _handle(self, body: Mapping[str, Any]) -> None:
        if self.dropped != self._dropped_logged:
            log.warning("%s: queue full; %d oldest event(s) dropped so far", self.endpoint.name, self.dropped)
            self._dropped_logged = self.dropped
        kind = body["event"]
        now = self.clock()
        if self._stopping.is_set() and now >= self._stop_by:
            self.failed += 1
            return
        times = self._sent_at.setdefault(kind, collections.deque())
        while times and now - times[0] >= RATE_WINDOW_S:
            times.popleft()
        if len(times) >= self.max_per_minute:
            self._held[kind] = self._held.get(kind, 0) + 1
            self.held_back += 1
            return
        times.append(now)
        held = self._held.pop(kind, 0)
        if held:
            body = {**body, "held_back": held,
                    "text": f"{body['text']} (+{held} more {kind} event(s) held back by the rate limit)"}
        self._deliver(body)

    def _deliver(self, body: Mapping[str, Any]) -> None:
        attempt = 0
        while True:
            attempt += 1
            budget_s = min(self.timeout_s, self._stop_by - self.clock())
            try:
                if budget_s <= 0:
                    raise DeliveryError("shutting down", retryable=False)
                self.endpoint.deliver(body, budget_s)
                self.sent += 1
                return
            except DeliveryError as exc:
                last = exc
            if not last.retryable or attempt > len(RETRY_DELAYS_S) or self._stopping.is_set():
                break
            delay_s = max(RETRY_DELAYS_S[attempt - 1], min(last.retry_after_s or 0.0, RETRY_AFTER_CAP_S))
            self.retries += 1
            if self._stopping.wait(delay_s):
                break
        self.failed += 1
        suppressed = self._quiet.allow("failed")
        if suppressed is not None:
            log.warning("%s: event %s not delivered after %d attempt(s): %s%s", self.endpoint.name, body["event"],
                        attempt, _TOKEN.sub("<token>", str(last)),
                        f" ({suppressed} more failures not shown)" if suppressed else "")


class Notifier:
    """What the trading code calls: `notify(event, market, text, **details)`. With no endpoint
    configured it does nothing (the bot's default)."""

    def __init__(self, senders: Sequence[Sender] = (), account: str = "",
                 now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.senders, self.account, self.now_ms = tuple(senders), account, now_ms

    @property
    def enabled(self) -> bool:
        return bool(self.senders)

    def notify(self, event: str, market: str | None, text: str, **details: Any) -> None:
        """Queue one event for every endpoint; never blocks, never raises for a full queue."""
        if not self.senders:
            return
        body = {"event": event, "market": market, "text": text, "time_ms": self.now_ms(), "account": self.account,
                **details}
        for sender in self.senders:
            sender.offer(body)

    def start(self) -> None:
        for sender in self.senders:
            sender.start()
        if self.senders:
            log.info("notifications on: %s", ", ".join(f"{s.endpoint.name} ({s.endpoint.where})" for s in self.senders))

    def stop(self) -> None:
        """Deliver what is queued (the stop event) within STOP_DEADLINE_S for all endpoints together."""
        deadline = time.monotonic() + STOP_DEADLINE_S + 0.5
        for sender in self.senders:
            sender.begin_stop()
        for sender in self.senders:
            sender.join(deadline - time.monotonic())

    def stats(self) -> dict[str, dict[str, int]]:
        return {s.endpoint.name: s.stats() for s in self.senders}


def telegram_token(telegram: TelegramSettings, environ: Mapping[str, str]) -> str:
    """The bot token from the environment variable the config names (ConfigError: unset or not a
    token; the value is never quoted)."""
    name = telegram.bot_token_env
    value = (environ.get(name) or "").strip() if name else ""
    if not value:
        raise ConfigError(f"notify.telegram.bot_token_env names {name}, which must hold the Telegram bot token, "
                          "got an unset or empty variable")
    if not _TOKEN.fullmatch(value):
        raise ConfigError(f"notify.telegram.bot_token_env names {name}, which must hold a Telegram bot token "
                          "(digits, a colon, then the secret), got a value that is not one")
    return value


def build_notifier(settings: NotifySettings, environ: Mapping[str, str], account: str) -> Notifier:
    """The configured endpoints (no thread started; ConfigError for a missing Telegram token)."""
    endpoints: list[Endpoint] = []
    if settings.webhook_url is not None:
        endpoints.append(Webhook(settings.webhook_url, settings.timeout_s))
    if settings.telegram.chat_id is not None:
        token = telegram_token(settings.telegram, environ)
        endpoints.append(Telegram(settings.telegram.api_url, token, settings.telegram.chat_id, settings.timeout_s))
    return Notifier([Sender(e, settings.queue_size, settings.max_per_minute, settings.timeout_s) for e in endpoints],
                    account)


NO_NOTIFIER = Notifier()


class HealthWatch:
    """The health status as news: `degraded` once it has lasted `after_s` (a start with no price yet,
    or one slow poll, is not), `recovered` when a reported one clears."""

    def __init__(self, after_s: float = 10.0) -> None:
        self.after_s = after_s
        self.degraded_since: float | None = None
        self.reported = False

    def update(self, status: str, reasons: Sequence[str], now: float) -> tuple[str, str] | None:
        """(event, text) when there is news, else None."""
        if status != "degraded":
            self.degraded_since = None
            if self.reported:
                self.reported = False
                return "recovered", f"health {status} again"
            return None
        if self.degraded_since is None:
            self.degraded_since = now
        if not self.reported and now - self.degraded_since >= self.after_s:
            self.reported = True
            return "degraded", "health degraded: " + "; ".join(reasons)
        return None
