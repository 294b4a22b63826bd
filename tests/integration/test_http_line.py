"""Both transports of http_line (HttpLine on http.client, RequestsLine on requests) against a
scripted HTTP/1.1 server on 127.0.0.1: answers come back as sent over one kept-alive connection,
a connection the server closed while idle is replaced before a request is written into it, every
request ends within its total deadline even when the answer is dribbled or never comes, a
connection given up on is reset, `LineError.sent` is False only when nothing was written, TLS is
verified, and a host name's lookup (a fake resolver that can hang: no real DNS) takes no more
than the deadline, falls back to the last good address, runs on one thread, and is skipped for an
IP literal. (The mapping of statuses to typed errors is the REST client's: tests/unit/test_rest.py.)"""
from __future__ import annotations

import errno
import json
import re
import select
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest
import requests

from http_line import HttpLine, LineError, RequestsLine
from harness.waiting import wait_until
from name_lookup import Resolver

OK = {"status": "ok", "response": {"type": "cancel", "data": {"statuses": ["success"]}}}
DRIBBLE_S = 0.3  # the dribbling server's pause between bytes


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
            step = script.pop(0) if len(script) > 1 else (script[0] if script else ("answer", 200, {}, OK))
        kind = step[0]
        if kind == "drop":  # the connection dies with the request unanswered
            self.close_connection = True
            return
        if kind == "hang":  # accepts the request, never answers: waits for the client to leave
            self.server.outcomes.append(self.client_leaving(10) or "stayed")
            self.close_connection = True
            return
        _, status, headers, payload = step[:4]
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        head = [f"HTTP/1.1 {status} Whatever", "Content-Type: application/json",
                *(f"{name}: {value}" for name, value in headers.items())]
        if kind == "partial":  # promises more than it sends, then closes
            self.wfile.write(("\r\n".join(head + [f"Content-Length: {len(data) + 100}"]) + "\r\n\r\n").encode() + data)
            self.close_connection = True
            return
        answer = ("\r\n".join(head + [f"Content-Length: {len(data)}"]) + "\r\n\r\n").encode() + data
        if kind == "close_body_later":  # `Connection: close`, and the body in a later packet
            self.wfile.write(("\r\n".join(head + [f"Content-Length: {len(data)}", "Connection: close"])
                              + "\r\n\r\n").encode())
            self.wfile.flush()
            self.client_leaving(0.05)  # the headers go out alone
            self.wfile.write(data)
            self.close_connection = True
            return
        if kind in ("dribble", "dribble_body"):  # one byte every DRIBBLE_S (the body only, or all)
            start = len(answer) - len(data) if kind == "dribble_body" else 0
            self.wfile.write(answer[:start])
            for i in range(start, len(answer)):
                try:
                    self.wfile.write(answer[i:i + 1])
                except OSError as exc:
                    self.server.outcomes.append(type(exc).__name__)
                    break
                outcome = self.client_leaving(DRIBBLE_S)  # the pause, cut short if the client leaves
                if outcome:
                    self.server.outcomes.append(outcome)
                    break
            self.close_connection = True
            return
        self.wfile.write(answer)
        if kind == "answer_then_close":  # keep-alive promised, then closed while idle
            self.close_connection = True

    def client_leaving(self, timeout_s: float) -> str | None:
        """Wait up to `timeout_s` for the client to close its end; how it did: "reset" (unsent
        bytes discarded) or "eof" (a clean close); None if it is still there."""
        if not select.select([self.connection], [], [], timeout_s)[0]:
            return None
        if self.connection.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET:
            return "reset"  # read here: TLS reports a reset like a clean close (a ragged EOF)
        try:
            return "eof" if self.connection.recv(1) == b"" else "data"
        except ConnectionResetError:
            return "reset"

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
        self.outcomes: list[str] = []  # how the client left a dribbled or unanswered request
        self.script: dict[str, list[tuple[Any, ...]]] = {}
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        self.closed.set()  # this end of a connection is closed (the socket, not just the handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionResetError):  # RequestsLine closes idle connections so
            super().handle_error(request, client_address)

    def get_request(self) -> Any:
        sock, addr = super().get_request()
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True)
        return sock, addr

    @property
    def url(self) -> str:
        return f"{'https' if self.context else 'http'}://127.0.0.1:{self.server_address[1]}"

    def posts(self) -> list[Any]:
        return [body for path, body in self.seen if path == "/exchange"]


def serve(context: ssl.SSLContext | None = None) -> Iterator[ScriptedServer]:
    srv = ScriptedServer(context)
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    yield from serve()


@pytest.fixture
def tls_server(tls_files: tuple[Path, Path]) -> Iterator[ScriptedServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    yield from serve(context)


_OPEN_LINES: list[HttpLine | RequestsLine] = []  # made by the helpers below, closed after each test


@pytest.fixture(autouse=True)
def close_lines() -> Iterator[None]:
    """No connection left open after a test: the server thread serving it would wait on it until the
    garbage collector got round to the line, and a later test counting HTTP server threads sees it."""
    yield
    while _OPEN_LINES:
        _OPEN_LINES.pop().close()


def http_client_line(url: str, connect_timeout_s: float = 2.0, ca_bundle: str | None = None,
                     resolver: Resolver | None = None) -> HttpLine:
    _OPEN_LINES.append(HttpLine(url, connect_timeout_s, ca_bundle=ca_bundle, resolver=resolver))
    return _OPEN_LINES[-1]


def requests_line(url: str, connect_timeout_s: float = 2.0, ca_bundle: str | None = None,
                  resolver: Resolver | None = None) -> RequestsLine:
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment for 127.0.0.1
    if ca_bundle is not None:
        session.verify = ca_bundle
    _OPEN_LINES.append(RequestsLine(session, url, connect_timeout_s, resolver=resolver))
    return _OPEN_LINES[-1]


Line = Callable[..., "HttpLine | RequestsLine"]
BOTH = pytest.mark.parametrize("make_line", [http_client_line, requests_line], ids=["http.client", "requests"])


def assert_ends_at_the_deadline(elapsed_s: float) -> None:
    """At the 1 s deadline, not at the next byte after it (each read waits only for the time left)."""
    assert 0.95 <= elapsed_s < 1.0 + DRIBBLE_S / 2


def timed_failure(line: HttpLine | RequestsLine, deadline_s: float) -> tuple[LineError, float]:
    start = time.monotonic()
    with pytest.raises(LineError) as err:
        line.post("/exchange", b'{"n":1}', deadline_s=deadline_s)
    return err.value, time.monotonic() - start


# ---- answers ----

@BOTH
@pytest.mark.parametrize("step,expected", [
    (("answer", 200, {}, OK), (200, None, OK)),
    (("answer", 429, {"Retry-After": "3"}, {}), (429, "3", {})),
    (("answer", 502, {}, b"bad gateway"), (502, None, b"bad gateway")),
    (("answer", 422, {}, b"Failed to deserialize the JSON body"), (422, None, b"Failed to deserialize the JSON body")),
    (("answer", 307, {"Location": "/elsewhere"}, b""), (307, None, b"")),  # returned, never followed
])
def test_answers_come_back_as_sent(server: ScriptedServer, make_line: Line, step: tuple, expected: tuple) -> None:
    server.script["/exchange"] = [step]
    status, retry_after, body = make_line(server.url).post("/exchange", b'{"n":1}', deadline_s=2.0)
    want_status, want_retry_after, want_body = expected
    assert (status, retry_after) == (want_status, want_retry_after)
    assert body == (want_body if isinstance(want_body, bytes) else json.dumps(want_body).encode())
    assert [path for path, _ in server.seen] == ["/exchange"]  # one request, no redirect followed


@BOTH
def test_requests_within_the_deadline_share_one_kept_alive_connection(server: ScriptedServer, make_line: Line) -> None:
    line = make_line(server.url)
    for n in range(5):
        assert line.post("/exchange", json.dumps({"n": n}).encode(), deadline_s=1.0)[0] == 200
    assert server.connections == 1
    assert [p["n"] for p in server.posts()] == [0, 1, 2, 3, 4]
    if isinstance(line, HttpLine):
        assert line.connects == 1


@BOTH
def test_connection_closed_while_idle_is_replaced_before_the_next_request(server: ScriptedServer,
                                                                          make_line: Line) -> None:
    server.script["/exchange"] = [("answer_then_close", 200, {}, OK), ("answer", 200, {}, OK)]
    line = make_line(server.url)
    assert line.post("/exchange", b'{"n":1}')[0] == 200
    assert server.closed.wait(5)  # the server has closed its end ...
    if isinstance(line, HttpLine):
        assert select.select([line._conn.sock], [], [], 5)[0]  # ... and the FIN has reached ours
    assert line.post("/exchange", b'{"n":2}')[0] == 200  # not written into the dead connection
    assert server.connections == 2
    assert [p["n"] for p in server.posts()] == [1, 2]


@BOTH
@pytest.mark.parametrize("step", [("drop",), ("partial", 200, {}, b'{"status":')], ids=["no answer", "half answer"])
def test_connection_lost_after_sending_may_have_been_sent_and_is_never_resent(server: ScriptedServer,
                                                                               make_line: Line, step: tuple) -> None:
    server.script["/exchange"] = [step, ("answer", 200, {}, OK)]
    line = make_line(server.url)
    with pytest.raises(LineError, match="connection failed") as err:
        line.post("/exchange", b'{"n":1}')
    assert err.value.sent is True
    assert len(server.posts()) == 1  # not re-sent
    assert line.post("/exchange", b'{"n":2}')[0] == 200  # the next request gets a fresh connection
    assert server.connections == 2


# ---- the total deadline ----

@pytest.mark.parametrize("kind", ["dribble", "dribble_body"])
def test_dribbled_answer_ends_at_the_deadline_with_a_reset(server: ScriptedServer, kind: str) -> None:
    # A socket timeout is per read: at one byte every 0.3 s, a 10 s read timeout never fires.
    server.script["/exchange"] = [(kind, 200, {}, OK)]
    line = http_client_line(server.url)
    error, elapsed_s = timed_failure(line, deadline_s=1.0)
    assert_ends_at_the_deadline(elapsed_s)
    assert error.sent is True and "no complete answer within 1 s" in str(error)
    assert wait_until(lambda: server.outcomes, 5) == ["reset"]  # not a clean close: unsent bytes dropped
    assert line._conn is None and len(server.posts()) == 1


def test_requests_line_dribbled_body_ends_at_the_deadline_with_a_reset(server: ScriptedServer) -> None:
    # Status line and headers are read inside requests, one per-read timeout: see RequestsLine.
    server.script["/exchange"] = [("dribble_body", 200, {}, OK)]
    error, elapsed_s = timed_failure(requests_line(server.url), deadline_s=1.0)
    assert_ends_at_the_deadline(elapsed_s)
    assert error.sent is True and "no complete answer within 1 s" in str(error)
    assert wait_until(lambda: server.outcomes, 5) == ["reset"]


@BOTH
def test_silent_server_ends_at_the_deadline_with_a_reset(server: ScriptedServer, make_line: Line) -> None:
    server.script["/exchange"] = [("answer", 200, {}, OK), ("hang",)]
    line = make_line(server.url)
    assert line.post("/exchange", b'{"n":1}')[0] == 200  # RequestsLine marks a connection for reset here
    error, elapsed_s = timed_failure(line, deadline_s=1.0)
    assert 0.95 <= elapsed_s < 1.5
    assert error.sent is True and "no complete answer within 1 s" in str(error)
    assert wait_until(lambda: server.outcomes, 5) == ["reset"]
    assert len(server.posts()) == 2


def test_waiting_for_the_line_counts_against_the_deadline(server: ScriptedServer) -> None:
    server.script["/exchange"] = [("hang",)]
    line = http_client_line(server.url)
    first_outcome: list[Any] = []

    def first_request() -> None:
        try:
            first_outcome.append(line.post("/exchange", b'{"n":1}', deadline_s=2.0))
        except LineError as exc:
            first_outcome.append(exc)

    first = threading.Thread(target=first_request)
    first.start()
    wait_until(lambda: server.posts(), 5)  # the first request holds the line, unanswered
    error, elapsed_s = timed_failure(line, deadline_s=0.5)
    first.join(5)
    assert error.sent is False and "line busy" in str(error)  # nothing of it written
    assert isinstance(first_outcome[0], LineError) and first_outcome[0].sent is True
    assert 0.45 <= elapsed_s < 1.0
    assert len(server.posts()) == 1


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A port that is bound, so that nobody else takes it, but not listening: connects are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@BOTH
def test_refused_connection_was_not_sent(refused_url: str, make_line: Line) -> None:
    error, elapsed_s = timed_failure(make_line(refused_url), deadline_s=2.0)
    assert error.sent is False and "connect failed" in str(error)
    assert elapsed_s < 0.5


@pytest.fixture
def unanswered_url() -> Iterator[str]:
    """A listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            filler = socket.socket()
            fillers.append(filler)
            filler.settimeout(0.2)
            try:
                filler.connect(listener.getsockname())
            except TimeoutError:
                break  # queue full: the next connect hangs too
        else:
            pytest.skip("this kernel accepts connections beyond the listen backlog")
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@BOTH
@pytest.mark.parametrize("connect_timeout_s,deadline_s", [(5.0, 0.5), (0.3, 2.0)])
def test_connect_timeout_is_the_shorter_of_its_own_and_the_deadline_and_was_not_sent(
        unanswered_url: str, make_line: Line, connect_timeout_s: float, deadline_s: float) -> None:
    error, elapsed_s = timed_failure(make_line(unanswered_url, connect_timeout_s), deadline_s)
    expected_s = min(connect_timeout_s, deadline_s)
    assert error.sent is False and "connect timed out" in str(error)
    assert expected_s * 0.95 <= elapsed_s < expected_s + 0.5


# ---- TLS ----

@BOTH
def test_tls_dribble_ends_at_the_deadline_and_answers_reuse_the_connection(
        tls_server: ScriptedServer, tls_files: tuple[Path, Path], make_line: Line) -> None:
    tls_server.script["/exchange"] = [("answer", 200, {}, OK), ("answer", 200, {}, OK), ("dribble_body", 200, {}, OK)]
    line = make_line(tls_server.url, ca_bundle=str(tls_files[0]))
    for n in range(2):
        assert line.post("/exchange", json.dumps({"n": n}).encode(), deadline_s=2.0) == (200, None, json.dumps(OK).encode())
    assert tls_server.connections == 1
    error, elapsed_s = timed_failure(line, deadline_s=1.0)
    assert_ends_at_the_deadline(elapsed_s)
    assert error.sent is True and "no complete answer within 1 s" in str(error)
    assert wait_until(lambda: tls_server.outcomes, 5) == ["reset"]


def test_tls_verified_against_the_configured_bundle(tls_server: ScriptedServer, tls_files: tuple[Path, Path]) -> None:
    cert = str(tls_files[0])
    trusted = HttpLine(tls_server.url, 2.0, ca_bundle=cert)
    status, _, body = trusted.post("/exchange", b'{"n":1}')
    assert status == 200 and json.loads(body) == OK
    trusted.close()
    untrusted = HttpLine(tls_server.url, 2.0)  # system roots only: the self-signed server is refused
    with pytest.raises(LineError, match="TLS handshake failed.*SSLCertVerificationError") as err:
        untrusted.post("/exchange", b'{"n":2}')
    assert err.value.sent is False  # refused in the handshake: no byte of the request written
    missing = HttpLine(tls_server.url, 2.0, ca_bundle=cert + ".gone")  # a typed error, not a raw OSError
    with pytest.raises(LineError, match="TLS set-up failed") as err:
        missing.post("/exchange", b'{"n":3}')
    assert err.value.sent is False
    with pytest.raises(LineError, match="connect failed") as err:  # requests: the same verdict
        requests_line(tls_server.url).post("/exchange", b'{"n":4}')
    assert err.value.sent is False
    assert [p["n"] for p in tls_server.posts()] == [1]


def test_bad_base_url_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        HttpLine("ftp://example.org", 1.0)


def test_a_closing_answer_whose_body_comes_later_is_read_whole(server: ScriptedServer) -> None:
    # http.client closes the connection on `Connection: close` before the body is read: the
    # deadline reader must keep the socket open until it has read it (it once failed with EBADF).
    server.script["/exchange"] = [("close_body_later", 200, {}, OK)]
    line = HttpLine(server.url, 1.0)
    try:
        status, _, body = line.post("/exchange", b"{}", 2.0)
        assert (status, json.loads(body)) == (200, OK)
        server.script["/exchange"] = [("answer", 200, {}, OK)]
        assert line.post("/exchange", b"{}", 2.0)[0] == 200  # a new connection after the close
    finally:
        line.close()


# ---- name lookup ----

class FakeDns:
    """getaddrinfo's stand-in: every name is 127.0.0.1; while `hanging`, a lookup blocks until
    `release` is set (at teardown at the latest), like a resolver that stopped answering."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.hanging = False
        self.entered = threading.Event()  # a lookup is blocked in here
        self.release = threading.Event()

    def __call__(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        self.names.append(host)
        if self.hanging:
            self.entered.set()
            self.release.wait(60)
        return socket.getaddrinfo("127.0.0.1", port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)

    def line(self, make_line: Line, url: str) -> HttpLine | RequestsLine:
        """A line to `url` whose names this fake looks up (closed, with its resolver, after the test)."""
        return make_line(url, resolver=Resolver(lookup=self))


@pytest.fixture
def dns() -> Iterator[FakeDns]:
    fake = FakeDns()
    yield fake
    fake.release.set()  # then close_lines closes the lines and their resolvers


def by_name(url: str) -> str:
    """The same server, addressed by a host name only the fake resolver knows."""
    return f"http://exchange.test:{urlsplit(url).port}"


def lookup_threads() -> set[threading.Thread]:
    """The resolvers' threads alive now (an earlier test's may still be ending: compare with before)."""
    return {t for t in threading.enumerate() if t.name == "name-lookup"}


@BOTH
def test_hung_name_lookup_fails_at_the_deadline_and_was_not_sent(server: ScriptedServer, dns: FakeDns,
                                                                 make_line: Line) -> None:
    dns.hanging = True
    error, elapsed_s = timed_failure(dns.line(make_line, by_name(server.url)), deadline_s=0.5)
    assert error.sent is False and re.search("name lookup (of exchange.test )?timed out", str(error))
    assert 0.45 <= elapsed_s < 0.5 + 0.25
    assert dns.entered.is_set() and server.connections == 0 and server.posts() == []


@BOTH
def test_a_hung_lookup_on_reconnect_uses_the_last_good_address(server: ScriptedServer, dns: FakeDns, make_line: Line,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    server.script["/exchange"] = [("answer_then_close", 200, {}, OK), ("answer", 200, {}, OK)]
    line = dns.line(make_line, by_name(server.url))
    assert line.post("/exchange", b'{"n":1}', deadline_s=2.0)[0] == 200  # looked up: the address is known
    assert server.closed.wait(5)  # the server closed the connection: the next post connects again
    dns.hanging = True
    start = time.monotonic()
    assert line.post("/exchange", b'{"n":2}', deadline_s=2.0)[0] == 200
    assert time.monotonic() - start < line.resolver.fresh_wait_s + 0.5  # waited for the fresh answer only so long
    assert dns.entered.is_set() and dns.names == ["exchange.test", "exchange.test"]
    assert [p["n"] for p in server.posts()] == [1, 2] and server.connections == 2
    assert "name lookup of exchange.test slow: connecting to its last known address" in caplog.text


@BOTH
def test_many_hung_lookups_share_one_thread_and_one_lookup(server: ScriptedServer, dns: FakeDns,
                                                           make_line: Line) -> None:
    before, threads_before = lookup_threads(), threading.active_count()
    dns.hanging = True
    line = dns.line(make_line, by_name(server.url))
    for _ in range(30):
        error, _ = timed_failure(line, deadline_s=0.02)
        assert error.sent is False
    assert len(lookup_threads() - before) == 1 and threading.active_count() <= threads_before + 1
    assert dns.names == ["exchange.test"]  # asked once: every later request waited on that lookup
    dns.release.set()  # the resolver answers at last: the line works again, on the same thread
    assert wait_until(lambda: line.post("/exchange", b'{"n":1}', deadline_s=2.0)[0] == 200, 5)
    assert len(lookup_threads() - before) == 1


@BOTH
def test_an_ip_literal_never_reaches_the_resolver(server: ScriptedServer, dns: FakeDns, make_line: Line) -> None:
    before = lookup_threads()
    dns.hanging = True  # would hold any lookup until teardown
    server.script["/exchange"] = [("answer_then_close", 200, {}, OK), ("answer", 200, {}, OK)]
    line = dns.line(make_line, server.url)
    assert line.post("/exchange", b'{"n":1}', deadline_s=1.0)[0] == 200
    assert server.closed.wait(5)
    assert line.post("/exchange", b'{"n":2}', deadline_s=1.0)[0] == 200  # a second connect, no lookup either
    assert dns.names == [] and lookup_threads() <= before and server.connections == 2
