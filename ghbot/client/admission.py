"""What holds an HTTP exchange back before it goes: the installation's circuit breaker,
its secondary-limit pause, its rate-limit budget and its write lane (`Admission`, a
base of `GitHub`), and what a client hands over of them to another.
"""

from __future__ import annotations

from ghbot.budget import Budget, Lease
from ghbot.client.call import Call
from ghbot.client.credentials import Credentials
from ghbot.client.installation_state import (
    CONTENT_LIMITS,
    Holds,
    InstallationState,
    WriteLane,
)
from ghbot.client.options import ClientOptions
from ghbot.client.watch import watched_wait
from ghbot.errors import (
    CircuitOpen,
    Forbidden,
    InstallationUnavailable,
    LeaseExhausted,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
)

__all__ = ["Admission", "Refused"]


class Refused(Exception):
    """The client's own count of a budget refused a request (`error`, raised to the
    caller unless `_send_retrying` waits it out): never sent."""

    def __init__(self, error: RateLimited, budget: Budget) -> None:
        super().__init__(error.message)
        self.error, self.budget = error, budget


class Admission:
    """`GitHub`'s checks before each HTTP exchange (`_admit`) and the holds they keep.

    A base of `GitHub`, which sets the attributes below; never used alone.
    """

    __slots__ = ()

    options: ClientOptions
    base_url: str
    _creds: Credentials
    _state: InstallationState
    _lease: Lease | None

    @property
    def settled(self) -> bool:
        """Tell whether forgetting this installation's client loses nothing GitHub asked.

        False while a write is in flight, the write interval since the last one has not
        passed, the content-creating writes of the last minute or hour are as many as
        GitHub allows (`CONTENT_LIMITS`), or a secondary-limit pause is in force: a new
        client would know none of that and could write too soon. A runtime keeps the
        client until it is settled.
        """
        state, now = self._state, self.options.clock()
        lane = state._lane
        if lane is not None and (
            lane.lock.locked() or lane.next_free() > now or lane.content_free(now) > now
        ):
            return False
        return state.paused_until <= now

    @property
    def paused(self) -> bool:
        """Whether a secondary-limit pause is in force (GitHub asked for no request)."""
        return self._state.paused_until > self.options.clock()

    def holds(self) -> Holds:
        """Return what a new client of the installation would not know (`Holds`).

        A write in flight counts as ending now: its interval runs from now.
        """
        state, now = self._state, self.options.clock()
        lane, interval = state._lane, self.options.pace_writes or 0.0
        writes_after = breaker_until = 0.0
        if lane is not None:
            writes_after = lane.next_free()
            if lane.lock.locked():
                writes_after = max(writes_after, now + interval)
        if state.breaker is not None and (left := state.breaker.retry_after(now)) > 0:
            breaker_until = now + left
        return Holds(writes_after, state.paused_until, breaker_until)

    def hold(
        self, *, writes_after: float = 0.0, paused_until: float = 0.0, breaker_until: float = 0.0
    ) -> None:
        """Take over what another client of the installation held (`holds`). Never
        shortens a wait this client already has."""
        state = self._state
        state.paused_until = max(state.paused_until, paused_until)
        if writes_after > 0:
            lane = state.lane
            lane.free_at = max(lane.free_at, writes_after)
        if state.breaker is not None:
            state.breaker.open_until(breaker_until, self.options.clock())

    async def grant_write(self, spacing: float) -> None:
        """Give the installation's next write turn to a write sent elsewhere (a quota
        lease's task, which sends it as soon as this returns).

        Waits for the lane's writes so far and any secondary-limit pause (raising
        `RateLimited` for a pause longer than `max_rate_limit_wait`, as a request
        would); then the lane's next write goes `spacing` from now, which leaves the
        granted write that long, less the interval, to reach GitHub.
        """
        state = self._state
        lane = state.lane
        with watched_wait():
            await lane.lock.acquire()
        try:  # held: a write in flight has ended and set `free_at` (its end + interval)
            while True:
                now = self.options.clock()
                paused = state.paused_until - now
                if paused > self.options.max_rate_limit_wait:
                    raise RateLimited(
                        429,
                        "the installation is paused after a secondary rate limit",
                        kind="secondary",
                        retry_after=paused,
                    )
                # Counted as content-creating: its method is not known here.
                content = self._content_wait(lane, None)
                if (wait := max(lane.free_at - now, paused, content)) <= 0:
                    break
                await self._pause(wait)
            now = self.options.clock()
            lane.free_at = now + spacing
            lane.created.append(now + spacing)  # it reaches GitHub before then
        finally:
            lane.lock.release()

    def _content_wait(self, lane: WriteLane, call: Call | None) -> float:
        """How long the next content-creating write (`call`; None: a turn granted to
        a quota lease's write) waits for GitHub's numbers; raise `RateLimited`
        (secondary) when longer than `max_rate_limit_wait`."""
        now = self.options.clock()
        wait = lane.content_free(now) - now
        if wait > self.options.max_rate_limit_wait:
            limits = ", ".join(f"{n} in {w:.0f} s" for n, w in CONTENT_LIMITS)
            raise RateLimited(
                429,
                f"the installation made as many content-creating requests as GitHub allows "
                f"({limits})",
                kind="secondary",
                retry_after=wait,
                method=call.method if call is not None else "",
                url=call.shown() if call is not None else "a quota lease's write",
            )
        return wait

    async def _go(self, call: Call, budget: Budget | None, turned: Lease | None) -> None:
        """Take the write's turn (`turned`'s lane); give the unit `_admit` took back when
        that stops it (no turn, a drain). The call's watcher is told it goes in
        `_exchange`, once no pause holds it."""
        try:
            if turned is not None:  # after `_admit`'s waits: sent in its turn
                await self._write_turn(turned)
        except BaseException:
            if budget is not None:  # never sent: GitHub counted nothing
                self._refund(budget)
            raise

    async def _write_turn(self, lease: Lease) -> None:
        """Take one of the lease's writes and wait for its turn in the installation's
        write lane (`Lease.write_turn`); raise `LeaseExhausted` when none is left."""
        if lease.writes is not None:
            if lease.writes <= 0:
                raise LeaseExhausted(
                    "quota lease has no write left for this write (every attempt takes "
                    "one): ask for more, quota.lease(n, writes=k)"
                )
            lease.writes -= 1
        if lease.write_turn is not None:
            with watched_wait():
                await lease.write_turn()

    async def _admit(self, call: Call) -> Budget | None:
        """Check the breaker, a pause and the budget before one HTTP exchange."""
        opts, state = self.options, self._state
        now = opts.clock()
        if state.breaker is not None:
            state.breaker.check(now)
        # Looked at again after each wait: a request in flight meanwhile may have drawn
        # a longer pause, or opened the breaker.
        while state.paused_until > now:
            wait = state.paused_until - now
            if wait > opts.max_rate_limit_wait:
                raise RateLimited(
                    429,
                    "the installation is paused after a secondary rate limit",
                    kind="secondary",
                    retry_after=wait,
                    method=call.method,
                    url=call.shown(),
                )
            await self._pause(opts.retry.spread(wait))
            now = opts.clock()
            if state.breaker is not None:
                state.breaker.check(now)
        if call.resource is None:
            return None
        budget = state.budgets.get(call.resource)
        if self._lease is not None and call.resource == "core":
            budget.spend(self._lease)
            return budget
        try:
            budget.acquire(now, method=call.method, url=call.shown())
        except RateLimited as exc:  # judged in `_send_retrying`, outside the write lane
            raise Refused(exc, budget) from None
        return budget

    def _refund(self, budget: Budget) -> None:
        """Give back the unit `_admit` took (to this client's lease, for core)."""
        budget.refund(self._lease if budget.resource == "core" else None)

    def token_failed(self, exc: BaseException) -> None:
        """Judge why the installation's token could not be had, raising what its caller
        should see instead of `exc`, if anything.

        GitHub failed the exchange (a 5xx, a timeout, a dropped connection, after the
        exchange's own retries): open the installation's breaker and raise
        `CircuitOpen`; no call can go until it can, so its deliveries wait as in an
        outage instead of spending their attempts on it. GitHub refused it because the
        App is not installed there (404) or the installation is suspended (403 saying
        so): raise `InstallationUnavailable`, which no wait cures.
        """
        installation_id = getattr(self._creds, "installation_id", None)
        if installation_id is not None and (gone := _unavailable(exc, installation_id)):
            raise gone from exc
        breaker = self._state.breaker
        if breaker is None or not isinstance(exc, ServerError | TransportError):
            return
        now = self.options.clock()
        breaker.trip(now)
        left = breaker.retry_after(now)
        message = f"{breaker.name}: no token ({type(exc).__name__}); calls wait {left:g} s"
        raise CircuitOpen(message, retry_after=left) from exc

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds` (the options' sleep), telling the call's watcher."""
        with watched_wait():
            await self.options.sleep(seconds)


def _unavailable(exc: BaseException, installation_id: int) -> InstallationUnavailable | None:
    """`InstallationUnavailable` for GitHub's refusal (`exc`) of an installation's token
    that says it is not installed or suspended; None for any other failure."""
    if isinstance(exc, NotFound):
        suspended, what = False, "not installed (uninstalled, or another App's)"
    elif isinstance(exc, Forbidden) and "suspended" in str(exc).lower():
        suspended, what = True, "suspended"
    else:
        return None
    status = 403 if suspended else 404
    return InstallationUnavailable(
        status,
        f"installation {installation_id} is {what}: GitHub refused its token",
        installation_id=installation_id,
        suspended=suspended,
        method=getattr(exc, "method", ""),
        url=getattr(exc, "url", ""),
        request_id=getattr(exc, "request_id", None),
    )
