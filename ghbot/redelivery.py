"""Redelivery: ask GitHub again for the webhook deliveries that never reached the journal.

GitHub never retries a failed delivery by itself: a 5xx, a timeout or an outage of
the receiver loses the event unless somebody asks for it again. GitHub keeps the
app's deliveries for 3 days (7 on GHES) and redelivers one on request, with the
same GUID.

`RedeliverySweeper.sweep` lists the app's recent delivery attempts (newest first),
groups them by GUID, keeps the GUIDs none of whose attempts was answered `OK`, drops
those the journal holds anyway (journaled, but GitHub gave up waiting for the answer),
and asks GitHub to redeliver the rest, each GUID a bounded number of times.
`failed_deliveries` is the pure part.
https://docs.github.com/en/rest/apps/webhooks#list-deliveries-for-an-app-webhook
https://docs.github.com/en/webhooks/using-webhooks/handling-failed-webhook-deliveries
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from ghbot.errors import GhBotError, RateLimited, ServerError, TransportError

__all__ = ["Attempt", "Failed", "RedeliverySweeper", "Sweep", "failed_deliveries"]

log = logging.getLogger("ghbot.redelivery")

#: How long github.com keeps a delivery redeliverable.
GITHUB_WINDOW = 3 * 24 * 3600.0
#: How long GitHub Enterprise Server keeps one: the longest a sweep may look back.
GHES_WINDOW = 7 * 24 * 3600.0
#: Listings cut short kept to go on with, at most (the newest kept).
MAX_BEHIND = 100
#: An ask's errors that say nothing of the delivery (GitHub busy, unreachable, or
#: rate-limiting): they end a sweep's asks, uncounted, and the next sweep asks again.
NOT_NOW = (RateLimited, ServerError, TransportError)


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One delivery attempt, as `GET /app/hook/deliveries` lists it."""

    id: int
    guid: str
    delivered_at: str
    status: str
    status_code: int = 0
    redelivery: bool = False
    event: str = ""
    action: str | None = None
    installation_id: int | None = None

    @property
    def ok(self) -> bool:
        """True when the receiver answered 2xx (GitHub's status is then ``OK``)."""
        return self.status == "OK"

    @property
    def at(self) -> float:
        """`delivered_at` as a Unix time."""
        return datetime.fromisoformat(self.delivered_at).timestamp()


class Failed(msgspec.Struct, frozen=True, kw_only=True):
    """A GUID none of whose attempts succeeded; `attempt_id` is its newest attempt."""

    guid: str
    attempt_id: int
    event: str
    installation_id: int | None
    attempts: int
    first_at: float


def failed_deliveries(attempts: Iterable[Attempt]) -> list[Failed]:
    """Return the GUIDs with no `OK` attempt among `attempts`, oldest first."""
    by_guid: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        by_guid.setdefault(attempt.guid, []).append(attempt)
    failed = []
    for guid, tries in by_guid.items():
        if any(t.ok for t in tries):
            continue
        newest = max(tries, key=lambda t: t.id)
        failed.append(
            Failed(
                guid=guid,
                attempt_id=newest.id,
                event=newest.event,
                installation_id=newest.installation_id,
                attempts=len(tries),
                first_at=min(t.at for t in tries),
            )
        )
    return sorted(failed, key=lambda f: f.first_at)


class Sweep(msgspec.Struct, kw_only=True):
    """What one sweep saw and did."""

    listed: int = 0
    failed: int = 0
    held: int = 0
    redelivered: list[str] = msgspec.field(default_factory=list)
    gave_up: list[str] = msgspec.field(default_factory=list)
    errors: int = 0
    #: Failed deliveries not asked for because an ask was answered with a rate limit,
    #: a 5xx or nothing (`NOT_NOW`): later sweeps ask for them (uncounted), whatever
    #: they list.
    deferred: int = 0
    #: True when a listing stopped at `max_pages` before reaching how far back it was
    #: to go (this sweep's, or an earlier one's not yet gone on with): later sweeps go
    #: on from where it stopped.
    truncated: bool = False


Held = Callable[[list[Failed]], Awaitable[set[str]]]


class RedeliverySweeper:
    """Find failed deliveries the journal lacks and ask GitHub to redeliver them.

    `app` is a `GitHubApp` (its JWT client lists and redelivers); `held(failed)`
    returns the GUIDs among `failed` that the journal holds. The first sweep looks
    back `lookback` seconds; later ones from the previous sweep, less `overlap`. A
    GUID is asked for at most `max_requests` times, and not again within `spacing`
    seconds (GitHub redelivers asynchronously). A sweep reads at most `max_pages`
    pages of 100 attempts from the newest (GitHub's listing has no filter for
    failures); one that stops there keeps where it stopped, and later sweeps go on
    from there (oldest first, after their own newest attempts, with the pages left,
    one at least) until they reach how far back it was to go. A listing that cannot go
    on (GitHub refuses the page) is given up on with a warning. An app with more
    attempts per sweep than `max_pages` pages falls behind: `truncated` stays set, and
    past `MAX_BEHIND` listings cut short the oldest are given up on (an error).

    A failed delivery the sweeps found but have not yet had GitHub take an ask for
    (refused, or not asked for after an ask's error stopped the sweep) is kept and
    asked for by later sweeps even once their listings no longer reach its attempts,
    until GitHub takes an ask, the journal holds it, or it is given up on: an ask
    GitHub refuses for good (a 4xx, as for a delivery past GitHub's window) counts
    towards `max_requests`; one answered with a rate limit, a 5xx or nothing
    (`NOT_NOW`) does not, and ends the sweep's asks (one warning): the rest wait for
    the next sweep. None is kept past GHES's 7 days from its first attempt (a warning
    says how many were dropped so).
    """

    def __init__(
        self,
        app: Any,
        held: Held,
        *,
        lookback: float = 6 * 3600.0,
        overlap: float = 600.0,
        max_requests: int = 3,
        spacing: float = 300.0,
        max_pages: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.held = held
        self.lookback = min(lookback, GITHUB_WINDOW)
        self.overlap = overlap
        self.max_requests = max_requests
        self.spacing = spacing
        self.max_pages = max(max_pages, 1)
        self.clock = clock
        self.last_sweep: float | None = None
        self.totals = {"sweeps": 0, "redelivered": 0, "gave_up": 0, "errors": 0}
        #: GUID: (asks made, when GitHub last took one, 0.0 if it never did, when the
        #: last was made).
        self._asked: dict[str, tuple[int, float, float]] = {}
        #: Failed deliveries found and not yet taken by GitHub (refused, or deferred):
        #: later sweeps ask for them whatever they list, as long as GitHub may keep
        #: them (GHES's 7 days from the first attempt; github.com's 3, past which
        #: GitHub refuses the asks and the sweeper gives up, logged).
        self._pending: dict[str, Failed] = {}
        #: Listings cut short: where each stopped (its next page's URL) and how far
        #: back it was to go; later sweeps go on with them. In memory: an app-auth
        #: actor restarted starts without them.
        self._behind: list[tuple[str, float]] = []
        self._lock = asyncio.Lock()

    async def sweep(self, *, again: bool = False, lookback: float | None = None) -> Sweep:
        """List, compare with the journal, redeliver; return what happened.

        Sweeps run one at a time (a scheduled one and one asked for by hand). With
        `again` (one asked for by hand, `ghbot redeliver`), the sweep looks back the
        whole `lookback` and asks for every failed delivery the journal lacks, those
        given up on or asked for within `spacing` included, each counted from one
        again: after an outage longer than `max_requests` asks `spacing` apart, the
        scheduled sweeps have given up on what failed early in it. `lookback` (with
        `again`: `ghbot redeliver --since`) looks back that far instead, up to
        GitHub Enterprise Server's 7 days.
        """
        async with self._lock:
            return await self._sweep(again, self.lookback if lookback is None else lookback)

    async def _sweep(self, again: bool, lookback: float) -> Sweep:
        now = self.clock()
        since = now - min(lookback, GHES_WINDOW)
        if self.last_sweep is not None and not again:
            since = max(since, self.last_sweep - self.overlap)
        attempts, cut, read = await self._attempts(None, since, self.max_pages)
        if cut is not None:
            log.warning(
                "redelivery: stopped after %d delivery attempts, %.0f s back of %.0f",
                len(attempts),
                now - (attempts[-1].at if attempts else now),
                now - since,
            )
        if cut is None:  # listed whole back to `since`: so were those cut short within
            self._behind = [(url, older) for url, older in self._behind if older < since]
        if self._behind:
            attempts += await self._go_on(now, max(self.max_pages - read, 1))
        if cut is not None:
            self._behind.append((cut, since))
        failed = failed_deliveries(attempts)
        listed = {item.guid for item in failed}
        kept = [f for g, f in self._pending.items() if g not in listed and not _expired(f, now)]
        if kept:
            failed = sorted([*failed, *kept], key=lambda f: f.first_at)
        truncated = bool(self._behind)
        result = Sweep(listed=len(attempts), failed=len(failed), truncated=truncated)
        held = await self.held(failed) if failed else set()
        result.held = len(held)
        stopped: GhBotError | None = None
        for item in failed:
            if item.guid in held:
                self._pending.pop(item.guid, None)
                continue
            if again:
                self._asked.pop(item.guid, None)
            if not self._due(item, now, result):
                continue
            if stopped is None:
                stopped = await self._ask(item, now, result)
            if stopped is not None:  # this one and the rest: the next sweep asks
                self._pending[item.guid] = item
                result.deferred += 1
        if stopped is not None:
            why = (
                f"{stopped.kind} rate limit"
                if isinstance(stopped, RateLimited)
                else type(stopped).__name__
            )
            log.warning(
                "redelivery: asks stopped (%s); %d failed deliveries left for the next sweep",
                why,
                result.deferred,
                extra={"operation": "redeliver", "error_type": type(stopped).__name__},
            )
        self.last_sweep = now
        self._forget(now)
        self.totals["sweeps"] += 1
        self.totals["redelivered"] += len(result.redelivered)
        self.totals["gave_up"] += len(result.gave_up)
        self.totals["errors"] += result.errors
        if result.redelivered or result.gave_up:
            log.warning(
                "redelivery: asked GitHub for %d failed deliveries, gave up on %d",
                len(result.redelivered),
                len(result.gave_up),
            )
        return result

    async def _go_on(self, now: float, pages: int) -> list[Attempt]:
        """Go on with the listings earlier sweeps cut short, oldest first, reading
        `pages` pages at most; keep where each stops; return the attempts listed."""
        found: list[Attempt] = []
        left: list[tuple[str, float]] = []
        for url, older in sorted(self._behind, key=lambda listing: listing[1]):
            if now - older > GHES_WINDOW:
                continue  # GitHub keeps no attempt that old
            if pages <= 0:
                left.append((url, older))
                continue
            try:
                more, cut, read = await self._attempts(url, older, pages)
            except GhBotError as exc:
                # A cursor GitHub no longer takes, say: this one is given up on, and
                # the sweep goes on with what it has.
                log.warning(
                    "redelivery: could not go on with a listing cut short (%s); left, "
                    "%.0f s back of it unlisted",
                    type(exc).__name__,
                    now - older,
                )
                continue
            pages -= read
            found += more
            if cut is not None:
                left.append((cut, older))
        if len(left) > MAX_BEHIND:
            log.error(
                "redelivery: %d listings cut short; the oldest %d given up on (the app "
                "gets more delivery attempts than the sweeps can list)",
                len(left),
                len(left) - MAX_BEHIND,
            )
            left = left[-MAX_BEHIND:]
        self._behind = left
        log.warning(
            "redelivery: went on with listings earlier sweeps cut short: %d more delivery "
            "attempts; %d still to go on with",
            len(found),
            len(left),
        )
        return found

    async def _attempts(
        self, resume: str | None, since: float, pages: int
    ) -> tuple[list[Attempt], str | None, int]:
        """List the attempts since `since`, newest first (from `resume`, a next page's
        URL, when given), reading `pages` pages at most; return them, the next page's
        URL when it stopped there (else None), and the pages read."""
        found: list[Attempt] = []
        read = 0
        async for items, next_url in self.app.hook_delivery_pages(per_page=100, resume=resume):
            read += 1
            for item in items:
                attempt = msgspec.convert(item, Attempt)
                if attempt.at < since:
                    return found, None, read  # newest first: the rest is older still
                found.append(attempt)
            if next_url is None:
                break
            if read >= pages:
                return found, next_url, read  # stop before asking for one page more
        return found, None, read

    def _due(self, item: Failed, now: float, result: Sweep) -> bool:
        """Tell whether `item` is to be asked for now: not asked within `spacing`, nor
        given up on (which it is, logged, once asked `max_requests` times)."""
        count, last, _made = self._asked.get(item.guid, (0, 0.0, 0.0))
        if count and now - last < self.spacing:
            return False  # asked recently; GitHub may not have redelivered yet
        if count >= self.max_requests:
            self._pending.pop(item.guid, None)
            if count == self.max_requests:
                result.gave_up.append(item.guid)
                self._asked[item.guid] = (count + 1, now, now)
                log.error(
                    "redelivery: %s (%s) still failed after %d asks; giving up",
                    item.guid,
                    item.event,
                    count,
                )
            return False
        return True

    async def _ask(self, item: Failed, now: float, result: Sweep) -> GhBotError | None:
        """Ask GitHub to redeliver `item`; return the error that says to stop asking
        for now (`NOT_NOW`: nothing counted), if one came."""
        count, last, _made = self._asked.get(item.guid, (0, 0.0, 0.0))
        try:
            await self.app.redeliver(item.attempt_id)
        except NOT_NOW as exc:
            return exc
        except GhBotError as exc:
            result.errors += 1
            fields = {
                "event_id": item.guid,
                "operation": "redeliver",
                "error_type": type(exc).__name__,
            }
            log.warning("redelivery of %s failed: %s", item.guid, type(exc).__name__, extra=fields)
            # Counted, but not as taken: the next sweep may ask at once.
            self._asked[item.guid] = (count + 1, last, now)
            self._pending[item.guid] = item
            return None
        self._asked[item.guid] = (count + 1, now, now)
        self._pending.pop(item.guid, None)
        result.redelivered.append(item.guid)
        return None

    def _forget(self, now: float) -> None:
        """Drop GUIDs asked for longer ago than GitHub keeps deliveries, and failed ones
        kept for later sweeps once GitHub keeps them no longer."""
        stale = [g for g, (*_, made) in self._asked.items() if now - made > GITHUB_WINDOW]
        for guid in stale:
            del self._asked[guid]
        old = [g for g, item in self._pending.items() if _expired(item, now)]
        for guid in old:
            del self._pending[guid]
        if old:
            log.warning(
                "redelivery: dropped %d failed deliveries GitHub never took an ask for, "
                "7 days after their first attempt",
                len(old),
            )

    def stats(self) -> Mapping[str, Any]:
        """Return the totals, when the last sweep ran, and how many GUIDs it remembers.

        `remembered` (GUIDs asked for, kept to bound the asks) holds what was asked
        for within GitHub's window, not everything ever asked for.
        """
        return {**self.totals, "last_sweep": self.last_sweep, "remembered": len(self._asked)}


def _expired(item: Failed, now: float) -> bool:
    """Tell whether GitHub keeps `item` no longer anywhere (GHES's 7 days)."""
    return now - item.first_at > GHES_WINDOW
