"""The PostgreSQL journal's reshard: one transaction.

Events, deliveries and snapshots are keyed by stream alone; only ``ghbot_streams``
says which shard a stream is in (what `list_streams(shard=)` and `prune_deliveries(
shard=)` go by), and ``ghbot_shard_epochs`` holds the shards' epochs. So a reshard
rewrites those two tables and the layout record, in one transaction that first locks
them (appends wait; when they go on, their epochs are stale and they are refused): a
crash leaves the journal as it was, and running it again does it all.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from ghbot.errors import UsageError
from ghbot.journal.layout import SHARD_COUNT, Resharded, plan_moves
from ghbot.journal.postgres import _unavailable_on_failure
from ghbot.journal.postgres_sql import Statements

__all__ = ["reshard_postgres"]


async def reshard_postgres(
    dsn: str, schema: str, to: int, route: Callable[[str, int], int]
) -> Resharded:
    """Move every stream of the journal in `schema` to its shard under `to` (see module).

    `route(stream, to)` names each stream's shard. Every shard of the new count gets one
    epoch, above any granted before. Raise `UsageError` for a `to` below 1 or a bad
    schema name, `JournalUnavailable` if the database cannot be reached.
    """
    if to < 1:
        raise UsageError(f"the number of virtual shards must be >= 1, got {to}")
    sql = Statements(schema)
    async with _unavailable_on_failure():
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", sql.schema)
                for statement in sql.create:
                    await conn.execute(statement)
                await conn.execute(sql.lock_layout)
                record = dict(await conn.fetch(sql.read_meta))
                placement = {row[0]: [row[1]] for row in await conn.fetch(sql.stream_shards)}
                moves = plan_moves(placement, to, route)
                names = [name for streams in moves.values() for name in streams]
                targets = [target for (_, target), streams in moves.items() for _ in streams]
                await conn.execute(sql.move_streams, names, targets)
                epoch = int(await conn.fetchval(sql.max_epoch) or 0) + 1
                await conn.execute(sql.drop_epochs)
                await conn.execute(sql.set_epochs, to, epoch)
                await conn.execute(sql.write_meta, SHARD_COUNT, str(to))
        finally:
            await conn.close()
    before = int(record[SHARD_COUNT]) if SHARD_COUNT in record else None
    return Resharded(before, to, len(names), len(placement), epoch)
