"""Quota leases: fan an installation's work out to Ray tasks without overdrawing its budget.

```python
async with self.quota.lease(30, writes=6) as lease:
    parts = lease.split(len(chunks))                  # 3 chunks: 10 requests, 2 writes each
    refs = [label_many.remote(part, chunk) for part, chunk in zip(parts, chunks)]
    lease.report(sum(await asyncio.gather(*refs)))    # requests they made
```

A lease is granted only if every outstanding lease and in-flight request still fit in
the installation's remaining budget less its margin (`ghbot.ratelimit.Budget.lease`).
In the task, `lease.client()` is a client that refuses a request beyond the grant (give
each task its own part: `split`; a part is never shared between processes). When
the block ends, what the tasks did not use (`report`) goes back to the budget; with no
report, the whole grant counts as used (pessimistic).

Writes are paced with the installation's own (`GHBOT_PACE_WRITES`): a lease asks for
`writes` of its requests to be writes, and the installation's write lane sets that many
slots aside, `WRITE_SPACING` intervals apart, the first one spacing from now (time for
the tasks to start), after any secondary-limit pause and the writes already in it (its
own next write goes after the last slot). Each write of the tasks (every attempt: a
retry takes a slot too) takes the next slot of its part and is sent at the slot's
time; a slot passed by more than half an interval is lost (the task started late),
and a write with no slot left is refused (`LeaseExhausted`, which fails the handler's
attempt like its other errors). Make one client per part (`client()`): two clients
of one part would use the same slots. The slots are wall-clock times, so the tasks'
nodes must keep their clocks in sync (NTP) with the shard's; a secondary limit a task
meets pauses that task's client only. With pacing off, writes are not limited.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ghbot.auth import redact
from ghbot.errors import UsageError
from ghbot.ratelimit import Lease

if TYPE_CHECKING:
    from ghbot.client import GitHub

__all__ = ["WRITE_SPACING", "Quota", "QuotaLease"]

#: A lease's write slots are this many write intervals apart: the tasks' writes are
#: scheduled, not chained to the answers as a client's own writes are, so the spacing
#: keeps their arrivals an interval apart even when one reaches GitHub later than the
#: one before (up to an interval later, with a task half an interval late).
WRITE_SPACING = 2.5


@dataclass(slots=True)
class QuotaLease:
    """What a fanned-out task needs: a token, the API URL and how many requests it may make.

    Picklable, so it can be passed to a Ray task; `repr` hides the token.
    """

    installation_id: int
    granted: int
    base_url: str
    token: str = field(repr=False)
    used: int | None = None
    #: When its writes may be sent (None: not paced, writes not limited), and the
    #: installation's write interval (the tasks' clients pace with it too).
    write_slots: list[float] | None = None
    pace_writes: float | None = None
    #: The installation client's clock and sleep, for `client` in the same process (a
    #: test's fake clock keeps the slots' time); not pickled: a task elsewhere keeps
    #: wall-clock time.
    local: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.installation_id, self.granted, self.base_url, self.token, self.used)
        return (QuotaLease, (*fields, self.write_slots, self.pace_writes))

    def __repr__(self) -> str:
        return (
            f"QuotaLease(installation_id={self.installation_id}, granted={self.granted}, "
            f"token={redact(self.token)})"
        )

    def client(self, **options: Any) -> GitHub:
        """Return a client (in the task's process) limited to `granted` core requests,
        its writes to its `write_slots`.

        `options` go to its `ClientOptions` (`timeout`, …; `pace_writes` is the
        installation's unless given).
        """
        from ghbot.client import ClientOptions, GitHub

        if self.write_slots is not None:
            options.setdefault("pace_writes", self.pace_writes)
        for name, value in (self.local or {}).items():
            options.setdefault(name, value)
        gh = GitHub(token=self.token, options=ClientOptions(base_url=self.base_url, **options))
        late = (self.pace_writes or 0.0) / 2
        slots = None if self.write_slots is None else list(self.write_slots)
        return gh.with_lease(Lease(granted=self.granted, write_slots=slots, write_late=late))

    def split(self, parts: int) -> list[QuotaLease]:
        """Divide the grant into `parts` leases for as many tasks (remainder to the
        first), and the write slots in turn (the first part the first slot, and so on)."""
        if parts < 1:
            raise UsageError("a lease is split into at least one part")
        share, extra = divmod(self.granted, parts)
        slots = self.write_slots
        return [
            QuotaLease(
                installation_id=self.installation_id,
                granted=share + (extra if index == 0 else 0),
                base_url=self.base_url,
                token=self.token,
                write_slots=None if slots is None else slots[index::parts],
                pace_writes=self.pace_writes,
                local=self.local,
            )
            for index in range(parts)
        ]

    def report(self, used: int) -> None:
        """Say how many requests the tasks made; the rest returns to the budget."""
        if not 0 <= used <= self.granted:
            raise UsageError(f"a lease of {self.granted} cannot have used {used}")
        self.used = used


class Quota:
    """An installation's leases, bound to its client's core budget."""

    def __init__(self, github: GitHub, clock: Callable[[], float] = time.time) -> None:
        self._github = github
        self._clock = clock

    @asynccontextmanager
    async def lease(self, n: int, *, writes: int = 0) -> AsyncIterator[QuotaLease]:
        """Set `n` core requests aside for the block, `writes` of them writes with their
        slots in the installation's write lane; raise `RateLimited` if they don't fit.

        Counts as a write for a shard that drains (`call_watcher`): what the lease's
        tasks do elsewhere is not followed, so the handler is not cut short after it.
        """
        from ghbot.client.github import call_watcher

        if not 0 <= writes <= n:
            raise UsageError(f"a lease of {n} requests cannot hold {writes} writes")
        watcher = call_watcher.get()
        if watcher is not None:
            watcher.calling(True)
        gh = self._github
        budget = gh.budgets.core
        granted = budget.lease(n, self._clock())
        try:
            token = await gh.credentials.authorization()
            interval = gh.options.pace_writes
            slots = None
            if interval:
                slots = await gh.reserve_writes(writes, interval * WRITE_SPACING)
            ticket = QuotaLease(
                installation_id=getattr(gh.credentials, "installation_id", 0),
                granted=n,
                base_url=gh.base_url,
                token=(token or "").split(" ", 1)[-1],
                write_slots=slots,
                pace_writes=interval,
                local={"clock": gh.options.clock, "sleep": gh.options.sleep},
            )
            yield ticket
        except BaseException:
            budget.release(granted)
            raise
        for _ in range(n if ticket.used is None else ticket.used):
            budget.spend(granted)
        budget.release(granted)
