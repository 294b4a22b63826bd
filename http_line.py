"""The two transports of the REST client: one POST at a time within a total deadline, and a verdict
on every failure: could any byte of the request have reached the server?

`HttpLine`: one persistent HTTP/1.1 connection on the standard library's `http.client`, for
direct connections (the bot's `/exchange` and `/info`). `RequestsLine`: the same contract on a
`requests.Session`, for the cases `http.client` does not cover here (a proxy, `verify=False`)
and for tests that mock requests with `responses`.

Owns: the connection (TLS verified, TCP_NODELAY, TCP keepalive), the check before each request
that the server has not closed it while idle (the "stale keep-alive" failure), the total deadline
of each request (name lookup, connect, send and the whole answer: socket timeouts are per read, so
a server dribbling one byte per timeout would otherwise hold the caller for ever; getaddrinfo has
no timeout at all, so a name is looked up by the line's `name_lookup.Resolver` on its thread, and
a lookup that takes the time left is sent=False), a reset of any connection given up on after
sending (so an abandoned order cannot reach the exchange later), `LineError.sent`, and a lock so
that one request at a time uses an `HttpLine`.
Must not: retry or re-send anything (a signed action whose answer was lost is looked up by its
cloid by the caller, never sent again blindly), parse HTTP by hand (`http.client` does, in both
transports), read the environment (but in `session_for`, once per client at start), or log a body.

Why `http.client` on the direct path: `requests` + `urllib3` cost about 0.4 ms per order on this
machine (response objects, cookie extraction, retry bookkeeping) for features an order never uses,
and they give no hook between the reads of an answer's status line and headers (see RequestsLine).
"""
from __future__ import annotations

import http.client
import io
import os
import select
import socket
import ssl
import struct
import threading
import time
from contextvars import ContextVar
from typing import Any, Sequence
from urllib.parse import urlsplit

import requests
import urllib3
from requests.structures import CaseInsensitiveDict

from name_lookup import Address, Resolver

DEFAULT_DEADLINE_S = 5.0  # a request's total budget when the caller names none (the /exchange default)

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "hlbot"}
# requests decodes compressed answers (http.client would not, so HttpLine does not ask for them).
_REQUESTS_HEADERS = {**_HEADERS, "Connection": "keep-alive", "Accept-Encoding": "gzip, deflate"}
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset, drops unsent bytes
# The RequestsLine.post under way on this thread, for the urllib3 connection it uses: (its resolver, its deadline).
_POSTING: ContextVar[tuple[Resolver, float] | None] = ContextVar("_POSTING", default=None)


def session_for(base_url: str) -> requests.Session:
    """A keep-alive session whose environment settings are read once, here.

    With `trust_env` on, requests scans the whole environment on every call (about 0.5 ms of an
    order's path on this machine); resolving it once keeps HTTPS_PROXY/NO_PROXY and
    REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE working."""
    session = requests.Session()
    env = session.merge_environment_settings(base_url, {}, None, None, None)
    session.proxies.update(env["proxies"])
    session.verify = env["verify"]
    session.trust_env = False
    return session


class LineError(Exception):
    """The request failed on the wire: refused, timed out, reset, or an answer http.client could not
    parse. `sent`: False only when no byte of the request was written (connect refused or timed out,
    DNS, TLS set-up or handshake failed), so the server cannot have seen it; True (the default,
    the conservative answer) when it may have."""

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class HttpLine:
    """POST over one kept-alive connection to `base_url` (http or https)."""

    def __init__(self, base_url: str, connect_timeout_s: float, default_deadline_s: float = DEFAULT_DEADLINE_S,
                 ca_bundle: str | None = None, resolver: Resolver | None = None) -> None:
        """`connect_timeout_s`: the most a connect (and a TLS handshake) may take, within the deadline.
        `default_deadline_s`: a request's total budget when `post` is given none.
        `ca_bundle`: the CA file or OpenSSL directory that verifies the server (the REST client
        passes the one requests uses: REQUESTS_CA_BUNDLE, else certifi's); None: the system's.
        `resolver`: looks the host up within the deadline (a new one when None); closed with the line."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base URL must be http(s)://host[:port], got {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.default_deadline_s = default_deadline_s
        self.ca_bundle = ca_bundle
        self.resolver = resolver or Resolver()
        self._tls: ssl.SSLContext | None = None  # built at the first connect, then kept
        self._conn: http.client.HTTPConnection | None = None
        self._deadline = 0.0  # time.monotonic() by which the answer being read must be complete
        self._lock = threading.Lock()
        self.connects = 0  # how many connections were opened

    def post(self, path: str, body: bytes, deadline_s: float | None = None) -> tuple[int, str | None, bytes]:
        """Send one POST; return (status, Retry-After header, body) within `deadline_s` seconds
        from this call (connect, send, whole answer). Raises LineError (see `LineError.sent`)."""
        budget_s = self.default_deadline_s if deadline_s is None else deadline_s
        if budget_s <= 0:
            raise ValueError(f"deadline_s must be > 0, got {budget_s!r}")
        deadline = time.monotonic() + budget_s
        if not self._lock.acquire(timeout=budget_s):  # another thread's request: it ends by its deadline
            raise LineError(f"line busy for {budget_s:g} s", sent=False)
        try:
            self._deadline = deadline
            conn = self._usable_connection(deadline)
            headers = _HEADERS.copy()
            headers["Content-Length"] = str(len(body))
            left_s = deadline - time.monotonic()
            if left_s <= 0:  # the connect used it all; the new connection stays for the next request
                raise LineError(f"no time left to send within {budget_s:g} s", sent=False)
            try:
                conn.sock.settimeout(left_s)  # for sendall, a total timeout
                conn.request("POST", self.prefix + path, body, headers)  # headers and body in one send
                resp = conn.getresponse()  # every read through _ReadByDeadline
                data = resp.read()
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # From the first byte written on, the server may have the request. The reset
                # discards what the kernel has not delivered yet; a late answer finds no socket.
                self._drop(abort=True)
                if isinstance(exc, TimeoutError):
                    raise LineError(f"no complete answer within {budget_s:g} s") from exc
                raise LineError(f"connection failed ({type(exc).__name__})") from exc
            if resp.will_close:
                self._drop()
            return resp.status, resp.getheader("Retry-After"), data
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._drop()
        self.resolver.close()

    # ---- the connection ----

    def _usable_connection(self, deadline: float) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and _closed_by_peer(conn.sock):
            self._drop()  # closed by the server while idle: sending on it would fail or hang
            conn = None
        if conn is None:
            conn = self._connect(deadline)
        return conn

    def _connect(self, deadline: float) -> http.client.HTTPConnection:
        """A new connection, TLS handshake done, before `deadline`; every failure is sent=False."""
        try:
            tls = self._tls_context() if self.scheme == "https" else None
        except OSError as exc:  # the CA bundle is missing, unreadable or not PEM (ssl.SSLError is an OSError)
            raise LineError(f"TLS set-up failed ({type(exc).__name__}: {exc})", sent=False) from exc
        addresses = self._addresses(deadline)
        try:
            sock = _open_socket(addresses, self.connect_timeout_s, deadline)
        except TimeoutError as exc:
            raise LineError("connect timed out", sent=False) from exc
        except OSError as exc:  # refused, unreachable
            raise LineError(f"connect failed ({type(exc).__name__})", sent=False) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        # Probe an idle connection after 30 s: keeps NAT entries alive, and a silently dead peer
        # shows up as a closed socket before an order is written into it.
        for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
        conn: http.client.HTTPConnection
        if tls is not None:
            left_s = deadline - time.monotonic()
            try:  # the handshake's timeout is for the whole handshake, not per read
                if left_s <= 0:
                    raise TimeoutError("no time left for the handshake")
                sock.settimeout(min(self.connect_timeout_s, left_s))
                sock = tls.wrap_socket(sock, server_hostname=self.host)
            except TimeoutError as exc:
                sock.close()
                raise LineError("TLS handshake timed out", sent=False) from exc
            except OSError as exc:  # ssl.SSLCertVerificationError and friends are OSErrors
                sock.close()
                raise LineError(f"TLS handshake failed ({type(exc).__name__}: {exc})", sent=False) from exc
            conn = http.client.HTTPSConnection(self.host, self.port, context=tls)  # its default port: Host header
        else:
            conn = http.client.HTTPConnection(self.host, self.port)
        conn.sock = sock  # connected here, within the deadline, never by http.client
        conn.response_class = self._answer  # type: ignore[assignment]
        self._conn = conn
        self.connects += 1
        return conn

    def _addresses(self, deadline: float) -> list[Address]:
        """The host's addresses before `deadline`; a lookup that failed or came too late is sent=False."""
        try:
            return self.resolver.addresses(self.host, self.port, deadline)
        except TimeoutError as exc:
            raise LineError(f"name lookup of {self.host} timed out", sent=False) from exc
        except OSError as exc:  # socket.gaierror: no such host, resolver failure
            raise LineError(f"name lookup of {self.host} failed ({type(exc).__name__})", sent=False) from exc

    def _answer(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None) -> http.client.HTTPResponse:
        """http.client's response parser, reading the socket through the current deadline."""
        return http.client.HTTPResponse(_ReadByDeadline(sock, self._deadline), debuglevel,  # type: ignore[arg-type]
                                        method=method)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            bundle = self.ca_bundle
            is_dir = bundle is not None and os.path.isdir(bundle)
            self._tls = ssl.create_default_context(cafile=None if is_dir else bundle,
                                                   capath=bundle if is_dir else None)
        return self._tls

    def _drop(self, abort: bool = False) -> None:
        """Close the connection; `abort`: with a reset, which discards whatever of the request the
        kernel has not delivered yet, so that an order given up on cannot reach the exchange later."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if abort and conn.sock is not None:
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass  # already closed by the peer: nothing left to discard
        conn.close()


class _ReadByDeadline(io.RawIOBase):
    """What http.client reads an answer from: the socket, each recv allowed only the time left
    before the request's deadline, so that bytes trickling in cannot stretch it. http.client asks
    its "socket" for `makefile("rb")`; this one hands out a buffered reader over itself."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = deadline
        # As socket.makefile does: the socket stays open while this reader is, so that http.client
        # closing the connection on a `Connection: close` answer does not cut the body it still reads.
        sock._io_refs += 1  # type: ignore[attr-defined]

    def close(self) -> None:
        if not self.closed:
            self.sock._decref_socketios()  # type: ignore[attr-defined]
        super().close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        left_s = self.deadline - time.monotonic()
        if left_s <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(left_s)  # an SSLSocket applies it to the whole record it decrypts
        return self.sock.recv_into(buffer)

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(self)


def _open_socket(addresses: list[Address], connect_timeout_s: float, deadline: float,
                 options: Sequence[tuple[int, int, Any]] = ()) -> socket.socket:
    """socket.create_connection on addresses already looked up, except that all of them together get
    the time left, not `connect_timeout_s` each. `options`: setsockopt arguments, set before connect."""
    error: OSError = TimeoutError("no time left to connect")
    for family, kind, proto, _, address in addresses:
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            break
        sock = socket.socket(family, kind, proto)
        try:
            for option in options:
                sock.setsockopt(*option)
            sock.settimeout(min(connect_timeout_s, left_s))
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


def _closed_by_peer(sock: socket.socket | None) -> bool:
    """An idle HTTP connection has nothing to read: readable means EOF, an error, or stray bytes,
    and in each case it must not carry the next request."""
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


class RequestsLine:
    """POST through a `requests.Session` (its pool, proxies, CA settings; `responses` can mock it),
    with HttpLine's contract: `post(path, body, deadline_s)`, LineError with `sent`.

    The deadline, phase by phase: the name lookup (direct or of the proxy: see `_DeadlineAdapter`)
    and the connect within the time left, the connect also within `connect_timeout_s`; the
    status line and headers are read inside requests with one per-read timeout, the time left when
    the request is sent (requests offers no hook between those reads); every read of the body gets
    only the time left. So a server that dribbles its status line or headers can still hold the
    caller past the deadline (by up to one budget per byte), and a compressed or chunked body by a
    few reads of the time left; a silent server or a dribbled body cannot. HttpLine has no such gap.
    A connection this transport has read an answer on is closed with a reset from then on; one
    given up on before its first answer (a silent server on a fresh connection) is closed by
    urllib3 with a plain FIN."""

    def __init__(self, session: requests.Session, base_url: str, connect_timeout_s: float,
                 default_deadline_s: float = DEFAULT_DEADLINE_S, resolver: Resolver | None = None) -> None:
        """`resolver`: looks names up within the deadline (a new one when None); closed with the line.
        The session's stock adapters are replaced by `_DeadlineAdapter`s (one it has mounted
        itself is left as it is, and so are SOCKS proxies: their lookups are not bounded)."""
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.default_deadline_s = default_deadline_s
        self.resolver = resolver or Resolver()
        _mount_deadline_adapters(session)

    def post(self, path: str, body: bytes, deadline_s: float | None = None) -> tuple[int, str | None, bytes]:
        """Send one POST; return (status, Retry-After header, body). Raises LineError."""
        budget_s = self.default_deadline_s if deadline_s is None else deadline_s
        if budget_s <= 0:
            raise ValueError(f"deadline_s must be > 0, got {budget_s!r}")
        deadline = time.monotonic() + budget_s
        # A request prepared by hand: Session.post's generic merging (cookies, auth, hooks, env)
        # costs about 0.6 ms per call and we use none of it. Bytes, so that headers and body
        # leave in one send.
        prepared = requests.PreparedRequest()
        prepared.method = "POST"
        prepared.url = self.base_url + path
        prepared.headers = CaseInsensitiveDict(_REQUESTS_HEADERS)
        prepared.headers["Content-Length"] = str(len(body))
        prepared.body = body
        prepared.hooks = {"response": []}
        prepared._cookies = requests.cookies.RequestsCookieJar()  # requests reads it on a 3xx answer
        bound = _POSTING.set((self.resolver, deadline))  # for the connection urllib3 may open now
        try:
            # No redirects: the API never sends one, and following it would re-POST a signed action.
            resp = self.session.send(prepared, timeout=(min(self.connect_timeout_s, budget_s), budget_s),
                                     stream=True, allow_redirects=False)
        except requests.RequestException as exc:
            raise _requests_error(exc, budget_s, deadline) from exc
        finally:
            _POSTING.reset(bound)
        sock = _socket_of(resp)
        try:
            data = _read_body(resp, sock, deadline)
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError, http.client.HTTPException,
                ValueError) as exc:
            resp.close()  # the socket has SO_LINGER 0: a reset
            if time.monotonic() >= deadline:
                raise LineError(f"no complete answer within {budget_s:g} s") from exc
            raise LineError(f"connection failed ({type(exc).__name__})") from exc
        resp.raw.release_conn()  # back to the pool, kept alive (resp.close() would close it)
        return resp.status_code, resp.headers.get("Retry-After"), data

    def close(self) -> None:
        self.session.close()
        self.resolver.close()


class _DeadlineConnection(urllib3.connection.HTTPConnection):
    """urllib3's connection, opened (to the server, or to an HTTP(S) proxy) with the name looked up
    by the posting RequestsLine's resolver and the connect within the time left; and the first
    reads of the answer allowed only the time left. Outside RequestsLine.post, urllib3's own."""

    def _new_conn(self) -> socket.socket:
        bound = _POSTING.get()
        if bound is None or self.source_address:  # requests never binds a source address
            return super()._new_conn()
        resolver, deadline = bound
        try:
            addresses = resolver.addresses(self._dns_host.strip("[]"), self.port, deadline)
        except TimeoutError as exc:
            raise _LookupTimedOut(self, f"name lookup of {self.host} timed out") from exc
        except OSError as exc:
            raise urllib3.exceptions.NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        timeout_s = self.timeout if isinstance(self.timeout, (int, float)) else deadline - time.monotonic()
        try:
            return _open_socket(addresses, timeout_s, deadline, self.socket_options or ())
        except TimeoutError as exc:
            raise urllib3.exceptions.ConnectTimeoutError(self, f"connect to {self.host} timed out") from exc
        except OSError as exc:
            raise urllib3.exceptions.NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc

    def getresponse(self) -> Any:  # type: ignore[override]
        bound = _POSTING.get()
        if bound is not None and isinstance(self.timeout, (int, float)):
            self.timeout = max(min(self.timeout, bound[1] - time.monotonic()), 0.001)  # 0 would mean non-blocking
        return super().getresponse()


class _DeadlineHTTPSConnection(_DeadlineConnection, urllib3.connection.HTTPSConnection):
    pass


class _LookupTimedOut(urllib3.exceptions.ConnectTimeoutError):
    """The name lookup took the time left: nothing was sent (requests raises ConnectTimeout)."""


class _DeadlineHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _DeadlineConnection


class _DeadlineHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_DEADLINE_POOLS = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, its pools (direct and through an HTTP(S) proxy) of `_DeadlineConnection`s.
    A SOCKS proxy keeps its own connections: PySocks looks names up unbounded."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _DEADLINE_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _DEADLINE_POOLS
        return manager

    def close(self) -> None:
        """HTTPAdapter.close, and the idle connections closed now: urllib3 2 leaves them open until
        the garbage collector finds their pool (a failed request's exception can keep it for long)."""
        managers = [self.poolmanager, *self.proxy_manager.values()]
        pools = [pool for manager in managers for key in manager.pools.keys()
                 if (pool := manager.pools.get(key)) is not None]
        super().close()
        for pool in pools:
            pool.close()  # a connection still in use is closed when it is given back


def _mount_deadline_adapters(session: requests.Session) -> None:
    """Replace the session's stock adapters (exactly HTTPAdapter) by `_DeadlineAdapter`s with their settings."""
    for prefix, adapter in list(session.adapters.items()):
        if type(adapter) is requests.adapters.HTTPAdapter:
            session.mount(prefix, _DeadlineAdapter(adapter._pool_connections, adapter._pool_maxsize,
                                                   adapter.max_retries, adapter._pool_block))
            adapter.close()


def _socket_of(resp: requests.Response) -> socket.socket | None:
    """The socket the answer is read from, set to reset when closed; None under `responses`."""
    conn = getattr(resp.raw, "connection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None and hasattr(sock, "setsockopt"):  # not an SSLTransport (TLS inside a TLS proxy)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    return sock


def _read_body(resp: requests.Response, sock: socket.socket | None, deadline: float) -> bytes:
    chunks = []
    while True:
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            raise TimeoutError("deadline passed")
        if sock is not None:
            sock.settimeout(left_s)
        chunk = resp.raw.read1(65536, decode_content=True)  # at most one read of the socket
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _requests_error(exc: requests.RequestException, budget_s: float, deadline: float) -> LineError:
    if _never_sent(exc):
        what = "connect timed out" if isinstance(exc, requests.ConnectTimeout) else "connect failed"
        if isinstance(_reason(exc), _LookupTimedOut):
            what = "name lookup timed out"
        return LineError(f"{what} ({type(exc).__name__})", sent=False)
    if isinstance(exc, requests.Timeout) and time.monotonic() >= deadline:
        return LineError(f"no complete answer within {budget_s:g} s")
    if isinstance(exc, requests.Timeout):
        return LineError("timed out")
    if isinstance(exc, requests.ConnectionError):
        return LineError(f"connection failed ({type(exc).__name__})")
    return LineError(type(exc).__name__)


def _never_sent(exc: requests.RequestException) -> bool:
    """Whether requests failed before writing a byte of the request: a connect timeout, a connection
    that could not be made (refused, unreachable, DNS), to the server or to the proxy, or a
    certificate refused in the TLS handshake. Anything else (resets, read timeouts, a bare
    ConnectionError) may have been sent."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = _reason(exc)
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):  # NewConnectionError is one
        return True
    return (isinstance(reason, urllib3.exceptions.SSLError) and bool(reason.args)
            and isinstance(reason.args[0], ssl.SSLCertVerificationError))


def _reason(exc: requests.RequestException) -> Any:
    """The urllib3 error behind a requests exception (inside MaxRetryError, and ProxyError)."""
    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", cause)  # urllib3's MaxRetryError carries the real error
    if isinstance(reason, urllib3.exceptions.ProxyError):
        reason = reason.original_error
    return reason
