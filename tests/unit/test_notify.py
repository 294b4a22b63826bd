"""Notifications (notify.py) and their config keys: the body, the bounded queue, the rate limit,
retries, the Telegram token from the environment (never echoed or logged), the health watch."""
from __future__ import annotations

import logging
import threading
from decimal import Decimal as D
from pathlib import Path
from typing import Any, Mapping

import pytest

import notify
from config_load import ConfigError, settings_from_dict
from notify import DeliveryError, HealthWatch, Notifier, Sender, Telegram, Webhook, build_notifier, telegram_token
from logsetup import setup_logging
from settings import LoggingSettings, NotifySettings, TelegramSettings
from harness.receivers import Receiver

TOKEN = "123456789:AAHfake-token_for_tests_only_0123456789"


class FakeEndpoint:
    """Records deliveries; fails with `failures` (one per attempt, in order) first."""

    name, where = "fake", "here"

    def __init__(self, failures: list[DeliveryError] | None = None) -> None:
        self.failures = list(failures or [])
        self.delivered: list[Mapping[str, Any]] = []
        self.attempts = 0
        self.done = threading.Event()

    def deliver(self, body: Mapping[str, Any], deadline_s: float) -> None:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.delivered.append(body)
        self.done.set()

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_body_carries_event_market_text_time_and_details() -> None:
    endpoint = FakeEndpoint()
    sender = Sender(endpoint, queue_size=10, max_per_minute=10, timeout_s=1.0)
    notifier = Notifier([sender], account="0xabc", now_ms=lambda: 1_700_000_000_000)
    notifier.notify("exit", "BTC", "BTC closed by stop_loss", reason="stop_loss", price=D("49400.5"))
    sender._handle(sender._queue.get_nowait())
    assert endpoint.delivered == [{"event": "exit", "market": "BTC", "text": "BTC closed by stop_loss",
                                   "time_ms": 1_700_000_000_000, "account": "0xabc", "reason": "stop_loss",
                                   "price": D("49400.5")}]
    assert notify.EVENTS >= {"start", "stop", "entry", "exit", "exit_failed", "fallback", "recovered", "degraded",
                             "unmanaged_position"}


def test_no_endpoint_is_a_no_op() -> None:
    assert not notify.NO_NOTIFIER.enabled
    notify.NO_NOTIFIER.notify("entry", "BTC", "x")  # nothing queued anywhere, nothing raised
    assert notify.NO_NOTIFIER.stats() == {}


def test_full_queue_drops_the_oldest_and_counts() -> None:
    endpoint = FakeEndpoint()
    sender = Sender(endpoint, queue_size=3, max_per_minute=100, timeout_s=1.0)
    for i in range(5):
        sender.offer({"event": "entry", "text": str(i)})
    assert sender.dropped == 2
    assert [sender._queue.get_nowait()["text"] for _ in range(3)] == ["2", "3", "4"]


def test_rate_limit_holds_back_and_the_next_one_says_how_many() -> None:
    clock = Clock()
    endpoint = FakeEndpoint()
    sender = Sender(endpoint, queue_size=100, max_per_minute=3, timeout_s=1.0, clock=clock)
    for i in range(5):
        sender._handle({"event": "exit_failed", "text": f"attempt {i}"})
    sender._handle({"event": "entry", "text": "other kinds have their own budget"})
    assert [b["text"] for b in endpoint.delivered] == ["attempt 0", "attempt 1", "attempt 2",
                                                       "other kinds have their own budget"]
    assert sender.held_back == 2
    clock.now += 60.0
    sender._handle({"event": "exit_failed", "text": "attempt 5"})
    last = endpoint.delivered[-1]
    assert last["held_back"] == 2 and last["text"].startswith("attempt 5 (+2 more exit_failed")


def test_retries_with_backoff_then_delivers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "RETRY_DELAYS_S", (0.01, 0.02))
    endpoint = FakeEndpoint([DeliveryError("HTTP 502"), DeliveryError("connection failed")])
    sender = Sender(endpoint, queue_size=10, max_per_minute=10, timeout_s=1.0)
    sender._handle({"event": "exit", "text": "x"})
    assert endpoint.attempts == 3 and len(endpoint.delivered) == 1
    assert (sender.sent, sender.retries, sender.failed) == (1, 2, 0)


def test_a_permanent_refusal_is_not_retried(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(notify, "RETRY_DELAYS_S", (0.01, 0.02))
    endpoint = FakeEndpoint([DeliveryError("HTTP 400", retryable=False)])
    sender = Sender(endpoint, queue_size=10, max_per_minute=10, timeout_s=1.0)
    sender._handle({"event": "exit", "text": "x"})
    assert endpoint.attempts == 1 and (sender.sent, sender.failed) == (0, 1)
    assert "fake: event exit not delivered after 1 attempt(s): HTTP 400" in caplog.text


def test_sender_thread_delivers_and_stop_drains_what_is_queued() -> None:
    endpoint = FakeEndpoint()
    notifier = Notifier([Sender(endpoint, queue_size=10, max_per_minute=10, timeout_s=1.0)])
    notifier.start()
    notifier.notify("start", None, "hlbot started")
    notifier.notify("stop", None, "hlbot stopped")
    notifier.stop()
    assert [b["event"] for b in endpoint.delivered] == ["start", "stop"]
    assert notifier.stats()["fake"]["sent"] == 2


def test_webhook_posts_json_to_the_url_with_its_query() -> None:
    with Receiver() as hook:
        webhook = Webhook(hook.url + "/hooks/abc?key=1", connect_timeout_s=1.0)
        webhook.deliver({"event": "entry", "market": "BTC", "text": "t", "price": D("1.5")}, 2.0)
        webhook.close()
        assert hook.received == [("/hooks/abc?key=1", {"event": "entry", "market": "BTC", "text": "t", "price": 1.5})]
    with Receiver(status=503) as failing:
        webhook = Webhook(failing.url, connect_timeout_s=1.0)
        with pytest.raises(DeliveryError) as err:
            webhook.deliver({"event": "entry", "text": "t"}, 2.0)
        assert err.value.retryable and str(err.value) == "HTTP 503"


@pytest.fixture
def bot_logging(tmp_path: Path):
    """The bot's own logging at DEBUG (logsetup: third-party loggers stay at WARNING), into a file."""
    root, urllib3_logger = logging.getLogger(), logging.getLogger("urllib3")
    levels = root.level, urllib3_logger.level
    path = tmp_path / "bot.log"
    setup_logging(LoggingSettings(file=str(path), level="DEBUG", console=False))
    yield path
    for handler in [h for h in root.handlers if getattr(h, "_hlbot", False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(levels[0])
    urllib3_logger.setLevel(levels[1])


def test_telegram_sends_the_text_to_the_chat_and_never_logs_the_token(bot_logging: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with Receiver(telegram_token=TOKEN) as tg:
        Telegram(tg.url, TOKEN, "-1001234", connect_timeout_s=1.0).deliver({"event": "exit", "text": "BTC closed"}, 2.0)
        assert tg.received == [(f"/bot{TOKEN}/sendMessage", {"chat_id": "-1001234", "text": "BTC closed",
                                                             "disable_web_page_preview": True})]
    monkeypatch.setattr(notify, "RETRY_DELAYS_S", (0.01,))
    with Receiver(telegram_token="999:wrong-token-wrong-token-wrong-token") as tg:  # answers 404 to our path
        sender = Sender(Telegram(tg.url, TOKEN, "@chan", 1.0), queue_size=5, max_per_minute=5, timeout_s=1.0)
        sender._handle({"event": "exit", "text": "x"})
        assert sender.failed == 1 and sender.retries == 0  # a 404 does not heal by itself
    sender = Sender(Telegram("http://127.0.0.1:9", TOKEN, "@chan", 1.0), queue_size=5, max_per_minute=5,
                    timeout_s=1.0)
    sender._handle({"event": "exit", "text": "x"})  # connection refused
    text = bot_logging.read_text()
    assert "HTTP 404: Not Found" in text and "not delivered after 2 attempt(s): connect failed" in text
    assert TOKEN not in text and TOKEN.split(":")[1] not in text


def test_hanging_endpoint_is_given_up_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "RETRY_DELAYS_S", ())
    with Receiver(hang=True) as hook:
        sender = Sender(Webhook(hook.url, 0.5), queue_size=5, max_per_minute=5, timeout_s=0.5)
        sender._handle({"event": "exit", "text": "x"})
        assert sender.failed == 1 and hook.requests_seen == 1


def test_telegram_token_comes_from_the_environment_and_is_never_echoed() -> None:
    tg = TelegramSettings(bot_token_env="HLBOT_TG", chat_id="-100")
    assert telegram_token(tg, {"HLBOT_TG": TOKEN + "\n"}) == TOKEN
    with pytest.raises(ConfigError, match="names HLBOT_TG, which must hold the Telegram bot token, got an unset"):
        telegram_token(tg, {})
    with pytest.raises(ConfigError) as err:
        telegram_token(tg, {"HLBOT_TG": "not-a-token-but-a-secret"})
    assert "not-a-token-but-a-secret" not in str(err.value)
    with pytest.raises(ConfigError):
        build_notifier(NotifySettings(telegram=tg), {}, "0xabc")
    notifier = build_notifier(NotifySettings(webhook_url="http://127.0.0.1:9/x", telegram=tg), {"HLBOT_TG": TOKEN}, "0x1")
    assert [s.endpoint.name for s in notifier.senders] == ["webhook", "telegram"] and notifier.account == "0x1"


@pytest.mark.parametrize("notify_doc, message", [
    ({"webhook_url": "ftp://example.com/x"}, "notify.webhook_url must be a URL starting with http:// or https://"),
    ({"webhook_url": "https://"}, "notify.webhook_url must be a URL starting with http:// or https://"),
    ({"webhook_url": 5}, "notify.webhook_url must be a URL"),
    ({"telegram": {"chat_id": "abc", "bot_token_env": "TG"}}, "notify.telegram.chat_id must be a Telegram chat id"),
    ({"telegram": {"chat_id": True, "bot_token_env": "TG"}}, "notify.telegram.chat_id must be a Telegram chat id"),
    ({"telegram": {"chat_id": -100123}}, "chat_id and notify.telegram.bot_token_env must be set together"),
    ({"telegram": {"bot_token_env": "TG"}}, "must be set together"),
    ({"telegram": {"bot_token_env": TOKEN, "chat_id": 1}}, "bot_token_env must be an environment variable name or "
                                                           "null (the variable's name, not the token), got (hidden)"),
    ({"telegram": {"bot_token_env": "TG", "chat_id": 1, "api_url": "http://example.com"}},
     "notify.telegram.api_url must be https (the bot token travels in its path"),
    ({"telegram": {"token": "x"}}, "notify.telegram.token is not a known setting"),
    ({"telegram": "yes"}, "notify.telegram must be an object"),
    ({"timeout_s": 0}, "notify.timeout_s must be a number >= 0.5"),
    ({"max_per_minute": 0}, "notify.max_per_minute must be an integer >= 1"),
    ({"events": ["exit"]}, "notify.events is not a known setting"),
])
def test_notify_config_is_checked(notify_doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_dict({"notify": notify_doc})
    assert message in str(err.value)
    assert TOKEN not in str(err.value)


def test_notify_config_accepted() -> None:
    s = settings_from_dict({"notify": {"webhook_url": "https://hooks.example.com/T/B?x=1",
                                       "telegram": {"bot_token_env": "HLBOT_TG", "chat_id": -1001234567890,
                                                    "api_url": "http://127.0.0.1:8081"}}})
    assert s.notify.enabled and s.notify.telegram.chat_id == "-1001234567890"
    assert s.notify.telegram.api_url == "http://127.0.0.1:8081"
    assert settings_from_dict({"notify": {"telegram": {"bot_token_env": "T", "chat_id": "@my_channel"}}}) \
        .notify.telegram.api_url == "https://api.telegram.org"
    assert not settings_from_dict({}).notify.enabled


def test_health_watch_reports_lasting_degradation_once_and_its_end() -> None:
    watch = HealthWatch(after_s=10.0)
    assert watch.update("degraded", ["no price yet"], 0.0) is None  # a start without a price is not news
    assert watch.update("ok", [], 5.0) is None
    assert watch.update("degraded", ["stale price: 12.0 s old"], 6.0) is None
    assert watch.update("degraded", ["stale price: 16.0 s old"], 16.0) == ("degraded",
                                                                         "health degraded: stale price: 16.0 s old")
    assert watch.update("degraded", ["stale price"], 30.0) is None  # once
    assert watch.update("fallback", [], 31.0) == ("recovered", "health fallback again")
    assert watch.update("ok", [], 32.0) is None


def test_check_config_view_hides_the_webhook_path() -> None:
    from settings import resolved_view
    s = settings_from_dict({"notify": {"webhook_url": "https://hooks.slack.com:8443/services/T0/B0/SeCrEt?x=1",
                                       "telegram": {"bot_token_env": "HLBOT_TG", "chat_id": 5}}})
    view = resolved_view(s, key_present=False)["notify"]
    assert view["webhook_url"] == "https://hooks.slack.com:8443/... (path hidden)"
    assert view["telegram"] == {"bot_token_env": "HLBOT_TG", "chat_id": "5", "api_url": "https://api.telegram.org"}
