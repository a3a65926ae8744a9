"""A shard's installation hosts: activated from the journal, called back, passivated.

`ShardHosts` holds a shard's state and its hosts (`actors.installation.InstallationHost`);
`ShardCore` adds the ingest, the `@every` runs, the background work and the operations,
and `ShardHandover` the reading again and the drain. `host` returns an installation's
host, activating it from the latest snapshot and the events after it; what a host calls
back (`grant_write`, a snapshot due, a write fenced, an installation GitHub says is
gone) lands here; `passivate` drops idle hosts, `snapshot` saves one's state.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from actors.appends import AppendGroup
from actors.bot import InstallationActor
from actors.installation import InstallationHost
from actors.installation_stream import InstallationStream
from actors.quota import WRITE_SPACING, LeaseTokens, Quota, TurnSource
from actors.runtime_events import installation_of, stream_name
from actors.turns import Turns
from actors.wire import Status, vshard_of
from ghbot import metrics
from ghbot.client import GitHub
from ghbot.errors import JournalUnavailable, ShardDraining, UsageError
from ghbot.journal import Journal
from ghbot.journal.records import EventRecord, NewEvent
from ghbot.redelivery import GITHUB_WINDOW
from ghbot.retry import RetryPolicy

__all__ = ["DEDUP_WINDOW", "ShardHosts"]

log = logging.getLogger("ghbot.shard")

#: Seconds a delivery GUID stays deduplicated: as long as GitHub can redeliver it.
DEDUP_WINDOW = GITHUB_WINDOW


class ShardHosts:
    """Hold a shard's state and its installations' hosts (see the module).

    Its `__init__` is the shard's: `ShardCore(...)` (a subclass) takes these arguments.
    """

    def __init__(
        self,
        vshards: Sequence[int],
        vshard_count: int,
        journal: Journal,
        bot_class: type[InstallationActor],
        *,
        github_for: Callable[[int], Any] = lambda _id: None,
        breaker_wait: Callable[[Any], float] = lambda _gh: 0.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_active: int = 100_000,
        idle_after: float = 600.0,
        dedup_window: float = DEDUP_WINDOW,
        prune_every: float = 3600.0,
        prune_after: float = 60.0,
        schedule: bool = True,
        version: str = "",
        write_turns: TurnSource | None = None,
        lease_tokens: LeaseTokens | None = None,
        tracebacks: bool = False,
        activation_hint: str = "",
    ) -> None:
        self.vshards = tuple(vshards)
        self.vshard_count = vshard_count
        self.journal = journal
        #: Every append of the shard (ingest and handlers' outcomes) goes through it.
        self.appends = AppendGroup(journal)
        self.turns = Turns()
        #: Ingest calls under way (each runs to its end even if its caller goes away).
        self._ingesting: set[asyncio.Future[list[Status]]] = set()
        self.bot_class = bot_class
        #: The deployment version `bot_class` belongs to (`RuntimeSettings.version`): a
        #: delivery judged by another version's code is judged again (`_ingest`).
        self.version = version
        #: Where a quota lease's tasks ask for their writes' turns (`grant_write`).
        self._write_turns = write_turns
        #: Where a quota lease's tasks get the installation's next token.
        self._lease_tokens = lease_tokens
        self.epochs: dict[int, int] = {}
        self.hosts: OrderedDict[int, InstallationHost] = OrderedDict()
        self._activating: dict[int, asyncio.Future[InstallationHost]] = {}
        self._github_for = github_for
        self._breaker_wait = breaker_wait
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self.max_active = max_active
        self.idle_after = idle_after
        self.dedup_window = dedup_window
        self.prune_every = prune_every
        self.prune_after = prune_after
        self.counters = {
            "batches": 0,
            "received": 0,
            "duplicates": 0,
            "activations": 0,
            "passivations": 0,
            "snapshots": 0,
            "pruned": 0,
            "scheduled": 0,
        }
        self._snapshotting: dict[int, asyncio.Task[int]] = {}
        #: Installations whose activation failed after their delivery was journaled.
        self._reactivating: dict[int, asyncio.Task[None]] = {}
        #: Virtual shards a newer shard has taken (a write of theirs was fenced): their
        #: hosts here are stopped, and those activated later start stopped.
        self._fenced_vshards: set[int] = set()
        #: Of those, the ones to drop and activate once more (another call failed).
        self._again: set[int] = set()
        #: The clients of hosts so dropped, for the host read after them (`_new_host`).
        self._clients_kept: dict[int, Any] = {}
        #: Dead-letter replays those hosts had queued, for the host read after them.
        self._replays_kept: dict[int, list[tuple[str, str]]] = {}
        #: A drain that finishes what the shard took is under way: hosts activated from
        #: now on (by recovery, by an ingest under way, read again by `_read_again_now`)
        #: run (`_new_host`).
        self._finishing = False
        self._sweeper: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._scheduler: asyncio.Task[None] | None = None
        #: The last schedule slot seen per (installation, `@every` handler).
        self._slots: dict[tuple[int, str], int] = {}
        #: Whether `open` starts the `@every` scheduler (the test harness drives it).
        self.schedule = schedule
        #: Whether handlers' failures are logged with their traceback (`ghbot dev` and
        #: the test harness; a deployment logs one line with the error's type).
        self.tracebacks = tracebacks
        #: Said after an installation's activation failure, with `tracebacks`: what to
        #: do about it (`ghbot dev` names its journal and how to start afresh).
        self.activation_hint = activation_hint
        #: Installations whose last activation raised (`_not_activated`).
        self._unactivated: set[int] = set()
        #: Installations removed or suspended since this shard started: not scheduled.
        self._inactive: set[int] = set()
        #: When each installation was last put back on the schedule (`_unavailable`).
        self._scheduled_again: dict[int, float] = {}
        #: Set by `drain`: the shard refuses new deliveries (`Status.DRAINING`), since
        #: `draining_since` (`time.monotonic()`; `/readyz` bounds how long it may last).
        self.draining = False
        self.draining_since = 0.0
        #: Whether what the clients hold is being, or was, journaled for the next shard
        #: (`_hand_over_clients`).
        self._handing_over = self._handed_over = False
        #: Resuming the pending work of every installation (see `open`).
        self.recovery: asyncio.Task[int] | None = None
        #: This shard's part of `ghbot_pending_deliveries`, while the shard lives.
        self._pending_metric = metrics.watch_pending(self.pending)

    # --- activation ---------------------------------------------------------------

    async def host(self, installation_id: int) -> InstallationHost:
        """Return the installation's host, activating it from the journal if needed.

        Raises `UsageError` for an installation of another shard's virtual shards.
        The host returned is the installation's host at that moment: a caller that
        waited for another's activation looks again, since the host activated may be
        dropped before the caller resumes (`_reload_later` drops an idle one), and a
        delivery handed to a dropped host would also run in its successor.
        """
        while (host := self.hosts.get(installation_id)) is None:
            if self._vshard(installation_id) not in self.vshards:
                raise UsageError(f"installation {installation_id} belongs to another shard")
            pending = self._activating.get(installation_id)
            if pending is None:
                return await self._activate_once(installation_id)
            try:
                await asyncio.shield(pending)
            except asyncio.CancelledError:
                # The activation's own caller was cancelled (not this one): try again.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        self.hosts.move_to_end(installation_id)
        return host

    async def _activate_once(self, installation_id: int) -> InstallationHost:
        """Activate the installation, letting concurrent callers wait for it (`host`)."""
        future: asyncio.Future[InstallationHost] = asyncio.get_running_loop().create_future()
        self._activating[installation_id] = future
        try:
            host = await self._activate(installation_id)
            future.set_result(host)
            return host
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._activating[installation_id]

    async def _activate(self, installation_id: int) -> InstallationHost:
        vshard = self._vshard(installation_id)
        stream = stream_name(installation_id)
        snapshot = await self.journal.load_snapshot(stream, shard=vshard)
        records = await self.journal.read(
            stream, (snapshot.seq + 1) if snapshot else 1, shard=vshard
        )
        host = self._new_host(installation_id)
        if snapshot is not None:
            host.restore(snapshot.data, records, snapshot_seq=snapshot.seq)
        else:
            host.restore(None, records)
        self.hosts[installation_id] = host
        self._unactivated.discard(installation_id)
        self._clients_kept.pop(installation_id, None)  # now the host's (`_new_host`)
        self.counters["activations"] += 1
        host.resume()
        if not host.stopping:  # else a drain: it reports them (`_log_replays_kept`)
            # Dead-letter replays a host dropped to be read again had queued.
            for delivery_id, handler in self._replays_kept.pop(installation_id, ()):
                if not await host.replay_dead_letter(delivery_id, handler):
                    # Asked while the host before ran that very replay: it ran there.
                    log.info(
                        "%s: no dead letter %s of %s left to replay (it ran meanwhile)",
                        host.stream,
                        handler,
                        delivery_id,
                    )
        self.passivate(keep=installation_id)  # callers waiting for it look it up again
        return host

    def _new_host(self, installation_id: int, *, scratch: bool = False) -> InstallationHost:
        """Make a host; a `scratch` one (for folding snapshots) gets no GitHub client."""
        bot = self.bot_class()
        bot.installation_id = installation_id
        bot._runtime_clock = self._clock
        if scratch:
            github = None
        elif (github := self._clients_kept.get(installation_id)) is None:
            github = self._github_for(installation_id)
        if github is not None:  # else no handler runs, or `without_installation` says why
            bot.github = github
            bot.quota = Quota(
                github,
                turns=self._write_turns,
                installation_id=installation_id,
                local_turn=functools.partial(self.grant_write, installation_id),
                tokens=self._lease_tokens,
            )
        vshard = self._vshard(installation_id)
        epoch = self.epochs.get(vshard)

        async def append(stream: str, events: Sequence[NewEvent]) -> int:
            result = await self.appends.append(stream, events, shard=vshard, epoch=epoch)
            return result.last_seq

        async def find(after: int, events: Sequence[NewEvent]) -> int | None:
            records = await self.journal.read(stream_name(installation_id), after + 1, shard=vshard)
            return _last_seq_of_run(records, events)

        host = InstallationHost(
            installation_id,
            bot,
            append=append,
            find=find,
            retry=self._retry,
            clock=self._clock,
            sleep=self._sleep,
            breaker_wait=lambda: self._breaker_wait(github),
            on_written=self._maybe_snapshot,
            on_fenced=self._fenced,
            on_unavailable=self._unavailable,
            tracebacks=self.tracebacks,
        )
        if (self.draining and not self._finishing) or vshard in self._fenced_vshards:
            host.stop()  # activated while a drain hands over (recovery): it runs nothing
        return host

    async def _host_if_it_restores(self, installation_id: int) -> InstallationHost | None:
        """`host`, or None (logged, `_not_activated`) when the installation's activation
        raised something other than `JournalUnavailable` (which is raised)."""
        try:
            return await self.host(installation_id)
        except JournalUnavailable:
            raise
        except Exception as exc:  # one installation's state, say
            self._not_activated(installation_id, exc)
            return None

    def _not_activated(self, installation_id: int, exc: Exception) -> None:
        """Log an installation whose activation raised (its bot's `evolve` on a stored
        event, a snapshot its `state_type` no longer decodes): its deliveries stay
        journaled and pending, to run when an activation gets through (its next
        delivery, or a restart), and the shard's other installations go on.

        With `tracebacks` (`ghbot dev`, the test harness), the line has the error's
        text, its traceback and `activation_hint`; else the error's type alone, as its
        text may quote the journal's data.
        """
        self._unactivated.add(installation_id)
        extra = {"installation_id": installation_id, "error_type": type(exc).__name__}
        if not self.tracebacks:
            log.error(
                "installation %d could not be activated (%s); its deliveries stay pending",
                installation_id,
                type(exc).__name__,
                extra=extra,
            )
            return
        log.error(
            "installation %d could not be activated (%s: %s); its deliveries stay pending%s",
            installation_id,
            type(exc).__name__,
            exc,
            f". {self.activation_hint}" if self.activation_hint else "",
            exc_info=exc,
            extra=extra,
        )

    def activation_failed(self, installation_id: int) -> bool:
        """Return whether the installation's last activation raised (`_not_activated`):
        the deliveries journaled for it wait until one gets through."""
        return installation_id in self._unactivated

    async def _installations(self, vshard: int) -> list[int]:
        """Return the installations with a journal stream in `vshard`."""
        streams = await self.journal.list_streams(shard=vshard)
        return [i for i in map(installation_of, streams) if i is not None]

    def _vshard(self, installation_id: int) -> int:
        return vshard_of(installation_id, self.vshard_count)

    # --- what the hosts call back -------------------------------------------------

    def _fenced(self, host: InstallationHost) -> None:
        """A newer shard fenced `host`'s write: it owns the host's virtual shard now."""
        self._fence(self._vshard(host.installation_id), "a write was fenced")

    def _fence(self, vshard: int, why: str) -> None:
        """A newer shard owns `vshard` now (`why` says how this one learnt it). Stop
        every host of that virtual shard here, so none starts a delivery (and its
        writes to GitHub) that the new owner runs too."""
        if vshard in self._fenced_vshards:
            return
        self._fenced_vshards.add(vshard)
        stopped = [
            h for h in list(self.hosts.values()) if self._vshard(h.installation_id) == vshard
        ]
        for other in stopped:
            other.stop()
        log.error(
            "virtual shard %d: a newer shard took it over (%s); its %d installations here stop",
            vshard,
            why,
            len(stopped),
        )

    def _unavailable(self, host: InstallationHost, since: float) -> None:
        """Schedule `host`'s installation no more: GitHub refused its token to a run
        whose attempt began at `since` (not installed, or suspended); unless an
        `installation.created` or `unsuspend` put it back since."""
        if self._scheduled_again.get(host.installation_id, -math.inf) < since:
            self._set_scheduled(host.installation_id, False)

    def _set_scheduled(self, installation_id: int, scheduled: bool) -> None:
        """Schedule `installation_id`'s `@every` runs again, or no more."""
        if scheduled:
            self._inactive.discard(installation_id)
            self._scheduled_again[installation_id] = self._clock()
            return
        self._inactive.add(installation_id)
        # Back on later, its runs start at the next boundary, as on a first look.
        for key in [k for k in self._slots if k[0] == installation_id]:
            del self._slots[key]

    async def grant_write(self, installation_id: int) -> None:
        """Give a write of a quota lease's task its turn in the installation's write
        lane (`GitHub.grant_write`); return when the task may send it.

        Raise `ShardDraining` once a drain hands the installations' clients over
        (`_hand_over_clients`), also to a task that was waiting for its turn then: the
        turn would not reach the successor, which the task asks instead.
        """
        refused = ShardDraining(installation_id, "no write turn was given")
        if self._handing_over:
            raise refused
        github = getattr((await self.host(installation_id)).bot, "github", None)
        interval = github.options.pace_writes if isinstance(github, GitHub) else None
        if isinstance(github, GitHub) and interval:
            await github.grant_write(interval * WRITE_SPACING)
        if self._handing_over:
            raise refused

    # --- snapshots ----------------------------------------------------------------

    def _maybe_snapshot(self, host: InstallationStream) -> None:
        due = host.last_seq - host.snapshot_seq >= self.bot_class.snapshot_every
        # A host whose `evolve` raised (`diverged`) would raise again in the snapshot's
        # own fold, at every write: it is snapshotted no more until it is read again.
        if due and not host.diverged and host.installation_id not in self._snapshotting:
            installation_id = host.installation_id
            task = asyncio.get_running_loop().create_task(self.snapshot(installation_id))
            self._snapshotting[installation_id] = task
            task.add_done_callback(functools.partial(self._snapshotted, installation_id))

    def _snapshotted(self, installation_id: int, task: asyncio.Task[int]) -> None:
        """Forget a background snapshot; log (the type only: the message may quote the
        journal's data) one that failed. The next write past `snapshot_every` tries again."""
        self._snapshotting.pop(installation_id, None)
        if task.cancelled() or task.exception() is None:
            return
        log.warning(
            "installation %d: a snapshot failed (%s); the next write tries again",
            installation_id,
            type(task.exception()).__name__,
            extra={"installation_id": installation_id},
        )

    async def snapshot(self, installation_id: int) -> int:
        """Save a snapshot of the installation; return the seq it was taken at.

        Of the live host when it holds exactly events 1..seq (`InstallationHost.exact`:
        the usual case, and no event is read back). Otherwise folded from the latest
        snapshot and the journal after it, so the snapshot is exactly the fold of events
        1..seq even while appends are in flight. Requires `evolve` to be pure, as
        `InstallationActor` says.
        """
        vshard = self._vshard(installation_id)
        stream = stream_name(installation_id)
        live = self.hosts.get(installation_id)
        if live is not None and live.exact and live.last_seq > live.snapshot_seq:
            seq, data = live.last_seq, live.snapshot()  # no await between the two
            await self.journal.save_snapshot(
                stream, seq, data, shard=vshard, epoch=self.epochs.get(vshard)
            )
            self.counters["snapshots"] += 1
            live.snapshot_saved(seq)
            return seq
        previous = await self.journal.load_snapshot(stream, shard=vshard)
        start = previous.seq if previous else 0
        records = await self.journal.read(stream, start + 1, shard=vshard)
        if not records:
            return start
        scratch = self._new_host(installation_id, scratch=True)
        scratch.restore(previous.data if previous else None, records)
        await self.journal.save_snapshot(
            stream,
            scratch.last_seq,
            scratch.snapshot(),
            shard=vshard,
            epoch=self.epochs.get(vshard),
        )
        self.counters["snapshots"] += 1
        live = self.hosts.get(installation_id)
        if live is not None:
            live.snapshot_saved(scratch.last_seq)
        return scratch.last_seq

    # --- memory -------------------------------------------------------------------

    def passivate(self, *, force_idle: bool = False, keep: int | None = None) -> int:
        """Drop idle hosts: over `max_active` (least recently used first) or idle too long.

        None while draining: a stopped host keeps what it leaves pending in view. Nor
        `keep`'s (one just activated, whose deliveries may still be on their way to it).
        """
        if self.draining:
            return 0
        now = self._clock()
        dropped = 0
        for installation_id in list(self.hosts):
            if installation_id == keep:
                continue
            host = self.hosts[installation_id]
            over_cap = len(self.hosts) > self.max_active
            stale = force_idle or now - host.last_used >= self.idle_after
            if host.busy == 0 and (over_cap or stale) and _settled(host):
                del self.hosts[installation_id]
                dropped += 1
            elif not over_cap and not stale:
                break
        self.counters["passivations"] += dropped
        return dropped

    def pending(self) -> int:
        """Return the deliveries journaled and not yet completed in active installations."""
        # A metrics reader may call this from its own thread: iterate over a copy.
        return sum(len(host.progress.pending) for host in list(self.hosts.values()))


def _last_seq_of_run(records: Sequence[EventRecord], events: Sequence[NewEvent]) -> int | None:
    """Return the seq of the last of `events` where `records` hold them all in a row (the
    events of one append are numbered in a row), else None."""
    wanted = [(e.type, e.data) for e in events]
    for start in range(len(records) - len(wanted) + 1):
        run = records[start : start + len(wanted)]
        if [(r.type, r.data) for r in run] == wanted:
            return run[-1].seq
    return None


def _settled(host: InstallationHost) -> bool:
    """Tell whether the host's client may be forgotten (see `GitHub.settled`).

    Pacing and a secondary-limit pause live in the client: a host passivated a moment
    after a write would come back with a new client that could write too soon.
    """
    github = getattr(host.bot, "github", None)  # absent for a shard without clients
    return not isinstance(github, GitHub) or github.settled
