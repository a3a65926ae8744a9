"""The PostgreSQL journal's schema and statements, for one schema name."""

# S608: the only interpolated text is the schema name, checked against _IDENTIFIER
# and quoted; every value is a bind parameter.
# ruff: noqa: S608

from __future__ import annotations

import re
from typing import Final

from ghbot.errors import UsageError

__all__ = ["Statements"]

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class Statements:
    """Every SQL statement the journal runs, with tables in `schema`.

    Tables are prefixed ``ghbot_`` so the journal can share a schema with others.
    Raise `UsageError` unless `schema` is a plain identifier (it is quoted, never
    interpolated from untrusted input).
    """

    def __init__(self, schema: str) -> None:
        if not _IDENTIFIER.fullmatch(schema):
            raise UsageError(f"schema must be a plain SQL identifier, got {schema!r}")
        self.schema = schema
        p = f'"{schema}".ghbot_'
        self.create = [
            f'CREATE SCHEMA IF NOT EXISTS "{schema}"',
            f"""CREATE TABLE IF NOT EXISTS {p}events (
                stream text NOT NULL, seq bigint NOT NULL, type text NOT NULL,
                data bytea NOT NULL, delivery_guid text, recorded_at double precision NOT NULL,
                version integer NOT NULL, PRIMARY KEY (stream, seq))""",
            f"""CREATE TABLE IF NOT EXISTS {p}streams (
                stream text PRIMARY KEY, shard integer NOT NULL, last_seq bigint NOT NULL)""",
            f"CREATE INDEX IF NOT EXISTS ghbot_streams_shard ON {p}streams (shard, stream)",
            f"""CREATE TABLE IF NOT EXISTS {p}deliveries (
                stream text NOT NULL, delivery_guid text NOT NULL, first_seq bigint NOT NULL,
                last_seq bigint NOT NULL, recorded_at double precision NOT NULL,
                PRIMARY KEY (stream, delivery_guid))""",
            f"""CREATE INDEX IF NOT EXISTS ghbot_deliveries_recorded_at
                ON {p}deliveries (recorded_at)""",
            f"""CREATE TABLE IF NOT EXISTS {p}snapshots (
                stream text NOT NULL, seq bigint NOT NULL, data bytea NOT NULL,
                recorded_at double precision NOT NULL, version integer NOT NULL,
                PRIMARY KEY (stream, seq))""",
            f"""CREATE TABLE IF NOT EXISTS {p}shard_epochs (
                shard integer PRIMARY KEY, epoch bigint NOT NULL)""",
            f"CREATE TABLE IF NOT EXISTS {p}meta (key text PRIMARY KEY, value text NOT NULL)",
        ]
        # The layout record (`ghbot.journal.layout`) and what a reshard runs.
        self.exists = f"SELECT to_regclass('{p}events') IS NOT NULL"
        self.read_meta = f"SELECT key, value FROM {p}meta"
        self.write_meta = (
            f"INSERT INTO {p}meta VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2"
        )
        self.lock_layout = f"LOCK TABLE {p}streams, {p}shard_epochs, {p}meta IN EXCLUSIVE MODE"
        self.stream_shards = f"SELECT stream, shard FROM {p}streams"
        self.move_streams = (
            f"UPDATE {p}streams AS s SET shard = t.sh"
            " FROM unnest($1::text[], $2::integer[]) AS t(n, sh) WHERE s.stream = t.n"
        )
        self.max_epoch = f"SELECT max(epoch) FROM {p}shard_epochs"
        self.drop_epochs = f"DELETE FROM {p}shard_epochs"
        self.set_epochs = f"INSERT INTO {p}shard_epochs SELECT generate_series(0, $1 - 1), $2"
        # FOR SHARE: `acquire_epoch`'s UPDATE waits until appends and snapshots
        # checked against the old epoch have committed, so none lands after it.
        self.epoch_for_share = f"SELECT epoch FROM {p}shard_epochs WHERE shard = $1 FOR SHARE"
        self.epoch = f"SELECT epoch FROM {p}shard_epochs WHERE shard = $1"
        self.bump_epoch = (
            f"INSERT INTO {p}shard_epochs AS e VALUES ($1, 1) ON CONFLICT (shard)"
            " DO UPDATE SET epoch = e.epoch + 1 RETURNING epoch"
        )
        # One round trip creates missing streams, locks every stream of the batch in
        # name order (no deadlock between two batches: $1 is sorted) and reads its
        # head, and takes the epochs FOR SHARE. Holding a stream's row lock is what
        # keeps its head and its recorded deliveries stable until commit; the
        # deliveries are read by a later statement, whose snapshot sees every
        # append that held the lock before.
        self.lock_heads = (
            f"WITH ep AS (SELECT shard, epoch FROM {p}shard_epochs"
            " WHERE shard = ANY($3::integer[]) FOR SHARE),"
            f" h AS (INSERT INTO {p}streams AS s SELECT n, sh, 0"
            " FROM unnest($1::text[], $2::integer[]) AS t(n, sh)"
            # A row without events (left by a fenced append) takes the shard of its
            # next writer, which is the layout's now.
            " ON CONFLICT (stream) DO UPDATE SET last_seq = s.last_seq,"
            " shard = CASE WHEN s.last_seq = 0 THEN excluded.shard ELSE s.shard END"
            " RETURNING s.stream, s.last_seq)"
            " SELECT stream, last_seq, NULL::integer FROM h"
            " UNION ALL SELECT NULL, epoch, shard FROM ep"
        )
        self.seen = (
            f"SELECT d.stream, d.delivery_guid, d.first_seq, d.last_seq FROM {p}deliveries d"
            " JOIN unnest($1::text[], $2::text[]) AS t(s, g)"
            " ON d.stream = t.s AND d.delivery_guid = t.g"
        )
        # Events, deliveries and heads in one round trip ($1..$7 events, $8..$12
        # deliveries, $13..$14 heads).
        self.write = (
            f"WITH e AS (INSERT INTO {p}events SELECT * FROM unnest($1::text[],"
            " $2::bigint[], $3::text[], $4::bytea[], $5::text[], $6::float8[], $7::integer[])),"
            f" d AS (INSERT INTO {p}deliveries SELECT * FROM unnest($8::text[], $9::text[],"
            " $10::bigint[], $11::bigint[], $12::float8[]) ON CONFLICT DO NOTHING)"
            f" UPDATE {p}streams AS s SET last_seq = t.l"
            " FROM unnest($13::text[], $14::bigint[]) AS t(n, l) WHERE s.stream = t.n"
        )
        self.read = (
            f"SELECT seq, type, data, delivery_guid, recorded_at, version FROM {p}events"
            " WHERE stream = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq LIMIT $4"
        )
        self.last_seq = f"SELECT last_seq FROM {p}streams WHERE stream = $1"
        self.delivered = (
            f"SELECT delivery_guid FROM {p}deliveries"
            " WHERE stream = $1 AND delivery_guid = ANY($2::text[])"
        )
        self.save_snapshot = (
            f"INSERT INTO {p}snapshots VALUES ($1, $2, $3, $4, $5) ON CONFLICT (stream, seq)"
            " DO UPDATE SET data = excluded.data, recorded_at = excluded.recorded_at,"
            " version = excluded.version"
        )
        self.trim_snapshots = (
            f"DELETE FROM {p}snapshots WHERE stream = $1 AND seq NOT IN"
            f" (SELECT seq FROM {p}snapshots WHERE stream = $1 ORDER BY seq DESC LIMIT $2)"
        )
        self.load_snapshot = (
            f"SELECT seq, data, recorded_at, version FROM {p}snapshots"
            " WHERE stream = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1"
        )
        self.list_streams = f"SELECT stream FROM {p}streams WHERE last_seq > 0 ORDER BY stream"
        self.list_shard_streams = (
            f"SELECT stream FROM {p}streams WHERE shard = $1 AND last_seq > 0 ORDER BY stream"
        )
        # At most $2 rows a statement (by primary key), so a prune holds few row locks
        # at a time: an append of a GUID being forgotten waits for one batch at most.
        self.prune = (
            f"DELETE FROM {p}deliveries d USING (SELECT stream, delivery_guid"
            f" FROM {p}deliveries WHERE recorded_at < $1 LIMIT $2) old"
            " WHERE d.stream = old.stream AND d.delivery_guid = old.delivery_guid"
        )
        self.prune_shard = (
            f"DELETE FROM {p}deliveries d USING (SELECT x.stream, x.delivery_guid"
            f" FROM {p}deliveries x JOIN {p}streams s ON s.stream = x.stream"
            " WHERE s.shard = $3 AND x.recorded_at < $1 LIMIT $2) old"
            " WHERE d.stream = old.stream AND d.delivery_guid = old.delivery_guid"
        )
