"""A fault-injecting HTTP/1.1 proxy for tests: put it between a REST client and the simulator to
reproduce a misbehaving exchange (an error or garbage after the action executed, an answer that
never finishes or never comes, a 429 with a long Retry-After, a reset).

Owns: a loopback listener on its own asyncio loop in a daemon thread, a small HTTP/1.1 reader
for the client side (kept-alive connections, Content-Length or chunked bodies), forwarding of the
exact request bytes to the upstream with aiohttp, the fault rules and a log of every request.
Must not: touch the WebSocket (tests point it at the simulator directly), rewrite a request body
(signatures cover it), or listen anywhere but 127.0.0.1.

    proxy = FaultProxy(upstream=sim.rest_url)
    proxy.start()
    rule = proxy.inject("/exchange", Fault.STATUS_AFTER, status=502, count=1)
    ...                       # point the client at proxy.url
    rule.hits, proxy.log      # what fired, what passed
    proxy.stop()

The client side is raw asyncio streams rather than aiohttp's server: DRIBBLE, DROP_AFTER, HANG
and REFUSE need byte-level control of the reply (or of its absence).
"""
from __future__ import annotations

import asyncio
import enum
import http
import json
import logging
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import aiohttp

log = logging.getLogger("faultproxy")

# hop-by-hop headers (RFC 9110 7.6.1) and the framing ones this proxy sets itself
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "host", "content-length"}
_MAX_HEAD = 64 * 1024
# aiohttp adds these when absent; skipping them sends the client's header set as it was
_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class Fault(enum.Enum):
    PASS = "PASS"                    # forward, relay the answer unchanged (also: no rule matched)
    STATUS_AFTER = "STATUS_AFTER"    # forward (the action executes), reply `status` instead
    GARBAGE_AFTER = "GARBAGE_AFTER"  # forward, reply 200 with a non-JSON body
    DROP_AFTER = "DROP_AFTER"        # forward, then close the connection without an answer
    DRIBBLE = "DRIBBLE"              # forward, send the real answer one byte every `interval_s`
    HANG = "HANG"                    # forward (unless forward=False), answer nothing until cleared/stopped
    STATUS_BEFORE = "STATUS_BEFORE"  # do not forward; reply `status` with `headers` and `body`
    REFUSE = "REFUSE"                # do not forward; close the connection at once


_FORWARDS = {Fault.PASS, Fault.STATUS_AFTER, Fault.GARBAGE_AFTER, Fault.DROP_AFTER, Fault.DRIBBLE}


@dataclass(eq=False)
class Rule:
    """One injected fault. `hits` counts the requests it fired on (read it from any thread)."""

    path: str | None
    fault: Fault
    status: int = 502
    headers: Mapping[str, str] | None = None
    body: bytes | None = None
    count: int | None = 1
    match: Callable[[dict[str, Any]], bool] | None = None
    interval_s: float = 3.0
    forward: bool = True
    reset: bool = True
    hits: int = 0
    _released: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def _applies(self, path: str, body: Any) -> bool:
        if self.count is not None and self.hits >= self.count:
            return False
        if self.path is not None and self.path != path:
            return False
        if self.match is None:
            return True
        if not isinstance(body, dict):
            return False
        try:
            return bool(self.match(body))
        except Exception:  # a broken matcher must not kill the connection; the rule just does not fire
            log.exception("match function of %s raised; treated as no match", self.fault.name)
            return False


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def keep_alive(self) -> bool:
        conn = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


class _BadRequest(Exception):
    pass


class FaultProxy:
    """Synchronous face over an asyncio proxy: `start()`, `inject()`, `clear()`, `stop()`."""

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = port
        self.connections = 0  # client connections accepted so far
        self._rules: list[Rule] = []
        self._log: list[tuple[str, Any, str | None, int | None]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping: asyncio.Event | None = None

    # ---- lifecycle ----

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "FaultProxy":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Returns once listening; `url` then names the port."""
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        self._stopping = asyncio.Event()
        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60))
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Aborts every open client connection (hung ones included) and returns within seconds."""
        if self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(2)
            self._thread = None

    async def _stop(self) -> None:
        assert self._stopping is not None
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            _abort(writer, reset=True)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        if self._session is not None:
            await self._session.close()

    # ---- rules and log (any thread) ----

    def inject(self, path: str | None, fault: Fault, *, status: int = 502, headers: Mapping[str, str] | None = None,
               body: bytes | str | None = None, count: int | None = 1,
               match: Callable[[dict[str, Any]], bool] | None = None, interval_s: float = 3.0,
               forward: bool = True, reset: bool = True) -> Rule:
        """Add a rule after the existing ones; the first rule that applies to a request fires.

        `path`: "/exchange", "/info", or None for any. `count`: how many requests it fires on
        (None: until cleared). `match(body_dict)`: only requests whose JSON body it accepts.
        `status`, `headers`, `body`: the reply of STATUS_AFTER / STATUS_BEFORE (and GARBAGE_AFTER's
        body; its default is the first half of the real answer). `interval_s`: DRIBBLE's pause per
        byte. `forward`: HANG forwards first unless False. `reset`: DROP_AFTER, REFUSE and a
        released HANG close with a TCP reset (the client reads ECONNRESET); False closes with FIN
        (the client reads EOF)."""
        data = body.encode() if isinstance(body, str) else body
        rule = Rule(path, fault, status, dict(headers or {}), data, count, match, interval_s, forward, reset)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self, rule: Rule | None = None) -> None:
        """Remove one rule, or all; a request a removed HANG rule holds is then aborted."""
        with self._lock:
            gone = [r for r in self._rules if rule is None or r is rule]
            self._rules = [r for r in self._rules if r not in gone]
        if self._thread is not None:
            for r in gone:
                self._loop.call_soon_threadsafe(r._released.set)

    @property
    def log(self) -> list[tuple[str, Any, str | None, int | None]]:
        """(path, body as JSON or None, fault name or None when no rule fired, upstream status or
        None when not forwarded or the upstream failed), one per request, in arrival order."""
        with self._lock:
            return list(self._log)

    def _pick(self, path: str, body: Any) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule._applies(path, body):
                    rule.hits += 1
                    return rule
        return None

    def _record(self, path: str, body: Any, rule: Rule | None, upstream_status: int | None) -> None:
        with self._lock:
            self._log.append((path, body, rule.fault.name if rule else None, upstream_status))

    # ---- one client connection ----

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while True:
                try:
                    req = await _read_request(reader)
                except _BadRequest as exc:
                    writer.write(_response(400, [("Content-Type", "text/plain")], str(exc).encode(), False))
                    await writer.drain()
                    break
                if req is None:
                    break
                if not await self._handle(req, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    async def _handle(self, req: _Request, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is finished."""
        path = req.target.split("?", 1)[0]
        try:
            body: Any = json.loads(req.body) if req.body else None
        except ValueError:
            body = None
        rule = self._pick(path, body)
        fault = rule.fault if rule else Fault.PASS
        keep = req.keep_alive
        status, reason, headers, raw = 0, "", [], b""  # the upstream's answer, once forwarded
        if fault in _FORWARDS or (fault is Fault.HANG and rule is not None and rule.forward):
            answer = await self._forward(req)
            self._record(path, body, rule, answer[0] if answer else None)
            if answer is None:
                writer.write(_response(502, [("Content-Type", "text/plain")], b"faultproxy: upstream failed", keep))
                await writer.drain()
                return keep
            status, reason, headers, raw = answer
        else:
            self._record(path, body, rule, None)

        assert fault is Fault.PASS or rule is not None
        if fault is Fault.PASS:
            writer.write(_response(status, headers, raw, keep, reason))
        elif fault is Fault.STATUS_AFTER or fault is Fault.STATUS_BEFORE:
            assert rule is not None
            extra = list((rule.headers or {}).items())
            if not any(k.lower() == "content-type" for k, _ in extra):
                extra.append(("Content-Type", "text/html"))
            text = rule.body if rule.body is not None else _error_page(rule.status)
            writer.write(_response(rule.status, extra, text, keep))
        elif fault is Fault.GARBAGE_AFTER:
            assert rule is not None
            text = rule.body if rule.body is not None else raw[: max(1, len(raw) // 2)]
            writer.write(_response(200, headers, text, keep))
        elif fault is Fault.DRIBBLE:
            assert rule is not None
            for i, byte in enumerate(_response(status, headers, raw, keep, reason)):
                if i:
                    await asyncio.sleep(rule.interval_s)
                writer.write(bytes((byte,)))
                await writer.drain()
        elif fault is Fault.HANG:
            assert rule is not None and self._stopping is not None
            released, stopping = asyncio.ensure_future(rule._released.wait()), asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait([released, stopping], return_when=asyncio.FIRST_COMPLETED)
            finally:
                released.cancel()
                stopping.cancel()
            _abort(writer, rule.reset)
            return False
        else:  # DROP_AFTER, REFUSE
            assert rule is not None
            _abort(writer, rule.reset)
            return False
        await writer.drain()
        return keep

    async def _forward(self, req: _Request) -> tuple[int, str, list[tuple[str, str]], bytes] | None:
        """The upstream's (status, reason, headers, body bytes as sent), or None if it failed."""
        assert self._session is not None
        headers = [(k, v) for k, v in req.headers if k.lower() not in _HOP]
        try:
            async with self._session.request(req.method, self.upstream + req.target, data=req.body,
                                             headers=headers, allow_redirects=False,
                                             skip_auto_headers=_AUTO) as resp:
                raw = await resp.read()
                kept = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers
                        if k.decode("latin-1").lower() not in _HOP]
                return resp.status, resp.reason or "", kept, raw
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("upstream %s %s failed: %r", req.method, req.target, exc)
            return None


# ---- HTTP/1.1 framing ----

async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """The next request on the connection, or None at a clean EOF between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise
    except asyncio.LimitOverrunError as exc:
        raise _BadRequest("request head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise _BadRequest("bad request line") from exc
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest("bad header line")
        headers.append((name.strip(), value.strip()))
    req = _Request(method, target, version, headers, b"")
    if "chunked" in (req.header("transfer-encoding") or "").lower():
        req.body = await _read_chunked(reader)
    else:
        try:
            length = int(req.header("content-length") or "0")
        except ValueError as exc:
            raise _BadRequest("bad Content-Length") from exc
        req.body = await reader.readexactly(length) if length > 0 else b""
    return req


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise _BadRequest("bad chunk size") from exc
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def _response(status: int, headers: list[tuple[str, str]], body: bytes, keep_alive: bool,
              reason: str | None = None) -> bytes:
    if reason is None:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() not in _HOP]
    lines += [f"Content-Length: {len(body)}", "Connection: " + ("keep-alive" if keep_alive else "close")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _error_page(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return f"<html><head><title>{status} {phrase}</title></head><body><h1>{status} {phrase}</h1></body></html>".encode()


def _abort(writer: asyncio.StreamWriter, reset: bool) -> None:
    """Close without an answer: with `reset`, SO_LINGER 0 turns the close into a TCP RST."""
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
    writer.transport.abort()
