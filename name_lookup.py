"""Name lookups within a request's deadline, for the REST lines (http_line).

`socket.getaddrinfo` takes no timeout and cannot be interrupted: a stalled resolver holds its
caller for the resolver's own timeouts (5-30 s with a usual resolv.conf), which on the trading
thread could be the middle of an exit. So a `Resolver` looks names up on a helper thread and its
caller waits for the answer only as long as its deadline allows.

Owns: the lookup thread (one per Resolver, started by the first lookup of a name, never one per
request: a caller asking for a name already being looked up waits on that lookup), the last good
addresses per (host, port) and the choice to connect to them when a fresh lookup is slow or fails,
and the line that says so (once a minute at most per host). IP literals are answered on the
caller's thread (`AI_NUMERICHOST`: no resolver, no thread).
Must not: connect, know about HTTP, retry or sleep, or hold the caller past its deadline.
"""
from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from typing import Any, Callable

from logsetup import RateLimitedLog

log = logging.getLogger("rest")

# With last good addresses in hand, the most a fresh lookup may hold a connect. A resolver that
# answers at all answers within tens of milliseconds; past this, the known addresses are used and
# the lookup, still running, refreshes them for the next connect.
FRESH_WAIT_S = 0.5
KNOWN_ADDRESS_LOG_EVERY_S = 60.0
_JOIN_S = 1.0  # close(): how long an idle lookup thread is given to end

Address = tuple[Any, ...]  # one getaddrinfo entry: (family, type, proto, canonname, sockaddr)
GetAddrInfo = Callable[..., list[Address]]  # socket.getaddrinfo, or a fake with its signature


def numeric_addresses(host: str, port: int) -> list[Address] | None:
    """The addresses of an IP literal (IPv4, or IPv6 without brackets), None for a name: never
    asks a resolver, so it costs microseconds on the caller's thread."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        return None


class _Lookup:
    """One name being looked up; every caller asking for it meanwhile waits on `done`."""

    __slots__ = ("host", "port", "done", "addresses", "error")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.done = threading.Event()
        self.addresses: list[Address] = []
        self.error: OSError | None = None


class Resolver:
    """Addresses for (host, port) before a deadline: a fresh lookup when it comes in time, else the
    last good one. `lookup`: getaddrinfo or a test's fake. No thread before the first name."""

    def __init__(self, lookup: GetAddrInfo = socket.getaddrinfo, fresh_wait_s: float = FRESH_WAIT_S) -> None:
        self._lookup = lookup
        self.fresh_wait_s = fresh_wait_s
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], _Lookup] = {}  # at most one lookup per name at a time
        self._known: dict[tuple[str, int], list[Address]] = {}  # the last good answer per name
        self._jobs: queue.SimpleQueue[_Lookup | None] | None = None
        self._thread: threading.Thread | None = None
        self._quiet = RateLimitedLog(every_s=KNOWN_ADDRESS_LOG_EVERY_S)

    def addresses(self, host: str, port: int, deadline: float) -> list[Address]:
        """The addresses to connect to, by `deadline` (a time.monotonic() value). Raises
        TimeoutError when no answer came in time and none is known, OSError (socket.gaierror)
        when the lookup failed and none is known."""
        numeric = numeric_addresses(host, port)
        if numeric is not None:
            return numeric
        key = (host, port)
        job = self._ask(key)
        known = self._known.get(key)
        wait_s = deadline - time.monotonic()
        if known is not None:
            wait_s = min(wait_s, self.fresh_wait_s)
        if job.done.wait(max(wait_s, 0.0)) and job.error is None:
            return job.addresses
        if known is not None:
            self._say_known_used(host, "failed" if job.done.is_set() else "slow")
            return known
        if job.error is not None:
            raise _copy(job.error)  # one error object per caller: several may be waiting on this lookup
        raise TimeoutError(f"name lookup of {host} not answered in time")

    def close(self) -> None:
        """Let the lookup thread end: at once when idle; after its lookup when one is under way (it
        is a daemon and holds nothing, so a lookup stuck in the resolver never holds up the caller).
        A later lookup starts a new thread."""
        with self._lock:
            jobs, thread = self._jobs, self._thread
            self._jobs = self._thread = None
            busy = bool(self._pending)
        if jobs is None or thread is None:
            return
        jobs.put(None)
        if not busy:
            thread.join(_JOIN_S)

    # ---- the lookup thread ----

    def _ask(self, key: tuple[str, int]) -> _Lookup:
        """The lookup under way for `key`, or a new one handed to the thread."""
        with self._lock:
            job = self._pending.get(key)
            if job is None:
                job = self._pending[key] = _Lookup(*key)
                self._queue().put(job)
            return job

    def _queue(self) -> queue.SimpleQueue[_Lookup | None]:
        """The thread's queue, starting the thread if there is none (called under the lock)."""
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._serve, args=(self._jobs,), name="name-lookup", daemon=True)
            self._thread.start()
        return self._jobs

    def _serve(self, jobs: queue.SimpleQueue[_Lookup | None]) -> None:
        while (job := jobs.get()) is not None:
            self._run(job)

    def _run(self, job: _Lookup) -> None:
        try:
            found = self._lookup(job.host, job.port, type=socket.SOCK_STREAM)
            if not found:
                raise socket.gaierror(socket.EAI_NONAME, f"no address for {job.host}")
            job.addresses = list(found)
        except OSError as exc:
            job.error = exc
        except Exception as exc:  # noqa: BLE001 - e.g. UnicodeError for a bad name: its answer; the thread lives on
            job.error = OSError(f"name lookup of {job.host} failed ({type(exc).__name__}: {exc})")
        with self._lock:
            if job.error is None:
                self._known[(job.host, job.port)] = job.addresses
            del self._pending[(job.host, job.port)]
        job.done.set()

    def _say_known_used(self, host: str, why: str) -> None:
        held = self._quiet.allow(host)
        if held is not None:
            more = f" ({held} more times since the last such line)" if held else ""
            log.warning("name lookup of %s %s: connecting to its last known address%s", host, why, more)


def _copy(error: OSError) -> OSError:
    """A fresh exception of the same kind, so that callers raising it do not share a traceback."""
    if isinstance(error, socket.gaierror):
        return socket.gaierror(*error.args)
    return OSError(*error.args)
