"""The journal's one interface, `Journal`, that every backend implements."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType
from typing import Final

from ghbot.errors import Conflict, Fenced, JournalUnavailable, UsageError
from ghbot.journal.plan import shard_for
from ghbot.journal.records import (
    CONFLICT,
    FENCED,
    AppendRequest,
    AppendResult,
    EventRecord,
    NewEvent,
    Snapshot,
)

__all__ = [
    "DEFAULT_KEEP_SNAPSHOTS",
    "DEFAULT_RETENTION",
    "DEFAULT_SHARD_COUNT",
    "PRUNE_BATCH",
    "Journal",
]

DEFAULT_SHARD_COUNT: Final = 16
"""Shards streams are spread over when the caller names none (see `shard_for`)."""
DEFAULT_RETENTION: Final = 8 * 24 * 3600.0
"""Seconds `prune_deliveries` keeps a delivery GUID unless told: past GitHub's 3 days
(7 on GHES). A deployment prunes at its `GHBOT_DEDUP_WINDOW` (by default 3 days, 7
with another API URL than api.github.com's)."""
DEFAULT_KEEP_SNAPSHOTS: Final = 3
PRUNE_BATCH: Final = 1000
"""Delivery GUIDs `prune_deliveries` forgets per transaction: appends queued behind a
prune wait for one batch, not for all of it."""


class Journal(abc.ABC):
    """An event store of streams, each a gap-free sequence of events from seq 1.

    Contracts every backend keeps (the conformance suite in tests/journal checks
    them):

    - An append is all-or-nothing and durable when it returns.
    - `(stream, seq)` and `(stream, delivery_guid)` are unique; a delivery GUID is
      remembered until `prune_deliveries` drops it.
    - Appends to one shard submitted to one journal object commit in submission
      order (a batch spanning SQLite shard files commits once per file).
    - A stream always lives in one shard: pass the same `shard` on every call for a
      stream, or never pass one (the journal then derives it, `shard_for`).
    - Epochs fence zombies: `acquire_epoch(shard)` returns a new epoch, and from then
      on an append or snapshot whose epoch is not the shard's current one is refused
      (an older epoch is a zombie's; a newer one was never granted). A writer that
      passes no epoch is not fenced.
    - After `close`, every call raises `JournalUnavailable`; open the journal again
      (`open_journal`) to reach the same data.
    - Failures to reach or write the store raise `JournalUnavailable`; an append
      that raised it may or may not have been written, so retry it with its
      delivery GUID.
    - Cancelling an awaiting caller does not withdraw an append already submitted.
    """

    shard_count: int
    """The shards streams are spread over: recorded when the journal was created, and
    checked when it is opened (`ghbot.journal.layout`)."""

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_seq: int | None = None,
        delivery_guid: str | None = None,
        shard: int | None = None,
        epoch: int | None = None,
    ) -> AppendResult:
        """Append `events` to `stream` as one unit; return an ``ok`` or ``duplicate`` result.

        Raise `Conflict` if `expected_seq` is given and the stream is elsewhere,
        `Fenced` if `epoch` is given and is not the shard's current one,
        `UsageError` if `events` is empty.
        """
        request = AppendRequest(stream, tuple(events), expected_seq, delivery_guid, shard, epoch)
        (result,) = await self.append_many([request])
        if result.status == CONFLICT:
            raise Conflict(
                stream, expected_seq if expected_seq is not None else -1, result.last_seq
            )
        if result.status == FENCED:
            fenced_shard = shard_for(stream, self.shard_count) if shard is None else shard
            raise Fenced(fenced_shard, epoch or 0, result.epoch)
        return result

    @abc.abstractmethod
    async def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Append many requests in one durable commit and return one result each.

        Requests are decided in order; a later request to the same stream sees the
        earlier ones. One request's conflict, duplicate or fencing never fails
        another. Raise `UsageError` for a request without events, and
        `JournalUnavailable` if a commit failed: PostgreSQL commits the batch once,
        all of it or none (a `COMMIT` whose connection was lost is waited for at the
        server, up to 30 s, so that a read after the error sees whether it landed;
        one still running then may land later);
        SQLite commits
        once per shard file the batch touches, so the other files' requests may
        stand. Either way an append that raised may or may not have been written:
        retry it with its delivery GUID.
        """

    @abc.abstractmethod
    async def read(
        self,
        stream: str,
        from_seq: int = 1,
        to_seq: int | None = None,
        *,
        limit: int | None = None,
        shard: int | None = None,
    ) -> list[EventRecord]:
        """Return the stream's events with `from_seq <= seq <= to_seq`, in order.

        At most `limit` events; an unknown stream or an empty range gives ``[]``.
        """

    @abc.abstractmethod
    async def last_seq(self, stream: str, *, shard: int | None = None) -> int:
        """Return the stream's last sequence number (0 if it has no events)."""

    @abc.abstractmethod
    async def delivered(
        self, stream: str, guids: Sequence[str], *, shard: int | None = None
    ) -> set[str]:
        """Return which of the delivery `guids` the stream has recorded.

        A GUID is held from its append until `prune_deliveries` forgets it (its
        `retention`; a deployment's is `GHBOT_DEDUP_WINDOW`, at least GitHub's window).
        """

    @abc.abstractmethod
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
        """Store the stream's state after event `seq`; keep only the last `keep`.

        Raise `UsageError` unless ``0 <= seq <= last_seq(stream)`` and ``keep >= 1``,
        `Fenced` if `epoch` is given and is not the shard's current one. Saving the
        same seq again replaces that snapshot.
        """

    @abc.abstractmethod
    async def load_snapshot(
        self, stream: str, *, max_seq: int | None = None, shard: int | None = None
    ) -> Snapshot | None:
        """Return the stream's latest snapshot with ``seq <= max_seq``, or None."""

    @abc.abstractmethod
    async def acquire_epoch(self, shard: int) -> int:
        """Start a new epoch for `shard` and return it (1 for the first).

        From the moment this returns, appends carrying an older epoch are fenced.
        """

    @abc.abstractmethod
    async def current_epoch(self, shard: int) -> int:
        """Return the shard's current epoch (0 if none was ever acquired)."""

    @abc.abstractmethod
    async def list_streams(self, *, shard: int | None = None) -> list[str]:
        """Return the names of streams holding events, sorted; one shard's or all."""

    @abc.abstractmethod
    async def prune_deliveries(
        self,
        retention: float = DEFAULT_RETENTION,
        *,
        now: float | None = None,
        shard: int | None = None,
    ) -> int:
        """Forget delivery GUIDs recorded more than `retention` seconds before `now`.

        Only `shard`'s when given (a shard actor prunes its own), every shard's when
        not. Events and snapshots are kept; only the GUIDs' deduplication ends (and
        `delivered` stops reporting them). Rows go in transactions of `PRUNE_BATCH`,
        so appends are never held up behind the whole prune. Return how many were
        dropped.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish submitted appends, then release files, threads and connections.

        Idempotent: a second call waits for the first to end. Cancelling a caller does
        not stop the closing. Every later call of another method raises
        `JournalUnavailable`.
        """

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """Whether `close` was called."""

    def _check_open(self) -> None:
        if self.closed:
            raise JournalUnavailable("the journal is closed")

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def check_snapshot_args(seq: int, keep: int) -> None:
    """Raise `UsageError` for a negative `seq` or a `keep` below 1."""
    if seq < 0:
        raise UsageError(f"snapshot seq must be >= 0, got {seq}")
    if keep < 1:
        raise UsageError(f"keep must be >= 1, got {keep}")


def check_range(from_seq: int, limit: int | None) -> None:
    """Raise `UsageError` for a `from_seq` below 1 or a negative `limit`."""
    if from_seq < 1:
        raise UsageError(f"from_seq must be >= 1, got {from_seq}")
    if limit is not None and limit < 0:
        raise UsageError(f"limit must be >= 0, got {limit}")
