"""Recorded frames on disk: the line format, hourly files, reading back in time order (gzip members
cut by a kill included), and the recorder: owner-only files, a disk that fails, a writer that is
stuck (frames dropped and counted, `record()` never waits)."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import threading
import time
import zlib
from pathlib import Path

import pytest

from config_load import ConfigError, load_settings, settings_from_dict
from recorder import FrameRecorder, RecorderStats
from recording import file_name, frame_line, is_frames_file, parse_line, read_frames
from snapshot import stream_view
from harness.waiting import wait_until

T0 = 1_767_225_600_000_000_000  # 2026-01-01 00:00:00 UTC
HOUR = 3_600_000_000_000


@pytest.mark.parametrize("raw", ['{"channel":"pong"}', 'Websocket connection established.', 'quote " back \\ slash',
                                 'line\nbreak', 'ünïcödé €', ''])
def test_a_line_holds_the_frame_exactly(raw: str) -> None:
    line = frame_line(T0 + 5, raw)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line) == {"t_ns": T0 + 5, "raw": raw}
    assert parse_line(line.rstrip("\n")) == (T0 + 5, raw)


def test_other_layouts_of_the_same_line_are_read_too() -> None:
    assert parse_line(json.dumps({"raw": "x", "t_ns": 7})) == (7, "x")
    assert parse_line('{"coin":"BTC","px":"1","sz":"1","side":"A","time":1}') is None
    assert parse_line("not json") is None


def test_file_names_are_the_utc_hour() -> None:
    assert file_name(T0) == "frames-20260101-00.jsonl.gz"
    assert file_name(T0 + 13 * HOUR + 59 * 60 * 10**9) == "frames-20260101-13.jsonl.gz"


def _write_gz(path: Path, frames: list[tuple[int, str]]) -> Path:
    with gzip.open(path, "wt") as f:
        f.writelines(frame_line(t, raw) for t, raw in frames)
    return path


def test_several_files_are_read_in_time_order(tmp_path: Path) -> None:
    a = _write_gz(tmp_path / "a.jsonl.gz", [(T0 + 1, "a1"), (T0 + 5, "a5")])
    b = _write_gz(tmp_path / "b.jsonl.gz", [(T0 + 2, "b2"), (T0 + 9, "b9")])
    plain = tmp_path / "c.jsonl"
    plain.write_text(frame_line(T0 + 3, "c3"))
    assert [raw for _, raw in read_frames([b, plain, a])] == ["a1", "b2", "c3", "a5", "b9"]
    assert is_frames_file(a) and is_frames_file(plain)
    trades = tmp_path / "trades.jsonl"
    trades.write_text('{"coin":"BTC","px":"93972","sz":"0.001","side":"A","time":1735689601450}\n')
    assert not is_frames_file(trades)


def test_recorder_writes_hourly_owner_only_files(tmp_path: Path) -> None:
    rec = FrameRecorder(str(tmp_path / "rec"))
    rec.start()
    frames = [(T0 + i * 600 * 10**9, f'{{"i": {i}}}') for i in range(13)]  # every 10 minutes: 3 hours
    for t, raw in frames:
        rec.record(t, raw)
    rec.stop()
    names = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert names == ["frames-20260101-00.jsonl.gz", "frames-20260101-01.jsonl.gz", "frames-20260101-02.jsonl.gz"]
    assert os.stat(tmp_path / "rec").st_mode & 0o777 == 0o700
    assert all(os.stat(tmp_path / "rec" / n).st_mode & 0o777 == 0o600 for n in names)
    assert list(read_frames(sorted((tmp_path / "rec").iterdir()))) == frames
    assert rec.stats().written == 13 and rec.stats().dropped == rec.stats().failed == 0


def test_a_recording_killed_then_restarted_in_the_same_hour_reads_back(tmp_path: Path) -> None:
    """Killed: the last gzip member has no end. Restarted: a new member is appended after it."""
    first = FrameRecorder(str(tmp_path), flush_every_s=0.0)
    first.start()
    for i in range(300):
        first.record(T0 + i, f"a{i}")
    wait_until(lambda: first.stats().written == 300, 5)
    path = tmp_path / file_name(T0)
    cut = tmp_path / "cut"
    shutil.copy(path, cut)  # what a SIGKILL leaves: flushed, never finished
    first.stop()
    shutil.copy(cut, path)
    second = FrameRecorder(str(tmp_path))
    second.start()
    for i in range(200):
        second.record(T0 + 1000 + i, f"b{i}")
    second.stop()
    got = [raw for _, raw in read_frames([path])]
    assert got == [f"a{i}" for i in range(300)] + [f"b{i}" for i in range(200)]


def test_a_file_that_cannot_be_opened_is_logged_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the folder should be")
    rec = FrameRecorder(str(blocker / "rec"))
    rec.start()
    for i in range(10):
        rec.record(T0 + i, "x")
    rec.stop()
    assert rec.stats().failed == 10 and rec.stats().written == 0
    assert any("recorder: opening" in r.message and "trading goes on" in r.message for r in caplog.records)


class StuckDisk(FrameRecorder):
    """A recorder whose disk never answers: its writer blocks in the first write until released."""

    def __init__(self, directory: str, capacity: int) -> None:
        super().__init__(directory, capacity=capacity)
        self.release = threading.Event()

    def _write(self, batch: list[tuple[int, str]]) -> None:
        self.release.wait(30)
        super()._write(batch)


def test_a_stuck_writer_drops_and_counts_and_record_never_waits(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    rec = StuckDisk(str(tmp_path), capacity=1000)
    rec.start()
    started = time.perf_counter()
    for i in range(100_000):
        rec.record(T0 + i, "frame")
    took_s = time.perf_counter() - started
    stats = rec.stats()
    assert stats.queued == 1000 and stats.dropped == 99_000 and stats.written == 0
    assert took_s < 1.0  # 10 us a frame at the very most, stuck disk or not
    assert sum("the writer is behind" in r.message for r in caplog.records) == 1  # once a minute at most
    rec.release.set()
    rec.stop()
    assert rec.stats().written == 1000


def test_record_dir_setting(tmp_path: Path) -> None:
    assert settings_from_dict({}).record.dir is None
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"websocket": {"enabled": True}, "record": {"dir": "frames"}}))
    assert load_settings(cfg).record.dir == str(tmp_path / "frames")  # beside the config, like state.path
    with pytest.raises(ConfigError, match="record.dir needs websocket.enabled"):
        settings_from_dict({"record": {"dir": "frames"}})
    with pytest.raises(ConfigError, match="record.dirr is not a known setting"):
        settings_from_dict({"record": {"dirr": "frames"}})


def test_zlib_sync_flush_points_are_what_the_reader_relies_on() -> None:
    """The recorder writes only whole sync-flushed pieces: a reader stops cleanly at any of them."""
    deflate = zlib.compressobj(6, zlib.DEFLATED, 31)
    piece = deflate.compress(frame_line(T0, "x").encode()) + deflate.flush(zlib.Z_SYNC_FLUSH)
    assert zlib.decompressobj(31).decompress(piece) == frame_line(T0, "x").encode()


def test_health_shows_the_recorder_counts() -> None:
    view = stream_view(None, True, False, 0, 0, 0.0, RecorderStats(written=10, dropped=2, failed=1, queued=3))
    assert view["record"] == {"written": 10, "dropped": 2, "failed": 1, "queued": 3}
    assert "record" not in stream_view(None, True, False, 0, 0, 0.0)
