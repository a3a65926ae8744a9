"""One shard's SQLite file: a writer thread with group commit, and read connections.

Every write to the file goes through its writer thread, which owns one connection.
The thread takes everything queued (up to `max_batch` requests), appends it in one
``BEGIN IMMEDIATE`` transaction and one fsync (WAL, ``synchronous=FULL``), then
resolves the callers' futures with one `loop.call_soon_threadsafe` per batch.
It keeps the heads of the streams it wrote in memory (`HeadCache`), valid while no
other connection commits to the file, which SQLite's ``data_version`` tells.
``BEGIN IMMEDIATE`` takes the file's write lock first, so another process writing
the same file (a zombie shard) is serialized, and the epoch read inside the
transaction is the one the commit is checked against.
"""

from __future__ import annotations

import asyncio
import functools
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from ghbot.errors import JournalUnavailable
from ghbot.journal.plan import Plan, delivery_keys, plan_batch
from ghbot.journal.records import AppendRequest

__all__ = ["ShardFile", "connect", "create_schema", "transaction"]

T = TypeVar("T")

BUSY_TIMEOUT_S: Final = 5.0
# The layout keeps per-append B-tree work low, the cost that bounds group commit.
# Events are appended in rowid order, and a unique index on (stream, seq) finds a
# stream's events and its head (max(seq)); no separate heads table to update. Files
# an earlier ghbot made cluster events by (stream, seq) in a WITHOUT ROWID table
# (`_EVENTS_CLUSTERED`), which every query here reads the same; that puts a
# delivery's body (kilobytes) into the middle of a tree ordered by stream, and made
# appends slower (benchmarks/RESULTS.md). Deliveries are appended in rowid order (so
# pruning deletes a prefix) with one unique index.
# The same columns in both layouts: a reshard copies rows between them (SELECT *).
_EVENT_COLUMNS: Final = (
    "stream TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL,"
    " delivery_guid TEXT, recorded_at REAL NOT NULL, version INTEGER NOT NULL"
)
_EVENTS: Final = (
    f"CREATE TABLE events ({_EVENT_COLUMNS})",
    "CREATE UNIQUE INDEX events_key ON events (stream, seq)",
)
_EVENTS_CLUSTERED: Final = (
    f"CREATE TABLE events ({_EVENT_COLUMNS}, PRIMARY KEY (stream, seq)) WITHOUT ROWID",
)
_OTHER_TABLES: Final = (
    "CREATE TABLE IF NOT EXISTS deliveries (stream TEXT NOT NULL,"
    " delivery_guid TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,"
    " recorded_at REAL NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS deliveries_key ON deliveries (stream, delivery_guid)",
    "CREATE TABLE IF NOT EXISTS snapshots (stream TEXT NOT NULL, seq INTEGER NOT NULL,"
    " data BLOB NOT NULL, recorded_at REAL NOT NULL, version INTEGER NOT NULL,"
    " PRIMARY KEY (stream, seq)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS shard_epochs (shard INTEGER PRIMARY KEY, epoch INTEGER NOT NULL)",
)
HEADS_SQL: Final = (
    "SELECT j.value, (SELECT max(seq) FROM events WHERE stream = j.value) FROM json_each(?) AS j"
)
SEEN_SQL: Final = (
    "SELECT d.stream, d.delivery_guid, d.first_seq, d.last_seq FROM json_each(?) AS j"
    " JOIN deliveries AS d ON d.stream = json_extract(j.value, '$[0]')"
    " AND d.delivery_guid = json_extract(j.value, '$[1]')"
)
#: The file's data version (another connection committed when it changes) and the
#: shard's epoch, in one statement.
VERSION_AND_EPOCH_SQL: Final = (
    "SELECT data_version, (SELECT epoch FROM shard_epochs WHERE shard = ?) FROM pragma_data_version"
)
#: Rows one INSERT statement carries at most (7 values a row, under SQLite's 32,766).
ROWS_PER_INSERT: Final = 512
WRITER_CACHE_KIB: Final = 16384  # the pages one batch dirties stay in memory
#: The most stream heads a writer keeps in memory (about 100 bytes each); past it the
#: cache starts again empty.
MAX_CACHED_HEADS: Final = 100_000


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open `path` in WAL mode with ``synchronous=FULL`` (durable on commit).

    Transactions are explicit (``isolation_level=None``); see `transaction`.
    """
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        _use_wal(conn)
        conn.execute("PRAGMA synchronous=FULL")
        if readonly:
            conn.execute("PRAGMA query_only=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch a new file to WAL (persistent), retrying while another opener does.

    The switch needs an exclusive lock and may fail with "database is locked"
    without waiting on the busy timeout when two connections create the file.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run `fn` in one ``BEGIN IMMEDIATE`` transaction; roll back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    conn.execute("COMMIT")
    return result


def create_schema(conn: sqlite3.Connection, *, clustered: bool = False) -> None:
    """Create the tables a shard file lacks; call it inside a transaction.

    A file that has its events table keeps it, in whichever layout it was made;
    `clustered` makes a new one in the layout earlier ghbots made (for tests).
    """
    exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
    if conn.execute(exists).fetchone() is None:
        for statement in _EVENTS_CLUSTERED if clustered else _EVENTS:
            conn.execute(statement)
    for statement in _OTHER_TABLES:
        conn.execute(statement)


class _Appends:
    __slots__ = ("future", "requests", "shard")

    def __init__(
        self, requests: Sequence[AppendRequest], shard: int, future: asyncio.Future[Any]
    ) -> None:
        self.requests = requests
        self.shard = shard
        self.future = future


class _Call:
    __slots__ = ("fn", "future")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]
    ) -> None:
        self.fn = fn
        self.future = future


_Item = _Appends | _Call | None  # None stops the writer
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle(outcomes: list[_Outcome]) -> None:
    for future, result, exc in outcomes:
        if future.cancelled():
            continue
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


@functools.lru_cache(maxsize=256)
def _insert_sql(table: str, columns: int, rows: int) -> str:
    row = f"({', '.join('?' * columns)})"
    return f"INSERT INTO {table} VALUES {', '.join([row] * rows)}"  # noqa: S608 - ours


def _insert(conn: sqlite3.Connection, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert `rows` with as few statements as possible (`ROWS_PER_INSERT` rows each).

    Not `executemany`: it steps SQLite once per row, releasing the GIL around each
    step and waiting to take it back from the event loop's thread, which holds it
    while it runs handlers (up to the switch interval, `sys.getswitchinterval`, each
    time).
    """
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        values = [value for row in chunk for value in row]
        conn.execute(_insert_sql(table, len(chunk[0]), len(chunk)), values)


def _unavailable(exc: sqlite3.Error) -> JournalUnavailable:
    error = JournalUnavailable(f"sqlite: {exc}")
    error.__cause__ = exc
    return error


class HeadCache:
    """The last seq of streams the writer knows, so an append need not read it.

    Valid only while every commit to the file is the writer connection's own appends:
    `check` (inside the transaction, with the write lock held) empties it when
    another connection committed since (``PRAGMA data_version`` changed: a zombie
    shard, a CLI); the writer empties it after anything else it runs (a snapshot, an
    epoch bump, a prune), after a failed transaction, and with a new connection.
    """

    def __init__(self) -> None:
        self.heads: dict[str, int] = {}
        self._version: int | None = None

    def check(self, version: int) -> None:
        """Empty the cache if the file's ``data_version`` is not the one it last saw."""
        if version != self._version:
            self.heads.clear()
            self._version = version

    def update(self, heads: dict[str, int]) -> None:
        if len(self.heads) + len(heads) > MAX_CACHED_HEADS:
            self.heads.clear()
        self.heads.update(heads)

    def clear(self) -> None:
        self.heads.clear()
        self._version = None


class ShardFile:
    """The SQLite file holding one shard's streams, epochs and snapshots."""

    def __init__(self, path: Path, *, max_batch: int) -> None:
        self.path = path
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._created = False
        self._stopped = False
        #: Stream heads, used and kept by the writer thread only.
        self._heads = HeadCache()

    # --- called on the event loop ----------------------------------------------------

    def submit_appends(
        self, requests: Sequence[AppendRequest], shard: int, future: asyncio.Future[Any]
    ) -> None:
        """Queue `requests` (all in this file's shard); `future` gets their results."""
        self._start()
        self._queue.put(_Appends(requests, shard, future))

    def submit_call(
        self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]
    ) -> None:
        """Queue `fn(conn)` to run on the writer thread; it manages its transaction."""
        self._start()
        self._queue.put(_Call(fn, future))

    def stop(self) -> None:
        """Let the writer finish what is queued, then end; wait for it with `join`."""
        self._stopped = True
        if self._thread is not None:
            self._queue.put(None)

    def join(self) -> None:
        """Wait for the writer to end, then close the read connections."""
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"ghbot-journal-{self.path.stem}", daemon=True
            )
            self._thread.start()

    # --- called on reader threads ----------------------------------------------------

    def with_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on a pooled read-only connection; raise `JournalUnavailable`."""
        try:
            self._ensure_schema()
            with self._lock:
                conn = self._readers.pop() if self._readers else None
            if conn is None:
                conn = connect(self.path, readonly=True)
            try:
                return fn(conn)
            finally:
                with self._lock:
                    if self._stopped:
                        conn.close()
                    else:
                        self._readers.append(conn)
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc

    def _ensure_schema(self) -> None:
        with self._lock:
            if self._created:
                return
            conn = connect(self.path)
            try:  # BEGIN IMMEDIATE waits (busy timeout) for another creator
                transaction(conn, create_schema)
            finally:
                conn.close()
            self._created = True

    # --- the writer thread -----------------------------------------------------------

    def _run(self) -> None:
        running = True
        while running:
            items: list[_Item] = [self._queue.get()]
            count = len(items[0].requests) if isinstance(items[0], _Appends) else 1
            while count < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                items.append(item)
                count += len(item.requests) if isinstance(item, _Appends) else 1
            running = None not in items
            self._process([item for item in items if item is not None])
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _process(self, items: list[_Appends | _Call]) -> None:
        outcomes: list[_Outcome] = []
        group: list[_Appends] = []
        for item in items:
            if isinstance(item, _Appends):
                group.append(item)
                continue
            if group:
                outcomes += self._commit_appends(group)
                group = []
            outcomes.append(self._call(item))
        if group:
            outcomes += self._commit_appends(group)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                continue

    def _writer(self) -> sqlite3.Connection:
        if self._conn is None:
            self._ensure_schema()
            self._conn = connect(self.path)
            self._conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
        return self._conn

    def _failed(self, exc: sqlite3.Error) -> JournalUnavailable:
        """Drop the writer connection (the next batch reconnects) and map `exc`."""
        self._heads.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        return _unavailable(exc)

    def _call(self, item: _Call) -> _Outcome:
        self._heads.clear()  # what it writes is not known here
        try:
            return (item.future, item.fn(self._writer()), None)
        except sqlite3.Error as exc:
            return (item.future, None, self._failed(exc))
        except Exception as exc:  # the caller's error (UsageError, Fenced) is theirs
            return (item.future, None, exc)

    def _commit_appends(self, group: list[_Appends]) -> list[_Outcome]:
        if len(group) == 1:
            requests = group[0].requests
        else:
            requests = [r for item in group for r in item.requests]
        shard = group[0].shard
        heads = self._heads
        try:
            plan = transaction(self._writer(), lambda c: _append(c, requests, shard, heads))
        except Exception as exc:  # rolled back: the whole group failed, and says why
            heads.clear()
            error = self._failed(exc) if isinstance(exc, sqlite3.Error) else exc
            return [(item.future, None, error) for item in group]
        heads.update(plan.heads)
        results = plan.results
        outcomes: list[_Outcome] = []
        start = 0
        for item in group:
            end = start + len(item.requests)
            outcomes.append((item.future, results[start:end], None))
            start = end
        return outcomes


def _append(
    conn: sqlite3.Connection, requests: Sequence[AppendRequest], shard: int, cache: HeadCache
) -> Plan:
    version, epoch = conn.execute(VERSION_AND_EPOCH_SQL, (shard,)).fetchone()
    cache.check(version)
    known = cache.heads
    heads = {r.stream: known[r.stream] for r in requests if r.stream in known}
    unknown = list({r.stream for r in requests if r.stream not in heads})
    if unknown:
        for stream, head in conn.execute(HEADS_SQL, (json.dumps(unknown),)):
            heads[stream] = head or 0
    keys = delivery_keys(requests)
    seen: dict[tuple[str, str], tuple[int, int]] = {}
    if keys:
        for stream, guid, first, last in conn.execute(SEEN_SQL, (json.dumps(keys),)):
            seen[(stream, guid)] = (first, last)
    epochs = {shard: epoch or 0}
    plan = plan_batch(
        requests,
        [shard] * len(requests),
        heads=heads,
        epochs=epochs,
        seen=seen,
        now=time.time(),
    )
    if plan.events:
        _insert(conn, "events", plan.events)
    if plan.deliveries:
        _insert(conn, "deliveries", plan.deliveries)
    return plan
