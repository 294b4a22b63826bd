"""Health as the loop's snapshot turned into an answer: `/health` JSON and `/metrics` (pure).

Owns: `render()`, the pure function that turns the trading loop's snapshot into the answer
(status, reasons, ages), and `render_metrics()` (Prometheus text from the same answer). The
snapshot holds monotonic stamps, not ages: every age (uptime, price, last stream message, and the
loop's own heartbeat `published_at_s`) is computed when a request arrives, so a stalled loop
cannot hide behind its last snapshot: it turns degraded.
Must not: do I/O, read a clock (`now_s` is an argument), or change the snapshot.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily


LOOP_STALLED_AFTER_S = 5.0  # the loop publishes every 0.25 s while it runs
UNKNOWN_ORDERS_DEGRADED_AFTER_S = 30.0  # an order in doubt this long: the exchange cannot be asked
EXIT_FAILURES_DEGRADED = 2  # consecutive failed exits
STATUS_CODES = {"ok": 200, "fallback": 200, "degraded": 503, "starting": 503}
SNAPSHOT_FAILED = "health snapshot failed"
_DROPPED = frozenset({"published_at_s", "started_at_s", "price_fresh_limit_s", "status", "reasons"})


# ---- render (pure) ----------------------------------------------------------------------------

def _age(now_s: float, stamp_s: float | None) -> float | None:
    return None if stamp_s is None else round(now_s - stamp_s, 3)


def _plain(value: Any) -> Any:
    """Read-only mappings and tuples (as the loop may publish them) as JSON-ready dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _aged(part: Mapping[str, Any], now_s: float) -> dict[str, Any]:
    """`x_at_s` stamps become `x_age_s` ages, in place; fresh-limits are dropped."""
    out: dict[str, Any] = {}
    for key, value in part.items():
        if key in _DROPPED:
            continue
        if key.endswith("_at_s"):
            out[key[:-len("_at_s")] + "_age_s"] = _age(now_s, value)
        else:
            out[key] = _plain(value)
    return out


def _body(snapshot: Mapping[str, Any], now_s: float) -> dict[str, Any]:
    body: dict[str, Any] = {"uptime_s": _age(now_s, snapshot["started_at_s"]),
                            "loop_age_s": _age(now_s, snapshot["published_at_s"])}
    body.update(_aged(snapshot, now_s))
    body["websocket"] = _aged(snapshot["websocket"], now_s)
    if isinstance(snapshot.get("markets"), Mapping):  # per-market figures age like the top level
        body["markets"] = {coin: _aged(m, now_s) if isinstance(m, Mapping) else _plain(m)
                           for coin, m in snapshot["markets"].items()}
    return body


def _reasons(snapshot: Mapping[str, Any], body: Mapping[str, Any]) -> list[str]:
    reasons = []
    if body["loop_age_s"] > LOOP_STALLED_AFTER_S:
        reasons.append(f"trading loop stalled for {body['loop_age_s']:.1f} s")
    if snapshot["exit_failures"] >= EXIT_FAILURES_DEGRADED:
        reasons.append(f"exits failing: {snapshot['exit_failures']} in a row")
    unknown_age_s = body.get("oldest_unknown_order_age_s")
    if unknown_age_s is not None and unknown_age_s > UNKNOWN_ORDERS_DEGRADED_AFTER_S:
        reasons.append(f"order results unknown for {unknown_age_s:.0f} s")
    if not snapshot["state_writable"]:
        reasons.append(f"state not writable: {snapshot.get('state_error') or 'unknown error'}")
    price_age_s = body["price_age_s"]
    if snapshot["current_price"] is None or price_age_s is None:
        reasons.append("no price yet")
    elif price_age_s > snapshot["price_fresh_limit_s"]:
        reasons.append(f"stale price: {price_age_s:.1f} s old")
    markets = body.get("markets")
    if isinstance(markets, Mapping) and len(markets) > 1:  # the first one is the top level, above
        for coin, market in list(markets.items())[1:]:
            age_s = market.get("price_age_s")
            if age_s is None:
                reasons.append(f"no price yet for {coin}")
            elif age_s > snapshot["price_fresh_limit_s"]:
                reasons.append(f"stale price for {coin}: {age_s:.1f} s old")
    return reasons


def render(snapshot: Mapping[str, Any], now_s: float) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for a snapshot at monotonic time `now_s`. Raises on a snapshot that
    does not follow the contract (a missing stamp or figure); the server answers that as degraded."""
    if snapshot.get("status") == "starting":
        return STATUS_CODES["starting"], {"status": "starting", "reasons": ["trading loop not started yet"]}
    body = _body(snapshot, now_s)
    reasons = _reasons(snapshot, body)
    websocket = snapshot["websocket"]
    if reasons:
        status = "degraded"
    elif websocket["enabled"] and websocket["fallback"]:
        status = "fallback"
    else:
        status = "ok"
    return STATUS_CODES[status], {"status": status, "reasons": reasons, **body}


def failed_render() -> tuple[int, dict[str, Any]]:
    return STATUS_CODES["degraded"], {"status": "degraded", "reasons": [SNAPSHOT_FAILED]}


# ---- metrics (pure) ---------------------------------------------------------------------------

# Numeric figures exported to /metrics: (metric name, help, path in the rendered body).
_METRICS = (
    ("hlbot_up", "1 when status is ok", ("status",)),
    ("hlbot_uptime_seconds", "seconds since start", ("uptime_s",)),
    ("hlbot_loop_age_seconds", "seconds since the trading loop last published", ("loop_age_s",)),
    ("hlbot_current_price", "last price of the traded symbol", ("current_price",)),
    ("hlbot_price_age_seconds", "age of the last price", ("price_age_s",)),
    ("hlbot_websocket_connected", "1 while the WebSocket is connected", ("websocket", "connected")),
    ("hlbot_websocket_subscriptions", "confirmed subscriptions", ("websocket", "subscriptions")),
    ("hlbot_websocket_last_message_age_seconds", "age of the last stream message",
     ("websocket", "last_message_age_s")),
    ("hlbot_websocket_reconnects_total", "reconnects since start", ("websocket", "reconnects")),
    ("hlbot_websocket_fallback", "1 while prices come from REST polling", ("websocket", "fallback")),
    ("hlbot_websocket_dropped_market_data_total", "market data dropped on a full queue",
     ("websocket", "dropped_market_data")),
    ("hlbot_websocket_parse_errors_total", "frames that did not parse", ("websocket", "parse_errors")),
    ("hlbot_websocket_internal_errors_total", "bugs caught in the WebSocket thread",
     ("websocket", "internal_errors")),
    ("hlbot_websocket_thread_restarts_total", "WebSocket threads found dead and restarted",
     ("websocket", "thread_restarts")),
    ("hlbot_queue_depth", "events waiting for the main thread", ("websocket", "queue_depth")),
    ("hlbot_record_frames_written_total", "frames recorded to record.dir", ("websocket", "record", "written")),
    ("hlbot_record_frames_dropped_total", "frames the recorder dropped (its writer behind)",
     ("websocket", "record", "dropped")),
    ("hlbot_record_frames_failed_total", "frames the disk refused", ("websocket", "record", "failed")),
    ("hlbot_handler_errors_total", "events whose handler raised", ("handler_errors",)),
    ("hlbot_exit_failures", "consecutive failed exits", ("exit_failures",)),
    ("hlbot_state_writable", "1 while the state store accepts writes", ("state_writable",)),
    ("hlbot_unknown_orders", "orders whose result is not known yet", ("unknown_orders",)),
    ("hlbot_trades_seen_total", "trades of the symbol handled", ("trades_seen",)),
    ("hlbot_rss_bytes", "peak resident memory", ("rss_bytes",)),
)


def _lookup(body: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = body
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    if path == ("status",):
        return 1.0 if value == "ok" else 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


class _BodyCollector:
    def __init__(self, body: Mapping[str, Any]) -> None:
        self._body = body

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, help_, path in _METRICS:
            value = _lookup(self._body, path)
            if value is not None:
                yield GaugeMetricFamily(name, help_, value=value)
        status = GaugeMetricFamily("hlbot_status", "1 for the current health status", labels=["status"])
        for name in STATUS_CODES:
            status.add_metric([name], 1.0 if self._body.get("status") == name else 0.0)
        yield status
        yield from _market_metrics(self._body.get("markets"))


# Per-market figures, labelled by coin: (metric name, help, key in the market's entry).
_MARKET_METRICS = (
    ("hlbot_market_price", "last price of the market", "current_price"),
    ("hlbot_market_price_age_seconds", "age of the market's last price", "price_age_s"),
    ("hlbot_market_exit_failures", "consecutive failed exits of the market", "exit_failures"),
)


def _market_metrics(markets: Any) -> Iterator[GaugeMetricFamily]:
    if not isinstance(markets, Mapping):
        return
    for name, help_, key in _MARKET_METRICS:
        family = GaugeMetricFamily(name, help_, labels=["coin"])
        for coin, market in markets.items():
            value = market.get(key) if isinstance(market, Mapping) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                family.add_metric([coin], float(value))
        yield family
    position = GaugeMetricFamily("hlbot_market_position_size", "signed size of the market's position (0: flat)",
                                 labels=["coin"])
    websocket_source = GaugeMetricFamily("hlbot_market_price_from_websocket",
                                         "1 while the market's price comes from the stream", labels=["coin"])
    maker = GaugeMetricFamily("hlbot_market_maker_entry_working", "1 while a post-only entry is worked",
                              labels=["coin"])
    for coin, market in markets.items():
        pos = market.get("position") if isinstance(market, Mapping) else None
        size = float(pos["size"]) * (1 if pos["side"] == "long" else -1) if isinstance(pos, Mapping) else 0.0
        position.add_metric([coin], size)
        websocket_source.add_metric([coin], 1.0 if market.get("price_source") == "websocket" else 0.0)
        maker.add_metric([coin], 1.0 if isinstance(market.get("maker_entry"), Mapping) else 0.0)
    yield position
    yield websocket_source
    yield maker


def render_metrics(body: Mapping[str, Any]) -> bytes:
    """Prometheus text for a body from `render()`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_BodyCollector(body))  # type: ignore[arg-type]
    return generate_latest(registry)
