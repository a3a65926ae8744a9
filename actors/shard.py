"""A shard: the installations of some virtual shards, their journal writes and recovery.

`ShardCore` holds no Ray: the Ray actor in `actors.ray.shard_actor` wraps it, and tests drive it
directly. It takes batches of deliveries (`ingest`), journals each as
`DeliveryReceived` in one durable `append_many` (deduplicated on the delivery GUID,
fenced by this shard's epochs), and hands them to the installations' hosts. On start it
takes a new epoch for each of its virtual shards, so a zombie predecessor can no
longer write, and resumes every installation with pending deliveries. In the
background it passivates idle installations and prunes its virtual shards' delivery
GUIDs once they are older than the deduplication window (`prune`).

Its state and its hosts (activation, passivation, snapshots, what a host calls back)
are its base's, `actors.shard_hosts.ShardHosts`; reading an installation again after a
failed journal call, and the drain, are `actors.shard_handover.ShardHandover`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from actors.bot import ordering_key
from actors.codecs import runtime_event
from actors.runtime_events import NO_INSTALLATION, DeliveryCompleted, DeliveryReceived, stream_name
from actors.schedule import SCHEDULE_EVENT, run_body, run_guid, slot_of, tick_of
from actors.shard_handover import ShardHandover
from actors.wire import Inbound, Status, completes_at_once, decode_batch, encode_batch
from ghbot.errors import JournalUnavailable, MalformedPayload, ShardDraining
from ghbot.events import decode_envelope
from ghbot.journal.records import FENCED, AppendRequest, AppendResult, NewEvent
from ghbot.logs import LogLimiter
from ghbot.retry import describe

__all__ = ["Answer", "ShardCore"]

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


def _retrieved(call: asyncio.Future[Any]) -> None:
    """Mark a shielded call's outcome retrieved: its caller may be gone."""
    if not call.cancelled():
        call.exception()


class ShardCore(ShardHandover):
    """Host the installations of `vshards`, write their journal streams, run their bot.

    Background work started by `open`: passivating idle hosts every `idle_after / 4`
    seconds, and `prune` (the GUIDs older than `dedup_window`) `prune_after` seconds
    after start, then every `prune_every` seconds.
    """

    # --- life cycle ---------------------------------------------------------------
    # (its end, `close`, `shut_down` and `wait_idle`, is `ShardHandover`'s: the drain
    # calls them)

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

    def _note_installation(self, item: Inbound) -> None:
        """Keep `@every` runs off an installation removed or suspended, and back on."""
        action = decode_envelope(item.received.body).action
        if action in ("deleted", "suspend"):
            self._set_scheduled(item.installation_id, False)
        elif action in ("created", "unsuspend"):
            self._set_scheduled(item.installation_id, True)

    # --- operations ---------------------------------------------------------------

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
