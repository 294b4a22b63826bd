"""Recorded frames on disk (the `record.dir` format): their file names and reading them back.

Owns: the format of shared/INTERFACES.md, "Recorded frames": files `frames-YYYYMMDD-HH.jsonl.gz`
(UTC hour of receipt), one line per frame `{"t_ns": <receive time, ns since epoch>, "raw": "<the
frame's text exactly as received>"}`; `frame_line` (one line), `file_name` (the hour's file),
`is_frames_file` (detect the format), `read_frames` (every frame of some files, in time order).
A file may hold several gzip members (a restart within the hour appends one) and may end early
(the recorder was killed): what was written before the cut is read, the rest is warned about.
Must not: parse frames (stream_events.parse_frame does), write files (recorder.py does), or
trade.
"""
from __future__ import annotations

import heapq
import json
import logging
import time
import zlib
from json.decoder import scanstring
from pathlib import Path
from typing import Iterable, Iterator

log = logging.getLogger("backtest")

NS_PER_HOUR = 3_600_000_000_000
_GZIP_MAGIC = b"\x1f\x8b\x08"
_PREFIX = '{"t_ns": '
_RAW = '"raw": "'
_PIECE = 1 << 16  # compressed bytes fed to zlib at a time (a cut member loses at most this)


def frame_line(t_ns: int, raw: str) -> str:
    """One recorded frame as its line (newline included); the reader's fast path reads exactly this."""
    return f'{_PREFIX}{t_ns}, "raw": {json.dumps(raw)}}}\n'


def file_name(t_ns: int) -> str:
    """The file a frame received at `t_ns` goes to: its UTC hour."""
    return time.strftime("frames-%Y%m%d-%H.jsonl.gz", time.gmtime(t_ns // 1_000_000_000))


def parse_line(line: str) -> tuple[int, str] | None:
    """(t_ns, raw) of one line, or None when it is not a recorded frame."""
    if line.startswith(_PREFIX):  # the recorder's own layout: no dict built, the string decoded in C
        comma = line.find(",", 9)
        at = line.find(_RAW, comma)
        if comma > 0 and at > 0:
            try:
                return int(line[9:comma]), scanstring(line, at + len(_RAW))[0]
            except ValueError:
                pass
    try:
        row = json.loads(line)
        return int(row["t_ns"]), str(row["raw"])
    except (ValueError, KeyError, TypeError):
        return None


def is_frames_file(path: str | Path) -> bool:
    """Whether `path` holds recorded frames (gzip or plain), judged by its first line."""
    try:
        first = next(_lines(Path(path), quiet=True), None)
    except OSError:
        return False
    return first is not None and first.startswith("{") and parse_line(first) is not None


def read_frames(paths: Iterable[str | Path]) -> Iterator[tuple[int, str]]:
    """Every frame of the files as (t_ns, raw), in receive-time order across files (each file is
    in receive order already). Lines that are not frames are skipped and counted in a warning."""
    streams = [_frames(Path(p)) for p in paths]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams)  # (t_ns, raw) tuples: equal times fall back to the text, deterministic


def _frames(path: Path) -> Iterator[tuple[int, str]]:
    """(t_ns, raw) of every line of one file; the recorder's own layout is read inline (this is
    the backtest's hot loop), any other through `parse_line`."""
    bad = 0
    find, prefix, skip = str.find, _PREFIX, len(_RAW)
    for lines in _line_batches(path):
        for line in lines:
            if line.startswith(prefix):
                comma = find(line, ",", 9)
                at = find(line, _RAW, comma)
                if comma > 0 and at > 0:
                    try:
                        yield int(line[9:comma]), scanstring(line, at + skip)[0]
                        continue
                    except ValueError:
                        pass
            frame = parse_line(line) if line else None
            if frame is None:
                bad += line != ""
                continue
            yield frame
    if bad:
        log.warning("%s: %d line(s) that are not recorded frames skipped", path, bad)


def _lines(path: Path, quiet: bool = False) -> Iterator[str]:
    for lines in _line_batches(path, quiet):
        for line in lines:
            if line:
                yield line


def _line_batches(path: Path, quiet: bool = False) -> Iterator[list[str]]:
    """The file's lines, a decompressed piece at a time (blank ones included)."""
    with path.open("rb") as f:
        head = f.read(len(_GZIP_MAGIC))
        f.seek(0)
        if head != _GZIP_MAGIC:
            for raw_line in f:
                yield [raw_line.decode("utf-8", "replace").rstrip("\r\n")]
            return
        tail = ""
        for text in _gunzip(f, path, quiet):
            lines = (tail + text).split("\n")
            tail = lines.pop()
            yield lines
        if tail and not quiet:
            log.warning("%s ends in the middle of a line (the recorder was stopped abruptly); that line is "
                        "skipped", path)


def _gunzip(f, path: Path, quiet: bool) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The text of every gzip member of an open file. A member cut short (the recorder was killed)
    and followed by another (a restart in the same hour appended it) is read up to the cut."""
    inflate = zlib.decompressobj(31)
    pending = b""
    while True:
        data = pending or f.read(_PIECE)
        pending = b""
        if not data:
            break
        before = inflate.copy()
        try:
            out = inflate.decompress(data)
        except zlib.error:
            start = data.find(_GZIP_MAGIC, 1)
            if not quiet:
                log.warning("%s: a recording cut short (the recorder was stopped abruptly); reading on "
                            "from the next part", path)
            if start > 0:  # what precedes the next member is the cut one's end
                try:
                    yield before.decompress(data[:start]).decode("utf-8", "replace")
                except zlib.error:
                    pass
                pending = data[start:]
            inflate = zlib.decompressobj(31)
            yield "\n"  # a cut line never joins the next member's first line
            continue
        if out:
            yield out.decode("utf-8", "replace")
        if inflate.eof:
            pending = inflate.unused_data
            inflate = zlib.decompressobj(31)
