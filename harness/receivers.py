"""Local HTTP receivers for notification tests: a webhook endpoint and a fake Telegram Bot API on
127.0.0.1 (no internet here), each recording what it was sent.

Owns: a `ThreadingHTTPServer` on port 0 in a daemon thread, the JSON bodies it received (with
their paths), and its behaviour: answer at once with `status`, or `hang` (read the request, then
answer nothing until `release()` or `stop()`), as a slow or dead endpoint would.
Must not: listen anywhere but 127.0.0.1.

    with Receiver() as hook:                     # hook.url for notify.webhook_url
        ...
        hook.wait_for("exit", timeout_s=5)       # the first body whose "event" is "exit"
    with Receiver(telegram_token="1:AA…") as tg:  # tg.url for notify.telegram.api_url
        tg.texts()                                # the sendMessage texts, in order
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, status: int = 200, hang: bool = False, telegram_token: str | None = None) -> None:
        self.status, self.hang, self.telegram_token = status, hang, telegram_token
        self.received: list[tuple[str, dict[str, Any]]] = []  # (path, body) as they arrived
        self.requests_seen = 0  # also those still hanging
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._changed:
                    receiver.requests_seen += 1
                    receiver._changed.notify_all()
                if receiver.hang:
                    receiver._release.wait()
                    return
                doc = json.loads(body)
                with receiver._changed:
                    receiver.received.append((self.path, doc))
                    receiver._changed.notify_all()
                answer = {"ok": True, "result": {"message_id": len(receiver.received)}} \
                    if receiver.telegram_token else {"ok": True}
                if receiver.telegram_token and self.path != f"/bot{receiver.telegram_token}/sendMessage":
                    self.send_response(404)
                    answer = {"ok": False, "error_code": 404, "description": "Not Found"}
                else:
                    self.send_response(receiver.status)
                data = json.dumps(answer).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="receiver", daemon=True).start()
        return self

    def release(self) -> None:
        """Let hanging requests go (they get no answer: the connection closes)."""
        self._release.set()

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def bodies(self, event: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [b for _, b in self.received if event is None or b.get("event") == event]

    def texts(self) -> list[str]:
        with self._lock:
            return [b["text"] for _, b in self.received]

    def wait_for(self, event: str | None = None, timeout_s: float = 10.0, text: str | None = None,
                 count: int = 1) -> dict[str, Any]:
        """The `count`-th body with that `event` (webhook) or containing `text` (Telegram), waiting
        on the receiver's condition up to the deadline."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = [b for _, b in self.received
                         if (event is None or b.get("event") == event) and (text is None or text in b.get("text", ""))]
                if len(found) >= count:
                    return found[count - 1]
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    seen = [b.get("event") or b.get("text") for _, b in self.received]
                    raise AssertionError(f"no {event or text!r} (x{count}) within {timeout_s}s; got {seen}")
                self._changed.wait(left_s)

    def wait_requests(self, count: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self.requests_seen < count:
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    raise AssertionError(f"{self.requests_seen} request(s) within {timeout_s}s, wanted {count}")
                self._changed.wait(left_s)
