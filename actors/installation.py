"""One installation's virtual actor: its journal stream, mailbox, handlers and state.

An `InstallationHost` is what a shard keeps in memory per active installation. It is
built from the journal (`activate`: latest snapshot, then replay), takes new
deliveries (`accept`), runs the bot's handlers in per-key order with retries, and
journals every outcome before it counts: `HandlerSucceeded` with the domain events
the handler emitted (atomically), `HandlerFailed` per failed attempt, `DeadLettered`
after the last, and `DeliveryCompleted` when every handler of a delivery is through.
Rebuilding from the journal therefore resumes exactly where a crash left off.
The rebuilding, the writing and the stopping are its base's
(`actors.installation_stream.InstallationStream`); this module runs the handlers.

Every journaled delivery ends completed or dead-lettered, never silently pending: a
body that does not decode into its model (`MalformedPayload`) is dead-lettered at once
under every handler it would have run, and so is a delivery whose processing failed
outside its handlers (a runtime fault), both replayable. Only a journal that cannot
be written, a shard fenced by its successor, or a drain that stops the host leaves a
delivery pending, for the next activation to resume.

Deliveries without an installation (`NO_INSTALLATION`) run with a `self.github` and a
`self.quota` that raise `NoInstallation` on use (`actors.no_installation`),
dead-lettered at once: handlers that need no API (a `github_app_authorization`
revocation) run as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from opentelemetry.trace import SpanKind

from actors.codecs import domain_event
from actors.installation_stream import InstallationStream
from actors.mailbox import KeyedMailbox
from actors.no_installation import current_delivery
from actors.runtime_events import (
    NO_INSTALLATION,
    DeadLettered,
    DeadLetterReplayed,
    DeliveryCompleted,
    DeliveryReceived,
    HandlerFailed,
    HandlerSucceeded,
    Pending,
    dead_key,
    evolve_progress,
)
from actors.schedule import SCHEDULE_EVENT
from actors.stopping import Run, Stopped
from ghbot import telemetry
from ghbot.client.watch import call_watcher
from ghbot.errors import (
    CircuitOpen,
    Fenced,
    HandlerCancelled,
    InstallationUnavailable,
    JournalError,
    MalformedPayload,
    NoInstallation,
    RateLimited,
    RepositoryConfigError,
)
from ghbot.events import Event, decode_envelope, parse
from ghbot.journal.records import NewEvent
from ghbot.logs import TRACE, log_context, mask, shape

__all__ = ["InstallationHost"]

log = logging.getLogger("ghbot.installation")
Job = Callable[[], Awaitable[None]]

#: Handler errors that every attempt would raise again: dead-lettered at once.
_FINAL: tuple[type[Exception], ...] = (
    NoInstallation,
    RepositoryConfigError,
    InstallationUnavailable,
)

#: How long (seconds) a handler's runs refused by an open breaker wait without counting
#: as attempts, from the first refusal: most outages end within it, but a request
#: GitHub always fails (a GraphQL query that always times out) reopens the breaker at
#: each of its trials, and would otherwise hold its delivery, and its installation's
#: calls, for good. Past it, each refusal is an attempt, and the delivery is
#: dead-lettered (as are those still waiting out a longer outage: by time alone, a
#: quiet installation cannot tell the two apart).
OUTAGE_PATIENCE = 3600.0


class InstallationHost(InstallationStream):
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

    __slots__ = ()

    # --- new work -----------------------------------------------------------------

    def resume(self) -> int:
        """Queue every pending delivery again, in journal order; return how many."""
        # `pending` is in journal order (`evolve_progress` adds each as it is journaled).
        # Not by `received_at`: the ingress's clock, which concurrent calls journal in
        # another order (tests/runtime/test_journal_order.py).
        pending = list(self.progress.pending.values())
        for item in pending:
            self._enqueue(item)
        return len(pending)

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


def _message(exc: BaseException) -> str:
    """The error as journaled (and listed with dead letters): masked as log lines are,
    since a handler's exception may quote a token (a `git clone` URL, say)."""
    text = mask(str(exc)) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."
