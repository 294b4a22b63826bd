"""The http.client line that carries signed /exchange actions, against a scripted HTTP/1.1 server on
127.0.0.1: statuses map to the same typed errors as the requests path (tests/unit/test_rest.py),
one kept-alive connection, a connection the server closed while idle is replaced before an order
is written into it, failures are never re-sent, TLS is verified."""
from __future__ import annotations

import json
import select
import ssl
import threading
from decimal import Decimal as D
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from http_line import HttpLine, LineError
from hyperliquid_rest import HyperliquidRestClient, NetworkError, RateLimited, RequestRejected, ServerError
from signing import L1Signer, NonceClock
from tests.waiting import wait_until

META = {"universe": [{"name": "BTC", "szDecimals": 5, "maxLeverage": 50}]}
OK_CANCEL = {"status": "ok", "response": {"type": "cancel", "data": {"statuses": ["success"]}}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "ScriptedServer"

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.seen.append((self.path, json.loads(body)))
            script = self.server.script.get(self.path, [])
            step = script.pop(0) if len(script) > 1 else (script[0] if script else ("answer", 200, {}, META))
        kind = step[0]
        if kind == "drop":  # the connection dies with the request unanswered
            self.close_connection = True
            return
        if kind == "hang":  # answer nothing until released (the client times out first)
            step[1].wait(10)
            try:  # how the client left: a reset (unsent bytes discarded) or a clean close
                outcome = "eof" if self.connection.recv(1) == b"" else "data"
            except ConnectionResetError:
                outcome = "reset"
            self.server.hang_outcomes.append(outcome)
            self.close_connection = True
            return
        _, status, headers, payload = step
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if kind == "answer_then_close":  # keep-alive promised, then closed while idle
            self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.context = context
        self.lock = threading.Lock()
        self.connections = 0
        self.seen: list[tuple[str, Any]] = []
        self.hang_outcomes: list[str] = []
        self.script: dict[str, list[tuple[Any, ...]]] = {}
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        self.closed.set()  # this end of a connection is closed (the socket, not just the handler)

    def get_request(self) -> Any:
        sock, addr = super().get_request()
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True)
        return sock, addr

    @property
    def url(self) -> str:
        return f"{'https' if self.context else 'http'}://127.0.0.1:{self.server_address[1]}"

    def exchange_posts(self) -> list[Any]:
        return [body for path, body in self.seen if path == "/exchange"]


@pytest.fixture
def server() -> Any:
    srv = ScriptedServer()
    srv.thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def rest_client(url: str, read_timeout_s: float = 5.0) -> HyperliquidRestClient:
    return HyperliquidRestClient(url, signer=L1Signer(bytes(range(1, 33)), is_mainnet=False),
                                 nonce_clock=NonceClock(), timeout_s=(2.0, read_timeout_s), sleep=lambda s: None)


@pytest.mark.parametrize("step,expected,check", [
    (("answer", 429, {"Retry-After": "3"}, {}), RateLimited, lambda e: e.retry_after_s == 3.0),
    (("answer", 429, {}, {}), RateLimited, lambda e: e.retry_after_s == 1.0),
    (("answer", 502, {}, b"bad gateway"), ServerError, lambda e: e.status == 502 and "bad gateway" in str(e)),
    (("answer", 422, {}, b"Failed to deserialize the JSON body"), RequestRejected, lambda e: e.status == 422),
    (("answer", 200, {}, b"<html>not json</html>"), ServerError, lambda e: "not JSON" in str(e)),
])
def test_statuses_typed_like_the_requests_path(server: ScriptedServer, step: tuple, expected: type,
                                               check: Callable[[Any], bool]) -> None:
    server.script["/exchange"] = [step]
    c = rest_client(server.url)
    assert c.line is not None
    with pytest.raises(expected) as err:
        c.cancel("BTC", 7)
    assert check(err.value)
    assert len(server.exchange_posts()) == 1  # a signed action is never re-sent on an error answer


def test_redirect_refused_not_followed(server: ScriptedServer) -> None:
    server.script["/exchange"] = [("answer", 307, {"Location": server.url + "/elsewhere"}, b"")]
    c = rest_client(server.url)
    with pytest.raises(RequestRejected, match="307"):
        c.cancel("BTC", 7)
    assert [path for path, _ in server.seen] == ["/info", "/exchange"]


def test_orders_share_one_kept_alive_connection_and_arrive_signed(server: ScriptedServer) -> None:
    server.script["/exchange"] = [("answer", 200, {}, OK_CANCEL)]
    c = rest_client(server.url)
    for oid in range(5):
        assert c.cancel("BTC", oid) is True
    assert c.line.connects == 1
    posts = server.exchange_posts()
    assert [p["action"]["cancels"][0]["o"] for p in posts] == [0, 1, 2, 3, 4]
    assert all(set(p["signature"]) == {"r", "s", "v"} for p in posts)
    assert len({p["nonce"] for p in posts}) == 5


def test_connection_closed_while_idle_is_replaced_before_the_next_order(server: ScriptedServer) -> None:
    server.script["/exchange"] = [("answer_then_close", 200, {}, OK_CANCEL), ("answer", 200, {}, OK_CANCEL)]
    c = rest_client(server.url)
    assert c.cancel("BTC", 1) is True
    assert server.closed.wait(5)  # the server has closed its end ...
    assert select.select([c.line._conn.sock], [], [], 5)[0]  # ... and the FIN has reached ours
    assert c.cancel("BTC", 2) is True  # not written into the dead connection: no error, no lookup
    assert c.line.connects == 2
    assert [p["action"]["cancels"][0]["o"] for p in server.exchange_posts()] == [1, 2]


def test_dropped_request_is_an_error_never_a_resend(server: ScriptedServer) -> None:
    server.script["/exchange"] = [("drop",), ("answer", 200, {}, OK_CANCEL)]
    c = rest_client(server.url)
    with pytest.raises(NetworkError, match="connection failed"):
        c.cancel("BTC", 1)
    assert len(server.exchange_posts()) == 1
    assert c.cancel("BTC", 2) is True  # the next action gets a fresh connection
    assert c.line.connects == 2


def test_read_timeout_then_the_order_is_looked_up_by_cloid(server: ScriptedServer) -> None:
    release = threading.Event()
    server.script["/exchange"] = [("hang", release)]
    server.script["/info"] = [("answer", 200, {}, META),
                              ("answer", 200, {}, {"status": "order", "order": {
                                  "order": {"oid": 9, "origSz": "0.001", "limitPx": "50000"}, "status": "filled"}})]
    c = rest_client(server.url, read_timeout_s=0.3)
    try:
        results = c.place_order("BTC", True, D("0.001"), D("50000"), tif="Ioc", cloid="0x" + "ab" * 16)
    finally:
        release.set()
    assert results[0].kind == "filled" and results[0].oid == 9
    wait_until(lambda: server.hang_outcomes, 5)
    assert server.hang_outcomes == ["reset"]  # given up on with a reset (unsent bytes dropped), not a clean close
    assert len(server.exchange_posts()) == 1  # the exchange had it: not sent twice
    lookups = [body for path, body in server.seen if path == "/info" and body["type"] == "orderStatus"]
    assert lookups and lookups[0]["oid"] == "0x" + "ab" * 16


def test_refused_connection_is_a_network_error() -> None:
    line = HttpLine("http://127.0.0.1:9", 1.0, 1.0)
    with pytest.raises(LineError, match="connect failed"):
        line.post("/exchange", b"{}")
    with pytest.raises(NetworkError, match="connect failed"):
        rest_client("http://127.0.0.1:9")._post("/exchange", {"action": {}})


def test_bad_base_url_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        HttpLine("ftp://example.org", 1.0, 1.0)


def test_tls_verified_against_the_configured_bundle(tls_files: tuple[Path, Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv = ScriptedServer(context)
    srv.script["/exchange"] = [("answer", 200, {}, OK_CANCEL)]
    srv.thread.start()
    try:
        trusted = HttpLine(srv.url, 2.0, 2.0, ca_bundle=str(cert))
        status, _, body = trusted.post("/exchange", b"{}")
        assert status == 200 and json.loads(body) == OK_CANCEL
        trusted.close()
        untrusted = HttpLine(srv.url, 2.0, 2.0)  # system roots only: the self-signed server is refused
        with pytest.raises(LineError, match="SSLCertVerificationError"):
            untrusted.post("/exchange", b"{}")
        by_default = rest_client(srv.url).line  # what the bot builds: requests' bundle (certifi), not ours
        assert by_default is not None and by_default.ca_bundle == requests.utils.DEFAULT_CA_BUNDLE_PATH
        with pytest.raises(LineError, match="SSLCertVerificationError"):
            by_default.post("/exchange", b"{}")
        assert len(srv.exchange_posts()) == 1
        missing = HttpLine(srv.url, 2.0, 2.0, ca_bundle=str(cert) + ".gone")  # a typed error, not a raw OSError
        with pytest.raises(LineError, match="TLS set-up failed"):
            missing.post("/exchange", b"{}")
    finally:
        srv.shutdown()
        srv.server_close()
