"""One installation's virtual actor: its journal stream, mailbox, handlers and state.

An `InstallationHost` is what a shard keeps in memory per active installation. It is
built from the journal (`activate`: latest snapshot, then replay), takes new
deliveries (`accept`), runs the bot's handlers in per-key order with retries, and
journals every outcome before it counts: `HandlerSucceeded` with the domain events
the handler emitted (atomically), `HandlerFailed` per failed attempt, `DeadLettered`
after the last, and `DeliveryCompleted` when every handler of a delivery is through.
Rebuilding from the journal therefore resumes exactly where a crash left off.

Every journaled delivery ends completed or dead-lettered, never silently pending: a
body that does not decode into its model (`MalformedPayload`) is dead-lettered at once
under every handler it would have run, and so is a delivery whose processing failed
outside its handlers (a runtime fault), both replayable. Only a journal that cannot
be written, a shard fenced by its successor, or a drain that stops the host leaves a
delivery pending, for the next activation to resume.

Deliveries without an installation (`NO_INSTALLATION`) run with a `self.github` and a
`self.quota` that raise `NoInstallation` on use, dead-lettered at once: handlers that
need no API (a `github_app_authorization` revocation) run as usual.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from opentelemetry.trace import SpanKind

from actors.bot import InstallationActor
from actors.codecs import Codecs, Snapshot, domain_event, runtime_event, snapshot_decoder
from actors.mailbox import KeyedMailbox
from actors.no_installation import current_delivery, without_installation
from actors.records import (
    DOMAIN_PREFIX,
    NO_INSTALLATION,
    ClientHeld,
    DeadLettered,
    DeadLetterReplayed,
    DeliveryCompleted,
    DeliveryReceived,
    HandlerFailed,
    HandlerSucceeded,
    Pending,
    Progress,
    dead_key,
    decode_runtime,
    evolve_progress,
    stream_name,
)
from actors.schedule import SCHEDULE_EVENT
from actors.stopping import Run, Stopped
from ghbot import metrics, telemetry
from ghbot.client.github_client import GitHub
from ghbot.client.watch import call_watcher
from ghbot.errors import (
    CircuitOpen,
    Fenced,
    HandlerCancelled,
    InstallationUnavailable,
    JournalError,
    JournalUnavailable,
    MalformedPayload,
    NoInstallation,
    RateLimited,
    RepositoryConfigError,
)
from ghbot.events import Event, decode_envelope, parse
from ghbot.journal.records import NewEvent, encode
from ghbot.logs import TRACE, log_context, mask, shape
from ghbot.retry import RetryPolicy, describe

__all__ = ["InstallationHost", "log_replay_not_run"]

log = logging.getLogger("ghbot.installation")
Sleep = Callable[[float], Awaitable[None]]
Job = Callable[[], Awaitable[None]]

#: Handler errors that every attempt would raise again: dead-lettered at once.
_FINAL: tuple[type[Exception], ...] = (
    NoInstallation,
    RepositoryConfigError,
    InstallationUnavailable,
)

#: The longest wait (seconds) a client takes over from the shard that handed its
#: installation over (`ClientHeld`): longer than any pause GitHub asks for.
MAX_HELD = 3600.0
#: How far ahead of this node's clock a `ClientHeld` may have been written and still
#: be taken over (seconds): more, and the two clocks disagree.
MAX_SKEW = 300.0
#: How long (seconds) a handler's runs refused by an open breaker wait without counting
#: as attempts, from the first refusal: most outages end within it, but a request
#: GitHub always fails (a GraphQL query that always times out) reopens the breaker at
#: each of its trials, and would otherwise hold its delivery, and its installation's
#: calls, for good. Past it, each refusal is an attempt, and the delivery is
#: dead-lettered (as are those still waiting out a longer outage: by time alone, a
#: quiet installation cannot tell the two apart).
OUTAGE_PATIENCE = 3600.0


class InstallationHost:
    """Run one installation's deliveries through its bot, journaling every outcome.

    `append(events)` writes to this installation's stream (the shard binds it to the
    journal with the shard's epoch) and returns the last sequence number written;
    `find(after, events)` returns the last sequence number of `events` if the stream
    holds them, in a row, after `after` (None if not), for an append whose answer was
    lost (`_write`). With `tracebacks`, a handler's failed attempts and dead letters
    are logged with their traceback (for `ghbot dev` and the test harness; a
    deployment's lines say the error's type alone: a handler's message may hold
    payload data).
    Thousands live in one shard, so a host keeps little: its mailbox is made on its
    first delivery and its decoders are shared by every host of the bot class.
    """

    __slots__ = (
        "_append",
        "_breaker_wait",
        "_clock",
        "_codecs",
        "_find",
        "_mailbox",
        "_on_fenced",
        "_on_unavailable",
        "_on_written",
        "_replays",
        "_retry",
        "_runs",
        "_sleep",
        "_tracebacks",
        "applied",
        "bot",
        "diverged",
        "evolve_error",
        "installation_id",
        "last_seq",
        "last_used",
        "progress",
        "restored_seq",
        "snapshot_seq",
        "stopping",
        "stream",
    )

    def __init__(
        self,
        installation_id: int,
        bot: InstallationActor,
        *,
        append: Callable[[str, Sequence[NewEvent]], Awaitable[int]],
        retry: RetryPolicy,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        breaker_wait: Callable[[], float] = lambda: 0.0,
        on_written: Callable[[InstallationHost], None] = lambda _host: None,
        find: Callable[[int, Sequence[NewEvent]], Awaitable[int | None]] | None = None,
        on_fenced: Callable[[InstallationHost], None] = lambda _host: None,
        on_unavailable: Callable[[InstallationHost, float], None] = lambda _host, _since: None,
        tracebacks: bool = False,
    ) -> None:
        self.installation_id = installation_id
        self.stream = stream_name(installation_id)
        self.bot = bot
        self.progress = Progress()
        self.last_seq = 0
        #: How many of the stream's events progress and state hold: when it equals
        #: `last_seq`, they are exactly the fold of events 1..last_seq (see `exact`).
        self.applied = 0
        #: Set when the bot's `evolve` raised on an event this host journaled: its state
        #: is no fold of the journal from then on, and is never saved as a snapshot.
        self.diverged = False
        #: What `evolve` raised when it did (the test harness raises it to the test).
        self.evolve_error: Exception | None = None
        #: The last event the host was rebuilt from: later events are new to it.
        self.restored_seq = 0
        self.snapshot_seq = 0
        self.last_used = clock()
        self._on_written = on_written
        #: Told when a newer shard fenced this host's write (the shard stops the other
        #: hosts of its virtual shard).
        self._on_fenced = on_fenced
        #: Told when GitHub refused the installation's token for a scheduled run whose
        #: attempt began at the time given: it is not installed or suspended (the shard
        #: stops scheduling it, unless it was put back since).
        self._on_unavailable = on_unavailable
        self._append = append
        self._find = find
        self._retry = retry
        self._clock = clock
        self._sleep = sleep
        self._breaker_wait = breaker_wait
        #: Whether a handler's failed attempts and dead letters are logged with their
        #: traceback (`ghbot dev`, the test harness); a deployment logs the type alone.
        self._tracebacks = tracebacks
        self._mailbox: KeyedMailbox | None = None
        #: The deliveries running now (see `Run`), and whether `stop` was called.
        self._runs: set[Run] = set()
        self.stopping = False
        #: Dead-letter replays queued and not started yet (delivery, handler).
        self._replays: set[tuple[str, str]] = set()
        self._codecs = Codecs.of(type(bot))
        if installation_id == NO_INSTALLATION:
            without_installation(bot)

    # --- rebuilding ---------------------------------------------------------------

    def restore(
        self,
        snapshot_data: bytes | None,
        records: Sequence[Any],
        *,
        snapshot_seq: int | None = None,
    ) -> None:
        """Rebuild progress and state from a snapshot (taken at `snapshot_seq`) and the
        events after it; what is journaled up to here counts as replayed."""
        if snapshot_data is not None:
            snap = snapshot_decoder.decode(snapshot_data)
            self.progress = snap.progress
            self.bot.state = self._codecs.state.decode(snap.state)
        if snapshot_seq is not None:
            self.snapshot_seq = snapshot_seq
            self.last_seq = max(self.last_seq, snapshot_seq)
        for record in records:
            self._apply(record.type, record.data)
            self.last_seq = record.seq
        self.restored_seq = self.last_seq
        self.applied = (snapshot_seq or 0) + len(records)
        self._take_over_client()

    @property
    def exact(self) -> bool:
        """Whether progress and state are the fold of exactly events 1..`last_seq`.

        Every event the host applies is one the journal gave a number up to `last_seq`;
        when as many were applied as `last_seq` says, none is missing: no append of
        this stream is in flight or unknown to the host (a batch journaled whose answer
        was lost), and every one was folded (`diverged`). Then a snapshot can be taken
        of the host itself.
        """
        return self.applied == self.last_seq and not self.diverged

    def snapshot_saved(self, seq: int) -> None:
        """Note that a snapshot of this installation's stream up to `seq` was saved."""
        self.snapshot_seq = max(self.snapshot_seq, seq)

    def resume(self) -> int:
        """Queue every pending delivery again, in journal order; return how many."""
        # `pending` is in journal order (`evolve_progress` adds each as it is journaled).
        # Not by `received_at`: the ingress's clock, which concurrent calls journal in
        # another order (tests/runtime/test_journal_order.py).
        pending = list(self.progress.pending.values())
        for item in pending:
            self._enqueue(item)
        return len(pending)

    def snapshot(self) -> bytes:
        """Encode progress and state for `Journal.save_snapshot`."""
        return encode(Snapshot(progress=self.progress, state=encode(self.bot.state)))

    def _apply(self, type_name: str, data: bytes) -> None:
        if type_name.startswith(DOMAIN_PREFIX):
            decoder = self._codecs.domain.get(type_name[len(DOMAIN_PREFIX) :])
            if decoder is None:
                log.warning("%s: unknown domain event %s ignored", self.stream, type_name)
                return
            self.bot.state = self.bot.evolve(self.bot.state, decoder.decode(data))
            return
        event = decode_runtime(type_name, data)
        if event is not None:
            evolve_progress(self.progress, event)

    # --- new work -----------------------------------------------------------------

    @property
    def busy(self) -> int:
        """Return the deliveries queued or running."""
        return 0 if self._mailbox is None else len(self._mailbox)

    def _enqueue(self, pending: Pending) -> None:
        self._put(pending.received.key, self._job(pending))

    def _put(self, key: str, job: Job) -> None:
        if self._mailbox is None:
            self._mailbox = KeyedMailbox(type(self.bot).max_concurrency)
            if self.stopping:
                self._mailbox.stop()
        self._mailbox.put(key, job)

    def accept(
        self,
        received: DeliveryReceived,
        seq: int,
        *,
        completed: bool = False,
        last_seq: int | None = None,
    ) -> None:
        """Take a delivery the shard just journaled at `seq` (no-op if already replayed).

        `completed`: it was journaled completed too (no handler takes it), its append
        ending at `last_seq`. Appends of one stream commit concurrently (ingest batches,
        handler outcomes), so only the activation's read point tells a replayed
        delivery from a new one.
        """
        self.last_used = self._clock()
        if completed and last_seq is not None:
            self.last_seq = max(self.last_seq, last_seq)
        if seq <= self.restored_seq:
            return
        self.last_seq = max(self.last_seq, seq)
        self.applied += 2 if completed else 1
        evolve_progress(self.progress, received)
        if self.installation_id == NO_INSTALLATION:
            self._warn_no_installation(received)
        if completed:
            evolve_progress(self.progress, DeliveryCompleted(delivery_id=received.delivery_id))
            return
        self._enqueue(self.progress.pending[received.delivery_id])

    def _warn_no_installation(self, received: DeliveryReceived) -> None:
        log.warning(
            "%s: delivery %s (event %s) carries no installation: a repository or "
            "organization webhook pointed at the App's URL, or an app-level event; "
            "its handlers get no self.github",
            self.stream,
            received.delivery_id,
            received.event,
            extra={
                "event_id": received.delivery_id,
                "installation_id": self.installation_id,
                "operation": "receive",
            },
        )

    async def replay_dead_letter(self, delivery_id: str, handler: str) -> bool:
        """Queue a dead-lettered handler to run again; False if there is no such dead
        letter, or the host is stopping (its shard drains: ask its successor).

        The replay (`DeadLetterReplayed`, then the handler from attempt 1) runs as a job
        of the delivery's ordering key, so it never overlaps another run of the same
        delivery: replaying several handlers of one delivery runs each of them.
        """
        dead = self.progress.dead.get(dead_key(delivery_id, handler))
        if dead is None:
            return False
        if self.stopping:  # its shard is draining: the successor takes the replay
            log.warning(
                "%s: not replaying %s of %s: the shard is draining; ask again once it is replaced",
                self.stream,
                handler,
                delivery_id,
            )
            return False
        self._replays.add((delivery_id, handler))
        self._put(dead.received.key, self._replay_job(delivery_id, handler))
        return True

    async def wait_idle(self) -> None:
        """Return once no delivery is queued or running."""
        if self._mailbox is not None:
            await self._mailbox.wait_idle()

    async def hand_over_client(self) -> bool:
        """Journal what the installation's client holds that a successor's new client
        would not know (`ClientHeld`: when its next write may go, until when a
        secondary-limit pause holds, until when its breaker is open); return whether it
        held anything.

        The shard calls it once the installation runs nothing (a drain), so no
        later write of this client moves it.
        """
        github = getattr(self.bot, "github", None)
        if not isinstance(github, GitHub):
            return False
        holds, now = github.holds(), github.options.clock()
        if max(holds) <= now:
            return False
        held = ClientHeld(
            writes_after=holds.writes_after,
            paused_until=holds.paused_until,
            at=now,
            breaker_until=holds.breaker_until,
        )
        await self._write([held])
        return True

    def _take_over_client(self) -> None:
        """Start the client where the installation's previous shard left its own
        (`ClientHeld`), for at most `MAX_HELD` seconds from now.

        Ignored, with a warning, when written more than `MAX_SKEW` seconds ahead of
        this clock: the node that wrote it had a clock far ahead, and its times would
        stop the installation (at each activation) until this clock reached them.
        """
        held, github = self.progress.held, getattr(self.bot, "github", None)
        if held is None or not isinstance(github, GitHub):
            return
        now = github.options.clock()
        if held.at > now + MAX_SKEW:
            log.warning(
                "%s: what the previous shard's client held was written %.0f s ahead of "
                "this node's clock; not taken over (are the nodes' clocks in sync?)",
                self.stream,
                held.at - now,
            )
            return
        limit = now + MAX_HELD
        github.hold(
            writes_after=min(held.writes_after, limit),
            paused_until=min(held.paused_until, limit),
            breaker_until=min(held.breaker_until, limit),
        )

    def take_replays(self) -> list[tuple[str, str]]:
        """Return the dead-letter replays queued and not started, as `(delivery_id,
        handler)`, and forget them (their jobs run no more once the host stops)."""
        replays = sorted(self._replays)
        self._replays.clear()
        return replays

    def stop(self) -> int:
        """Start no more deliveries, and cut short the running ones that only wait and
        would repeat nothing if run again (`Run`); return how many were cut.

        What is not done stays pending in the journal, for the shard that takes over
        (a draining shard's successor) to resume. The others run on until their
        handler returns and its outcome is journaled, or until they next only wait
        (`wait_idle` waits for them).
        """
        self.stopping = True
        if self._mailbox is not None:
            self._mailbox.stop()
        for delivery_id, handler in self.take_replays():
            log_replay_not_run(self.stream, delivery_id, handler)
        cut = 0
        for run in list(self._runs):
            if run.cuttable and run.task is not None:
                run.refused = True  # should the handler swallow the cancellation (`_run`)
                run.task.cancel()
                cut += 1
        return cut

    async def close(self) -> None:
        """Stop running handlers (their deliveries stay pending in the journal), and
        start none taken later (an ingest under way as its shard closes)."""
        self.stopping = True
        if self._mailbox is not None:
            await self._mailbox.close()

    # --- running handlers ---------------------------------------------------------

    def _job(self, pending: Pending) -> Job:
        async def job() -> None:
            await self._guarded(pending)

        return job

    def _replay_job(self, delivery_id: str, handler: str) -> Job:
        async def job() -> None:
            self._replays.discard((delivery_id, handler))
            if dead_key(delivery_id, handler) not in self.progress.dead:
                return  # a second request for a replay that already ran
            try:
                await self._write([DeadLetterReplayed(delivery_id=delivery_id, handler=handler)])
            except Fenced:  # as `_guarded`'s: a newer shard owns the stream
                self.stop()
                self._on_fenced(self)
                raise
            pending = self.progress.pending.get(delivery_id)
            if pending is not None:
                await self._guarded(pending)

        return job

    async def _guarded(self, pending: Pending) -> None:
        """Process a delivery; whatever fails outside its handlers is dead-lettered.

        A `JournalError` is left to the mailbox (which logs it), and the delivery stays
        pending for the next activation to resume; so does a delivery stopped by
        `stop`. `Fenced` (a newer shard owns the stream) also stops this host, and the
        shard is told (`on_fenced`): the deliveries queued behind are the new owner's to
        run, not this one's too.
        """
        run = Run(self)
        self._runs.add(run)
        token = call_watcher.set(run)
        try:
            try:
                await self._process(pending, run)
            except Stopped:
                return
            except JournalError:
                raise
            except Exception as exc:
                await self._give_up(pending, exc, operation="process", handlers=run.handlers)
        except Fenced:
            self.stop()
            self._on_fenced(self)
            raise
        finally:
            call_watcher.reset(token)
            self._runs.discard(run)

    async def _process(self, pending: Pending, run: Run) -> None:
        received = pending.received
        try:
            event = parse(
                received.event,
                received.body,
                delivery_id=received.delivery_id,
                app_id=received.app_id,
            )
        except MalformedPayload as exc:
            # It will not decode next time either: no retries; replayable after a fix.
            await self._give_up(pending, exc, operation="decode")
            return
        names = pending.only or type(self.bot).handlers_for(
            event.qualified_name,
            event.name,
            known=event.known,
            own=event.is_from_this_app,  # a bot does not answer itself unless it opts in
        )
        run.handlers = names
        todo = [name for name in names if name not in pending.done]
        if not todo:
            await self._write([DeliveryCompleted(delivery_id=received.delivery_id)])
            return
        token = current_delivery.set((received.delivery_id, received.event))
        try:
            await self._run_all(event, pending, todo, run)
        finally:
            current_delivery.reset(token)

    async def _run_all(self, event: Event, pending: Pending, todo: list[str], run: Run) -> None:
        # One span per delivery; the handlers' GitHub requests are its children.
        # Its parent is the ingress's span, when the webhook came with a trace.
        parent = telemetry.parent_context(pending.received.trace)
        with telemetry.span(event.qualified_name, context=parent, kind=SpanKind.CONSUMER) as span:
            if span.is_recording():
                repo = event.repository
                span.set_attributes(
                    {
                        telemetry.EVENT_TYPE: event.qualified_name,
                        telemetry.DELIVERY_ID: pending.received.delivery_id,
                        telemetry.INSTALLATION_ID: self.installation_id,
                        telemetry.REPOSITORY: repo.full_name if repo is not None else "",
                    }
                )
            try:
                for index, name in enumerate(todo):
                    await self._run(name, event, pending, run, last=index == len(todo) - 1)
            except Stopped:
                # Left to the next shard: not an error of this span's.
                if span.is_recording():
                    span.add_event("handed over to the next shard")
                stopped = True
            else:
                stopped = False
        if stopped:
            raise Stopped

    async def _run(
        self, name: str, event: Event, pending: Pending, run: Run, *, last: bool
    ) -> None:
        delivery_id = pending.received.delivery_id
        attempt = pending.attempts.get(name, 0)
        # Resumed (a restart, a hand-over) while a journaled failure's backoff runs: wait
        # out what is left of it; never longer than the backoff, whatever the clocks.
        due, backoff = pending.retry_at.get(name, (0.0, 0.0))
        if (left := min(due - self._clock(), backoff)) > 0:
            run.may_cut()
            await self._sleep(left)
        refused_since: float | None = None  # the breaker's first refusal of this run
        while True:
            run.may_cut()  # before an attempt: what came before it is journaled
            await self._wait_for_breaker()
            attempt += 1
            run.attempt()
            started = self._clock()
            try:
                with log_context(**self._fields(event, name)):
                    if log.isEnabledFor(TRACE):
                        body = msgspec.json.decode(event.raw)
                        log.log(TRACE, "%s: body shape %s", name, shape(body, depth=2))
                    with telemetry.span(f"handler {name}") as handler_span:
                        if handler_span.is_recording():
                            handler_span.set_attribute(telemetry.HANDLER, name)
                        emitted = await self.bot.run_handler(name, event)
                if run.refused:  # the handler swallowed the cancellation that stopped it
                    raise Stopped
            except Stopped:
                raise
            except (CircuitOpen, RateLimited) as exc:
                patient = True
                if isinstance(exc, CircuitOpen):
                    if refused_since is None:
                        refused_since = self._clock()
                    patient = self._clock() - refused_since < OUTAGE_PATIENCE
                if patient and not run.repeats and not run.refused:
                    # GitHub asked us to wait before the attempt wrote anything: not the
                    # handler's fault, not an attempt. (It runs again from the start, on
                    # this shard or the next.)
                    attempt -= 1
                    run.may_cut()
                    await self._sleep(max(self._retry.spread(exc.retry_after), 0.05))
                    continue
                # It wrote first, and running it again repeats that write (or the
                # breaker has refused it for longer than an outage lasts): an attempt
                # like any that failed, waited out for as long as GitHub asked at least.
                if await self._attempt_failed(run, event, name, exc, attempt, last=last):
                    return
                continue
            except InstallationUnavailable as exc:
                if (
                    pending.received.event == SCHEDULE_EVENT
                    and pending.only is None  # a dead letter's replay asked for: as any
                    and exc.installation_id == self.installation_id
                    and last
                ):
                    await self._unscheduled(run, event, name, exc, attempt, started)
                    return
                if await self._attempt_failed(run, event, name, exc, attempt, last=last):
                    return
                continue
            except Exception as exc:
                if await self._attempt_failed(run, event, name, exc, attempt, last=last):
                    return
                continue
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if run.refused or task is None or task.cancelling():
                    raise  # stopped: by the host, or the shard closing
                # The handler's own (nothing asked this task to stop): a failed attempt,
                # not a stop that would leave the deliveries queued behind it waiting.
                cancelled = HandlerCancelled(name)
                if await self._attempt_failed(run, event, name, cancelled, attempt, last=last):
                    return
                continue
            run.journaling()
            took = round((self._clock() - started) * 1000, 3)
            if log.isEnabledFor(logging.DEBUG):
                fields = self._fields(event, name, duration_ms=took)
                log.debug("%s: %s handled %s", self.stream, name, delivery_id, extra=fields)
            done: list[msgspec.Struct | NewEvent] = [
                HandlerSucceeded(
                    delivery_id=delivery_id, handler=name, attempt=attempt, duration_ms=took
                ),
                *(domain_event(e) for e in emitted),
            ]
            if last:
                done.append(DeliveryCompleted(delivery_id=delivery_id))
            await self._write(done)
            try:
                for domain in emitted:
                    self.bot.state = self.bot.evolve(self.bot.state, domain)
            except Exception as exc:
                # Journaled but not folded: a snapshot of this state would lose them.
                self.diverged = True
                self.evolve_error = exc
                raise
            return

    async def _unscheduled(
        self,
        run: Run,
        event: Event,
        name: str,
        exc: InstallationUnavailable,
        attempt: int,
        started: float,
    ) -> None:
        """End a scheduled run whose installation GitHub says is not installed or is
        suspended: its attempt journaled as failed and the run completed, no dead letter
        (the next run would fail the same way, and the one after); the shard schedules
        the installation no more until it is installed again or unsuspended, unless it
        was put back since the attempt `started`."""
        if run.refused:
            raise Stopped from exc
        run.journaling()
        delivery_id = event.delivery_id or ""
        await self._tell_on_error(event, name, exc, attempt)
        log.info(
            "%s: %s not run: %s; no more scheduled runs until it is installed again or unsuspended",
            self.stream,
            name,
            _message(exc),
            extra=self._fields(event, name, error_type=type(exc).__name__),
        )
        await self._write(
            [
                HandlerFailed(
                    delivery_id=delivery_id,
                    handler=name,
                    attempt=attempt,
                    error_type=type(exc).__name__,
                    error=_message(exc),
                    retry_in=0.0,
                    retry_at=0.0,
                ),
                DeliveryCompleted(delivery_id=delivery_id),
            ]
        )
        self._on_unavailable(self, started)

    async def _attempt_failed(
        self, run: Run, event: Event, name: str, exc: Exception, attempt: int, *, last: bool
    ) -> bool:
        """Journal a failed attempt and wait out its backoff; tell whether it was the
        last (dead-lettered)."""
        if run.refused:
            raise Stopped from exc
        run.journaling()
        final = attempt >= type(self.bot).max_attempts or isinstance(exc, _FINAL)
        delay = await self._failed(event, name, exc, attempt, last=last, final=final)
        if final:
            return True
        run.may_cut()  # the failed attempt is journaled
        await self._sleep(delay)
        return False

    async def _tell_on_error(self, event: Event, name: str, exc: Exception, attempt: int) -> None:
        """Tell the bot's `on_error` of a failed attempt; log what it raises."""
        try:
            await self.bot.on_error(event, name, exc, attempt)
        except Exception:
            fields = self._fields(event, name, error_type=type(exc).__name__)
            log.exception("%s: on_error raised", self.stream, extra=fields)

    async def _failed(
        self, event: Event, name: str, exc: Exception, attempt: int, *, last: bool, final: bool
    ) -> float:
        """Journal a failed attempt (`final`: dead-letter it); return the wait before the
        next: the backoff, or as long as GitHub asked to wait if that is longer."""
        delivery_id = event.delivery_id or ""
        error_type, message = type(exc).__name__, _message(exc)
        fields = self._fields(event, name, error_type=error_type)
        await self._tell_on_error(event, name, exc, attempt)
        if final:
            # The runtime's own errors say what happened; a handler's may carry data.
            why = f"{error_type}: {message}" if isinstance(exc, _FINAL) else error_type
            log.warning(
                "%s: %s dead-lettered %s after %d attempts: %s",
                self.stream,
                name,
                delivery_id,
                attempt,
                why,
                extra=fields,
                exc_info=exc if self._tracebacks else None,
            )
            outcome: list[msgspec.Struct | NewEvent] = [
                DeadLettered(
                    delivery_id=delivery_id,
                    handler=name,
                    attempts=attempt,
                    error_type=error_type,
                    error=message,
                    at=self._clock(),
                )
            ]
            if last:
                outcome.append(DeliveryCompleted(delivery_id=delivery_id))
            await self._write(outcome)
            return 0.0
        log.warning(
            "%s: %s failed attempt %d: %s",
            self.stream,
            name,
            attempt,
            error_type,
            extra=fields,
            exc_info=exc if self._tracebacks else None,
        )
        delay = self._retry.backoff(attempt - 1)
        if isinstance(exc, (CircuitOpen, RateLimited)):
            wait = exc.retry_after
            if isinstance(exc, RateLimited) and exc.kind == "primary" and exc.reset_after:
                # A spent window, as GitHub's or the budget's reset says: the run wrote,
                # so it waits for the reset (an open lease's 10 s would spend every
                # attempt while the lease lasts, and repeat the write each time). Not a
                # secondary limit's: its answer carries the window's reset too. Counted
                # on GitHub's clock where it was raised: `reset` is GitHub's epoch
                # second, and this node's clock may be off GitHub's.
                wait = max(wait, exc.reset_after)
            delay = max(delay, self._retry.spread(wait))
        await self._write(
            [
                HandlerFailed(
                    delivery_id=delivery_id,
                    handler=name,
                    attempt=attempt,
                    error_type=error_type,
                    error=message,
                    retry_in=round(delay, 3),
                    retry_at=round(self._clock() + delay, 3),
                )
            ]
        )
        return delay

    async def _give_up(
        self,
        pending: Pending,
        exc: Exception,
        *,
        operation: str,
        handlers: Sequence[str] | None = None,
    ) -> None:
        """Dead-letter every handler of `pending` not yet through, and complete it.

        For a delivery that cannot be processed at all (`operation` says which step
        failed): one journal write, no retries; each dead letter can be replayed.
        `handlers`: the delivery's, as its decoded event chose them (else read from
        its envelope, every handler of its name).
        """
        received = pending.received
        stale = self.progress.pending.get(received.delivery_id) is not pending
        if handlers is None:
            handlers = self._handler_names(pending)
        names = [] if stale else [n for n in handlers if n not in pending.done]
        self._log_give_up(received, names, exc, operation=operation, completed=stale)
        if stale:
            return  # completed before the failure: nothing is left to dead-letter
        error_type, message = type(exc).__name__, _message(exc)
        outcome: list[msgspec.Struct | NewEvent] = [
            DeadLettered(
                delivery_id=received.delivery_id,
                handler=name,
                attempts=max(pending.attempts.get(name, 0), 1),
                error_type=error_type,
                error=message,
                at=self._clock(),
            )
            for name in names
        ]
        outcome.append(DeliveryCompleted(delivery_id=received.delivery_id))
        await self._write(outcome)

    def _log_give_up(
        self,
        received: DeliveryReceived,
        names: Sequence[str],
        exc: Exception,
        *,
        operation: str,
        completed: bool,
    ) -> None:
        """Log a delivery given up on: a bad body as a warning, a runtime fault as an error."""
        error_type = type(exc).__name__
        fields = {
            "event_id": received.delivery_id,
            "installation_id": self.installation_id,
            "operation": operation,
            "error_type": error_type,
        }
        handlers = ", ".join(names) or "no handler"
        if isinstance(exc, MalformedPayload):  # our message: the model's path, no values
            log.warning(
                "%s: delivery %s (event %s) dead-lettered for %s at once: %s",
                self.stream,
                received.delivery_id,
                received.event,
                handlers,
                _message(exc),
                extra=fields,
            )
            return
        outcome = "it was complete already" if completed else f"dead-lettered for {handlers}"
        log.error(
            "%s: delivery %s (event %s) failed outside its handlers (%s); %s",
            self.stream,
            received.delivery_id,
            received.event,
            error_type,
            outcome,
            extra=fields,
            exc_info=exc,
        )

    def _handler_names(self, pending: Pending) -> Sequence[str]:
        """Return the handlers of a delivery from its envelope (no full decode needed)."""
        if pending.only:
            return pending.only
        received = pending.received
        try:
            action = decode_envelope(received.body).action
        except MalformedPayload:  # the ingress checked it; a name-wide handler still counts
            action = None
        qualified = f"{received.event}.{action}" if action else received.event
        return type(self.bot).handlers_for(qualified, received.event)

    def take_evolve_error(self) -> Exception | None:
        """Return what the bot's `evolve` last raised on an event this host journaled,
        if anything, and forget it (the test harness raises it to the test)."""
        error, self.evolve_error = self.evolve_error, None
        return error

    def _fields(self, event: Event, operation: str, **more: Any) -> dict[str, Any]:
        """The structured log fields of one handler run (`ghbot.logs.FIELDS`)."""
        repo = event.repository
        return {
            "event_id": event.delivery_id,
            "installation_id": self.installation_id,
            "repository": repo.full_name if repo is not None else None,
            "operation": operation,
            **more,
        }

    async def _wait_for_breaker(self) -> None:
        # Each delivery waiting draws its own extra: they do not all start at once.
        while (wait := self._breaker_wait()) > 0:
            await self._sleep(self._retry.spread(wait))

    async def _write(self, events: Sequence[msgspec.Struct | NewEvent]) -> None:
        wrapped = [e if isinstance(e, NewEvent) else runtime_event(e) for e in events]
        # Every event the journal held when the append is sent comes before it.
        before, failed = self.last_seq, False
        while True:
            try:
                written = None
                if failed and self._find is not None:
                    # Written, with only the answer lost? Then not again: its domain
                    # events would count twice whenever the stream is read.
                    written = await self._find(before, wrapped)
                if written is None:
                    written = await self._append(self.stream, wrapped)
                self.last_seq = max(self.last_seq, written)
                self.applied += len(wrapped)  # domain events: `_run` evolves the state next
                break
            except JournalUnavailable as exc:
                # The outcome must not be lost: wait for the journal and write it again.
                # (`Fenced` is not caught: a newer shard owns this stream now.)
                failed = True
                log.warning(
                    "%s: journal append failed (%s); retrying",
                    self.stream,
                    describe(exc),
                    extra={
                        "installation_id": self.installation_id,
                        "error_type": type(exc).__name__,
                    },
                )
                await self._sleep(0.5)
        for event in events:
            if not isinstance(event, NewEvent):
                if isinstance(event, DeliveryCompleted):
                    self._observe_completed(event.delivery_id)
                elif isinstance(event, DeadLettered):
                    metrics.dead_letters.add(1)
                evolve_progress(self.progress, event)
        self._on_written(self)

    def _observe_completed(self, delivery_id: str) -> None:
        """Record the time from a delivery's receipt to all of its handlers done.

        A replayed dead letter (`only`) is left out: its receipt was long before; so is
        a scheduled run (`@every`), no webhook, whose handler may page through an
        installation for minutes (it would push the webhooks' percentiles up).
        """
        pending = self.progress.pending.get(delivery_id)
        if pending is None or pending.only is not None:
            return
        if pending.received.event == SCHEDULE_EVENT:
            return
        received = pending.received
        metrics.webhook_processing.record(
            max(self._clock() - received.received_at, 0.0), metrics.event_label(received.event)
        )


def log_replay_not_run(stream: str, delivery_id: str, handler: str) -> None:
    """Warn that a dead-letter replay queued before a drain will not run (it was not
    journaled: nothing of it ran)."""
    log.warning(
        "%s: the replay of %s of %s queued before the drain will not run; ask again once "
        "the shard is replaced",
        stream,
        handler,
        delivery_id,
    )


def _message(exc: BaseException) -> str:
    """The error as journaled (and listed with dead letters): masked as log lines are,
    since a handler's exception may quote a token (a `git clone` URL, say)."""
    text = mask(str(exc)) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."
