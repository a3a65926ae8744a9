"""The embedded journal: SQLite files under one directory, one file per shard.

``sqlite:///path/to/dir`` opens `SqliteJournal`. Shard `n` lives in
``dir/shard-0000n.sqlite3``; a stream's shard is the one its caller names, or
`shard_for(stream, shard_count)`. Writes go through each file's writer thread
(`ShardFile`), which group-commits concurrent appends; reads run on a small thread
pool with their own connections, so a replay never waits behind an fsync. The shard
count is recorded in ``dir/journal.sqlite3`` (`ghbot.journal.sqlite_layout`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

from ghbot.errors import Fenced, UsageError
from ghbot.journal.base import (
    DEFAULT_KEEP_SNAPSHOTS,
    DEFAULT_RETENTION,
    DEFAULT_SHARD_COUNT,
    PRUNE_BATCH,
    Journal,
    check_range,
    check_snapshot_args,
)
from ghbot.journal.plan import check_shard, resolve_shards, shard_for
from ghbot.journal.records import AppendRequest, AppendResult, EventRecord, Snapshot
from ghbot.journal.sqlite_file import ShardFile, transaction
from ghbot.journal.sqlite_layout import open_record, shard_path

__all__ = ["SqliteJournal"]

T = TypeVar("T")

DEFAULT_MAX_BATCH: Final = 4096
_FILE_NAME: Final = re.compile(r"shard-(\d+)\.sqlite3")
_BIG: Final = 2**62  # "no upper bound" for seq and LIMIT
# The distinct streams by skip-scan over the events' primary key: one seek per stream.
_LIST_STREAMS: Final = """
WITH RECURSIVE s(name) AS (
    SELECT (SELECT min(stream) FROM events)
    UNION ALL
    SELECT (SELECT min(stream) FROM events WHERE stream > s.name) FROM s WHERE s.name IS NOT NULL)
SELECT name FROM s WHERE name IS NOT NULL
"""


class SqliteJournal(Journal):
    """A `Journal` in SQLite files under `directory` (created if missing).

    `shard_count` must be the count the journal was created with, which it records
    (`ghbot.journal.layout`; None: the recorded one, or `DEFAULT_SHARD_COUNT` for a new
    journal). Raise `ConfigError` for another, `JournalUnavailable` if the record
    cannot be read.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        shard_count: int | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        read_threads: int = 2,
    ) -> None:
        if shard_count is not None and shard_count < 1:
            raise UsageError(f"shard_count must be >= 1, got {shard_count}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.shard_count = open_record(self.directory, shard_count, DEFAULT_SHARD_COUNT)
        self._max_batch = max_batch
        self._files: dict[int, ShardFile] = {}
        self._readers = ThreadPoolExecutor(read_threads, thread_name_prefix="ghbot-journal-read")
        self._closed = False
        self._closing: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def _shard(self, stream: str, shard: int | None) -> int:
        return shard_for(stream, self.shard_count) if shard is None else check_shard(shard)

    def _file(self, shard: int) -> ShardFile:
        file = self._files.get(shard)
        if file is None:
            path = shard_path(self.directory, shard)
            file = self._files[shard] = ShardFile(path, max_batch=self._max_batch)
        return file

    def _existing_shards(self) -> list[int]:
        names = (_FILE_NAME.fullmatch(p.name) for p in self.directory.iterdir())
        found = {int(m.group(1)) for m in names if m}
        return sorted(found | self._files.keys())

    async def _write(self, shard: int, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._file(shard).submit_call(lambda conn: transaction(conn, fn), future)
        return await future

    async def _read(self, shard: int, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()
        file = self._file(shard)
        return await asyncio.get_running_loop().run_in_executor(self._readers, file.with_reader, fn)

    async def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Append many requests, one durable commit per shard file they touch.

        A failure in one file is raised once every other file's part has settled
        (committed or failed): a caller that reads the journal again after the error
        finds what the call wrote, not what it is still writing.
        """
        self._check_open()
        shards = resolve_shards(requests, self.shard_count)
        loop = asyncio.get_running_loop()
        first = shards[0] if shards else 0
        if all(s == first for s in shards):
            if not requests:
                return []
            future: asyncio.Future[list[AppendResult]] = loop.create_future()
            self._file(first).submit_appends(requests, first, future)
            return await future
        by_shard: dict[int, list[int]] = {}
        for index, shard in enumerate(shards):
            by_shard.setdefault(shard, []).append(index)
        futures = []
        for shard, indexes in by_shard.items():
            future = loop.create_future()
            self._file(shard).submit_appends([requests[i] for i in indexes], shard, future)
            futures.append(future)
        settled = await asyncio.gather(*futures, return_exceptions=True)
        parts: list[list[AppendResult]] = []
        for part in settled:
            if isinstance(part, BaseException):
                raise part
            parts.append(part)
        results: list[AppendResult | None] = [None] * len(requests)
        for indexes, part in zip(by_shard.values(), parts, strict=True):
            for index, result in zip(indexes, part, strict=True):
                results[index] = result
        return [r for r in results if r is not None]

    async def read(
        self,
        stream: str,
        from_seq: int = 1,
        to_seq: int | None = None,
        *,
        limit: int | None = None,
        shard: int | None = None,
    ) -> list[EventRecord]:
        """Return the stream's events with `from_seq <= seq <= to_seq`, in order."""
        check_range(from_seq, limit)
        args = (
            stream,
            from_seq,
            _BIG if to_seq is None else to_seq,
            _BIG if limit is None else limit,
        )

        def query(conn: sqlite3.Connection) -> list[EventRecord]:
            rows = conn.execute(
                "SELECT seq, type, data, delivery_guid, recorded_at, version FROM events"
                " WHERE stream = ? AND seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
                args,
            )
            return [EventRecord(stream, *row) for row in rows]

        return await self._read(self._shard(stream, shard), query)

    async def last_seq(self, stream: str, *, shard: int | None = None) -> int:
        """Return the stream's last sequence number (0 if it has no events)."""

        def query(conn: sqlite3.Connection) -> int:
            return _last_seq(conn, stream)

        return await self._read(self._shard(stream, shard), query)

    async def delivered(
        self, stream: str, guids: Sequence[str], *, shard: int | None = None
    ) -> set[str]:
        """Return which of the delivery `guids` the stream has recorded."""
        self._check_open()
        wanted = json.dumps(list(guids))

        def query(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "SELECT delivery_guid FROM deliveries WHERE stream = ?"
                " AND delivery_guid IN (SELECT value FROM json_each(?))",
                (stream, wanted),
            )
            return {row[0] for row in rows}

        return await self._read(self._shard(stream, shard), query) if guids else set()

    async def save_snapshot(
        self,
        stream: str,
        seq: int,
        data: bytes,
        *,
        shard: int | None = None,
        epoch: int | None = None,
        keep: int = DEFAULT_KEEP_SNAPSHOTS,
        version: int = 1,
    ) -> None:
        """Store the stream's state after event `seq`; keep only the last `keep`."""
        check_snapshot_args(seq, keep)
        shard_n = self._shard(stream, shard)

        def save(conn: sqlite3.Connection) -> None:
            if epoch is not None:
                current = _epoch(conn, shard_n)
                if epoch != current:
                    raise Fenced(shard_n, epoch, current)
            head = _last_seq(conn, stream)
            if seq > head:
                raise UsageError(f"snapshot at {seq} is past {stream!r}'s last seq {head}")
            conn.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?)",
                (stream, seq, data, time.time(), version),
            )
            conn.execute(
                "DELETE FROM snapshots WHERE stream = ? AND seq NOT IN"
                " (SELECT seq FROM snapshots WHERE stream = ? ORDER BY seq DESC LIMIT ?)",
                (stream, stream, keep),
            )

        await self._write(shard_n, save)

    async def load_snapshot(
        self, stream: str, *, max_seq: int | None = None, shard: int | None = None
    ) -> Snapshot | None:
        """Return the stream's latest snapshot with ``seq <= max_seq``, or None."""

        def query(conn: sqlite3.Connection) -> Snapshot | None:
            row = conn.execute(
                "SELECT seq, data, recorded_at, version FROM snapshots"
                " WHERE stream = ? AND seq <= ? ORDER BY seq DESC LIMIT 1",
                (stream, _BIG if max_seq is None else max_seq),
            ).fetchone()
            return None if row is None else Snapshot(stream, *row)

        return await self._read(self._shard(stream, shard), query)

    async def acquire_epoch(self, shard: int) -> int:
        """Start a new epoch for `shard` and return it (1 for the first)."""

        def bump(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "INSERT INTO shard_epochs VALUES (?, 1) ON CONFLICT (shard)"
                " DO UPDATE SET epoch = epoch + 1 RETURNING epoch",
                (shard,),
            ).fetchone()
            return int(row[0])

        return await self._write(check_shard(shard), bump)

    async def current_epoch(self, shard: int) -> int:
        """Return the shard's current epoch (0 if none was ever acquired)."""
        return await self._read(check_shard(shard), lambda conn: _epoch(conn, shard))

    async def list_streams(self, *, shard: int | None = None) -> list[str]:
        """Return the names of streams holding events, sorted; one shard's or all."""
        self._check_open()
        shards = [check_shard(shard)] if shard is not None else self._existing_shards()

        def query(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute(_LIST_STREAMS)]

        parts = await asyncio.gather(*(self._read(s, query) for s in shards))
        return sorted(name for part in parts for name in part)

    async def prune_deliveries(
        self,
        retention: float = DEFAULT_RETENTION,
        *,
        now: float | None = None,
        shard: int | None = None,
    ) -> int:
        """Forget delivery GUIDs recorded more than `retention` seconds before `now`."""
        self._check_open()
        cutoff = (time.time() if now is None else now) - retention
        shards = [check_shard(shard)] if shard is not None else self._existing_shards()
        counts = await asyncio.gather(*(self._prune_file(s, cutoff) for s in shards))
        return sum(counts)

    async def _prune_file(self, shard: int, cutoff: float) -> int:
        """Delete one file's deliveries recorded before `cutoff`, `PRUNE_BATCH` at a time.

        Deliveries are in rowid (arrival) order, so the old ones are a prefix: a reader
        finds where it ends (reading only the rows that go, off the writer thread),
        then the writer deletes it in short transactions that appends can slip between.
        """

        def boundary(conn: sqlite3.Connection) -> int:
            young = conn.execute(
                "SELECT rowid FROM deliveries WHERE recorded_at >= ? ORDER BY rowid LIMIT 1",
                (cutoff,),
            ).fetchone()
            if young is not None:
                return int(young[0])
            last = conn.execute("SELECT max(rowid) FROM deliveries").fetchone()
            return 0 if last[0] is None else int(last[0]) + 1

        def delete_some(end: int) -> Callable[[sqlite3.Connection], int]:
            def delete(conn: sqlite3.Connection) -> int:
                # recorded_at too: a table emptied between two batches numbers its next
                # rows from 1 again, below `end`, and those are young.
                return conn.execute(
                    "DELETE FROM deliveries WHERE rowid IN (SELECT rowid FROM deliveries"
                    " WHERE rowid < ? AND recorded_at < ? ORDER BY rowid LIMIT ?)",
                    (end, cutoff, PRUNE_BATCH),
                ).rowcount

            return delete

        end = await self._read(shard, boundary)
        dropped = 0
        while end:
            deleted = await self._write(shard, delete_some(end))
            dropped += deleted
            if deleted < PRUNE_BATCH:
                break
        return dropped

    async def close(self) -> None:
        """Finish submitted appends, then stop the writer threads and close the files."""
        if self._closing is None:
            self._closed = True
            files = list(self._files.values())
            for file in files:
                file.stop()
            self._closing = asyncio.create_task(self._close(files), name="ghbot-journal-close")
        await asyncio.shield(self._closing)

    async def _close(self, files: list[ShardFile]) -> None:
        await asyncio.gather(*(asyncio.to_thread(file.join) for file in files))
        self._readers.shutdown(wait=False)


def _last_seq(conn: sqlite3.Connection, stream: str) -> int:
    row: Any = conn.execute("SELECT max(seq) FROM events WHERE stream = ?", (stream,)).fetchone()
    return int(row[0] or 0)


def _epoch(conn: sqlite3.Connection, shard: int) -> int:
    row: Any = conn.execute("SELECT epoch FROM shard_epochs WHERE shard = ?", (shard,)).fetchone()
    return 0 if row is None else int(row[0])
