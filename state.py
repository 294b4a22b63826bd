"""Persistence: the instance lock, and SQLite state (position, orders, fill journal).

Owns: one SQLite file (WAL, schema versioned by `PRAGMA user_version`, one transaction per
change) and the OS file lock beside it that keeps a second bot off the same state. Must not: be
used from any thread but the main thread (the store holds one connection), or silently reset a
file it does not recognise: a corrupt or foreign database raises `StateError` naming the path.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sqlite3
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from orders import OrderRecord

SCHEMA_VERSION = 2
_POSITIONS = """
CREATE TABLE positions (
    coin TEXT PRIMARY KEY, side TEXT NOT NULL, size TEXT NOT NULL, entry_px TEXT NOT NULL,
    high_water TEXT, opened_ms INTEGER NOT NULL, protective_cloids TEXT NOT NULL DEFAULT '[]');"""
_SCHEMA = _POSITIONS + """
CREATE TABLE orders (
    cloid TEXT PRIMARY KEY, coin TEXT NOT NULL, side TEXT NOT NULL, size TEXT NOT NULL,
    limit_px TEXT NOT NULL, reduce_only INTEGER NOT NULL, purpose TEXT NOT NULL,
    status TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, oid INTEGER,
    filled_size TEXT NOT NULL, avg_px TEXT, reason TEXT);
CREATE TABLE fills (
    tid TEXT PRIMARY KEY, coin TEXT NOT NULL, px TEXT NOT NULL, size TEXT NOT NULL,
    side TEXT NOT NULL, time_ms INTEGER NOT NULL, oid INTEGER, cloid TEXT, fee TEXT,
    closed_pnl TEXT, paper INTEGER NOT NULL);
CREATE INDEX fills_time ON fills (time_ms);
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_TABLES = {"positions", "orders", "fills", "kv"}
# Version 1 held one position (one coin): it becomes that coin's row.
_MIGRATE_1_TO_2 = ("BEGIN;" + _POSITIONS + """
INSERT INTO positions SELECT coin, side, size, entry_px, high_water, opened_ms, protective_cloids FROM position;
DROP TABLE position; PRAGMA user_version=2; COMMIT;""")


class StateError(RuntimeError):
    """The state file cannot be used as it is; the message names the path and why."""


@dataclass(frozen=True)
class SavedPosition:
    coin: str
    side: Literal["long", "short"]
    size: Decimal
    entry_px: Decimal
    high_water: Decimal | None
    opened_ms: int
    protective_cloids: tuple[str, ...] = ()


class InstanceLock:
    """An exclusive flock on the state database file itself, so that deleting a side file cannot
    let a second bot in; the OS releases it when the process dies (kill -9 safe). The holder's pid
    is written beside it (`<db>.lock`) for the message only. SQLite's own locks are fcntl locks,
    independent of this flock."""

    def __init__(self, db_path: str) -> None:
        self.path = db_path
        self.pid_path = db_path + ".lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        try:
            Path(self.pid_path).write_text(str(os.getpid()))
        except OSError:
            pass  # only the message needs it; the lock holds without it
        return True

    def holder_pid(self) -> int | None:
        try:
            return int(Path(self.pid_path).read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _d(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class StateStore:
    """The bot's SQLite state. Main thread only."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the file and prove it writable: a state that cannot be written is
        refused at start (StateError naming the path), not found out at the first exit."""
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the folder of {self.path} ({exc.strerror or exc})") from exc
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path} is not a usable SQLite database ({exc}); move it aside "
                             "to start fresh, nothing was changed") from exc
        if not tables and version == 0:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript("BEGIN;" + _SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            except sqlite3.Error as exc:
                db.close()
                raise StateError(f"{self.path} is not writable ({exc}); nothing was changed") from exc
        elif version == 1 and "position" in tables:
            try:
                db.executescript(_MIGRATE_1_TO_2)
            except sqlite3.Error as exc:
                db.close()
                raise StateError(f"{self.path}: upgrading the state file failed ({exc}); nothing was changed") from exc
        elif version != SCHEMA_VERSION or not _TABLES <= tables:
            db.close()
            raise StateError(f"{self.path} is not an hlbot state file of schema {SCHEMA_VERSION} "
                             f"(found version {version}, tables {sorted(tables)}); nothing was changed")
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("INSERT OR REPLACE INTO kv VALUES ('opened_pid', ?)", (str(os.getpid()),))
        except sqlite3.Error as exc:
            db.close()
            raise StateError(f"{self.path} is not writable ({exc}); nothing was changed") from exc
        self._db = db

    def bind(self, account: str, network: str) -> None:
        """Mark the file as this account's on this network, or refuse it if it is another's: one
        state file, one account (a second bot on another key must not resume its position)."""
        saved = (self.get("account"), self.get("network"))
        if saved == (None, None):
            self.set("account", account)
            self.set("network", network)
            return
        if (saved[0] or "").lower() != account.lower() or saved[1] != network:
            raise StateError(f"{self.path} belongs to account {saved[0]} on {saved[1]}, not to account {account} "
                             f"on {network}; use another state.path for this account")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StateError(f"{self.path} is not open")
        return self._db

    # ---- position ----------------------------------------------------------------------------

    def save_position(self, pos: SavedPosition) -> None:
        # isolation_level=None: each statement is its own transaction (autocommit).
        self.db.execute(
            "INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (pos.coin, pos.side, str(pos.size), str(pos.entry_px), _s(pos.high_water),
             pos.opened_ms, json.dumps(list(pos.protective_cloids))))

    def load_position(self, coin: str) -> SavedPosition | None:
        return self.load_positions().get(coin)

    def load_positions(self) -> dict[str, SavedPosition]:
        rows = self.db.execute("SELECT coin, side, size, entry_px, high_water, opened_ms, protective_cloids "
                               "FROM positions").fetchall()
        return {row[0]: SavedPosition(coin=row[0], side=row[1], size=Decimal(row[2]), entry_px=Decimal(row[3]),
                                      high_water=_d(row[4]), opened_ms=row[5],
                                      protective_cloids=tuple(json.loads(row[6]))) for row in rows}

    def clear_position(self, coin: str) -> None:
        self.db.execute("DELETE FROM positions WHERE coin = ?", (coin,))

    # ---- orders ------------------------------------------------------------------------------

    def save_order(self, r: OrderRecord) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.cloid, r.coin, r.side, str(r.size), str(r.limit_px), int(r.reduce_only), r.purpose,
             r.status, r.created_ms, r.updated_ms, r.oid, str(r.filled_size), _s(r.avg_px), r.reason))

    def _order(self, row: tuple) -> OrderRecord:
        return OrderRecord(cloid=row[0], coin=row[1], side=row[2], size=Decimal(row[3]),
                           limit_px=Decimal(row[4]), reduce_only=bool(row[5]), purpose=row[6],
                           status=row[7], created_ms=row[8], updated_ms=row[9], oid=row[10],
                           filled_size=Decimal(row[11]), avg_px=_d(row[12]), reason=row[13])

    def order(self, cloid: str) -> OrderRecord | None:
        row = self.db.execute("SELECT * FROM orders WHERE cloid = ?", (cloid,)).fetchone()
        return None if row is None else self._order(row)

    def orders(self, statuses: Iterable[str] | None = None) -> list[OrderRecord]:
        if statuses is None:
            rows = self.db.execute("SELECT * FROM orders ORDER BY created_ms").fetchall()
        else:
            wanted = tuple(statuses)
            marks = ",".join("?" * len(wanted))
            rows = self.db.execute(f"SELECT * FROM orders WHERE status IN ({marks}) ORDER BY created_ms",
                                   wanted).fetchall()
        return [self._order(row) for row in rows]

    # ---- fills -------------------------------------------------------------------------------

    def record_fill(self, *, tid: str, coin: str, px: Decimal, size: Decimal, side: str, time_ms: int,
                    oid: int | None, cloid: str | None, fee: Decimal | None, closed_pnl: Decimal | None,
                    paper: bool) -> bool:
        """Journal a fill once: False when this tid is already there (stream and REST overlap)."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO fills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (str(tid), coin, str(px), str(size), side, time_ms, oid, cloid, _s(fee), _s(closed_pnl), int(paper)))
        return cur.rowcount == 1

    def fills(self) -> list[dict[str, object]]:
        rows = self.db.execute("SELECT tid, coin, px, size, side, time_ms, oid, cloid, fee, closed_pnl, paper "
                               "FROM fills ORDER BY time_ms, rowid").fetchall()
        keys = ("tid", "coin", "px", "size", "side", "time_ms", "oid", "cloid", "fee", "closed_pnl", "paper")
        out = []
        for row in rows:
            item = dict(zip(keys, row))
            for k in ("px", "size", "fee", "closed_pnl"):
                item[k] = _d(item[k])  # type: ignore[arg-type]
            item["paper"] = bool(item["paper"])
            out.append(item)
        return out

    def last_fill_time_ms(self) -> int | None:
        return self.db.execute("SELECT MAX(time_ms) FROM fills WHERE paper = 0").fetchone()[0]

    # ---- small values ------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))


# ---- the journal report ----------------------------------------------------------------------

@dataclass(frozen=True)
class RoundTrip:
    coin: str
    side: Literal["long", "short"]
    size: Decimal
    entry_px: Decimal
    exit_px: Decimal
    pnl: Decimal
    fees: Decimal
    opened_ms: int
    closed_ms: int


@dataclass(frozen=True)
class Report:
    trades: tuple[RoundTrip, ...]   # every coin's, in the order they closed
    fills: int
    fees: Decimal
    open_sizes: Mapping[str, Decimal]  # signed size still open per coin (coins with none left out)

    @property
    def gross_pnl(self) -> Decimal:
        return sum((t.pnl for t in self.trades), Decimal(0))

    @property
    def net_pnl(self) -> Decimal:
        return self.gross_pnl - self.fees

    @property
    def win_rate(self) -> float | None:
        if not self.trades:
            return None
        return sum(1 for t in self.trades if t.pnl - t.fees > 0) / len(self.trades)


def journal_report(store: StateStore) -> Report:
    """Round trips rebuilt from the fill journal, coin by coin: a trade opens from flat and closes
    back to flat."""
    fills = store.fills()
    by_coin: dict[str, list[dict[str, Any]]] = {}
    for f in fills:
        by_coin.setdefault(str(f["coin"]), []).append(f)
    trades: list[RoundTrip] = []
    open_sizes: dict[str, Decimal] = {}
    for coin, coin_fills in by_coin.items():
        coin_trades, open_size = _round_trips(coin_fills)
        trades += coin_trades
        if open_size:
            open_sizes[coin] = open_size
    total_fees = sum((f["fee"] or Decimal(0) for f in fills), Decimal(0))
    return Report(trades=tuple(sorted(trades, key=lambda t: t.closed_ms)), fills=len(fills), fees=total_fees,
                  open_sizes=open_sizes)


def _round_trips(fills: list[dict[str, Any]]) -> tuple[list[RoundTrip], Decimal]:
    """One coin's fills, in time order -> its closed round trips and the signed size still open."""
    trades: list[RoundTrip] = []
    position = Decimal(0)
    cost = Decimal(0)      # signed size * price of the open part
    pnl = fees = exit_value = exit_size = Decimal(0)
    opened_ms = 0
    for f in fills:
        size = f["size"] if f["side"] == "buy" else -f["size"]
        px, fee = f["px"], f["fee"] or Decimal(0)
        if position == 0:
            opened_ms, cost, pnl, fees, exit_value, exit_size = f["time_ms"], Decimal(0), Decimal(0), Decimal(0), Decimal(0), Decimal(0)
        fees += fee
        if position == 0 or (position > 0) == (size > 0):
            position += size
            cost += size * px
            continue
        closing = min(abs(size), abs(position))
        avg = cost / position
        sign = 1 if position > 0 else -1
        pnl += (px - avg) * closing * sign
        exit_value += px * closing
        exit_size += closing
        position += sign * -closing
        cost = avg * position
        if position == 0:
            trades.append(RoundTrip(coin=f["coin"], side="long" if sign > 0 else "short", size=exit_size,
                                    entry_px=avg, exit_px=exit_value / exit_size, pnl=pnl, fees=fees,
                                    opened_ms=opened_ms, closed_ms=f["time_ms"]))
            rest = abs(size) - closing
            if rest > 0:  # the fill flipped the position: the remainder opens a new trade
                position = rest if size > 0 else -rest
                cost = position * px
                opened_ms, pnl, fees, exit_value, exit_size = f["time_ms"], Decimal(0), Decimal(0), Decimal(0), Decimal(0)
    return trades, position


def format_report(report: Report) -> str:
    """The journal as a person reads it: one row per closed trade, then totals and a row per coin."""
    lines = [f"fills journaled: {report.fills}    closed trades: {len(report.trades)}"]
    if report.trades:
        lines.append(f"{'closed (UTC)':<20} {'coin':<8} {'side':<6} {'size':>10} {'entry':>12} {'exit':>12} "
                     f"{'pnl':>10} {'fees':>8}")
        for t in report.trades:
            when = dt.datetime.fromtimestamp(t.closed_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(f"{when:<20} {t.coin:<8} {t.side:<6} {t.size:>10} {t.entry_px:>12.2f} {t.exit_px:>12.2f} "
                         f"{t.pnl:>10.2f} {t.fees:>8.4f}")
        rate = report.win_rate
        lines.append(f"win rate: {rate * 100:.1f}%" if rate is not None else "win rate: n/a")
        coins = sorted({t.coin for t in report.trades})
        if len(coins) > 1:
            for coin in coins:
                mine = [t for t in report.trades if t.coin == coin]
                net = sum((t.pnl - t.fees for t in mine), Decimal(0))
                lines.append(f"  {coin}: {len(mine)} trades, net pnl {net:.2f}")
    lines.append(f"gross pnl: {report.gross_pnl:.2f}  fees: {report.fees:.4f}  net pnl: {report.net_pnl:.2f}")
    for coin, size in sorted(report.open_sizes.items()):
        lines.append(f"open position from fills: {coin} {size}")
    return "\n".join(lines)
