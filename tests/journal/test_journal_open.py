"""open_journal's URLs, the SQLite file settings, and unreachable databases."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from ghbot.errors import JournalUnavailable, UsageError
from ghbot.journal import AppendRequest, Journal, NewEvent, open_journal
from ghbot.journal.postgres import PostgresJournal
from ghbot.journal.sqlite import SqliteJournal

if TYPE_CHECKING:
    from conftest import Backend


async def test_sqlite_url_opens_one_wal_file_per_shard(tmp_path: Path) -> None:
    journal = await open_journal(f"sqlite://{tmp_path}/data?shards=4")
    assert isinstance(journal, SqliteJournal) and journal.shard_count == 4
    await journal.append("s", [NewEvent("t", b"")], shard=2)
    await journal.append("s", [NewEvent("t", b"")], shard=3)
    await journal.close()
    files = sorted(p.name for p in (tmp_path / "data").glob("shard-*.sqlite3"))
    assert files == ["shard-00002.sqlite3", "shard-00003.sqlite3"]
    conn = sqlite3.connect(tmp_path / "data" / files[0])
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


@pytest.mark.parametrize(
    "url",
    ["mysql://h/db", "sqlite://host/dir", "sqlite://", "sqlite:///d?shards=x", "sqlite:///d?x=1"],
)
async def test_bad_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError):
        await open_journal(url)


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/journal", "postgresql://nobody@127.0.0.1:1/none"])
async def test_an_option_the_backend_does_not_take_is_a_usage_error(
    url: str, tmp_path: Path
) -> None:
    """Once a `TypeError` from the constructor; PostgreSQL's before connecting."""
    with pytest.raises(UsageError, match=r"journal option\(s\) snapshot_evry not among"):
        await open_journal(url.format(tmp=tmp_path), snapshot_evry=10)


async def test_unreachable_postgres_is_unavailable() -> None:
    with pytest.raises(JournalUnavailable):
        await open_journal("postgresql://nobody@127.0.0.1:1/none", command_timeout=2)


async def test_bad_schema_name_is_refused_before_connecting() -> None:
    with pytest.raises(UsageError):
        await open_journal('postgresql://nobody@127.0.0.1:1/none?schema=x"; drop')


@pytest.mark.postgres
async def test_postgres_schemas_isolate_journals(
    postgres_schemas: Callable[[], AbstractAsyncContextManager[Backend]],
) -> None:
    async with postgres_schemas() as one, postgres_schemas() as two:
        first, second = await one.open(), await two.open()
        assert isinstance(first, PostgresJournal)
        await first.append("s", [NewEvent("t", b"")])
        assert await second.list_streams() == []
        assert await first.list_streams() == ["s"]


async def test_a_corrupt_sqlite_file_makes_the_journal_unavailable(tmp_path: Path) -> None:
    (tmp_path / "shard-00000.sqlite3").write_bytes(b"not a database" * 100)
    journal = SqliteJournal(tmp_path)
    with pytest.raises(JournalUnavailable):
        await journal.append("s", [NewEvent("t", b"")], shard=0)
    with pytest.raises(JournalUnavailable):
        await journal.read("s", shard=0)
    assert (await journal.append("s", [NewEvent("t", b"")], shard=1)).ok
    await journal.close()


@pytest.mark.postgres
async def test_postgres_recovers_after_its_connections_are_killed(
    postgres_backend: Backend,
) -> None:
    schema = postgres_backend.url.split("schema=")[1]
    postgres_backend.url += f"&application_name={schema}"  # asyncpg's server setting
    journal = await postgres_backend.open()
    await journal.append("s", [NewEvent("t", b"")])
    assert await journal.read("s")
    admin = await asyncpg.connect(postgres_backend.url.split("?")[0])
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1",
            schema,
        )
    finally:
        await admin.close()
    assert killed >= 1
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append((await journal.append("s", [NewEvent("t", b"")])).ok)
        except JournalUnavailable:
            outcomes.append(False)
    assert outcomes[-1] is True
    assert await journal.last_seq("s") == 1 + outcomes.count(True)


async def test_a_writer_keeps_heads_in_memory_and_forgets_them_when_another_writes(
    tmp_path: Path,
) -> None:
    """The SQLite writer's stream heads (`HeadCache`): kept between appends, and
    dropped when another connection commits, so two writers never reuse a seq."""
    url = f"sqlite://{tmp_path}/data?shards=1"
    one, two = await open_journal(url), await open_journal(url)
    try:
        first = await one.append("s", [NewEvent("t", b"1")], shard=0)
        file = one._file(0)  # type: ignore[attr-defined]
        assert file._heads.heads == {"s": first.last_seq}
        # Another connection (a zombie shard, a CLI) appends to the same stream...
        second = await two.append("s", [NewEvent("t", b"2"), NewEvent("t", b"3")], shard=0)
        assert second.first_seq == first.last_seq + 1
        # ...so the first writer reads the head again instead of reusing seq 2.
        third = await one.append("s", [NewEvent("t", b"4")], shard=0)
        assert third.first_seq == second.last_seq + 1
        assert [r.seq for r in await one.read("s", shard=0)] == [1, 2, 3, 4]
        assert file._heads.heads == {"s": 4}
        # What it writes other than appends (here an epoch bump) empties the cache.
        await one.acquire_epoch(0)
        assert file._heads.heads == {}
        assert (await one.append("s", [NewEvent("t", b"5")], shard=0)).first_seq == 5
    finally:
        await one.close()
        await two.close()


async def test_a_batch_of_more_rows_than_one_insert_statement_holds_is_written_whole(
    tmp_path: Path,
) -> None:
    """The SQLite writer inserts rows `ROWS_PER_INSERT` to a statement: a batch past it
    takes several statements in its one transaction, in order."""
    from ghbot.journal.sqlite_file import ROWS_PER_INSERT

    journal = await open_journal(f"sqlite://{tmp_path}/data?shards=1")
    try:
        count = 2 * ROWS_PER_INSERT + 7
        many = [AppendRequest(f"s{n}", (NewEvent("t", b"%d" % n),)) for n in range(count)]
        long = AppendRequest("long", tuple(NewEvent("t", b"%d" % n) for n in range(count)))
        results = await journal.append_many([*many, long])
        assert [r.last_seq for r in results] == [1] * count + [count]
        assert [r.data for r in await journal.read("long")] == [b"%d" % n for n in range(count)]
        assert (await journal.read(f"s{count - 1}"))[0].data == b"%d" % (count - 1)
        assert len(await journal.list_streams()) == count + 1
    finally:
        await journal.close()


async def test_every_sqlite_connection_syncs_each_commit_and_readers_only_read(
    tmp_path: Path,
) -> None:
    """WAL with ``synchronous=FULL``: a commit is on disk when the append returns
    (``NORMAL`` may lose the last commits to a power cut); readers open the same way,
    and read only."""
    journal = await open_journal(f"sqlite://{tmp_path}/data?shards=1")
    try:
        await journal.append("s", [NewEvent("t", b"")], shard=0)
        await journal.read("s", shard=0)
        file = journal._file(0)  # type: ignore[attr-defined]
        full = (2,)
        assert file._conn.execute("PRAGMA synchronous").fetchone() == full
        assert [r.execute("PRAGMA synchronous").fetchone() for r in file._readers] == [full]
        assert [r.execute("PRAGMA query_only").fetchone() for r in file._readers] == [(1,)]
    finally:
        await journal.close()


async def test_an_append_whose_caller_went_away_leaves_the_rest_of_its_commit_answered(
    tmp_path: Path,
) -> None:
    """Appends queued behind a commit go in the next one together. One whose caller
    was cancelled meanwhile is still written (the writer cannot take it back), and
    the others of that commit get their results."""
    journal = await open_journal(f"sqlite://{tmp_path}/data?shards=1")
    await journal.append("s", [NewEvent("t", b"0")], shard=0)
    lock = sqlite3.connect(tmp_path / "data" / "shard-00000.sqlite3", isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the writer waits for this lock
        blocked = asyncio.create_task(journal.append("s", [NewEvent("t", b"1")], shard=0))
        await asyncio.sleep(0.2)  # the writer has taken it, and waits
        gone = asyncio.create_task(journal.append("s", [NewEvent("t", b"2")], shard=0))
        kept = asyncio.create_task(journal.append("s", [NewEvent("t", b"3")], shard=0))
        await asyncio.sleep(0.05)  # both queued
        gone.cancel()
        lock.execute("COMMIT")
        assert (await asyncio.wait_for(kept, 10)).ok
        assert (await blocked).ok and gone.cancelled()
        assert [e.data for e in await journal.read("s")] == [b"0", b"1", b"2", b"3"]
    finally:
        lock.close()
        await journal.close()


@contextlib.asynccontextmanager
async def stream_row_locked(backend: Backend, journal: Journal) -> AsyncIterator[Any]:
    """Hold the row lock on stream "s"'s head from a connection of the test's own (the
    flusher's next commit waits for it, as for another writer's); yield that
    connection, released when the block ends."""
    assert isinstance(journal, PostgresJournal)
    lock = await asyncpg.connect(backend.url.split("?")[0])
    try:
        async with lock.transaction():
            streams = f'"{journal._sql.schema}".ghbot_streams'
            await lock.execute(f"SELECT 1 FROM {streams} WHERE stream = 's' FOR UPDATE")  # noqa: S608
            yield lock
    finally:
        await lock.close()


async def test_a_postgres_append_whose_caller_went_away_leaves_the_rest_answered(
    postgres_backend: Backend,
) -> None:
    """As on SQLite: appends queued behind a commit go in the next one together; one
    whose caller was cancelled is still written, the others get their results, and
    the journal goes on taking appends."""
    journal = await postgres_backend.open()
    await journal.append("s", [NewEvent("t", b"0")])
    async with stream_row_locked(postgres_backend, journal):
        blocked = asyncio.create_task(journal.append("s", [NewEvent("t", b"1")]))
        await asyncio.sleep(0.2)  # the flusher has taken it, and waits
        gone = asyncio.create_task(journal.append("s", [NewEvent("t", b"2")]))
        kept = asyncio.create_task(journal.append("s", [NewEvent("t", b"3")]))
        await asyncio.sleep(0.05)  # both queued
        gone.cancel()
    assert (await asyncio.wait_for(kept, 10)).ok
    assert (await blocked).ok and gone.cancelled()
    assert [e.data for e in await journal.read("s")] == [b"0", b"1", b"2", b"3"]
    assert (await asyncio.wait_for(journal.append("s", [NewEvent("t", b"4")]), 10)).ok


async def test_a_failed_postgres_commit_answers_every_caller_left_waiting(
    postgres_backend: Backend,
) -> None:
    """A commit whose connection is killed fails each append in it that still has a
    caller (one cancelled meanwhile is skipped), and the journal goes on taking
    appends with a new connection."""
    journal = await postgres_backend.open()
    await journal.append("s", [NewEvent("t", b"0")])
    admin = await asyncpg.connect(postgres_backend.url.split("?")[0])

    async def kill_the_flusher_waiting_for(lock: Any) -> None:
        """Terminate the backend waiting for `lock`'s row lock (the flusher's).

        Asked on `admin`, outside a transaction: inside one, PostgreSQL answers
        `pg_stat_activity` from the snapshot it took first."""
        query = "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
        async with asyncio.timeout(10):
            while not (waiting := await admin.fetch(query, lock.get_server_pid())):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        for row in waiting:
            await admin.execute("SELECT pg_terminate_backend($1)", row["pid"])

    try:
        async with stream_row_locked(postgres_backend, journal) as lock:
            first = asyncio.create_task(journal.append("s", [NewEvent("t", b"1")]))
            await kill_the_flusher_waiting_for(lock)  # killed under the first commit
            with pytest.raises(JournalUnavailable):
                await first
            gone = asyncio.create_task(journal.append("s", [NewEvent("t", b"2")]))
            kept = asyncio.create_task(journal.append("s", [NewEvent("t", b"3")]))
            await asyncio.sleep(0.05)  # both queued: one commit
            gone.cancel()
            await kill_the_flusher_waiting_for(lock)  # and under the next
            with pytest.raises(JournalUnavailable):
                await asyncio.wait_for(kept, 10)
    finally:
        await admin.close()
    assert (await asyncio.wait_for(journal.append("s", [NewEvent("t", b"4")]), 10)).ok
    assert [e.data for e in await journal.read("s")] == [b"0", b"4"]
