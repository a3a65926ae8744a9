"""A shard: the installations of some virtual shards, their journal writes and recovery.

`ShardCore` holds no Ray: the Ray actor in `actors.ray.runtime` wraps it, and tests drive it
directly. It takes batches of deliveries (`ingest`), journals each as
`DeliveryReceived` in one durable `append_many` (deduplicated on the delivery GUID,
fenced by this shard's epochs), and hands them to the installations' hosts. On start it
takes a new epoch for each of its virtual shards, so a zombie predecessor can no
longer write, and resumes every installation with pending deliveries. In the
background it passivates idle installations and prunes its virtual shards' delivery
GUIDs once they are older than the deduplication window (`prune`).
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

import msgspec

from actors.appends import AppendGroup
from actors.bot import InstallationActor, ordering_key
from actors.codecs import runtime_event
from actors.installation import InstallationHost
from actors.installation_stream import InstallationStream, log_replay_not_run
from actors.quota import WRITE_SPACING, LeaseTokens, Quota, TurnSource
from actors.records import (
    NO_INSTALLATION,
    DeliveryCompleted,
    DeliveryReceived,
    installation_of,
    stream_name,
)
from actors.schedule import SCHEDULE_EVENT, run_body, run_guid, slot_of, tick_of
from actors.turns import Turns
from actors.wire import (
    Inbound,
    Status,
    completes_at_once,
    decode_batch,
    encode_batch,
    vshard_of,
)
from ghbot import metrics
from ghbot.client import GitHub
from ghbot.errors import (
    JournalError,
    JournalUnavailable,
    MalformedPayload,
    ShardDraining,
    UsageError,
)
from ghbot.events import decode_envelope
from ghbot.journal import Journal
from ghbot.journal.records import FENCED, AppendRequest, AppendResult, EventRecord, NewEvent
from ghbot.logs import LogLimiter
from ghbot.redelivery import GITHUB_WINDOW
from ghbot.retry import RetryPolicy, describe

__all__ = ["DEDUP_WINDOW", "Answer", "ShardCore"]

#: Called with a batch's statuses once they are known (`ShardCore.ingest`).
Answer = Callable[[list[Status]], None]

log = logging.getLogger("ghbot.shard")
#: Batches refused while draining, logged: one line a second per shard (the ingress
#: tries a held batch again every quarter second).
_DRAINING_LOGGED = LogLimiter(burst=1, per=1.0)

#: Deliveries refused (fenced, or not this shard's), logged: ten lines a minute per
#: kind; the next line logged counts those held back. A fenced shard the ingress still
#: reaches refuses every delivery it is sent (`ghbot_webhooks_unavailable_total`
#: counts them all).
_REFUSED_LOGGED = LogLimiter(burst=10, per=60.0)


def _log_refused(item: Inbound, why: str) -> None:
    """Log a delivery refused for `why` at ERROR, rate-limited (`_REFUSED_LOGGED`)."""
    held = _REFUSED_LOGGED.allow(why)
    if held is None:
        return
    log.error(
        "delivery %s refused: %s%s",
        item.received.delivery_id,
        why,
        f" ({held} more {why} refusals were not logged)" if held else "",
        extra={
            "event_id": item.received.delivery_id,
            "installation_id": item.installation_id,
            "suppressed": held or None,
        },
    )


#: Seconds a delivery GUID stays deduplicated: as long as GitHub can redeliver it.
DEDUP_WINDOW = GITHUB_WINDOW


def _retrieved(call: asyncio.Future[Any]) -> None:
    """Mark a shielded call's outcome retrieved: its caller may be gone."""
    if not call.cancelled():
        call.exception()


class ShardCore:
    """Host the installations of `vshards`, write their journal streams, run their bot.

    Background work started by `open`: passivating idle hosts every `idle_after / 4`
    seconds, and `prune` (the GUIDs older than `dedup_window`) `prune_after` seconds
    after start, then every `prune_every` seconds.
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

    # --- life cycle ---------------------------------------------------------------

    async def start(self) -> int:
        """Take a new epoch per virtual shard and resume pending work; return how much."""
        await self.open()
        assert self.recovery is not None
        return await self.recovery

    async def open(self) -> None:
        """Take a new epoch per virtual shard; resume pending work in the background.

        From here on the shard takes deliveries (a restart is unavailable for the epochs'
        round trips, not for the replay of every stream): an installation a delivery
        arrives for is activated, and so resumed, on the spot, and `recovery` goes
        through the others. `wait_idle` waits for it.
        """
        for vshard in self.vshards:
            self.epochs[vshard] = await self.journal.acquire_epoch(vshard)
        loop = asyncio.get_running_loop()
        self.recovery = loop.create_task(self._recover())
        self._sweeper = loop.create_task(self._sweep())
        pruning = self._forever(
            self.prune,
            self.prune_after,
            self.prune_every,
            operation="prune",
            what="pruning delivery GUIDs",
        )
        self._pruner = loop.create_task(pruning)
        schedules = self.bot_class._schedules
        if schedules and self.schedule:
            tick = tick_of(schedules.values())
            scheduling = self._forever(
                self.schedule_due,
                tick,
                tick,
                operation="schedule",
                what="scheduling @every handlers",
            )
            self._scheduler = loop.create_task(scheduling)

    async def _recover(self) -> int:
        """Activate every installation of the shard's streams; return the work resumed.

        A pass that fails (the journal went away) is tried again, with backoff, until
        one gets through: pending work must not wait for its installation's next
        delivery.
        """
        failures = 0
        while True:
            try:
                resumed = 0
                for vshard in self.vshards:
                    for installation_id in await self._installations(vshard):
                        host = await self._host_if_it_restores(installation_id)
                        resumed += host.busy if host is not None else 0
            except JournalUnavailable as exc:
                failures += 1
                wait = self._retry.backoff(min(failures, 6))
                log.warning("recovery failed (%s); trying again in %.1f s", describe(exc), wait)
                await self._sleep(wait)
                continue
            self.passivate(force_idle=True)
            return resumed

    async def _sweep(self) -> None:
        """Passivate idle installations now and then, not only when others activate."""
        while True:
            await asyncio.sleep(max(self.idle_after / 4, 1.0))
            self.passivate()

    async def _forever(
        self,
        job: Callable[[], Awaitable[int]],
        first: float,
        every: float,
        *,
        operation: str,
        what: str,
    ) -> None:
        """Run `job` after `first` seconds, then every `every` seconds, for good.

        A failed pass is logged (`"<what> failed (<why>); next try in <n> s"`) and tried
        again at the next. Real sleeps, not the injected `sleep` (which tests make
        instant for handler retries).
        """
        delay = first
        while True:
            await asyncio.sleep(delay)
            delay = every
            try:
                await job()
            except Exception as exc:
                log.warning(
                    "%s failed (%s); next try in %g s",
                    what,
                    describe(exc),
                    delay,
                    extra={"operation": operation, "error_type": type(exc).__name__},
                )

    async def prune(self) -> int:
        """Forget this shard's delivery GUIDs older than `dedup_window`; return how many.

        Only deduplication ends: events and snapshots stay, so activation, recovery
        and dead-letter replay are unaffected. Within the window a redelivery is
        still a duplicate, and `delivered` still answers the redelivery sweeper.
        """
        now = self._clock()
        dropped = 0
        for vshard in self.vshards:
            count = await self.journal.prune_deliveries(self.dedup_window, now=now, shard=vshard)
            self.counters["pruned"] += count
            dropped += count
        return dropped

    async def schedule_due(self) -> int:
        """Journal the `@every` runs whose slot began since the last look; return how many.

        The first look at an installation only notes its slot (see `actors.schedule`:
        runs start at the next boundary, spread out, rather than all at once).
        """
        schedules = self.bot_class._schedules
        if not schedules:
            return 0
        now = self._clock()
        due: list[Inbound] = []
        slots: list[tuple[tuple[int, str], int]] = []
        for vshard in self.vshards:
            for installation_id in await self._installations(vshard):
                if installation_id == NO_INSTALLATION or installation_id in self._inactive:
                    continue
                for handler, interval in schedules.items():
                    slot = slot_of(installation_id, handler, interval, now)
                    last = self._slots.get((installation_id, handler))
                    if last is None:
                        self._slots[installation_id, handler] = slot
                    if last is None or slot <= last:
                        continue
                    # Noted once journaled (below): a run the journal did not take is
                    # asked for again at the next look (its GUID makes that safe).
                    slots.append(((installation_id, handler), slot))
                    received = DeliveryReceived(
                        delivery_id=run_guid(handler, installation_id, slot),
                        event=SCHEDULE_EVENT,
                        body=run_body(handler, installation_id, interval, slot),
                        received_at=now,
                        key=f"{SCHEDULE_EVENT}:{handler}",
                    )
                    due.append(Inbound(installation_id, vshard, received, version=self.version))
        if not due:
            return 0
        statuses = await self.ingest(encode_batch(due))
        for (key, slot), status in zip(slots, statuses, strict=True):
            if status in (Status.ACCEPTED, Status.DUPLICATE):
                self._slots[key] = slot
        accepted = statuses.count(Status.ACCEPTED)
        self.counters["scheduled"] += accepted
        return accepted

    async def close(self) -> None:
        """Stop every host; what they were doing stays pending in the journal.

        After a drain cut short (`shut_down`, the Ray actor's `drain` out of time), once
        the hosts have stopped, what their clients hold is journaled for the next shard
        (`_hand_over_clients`).
        """
        tasks = [*self._snapshotting.values(), self._sweeper, self._pruner, self._scheduler]
        tasks += self._reactivating.values()
        tasks.append(self.recovery)
        for task in tasks:
            if task is not None:
                task.cancel()
        self._log_replays_kept()
        for host in list(self.hosts.values()):
            await host.close()
        if self.draining and not self._handed_over:  # a drain cut short: nothing runs now
            await self._hand_over_clients()
        self.hosts.clear()

    # --- the hot path -------------------------------------------------------------

    async def ingest(self, *parts: bytes, answer: Answer | None = None) -> list[Status]:
        """Journal a batch of deliveries durably, then queue them; one status each.

        The batch comes in `parts` (`actors.wire.encode_parts`), each one argument of
        the Ray call, small enough to travel inline. Statuses (`actors.wire.Status`):
        accepted (journaled now), duplicate (journaled before), refused (not written:
        fenced, or not this shard's), draining (not written: the shard is draining, to
        be replaced). A delivery another version's code judged (an old ingress replica,
        during an upgrade) is judged again with this shard's bot (`_judged`). Raises
        `JournalUnavailable` (the ingress answers 503) when the commit failed, in which
        case nothing of the batch was written or, when the failure is ambiguous (an
        answer lost, or SQLite's shard files committing apart), part of it: its
        installations are then read again from the journal (`_reload_later`), so a
        redelivery, a duplicate, is not left unhandled.

        `answer`, when given, is called with the statuses as soon as they are known,
        before the deliveries are handed to their hosts: the shard's channel answers
        the ingress from it, ahead of the handler work the hand-over wakes (on the
        event loop, that work would otherwise run first).

        A caller that goes away (cancelled: its request, process or node gone) does not
        cut the call short: between the commit and the hand-over to the hosts, that
        would leave deliveries journaled, answered duplicate on redelivery, and never
        run. The call runs on to its end.
        """
        call = asyncio.ensure_future(self._ingest(parts, answer))
        call.add_done_callback(_retrieved)
        # `wait_idle` (and so a drain) waits for it too: held here, not only by its caller.
        self._ingesting.add(call)
        call.add_done_callback(self._ingesting.discard)
        return await asyncio.shield(call)

    async def _ingest(self, parts: tuple[bytes, ...], answer: Answer | None) -> list[Status]:
        inbound = [item for part in parts for item in decode_batch(part)]
        if self.draining:
            held = _DRAINING_LOGGED.allow("draining")
            if held is not None:
                log.warning(
                    "refused a batch of %d: the shard is draining%s",
                    len(inbound),
                    f" ({held} more refused batches were not logged)" if held else "",
                )
            return [Status.DRAINING] * len(inbound)
        if any(item.version != self.version for item in inbound):
            inbound = [self._judged(item) for item in inbound]
        self.counters["batches"] += 1
        owned = [item for item in inbound if self._owns(item)]
        requests = [
            AppendRequest(
                stream_name(item.installation_id),
                self._received_events(item),
                delivery_guid=item.received.delivery_id,
                shard=item.vshard,
                epoch=self.epochs[item.vshard],
            )
            for item in owned
        ]
        # Hand deliveries to their hosts in journal order (`actors.turns`): the turn is
        # taken as the appends are sent, which is the order the journal gives them.
        turn = self.turns.take(item.installation_id for item in owned)
        try:
            try:
                results = iter(await self.appends.append_many(requests))
            except JournalUnavailable as exc:
                # Some of it may be written all the same (an answer lost, or one of SQLite's
                # shard files committed and another not): a redelivery is then a duplicate,
                # so the installations are read again from the journal once it answers.
                for installation_id in {item.installation_id for item in owned}:
                    self._reload_later(installation_id, exc)
                raise
            statuses: list[Status] = []
            accepted: list[tuple[Inbound, AppendResult]] = []
            for item in inbound:
                result = next(results) if self._owns(item) else None
                if result is not None and result.status == "ok":
                    if item.received.event == "installation":
                        self._note_installation(item)
                    accepted.append((item, result))
                    statuses.append(Status.ACCEPTED)
                    self.counters["received"] += 1
                elif result is not None and result.status == "duplicate":
                    statuses.append(Status.DUPLICATE)
                    self.counters["duplicates"] += 1
                else:
                    # Fenced (a newer shard took over), or sent to the wrong shard: never
                    # written, so the ingress answers 503 and GitHub's redelivery retries.
                    why = result.status if result is not None else "not this shard's"
                    if result is not None and result.status == FENCED:
                        self._fence(item.vshard, "a delivery's append was fenced")
                    _log_refused(item, why)
                    statuses.append(Status.REFUSED)
            if answer is not None:
                answer(statuses)  # journaled: the ingress can answer GitHub now
            for item, result in accepted:
                try:
                    await turn.wait(item.installation_id)
                    host = await self.host(item.installation_id)
                except JournalUnavailable as exc:
                    # Journaled, so accepted: the activation, tried again, replays it.
                    self._reload_later(item.installation_id, exc)
                except Exception as exc:  # its state would not restore: not the others'
                    self._not_activated(item.installation_id, exc)
                else:
                    host.accept(
                        item.received,
                        result.first_seq,
                        completed=item.completed,
                        last_seq=result.last_seq,
                    )
            return statuses
        finally:
            turn.release()

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

    def _reload_later(self, installation_id: int, exc: JournalUnavailable) -> None:
        """Activate the installation again from the journal, in the background.

        Its deliveries may be journaled without its host knowing (the read that
        activates it failed, or the append's answer did): a redelivery is a duplicate
        and would not run them, an activation replays them. An active host is stopped
        at once, as a drain stops it (`_stop_to_read_again`): it starts nothing more,
        and what only waits is cut, so it is soon idle however many deliveries keep
        coming; it is dropped then, and the host read after it resumes every pending
        delivery in journal order, those it had taken included. So per-key order holds
        (but for a delivery of another batch whose append was in flight with the failed
        one and which started before the failure was known). The activation is tried
        with backoff until the journal answers. Not while draining: the shard that
        takes over reads every installation.
        """
        log.warning(
            "installation %d: a journal call failed (%s); %s",
            installation_id,
            describe(exc),
            "the next shard reads it again" if self.draining else "reading it again",
            extra={"installation_id": installation_id, "error_type": type(exc).__name__},
        )
        if self.draining:
            return
        if (host := self.hosts.get(installation_id)) is not None:
            self._stop_to_read_again(host)  # now: a later delivery must not start first
        if installation_id in self._reactivating:
            self._again.add(installation_id)
            return

        async def activate() -> None:
            # A drain cancels it (`drain`): the successor reads every installation.
            while True:
                await self._drop_when_idle(installation_id)
                self._again.discard(installation_id)
                failures = 0
                while True:
                    try:
                        await self.host(installation_id)
                        break
                    except JournalUnavailable:
                        failures += 1
                        await self._sleep(self._retry.backoff(min(failures, 6)))
                if installation_id not in self._again:
                    self._reactivating.pop(installation_id, None)
                    return

        def ended(task: asyncio.Task[None]) -> None:
            # The task takes itself off when it is through; this is for one cancelled
            # or failed (its state would not restore, say: the next activation, by a
            # delivery or a restart, tries again).
            if self._reactivating.get(installation_id) is task:
                self._reactivating.pop(installation_id)
            if not task.cancelled() and (error := task.exception()) is not None:
                text = str(error)
                log.error(
                    "installation %d: not read again (%s: %s)",
                    installation_id,
                    type(error).__name__,
                    text if len(text) <= 500 else text[:497] + "...",
                    extra={"installation_id": installation_id, "error_type": type(error).__name__},
                )

        task = asyncio.get_running_loop().create_task(activate())
        self._reactivating[installation_id] = task
        task.add_done_callback(ended)

    async def _drop_when_idle(self, installation_id: int) -> None:
        """Stop the installation's host (`_stop_to_read_again`), and drop it once its
        running handlers end, for it to be read again (`_reload_later`)."""
        while True:
            if (activating := self._activating.get(installation_id)) is not None:
                # Under way: its read may come before what failed was written.
                await asyncio.wait([activating])
                continue
            if (host := self.hosts.get(installation_id)) is None:
                return
            self._stop_to_read_again(host)  # read since (another call failed)
            await host.wait_idle()
            # Dropped once idle. Its client goes to the host read after it: what it
            # knows of GitHub (a write's interval, a pause, an open breaker) is not in
            # the journal.
            if self.hosts.get(installation_id) is host and host.busy == 0:
                del self.hosts[installation_id]
                if (github := getattr(host.bot, "github", None)) is not None:
                    self._clients_kept[installation_id] = github

    def _stop_to_read_again(self, host: InstallationHost) -> None:
        """Stop `host`, to be dropped and read again (`_reload_later`); the dead-letter
        replays it had queued go to the host read after it."""
        replays = host.take_replays()
        if replays:
            self._replays_kept.setdefault(host.installation_id, []).extend(replays)
        host.stop()

    def _note_installation(self, item: Inbound) -> None:
        """Keep `@every` runs off an installation removed or suspended, and back on."""
        action = decode_envelope(item.received.body).action
        if action in ("deleted", "suspend"):
            self._set_scheduled(item.installation_id, False)
        elif action in ("created", "unsuspend"):
            self._set_scheduled(item.installation_id, True)

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

    async def _installations(self, vshard: int) -> list[int]:
        """Return the installations with a journal stream in `vshard`."""
        streams = await self.journal.list_streams(shard=vshard)
        return [i for i in map(installation_of, streams) if i is not None]

    def _judged(self, item: Inbound) -> Inbound:
        """Return `item` with `completed` and its ordering key as this shard's bot
        judges them, when another version's code judged them: during an upgrade, an
        ingress replica of the old version sends to the new shards, and its bot may
        lack a handler the new one has (or have one the new one dropped), or order
        deliveries otherwise."""
        if item.version == self.version:
            return item
        received = item.received
        try:
            envelope = decode_envelope(received.body)
        except MalformedPayload:  # the ingress checked it; a name-wide handler still counts
            completed = completes_at_once(self.bot_class, received.event, None)
            return msgspec.structs.replace(item, completed=completed, version=self.version)
        completed = completes_at_once(self.bot_class, received.event, envelope.action)
        if received.event != SCHEDULE_EVENT:  # and its ordering, which may have changed
            key = ordering_key(self.bot_class.ordering, received.event, envelope)
            received = msgspec.structs.replace(received, key=key)
        return msgspec.structs.replace(
            item, received=received, completed=completed, version=self.version
        )

    def _owns(self, item: Inbound) -> bool:
        return item.vshard in self.epochs and item.vshard == self._vshard(item.installation_id)

    @staticmethod
    def _received_events(item: Inbound) -> tuple[NewEvent, ...]:
        received = runtime_event(item.received)
        if not item.completed:
            return (received,)
        return (received, runtime_event(DeliveryCompleted(delivery_id=item.received.delivery_id)))

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
        if github is not None:  # else no handler runs, or `_without_installation` says why
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

    def _vshard(self, installation_id: int) -> int:
        return vshard_of(installation_id, self.vshard_count)

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

    # --- operations ---------------------------------------------------------------

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

    async def dead_letters(self) -> list[dict[str, Any]]:
        """List the dead letters of every installation in this shard's virtual shards."""
        found: list[dict[str, Any]] = []
        for vshard in self.vshards:
            for installation_id in await self._installations(vshard):
                host = await self._host_if_it_restores(installation_id)
                if host is None:  # listed when it activates again
                    continue
                for dead in host.progress.dead.values():
                    record = msgspec.to_builtins(dead.record)
                    record["installation_id"] = host.installation_id
                    record["event"] = dead.received.event
                    found.append(record)
        return found

    async def replay(self, installation_id: int, delivery_id: str, handler: str | None) -> int:
        """Run dead-lettered handlers of a delivery again; return how many were queued.

        Raise `ShardDraining` while the shard drains, if there is one to replay: a
        stopped host would not run it.
        """
        host = await self.host(installation_id)
        handlers = [
            dead.record.handler
            for dead in list(host.progress.dead.values())
            if dead.record.delivery_id == delivery_id
            and (handler is None or dead.record.handler == handler)
        ]
        if handlers and self.draining:
            raise ShardDraining(installation_id, f"delivery {delivery_id} was not replayed")
        if handlers and host.stopping and installation_id in self._reactivating:
            # Stopped to be read again (`_reload_later`): the host read after it runs them.
            kept = self._replays_kept.setdefault(installation_id, [])
            kept.extend((delivery_id, name) for name in handlers)
            return len(handlers)
        replayed = 0
        for name in handlers:
            replayed += await host.replay_dead_letter(delivery_id, name)
        return replayed

    async def delivered(self, wanted: Sequence[tuple[int, str]]) -> list[str]:
        """Return the delivery GUIDs among `(installation, GUID)` pairs the journal holds."""
        by_installation: dict[int, list[str]] = {}
        for installation_id, guid in wanted:
            by_installation.setdefault(installation_id, []).append(guid)
        held: list[str] = []
        for installation_id, guids in by_installation.items():
            stream, vshard = stream_name(installation_id), self._vshard(installation_id)
            held.extend(await self.journal.delivered(stream, guids, shard=vshard))
        return held

    async def check_journal(self, within: float = 2.0, recent: float = 10.0) -> str | None:
        """Return why the journal cannot take this shard's deliveries now, or None.

        Asks it (a read of one stream in each of the shard's virtual shards, within
        `within` seconds), and looks at the last appends: one that failed in the last
        `recent` seconds, with none succeeding since, means the journal refuses writes
        (a disk full) even when it answers reads. Only recent: with no delivery coming
        (a load balancer holds them back while this says not ready), no append would
        ever succeed to say the journal is back.
        """
        try:
            async with asyncio.timeout(within):
                for vshard in self.vshards:
                    await self.journal.last_seq(stream_name(NO_INSTALLATION), shard=vshard)
        except Exception as exc:  # a timeout, the journal away, a connection refused
            return f"the journal did not answer: {type(exc).__name__}"
        failed_for = time.monotonic() - self.appends.failed_at
        if self.appends.failing is not None and failed_for < recent:
            return f"the journal's last appends failed: {self.appends.failing}"
        return None

    async def drain(self, *, finish: bool = False) -> int:
        """Refuse new deliveries and stop running them; return once none is running.

        What it refused (`Status.DRAINING`) was never journaled: the ingress sends it
        to the shard that takes over, or answers 503 and GitHub (or the redelivery
        sweep) sends it again. What it took stays journaled: a delivery not started, or
        stopped where running it again from its last journaled step repeats no write
        to GitHub (`actors.stopping.Run` says where: between attempts, or before
        an attempt's first write, waiting its turn in the write lane), is left pending
        for the shard that takes over, which resumes every pending delivery in journal
        order; one whose attempt has written runs to its end. So a drain lasts about as
        long as the handlers that are writing, not as long as the installations'
        backlog (with writes paced, a second per queued write). Nor does it wait out
        what the installations' clients hold that the journal does not (a write's
        turn, a secondary-limit pause, an open breaker): that is journaled for the
        successor (`ClientHeld`), whose clients start from it. Return how many
        deliveries were left pending.

        `finish`: run every delivery taken to its end first (`ghbot stop`, when no shard
        takes over), those of installations a recovery under way activates after the
        drain began included.
        """
        if not self.draining:
            self.draining, self.draining_since = True, time.monotonic()
        self._finishing = self._finishing or finish
        # Installations being read again after a failed append (`_reload_later`) are
        # read no more (a host read now would start stopped): the next shard reads
        # every installation, and the hand-over reads those whose client is kept. A
        # reading waiting out its backoff would hold `wait_idle` for it.
        readings = dict(self._reactivating)
        for reading in readings.values():
            reading.cancel()
        if finish:  # but what they took runs too: each is read once, now
            await self._read_again_now(readings)
        self._log_replays_kept()
        if finish:
            await self.wait_idle()
            await self._hand_over_clients()
            return self.pending()
        # Hosts activated from here on (by recovery, by an ingest under way) start
        # stopped (`_new_host`); what an ingest under way journals stays pending.
        cut = sum(host.stop() for host in list(self.hosts.values()))
        await self._wait_ingests()
        await self._wait_hosts()
        await self._hand_over_clients()
        left = self.pending()
        log.info(
            "drained: no delivery running; %d left pending for the next shard (%d of them "
            "stopped while they waited)",
            left,
            cut,
        )
        return left

    async def _read_again_now(self, readings: dict[int, asyncio.Task[None]]) -> None:
        """Read each installation whose reading again (`_reload_later`) a drain that
        finishes what the shard took (`drain(finish=True)`) cancelled, once, now, not
        waiting out a backoff; its host runs, though the shard drains. One the journal
        cannot read is left pending, to the next start."""
        await asyncio.gather(*readings.values(), return_exceptions=True)
        for installation_id in readings:
            await self._drop_when_idle(installation_id)
            try:
                await self.host(installation_id)
            except Exception as exc:
                log.warning(
                    "installation %d: not read again before stopping (%s); the next start "
                    "runs what it took",
                    installation_id,
                    type(exc).__name__,
                    extra={"installation_id": installation_id, "error_type": type(exc).__name__},
                )

    def _log_replays_kept(self) -> None:
        """Report the dead-letter replays kept for hosts to be read again, which will
        not run now (a drain, a close); forget them."""
        for installation_id, replays in self._replays_kept.items():
            for delivery_id, handler in replays:
                log_replay_not_run(stream_name(installation_id), delivery_id, handler)
        self._replays_kept.clear()

    async def _hand_over_clients(self, within: float = 5.0) -> int:
        """Journal, for each installation whose client holds a write's turn, a
        secondary-limit pause or an open breaker, what it holds
        (`InstallationHost.hand_over_client`), so the shard that takes it over waits as
        this one would have; return how many. An installation being read again after
        a failed append, its host dropped and its client kept for the next, is read
        for it (`_read_and_hand_over`).

        At most `within` seconds: the journal away, the successor takes over without
        what was not journaled by then (it may write too soon once); what was, counts.
        """
        self._handing_over = True
        hosts = list(self.hosts.values())
        kept = [i for i in self._clients_kept if i not in self.hosts]
        tasks = [asyncio.ensure_future(host.hand_over_client()) for host in hosts]
        tasks += [asyncio.ensure_future(self._read_and_hand_over(i)) for i in kept]
        try:
            if tasks:  # each its own outcome: one slow read costs the others nothing
                await asyncio.wait(tasks, timeout=within)
        finally:
            for task in tasks:
                task.cancel()  # those not done in time (or the drain's own cancellation)
            await asyncio.gather(*tasks, return_exceptions=True)
        outcomes = [
            TimeoutError() if task.cancelled() else task.exception() or task.result()
            for task in tasks
        ]
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        for outcome in failed:
            if not isinstance(outcome, (TimeoutError, JournalError)):  # not away, not fenced
                raise outcome
        if failed:
            log.warning(
                "could not journal what every client holds for the next shard (%s)",
                type(failed[0]).__name__,
            )
        self._handed_over = True
        handed = sum(o is True for o in outcomes)
        if handed:
            log.info("handed over what %d installations' clients hold", handed)
        return handed

    async def _read_and_hand_over(self, installation_id: int) -> bool:
        """Read an installation whose host was dropped to be read again (`_reload_later`),
        which keeps that host's client for the next, and hand that client over
        (`_hand_over_clients`); the host starts stopped, unless the drain finishes what
        the shard took (`drain(finish=True)`). A read that fails (perhaps one under way,
        begun before the drain) is tried once more."""
        try:
            try:
                host = await self.host(installation_id)
            except JournalUnavailable:
                host = await self.host(installation_id)
        except JournalError:
            raise
        except Exception as exc:  # the bot's state would not restore: nothing to hand over
            log.warning(
                "installation %d: not read again to hand its client over (%r)",
                installation_id,
                exc,
                extra={"installation_id": installation_id, "error_type": type(exc).__name__},
            )
            return False
        return await host.hand_over_client()

    async def shut_down(self, within: float) -> bool:
        """Drain (`drain`) for up to `within` seconds, then close the hosts and the journal.

        Return whether the drain ended in time: then no handler was cut short after it
        wrote, and what is left pending the next shard runs from its last journaled
        step. A handler still running then is cancelled and stays pending too: at
        least once, since it may have done part of its work. New deliveries are refused
        from the start.
        """
        try:
            async with asyncio.timeout(within):
                await self.drain()
            drained = True
        except TimeoutError:
            drained = False
        await self.close()
        await self.journal.close()
        return drained

    async def wait_idle(self) -> None:
        """Return once recovery is through, no ingest call is under way, and no
        installation has queued or running work."""
        if self.recovery is not None:
            await asyncio.shield(self.recovery)
        await self._wait_ingests()
        while self._reactivating:  # installations read again after a journal failure
            # Not `gather`: a caller's timeout must not cancel them (`asyncio.wait`
            # leaves them running), or their hosts would stay stopped.
            await asyncio.wait(list(self._reactivating.values()))
        await self._wait_hosts()

    async def _wait_ingests(self) -> None:
        """Return once no ingest call is under way (each hands its batch over next)."""
        while self._ingesting:
            await asyncio.wait(set(self._ingesting))

    async def _wait_hosts(self) -> None:
        """Return once no host has queued or running work."""
        while any(host.busy for host in self.hosts.values()):
            await asyncio.gather(*(host.wait_idle() for host in list(self.hosts.values())))

    def pending(self) -> int:
        """Return the deliveries journaled and not yet completed in active installations."""
        # A metrics reader may call this from its own thread: iterate over a copy.
        return sum(len(host.progress.pending) for host in list(self.hosts.values()))

    def stats(self) -> dict[str, Any]:
        """Return counters and sizes for `/readyz` and the CLI."""
        return {
            **self.counters,
            "active": len(self.hosts),
            "busy": sum(host.busy for host in self.hosts.values()),
            "open_breakers": sum(
                1
                for host in self.hosts.values()
                if self._breaker_wait(getattr(host.bot, "github", None)) > 0
            ),
            "draining": self.draining,
            "vshards": list(self.vshards),
            "epochs": dict(self.epochs),
            # Journal calls and the appends they carried (see `actors.appends`).
            "journal_calls": self.appends.calls,
            "journal_appends": self.appends.requests,
        }


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
