"""The server's history and decision log in a real database: SQLite (WAL) or PostgreSQL.

Both stores speak the same interface and run the same versioned migrations
(plain SQL, one list per dialect). A transaction that records messages or
events is committed — and on SQLite synced to disk — before the caller answers.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import orjson


class StoreError(RuntimeError):
    """The database failed (not the caller's fault): answered as 503."""


class DuplicateMessage(Exception):
    """A message_id that is already in the history."""

    def __init__(self, message_ids: Sequence[str]):
        super().__init__(", ".join(message_ids))
        self.message_ids = list(message_ids)


@dataclass(frozen=True)
class StoredRecord:
    seq: int
    kind: str          # "message" | "event"
    data: dict         # the record as JSON


@dataclass(frozen=True)
class Decision:
    request_id: str
    index: int
    decided_at: str
    message_id: str
    order_id: str
    buyer_id: str
    outcome: str
    committed: bool
    on: Optional[str]
    alt: list
    engine_version: str
    policy_hashes: dict
    record: dict
    history: list      # [{"kind": ..., "record": ...}] the stored and in-request records it saw
    verdict: dict

    def as_json(self) -> dict:
        return {"request_id": self.request_id, "index": self.index, "decided_at": self.decided_at,
                "message_id": self.message_id, "order_id": self.order_id, "buyer_id": self.buyer_id,
                "outcome": self.outcome, "committed": self.committed, "on": self.on, "alt": self.alt,
                "engine_version": self.engine_version, "policy_hashes": self.policy_hashes,
                "record": self.record, "history": self.history, "verdict": self.verdict}

    @classmethod
    def from_json(cls, d: dict) -> "Decision":
        return cls(d["request_id"], int(d["index"]), d["decided_at"], d["message_id"], d["order_id"],
                   d["buyer_id"], d["outcome"], bool(d["committed"]), d.get("on"), list(d.get("alt") or []),
                   d.get("engine_version", ""), dict(d.get("policy_hashes") or {}), d["record"],
                   list(d.get("history") or []), d["verdict"])


# ---- migrations ---------------------------------------------------------------
# Append only: a released version's statements never change.

_V1 = """
CREATE TABLE records (
    seq {serial},
    kind TEXT NOT NULL CHECK (kind IN ('message', 'event')),
    message_id TEXT UNIQUE,
    order_id TEXT,
    buyer_id TEXT NOT NULL,
    record TEXT NOT NULL,
    request_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX records_buyer ON records (buyer_id);
CREATE INDEX records_order ON records (order_id);
CREATE TABLE decisions (
    id {serial},
    request_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    decided_at TEXT NOT NULL,
    message_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    buyer_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    committed INTEGER NOT NULL,
    on_when TEXT,
    alt TEXT NOT NULL,
    engine_version TEXT NOT NULL,
    policy_hashes TEXT NOT NULL,
    record TEXT NOT NULL,
    history TEXT NOT NULL,
    verdict TEXT NOT NULL
);
CREATE INDEX decisions_order ON decisions (order_id, decided_at);
CREATE INDEX decisions_time ON decisions (decided_at)
"""

# The decision log's JSON columns are written once and read rarely: PostgreSQL's inline compression
# of them (pglz, in the server process) cost half of a batch commit's insert time. SQLite has no such step.
_V2 = {"postgresql": """
ALTER TABLE decisions ALTER COLUMN record SET STORAGE EXTERNAL;
ALTER TABLE decisions ALTER COLUMN history SET STORAGE EXTERNAL;
ALTER TABLE decisions ALTER COLUMN verdict SET STORAGE EXTERNAL
"""}

MIGRATIONS: list[tuple[int, Union[str, dict]]] = [(1, _V1), (2, _V2)]
LATEST = max(v for v, _ in MIGRATIONS)

_SERIAL = {"sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT", "postgresql": "BIGSERIAL PRIMARY KEY"}


def _statements(dialect: str, sql: Union[str, dict]) -> list[str]:
    """A migration's statements for one dialect (a dict: per dialect, none when it has no entry)."""
    if isinstance(sql, dict):
        sql = sql.get(dialect, "")
    return [s.strip() for s in sql.format(serial=_SERIAL[dialect]).split(";") if s.strip()]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


_DECISION_COLUMNS = ("request_id, idx, decided_at, message_id, order_id, buyer_id, outcome, committed, on_when, "
                     "alt, engine_version, policy_hashes, record, history, verdict")


def _decision_row(d: Decision) -> tuple:
    return (d.request_id, d.index, d.decided_at, d.message_id, d.order_id, d.buyer_id, d.outcome,
            int(d.committed), d.on, orjson.dumps(d.alt).decode(), d.engine_version,
            orjson.dumps(d.policy_hashes).decode(), orjson.dumps(d.record).decode(),
            orjson.dumps(d.history).decode(), orjson.dumps(d.verdict).decode())


def _decision_from_row(row) -> Decision:
    (request_id, idx, decided_at, message_id, order_id, buyer_id, outcome, committed, on, alt, engine_version,
     hashes, record, history, verdict) = row
    return Decision(request_id, idx, decided_at, message_id, order_id, buyer_id, outcome, bool(committed), on,
                    orjson.loads(alt), engine_version, orjson.loads(hashes), orjson.loads(record),
                    orjson.loads(history), orjson.loads(verdict))


class Transaction:
    """One database transaction; the store's methods run inside it."""

    def __init__(self, store: "Store", conn):
        self.store, self.conn = store, conn

    def _q(self, sql: str) -> str:
        return sql if self.store.dialect == "sqlite" else sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence = ()):
        return self.conn.execute(self._q(sql), params)

    def lock(self, keys: Iterable[str]) -> None:
        """Serialize writers that touch the same buyers/orders (PostgreSQL; SQLite has one writer)."""
        if self.store.dialect == "postgresql":
            keys = sorted(set(keys))  # taken in a fixed order: no deadlock between two writers
            if keys:
                self.execute("SELECT pg_advisory_xact_lock(hashtext(k)) FROM unnest(?::text[]) AS k ORDER BY k",
                             (keys,)).fetchall()

    def history(self, buyers: Iterable[str], orders: Iterable[str], message_ids: Iterable[str]) -> list[StoredRecord]:
        """Every stored record that can bear on messages of these buyers/orders or answering these ids."""
        buyers, orders, ids = sorted(set(buyers)), sorted(set(orders)), sorted(set(message_ids))
        clauses, params = [], []
        for column, values in (("buyer_id", buyers), ("order_id", orders), ("message_id", ids)):
            if values:
                clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        if not clauses:
            return []
        rows = self.execute(f"SELECT seq, kind, record FROM records WHERE {' OR '.join(clauses)} ORDER BY seq",
                            params).fetchall()
        return [StoredRecord(seq, kind, orjson.loads(record)) for seq, kind, record in rows]

    def existing(self, message_ids: Sequence[str]) -> list[str]:
        found: list[str] = []
        ids = sorted(set(message_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            rows = self.execute(f"SELECT message_id FROM records WHERE message_id IN ({', '.join('?' * len(chunk))})",
                                chunk).fetchall()
            found.extend(r[0] for r in rows)
        return sorted(found)

    def add_records(self, rows: Sequence[tuple[str, Optional[str], Optional[str], str, dict]], request_id: str) -> None:
        """rows: (kind, message_id, order_id, buyer_id, record)."""
        now = _now()
        data = [(kind, mid, oid, bid, orjson.dumps(rec).decode(), request_id, now) for kind, mid, oid, bid, rec in rows]
        try:
            self._many("records", "kind, message_id, order_id, buyer_id, record, request_id, recorded_at", data)
        except self.store.integrity_errors as exc:
            raise DuplicateMessage([r[1] for r in rows if r[1]]) from exc

    def add_decisions(self, decisions: Sequence[Decision]) -> None:
        self._many("decisions", _DECISION_COLUMNS, [_decision_row(d) for d in decisions])

    def _many(self, table: str, columns: str, rows: list) -> None:
        if not rows:
            return
        if self.store.dialect == "sqlite":
            marks = ", ".join("?" * (columns.count(",") + 1))
            self.conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
        else:
            # COPY: one stream for the whole batch; executemany cost a round trip's worth of work per row.
            # Rows keep their order, so seq/id still follow the batch; a duplicate message_id still
            # raises UniqueViolation.
            with self.conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    def decisions(self, order_id: Optional[str] = None, since: Optional[str] = None, limit: int = 1000,
                  after_id: int = 0) -> list[tuple[int, Decision]]:
        where, params = ["id > ?"], [after_id]
        if order_id is not None:
            where.append("order_id = ?")
            params.append(order_id)
        if since is not None:
            where.append("decided_at >= ?")
            params.append(since)
        params.append(limit)
        rows = self.execute(f"SELECT id, {_DECISION_COLUMNS} FROM decisions WHERE {' AND '.join(where)} "
                            f"ORDER BY id LIMIT ?", params).fetchall()
        return [(row[0], _decision_from_row(row[1:])) for row in rows]

    def counts(self) -> dict:
        messages = self.execute("SELECT COUNT(*) FROM records WHERE kind = 'message'").fetchone()[0]
        events = self.execute("SELECT COUNT(*) FROM records WHERE kind = 'event'").fetchone()[0]
        decisions = self.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
        return {"messages": messages, "events": events, "decisions": decisions}


class Store:
    dialect = ""
    integrity_errors: tuple = ()

    def __init__(self, url: str):
        self.url = url

    def transaction(self, write: bool = False, durable: bool = True) -> contextlib.AbstractContextManager[Transaction]:
        """`durable=False`: the commit may return before it reaches the disk (the decision log of
        checks without commit); a later durable commit syncs it too."""
        raise NotImplementedError

    def schema_version(self) -> int:
        with self.transaction() as tx:
            try:
                row = tx.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            except self.operational_errors:
                return 0
            return row[0] or 0

    def migrate(self) -> int:
        """Apply the migrations not yet applied; returns the schema version."""
        with self.transaction(write=True) as tx:
            if self.dialect == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(7461001)")  # several servers may start at once
            tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            done = {r[0] for r in tx.execute("SELECT version FROM schema_migrations").fetchall()}
            for version, sql in MIGRATIONS:
                if version in done:
                    continue
                for statement in _statements(self.dialect, sql):
                    tx.execute(statement)
                tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (version, _now()))
        return max(v for v, _ in MIGRATIONS)

    def ping(self) -> None:
        with self.transaction() as tx:
            tx.execute("SELECT 1").fetchone()

    def close(self) -> None:
        pass


class SQLiteStore(Store):
    """One file, WAL journal, synchronous=FULL: a committed transaction survives a crash of the process or OS."""

    dialect = "sqlite"
    integrity_errors = (sqlite3.IntegrityError,)
    operational_errors = (sqlite3.OperationalError,)

    def __init__(self, path: str):
        super().__init__(path)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._write_lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: transactions are begun explicitly below.
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self, write: bool = False, durable: bool = True) -> Iterator[Transaction]:
        # One writer at a time in this process: threads queue on a lock instead of in
        # SQLite's busy handler, which sleeps in steps of up to 100 ms.
        if write:
            with self._write_lock:
                with self._transaction(True, durable) as tx:
                    yield tx
        else:
            with self._transaction(False, True) as tx:
                yield tx

    @contextlib.contextmanager
    def _transaction(self, write: bool, durable: bool) -> Iterator[Transaction]:
        try:
            conn = self._conn()
            mode = "FULL" if durable else "NORMAL"  # NORMAL in WAL mode: synced at the next FULL commit or checkpoint
            if getattr(self._local, "sync", "FULL") != mode:
                conn.execute(f"PRAGMA synchronous={mode}")
                self._local.sync = mode
            # IMMEDIATE takes the write lock up front: the history read and the insert are one step.
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        try:
            yield Transaction(self, conn)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise StoreError(f"sqlite: {exc}") from exc

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()


class PostgresStore(Store):
    """PostgreSQL through psycopg 3 and a small connection pool; several servers may share it."""

    dialect = "postgresql"

    def __init__(self, url: str, pool_size: int = 8):
        super().__init__(url)
        import psycopg

        self._psycopg = psycopg
        self.integrity_errors = (psycopg.errors.UniqueViolation,)
        self.operational_errors = (psycopg.errors.UndefinedTable,)
        self._pool: list = []
        self._readers: list = []
        self._pool_lock = threading.Lock()
        self._pool_size = pool_size

    def _get(self, write: bool):
        pool = self._pool if write else self._readers
        with self._pool_lock:
            if pool:
                return pool.pop()
        try:
            # Reads are single statements: autocommit spares the BEGIN/COMMIT round trips.
            return self._psycopg.connect(self.url, autocommit=not write, connect_timeout=10)
        except self._psycopg.Error as exc:
            raise StoreError(f"postgresql: {_first_line(exc)}") from exc

    def _put(self, conn) -> None:
        pool = self._readers if conn.autocommit else self._pool
        with self._pool_lock:
            if len(pool) < self._pool_size and not conn.closed:
                pool.append(conn)
                return
        conn.close()

    @contextlib.contextmanager
    def transaction(self, write: bool = False, durable: bool = True) -> Iterator[Transaction]:
        conn = self._get(write)
        ok = False
        try:
            if not durable:
                conn.execute("SET LOCAL synchronous_commit = off")
            yield Transaction(self, conn)
            conn.commit()
            ok = True
        except self._psycopg.errors.UniqueViolation:
            conn.rollback()
            ok = True
            raise
        except self._psycopg.errors.UndefinedTable:
            conn.rollback()
            ok = True
            raise
        except self._psycopg.Error as exc:
            with contextlib.suppress(Exception):
                conn.rollback()
            raise StoreError(f"postgresql: {_first_line(exc)}") from exc
        except BaseException:
            with contextlib.suppress(Exception):
                conn.rollback()
            ok = not conn.closed
            raise
        finally:
            if ok:
                self._put(conn)
            else:
                with contextlib.suppress(Exception):
                    conn.close()

    def close(self) -> None:
        with self._pool_lock:
            for conn in self._pool + self._readers:
                with contextlib.suppress(Exception):
                    conn.close()
            self._pool.clear()
            self._readers.clear()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def default_store_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("msgpolicy", appauthor=False)) / "history.sqlite3"


def open_store(url: Optional[str]) -> Store:
    """`postgresql://…` / `postgres://…`, `sqlite:///path`, a plain path, or None for the default file."""
    if url is None:
        url = os.environ.get("MSGPOLICY_STORE") or str(default_store_path())
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    if url.startswith("sqlite:///"):  # sqlite:///relative/path, sqlite:////absolute/path
        url = url[len("sqlite:///"):]
    elif url.startswith("sqlite://"):
        url = url[len("sqlite://"):]
    return SQLiteStore(url)
