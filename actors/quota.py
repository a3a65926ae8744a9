"""Quota leases: fan an installation's work out to Ray tasks without overdrawing its budget.

```python
async with self.quota.lease(30, writes=6) as lease:
    parts = lease.split(len(chunks))                  # 3 chunks: 10 requests, 2 writes each
    refs = [label_many.remote(part, chunk) for part, chunk in zip(parts, chunks)]
    lease.report(sum(await asyncio.gather(*refs)))    # requests they made
```

A lease is granted only if every outstanding lease and in-flight request still fit in
the installation's remaining budget less its margin (`ghbot.budget.Budget.lease`).
In the task, `lease.client()` is a client that refuses a request beyond the grant (give
each task its own part: `split`; a part is never shared between processes). When
the block ends, what the tasks did not use (`report`) goes back to the budget; with no
report, the whole grant counts as used (pessimistic), also when the block raises
(its tasks may have made requests before it failed).

Writes are paced with the installation's own (`GHBOT_PACE_WRITES`): a lease asks for
`writes` of its requests to be writes (every attempt counts: a retry takes one too; a
write beyond them is refused, `LeaseExhausted`, which fails the handler's attempt like
its other errors). Before each write a task asks the shard that holds the installation
for its turn in the installation's write lane (`TurnSource`, a Ray call on a
deployment) and sends it as soon as it has it: the lane waits for the writes before it
and any secondary-limit pause, then lets its next write (the installation's own or
another task's) go `WRITE_SPACING` intervals later. A turn is asked for when the task
is ready, so a task that starts late (a new Ray worker process takes seconds) loses
nothing, and no clocks are compared. Make one client per part (`client()`): two
clients of one part could each send its writes. A copy of a lease whose shard gave
no turn source (`LocalShard`, `ghbot dev`: no Ray) sends no write; in the handler's
own process the lease itself takes its turns from the shard. With pacing off,
writes are not limited.

A lease carries the installation's token, with at least 5 minutes left when the lease
is made. A task that runs longer gets the installation's current token 5 minutes
before that one expires (or after GitHub refuses it) from where the lease says
(`LeaseTokens`: on Ray, the app-auth actor); a copy of a lease without one uses its
token to the end.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ghbot.auth import TOKEN_REFRESH_MARGIN, InstallationToken, redact
from ghbot.budget import Lease, holding_lease
from ghbot.client.credentials import InstallationCredentials, TokenSource
from ghbot.errors import LeaseExhausted, RateLimited, UsageError

if TYPE_CHECKING:
    from ghbot.client import GitHub

__all__ = ["WRITE_SPACING", "LeaseTokens", "Quota", "QuotaLease", "TurnSource"]

log = logging.getLogger("ghbot.quota")

#: Asks the shard that holds installation `id` for a write's turn (`GitHub.grant_write`);
#: picklable, so a lease's task elsewhere can call it (`actors.ray.lease_sources.ShardTurns`).
TurnSource = Callable[[int], Awaitable[None]]

#: Returns installation `id`'s current token (`force`: one other than the token GitHub
#: just refused); picklable, so a lease's task elsewhere can call it
#: (`actors.ray.lease_sources.AppAuthTokens`).
LeaseTokens = Callable[[int, bool], Awaitable[InstallationToken]]

#: The write lane's next write goes this many write intervals after a turn granted to
#: a task: the task's write is sent when its turn's answer arrives, not chained to its
#: own answer as a client's writes are, so it gets 1.5 intervals to reach GitHub.
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
    #: How many writes its tasks may send (None: writes not paced, not limited), the
    #: installation's write interval (the tasks' clients pace with it too), and where
    #: they ask for their turns (None: nowhere, so no write is sent).
    writes: int | None = None
    pace_writes: float | None = None
    turns: TurnSource | None = field(default=None, repr=False, compare=False)
    #: The installation client's clock and sleep, its turns taken in this process and
    #: its token source, for `client` in the handler's own process (a test's fake
    #: clock; no Ray call); not pickled.
    local: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    #: When `token` expires (None: not known, a plain token), and where a task gets
    #: the installation's next one (None: nowhere, `token` to the end).
    expires_at: float | None = None
    tokens: LeaseTokens | None = field(default=None, repr=False, compare=False)
    #: When `token` was minted (None: not known), so a 401 on it seconds later is
    #: taken for GitHub's propagation delay in the tasks too.
    minted_at: float | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.installation_id, self.granted, self.base_url, self.token, self.used)
        more = (self.writes, self.pace_writes, self.turns, None, self.expires_at, self.tokens)
        return (QuotaLease, (*fields, *more, self.minted_at))

    def __repr__(self) -> str:
        return (
            f"QuotaLease(installation_id={self.installation_id}, granted={self.granted}, "
            f"writes={self.writes}, token={redact(self.token)})"
        )

    def client(self, **options: Any) -> GitHub:
        """Return a client (in the task's process) limited to `granted` core requests
        and `writes` writes, each sent in its turn in the installation's write lane.

        `options` go to its `ClientOptions` (`timeout`, …; `pace_writes` is the
        installation's unless given).
        """
        from ghbot.client import ClientOptions, GitHub

        local = dict(self.local or {})
        turn = local.pop("turn", None)
        source: TokenSource | None = local.pop("tokens", None)
        if source is None and self.tokens is not None and self.expires_at is not None:
            first = InstallationToken(
                self.token,
                self.expires_at,
                installation_id=self.installation_id,
                minted_at=self.minted_at,
            )
            source = _LeaseTokenSource(first, self.tokens, local.get("clock", time.time))
        options.setdefault("pace_writes", self.pace_writes)  # None: the installation's is off
        if self.writes is not None:
            if turn is None and self.turns is not None:
                turn = functools.partial(self.turns, self.installation_id)
            if turn is None:
                turn = _nowhere_to_ask
        for name, value in local.items():
            options.setdefault(name, value)
        opts = ClientOptions(base_url=self.base_url, **options)
        if source is not None:
            gh = GitHub(tokens=source, installation_id=self.installation_id, options=opts)
        else:
            gh = GitHub(token=self.token or None, options=opts)
        return gh.with_lease(Lease(granted=self.granted, writes=self.writes, write_turn=turn))

    def split(self, parts: int) -> list[QuotaLease]:
        """Divide the grant and the writes into `parts` leases for as many tasks (the
        remainders to the first)."""
        if parts < 1:
            raise UsageError("a lease is split into at least one part")
        share, extra = divmod(self.granted, parts)
        writes, more = divmod(self.writes or 0, parts)
        return [
            QuotaLease(
                installation_id=self.installation_id,
                granted=share + (extra if index == 0 else 0),
                base_url=self.base_url,
                token=self.token,
                writes=None if self.writes is None else writes + (more if index == 0 else 0),
                pace_writes=self.pace_writes,
                turns=self.turns,
                local=self.local,
                expires_at=self.expires_at,
                tokens=self.tokens,
                minted_at=self.minted_at,
            )
            for index in range(parts)
        ]

    def report(self, used: int) -> None:
        """Say how many requests the tasks made; the rest returns to the budget."""
        if type(used) is not int or not 0 <= used <= self.granted:
            raise UsageError(f"a lease of {self.granted} cannot have used {used!r}")
        self.used = used


class _LeaseTokenSource:
    """A lease's task's `TokenSource`: the lease's token while more than
    `TOKEN_REFRESH_MARGIN` of it is left, then the installation's current one from
    `fetch`, one fetch at a time. A fetch that fails before the token has expired
    (the app-auth actor being replaced) is logged, and the token kept meanwhile."""

    def __init__(
        self, first: InstallationToken, fetch: LeaseTokens, clock: Callable[[], float]
    ) -> None:
        self._token = first
        self._fetch = fetch
        self._clock = clock
        self._lock = asyncio.Lock()

    async def get(self, installation_id: int, *, force: bool = False) -> InstallationToken:
        token, now = self._token, self._clock()
        if not force and now < token.expires_at - TOKEN_REFRESH_MARGIN:
            return token
        async with self._lock:
            if self._token is token:  # not replaced while this one waited
                try:
                    self._token = await self._fetch(installation_id, force)
                except Exception as exc:
                    if force or self._clock() >= token.expires_at:
                        raise
                    log.warning(
                        "installation %d: no new token for a quota lease's task yet (%s); "
                        "the lease's is used until it expires",
                        installation_id,
                        type(exc).__name__,
                        extra={"installation_id": installation_id},
                    )
            return self._token


async def _nowhere_to_ask() -> None:
    raise LeaseExhausted(
        "quota lease has nowhere to ask for a write's turn: its shard gave it no turn "
        "source (a shard on Ray does); in the handler's own process, use the lease "
        "itself, not a copy"
    )


class Quota:
    """An installation's leases, bound to its client's core budget and write lane."""

    def __init__(
        self,
        github: GitHub,
        clock: Callable[[], float] = time.time,
        turns: TurnSource | None = None,
        installation_id: int | None = None,
        local_turn: Callable[[], Awaitable[None]] | None = None,
        tokens: LeaseTokens | None = None,
    ) -> None:
        self._github = github
        self._clock = clock
        self._turns = turns
        #: Where a lease's tasks elsewhere get the installation's next token.
        self._tokens = tokens
        #: A turn in this process (the shard's, so a drain's refusal applies); by
        #: default straight from the client's lane.
        self._local_turn = local_turn
        #: The installation (its client's, when not given).
        self._installation_id = installation_id

    @asynccontextmanager
    async def lease(self, n: int, *, writes: int = 0) -> AsyncIterator[QuotaLease]:
        """Set `n` core requests aside for the block, `writes` of them writes, each sent
        in its turn in the installation's write lane; raise `RateLimited` if they don't
        fit now, `UsageError` if they never would (more than a window above the margin).
        A budget no answer has told refuses only once GitHub was asked
        (`GitHub.learn_budget`).

        Counts as a write for a shard that drains (`call_watcher`): what the lease's
        tasks do elsewhere is not followed, so the handler is not cut short after it.
        """
        from ghbot.client.watch import call_watcher

        if type(n) is not int or type(writes) is not int:
            # 2.5 got as far as the budget and then never went back to it.
            raise UsageError(f"a lease is of whole requests and writes, not {n!r}, {writes!r}")
        if not 0 <= writes <= n:
            raise UsageError(f"a lease of {n} requests cannot hold {writes} writes")
        watcher = call_watcher.get()
        if watcher is not None:
            watcher.calling(True)
        gh = self._github
        budget = gh.budgets.core
        try:
            granted = budget.lease(n, self._clock())
        except RateLimited:
            # Refused by a budget no answer has told (a handler that leases first):
            # GitHub's numbers, asked for, tell whether it fits and when it would.
            if not await gh.learn_budget(budget):
                raise
            granted = budget.lease(n, self._clock())
        ticket: QuotaLease | None = None
        try:
            credentials = gh.credentials
            local: dict[str, Any] = {"clock": gh.options.clock, "sleep": gh.options.sleep}
            expires_at: float | None = None
            minted_at: float | None = None
            if isinstance(credentials, InstallationCredentials):
                try:
                    current = await credentials.source.get(credentials.installation_id)
                except Exception as exc:  # GitHub failing the exchange opens the breaker
                    gh.token_failed(exc)
                    raise
                token: str | None = current.token
                expires_at, minted_at = current.expires_at, current.minted_at
                local["tokens"] = credentials.source  # in this process: the client's own
            else:
                token = (await credentials.authorization() or "").split(" ", 1)[-1]
            interval = gh.options.pace_writes
            if interval:
                local["turn"] = self._local_turn or functools.partial(
                    gh.grant_write, interval * WRITE_SPACING
                )
            ticket = QuotaLease(
                installation_id=int(
                    self._installation_id or getattr(gh.credentials, "installation_id", 0) or 0
                ),
                granted=n,
                base_url=gh.base_url,
                token=token or "",
                writes=writes if interval else None,
                pace_writes=interval,
                turns=self._turns,
                local=local,
                expires_at=expires_at,
                tokens=self._tokens,
                minted_at=minted_at,
            )
            held = holding_lease.set(True)
            try:
                yield ticket
            finally:
                holding_lease.reset(held)
        finally:
            if ticket is not None:  # handed out: what its tasks may have done counts
                wrote = ticket.used != 0 and ticket.writes != 0  # writes None: not limited
                if watcher is not None and wrote:  # any of its tasks may have written
                    watcher.written()
                budget.settle(granted, n if ticket.used is None else ticket.used, self._clock())
            budget.release(granted)
