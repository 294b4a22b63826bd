"""Persistence: the instance lock, and SQLite state (position, orders, fill journal).

Owns: one SQLite file (WAL, schema versioned by `PRAGMA user_version`, one transaction per
change) and the OS file lock beside it that keeps a second bot off the same state. Must not: be
used from any thread but the main thread (the store holds one connection), or silently reset a
file it does not recognise: a corrupt or foreign database raises `StateError` naming the path.
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from orders import OrderRecord

SCHEMA_VERSION = 4
_FUNDING = """
CREATE TABLE funding (
    coin TEXT NOT NULL, time_ms INTEGER NOT NULL, usdc TEXT NOT NULL, szi TEXT NOT NULL, rate TEXT NOT NULL,
    PRIMARY KEY (coin, time_ms));"""
_POSITIONS = """
CREATE TABLE positions (
    coin TEXT PRIMARY KEY, side TEXT NOT NULL, size TEXT NOT NULL, entry_px TEXT NOT NULL,
    high_water TEXT, opened_ms INTEGER NOT NULL, protective_cloids TEXT NOT NULL DEFAULT '[]');"""
_SCHEMA = _POSITIONS + """
CREATE TABLE orders (
    cloid TEXT PRIMARY KEY, coin TEXT NOT NULL, side TEXT NOT NULL, size TEXT NOT NULL,
    limit_px TEXT NOT NULL, reduce_only INTEGER NOT NULL, purpose TEXT NOT NULL,
    status TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, oid INTEGER,
    filled_size TEXT NOT NULL, avg_px TEXT, reason TEXT, expires_within_ms INTEGER);
CREATE TABLE fills (
    tid TEXT PRIMARY KEY, coin TEXT NOT NULL, px TEXT NOT NULL, size TEXT NOT NULL,
    side TEXT NOT NULL, time_ms INTEGER NOT NULL, oid INTEGER, cloid TEXT, fee TEXT,
    closed_pnl TEXT, paper INTEGER NOT NULL);
CREATE INDEX fills_time ON fills (time_ms);
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
""" + _FUNDING
_TABLES = {"positions", "orders", "fills", "kv", "funding"}
# Version 1 held one position (one coin): it becomes that coin's row.
_MIGRATE_1_TO_2 = ("BEGIN;" + _POSITIONS + """
INSERT INTO positions SELECT coin, side, size, entry_px, high_water, opened_ms, protective_cloids FROM position;
DROP TABLE position; PRAGMA user_version=2; COMMIT;""")
# Version 2 had no funding journal.
_MIGRATE_2_TO_3 = "BEGIN;" + _FUNDING + " PRAGMA user_version=3; COMMIT;"
# Version 3 did not keep how long after its sending an order's signed expiry can be. Its rows get
# NULL: not known, so a restart waits as long as the config has ever allowed before it believes
# that an order the exchange does not know will never execute (execution.py `resolve_at_start`).
_MIGRATE_3_TO_4 = "BEGIN; ALTER TABLE orders ADD COLUMN expires_within_ms INTEGER; PRAGMA user_version=4; COMMIT;"
_MIGRATIONS = {1: _MIGRATE_1_TO_2, 2: _MIGRATE_2_TO_3, 3: _MIGRATE_3_TO_4}


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
        elif version in _MIGRATIONS and {"orders", "fills", "kv"} <= tables:
            try:
                for step in range(version, SCHEMA_VERSION):
                    db.executescript(_MIGRATIONS[step])
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
            "INSERT OR REPLACE INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.cloid, r.coin, r.side, str(r.size), str(r.limit_px), int(r.reduce_only), r.purpose,
             r.status, r.created_ms, r.updated_ms, r.oid, str(r.filled_size), _s(r.avg_px), r.reason,
             r.expires_within_ms))

    def _order(self, row: tuple) -> OrderRecord:
        return OrderRecord(cloid=row[0], coin=row[1], side=row[2], size=Decimal(row[3]),
                           limit_px=Decimal(row[4]), reduce_only=bool(row[5]), purpose=row[6],
                           status=row[7], created_ms=row[8], updated_ms=row[9], oid=row[10],
                           filled_size=Decimal(row[11]), avg_px=_d(row[12]), reason=row[13],
                           expires_within_ms=row[14])

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

    def record_funding(self, *, coin: str, time_ms: int, usdc: Decimal, szi: Decimal, rate: Decimal) -> bool:
        """Journal a funding payment once (by coin and time: the stream and REST overlap)."""
        cur = self.db.execute("INSERT OR IGNORE INTO funding VALUES (?, ?, ?, ?, ?)",
                              (coin, time_ms, str(usdc), str(szi), str(rate)))
        return cur.rowcount == 1

    def funding(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT coin, time_ms, usdc, szi, rate FROM funding ORDER BY time_ms").fetchall()
        return [{"coin": r[0], "time_ms": r[1], "usdc": Decimal(r[2]), "szi": Decimal(r[3]), "rate": Decimal(r[4])}
                for r in rows]

    def last_funding_time_ms(self) -> int | None:
        return self.db.execute("SELECT MAX(time_ms) FROM funding").fetchone()[0]

    def last_fill_time_ms(self) -> int | None:
        return self.db.execute("SELECT MAX(time_ms) FROM fills WHERE paper = 0").fetchone()[0]

    # ---- small values ------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))
