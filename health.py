"""Health endpoint: `/health` JSON (200 ok / 503 otherwise) and `/metrics` (Prometheus text).

Owns: a small HTTP server in its own named thread. Must not: touch trading state. It only reads
the immutable snapshot the main thread publishes (`snapshot()` returns a mapping that is never
mutated after publication), so no lock is needed on the trading side.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("health")

# Numeric figures exported to /metrics: (metric name, help, path in the snapshot).
_METRICS = (
    ("hlbot_up", "1 when status is ok", ("status",)),
    ("hlbot_uptime_seconds", "seconds since start", ("uptime_s",)),
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
    ("hlbot_queue_depth", "events waiting for the main thread", ("websocket", "queue_depth")),
    ("hlbot_trades_seen_total", "trades of the symbol handled", ("trades_seen",)),
    ("hlbot_rss_bytes", "peak resident memory", ("rss_bytes",)),
)


def _lookup(snapshot: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = snapshot
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


class _SnapshotCollector:
    def __init__(self, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self):  # type: ignore[no-untyped-def]
        snap = self._snapshot()
        for name, help_, path in _METRICS:
            value = _lookup(snap, path)
            if value is not None:
                family = GaugeMetricFamily(name, help_)
                family.add_metric([], value)
                yield family


class HealthServer:
    """Serves the snapshot; `port` is the bound port after `start()` (0 picks a free one)."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self.host = host
        self.port = port
        self._snapshot = snapshot
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_SnapshotCollector(self._snapshot))  # type: ignore[arg-type]
        snapshot = self._snapshot

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/health":
                    snap = dict(snapshot())
                    body = json.dumps(snap, default=str).encode()
                    self._send(200 if snap.get("status") == "ok" else 503, "application/json", body)
                elif self.path == "/metrics":
                    self._send(200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(registry))
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug(fmt, *args)

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="hl-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._server = None
