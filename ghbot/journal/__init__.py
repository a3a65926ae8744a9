"""The event-sourced journal: streams of events, snapshots, epochs for fencing.

Open one with `open_journal`::

    journal = await open_journal("sqlite:///var/lib/ghbot/journal")
    journal = await open_journal("postgresql://ghbot@db/ghbot?schema=ghbot")

URL options (query parameters): ``shards`` (streams are spread over this many shards
when the caller names none; default: the count the journal recorded when it was
created, 16 for a new one; fixed for the journal's life, but see `reshard_journal`)
for both, and ``schema`` (default ``public``) for PostgreSQL; other PostgreSQL
parameters go to asyncpg. See `Journal` for the contract every backend keeps.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ghbot.digits import whole_number
from ghbot.errors import UsageError
from ghbot.journal.base import (
    DEFAULT_KEEP_SNAPSHOTS,
    DEFAULT_RETENTION,
    DEFAULT_SHARD_COUNT,
    Journal,
)
from ghbot.journal.faulty import FaultyJournal
from ghbot.journal.layout import Resharded
from ghbot.journal.plan import shard_for
from ghbot.journal.records import (
    CONFLICT,
    DUPLICATE,
    FENCED,
    OK,
    AppendRequest,
    AppendResult,
    AppendStatus,
    Codec,
    EventRecord,
    NewEvent,
    Snapshot,
    decode_event,
    decode_snapshot,
    encode,
)

__all__ = [
    "CONFLICT",
    "DEFAULT_KEEP_SNAPSHOTS",
    "DEFAULT_RETENTION",
    "DEFAULT_SHARD_COUNT",
    "DUPLICATE",
    "FENCED",
    "OK",
    "AppendRequest",
    "AppendResult",
    "AppendStatus",
    "Codec",
    "EventRecord",
    "FaultyJournal",
    "Journal",
    "NewEvent",
    "Resharded",
    "Snapshot",
    "check_url",
    "decode_event",
    "decode_snapshot",
    "encode",
    "open_journal",
    "reshard_journal",
    "shard_for",
]


def check_url(url: str) -> None:
    """Raise `UsageError` unless `url` looks like a journal URL `open_journal` can take:
    ``sqlite:///path/to/dir`` (no parameter but `shards`) or
    ``postgresql://user@host:port,host:port/db`` (its ports numbers, a `schema` a
    plain SQL identifier; other parameters go to the driver), `shards` a positive
    integer. Checked where the URL is read, so that a mistake is said at start, not in
    each shard as it opens the journal. The message never holds the URL (its password)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": a `[` or `]` not percent-encoded
        raise UsageError(
            "the journal URL does not parse: percent-encode special characters "
            "in its user name and password"
        ) from None
    params = dict(parse_qsl(parts.query))
    shards = params.pop("shards", "1")
    if (count := whole_number(shards)) is None or count < 1:
        raise UsageError(f"journal URL: shards must be a positive integer, got {shards!r}")
    if parts.scheme == "sqlite":
        if parts.netloc or not parts.path or params:
            raise UsageError("journal URL must look like sqlite:///path/to/dir")
        return
    if parts.scheme not in ("postgresql", "postgres"):
        raise UsageError(f"journal URL scheme must be sqlite or postgresql, not {parts.scheme!r}")
    for host in parts.netloc.rpartition("@")[2].split(","):  # libpq: several hosts
        port = host.rpartition("]")[2] if host.startswith("[") else host
        port = port.rpartition(":")[2] if ":" in port else ""
        if port and ((number := whole_number(port)) is None or number > 65535):
            raise UsageError("journal URL: a port is not a number from 0 to 65535")
    from ghbot.journal.postgres_sql import Statements

    Statements(params.pop("schema", "public"))  # raises for a schema name that is not plain


async def reshard_journal(
    url: str, to: int, route: Callable[[str, int], int] = shard_for
) -> Resharded:
    """Move every stream of the journal at `url` to its shard under `to` shards.

    Offline: nothing may write the journal meanwhile (what does is fenced: every
    shard gets a new epoch, above any granted). `route(stream, to)` names a stream's
    new shard: `shard_for` for streams whose callers name no shard; the runtime passes
    its own (`actors.wire.stream_vshard`). Events, sequence numbers, snapshots and
    delivery GUIDs move with their stream; the new count is recorded, so the journal
    then opens with `to` and refuses the old count. PostgreSQL does it in one
    transaction; SQLite moves streams a group at a time and is safe to run again after
    a crash (until it finishes, the journal refuses to open). A `shards` URL
    parameter is checked (`check_url`), not used. Raise `UsageError` for a bad URL or
    `to`, or a stream whose history is split; `JournalUnavailable` if the store cannot be reached.
    """
    check_url(url)  # its scheme, shape, `shards` and `schema`: refused here if wrong
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    params.pop("shards", None)
    if parts.scheme == "sqlite":
        from ghbot.journal.sqlite_layout import reshard_sqlite

        return await asyncio.to_thread(reshard_sqlite, Path(parts.path), to, route)
    from ghbot.journal.postgres_layout import reshard_postgres

    schema = params.pop("schema", "public")
    dsn = urlunsplit(parts._replace(query=urlencode(params)))
    return await reshard_postgres(dsn, schema, to, route)


async def open_journal(url: str, **options: Any) -> Journal:
    """Open the journal at `url`: ``sqlite:///dir`` or ``postgresql://…``.

    `options` go to the backend's constructor (`SqliteJournal` or
    `PostgresJournal.connect`) and override the URL's query parameters. Raise
    `UsageError` for an unknown scheme or a bad option, `JournalUnavailable` if
    PostgreSQL cannot be reached.
    """
    check_url(url)  # its scheme, shape, `shards` and `schema`: refused here if wrong
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    if "shards" in params:
        options.setdefault("shard_count", int(params.pop("shards")))
    if parts.scheme == "sqlite":
        from ghbot.journal.sqlite import SqliteJournal

        _known(SqliteJournal, options)
        return SqliteJournal(parts.path, **options)
    if "schema" in params:
        options.setdefault("schema", params.pop("schema"))
    from ghbot.journal.postgres import PostgresJournal

    dsn = urlunsplit(parts._replace(query=urlencode(params)))
    _known(PostgresJournal.connect, options)
    return await PostgresJournal.connect(dsn, **options)


def _known(opener: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """Raise `UsageError` naming the options `opener` does not take."""
    taken = inspect.signature(opener).parameters
    unknown = sorted(set(options) - set(taken))
    if unknown:
        raise UsageError(
            f"journal option(s) {', '.join(unknown)} not among {', '.join(sorted(taken))}"
        )
