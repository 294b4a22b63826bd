"""The control socket: `--ctl status|pause|resume|close [COIN]` to a running bot, and its answer.

Owns: the Unix socket beside the state file (`<state.path>.sock`; owner-only: mode 0600 and the
peer's uid checked; a stale one left by a killed bot is replaced at start, since only the holder
of the state file's lock gets this far; removed at a clean stop), the thread serving it, the
protocol (one JSON line each way: `{"command": "close", "coin": "BTC"}` then `{"ok": true,
"message": ...}` or `{"ok": false, "error": ...}`), the hand-over of each request to the trading
thread (a bounded queue the loop drains in a timer; the answer comes back through the request's
reply slot within a deadline), and the client: one request, its answer printed for a person.
Must not: touch trading state (operator_desk.py answers on the trading thread), wait on the
trading thread past a deadline, or answer another user.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import select
import socket
import stat
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TextIO

from ctl_format import format_status
from logsetup import RateLimitedLog

log = logging.getLogger("ctl")

COMMANDS = ("status", "pause", "resume", "close")
REPLY_TIMEOUT_S = 10.0   # a close waits on the trading thread for its exit order (api.exchange_timeout_s)
READ_TIMEOUT_S = 2.0     # a client has this long to send its request
CLIENT_TIMEOUT_S = REPLY_TIMEOUT_S + 2.0
MAX_LINE_BYTES = 4096
MAX_PATH_BYTES = 107     # sun_path on Linux, less its terminating NUL
_STOPPING = {"ok": False, "error": "the bot is stopping"}


def socket_path(state_path: str) -> str:
    """The control socket of the bot that owns `state_path`."""
    return state_path + ".sock"


class Reply:
    """One request's answer slot: the trading thread fills it once; the socket thread waits on it."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self.value: dict[str, Any] | None = None

    def set(self, value: dict[str, Any]) -> None:
        self.value = value
        self._done.set()

    def wait(self, timeout_s: float) -> dict[str, Any] | None:
        return self.value if self._done.wait(timeout_s) else None


@dataclass(frozen=True)
class CtlRequest:
    command: str
    coin: str | None
    reply: Reply = field(default_factory=Reply, compare=False)


def parse_request(line: bytes) -> CtlRequest:
    """One request line (ValueError, phrased for the operator, when it is not one)."""
    try:
        doc = json.loads(line)
    except ValueError:
        raise ValueError("a request is one JSON line") from None
    command, coin = (doc.get("command"), doc.get("coin")) if isinstance(doc, dict) else (None, None)
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; expected one of: {', '.join(COMMANDS)}")
    if coin is not None and (not isinstance(coin, str) or not coin or len(coin) > 20):
        raise ValueError(f"a coin is a name such as BTC, got {coin!r}")
    return CtlRequest(command, coin)


# ---- the server (the bot) ---------------------------------------------------------------------

class CtlServer:
    """Serves the control socket on its own thread; each request goes to `requests`, drained by
    the trading loop, which answers in the request's reply slot."""

    def __init__(self, path: str, requests: "queue.Queue[CtlRequest]",
                 reply_timeout_s: float = REPLY_TIMEOUT_S) -> None:
        self.path, self.requests, self.reply_timeout_s = path, requests, reply_timeout_s
        self._listener: socket.socket | None = None
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._inode: int | None = None
        self._waiting: Reply | None = None  # the reply the thread waits for (answered by stop())
        self._closing = threading.Event()
        self._quiet = RateLimitedLog(every_s=60.0)
        self.served = 0

    def start(self) -> None:
        """Bind (replacing a stale socket), owner-only, and serve. OSError: not served (the bot
        trades on; `--ctl` then finds no bot)."""
        if len(os.fsencode(self.path)) > MAX_PATH_BYTES:
            raise OSError(f"the path is too long for a Unix socket ({len(os.fsencode(self.path))} bytes, at "
                          f"most {MAX_PATH_BYTES}); use a shorter state.path")
        _remove_stale(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.path)
            os.chmod(self.path, 0o600)
            listener.listen(8)
            self._inode = os.stat(self.path).st_ino
        except OSError:
            listener.close()
            raise
        self._listener, self._wake = listener, os.pipe()
        self._thread = threading.Thread(target=self._run, name="ctl", daemon=True)
        self._thread.start()
        log.info("control socket at %s (--ctl status|pause|resume|close)", self.path)

    def stop(self) -> None:
        """Stop serving and remove the socket (only ours: a file put there since is left alone)."""
        if self._thread is not None and self._wake is not None:
            os.write(self._wake[1], b"x")
            self._closing.set()
            waiting = self._waiting
            if waiting is not None:  # the loop has stopped: it will not answer
                waiting.set(_STOPPING)
            self._thread.join(READ_TIMEOUT_S)
        for fd in self._wake or ():
            os.close(fd)
        if self._listener is not None:
            self._listener.close()
        try:
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._listener = self._wake = self._thread = None

    def _run(self) -> None:
        assert self._listener is not None and self._wake is not None
        while True:
            ready, _, _ = select.select([self._listener, self._wake[0]], [], [])
            if self._wake[0] in ready:
                return
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue  # the client gave up meanwhile
            with conn:
                try:
                    self._serve(conn)
                except Exception as exc:  # noqa: BLE001 - one bad client must not end the socket
                    if self._quiet.allow(type(exc).__name__) is not None:
                        log.warning("control request failed: %s: %s", type(exc).__name__, exc)

    def _serve(self, conn: socket.socket) -> None:
        if not _same_user(conn):
            _send(conn, {"ok": False, "error": "only the user running the bot may control it"})
            return
        try:
            request = parse_request(_read_line(conn, time.monotonic() + READ_TIMEOUT_S))
        except ValueError as exc:
            _send(conn, {"ok": False, "error": str(exc)})
            return
        self._waiting = request.reply  # before the check: stop() sets `_closing`, then answers it
        if self._closing.is_set():
            request.reply.set(_STOPPING)
        else:
            try:
                self.requests.put_nowait(request)
            except queue.Full:
                request.reply.set({"ok": False, "error": "the bot is busy with other commands; try again"})
        answer = request.reply.wait(self.reply_timeout_s)
        self._waiting = None
        if answer is None:
            answer = {"ok": False, "error": f"the trading loop did not answer within {self.reply_timeout_s:g} s"}
        self.served += 1
        _send(conn, answer)


def serve_ctl(path: str, requests: "queue.Queue[CtlRequest]", cleanup: list[Callable[[], None]]) -> None:
    """The bot's control socket, its stop appended to `cleanup`; a failure is logged, not fatal."""
    server = CtlServer(path, requests)
    try:
        server.start()
    except OSError as exc:
        log.error("control socket not started at %s: %s; --ctl cannot reach this bot", path, exc)
        return
    cleanup.append(server.stop)


def _remove_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket; not replacing it")
    os.unlink(path)  # we hold the state file's lock: the bot that made it is gone
    log.info("control socket: replaced %s, left by a bot that did not stop cleanly", path)


def _same_user(conn: socket.socket) -> bool:
    peercred = getattr(socket, "SO_PEERCRED", None)
    if peercred is None:
        return True  # the socket's mode 0600 alone keeps other users out
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i")))
    return uid == os.geteuid()


def _read_line(conn: socket.socket, deadline: float) -> bytes:
    """Bytes up to the first newline (or the peer's end) within `deadline` (ValueError if not)."""
    data = b""
    while b"\n" not in data and len(data) <= MAX_LINE_BYTES:
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            raise ValueError("no complete request in time")
        conn.settimeout(left_s)
        try:
            chunk = conn.recv(MAX_LINE_BYTES)
        except TimeoutError:
            raise ValueError("no complete request in time") from None
        if not chunk:
            break
        data += chunk
    if len(data) > MAX_LINE_BYTES:
        raise ValueError("request too long")
    return data.split(b"\n", 1)[0]


def _send(conn: socket.socket, answer: dict[str, Any]) -> None:
    conn.settimeout(READ_TIMEOUT_S)
    conn.sendall(json.dumps(answer).encode() + b"\n")


# ---- the client (`--ctl`) ---------------------------------------------------------------------

class CtlUnavailable(Exception):
    """No bot answers on the socket (none runs, or it did not answer in time)."""


def request(path: str, command: str, coin: str | None, timeout_s: float = CLIENT_TIMEOUT_S) -> dict[str, Any]:
    """One request to the bot at `path`; its answer. Raises CtlUnavailable."""
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise CtlUnavailable(f"no control socket: {path} is too long for a Unix socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise CtlUnavailable(f"no bot is running for this config (no control socket at {path})") from None
        except ConnectionRefusedError:
            raise CtlUnavailable(f"no bot is running for this config (nobody answers on {path})") from None
        except PermissionError:
            raise CtlUnavailable(f"{path}: permission denied (the bot runs as another user)") from None
        try:
            sock.sendall(json.dumps({"command": command, "coin": coin}).encode() + b"\n")
            line = _read_line(sock, time.monotonic() + timeout_s)
        except (ValueError, OSError) as exc:
            raise CtlUnavailable(f"the bot did not answer ({exc})") from None
    if not line:
        raise CtlUnavailable("the bot closed the connection without an answer")
    try:
        answer = json.loads(line)
    except ValueError:
        raise CtlUnavailable("the bot's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise CtlUnavailable("the bot's answer is not an object")
    return answer


def run_ctl(state_path: str, words: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """`--ctl COMMAND [COIN]`: 0 done, 1 no bot answered (or it refused), 2 a bad command line."""
    if not words or words[0] not in COMMANDS or len(words) > 2:
        print(f"ctl: usage: --ctl {{{'|'.join(COMMANDS)}}} [COIN], got {' '.join(words) or 'nothing'}", file=err)
        return 2
    command, coin = words[0], (words[1] if len(words) > 1 else None)
    try:
        answer = request(socket_path(state_path), command, coin)
    except CtlUnavailable as exc:
        print(f"ctl: {exc}", file=err)
        return 1
    if not answer.get("ok"):
        print(f"ctl: {answer.get('error', 'the bot refused')}", file=err)
        return 1
    print(format_status(answer["status"]) if command == "status" else answer.get("message", "done"), file=out)
    return 0
