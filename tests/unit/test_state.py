"""Order state machine, SQLite state, instance lock, journal report (health: tests/unit/test_health.py)."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from decimal import Decimal as D
from pathlib import Path

import pytest

from orders import TERMINAL, TRANSITIONS, InvalidTransition, OrderRecord
from report import format_report, journal_report
from state import InstanceLock, SavedPosition, StateError, StateStore

STATUSES = sorted(TRANSITIONS)


def _record(**kw: object) -> OrderRecord:
    base = dict(cloid="0x" + "1" * 32, coin="BTC", side="buy", size=D("0.01"), limit_px=D("50000"),
                reduce_only=False, purpose="entry", created_ms=1)
    base.update(kw)
    return OrderRecord.new(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("src", STATUSES)
@pytest.mark.parametrize("dst", STATUSES)
def test_transition_table(src: str, dst: str) -> None:
    rec = OrderRecord(**{**_record().__dict__, "status": src})
    if dst == src or dst in TRANSITIONS[src]:
        assert rec.to(dst, 2).status == dst
    else:
        with pytest.raises(InvalidTransition):
            rec.to(dst, 2)


def test_terminal_statuses_never_change() -> None:
    for status in TERMINAL:
        assert TRANSITIONS[status] == frozenset()


def test_nothing_goes_back_to_reserved_or_pending() -> None:
    # "reserved" (cloid saved ahead of need) is only ever first; "pending" (saved, maybe sent) is
    # first, or what a reserved exit becomes when its result is unknown.
    assert [src for src, targets in TRANSITIONS.items() if "reserved" in targets] == []
    assert [src for src, targets in TRANSITIONS.items() if "pending" in targets] == ["reserved"]
    assert _record(status="reserved").to("filled", 2).status == "filled"  # an exit sent on its reserved cloid


@pytest.mark.parametrize("exchange,ours", [
    ("filled", "filled"), ("open", "resting"), ("canceled", "canceled"), ("marginCanceled", "canceled"),
    ("rejected", "rejected"), ("minTradeNtlRejected", "rejected"), ("unknownOid", "rejected"),
])
def test_resolved_by_exchange_status(exchange: str, ours: str) -> None:
    assert _record().resolved_by_status(exchange, 5).status == ours


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    s = StateStore(str(tmp_path / "state" / "bot.db"))
    s.open()
    yield s
    s.close()


def test_position_round_trip_survives_reopen(store: StateStore) -> None:
    pos = SavedPosition("BTC", "long", D("0.004"), D("50000.5"), D("50100"), 123, ("0x" + "a" * 32,))
    store.save_position(pos)
    store.close()
    store.open()
    assert store.load_position("BTC") == pos
    store.clear_position("BTC")
    assert store.load_position("BTC") is None


def test_a_position_per_coin(store: StateStore) -> None:
    btc = SavedPosition("BTC", "long", D("0.004"), D("50000"), None, 1)
    eth = SavedPosition("ETH", "short", D("0.02"), D("3000"), D("2990"), 2)
    store.save_position(btc)
    store.save_position(eth)
    assert store.load_positions() == {"BTC": btc, "ETH": eth}
    store.clear_position("BTC")
    assert store.load_positions() == {"ETH": eth}


# The orders and fills tables as schemas 1 to 3 had them (no expires_within_ms).
OLD_ORDERS_AND_FILLS = """
        CREATE TABLE orders (cloid TEXT PRIMARY KEY, coin TEXT NOT NULL, side TEXT NOT NULL, size TEXT NOT NULL,
            limit_px TEXT NOT NULL, reduce_only INTEGER NOT NULL, purpose TEXT NOT NULL, status TEXT NOT NULL,
            created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, oid INTEGER, filled_size TEXT NOT NULL,
            avg_px TEXT, reason TEXT);
        CREATE TABLE fills (tid TEXT PRIMARY KEY, coin TEXT NOT NULL, px TEXT NOT NULL, size TEXT NOT NULL,
            side TEXT NOT NULL, time_ms INTEGER NOT NULL, oid INTEGER, cloid TEXT, fee TEXT, closed_pnl TEXT,
            paper INTEGER NOT NULL);"""


def test_a_version_1_file_is_upgraded_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE position (id INTEGER PRIMARY KEY CHECK (id = 1), coin TEXT NOT NULL, side TEXT NOT NULL,
            size TEXT NOT NULL, entry_px TEXT NOT NULL, high_water TEXT, opened_ms INTEGER NOT NULL,
            protective_cloids TEXT NOT NULL DEFAULT '[]');
        """ + OLD_ORDERS_AND_FILLS + """
        CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO position VALUES (1, 'BTC', 'long', '0.004', '50000', '50100', 7, '["0xab"]');
        PRAGMA user_version = 1;""")
    db.close()
    store = StateStore(str(path))
    store.open()
    assert store.load_positions() == {"BTC": SavedPosition("BTC", "long", D("0.004"), D("50000"), D("50100"), 7,
                                                           ("0xab",))}
    store.close()


def test_a_version_3_file_is_upgraded_keeping_every_row(tmp_path: Path) -> None:
    # Schema 3 as it was (state.py before the upgrade to 4), one row in each table.
    path = tmp_path / "v3.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE positions (coin TEXT PRIMARY KEY, side TEXT NOT NULL, size TEXT NOT NULL,
            entry_px TEXT NOT NULL, high_water TEXT, opened_ms INTEGER NOT NULL,
            protective_cloids TEXT NOT NULL DEFAULT '[]');
        """ + OLD_ORDERS_AND_FILLS + """
        CREATE INDEX fills_time ON fills (time_ms);
        CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE funding (coin TEXT NOT NULL, time_ms INTEGER NOT NULL, usdc TEXT NOT NULL, szi TEXT NOT NULL,
            rate TEXT NOT NULL, PRIMARY KEY (coin, time_ms));
        INSERT INTO positions VALUES ('BTC', 'long', '0.004', '50000', '50100', 7, '["0xab"]');
        INSERT INTO orders VALUES ('0xa1', 'BTC', 'buy', '0.004', '50000', 0, 'entry', 'unknown', 10, 11, NULL,
            '0', NULL, 'result unknown');
        INSERT INTO orders VALUES ('0xa2', 'BTC', 'sell', '0.004', '0', 1, 'exit', 'reserved', 12, 12, NULL, '0',
            NULL, NULL);
        INSERT INTO orders VALUES ('0xa3', 'BTC', 'sell', '0.004', '49500', 1, 'sl', 'resting', 13, 14, 42, '0',
            NULL, NULL);
        INSERT INTO fills VALUES ('t1', 'BTC', '50000', '0.004', 'buy', 9, 41, '0xa0', '0.09', '0', 0);
        INSERT INTO kv VALUES ('account', '0xabc');
        INSERT INTO funding VALUES ('BTC', 20, '-0.01', '0.004', '0.0000125');
        PRAGMA user_version = 3;""")
    db.close()
    store = StateStore(str(path))
    store.open()
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == 4
        assert store.load_positions() == {"BTC": SavedPosition("BTC", "long", D("0.004"), D("50000"), D("50100"), 7,
                                                               ("0xab",))}
        old = store.orders()
        assert [(r.cloid, r.status, r.created_ms, r.reason) for r in old] == [
            ("0xa1", "unknown", 10, "result unknown"), ("0xa2", "reserved", 12, None), ("0xa3", "resting", 13, None)]
        assert store.order("0xa3").oid == 42
        # Not known how long after its sending these were signed to expire: NULL, never a guess.
        assert [r.expires_within_ms for r in old] == [None, None, None]
        assert all(r.expires_by_ms is None for r in old)
        assert [f["tid"] for f in store.fills()] == ["t1"] and store.fills()[0]["fee"] == D("0.09")
        assert store.get("account") == "0xabc"
        assert store.funding() == [{"coin": "BTC", "time_ms": 20, "usdc": D("-0.01"), "szi": D("0.004"),
                                    "rate": D("0.0000125")}]
        new = _record(cloid="0xb1", expires_within_ms=5000)
        store.save_order(new)
        assert store.order("0xb1") == new and store.order("0xb1").expires_by_ms == 1 + 5000
    finally:
        store.close()
    store.open()  # the upgraded file opens as schema 4, untouched
    try:
        assert len(store.orders()) == 4 and store.order("0xa1").expires_within_ms is None
    finally:
        store.close()


def test_orders_saved_and_filtered(store: StateStore) -> None:
    rec = _record()
    store.save_order(rec)
    store.save_order(_record(cloid="0x" + "2" * 32).filled_by_result(D("0.01"), D("50001"), 3))
    assert store.order(rec.cloid) == rec
    assert [r.cloid for r in store.orders(statuses=("pending",))] == [rec.cloid]
    assert store.orders(statuses=("filled",))[0].avg_px == D("50001")


def test_fills_deduplicated_by_tid(store: StateStore) -> None:
    args = dict(coin="BTC", px=D("50000"), size=D("0.01"), side="buy", time_ms=10, oid=1, cloid=None,
                fee=D("0.2"), closed_pnl=D("0"), paper=False)
    assert store.record_fill(tid="7", **args) is True
    assert store.record_fill(tid="7", **args) is False
    assert store.record_fill(tid="8", **{**args, "time_ms": 20}) is True
    assert len(store.fills()) == 2 and store.last_fill_time_ms() == 20


def test_corrupt_file_is_refused_not_reset(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StateError) as err:
        StateStore(str(path)).open()
    assert str(path) in str(err.value)
    assert path.read_bytes().startswith(b"this is not sqlite")


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(StateError) as err:
        StateStore(str(path)).open()
    assert "not an hlbot state file" in str(err.value)


def test_instance_lock_held_by_another_process(tmp_path: Path) -> None:
    path = str(tmp_path / "bot.db")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r); from state import InstanceLock; "
        "l = InstanceLock(%r); assert l.acquire(); print('held', flush=True); sys.stdin.read()")
        % (str(Path(__file__).resolve().parents[2]), path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = InstanceLock(path)
        assert lock.acquire() is False
        assert lock.holder_pid() == holder.pid
    finally:
        holder.kill()
        holder.wait()
    lock = InstanceLock(path)
    assert lock.acquire() is True  # the OS released it with the process
    lock.release()


def test_deleting_the_pid_file_does_not_let_a_second_instance_in(tmp_path: Path) -> None:
    path = str(tmp_path / "bot.db")
    first = InstanceLock(path)
    assert first.acquire()
    try:
        Path(path + ".lock").unlink()  # the side file: the lock is on the database itself
        assert InstanceLock(path).acquire() is False
    finally:
        first.release()


def test_a_state_file_belongs_to_one_account(store: StateStore) -> None:
    store.bind("0x" + "a" * 40, "testnet")
    store.bind("0x" + "A" * 40, "testnet")  # the same account, any case
    with pytest.raises(StateError, match="belongs to account 0xaaaa"):
        store.bind("0x" + "b" * 40, "testnet")
    with pytest.raises(StateError, match="on testnet"):
        store.bind("0x" + "a" * 40, "mainnet")


def test_journal_report_round_trips(store: StateStore) -> None:
    fills = [  # long 0.02 @100 -> close @110 (win); short 0.01 @110 -> close @120 (loss)
        ("1", "buy", "0.01", "100"), ("2", "buy", "0.01", "100"), ("3", "sell", "0.02", "110"),
        ("4", "sell", "0.01", "110"), ("5", "buy", "0.01", "120"),
    ]
    for i, (tid, side, size, px) in enumerate(fills):
        store.record_fill(tid=tid, coin="BTC", px=D(px), size=D(size), side=side, time_ms=1000 * (i + 1),
                          oid=None, cloid=None, fee=D("0.01"), closed_pnl=None, paper=True)
    assert journal_report(store).trades == ()  # paper fills are not in the real report
    report = journal_report(store, paper=True)
    assert [(t.side, t.size, t.pnl) for t in report.trades] == [("long", D("0.02"), D("0.20")),
                                                               ("short", D("0.01"), D("-0.10"))]
    assert report.fees == D("0.05") and report.net_pnl == D("0.05") and report.win_rate == 0.5
    text = format_report(report)
    assert "win rate: 50.0%" in text and "closed trades: 2" in text


def test_journal_report_keeps_coins_apart(store: StateStore) -> None:
    # Interleaved: BTC long 100 -> 110, ETH short 10 -> 9, ETH still open after a second entry.
    fills = [("1", "BTC", "buy", "1", "100"), ("2", "ETH", "sell", "1", "10"), ("3", "BTC", "sell", "1", "110"),
             ("4", "ETH", "buy", "1", "9"), ("5", "ETH", "buy", "2", "9")]
    for i, (tid, coin, side, size, px) in enumerate(fills):
        store.record_fill(tid=tid, coin=coin, px=D(px), size=D(size), side=side, time_ms=1000 * (i + 1),
                          oid=None, cloid=None, fee=D(0), closed_pnl=None, paper=False)
    report = journal_report(store)
    assert [(t.coin, t.side, t.pnl) for t in report.trades] == [("BTC", "long", D("10")), ("ETH", "short", D("1"))]
    assert report.open_sizes == {"ETH": D("2")}
    store.record_funding(coin="ETH", time_ms=9000, usdc=D("-0.25"), szi=D("2"), rate=D("0.0001"))
    report = journal_report(store)
    assert report.funding == {"ETH": D("-0.25")} and report.net_pnl == D("10.75")
    text = format_report(report)
    assert "BTC: 1 trades, net pnl 10.00" in text and "ETH: 1 trades, net pnl 0.75" in text
    assert "funding ETH: -0.2500" in text and "open position from fills: ETH 2" in text
    assert "outside the bot" in text  # fills of no order of the bot's
