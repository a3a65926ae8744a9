"""The event-sourced journal: streams of events, snapshots, epochs for fencing.

Open one with `open_journal`::

    journal = await open_journal("sqlite:///var/lib/ghbot/journal")
    journal = await open_journal("postgresql://ghbot@db/ghbot?schema=ghbot")

URL options (query parameters): ``shards`` (streams are spread over this many shards
when the caller names none; default 16, fixed for the journal's life) for both, and
``schema`` (default ``public``) for PostgreSQL; other PostgreSQL parameters go to
asyncpg. See `Journal` for the contract every backend keeps.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ghbot.errors import UsageError
from ghbot.journal.base import (
    DEFAULT_KEEP_SNAPSHOTS,
    DEFAULT_RETENTION,
    DEFAULT_SHARD_COUNT,
    Journal,
)
from ghbot.journal.faulty import FaultyJournal
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
    "Snapshot",
    "decode_event",
    "decode_snapshot",
    "encode",
    "open_journal",
    "shard_for",
]


async def open_journal(url: str, **options: Any) -> Journal:
    """Open the journal at `url`: ``sqlite:///dir`` or ``postgresql://…``.

    `options` go to the backend's constructor (`SqliteJournal` or
    `PostgresJournal.connect`) and override the URL's query parameters. Raise
    `UsageError` for an unknown scheme or a bad option, `JournalUnavailable` if
    PostgreSQL cannot be reached.
    """
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    if "shards" in params:
        try:
            options.setdefault("shard_count", int(params.pop("shards")))
        except ValueError:
            raise UsageError("journal URL: shards must be an integer") from None
    if parts.scheme == "sqlite":
        if parts.netloc or not parts.path or params:
            raise UsageError(f"journal URL must look like sqlite:///path/to/dir, got {url!r}")
        from ghbot.journal.sqlite import SqliteJournal

        return SqliteJournal(parts.path, **options)
    if parts.scheme in ("postgresql", "postgres"):
        if "schema" in params:
            options.setdefault("schema", params.pop("schema"))
        from ghbot.journal.postgres import PostgresJournal

        dsn = urlunsplit(parts._replace(query=urlencode(params)))
        return await PostgresJournal.connect(dsn, **options)
    raise UsageError(f"journal URL scheme must be sqlite or postgresql, not {parts.scheme!r}")
