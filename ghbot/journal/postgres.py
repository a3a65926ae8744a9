"""The journal across nodes: PostgreSQL through asyncpg, same contract as SQLite.

``postgresql://user@host/db?schema=name`` opens `PostgresJournal`; the schema and
its ``ghbot_*`` tables are created on first use under an advisory lock. Concurrent
appends on one journal object are group-committed: a flusher task takes everything
queued and commits it in one transaction (about eight round trips whatever the batch
size), one transaction at a time, so appends commit in submission order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import asyncpg

from ghbot.errors import Fenced, JournalError, JournalUnavailable, UsageError
from ghbot.journal.base import (
    DEFAULT_KEEP_SNAPSHOTS,
    DEFAULT_RETENTION,
    DEFAULT_SHARD_COUNT,
    PRUNE_BATCH,
    Journal,
    check_range,
    check_snapshot_args,
)
from ghbot.journal.layout import SHARD_COUNT, settle_count
from ghbot.journal.plan import check_shard, delivery_keys, plan_batch, resolve_shards, shard_for
from ghbot.journal.postgres_sql import Statements
from ghbot.journal.records import AppendRequest, AppendResult, EventRecord, Snapshot

__all__ = ["PostgresJournal"]

DEFAULT_MAX_BATCH: Final = 4096
_RETRIES: Final = 5
_BIG: Final = 2**62
_RETRYABLE: Final = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
#: The longest a failed `COMMIT` is waited for to end at the server (`_settled`).
SETTLE_WITHIN: Final = 30.0
#: ... unless the database does not answer the wait's looks for this long.
UNREACHABLE_WITHIN: Final = 5.0
#: Whether the backend of a pid still runs a statement (none: it has exited).
_STILL_RUNNING: Final = (
    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity"
    " WHERE pid = $1 AND state = 'active' AND pid <> pg_backend_pid())"
)
# InternalClientError: what asyncpg raises on a connection the server terminated.
_FAILURES: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

_Pending = tuple[Sequence[AppendRequest], list[int], "asyncio.Future[list[AppendResult]]"]


@contextlib.asynccontextmanager
async def _unavailable_on_failure() -> AsyncIterator[None]:
    """Turn a failure to reach or use the database into `JournalUnavailable`."""
    try:
        yield
    except JournalError:
        raise
    except _FAILURES as exc:
        raise JournalUnavailable(f"postgresql: {type(exc).__name__}: {exc}") from exc


class PostgresJournal(Journal):
    """A `Journal` in PostgreSQL tables; build it with `PostgresJournal.connect`."""

    def __init__(
        self,
        pool: Any,
        *,
        schema: str = "public",
        shard_count: int = DEFAULT_SHARD_COUNT,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if shard_count < 1:
            raise UsageError(f"shard_count must be >= 1, got {shard_count}")
        self._pool = pool
        self._sql = Statements(schema)
        self.shard_count = shard_count
        self._max_batch = max_batch
        self._pending: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        self._closing: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        schema: str = "public",
        shard_count: int | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        pool_size: int = 4,
        command_timeout: float = 30.0,
    ) -> PostgresJournal:
        """Connect to `dsn`, create the schema if missing, and return the journal.

        `shard_count` must be the count the journal was created with, which it records
        (None: the recorded one, or `DEFAULT_SHARD_COUNT` for a new journal). Raise
        `UsageError` for a bad schema name or `shard_count`, `ConfigError` for another
        count than the recorded one, `JournalUnavailable` if the database cannot be
        reached.
        """
        if shard_count is not None and shard_count < 1:
            raise UsageError(f"shard_count must be >= 1, got {shard_count}")
        Statements(schema)  # validate before connecting
        async with _unavailable_on_failure():
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=pool_size, command_timeout=command_timeout
            )
        journal = cls(pool, schema=schema, shard_count=shard_count or 1, max_batch=max_batch)
        try:
            journal.shard_count = await journal._create_schema(shard_count)
        except BaseException:
            await pool.close()
            raise
        return journal

    async def _create_schema(self, configured: int | None) -> int:
        """Create what is missing; record the shard count or check it; return it.

        A schema without a record is a new journal (recorded: `configured`, else
        `DEFAULT_SHARD_COUNT`), or one made before journals recorded their count: that
        one is taken to have the `configured` count, which is recorded; opened without a
        count, it gets the default and nothing is recorded. Raise `ConfigError` when
        `configured` is not the recorded count (see `ghbot.journal.layout`).
        """
        sql = self._sql
        async with _unavailable_on_failure(), self._pool.acquire() as conn, conn.transaction():
            # Concurrent CREATE ... IF NOT EXISTS can still collide in pg_type.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", sql.schema)
            existed = await conn.fetchval(sql.exists)
            for statement in sql.create:
                await conn.execute(statement)
            record = dict(await conn.fetch(sql.read_meta))
            if SHARD_COUNT not in record:
                count = str(DEFAULT_SHARD_COUNT if configured is None else configured)
                if configured is not None or not existed:
                    await conn.execute(sql.write_meta, SHARD_COUNT, count)
                record = {SHARD_COUNT: count}
        return settle_count(record, configured)

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def _shard(self, stream: str, shard: int | None) -> int:
        return shard_for(stream, self.shard_count) if shard is None else check_shard(shard)

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        self._check_open()
        async with _unavailable_on_failure():
            return list(await self._pool.fetch(query, *args))

    # --- appends: group commit -------------------------------------------------------

    async def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Append many requests in one transaction; one result each, in order."""
        self._check_open()
        shards = resolve_shards(requests, self.shard_count)
        if not requests:
            return []
        future: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()
        self._pending.append((requests, shards, future))
        self._wakeup.set()
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever(), name="ghbot-journal-pg")
        return await future

    async def _flush_forever(self) -> None:
        conn: Any = None  # the flusher's own connection: no pool round trips per batch
        try:
            while not (self._closed and not self._pending):
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    batch = [self._pending.popleft()]
                    count = len(batch[0][0])
                    while self._pending and count < self._max_batch:
                        batch.append(self._pending.popleft())
                        count += len(batch[-1][0])
                    conn = await self._flush(conn, batch)
        finally:
            if conn is not None:
                await self._pool.release(conn)

    async def _flush(self, conn: Any, batch: list[_Pending]) -> Any:
        """Commit `batch`, settle its futures; return the connection to use next."""
        requests = [r for item in batch for r in item[0]]
        shards = [s for item in batch for s in item[1]]
        try:
            for attempt in range(_RETRIES):
                committing = False
                try:
                    async with _unavailable_on_failure():
                        if conn is None:
                            conn = await self._pool.acquire()
                        pid = conn.get_server_pid()  # read now: a lost connection forgets it
                        async with conn.transaction():
                            results = await self._commit_in(conn, requests, shards)
                            committing = True  # what fails from here on is the COMMIT
                    break
                except JournalUnavailable as exc:
                    if committing:
                        await self._settled(pid)
                    if not isinstance(exc.__cause__, _RETRYABLE) or attempt == _RETRIES - 1:
                        raise
        except Exception as exc:
            if conn is not None:  # it may be broken: the next batch takes a fresh one
                with contextlib.suppress(Exception):
                    await self._pool.release(conn)
                conn = None
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return conn
        start = 0
        for items, _, future in batch:
            end = start + len(items)
            if not future.done():
                future.set_result(results[start:end])
            start = end
        return conn

    async def _settled(self, pid: int) -> None:
        """Wait until the server is done with the `COMMIT` that failed on backend `pid`.

        Its error (a timeout, whose cancel is still on its way; an answer lost with its
        connection) says nothing of the outcome: the transaction may commit after it.
        The shard reads the batch's installations again once the append has raised
        (`ShardCore._reload_later`), and a read before the commit lands would miss a
        delivery that is journaled all the same (answered as a duplicate when GitHub
        sends it again, so never run). So the backend's own row in `pg_stat_activity`
        is watched, from another connection, until it no longer runs the statement:
        committed or rolled back, a read after it sees which. Bounded by
        `SETTLE_WITHIN` (a `COMMIT` still running then, a synchronous standby gone for
        good, may land after the error); a database that answers no look for
        `UNREACHABLE_WITHIN` ends the wait (the pool's other connections may have been
        lost with this one: each failed look takes another; and the read after it
        waits for the database). It needs the backend's own row: behind a pooler
        (pgbouncer) or with `track_activities` off there is none to watch, and the
        wait ends at once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_WITHIN
        answered = loop.time()  # the database's last answer to a look (or the start)
        while loop.time() < min(deadline, answered + UNREACHABLE_WITHIN):
            try:
                async with asyncio.timeout_at(min(deadline, answered + UNREACHABLE_WITHIN)):
                    probe = await self._pool.acquire()
                try:
                    while True:
                        until = min(deadline, loop.time() + UNREACHABLE_WITHIN)
                        async with asyncio.timeout_at(until):
                            running = await probe.fetchval(_STILL_RUNNING, pid)
                        answered = loop.time()
                        if not running:
                            return
                        await asyncio.sleep(0.02)
                finally:
                    with contextlib.suppress(Exception):
                        await self._pool.release(probe, timeout=1.0)
            except TimeoutError:  # no answer for UNREACHABLE_WITHIN, or SETTLE_WITHIN over
                return
            except _FAILURES:  # a connection lost with the other: the next is tried
                await asyncio.sleep(0.05)

    async def _commit_in(
        self, conn: Any, requests: list[AppendRequest], shards: list[int]
    ) -> list[AppendResult]:
        sql = self._sql
        stream_shard = dict(zip((r.stream for r in requests), shards, strict=True))
        streams = sorted(stream_shard)
        fenced = sorted({s for r, s in zip(requests, shards, strict=True) if r.epoch is not None})
        heads: dict[str, int] = {}
        epochs: dict[int, int] = {}
        for stream, value, shard in await conn.fetch(
            sql.lock_heads, streams, [stream_shard[s] for s in streams], fenced
        ):
            if stream is None:
                epochs[shard] = value
            else:
                heads[stream] = value
        seen: dict[tuple[str, str], tuple[int, int]] = {}
        keys = delivery_keys(requests)
        if keys:
            rows = await conn.fetch(sql.seen, [k[0] for k in keys], [k[1] for k in keys])
            seen = {(r[0], r[1]): (r[2], r[3]) for r in rows}
        plan = plan_batch(requests, shards, heads=heads, epochs=epochs, seen=seen, now=time.time())
        if plan.events:
            events = list(zip(*plan.events, strict=True))
            deliveries: list[Sequence[Any]] = list(zip(*plan.deliveries, strict=True)) or [[]] * 5
            await conn.execute(
                sql.write, *events, *deliveries, list(plan.heads), list(plan.heads.values())
            )
        return plan.results

    # --- everything else -------------------------------------------------------------

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
        upper = _BIG if to_seq is None else to_seq
        rows = await self._fetch(
            self._sql.read, stream, from_seq, upper, _BIG if limit is None else limit
        )
        return [EventRecord(stream, *row) for row in rows]

    async def last_seq(self, stream: str, *, shard: int | None = None) -> int:
        """Return the stream's last sequence number (0 if it has no events)."""
        rows = await self._fetch(self._sql.last_seq, stream)
        return int(rows[0][0]) if rows else 0

    async def delivered(
        self, stream: str, guids: Sequence[str], *, shard: int | None = None
    ) -> set[str]:
        """Return which of the delivery `guids` the stream has recorded."""
        self._check_open()
        if not guids:
            return set()
        rows = await self._fetch(self._sql.delivered, stream, list(guids))
        return {row[0] for row in rows}

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
        self._check_open()
        sql = self._sql
        async with _unavailable_on_failure(), self._pool.acquire() as conn, conn.transaction():
            if epoch is not None:
                current = await conn.fetchval(sql.epoch_for_share, shard_n) or 0
                if epoch != current:
                    raise Fenced(shard_n, epoch, current)
            head = await conn.fetchval(sql.last_seq, stream) or 0
            if seq > head:
                raise UsageError(f"snapshot at {seq} is past {stream!r}'s last seq {head}")
            await conn.execute(sql.save_snapshot, stream, seq, data, time.time(), version)
            await conn.execute(sql.trim_snapshots, stream, keep)

    async def load_snapshot(
        self, stream: str, *, max_seq: int | None = None, shard: int | None = None
    ) -> Snapshot | None:
        """Return the stream's latest snapshot with ``seq <= max_seq``, or None."""
        upper = _BIG if max_seq is None else max_seq
        rows = await self._fetch(self._sql.load_snapshot, stream, upper)
        return Snapshot(stream, *rows[0]) if rows else None

    async def acquire_epoch(self, shard: int) -> int:
        """Start a new epoch for `shard` and return it (1 for the first)."""
        rows = await self._fetch(self._sql.bump_epoch, check_shard(shard))
        return int(rows[0][0])

    async def current_epoch(self, shard: int) -> int:
        """Return the shard's current epoch (0 if none was ever acquired)."""
        rows = await self._fetch(self._sql.epoch, check_shard(shard))
        return int(rows[0][0]) if rows else 0

    async def list_streams(self, *, shard: int | None = None) -> list[str]:
        """Return the names of streams holding events, sorted; one shard's or all."""
        if shard is None:
            rows = await self._fetch(self._sql.list_streams)
        else:
            rows = await self._fetch(self._sql.list_shard_streams, check_shard(shard))
        return [row[0] for row in rows]

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
        args: tuple[float | int, ...] = (cutoff, PRUNE_BATCH)
        query = self._sql.prune
        if shard is not None:
            query, args = self._sql.prune_shard, (*args, check_shard(shard))
        dropped = 0
        while True:
            async with _unavailable_on_failure():
                status: str = await self._pool.execute(query, *args)
            deleted = int(status.rsplit(" ", 1)[-1])
            dropped += deleted
            if deleted < PRUNE_BATCH:
                return dropped

    async def close(self) -> None:
        """Commit submitted appends, then close the connection pool.

        Cancelling the caller does not stop the closing: submitted appends are still
        committed and answered, and the pool closed; a later `close` waits for that.
        """
        if self._closing is None:
            self._closed = True
            self._wakeup.set()
            self._closing = asyncio.create_task(self._close(), name="ghbot-journal-pg-close")
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        await self._pool.close()
