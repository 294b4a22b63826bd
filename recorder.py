"""Recording the stream: every raw frame the socket thread receives, written to hourly gzip files.

Owns: `FrameRecorder`, its bounded hand-over from the socket thread (`record(t_ns, raw)`: one
counter check and one `SimpleQueue.put`; when `capacity` frames wait, the frame is dropped and
counted, a warning at most once a minute) and its own writer thread: frames in the format of
recording.py, one file per UTC hour, created owner-only in `record.dir`, compressed as they come
and flushed (a gzip sync point) every `flush_every_s`, so a killed bot loses at most that much. A
file that cannot be opened or written is logged (once a minute) and tried again every
`RETRY_OPEN_S`; the frames meanwhile are counted as failed. `stats()` for /health.
Must not: block or slow the socket thread (no lock, no I/O, no logging on its path but a drop
warning a minute), raise into it, parse frames, or end the bot: the disk is never fatal.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from logsetup import RateLimitedLog
from recording import NS_PER_HOUR, file_name, frame_line

log = logging.getLogger("recorder")

RETRY_OPEN_S = 5.0      # a file that could not be opened or written is tried again this often
_BATCH = 4096           # frames the writer takes off the queue at once
_DROP_WARN_EVERY_S = 60.0
_STOP = object()


@dataclass(frozen=True)
class RecorderStats:
    written: int   # frames on disk (up to the last flush)
    dropped: int   # frames the full queue refused (the writer fell behind)
    failed: int    # frames the disk refused (a file not opened, a write that failed)
    queued: int    # frames waiting for the writer


class FrameRecorder:
    """Hand-over on the socket thread, writes on its own thread. Built with no I/O; `start()` starts
    the writer, `stop()` drains what is queued (within a deadline) and closes the file."""

    def __init__(self, directory: str, capacity: int = 50_000, flush_every_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self.capacity = capacity
        self.flush_every_s = flush_every_s
        self.clock = clock
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._put = self._queue.put
        self._accepted = 0   # written by the socket thread only
        self._taken = 0      # written by the writer thread only: accepted - taken is what waits
        self.dropped = 0
        self._last_drop_warn = -1e18
        self.written = 0
        self.failed = 0
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._path: Path | None = None
        self._hour = -1
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, 31)
        self._buffered: list[bytes] = []  # compressed, not yet written
        self._unflushed = 0                # frames in `_buffered` and in the compressor
        self._retry_at = 0.0
        self._quiet = RateLimitedLog(every_s=60.0, clock=clock)

    # ---- the socket thread -------------------------------------------------------------------

    def record(self, t_ns: int, raw: str) -> None:
        """Hand one frame over (socket thread). Never blocks; drops and counts when the writer is behind."""
        if self._accepted - self._taken >= self.capacity:
            self.dropped += 1
            now = self.clock()
            if now - self._last_drop_warn >= _DROP_WARN_EVERY_S:
                self._last_drop_warn = now
                log.warning("recorder: the writer is behind (%d frames queued); %d frame(s) dropped so far",
                            self.capacity, self.dropped)
            return
        self._accepted += 1
        self._put((t_ns, raw))

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hl-recorder", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Write what is queued, close the file; a writer stuck on the disk is left behind (daemon)."""
        if self._thread is None:
            return
        self._put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("recorder: the writer did not finish within %.1fs; %d frame(s) not written",
                        timeout_s, self._accepted - self._taken)

    def stats(self) -> RecorderStats:
        return RecorderStats(written=self.written, dropped=self.dropped, failed=self.failed,
                             queued=max(0, self._accepted - self._taken))

    # ---- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        next_flush = self.clock() + self.flush_every_s
        stopping = False
        while not stopping:
            batch: list[object] = []
            try:
                batch.append(get(timeout=self.flush_every_s))
                while len(batch) < _BATCH:
                    batch.append(get_nowait())
            except queue.Empty:
                pass
            if _STOP in batch:
                stopping = True
                batch = batch[:batch.index(_STOP)]
            try:
                self._write(batch)  # type: ignore[arg-type]
                now = self.clock()
                if now >= next_flush or stopping:
                    next_flush = now + self.flush_every_s
                    self._flush()
            except Exception as exc:  # noqa: BLE001 - a bug here must not end the recording
                self._failed_io("writing frames", exc)
            self._taken += len(batch)
        self._close()

    def _write(self, batch: list[tuple[int, str]]) -> None:
        start = 0
        while start < len(batch):
            hour = batch[start][0] // NS_PER_HOUR
            end = start
            while end < len(batch) and batch[end][0] // NS_PER_HOUR == hour:
                end += 1
            if hour != self._hour:
                self._close()
                self._hour = hour
                self._retry_at = 0.0
            if self._fd is None and self.clock() >= self._retry_at:
                self._open(batch[start][0])
            if self._fd is None:
                self.failed += end - start
            else:
                text = "".join(frame_line(t_ns, raw) for t_ns, raw in batch[start:end])
                self._buffered.append(self._deflate.compress(text.encode("utf-8")))
                self._unflushed += end - start
            start = end

    def _open(self, t_ns: int) -> None:
        path = self.directory / file_name(t_ns)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            self._retry_at = self.clock() + RETRY_OPEN_S
            self._failed_io(f"opening {path}", exc)
            return
        self._fd, self._path = fd, path
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, 31)  # a new gzip member (appended after a restart)
        log.info("recording frames to %s", path)

    def _flush(self, mode: int = zlib.Z_SYNC_FLUSH) -> None:
        """Everything compressed so far onto the disk, up to a point a reader can decode."""
        if self._fd is None:
            return
        data = b"".join(self._buffered) + self._deflate.flush(mode)
        self._buffered = []
        frames, self._unflushed = self._unflushed, 0
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            self.failed += frames
            self._failed_io(f"writing {self._path}", exc)
            self._drop_file()
            self._retry_at = self.clock() + RETRY_OPEN_S
            return
        self.written += frames

    def _close(self) -> None:
        if self._fd is not None:
            self._flush(zlib.Z_FINISH)
            self._drop_file()

    def _drop_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _failed_io(self, what: str, exc: BaseException) -> None:
        suppressed = self._quiet.allow(what.split(" ")[0])
        if suppressed is not None:
            log.error("recorder: %s failed (%s); frames are not recorded meanwhile, trading goes on%s", what, exc,
                      f" ({suppressed} more failures)" if suppressed else "")
