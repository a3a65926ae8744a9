"""Decide what an append batch writes, without I/O: the part every backend shares.

A backend locks the streams a batch touches, reads their heads, the shards' epochs
and the delivery GUIDs already recorded, hands them to `plan_batch`, then writes the
rows it returns in the same transaction. Each request's outcome is independent of
the others': a conflict or a fenced epoch only skips that request.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence

from ghbot.errors import UsageError
from ghbot.journal.records import (
    CONFLICT,
    DUPLICATE,
    FENCED,
    OK,
    AppendRequest,
    AppendResult,
)

__all__ = ["EventRow", "Plan", "delivery_keys", "plan_batch", "resolve_shards", "shard_for"]

# (stream, seq, type, data, delivery_guid, recorded_at, version): the events table's
# column order in every backend.
EventRow = tuple[str, int, str, bytes, str | None, float, int]
# (stream, delivery_guid, first_seq, last_seq, recorded_at)
DeliveryRow = tuple[str, str, int, int, float]


def shard_for(stream: str, shard_count: int) -> int:
    """Return the shard a stream lives in when the caller names none.

    CRC-32 of the UTF-8 name modulo `shard_count`: stable across processes, Python
    versions and machines (unlike `hash`). Changing `shard_count` moves streams, so
    it is fixed for the life of a journal.
    """
    return zlib.crc32(stream.encode()) % shard_count


def check_shard(shard: int) -> int:
    """Return `shard`; raise `UsageError` unless it is a non-negative int."""
    if type(shard) is not int or shard < 0:
        raise UsageError(f"shard must be a non-negative int, got {shard!r}")
    return shard


def resolve_shards(requests: Sequence[AppendRequest], shard_count: int) -> list[int]:
    """Return each request's shard; raise `UsageError` for an invalid request.

    A request must carry at least one event and a non-negative `expected_seq`.
    """
    shards: list[int] = []
    for req in requests:
        if not req.events:
            raise UsageError(f"append to {req.stream!r} has no events")
        if req.expected_seq is not None and req.expected_seq < 0:
            raise UsageError(f"expected_seq must be >= 0, got {req.expected_seq}")
        if req.shard is None:
            shards.append(shard_for(req.stream, shard_count))
        else:
            shards.append(check_shard(req.shard))
    return shards


def delivery_keys(requests: Iterable[AppendRequest]) -> list[tuple[str, str]]:
    """Return the distinct `(stream, delivery_guid)` pairs a batch deduplicates on."""
    return list({(r.stream, r.delivery_guid) for r in requests if r.delivery_guid is not None})


class Plan:
    """The outcome of a batch: one result per request and the rows to write."""

    __slots__ = ("deliveries", "events", "heads", "results")

    def __init__(self) -> None:
        self.results: list[AppendResult] = []
        self.events: list[EventRow] = []
        self.deliveries: list[DeliveryRow] = []
        self.heads: dict[str, int] = {}


def plan_batch(
    requests: Sequence[AppendRequest],
    shards: Sequence[int],
    *,
    heads: Mapping[str, int],
    epochs: Mapping[int, int],
    seen: Mapping[tuple[str, str], tuple[int, int]],
    now: float,
) -> Plan:
    """Decide each request in order, as if they were appended one after another.

    `heads` maps streams to their last seq (absent: 0), `epochs` shards to their
    current epoch (absent: 0), `seen` recorded deliveries to their seq range. A
    request is checked for fencing, then for a duplicate delivery (a retried
    delivery is a duplicate even if its expected seq is stale), then for a conflict.
    `Plan.heads` holds the new last seq of every stream written.
    """
    plan = Plan()
    results, rows, new_heads = plan.results, plan.events, plan.heads
    claimed: dict[tuple[str, str], tuple[int, int]] = {}
    for req, shard in zip(requests, shards, strict=True):
        stream, guid = req.stream, req.delivery_guid
        if req.epoch is not None:
            current = epochs.get(shard, 0)
            if req.epoch != current:
                results.append(AppendResult(FENCED, epoch=current))
                continue
        if guid is not None:
            prior = claimed.get((stream, guid)) or seen.get((stream, guid))
            if prior is not None:
                results.append(AppendResult(DUPLICATE, prior[0], prior[1]))
                continue
        head = new_heads.get(stream)
        if head is None:
            head = heads.get(stream, 0)
        if req.expected_seq is not None and req.expected_seq != head:
            results.append(AppendResult(CONFLICT, last_seq=head))
            continue
        seq = head
        for event in req.events:
            seq += 1
            rows.append((stream, seq, event.type, event.data, guid, now, event.version))
        new_heads[stream] = seq
        if guid is not None:
            claimed[(stream, guid)] = (head + 1, seq)
            plan.deliveries.append((stream, guid, head + 1, seq, now))
        results.append(AppendResult(OK, head + 1, seq))
    return plan
