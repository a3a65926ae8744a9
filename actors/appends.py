"""A shard's journal appends, gathered: one `append_many` carries many of them.

Each delivery a shard runs is journaled twice: when it arrives (in the ingress's batch)
and when its handlers are done (`HandlerSucceeded`, domain events, `DeliveryCompleted`).
Sent one by one, the second kind costs a journal call, a hand-off to the journal's
writer and a wake-up of the event loop per delivery. `AppendGroup` sends what the
shard's hosts and its ingest append at about the same time as one `append_many`, so
one call (and one commit per journal shard) carries them all: appends made while
`max_inflight` calls are out wait and go together in the next one. Each caller still
gets its own results, after the commit that holds its events is durable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from ghbot import metrics
from ghbot.errors import Fenced
from ghbot.journal import Journal
from ghbot.journal.records import FENCED, AppendRequest, AppendResult, NewEvent

__all__ = ["AppendGroup"]


class AppendGroup:
    """Gather appends to `journal` into few `append_many` calls (see the module)."""

    def __init__(self, journal: Journal, *, max_inflight: int = 2) -> None:
        self.journal = journal
        self.max_inflight = max_inflight
        #: `append_many` calls made, and requests they carried: their ratio is the
        #: group size.
        self.calls = 0
        self.requests = 0
        #: The error type of the last call, while no call has succeeded since (the
        #: journal is failing: the shard is not ready); None otherwise. `failed_at`
        #: is when (`time.monotonic()`).
        self.failing: str | None = None
        self.failed_at = 0.0
        self._requests: list[AppendRequest] = []
        self._waiters: list[tuple[int, int, asyncio.Future[list[AppendResult]]]] = []
        self._inflight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Append `requests` in the next group; return one result each (as the journal).

        Raises what the journal's `append_many` raised for the group (then nothing of it
        was written, or, for an unknown outcome, retry with the delivery GUIDs).
        """
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[AppendResult]] = loop.create_future()
        start = len(self._requests)
        self._requests.extend(requests)
        self._waiters.append((start, len(self._requests), future))
        if not self._scheduled and self._inflight < self.max_inflight:
            # Send at the end of this turn of the loop, with what else it appends.
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    async def append(
        self, stream: str, events: Sequence[NewEvent], *, shard: int, epoch: int | None
    ) -> AppendResult:
        """Append `events` to `stream`, as `Journal.append` does (raising `Fenced`)."""
        request = AppendRequest(stream, tuple(events), shard=shard, epoch=epoch)
        (result,) = await self.append_many([request])
        if result.status == FENCED:
            raise Fenced(shard, epoch or 0, result.epoch)
        return result

    def _flush(self) -> None:
        self._scheduled = False
        if not self._requests:
            return
        requests, waiters = self._requests, self._waiters
        self._requests, self._waiters = [], []
        self._inflight += 1
        self.calls += 1
        self.requests += len(requests)
        task = asyncio.get_running_loop().create_task(self._send(requests, waiters))
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._inflight -= 1
        if self._requests and not self._scheduled:
            self._flush()

    async def _send(
        self,
        requests: list[AppendRequest],
        waiters: list[tuple[int, int, asyncio.Future[list[AppendResult]]]],
    ) -> None:
        started = time.perf_counter()
        try:
            results = await self.journal.append_many(requests)
        except Exception as exc:
            metrics.journal_append(False, time.perf_counter() - started)
            self.failing, self.failed_at = type(exc).__name__, time.monotonic()
            for _, _, future in waiters:
                if not future.done():
                    future.set_exception(exc)
            return
        metrics.journal_append(True, time.perf_counter() - started)
        self.failing = None
        for start, end, future in waiters:
            if not future.done():  # its caller may have been cancelled meanwhile
                future.set_result(results[start:end])
