"""What an installation's host holds, and how it is kept: `InstallationStream`.

The part of an `actors.installation.InstallationHost` that is not running handlers: its
state rebuilt from the installation's journal stream (`restore`: a snapshot, then the
events after it), the outcomes written back to that stream (`_write`, which tells the
shard through `on_written`), what its GitHub client holds handed over to the next shard
and taken over from the last (`ClientHeld`), and its mailbox stopped or closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from actors.bot import InstallationActor
from actors.codecs import Codecs, Snapshot, runtime_event, snapshot_decoder
from actors.mailbox import KeyedMailbox
from actors.no_installation import without_installation
from actors.runtime_events import (
    DOMAIN_PREFIX,
    NO_INSTALLATION,
    ClientHeld,
    DeadLettered,
    DeliveryCompleted,
    Progress,
    decode_runtime,
    evolve_progress,
    stream_name,
)
from actors.schedule import SCHEDULE_EVENT
from actors.stopping import Run
from ghbot import metrics
from ghbot.client.github_client import GitHub
from ghbot.errors import JournalUnavailable
from ghbot.journal.records import NewEvent, encode
from ghbot.retry import RetryPolicy, describe

if TYPE_CHECKING:
    from actors.installation import InstallationHost

__all__ = ["MAX_HELD", "MAX_SKEW", "InstallationStream", "log_replay_not_run"]

log = logging.getLogger("ghbot.installation")
Sleep = Callable[[float], Awaitable[None]]

#: The longest wait (seconds) a client takes over from the shard that handed its
#: installation over (`ClientHeld`): longer than any pause GitHub asks for.
MAX_HELD = 3600.0
#: How far ahead of this node's clock a `ClientHeld` may have been written and still
#: be taken over (seconds): more, and the two clocks disagree.
MAX_SKEW = 300.0


class InstallationStream:
    """Keep one installation's state: rebuild it from its stream, write outcomes to it.

    Also stops its mailbox, and hands over what its client holds. `InstallationHost`
    adds the running of handlers, and its docstring says what the arguments are.
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
        # The base's type: this class calls it (`_write`); the others, its subclass.
        on_written: Callable[[InstallationStream], None] = lambda _host: None,
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

    # --- its work, stopped and handed over ----------------------------------------

    @property
    def busy(self) -> int:
        """Return the deliveries queued or running."""
        return 0 if self._mailbox is None else len(self._mailbox)

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

    # --- writing ------------------------------------------------------------------

    def take_evolve_error(self) -> Exception | None:
        """Return what the bot's `evolve` last raised on an event this host journaled,
        if anything, and forget it (the test harness raises it to the test)."""
        error, self.evolve_error = self.evolve_error, None
        return error

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
