"""The journal's layout record: how many shards its streams are partitioned into.

A stream lives in one shard (`Journal`); which one follows from the shard count
(`shard_for`, or the runtime's virtual shard of the stream's installation). So the
count is part of the data: a journal records the one it was created with (SQLite: in
``journal.sqlite3`` beside the shard files; PostgreSQL: in the ``ghbot_meta`` table),
and opening it with another raises `ConfigError`, naming both counts and the command
that changes it (`ghbot journal reshard --to N`, see `ghbot.journal.reshard_journal`).

The decision here is pure; each backend reads and writes the record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ghbot.errors import ConfigError, UsageError

__all__ = [
    "RESHARDING_TO",
    "SHARD_COUNT",
    "Resharded",
    "plan_moves",
    "reshard_command",
    "settle_count",
]

SHARD_COUNT: Final = "shard_count"
"""The record's key for the number of shards the streams are partitioned into."""
RESHARDING_TO: Final = "resharding_to"
"""Present while a reshard is unfinished: the count it moves the streams to."""


def reshard_command(count: int) -> str:
    """Return the command that moves a stopped deployment's journal to `count` shards."""
    return f"ghbot journal reshard --to {count}"


def settle_count(record: Mapping[str, str], configured: int | None) -> int:
    """Return the journal's shard count from its `record`, checked against `configured`.

    `configured` None takes the recorded count. Raise `ConfigError` when they differ
    (both numbers and the two ways out in the message), or when a reshard was left
    unfinished (run it again to finish it).
    """
    recorded = int(record[SHARD_COUNT])
    if RESHARDING_TO in record:
        to = int(record[RESHARDING_TO])
        raise ConfigError(
            f"the journal is being resharded from {recorded} to {to} virtual shards and "
            f"that has not finished: run `{reshard_command(to)}` again to finish it"
        )
    if configured is not None and configured != recorded:
        raise ConfigError(
            f"the journal was created with {recorded} virtual shards, but {configured} are "
            f"configured (GHBOT_VSHARDS): its streams would be looked for in the wrong "
            f"shards. Deploy with GHBOT_VSHARDS={recorded}, or stop the deployment "
            f"(`ghbot stop`) and run `{reshard_command(configured)}` first"
        )
    return recorded


@dataclass(frozen=True, slots=True)
class Resharded:
    """What a reshard did: the counts, the streams it moved, the epoch every shard now has."""

    from_count: int | None
    """The count recorded before (None: the journal had no record)."""
    to_count: int
    moved: int
    """Streams moved to another shard (again, for those a crashed run had copied)."""
    streams: int
    epoch: int


def plan_moves(
    placement: Mapping[str, Sequence[int]],
    to: int,
    route: Callable[[str, int], int],
    *,
    resuming: bool = False,
) -> dict[tuple[int, int], list[str]]:
    """Return the streams to move, grouped by (from shard, to shard), names sorted.

    `placement` maps each stream to the shards holding any of its rows; `route(stream,
    to)` is its shard under `to`. When `resuming` a reshard that crashed, a stream held
    by its new shard and one other is what it left (copied, not yet deleted at the
    source): it is copied again, which replaces the copy. Raise `UsageError` for a
    stream held by two shards otherwise: its history is split (a deployment ran over
    this journal with another count), which no reshard can merge.
    """
    moves: dict[tuple[int, int], list[str]] = {}
    for stream in sorted(placement):
        held = sorted(set(placement[stream]))
        home = route(stream, to)
        if not 0 <= home < to:
            raise UsageError(f"route gave shard {home} for {stream!r}, not one of 0..{to - 1}")
        away = [shard for shard in held if shard != home]
        if len(held) > 1 and (not resuming or len(away) > 1):
            raise UsageError(
                f"stream {stream!r} has rows in shards {held}: its history is split (a "
                "deployment ran over this journal with another number of virtual shards); "
                "resharding cannot merge it"
            )
        for shard in away:
            moves.setdefault((shard, home), []).append(stream)
    return moves
