"""Per-key ordering: jobs with the same key run one at a time, in the order they came.

Different keys run concurrently, at most `limit` jobs at once. This is how one
installation keeps the events of one issue in journal order while working on many
issues in parallel.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["KeyedMailbox"]

Job = Callable[[], Awaitable[None]]
log = logging.getLogger("ghbot.mailbox")


class KeyedMailbox:
    """Queue jobs by key; a job must handle its own errors (one that raises is logged)."""

    __slots__ = ("_idle", "_queues", "_slots", "_stopped", "_tasks")

    def __init__(self, limit: int) -> None:
        self._queues: dict[str, deque[Job]] = {}
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopped = False

    def __len__(self) -> int:
        """Return the number of jobs queued or running."""
        return sum(len(queue) for queue in self._queues.values())

    def put(self, key: str, job: Job) -> None:
        """Queue `job` behind every earlier job with the same `key` (none once stopped:
        see `stop`)."""
        if self._stopped:
            return
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(job)
            return
        self._queues[key] = deque((job,))
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(self._drain(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        """Return once no job is queued or running."""
        await self._idle.wait()

    def stop(self) -> None:
        """Start no job from now on: the running ones finish, the others are dropped
        (as are jobs put later). For a caller whose jobs are recorded elsewhere and
        run again by whoever takes over (a draining shard's journaled deliveries)."""
        self._stopped = True

    async def close(self) -> None:
        """Cancel every queued and running job, and start none put later."""
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._queues.clear()
        self._idle.set()

    async def _drain(self, key: str) -> None:
        queue = self._queues[key]
        try:
            while queue and not self._stopped:
                async with self._slots:
                    if self._stopped:  # stopped while this job waited for a slot
                        break
                    try:
                        await queue[0]()
                    except Exception:
                        log.exception("a mailbox job for key %r raised", key)
                queue.popleft()
        finally:
            self._queues.pop(key, None)  # `close` may have cleared them
            if not self._queues:
                self._idle.set()
