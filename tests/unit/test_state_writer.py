"""The loop's writes when the disk refuses them: nothing raises, the failure is reported and logged
once, the latest versions are kept and written when the disk is back, and reads see them.

The failure is real SQLite refusing writes (`PRAGMA query_only`, as on a read-only mount)."""
from __future__ import annotations

import logging
from decimal import Decimal as D
from pathlib import Path

import pytest

from orders import OrderRecord
from state import SavedPosition, StateStore
from state_writer import StateWriter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    s = StateStore(str(tmp_path / "bot.db"))
    s.open()
    yield s
    s.close()


def refuse_writes(store: StateStore, refuse: bool) -> None:
    store.db.execute(f"PRAGMA query_only = {1 if refuse else 0}")


def position(size: str = "0.004", high_water: str | None = None) -> SavedPosition:
    return SavedPosition(coin="BTC", side="long", size=D(size), entry_px=D("50000"),
                         high_water=None if high_water is None else D(high_water), opened_ms=1)


def record(cloid: str = "0x" + "a" * 32) -> OrderRecord:
    return OrderRecord.new(cloid=cloid, coin="BTC", side="sell", size=D("0.004"), limit_px=D("49000"),
                           reduce_only=True, purpose="exit", created_ms=1)


def fill(tid: str) -> dict:
    return dict(tid=tid, coin="BTC", px=D("50000"), size=D("0.001"), side="buy", time_ms=5, oid=1,
                cloid=None, fee=D("0.02"), closed_pnl=None, paper=False)


def test_writes_work_and_report_writable(store: StateStore) -> None:
    w = StateWriter(store)
    assert w.save_position(position()) and w.save_order(record())
    assert w.record_fill(**fill("1")) is True and w.record_fill(**fill("1")) is False
    assert w.writable and w.pending == 0 and store.load_position("BTC") == position()


def test_refused_writes_are_kept_reported_logged_once_and_written_later(
        store: StateStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="state")
    clock = Clock()
    w = StateWriter(store, clock=clock)
    refuse_writes(store, True)
    assert w.save_position(position(high_water="50100")) is False
    assert w.save_position(position(high_water="50200")) is False  # the latest version wins
    assert w.save_order(record()) is False
    assert w.record_fill(**fill("7")) is None
    assert not w.writable and "readonly" in (w.error or "") and w.pending == 3
    assert len([r for r in caplog.records if "not writable" in r.message]) == 1  # once, not per write
    assert w.order(record().cloid) == record()  # reads see the unwritten record
    w.retry()
    assert w.pending == 3
    refuse_writes(store, False)
    w.retry()
    assert w.writable and w.pending == 0 and w.error is None
    assert store.load_position("BTC") == position(high_water="50200")
    assert store.order(record().cloid) == record()
    assert [f["tid"] for f in store.fills()] == ["7"]


def test_a_cleared_position_stays_cleared_after_the_retry(store: StateStore) -> None:
    w = StateWriter(store)
    w.save_position(position())
    refuse_writes(store, True)
    assert w.clear_position("BTC") is False
    refuse_writes(store, False)
    w.retry()
    assert store.load_position("BTC") is None


def test_orders_listing_merges_unwritten_records(store: StateStore) -> None:
    w = StateWriter(store)
    saved = record("0x" + "b" * 32)
    w.save_order(saved)
    refuse_writes(store, True)
    w.save_order(saved.to("unknown", 2))
    w.save_order(record("0x" + "c" * 32))
    assert {r.cloid: r.status for r in w.orders(("pending", "unknown"))} == {
        saved.cloid: "unknown", "0x" + "c" * 32: "pending"}
    assert [r.cloid for r in w.orders(("pending",))] == ["0x" + "c" * 32]


def test_an_unwritable_file_is_refused_at_open(tmp_path: Path) -> None:
    from state import StateError
    path = tmp_path / "bot.db"
    s = StateStore(str(path))
    s.open()
    s.close()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="file/bot.db"):
        StateStore(str(blocker / "bot.db")).open()  # its folder is a file


def test_a_failed_read_is_none_and_a_probe_write_clears_the_alarm(store: StateStore) -> None:
    w = StateWriter(store)
    store.close()  # every access now fails
    assert w.order("0x" + "d" * 32) is None and not w.writable
    w.retry()
    assert not w.writable
    store.open()
    w.retry()  # nothing owed: a probe write proves the store is back
    assert w.writable and w.error is None
