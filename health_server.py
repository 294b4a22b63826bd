"""Health endpoint: a small HTTP server for `/health` (200 ok or fallback / 503 otherwise) and
`/metrics`, in its own named thread.

Owns: serving `health.render()` of the loop's current snapshot, and its defences against its
clients: one deadline per request (a client that sends nothing or dribbles is cut off), a cap on
connections handled at once (the oldest still sending its request is closed to make room; when
every slot is answering, a newcomer gets 503 at once), and a `stop()` that does not wait for hung
clients.
Must not: touch trading state or take its locks: it only calls `snapshot()`, which returns a
mapping the loop never mutates after publishing; nor die because of it: a snapshot that raises or
is malformed answers 503 "health snapshot failed".
"""
from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST

from health import SNAPSHOT_FAILED, failed_render, render, render_metrics

log = logging.getLogger("health")

_LOG_EVERY_S = 60.0  # repeated problems (snapshot failures, connection cap) are logged this often
_BUSY_RESPONSE = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                  b"Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n")


# ---- the server -------------------------------------------------------------------------------

class _DeadlineReader(io.RawIOBase):
    """Reads a socket against one deadline for the whole request. A plain socket timeout restarts
    on every byte, so a client dribbling a byte a second would hold its handler forever."""

    def __init__(self, sock: socket.socket, deadline_s: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline_s = deadline_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining_s = self._deadline_s - time.monotonic()
        if remaining_s <= 0:
            raise TimeoutError("request not received in time")
        self._sock.settimeout(remaining_s)
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def setup(self) -> None:
        self.timeout = self.server.request_timeout_s
        super().setup()  # the socket timeout (for writes), rfile, wfile
        self.rfile.close()  # replaced by a reader with one deadline for the whole request
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, time.monotonic() + self.timeout))

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.request_read(self.request)
        self.connection.settimeout(self.timeout)
        if self.path == "/health":
            status, body = self.server.render_now()
            self._send(status, "application/json", json.dumps(body, default=str).encode())
        elif self.path == "/metrics":
            _, body = self.server.render_now()
            self._send(200, CONTENT_TYPE_LATEST, render_metrics(body))
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


def _shut(sock: socket.socket) -> None:
    """Wake the thread blocked on `sock` (it then closes it itself: closing a socket another thread
    uses could hit a reused descriptor)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` of them at once."""

    daemon_threads = True
    request_queue_size = 128  # a burst of connects waits in the kernel's backlog, not refused

    def __init__(self, address: tuple[str, int], render_now: Callable[[], tuple[int, dict[str, Any]]],
                 max_connections: int, request_timeout_s: float) -> None:
        self.render_now = render_now
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self._lock = threading.Lock()
        self._open: dict[socket.socket, bool] = {}  # connection -> still reading its request; oldest first
        self._turned_away = 0
        self._last_cap_log_s = -_LOG_EVERY_S
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        victim, full = self._admit(request)
        if victim is not None:
            _shut(victim)
        if full:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)  # starts the handler thread
        except Exception:
            self._forget(request)
            raise

    def _admit(self, request: socket.socket) -> tuple[socket.socket | None, bool]:
        """Take a slot for `request`; at the cap, free the oldest one still reading its request."""
        victim = None
        with self._lock:
            if len(self._open) >= self.max_connections:
                victim = next((sock for sock, reading in self._open.items() if reading), None)
                if victim is None:
                    self._note_turned_away()
                    return None, True
                del self._open[victim]
                self._note_turned_away()
            self._open[request] = True
        return victim, False

    def _note_turned_away(self) -> None:
        self._turned_away += 1
        now_s = time.monotonic()
        if now_s - self._last_cap_log_s >= _LOG_EVERY_S:
            self._last_cap_log_s = now_s
            log.warning("connection limit %d reached: %d connection(s) closed or refused so far",
                        self.max_connections, self._turned_away)

    def _refuse(self, request: socket.socket) -> None:
        try:
            request.setblocking(False)  # never wait on a client from the accepting thread
            request.send(_BUSY_RESPONSE)
        except OSError:
            pass
        self.shutdown_request(request)

    def request_read(self, request: socket.socket) -> None:
        """The request is in: the connection is now answering, no longer evictable."""
        with self._lock:
            if request in self._open:
                self._open[request] = False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: socket.socket) -> None:
        with self._lock:
            self._open.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints these to stderr; a client hanging up mid-answer is routine, not news
        log.debug("request from %s failed", client_address, exc_info=True)

    def wake_all(self) -> None:
        with self._lock:
            socks = list(self._open)
        for sock in socks:
            _shut(sock)


class HealthServer:
    """Renders the snapshot per request; `port` is the bound port after `start()` (0 picks a free one).
    `clock` must be the clock the snapshot's stamps come from; request deadlines use real time."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], Mapping[str, Any]],
                 clock: Callable[[], float] = time.monotonic, max_connections: int = 32,
                 request_timeout_s: float = 5.0) -> None:
        self.host = host
        self.port = port
        self._snapshot = snapshot
        self._clock = clock
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._last_failure_log_s = -_LOG_EVERY_S

    def render_now(self) -> tuple[int, dict[str, Any]]:
        """`render()` of the current snapshot now; 503 degraded if the snapshot cannot be had."""
        try:
            return render(self._snapshot(), self._clock())
        except Exception as exc:  # noqa: BLE001 - a bad snapshot is a health finding, not a crash
            self._log_failure(exc)
            return failed_render()

    def _log_failure(self, exc: Exception) -> None:
        self._failures += 1  # a count, not a decision: racing request threads may lose an increment
        now_s = time.monotonic()
        if now_s - self._last_failure_log_s >= _LOG_EVERY_S:
            self._last_failure_log_s = now_s
            log.error("%s (%d so far): %s: %s", SNAPSHOT_FAILED, self._failures, type(exc).__name__, exc,
                      exc_info=self._failures == 1)

    def start(self) -> None:
        self._server = _Server((self.host, self.port), self.render_now, self.max_connections,
                               self.request_timeout_s)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="hl-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops accepting, wakes every handler still waiting on a client, returns within ~2 s."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.wake_all()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
