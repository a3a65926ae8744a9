"""The journal records its shard count, refuses another, and `reshard_journal` moves it:
on SQLite and PostgreSQL, for a journal with a record and one made before records."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from ghbot.errors import ConfigError, Fenced, UsageError
from ghbot.journal import NewEvent, open_journal, reshard_journal, shard_for, sqlite_layout
from ghbot.journal.layout import plan_moves
from ghbot.journal.postgres import PostgresJournal
from ghbot.journal.sqlite_file import connect, create_schema, transaction
from ghbot.journal.sqlite_layout import META_FILE

if TYPE_CHECKING:
    from conftest import Backend

STREAMS = [f"s{n}" for n in range(12)]


async def _write(url: str, count: int) -> None:
    journal = await open_journal(url, shard_count=count)
    for stream in STREAMS:
        await journal.append(stream, [NewEvent("t", stream.encode())], delivery_guid=stream)
    await journal.close()


async def _erase_record(backend: Backend) -> None:
    """Make the journal look made before journals recorded their count."""
    if backend.name == "sqlite":
        (Path(backend.url.removeprefix("sqlite://")) / META_FILE).unlink()
        return
    url, _, schema = backend.url.rpartition("schema=")
    conn = await asyncpg.connect(url.rstrip("?&"))
    try:
        await conn.execute(f'DELETE FROM "{schema}".ghbot_meta')  # noqa: S608 - the test's own
    finally:
        await conn.close()


async def test_another_count_than_the_recorded_one_is_refused_naming_both(
    durable: Backend,
) -> None:
    await _write(durable.url, 4)
    with pytest.raises(ConfigError) as refused:
        await open_journal(durable.url, shard_count=8)
    message = str(refused.value)
    assert "created with 4 virtual shards, but 8 are configured" in message
    assert "GHBOT_VSHARDS=4" in message and "ghbot journal reshard --to 8" in message
    journal = await open_journal(durable.url)  # no count: the recorded one
    assert journal.shard_count == 4
    assert await journal.list_streams() == sorted(STREAMS)
    await journal.close()


async def test_a_journal_without_a_record_takes_the_configured_count(durable: Backend) -> None:
    await _write(durable.url, 4)
    await _erase_record(durable)
    journal = await open_journal(durable.url)  # no count: the default, not recorded
    assert journal.shard_count == 16
    await journal.close()
    journal = await open_journal(durable.url, shard_count=4)  # recorded from here on
    assert [await journal.read(s) for s in STREAMS[:1]] != [[]]
    await journal.close()
    with pytest.raises(ConfigError, match="created with 4 virtual shards"):
        await open_journal(durable.url, shard_count=8)


async def test_resharding_moves_every_stream_and_records_the_new_count(durable: Backend) -> None:
    await _write(durable.url, 4)
    journal = await open_journal(durable.url, shard_count=4)
    old_epoch = max([await journal.acquire_epoch(shard) for shard in range(4)])
    await journal.close()
    for count in (8, 3):
        done = await reshard_journal(durable.url, count)
        assert done.to_count == count and done.epoch > old_epoch
        journal = await open_journal(durable.url, shard_count=count)
        for shard in range(count):
            held = await journal.list_streams(shard=shard)
            assert held == sorted(s for s in STREAMS if shard_for(s, count) == shard)
            assert await journal.current_epoch(shard) == done.epoch
        for stream in STREAMS:
            [record] = await journal.read(stream)
            assert record.data == stream.encode()
            again = await journal.append(stream, [NewEvent("t", b"")], delivery_guid=stream)
            assert again.status == "duplicate"
        await journal.close()
        old_epoch = done.epoch


async def test_a_reshard_that_crashed_midway_refuses_opens_and_finishes_when_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ghbot.journal import sqlite_layout

    url = f"sqlite://{tmp_path}/j"
    await _write(url, 2)
    real_delete, deletes = sqlite_layout._delete, []

    def crash_on_second(source: Path, names: str) -> None:
        deletes.append(names)
        if len(deletes) == 2:  # copied, not yet deleted at the source
            raise OSError("power cut")
        real_delete(source, names)

    monkeypatch.setattr(sqlite_layout, "_delete", crash_on_second)
    with pytest.raises(OSError, match="power cut"):
        await reshard_journal(url, 5)
    monkeypatch.undo()
    for count in (2, 5):
        with pytest.raises(ConfigError, match=r"resharded from 2 to 5 .* --to 5` again"):
            await open_journal(url, shard_count=count)
    with pytest.raises(UsageError, match="reshard to 5 virtual shards is unfinished"):
        await reshard_journal(url, 3)
    done = await reshard_journal(url, 5)
    journal = await open_journal(url, shard_count=5)
    assert done.moved >= 1
    assert await journal.list_streams() == sorted(STREAMS)  # each once: no copy left
    for stream in STREAMS:
        assert [r.data for r in await journal.read(stream)] == [stream.encode()]
    await journal.close()


async def test_shrinking_removes_the_shard_files_above_the_new_count(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/j"
    await _write(url, 6)
    await reshard_journal(url, 2)
    names = sorted(p.name for p in (tmp_path / "j").glob("shard-*.sqlite3"))
    assert names == ["shard-00000.sqlite3", "shard-00001.sqlite3"]


async def test_a_stream_split_over_two_shards_is_refused_and_nothing_moves(
    tmp_path: Path,
) -> None:
    url = f"sqlite://{tmp_path}/j"
    journal = await open_journal(url, shard_count=4)
    await journal.append("split", [NewEvent("t", b"1")], shard=0)
    await journal.append("split", [NewEvent("t", b"2")], shard=1)  # another count's shard
    await journal.close()
    with pytest.raises(UsageError, match="history is split"):
        await reshard_journal(url, 2)
    journal = await open_journal(url, shard_count=4)  # untouched: no reshard pending
    assert await journal.list_streams(shard=1) == ["split"]
    await journal.close()


def test_plan_moves_groups_streams_by_source_and_target() -> None:
    def route(stream: str, count: int) -> int:
        return int(stream[1:]) % count

    placement = {"s0": [0], "s1": [1], "s2": [0], "s4": [0], "s6": [0], "s7": [1]}
    assert plan_moves(placement, 4, route) == {(0, 2): ["s2", "s6"], (1, 3): ["s7"]}
    resumed = {"s2": [0, 2]}  # a crashed run copied it
    assert plan_moves(resumed, 4, route, resuming=True) == {(0, 2): ["s2"]}
    with pytest.raises(UsageError, match="split"):
        plan_moves(resumed, 4, route)
    with pytest.raises(UsageError, match="split"):
        plan_moves({"s2": [0, 1]}, 4, route, resuming=True)


@pytest.mark.postgres
async def test_a_postgres_reshard_that_fails_changes_nothing(postgres_backend: Backend) -> None:
    await _write(postgres_backend.url, 4)

    def route(stream: str, count: int) -> Any:
        if stream == STREAMS[-1]:
            raise RuntimeError("routing failed")
        return shard_for(stream, count)

    with pytest.raises(RuntimeError):
        await reshard_journal(postgres_backend.url, 8, route)
    journal = await open_journal(postgres_backend.url, shard_count=4)
    assert isinstance(journal, PostgresJournal)
    for shard in range(4):
        held = await journal.list_streams(shard=shard)
        assert held == sorted(s for s in STREAMS if shard_for(s, 4) == shard)
    await journal.close()


@pytest.mark.postgres
async def test_a_fenced_postgres_append_leaves_a_new_stream_to_its_next_writers_shard(
    postgres_backend: Backend,
) -> None:
    url = postgres_backend.url
    await _write(url, 4)
    new = next(f"new-{n}" for n in range(100) if shard_for(f"new-{n}", 8) >= 4)
    old_shard, new_shard = shard_for(new, 4), shard_for(new, 8)
    left = await open_journal(url, shard_count=4)  # a shard left running
    stale = await left.acquire_epoch(old_shard)
    await reshard_journal(url, 8)
    with pytest.raises(Fenced):
        await left.append(new, [NewEvent("t", b"late")], shard=old_shard, epoch=stale)
    await left.close()
    journal = await open_journal(url, shard_count=8)
    try:
        epoch = await journal.acquire_epoch(new_shard)
        await journal.append(new, [NewEvent("t", b"x")], shard=new_shard, epoch=epoch)
        # Recovery lists a shard's streams: the stream is its shard's, not the zombie's.
        assert new in await journal.list_streams(shard=new_shard)
        assert new not in await journal.list_streams(shard=old_shard)
    finally:
        await journal.close()


def test_the_record_is_a_table_beside_the_shard_files(tmp_path: Path) -> None:
    from ghbot.journal.sqlite import SqliteJournal

    SqliteJournal(tmp_path, shard_count=3)
    conn = sqlite3.connect(tmp_path / META_FILE)
    assert conn.execute("SELECT key, value FROM journal_meta").fetchall() == [("shard_count", "3")]
    conn.close()


async def test_a_writer_left_running_through_a_reshard_is_fenced(durable: Backend) -> None:
    await _write(durable.url, 4)
    left = await open_journal(durable.url, shard_count=4)
    shard = shard_for(STREAMS[0], 4)
    epoch = await left.acquire_epoch(shard)
    await reshard_journal(durable.url, 8)
    with pytest.raises(Fenced):
        await left.append(STREAMS[0], [NewEvent("t", b"late")], shard=shard, epoch=epoch)
    await left.close()


async def test_a_stream_a_writer_makes_while_a_sqlite_reshard_fences_still_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A writer left running (its epoch still current) makes a new stream after the
    # reshard listed the streams and before its fence: that stream moves too.
    url = f"sqlite://{tmp_path}/j"
    await _write(url, 4)
    late = next(f"late-{n}" for n in range(100) if shard_for(f"late-{n}", 8) >= 4)
    old_file = tmp_path / "j" / f"shard-{shard_for(late, 4):05d}.sqlite3"
    fence = sqlite_layout._fence

    def write_then_fence(directory: Path, shards: list[int]) -> int:
        conn = sqlite3.connect(old_file)
        try:
            for table in ("events", "deliveries"):
                columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
                chosen = ", ".join("?" if c == "stream" else c for c in columns)
                conn.execute(
                    f"INSERT INTO {table} ({', '.join(columns)})"  # noqa: S608 - the test's own
                    f" SELECT {chosen} FROM {table} WHERE stream = ?",
                    (late, _any_stream_of(conn)),
                )
            conn.commit()
        finally:
            conn.close()
        return fence(directory, shards)

    monkeypatch.setattr(sqlite_layout, "_fence", write_then_fence)
    await reshard_journal(url, 8)
    journal = await open_journal(url)
    try:
        assert [e.data for e in await journal.read(late)] != []
        assert late in await journal.list_streams(shard=shard_for(late, 8))
    finally:
        await journal.close()
    conn = sqlite3.connect(old_file)
    try:
        assert (
            conn.execute("SELECT count(*) FROM events WHERE stream = ?", (late,)).fetchone()[0] == 0
        )
    finally:
        conn.close()


async def test_an_epoch_granted_while_a_sqlite_reshard_fences_is_fenced_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite://{tmp_path}/j"
    await _write(url, 4)
    left = await open_journal(url, shard_count=4)
    shard = shard_for(STREAMS[0], 4)
    fence_at = sqlite_layout._fence_at
    granted: list[int] = []

    def grant_then_fence(directory: Path, shards: list[int], epoch: int) -> int | None:
        if not granted:  # as `acquire_epoch` would, after the fence read the epochs
            conn = sqlite3.connect(sqlite_layout.shard_path(directory, shard))
            conn.execute("UPDATE shard_epochs SET epoch = ? WHERE shard = ?", (epoch, shard))
            conn.commit()
            conn.close()
            granted.append(epoch)
        return fence_at(directory, shards, epoch)

    monkeypatch.setattr(sqlite_layout, "_fence_at", grant_then_fence)
    try:
        await left.acquire_epoch(shard)  # the row `acquire_epoch` raises
        done = await reshard_journal(url, 8)
        assert done.epoch == granted[0] + 1
        with pytest.raises(Fenced):
            await left.append(STREAMS[0], [NewEvent("t", b"late")], shard=shard, epoch=granted[0])
    finally:
        await left.close()


def _any_stream_of(conn: sqlite3.Connection) -> str:
    return str(conn.execute("SELECT stream FROM events LIMIT 1").fetchone()[0])


def _events_layout(path: Path) -> tuple[bool, list[str]]:
    """Return whether `path`'s events table is WITHOUT ROWID, and its indexes."""
    conn = sqlite3.connect(path)
    try:
        [sql] = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()
        indexes = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
        ).fetchall()
    finally:
        conn.close()
    return "WITHOUT ROWID" in sql, sorted(name for (name,) in indexes)


async def test_new_files_append_events_in_rowid_order_and_older_clustered_ones_keep_theirs(
    tmp_path: Path,
) -> None:
    """New shard files keep events in a rowid table with a unique (stream, seq) index;
    a file an earlier ghbot made (events clustered WITHOUT ROWID) is read and written
    as it is, without a second index, and a reshard moves rows between the two."""
    directory = tmp_path / "j"
    directory.mkdir()
    old = directory / "shard-00000.sqlite3"
    conn = connect(old)
    transaction(conn, lambda c: create_schema(c, clustered=True))
    conn.close()
    url = f"sqlite://{directory}"
    journal = await open_journal(url, shard_count=2)
    try:
        for stream in STREAMS:
            await journal.append(stream, [NewEvent("a", b"1"), NewEvent("b", b"2")])
            assert (await journal.append(stream, [NewEvent("c", b"3")])).first_seq == 3
        assert await journal.list_streams() == sorted(STREAMS)
        assert {shard_for(s, 2) for s in STREAMS} == {0, 1}  # both files are used
    finally:
        await journal.close()
    assert _events_layout(old) == (True, [])
    assert _events_layout(directory / "shard-00001.sqlite3") == (False, ["events_key"])
    await reshard_journal(url, 1)  # everything into the clustered file
    journal = await open_journal(url, shard_count=1)
    try:
        for stream in STREAMS:
            records = await journal.read(stream)
            assert [(r.seq, r.type, r.data) for r in records] == [
                (1, "a", b"1"),
                (2, "b", b"2"),
                (3, "c", b"3"),
            ]
            assert await journal.last_seq(stream) == 3
    finally:
        await journal.close()
    assert _events_layout(old) == (True, [])
