"""An installation's primary-limit budget: what may still be spent, and quota leases.

Pure state over the numbers GitHub's answers give (`ghbot.ratelimit.RateLimit`) and a
`now` the caller passes (epoch seconds).
https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

from ghbot.errors import ConfigError, LeaseExhausted, RateLimited, UsageError
from ghbot.ratelimit import GitHubClock, RateLimit

__all__ = [
    "DEFAULT_MARGIN",
    "LEASED_WAIT",
    "UNKNOWN_RESET_WAIT",
    "Budget",
    "Lease",
    "holding_lease",
]

DEFAULT_MARGIN = 0.1
#: The wait of a request (or lease) that only open leases keep from the budget: they
#: may settle at any moment and give back what they did not use, long before a reset.
LEASED_WAIT = 10.0
#: Whether the running task holds an open quota lease (`actors.quota.Quota.lease` sets
#: it for its block): a request of its own that only open leases refuse is raised at
#: once, not waited out in-line, since it would wait on its own lease.
holding_lease: ContextVar[bool] = ContextVar("ghbot_holding_lease", default=False)
#: The wait of a request (or lease) refused by a budget that knows no reset of GitHub's
#: (no answer has told it): a minute, the least GitHub asks of a limited client, then
#: the client asks GitHub (`GET /rate_limit`, free) before it refuses again.
UNKNOWN_RESET_WAIT = 60.0


@dataclass(slots=True)
class Lease:
    """Quota set aside for work elsewhere; spend it with `Budget.spend`, close it with `release`.

    `writes`, when not None, is how many writes (every attempt) it may still send; a
    write beyond them is refused. `write_turn`, when given, is awaited before each
    write: it returns once the installation's write lane gives the write its turn
    (`GitHub.grant_write`, in the shard that holds the installation).
    """

    granted: int
    used: int = 0
    open: bool = True
    writes: int | None = None
    write_turn: Callable[[], Awaitable[None]] | None = None
    #: The granting budget when it was granted: its window, the units it had counted
    #: and its `remaining` (`Budget.settle`).
    start: tuple[int, int, int] | None = None

    @property
    def unused(self) -> int:
        return self.granted - self.used


class Budget:
    """One installation's primary-limit budget, kept with a safety margin.

    `usable` is `remaining` less `margin × limit` (rounded up): with the default 0.1,
    the last 500 of a window of 5,000 are never spent. Requests take one unit each
    (`acquire`), leases set units aside pessimistically (`lease`): a lease is granted
    only if all outstanding leases plus in-flight requests still fit in `usable`.
    Headers from answers (`observe`) update `remaining`; a new window (a later reset)
    starts the count afresh. Before the first answer the budget is unknown and
    optimistic: `limit` (GitHub's minimum, 5,000) is assumed. `reset` is GitHub's
    epoch second; the `now` its methods take is the local clock, which `clock` (the
    installation's `GitHubClock`, if given) turns into GitHub's time to compare.

    A success (2xx) its client saw answered as by a server that meters nothing
    (`ghbot.client.call.meters_nothing`: GitHub Enterprise Server with rate limits
    off) makes the budget not `metered`: it counts nothing (requests and leases always
    fit, a settled lease takes nothing, it never refuses) until an answer with the
    headers, whose numbers it counts from again (`observe`).
    """

    __slots__ = (
        "_clock",
        "_counted",
        "_reserved",
        "_window",
        "known",
        "limit",
        "margin",
        "metered",
        "remaining",
        "reset",
        "resource",
    )

    def __init__(
        self,
        *,
        margin: float = DEFAULT_MARGIN,
        limit: int = 5000,
        resource: str = "core",
        clock: GitHubClock | None = None,
    ) -> None:
        if not 0.0 <= margin <= 0.5:
            raise ConfigError(f"rate limit margin must be between 0 and 0.5, got {margin}")
        self.margin = margin
        self.limit = limit
        self.remaining = limit
        self.reset = 0.0
        self.resource = resource
        self._reserved = 0
        #: Units counted so far (requests taken, less refunds, and settled leases') and
        #: how many times the window's count was started afresh: a lease compares them.
        self._counted = 0
        self._window = 0
        self._clock = clock
        #: Whether an answer of GitHub's has given the limit (else `limit` is assumed).
        self.known = False
        #: Whether GitHub meters the resource: False from a success answered without
        #: rate-limit headers until an answer with them (`observe`).
        self.metered = True

    def __repr__(self) -> str:
        if not self.metered:
            return f"Budget(resource={self.resource!r}, unmetered, reserved={self._reserved})"
        return (
            f"Budget(resource={self.resource!r}, remaining={self.remaining}/{self.limit}, "
            f"reserved={self._reserved}, reset={self.reset:.0f})"
        )

    @property
    def told(self) -> bool:
        """Whether GitHub's answers have given the limit and the window's reset: else a
        refusal cannot say when the budget reopens (ask GitHub: `GET /rate_limit`)."""
        return self.known and self.reset > 0

    @property
    def reserved(self) -> int:
        """Units set aside by open leases and not yet spent."""
        return self._reserved

    def usable(self, now: float) -> int:
        """Return the units that may be spent in this window, less the margin."""
        self._roll(now)
        return max(self.remaining - math.ceil(self.limit * self.margin), 0)

    def available(self, now: float) -> int:
        """Return the units neither spent, nor leased, nor kept back as margin."""
        return self.usable(now) - self._reserved

    def acquire(self, now: float, *, method: str = "", url: str = "") -> None:
        """Take one unit for a request, or raise `RateLimited` carrying the reset time
        (unmetered: take nothing, never raise)."""
        if not self.metered:
            return
        if self.available(now) < 1:
            raise self._exhausted(now, method, url)
        self.remaining -= 1
        self._counted += 1

    def lease(self, n: int, now: float) -> Lease:
        """Set `n` units aside, or raise `RateLimited` when they do not fit now, and
        `UsageError` when they never would: more than a whole window above the margin
        (a wait for the reset would be followed by another, each a handler's rerun).
        The limit is the one GitHub's answers gave; before the first, a lease larger
        than 5,000 allows is refused for a minute (`RateLimited`), unless GitHub is
        asked meanwhile (`told`). Unmetered, any `n` fits (and is set aside, should
        metering start again while the lease is open)."""
        if n < 0:
            raise UsageError("a lease cannot be negative")
        if self.metered:
            self._fits(n, now)
        self._reserved += n
        return Lease(granted=n, start=(self._window, self._counted, self.remaining))

    def _fits(self, n: int, now: float) -> None:
        """Raise what `lease` raises when `n` units do not fit a metered budget."""
        ceiling = self.limit - math.ceil(self.limit * self.margin)
        if n > ceiling and not self.known:  # 5,000 assumed: wait for GitHub's number
            raise RateLimited(
                429,
                f"a lease of {n} requests is more than {ceiling}, as far as known: waiting "
                "for GitHub's answers to tell the installation's limit",
                kind="primary",
                retry_after=UNKNOWN_RESET_WAIT,
            )
        if n > ceiling:
            raise UsageError(
                f"a lease of {n} requests never fits: the installation's {self.resource} "
                f"budget is {self.limit} an hour, {ceiling} of them above the "
                f"{self.margin:.0%} margin; lease less, and again for the rest"
            )
        if self.available(now) < n:
            raise self._exhausted(now, "", "", wanted=n)

    def spend(self, lease: Lease) -> None:
        """Spend one unit of `lease` on a request; raises `LeaseExhausted` when it is used up."""
        if not lease.open or lease.unused < 1:
            raise LeaseExhausted(f"quota lease is used up: all {lease.granted} requests made")
        lease.used += 1
        self._reserved -= 1
        if self.metered:
            self.remaining -= 1
            self._counted += 1

    def refund(self, lease: Lease | None = None) -> None:
        """Give back the unit a request took when GitHub did not count it.

        A 304 answer to a conditional request is free, and an answer without rate-limit
        headers (GHES with limits off) says nothing was counted. With `lease`, the unit
        goes back to that lease while it is open. Unmetered, the budget took none to
        give back.
        """
        if self.metered:
            self.remaining = min(self.remaining + 1, self.limit)
            self._counted -= 1
        if lease is not None and lease.open and lease.used > 0:
            lease.used -= 1
            self._reserved += 1

    def settle(self, lease: Lease, used: int, now: float) -> None:
        """Count `used` of `lease`'s units as spent by its tasks elsewhere, and close it.

        Answers to this budget's own requests meanwhile may have shown some of those
        requests already (GitHub counts the installation's requests together): they are
        not counted again. In the window the lease began in, `remaining` becomes the
        lower of what it is and what it would be had the budget counted only its own
        units and the lease's since then (so a drop it cannot explain, another
        process's requests with the installation's token, is taken as the lease's
        until the next answer shows it). A lease granted before the budget had an
        answer (its `remaining` a guess), or whose window has ended, is taken whole
        from the budget (what answers showed of it is counted twice). Unmetered,
        nothing is taken from the budget (GitHub counted nothing).
        """
        if not lease.open:
            return
        used = min(used, lease.unused)
        if self.metered:
            self._take(lease, used, now)
        lease.used += used
        self._reserved -= used
        self.release(lease)

    def _take(self, lease: Lease, used: int, now: float) -> None:
        """Count `used` units of `lease`'s, settled, as `settle` says."""
        self._roll(now)
        if lease.start is not None and lease.start[0] == self._window:
            _, counted, remaining = lease.start
            self.remaining = min(self.remaining, remaining - (self._counted - counted) - used)
        else:
            self.remaining -= used
        self._counted += used

    def release(self, lease: Lease) -> int:
        """Close `lease` and give its unused units back; returns how many came back."""
        if not lease.open:
            return 0
        lease.open = False
        back = lease.unused
        self._reserved -= back
        return back

    def observe(self, limit: RateLimit | None, now: float, *, status: int | None = None) -> None:
        """Update from an answer's headers (`limit`; None when it had none); ignores
        answers from another resource, and of a window that has ended (sent before a
        reset, answered after it).

        `status`, given for an answer to one of this budget's own requests that its
        client judged bare (`ghbot.client.call.meters_nothing`), says what an answer
        without the headers means: a success (2xx) says GitHub does not meter the
        resource (`metered` turns False); an error says nothing (a proxy's 502 or 503
        carries no headers, and github.com's errors may lack them). An answer with the
        headers turns metering on again, counting from its numbers.
        """
        if limit is None:
            if status is not None and 200 <= status < 300:
                self.unmeter()
            return
        if limit.resource != self.resource:
            return
        if not self.metered:
            self._meter()
        if limit.limit > 0:
            self.known = True
        self._roll(now)
        if limit.reset <= self._github(now):
            return
        if limit.reset > self.reset:
            self.reset = limit.reset
            self._window += 1
            if limit.limit > 0:  # never 0 from GitHub; a 0 would leave the budget empty for good
                self.limit = limit.limit
            self.remaining = limit.remaining
        elif limit.reset == self.reset:
            # Answers to concurrent requests arrive out of order: the lowest count wins.
            self.remaining = min(self.remaining, limit.remaining)
        # An earlier window's (a request sent before the reset, answered after a later
        # one) says nothing of this window's count.

    def unmeter(self) -> None:
        """Stop counting: GitHub meters nothing of the resource (a success answered
        without rate-limit headers, `observe`; or `GET /rate_limit` said so,
        `limits_off`) until an answer with the headers (`observe`)."""
        self.metered = False

    def _meter(self) -> None:
        """Count again from a fresh window, as after a reset: GitHub meters the
        resource again, and what was counted before it stopped is not its count."""
        self.metered = True
        self._restart()

    def seconds_to_reset(self, now: float) -> float:
        """Return the seconds until the window resets (0 when unknown or past)."""
        return max(self.reset - self._github(now), 0.0)

    def _github(self, now: float) -> float:
        return now if self._clock is None else self._clock.now(now)

    def _roll(self, now: float) -> None:
        if self.reset and self._github(now) >= self.reset:
            self._restart()

    def _restart(self) -> None:
        """Start a window whose reset is not known yet, with the limit last known."""
        self.remaining = self.limit
        self.reset = 0.0
        self._window += 1

    def _exhausted(self, now: float, method: str, url: str, wanted: int = 1) -> RateLimited:
        reset_after = self.seconds_to_reset(now) if self.reset else None
        wait = reset_after or 0.0
        leased = self.usable(now) >= wanted  # only open leases stand in the way
        if leased:
            wait = min(wait, LEASED_WAIT) if wait > 0 else LEASED_WAIT
        elif wait <= 0:  # spent, and no reset known to wait for (a 0 reruns at once)
            wait = UNKNOWN_RESET_WAIT
        return RateLimited(
            429,
            f"the installation's budget is spent ({self.remaining} left, {self._reserved} "
            f"leased, margin {self.margin:.0%}; wanted {wanted})"
            + (f": waiting {wait:g} s for open leases to settle" if leased else ""),
            kind="primary",
            retry_after=wait,
            reset=self.reset or None,
            reset_after=reset_after,
            method=method,
            url=url,
        )
