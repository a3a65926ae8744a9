"""What the clients of one installation share: budgets, breaker, write lane, pause.

Every client of an installation (`GitHub.with_lease`'s copies too) holds the same
`InstallationState`; `Holds` is what a client hands over to a new one of the same
installation (`GitHub.holds`, `GitHub.hold`).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import NamedTuple

from ghbot.breaker import CircuitBreaker
from ghbot.client.options import Budgets

__all__ = ["CONTENT_LIMITS", "Holds", "InstallationState", "WriteLane"]

#: GitHub's secondary limits on an installation's content-creating requests (its
#: POSTs, GraphQL mutations included): at most this many in this many seconds.
CONTENT_LIMITS = ((80, 60.0), (500, 3600.0))


class WriteLane:
    """One installation's writes: one exchange at a time, `interval` apart at GitHub.

    GitHub's secondary limit measures the gap between two writes' *arrivals*, which we
    never see; but each is bounded by what we do see: a request arrives after we start
    sending it, and before we finish reading its answer. So the next write is sent no
    earlier than `interval` after the previous write's answer was read (or its
    exchange failed), and then

        next arrival ≥ next send ≥ previous answer + interval ≥ previous arrival + interval

    whatever delays the token lookup, the pool, the connection, the network or the
    event loop add to either write: they can only push a send later. Spacing when
    writes are *scheduled* holds nothing of the kind: a first write held up minting
    its token reaches GitHub together with the writes scheduled an interval after it.
    What keeps the chain true:

    - `lock` is held across each exchange (every attempt: a retry and a redirect hop
      reach GitHub too), so writes never overlap and "previous" is well defined;
    - `free_at` is set when the exchange ends, however it ends, from the same clock
      the wait reads; an exchange that failed (a timeout, a dropped connection) is
      taken to have reached GitHub, if at all, before we saw it fail;
    - the clock is read again after each sleep, since a timer may fire early (the
      loop's timers run on another clock, with its own resolution).

    The price is one answer's latency per write on top of `interval`. Writes of other
    installations have lanes of their own; reads never wait for one.

    The lane also keeps GitHub's numbers for content-creating writes
    (`CONTENT_LIMITS`): it notes when each exchange ended (a granted turn: when the
    lane's next write may go), which is after the write reached GitHub, and holds the
    next until the oldest of the window's has left it. A write that waits for that
    holds the lane: the installation's other writes wait behind it.
    """

    __slots__ = ("created", "free_at", "lock")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        #: When the next write may be sent (epoch seconds, the client's clock).
        self.free_at = 0.0
        #: The content-creating writes of the longest window: when each exchange
        #: ended (a granted turn: when the lane's next write may go), oldest first.
        self.created: deque[float] = deque()

    def next_free(self) -> float:
        """When the lane's next write may be sent (after the last, or a turn granted)."""
        return self.free_at

    def content_free(self, now: float) -> float:
        """When the next content-creating write may be sent within GitHub's numbers
        (`now` or earlier: at once)."""
        created = self.created
        while created and created[0] <= now - CONTENT_LIMITS[-1][1]:
            created.popleft()
        free = 0.0
        for limit, window in CONTENT_LIMITS:
            if len(created) >= limit:
                free = max(free, created[-limit] + window)
        return free


class Holds(NamedTuple):
    """What an installation's client holds that a new client would not know: when its
    next write may go (the write lane's pacing, and turns granted to writes sent
    elsewhere, `grant_write`; 0 when writes are not paced), until when a
    secondary-limit pause holds every request, and until when its open breaker refuses
    calls (0 for none). Epoch seconds of the client's clock."""

    writes_after: float
    paused_until: float
    breaker_until: float


class InstallationState:
    """What the clients of one installation share: budgets, breaker, writes, pause."""

    __slots__ = (
        "_asking",
        "_lane",
        "breaker",
        "budgets",
        "limited",
        "limited_at",
        "paused_until",
    )

    def __init__(self, budgets: Budgets, breaker: CircuitBreaker | None) -> None:
        self.budgets = budgets
        self.breaker = breaker
        self.paused_until = 0.0
        #: Secondary limits in a row, of reads and of writes (a success of the kind
        #: ends the row): a limit without `retry-after` waits 60 s doubled per earlier
        #: one, across requests, as GitHub asks ("then back off exponentially").
        self.limited = [0, 0]
        #: When the last of them was counted: a limit answered to a request sent before
        #: that is of the same burst (requests in flight together), not one more in a
        #: row, and waits as long as the first did.
        self.limited_at = [-math.inf, -math.inf]
        self._lane: WriteLane | None = None
        self._asking: asyncio.Lock | None = None

    @property
    def asking(self) -> asyncio.Lock:
        """Held while the client asks GitHub for the budgets' numbers (`learn_budget`),
        made on first use."""
        if self._asking is None:
            self._asking = asyncio.Lock()
        return self._asking

    @property
    def lane(self) -> WriteLane:
        """The installation's write lane, made on its first paced write."""
        if self._lane is None:
            self._lane = WriteLane()
        return self._lane
