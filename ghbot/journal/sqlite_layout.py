"""The SQLite journal's layout record (``journal.sqlite3``) and its reshard.

The record is a ``journal_meta`` table of key and value in ``journal.sqlite3``, beside
the shard files. A reshard moves rows between shard files, which no one transaction
can span (SQLite in WAL mode commits attached files one by one), so it is made safe
to run again instead: it first records where it is going (`RESHARDING_TO`, which makes
every open refuse the journal until it is done), then fences every shard (one new
epoch, above any granted, in every shard file of the old count and the new), then lists
the streams (after the fence, so none a writer left running made is missed), then per
group of streams copies their rows into the new shard file (replacing what a crashed
run copied) and only then deletes them from the old one, then removes the shard files
above the new count, and last records the new count.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from ghbot.errors import JournalUnavailable, UsageError
from ghbot.journal.layout import (
    RESHARDING_TO,
    SHARD_COUNT,
    Resharded,
    plan_moves,
    settle_count,
)
from ghbot.journal.sqlite_file import connect, create_schema, transaction

__all__ = ["META_FILE", "open_record", "reshard_sqlite", "shard_path"]

META_FILE: Final = "journal.sqlite3"
_SHARD_FILE: Final = re.compile(r"shard-(\d+)\.sqlite3")
_META_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS journal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
)
_TABLES: Final = ("events", "deliveries", "snapshots")
_GROUP: Final = 500  # streams copied per transaction
_IN_LIST: Final = "stream IN (SELECT value FROM json_each(?))"


def shard_path(directory: Path, shard: int) -> Path:
    """Return the file of `shard` under `directory`."""
    return directory / f"shard-{shard:05d}.sqlite3"


def _shard_files(directory: Path) -> dict[int, Path]:
    names = ((_SHARD_FILE.fullmatch(p.name), p) for p in directory.iterdir())
    return {int(m.group(1)): p for m, p in names if m}


@contextmanager
def _unavailable_on_error() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise JournalUnavailable(f"sqlite: {exc}") from exc


def _read(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM journal_meta").fetchall())


def open_record(directory: Path, configured: int | None, default: int) -> int:
    """Return the journal's shard count, recording it first if it has no record.

    A journal without a record is a new one (recorded: `configured`, else `default`)
    or one made before journals recorded their count: that one is taken to have the
    `configured` count, which is recorded; opened without a count, it gets `default`
    and nothing is recorded. Raise `ConfigError` for another count than the recorded
    one, or an unfinished reshard (`settle_count`); `JournalUnavailable` if the file
    cannot be read or written.
    """
    with _unavailable_on_error():
        conn = connect(directory / META_FILE)
        try:

            def settle(conn: sqlite3.Connection) -> dict[str, str]:
                conn.execute(_META_SCHEMA)
                record = _read(conn)
                if SHARD_COUNT in record:
                    return record
                if configured is None and _shard_files(directory):
                    return {SHARD_COUNT: str(default)}
                count = str(default if configured is None else configured)
                conn.execute("INSERT INTO journal_meta VALUES (?, ?)", (SHARD_COUNT, count))
                return {SHARD_COUNT: count}

            record = transaction(conn, settle)
        finally:
            conn.close()
    return settle_count(record, configured)


def reshard_sqlite(directory: Path, to: int, route: Callable[[str, int], int]) -> Resharded:
    """Move every stream of the journal in `directory` to its shard under `to` (see module).

    `route(stream, to)` names each stream's shard. Raise `UsageError` for a `to` below
    1, another reshard left unfinished, or a stream whose history is split
    (`plan_moves`); `JournalUnavailable` if a file cannot be read or written.
    """
    if to < 1:
        raise UsageError(f"the number of virtual shards must be >= 1, got {to}")
    if not directory.is_dir():
        raise UsageError(f"no journal at {directory}: no such directory")
    with _unavailable_on_error():
        meta = connect(directory / META_FILE)
        try:
            return _reshard(meta, directory, to, route)
        finally:
            meta.close()


def _reshard(
    meta: sqlite3.Connection, directory: Path, to: int, route: Callable[[str, int], int]
) -> Resharded:
    meta.execute(_META_SCHEMA)
    record = _read(meta)
    going = record.get(RESHARDING_TO)
    if going is not None and int(going) != to:
        raise UsageError(
            f"a reshard to {going} virtual shards is unfinished: run "
            f"`ghbot journal reshard --to {going}` to finish it first"
        )
    before = int(record[SHARD_COUNT]) if SHARD_COUNT in record else None
    resuming = going is not None
    plan_moves(_placement(_shard_files(directory)), to, route, resuming=resuming)  # refused?
    _set_record(meta, {SHARD_COUNT: str(before or to), RESHARDING_TO: str(to)})
    # Every shard the old layout or the new one may write: a writer's file made since
    # the listing above is fenced too.
    shards = set(_shard_files(directory)) | set(range(max(to, before or 0)))
    epoch = _fence(directory, sorted(shards))
    # Listed again once no writer holds an epoch: a stream made between the listing
    # above and the fence moves too.
    files = _shard_files(directory)
    placement = _placement(files)
    moves = plan_moves(placement, to, route, resuming=resuming)
    for (source, target), streams in moves.items():
        for start in range(0, len(streams), _GROUP):
            _move(files[source], shard_path(directory, target), streams[start : start + _GROUP])
    for shard, path in files.items():
        if shard >= to:
            _remove_empty(path)
    _set_record(meta, {SHARD_COUNT: str(to)}, drop=RESHARDING_TO)
    moved = sum(len(streams) for streams in moves.values())
    return Resharded(before, to, moved, len(placement), epoch)


def _placement(files: dict[int, Path]) -> dict[str, list[int]]:
    """Map each stream to the shards whose files hold any of its rows."""
    placement: dict[str, list[int]] = {}
    for shard, path in files.items():
        for stream in _streams(path):
            placement.setdefault(stream, []).append(shard)
    return placement


def _set_record(meta: sqlite3.Connection, values: dict[str, str], drop: str = "") -> None:
    def write(conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT OR REPLACE INTO journal_meta VALUES (?, ?)", values.items())
        conn.execute("DELETE FROM journal_meta WHERE key = ?", (drop,))

    transaction(meta, write)


def _open_shard(path: Path) -> sqlite3.Connection:
    conn = connect(path)
    try:
        transaction(conn, create_schema)
    except BaseException:
        conn.close()
        raise
    return conn


def _streams(path: Path) -> set[str]:
    conn = _open_shard(path)
    try:
        union = " UNION ".join(f"SELECT stream FROM {table}" for table in _TABLES)  # noqa: S608
        return {row[0] for row in conn.execute(union)}
    finally:
        conn.close()


def _fence(directory: Path, shards: list[int]) -> int:
    """Give every shard one new epoch, above all granted; return it.

    A writer still holding an epoch (a shard left running) is refused from here on,
    before any row moves; the next shard owners take the epoch after it. Each file's
    epoch is read and written in one transaction: a file whose epoch an
    `acquire_epoch` raised to the chosen one meanwhile starts the fence over, one
    above it.
    """
    granted = 0
    for shard in shards:
        path = shard_path(directory, shard)
        if path.exists():
            conn = _open_shard(path)
            try:
                row = conn.execute("SELECT max(epoch) FROM shard_epochs").fetchone()
                granted = max(granted, int(row[0] or 0))
            finally:
                conn.close()
    epoch = granted + 1
    while (higher := _fence_at(directory, shards, epoch)) is not None:
        epoch = higher + 1
    return epoch


def _fence_at(directory: Path, shards: list[int], epoch: int) -> int | None:
    """Set every shard's epoch to `epoch`; return None, or a file's epoch at or above
    it (granted since `_fence` read them), and stop there."""
    for shard in shards:
        conn = _open_shard(shard_path(directory, shard))
        try:

            def fence(conn: sqlite3.Connection, shard: int = shard) -> int | None:
                row = conn.execute("SELECT max(epoch) FROM shard_epochs").fetchone()
                if int(row[0] or 0) >= epoch:
                    return int(row[0])
                conn.execute("INSERT OR REPLACE INTO shard_epochs VALUES (?, ?)", (shard, epoch))
                return None

            higher = transaction(conn, fence)
        finally:
            conn.close()
        if higher is not None:
            return higher
    return None


def _move(source: Path, target: Path, streams: list[str]) -> None:
    """Copy `streams`' rows from `source` into `target` (replacing any), then delete them."""
    names = json.dumps(streams)
    _copy(source, target, names)
    _delete(source, names)


def _copy(source: Path, target: Path, names: str) -> None:
    conn = _open_shard(target)
    try:
        conn.execute("ATTACH DATABASE ? AS src", (str(source),))

        def copy(c: sqlite3.Connection) -> None:
            for table in _TABLES:
                c.execute(f"DELETE FROM main.{table} WHERE {_IN_LIST}", (names,))  # noqa: S608
                order = " ORDER BY rowid" if table == "deliveries" else ""
                c.execute(
                    f"INSERT INTO main.{table} SELECT * FROM src.{table}"  # noqa: S608
                    f" WHERE {_IN_LIST}{order}",
                    (names,),
                )

        transaction(conn, copy)
        conn.execute("DETACH DATABASE src")
    finally:
        conn.close()


def _delete(source: Path, names: str) -> None:
    conn = _open_shard(source)
    try:

        def delete(c: sqlite3.Connection) -> None:
            for table in _TABLES:
                c.execute(f"DELETE FROM {table} WHERE {_IN_LIST}", (names,))  # noqa: S608

        transaction(conn, delete)
    finally:
        conn.close()


def _remove_empty(path: Path) -> None:
    """Delete a shard file above the new count, once it holds no stream."""
    if _streams(path):
        raise UsageError(f"{path} still holds streams after the move; run the reshard again")
    # The WAL and its index first: a crash in between must not leave a WAL that a later
    # file of the same name would replay.
    for suffix in ("-wal", "-shm", ""):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
