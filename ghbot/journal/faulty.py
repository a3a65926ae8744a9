"""`FaultyJournal`: a journal that fails, loses acknowledgements or stalls on demand.

For tests of the layers above (ingress answering 503, shards retrying with the
delivery GUID). With no fault armed it behaves exactly like the journal it wraps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ghbot.errors import JournalUnavailable
from ghbot.journal.base import DEFAULT_KEEP_SNAPSHOTS, DEFAULT_RETENTION, Journal
from ghbot.journal.records import AppendRequest, AppendResult, EventRecord, Snapshot

__all__ = ["FaultyJournal"]


class FaultyJournal(Journal):
    """Wrap `inner`, injecting faults into appends and reads.

    Appends are `append` and `append_many` (one call, one fault); reads are `read`,
    `last_seq`, `delivered`, `load_snapshot`, `current_epoch` and `list_streams`.
    Other calls pass through. Faults fire in this order: delay, then failure.
    """

    def __init__(self, inner: Journal) -> None:
        self.inner = inner
        self.shard_count = inner.shard_count
        self.append_delay = 0.0
        """Seconds every append waits before it is attempted."""
        self.read_delay = 0.0
        """Seconds every read waits before it is attempted."""
        self._fail_appends = 0
        self._lose_acks = 0
        self._fail_reads = 0
        self.appends_failed = 0
        """Appends that raised an injected `JournalUnavailable` so far."""
        self.reads_failed = 0
        """Reads that raised an injected `JournalUnavailable` so far."""

    def fail_appends(self, n: int = 1) -> None:
        """Make the next `n` appends raise `JournalUnavailable` without writing."""
        self._fail_appends += n

    def lose_acks(self, n: int = 1) -> None:
        """Make the next `n` appends write, then raise `JournalUnavailable` anyway.

        This is the ambiguous failure (the commit happened, the answer was lost) that
        a caller can only resolve by retrying with the same delivery GUID.
        """
        self._lose_acks += n

    def fail_reads(self, n: int = 1) -> None:
        """Make the next `n` reads raise `JournalUnavailable`."""
        self._fail_reads += n

    def heal(self) -> None:
        """Disarm every pending fault and delay."""
        self._fail_appends = self._lose_acks = self._fail_reads = 0
        self.append_delay = self.read_delay = 0.0

    @property
    def closed(self) -> bool:
        """Whether the wrapped journal is closed."""
        return self.inner.closed

    async def _before_read(self) -> None:
        if self.read_delay:
            await asyncio.sleep(self.read_delay)
        if self._fail_reads:
            self._fail_reads -= 1
            self.reads_failed += 1
            raise JournalUnavailable("injected read failure")

    async def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Append through the wrapped journal, unless a fault is armed."""
        if self.append_delay:
            await asyncio.sleep(self.append_delay)
        if self._fail_appends:
            self._fail_appends -= 1
            self.appends_failed += 1
            raise JournalUnavailable("injected append failure")
        results = await self.inner.append_many(requests)
        if self._lose_acks:
            self._lose_acks -= 1
            self.appends_failed += 1
            raise JournalUnavailable("injected lost acknowledgement (the append was written)")
        return results

    async def read(
        self,
        stream: str,
        from_seq: int = 1,
        to_seq: int | None = None,
        *,
        limit: int | None = None,
        shard: int | None = None,
    ) -> list[EventRecord]:
        """Read through the wrapped journal, unless a fault is armed."""
        await self._before_read()
        return await self.inner.read(stream, from_seq, to_seq, limit=limit, shard=shard)

    async def last_seq(self, stream: str, *, shard: int | None = None) -> int:
        """Read the stream's last seq through the wrapped journal, unless a fault is armed."""
        await self._before_read()
        return await self.inner.last_seq(stream, shard=shard)

    async def delivered(
        self, stream: str, guids: Sequence[str], *, shard: int | None = None
    ) -> set[str]:
        """Look up delivery GUIDs through the wrapped journal, unless a fault is armed."""
        await self._before_read()
        return await self.inner.delivered(stream, guids, shard=shard)

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
        """Save a snapshot through the wrapped journal."""
        await self.inner.save_snapshot(
            stream, seq, data, shard=shard, epoch=epoch, keep=keep, version=version
        )

    async def load_snapshot(
        self, stream: str, *, max_seq: int | None = None, shard: int | None = None
    ) -> Snapshot | None:
        """Load a snapshot through the wrapped journal, unless a fault is armed."""
        await self._before_read()
        return await self.inner.load_snapshot(stream, max_seq=max_seq, shard=shard)

    async def acquire_epoch(self, shard: int) -> int:
        """Acquire an epoch through the wrapped journal."""
        return await self.inner.acquire_epoch(shard)

    async def current_epoch(self, shard: int) -> int:
        """Read the epoch through the wrapped journal, unless a fault is armed."""
        await self._before_read()
        return await self.inner.current_epoch(shard)

    async def list_streams(self, *, shard: int | None = None) -> list[str]:
        """List streams through the wrapped journal, unless a fault is armed."""
        await self._before_read()
        return await self.inner.list_streams(shard=shard)

    async def prune_deliveries(
        self,
        retention: float = DEFAULT_RETENTION,
        *,
        now: float | None = None,
        shard: int | None = None,
    ) -> int:
        """Prune through the wrapped journal."""
        return await self.inner.prune_deliveries(retention, now=now, shard=shard)

    async def close(self) -> None:
        """Close the wrapped journal."""
        await self.inner.close()
