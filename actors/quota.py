"""Quota leases: fan an installation's work out to Ray tasks without overdrawing its budget.

```python
async with self.quota.lease(30) as lease:
    parts = lease.split(len(chunks))                               # 10 requests each
    refs = [label_many.remote(part, chunk) for part, chunk in zip(parts, chunks)]
    lease.report(sum(await asyncio.gather(*refs)))                 # requests they made
```

A lease is granted only if every outstanding lease and in-flight request still fit in
the installation's remaining budget less its margin (`ghbot.ratelimit.Budget.lease`).
In the task, `lease.client()` is a client that refuses a request beyond the grant (give
each task its own part: `split`; a part is never shared between processes). When
the block ends, what the tasks did not use (`report`) goes back to the budget; with no
report, the whole grant counts as used (pessimistic).
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

__all__ = ["Quota", "QuotaLease"]


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

    def __repr__(self) -> str:
        return (
            f"QuotaLease(installation_id={self.installation_id}, granted={self.granted}, "
            f"token={redact(self.token)})"
        )

    def client(self, **options: Any) -> GitHub:
        """Return a client (in the task's process) limited to `granted` core requests.

        `options` go to its `ClientOptions` (`pace_writes`, `timeout`, …).
        """
        from ghbot.client import ClientOptions, GitHub

        gh = GitHub(token=self.token, options=ClientOptions(base_url=self.base_url, **options))
        return gh.with_lease(Lease(granted=self.granted))

    def split(self, parts: int) -> list[QuotaLease]:
        """Divide the grant into `parts` leases for as many tasks (remainder to the first)."""
        if parts < 1:
            raise UsageError("a lease is split into at least one part")
        share, extra = divmod(self.granted, parts)
        return [
            QuotaLease(
                installation_id=self.installation_id,
                granted=share + (extra if index == 0 else 0),
                base_url=self.base_url,
                token=self.token,
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
    async def lease(self, n: int) -> AsyncIterator[QuotaLease]:
        """Set `n` core requests aside for the block; raise `RateLimited` if they don't fit.

        Counts as a write for a shard that drains (`call_watcher`): what the lease's
        tasks do elsewhere is not followed, so the handler is not cut short after it.
        """
        from ghbot.client.github import call_watcher

        watcher = call_watcher.get()
        if watcher is not None:
            watcher.calling(True)
        gh = self._github
        budget = gh.budgets.core
        granted = budget.lease(n, self._clock())
        try:
            token = await gh.credentials.authorization()
            ticket = QuotaLease(
                installation_id=getattr(gh.credentials, "installation_id", 0),
                granted=n,
                base_url=gh.base_url,
                token=(token or "").split(" ", 1)[-1],
            )
            yield ticket
        except BaseException:
            budget.release(granted)
            raise
        for _ in range(n if ticket.used is None else ticket.used):
            budget.spend(granted)
        budget.release(granted)
