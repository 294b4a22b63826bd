"""One persistent HTTP/1.1 connection for signed `/exchange` actions, on the standard library's
`http.client`.

Owns: the connection (TLS verified, TCP_NODELAY, TCP keepalive), the check before each request
that the server has not closed it while idle (the "stale keep-alive" failure), connect and read
timeouts, and a lock so that one request at a time uses it.
Must not: retry or re-send anything (a signed action whose answer was lost is looked up by its
cloid by the REST client, never sent again blindly), read the environment, or log a body.

Why not `requests` here: on this path `requests` + `urllib3` cost about 0.4 ms per order on this
machine (response objects, cookie extraction, retry bookkeeping) for features an order never
uses. `/info` keeps using `requests` (proxies, compression, retries); behind a proxy the REST
client sends `/exchange` through `requests` too.
"""
from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import struct
import threading
from urllib.parse import urlsplit

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "hlbot"}


class LineError(Exception):
    """The request failed on the wire (timeout, connection or TLS failure); the server may or may
    not have seen it."""


class HttpLine:
    """POST over one kept-alive connection to `base_url` (http or https)."""

    def __init__(self, base_url: str, connect_timeout_s: float, read_timeout_s: float,
                 ca_bundle: str | None = None) -> None:
        """`ca_bundle`: the CA file or OpenSSL directory that verifies the server (the REST client
        passes the one requests uses: REQUESTS_CA_BUNDLE, else certifi's); None: the system's."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base URL must be http(s)://host[:port], got {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.ca_bundle = ca_bundle
        self._tls: ssl.SSLContext | None = None  # built at the first connect, then kept
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self.connects = 0  # how many connections were opened

    def post(self, path: str, body: bytes) -> tuple[int, str | None, bytes]:
        """Send one POST; return (status, Retry-After header, body). Raises LineError."""
        with self._lock:
            conn = self._usable_connection()
            headers = _HEADERS.copy()
            headers["Content-Length"] = str(len(body))
            try:
                conn.request("POST", self.prefix + path, body, headers)  # headers and body in one send
                resp = conn.getresponse()
                data = resp.read()
            except TimeoutError as exc:
                self._drop(abort=True)
                raise LineError(f"{path}: timed out") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop(abort=True)
                raise LineError(f"{path}: connection failed ({type(exc).__name__})") from exc
            if resp.will_close:
                self._drop()
            return resp.status, resp.getheader("Retry-After"), data

    def close(self) -> None:
        with self._lock:
            self._drop()

    # ---- the connection ----

    def _usable_connection(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and _closed_by_peer(conn.sock):
            self._drop()  # closed by the server while idle: sending on it would fail or hang
            conn = None
        if conn is None:
            conn = self._connect()
        return conn

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        try:
            if self.scheme == "https":
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.connect_timeout_s,
                                                   context=self._tls_context())
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout_s)
        except OSError as exc:  # the CA bundle is missing, unreadable or not PEM (ssl.SSLError is an OSError)
            raise LineError(f"TLS set-up failed ({type(exc).__name__}: {exc})") from exc
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise LineError("connect timed out") from exc
        except OSError as exc:  # refused, unreachable, TLS failure (ssl.SSLError is an OSError)
            conn.close()
            raise LineError(f"connect failed ({type(exc).__name__})") from exc
        sock = conn.sock
        sock.settimeout(self.read_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        # Probe an idle connection after 30 s: keeps NAT entries alive, and a silently dead peer
        # shows up as a closed socket before an order is written into it.
        for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
        self._conn = conn
        self.connects += 1
        return conn

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
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass  # already closed by the peer: nothing left to discard
        conn.close()


def _closed_by_peer(sock: socket.socket | None) -> bool:
    """An idle HTTP connection has nothing to read: readable means EOF, an error, or stray bytes,
    and in each case it must not carry the next request."""
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))
