"""The journal commits a batch, then fails the read that activates an installation.

A PostgreSQL server that goes away between the commit of a batch and the next read
can do it. `ingest` raised `JournalUnavailable` then, after the whole batch was
journaled: the ingress answered 503, GitHub's redelivery was a duplicate, and the
deliveries of the batch waited, acknowledged and unhandled, for another delivery of
their installation to come and activate it, or for a restart (the active installation's
for its passivation). Now the batch is accepted (it is journaled) and the activation is
tried again in the background: every delivery is handled, once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

import msgspec
import pytest

from actors.bot import InstallationActor, on
from actors.runtime_events import stream_name
from actors.shard import ShardCore
from actors.wire import Inbound, encode_batch
from ghbot.events import Event
from ghbot.journal import FaultyJournal, open_journal
from tests.faults.support import Effects
from tests.history import History, Sender, check, journaled
from tests.runtime.conftest import VSHARDS, HeldReads, inbound, payload

pytestmark = pytest.mark.faults

ACTIVE, NEW = 301, 302  # one installation active when the batch comes, one not


def delivery(installation: int, guid: str) -> Inbound:
    body = payload("issues.opened", installation=installation, issue__number=1)
    return inbound(Effects, "issues", body, delivery_id=guid)


async def test_a_batch_journaled_before_a_failed_activation_is_all_handled(
    tmp_path: Path, history: History
) -> None:
    journal = FaultyJournal(await open_journal(f"sqlite://{tmp_path}/j", shard_count=VSHARDS))
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Effects)
    try:
        await shard.start()
        sender = Sender(shard, history)
        assert await sender.send([delivery(ACTIVE, "first")]) == ["accepted"]
        await shard.wait_idle()

        journal.fail_reads(1)  # the activation of NEW reads its stream: it fails
        batch = [delivery(NEW, "new-1"), delivery(ACTIVE, "active-2")]
        assert await sender.send(batch) == ["accepted", "accepted"]  # it is journaled
        await sender.send(batch)  # a redelivery anyway: duplicates
        assert history.answers["duplicate"] == 2
        async with asyncio.timeout(10):
            await shard.wait_idle()
        for _ in range(500):  # the activation is tried again after a backoff
            if len(history.effects) >= 3:
                break
            await asyncio.sleep(0.01)
        found = await journaled(journal, [ACTIVE, NEW], vshards=VSHARDS)
        check(history, found)
    finally:
        await shard.close()
        await journal.close()


async def test_a_batch_written_though_its_append_failed_is_handled_on_redelivery(
    tmp_path: Path, history: History
) -> None:
    # The append is written, but its answer lost (as SQLite's files committing apart
    # when one has no room, or PostgreSQL gone after the COMMIT).
    journal = FaultyJournal(await open_journal(f"sqlite://{tmp_path}/j", shard_count=VSHARDS))
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Effects)
    try:
        await shard.start()
        sender = Sender(shard, history)
        assert await sender.send([delivery(ACTIVE, "first")]) == ["accepted"]
        await shard.wait_idle()

        journal.lose_acks(1)
        batch = [delivery(NEW, "new-1"), delivery(ACTIVE, "active-2")]
        assert await sender.send(batch) is None  # 503: GitHub redelivers
        assert await sender.redeliver() == 0
        assert history.answers_of["active-2"] == ["unavailable", "duplicate"]
        async with asyncio.timeout(10):
            await shard.wait_idle()
        for _ in range(500):  # the installations are read again after a backoff
            if len(history.effects) >= 3:
                break
            await asyncio.sleep(0.01)
        check(history, await journaled(journal, [ACTIVE, NEW], vshards=VSHARDS))
    finally:
        await shard.close()
        await journal.close()


async def test_a_delivery_taken_while_its_host_is_read_again_runs_once(
    tmp_path: Path, history: History
) -> None:
    """A batch committed while its installation is being activated waits for that
    activation; if the host it activated is dropped before the batch resumes (read
    again after a failure, `_reload_later`), the batch's deliveries go to the host read
    after it. Handed to the dropped host, a delivery ran twice: there, and in the new
    host, which read it pending (once in a PostgreSQL outage in CI)."""
    journal = HeldReads(await open_journal(f"sqlite://{tmp_path}/j", shard_count=VSHARDS))
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Effects)
    try:
        await shard.start()
        sender = Sender(shard, history)
        held = journal.hold = asyncio.Event()
        # Its appends fail: the installation is read again in the background (held
        # there, before anything of it is journaled), and then once more after that.
        journal.fail_appends(2)
        assert await sender.send([delivery(NEW, "refused-1")]) is None
        async with asyncio.timeout(10):
            await journal.entered.wait()  # the background activation read, and is held
        assert await sender.send([delivery(NEW, "refused-2")]) is None
        # Journaled now, after that read: it waits for the held activation.
        taken = asyncio.create_task(sender.send([delivery(NEW, "taken")]))
        async with asyncio.timeout(10):
            await journal.appended.wait()
        await asyncio.sleep(0.05)  # its batch goes on to wait for the activation
        assert not taken.done()
        held.set()
        assert await taken == ["accepted"]
        assert await sender.redeliver() == 0
        async with asyncio.timeout(10):
            await shard.wait_idle()
        check(history, await journaled(journal, [NEW], vshards=VSHARDS))
        assert sorted(history.effects) == ["refused-1", "refused-2", "taken"]
    finally:
        await shard.close()
        await journal.close()


async def test_a_caller_waiting_for_an_activation_another_gave_up_activates_it_itself(
    tmp_path: Path,
) -> None:
    """The caller that started an activation is cancelled (its request gone): one
    waiting for the same activation activates the installation itself. It raised the
    other's `CancelledError`, and an ingest waiting so left its batch's deliveries, all
    journaled, unrun."""
    journal = HeldReads(await open_journal(f"sqlite://{tmp_path}/j", shard_count=VSHARDS))
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Effects)
    held = journal.hold = asyncio.Event()
    try:
        await shard.start()
        first = asyncio.create_task(shard.host(NEW))
        async with asyncio.timeout(10):
            await journal.entered.wait()
        second = asyncio.create_task(shard.host(NEW))
        await asyncio.sleep(0.05)  # it waits for the first one's activation
        first.cancel()
        async with asyncio.timeout(10):
            assert await second is shard.hosts[NEW]
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        held.set()
        await shard.close()
        await journal.close()


async def test_a_batch_written_while_its_installation_is_activated_is_read_again_after(
    tmp_path: Path, history: History
) -> None:
    """A batch whose answer was lost is written after the read of an activation under
    way for its installation: the installation must be read again after that
    activation, not take its host (read before the batch) as the one read again; its
    redelivery is a duplicate, so nothing else runs the batch."""
    journal = HeldReads(await open_journal(f"sqlite://{tmp_path}/j", shard_count=VSHARDS))
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Effects)
    held = journal.hold = asyncio.Event()
    try:
        await shard.start()
        sender = Sender(shard, history)
        # A batch activates NEW; the activation's read is made, then held.
        first = asyncio.create_task(sender.send([delivery(NEW, "first")]))
        async with asyncio.timeout(10):
            await journal.entered.wait()
        journal.lose_acks(1)  # the next batch is written, its answer lost: 503
        assert await sender.send([delivery(NEW, "lost-ack")]) is None
        held.set()
        assert await first == ["accepted"]
        assert await sender.redeliver() == 0  # lost-ack: a duplicate now
        assert history.answers_of["lost-ack"] == ["unavailable", "duplicate"]
        async with asyncio.timeout(10):
            await shard.wait_idle()
        check(history, await journaled(journal, [NEW], vshards=VSHARDS))
        assert sorted(history.effects) == ["first", "lost-ack"]
    finally:
        held.set()
        await shard.close()
        await journal.close()


class Opened(msgspec.Struct):
    number: int


class Counting(InstallationActor):
    """Count `issues.opened` in its state (one domain event each); the journal's answer
    to the append of its first outcome is lost (the append is written)."""

    domain_events = (Opened,)
    state_type = int
    journal: ClassVar[FaultyJournal | None] = None

    def initial_state(self) -> int:
        return 0

    def evolve(self, state: int, event: msgspec.Struct) -> int:
        return state + 1

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        self.emit(Opened(number=event.payload.issue.number))
        if (journal := type(self).journal) is not None:
            journal.lose_acks(1)  # this outcome's append
            type(self).journal = None


async def test_an_outcome_written_though_its_answer_was_lost_is_not_written_again(
    tmp_path: Path,
) -> None:
    """The handler's outcome (its domain event, `HandlerSucceeded`, `DeliveryCompleted`)
    is written but the answer lost: the host looks for it before writing it again. It
    wrote it twice, and the state read back from the journal counted the event twice."""
    journal = FaultyJournal(await open_journal(f"sqlite://{tmp_path}/j", shard_count=VSHARDS))

    async def at_once(_seconds: float) -> None:
        await asyncio.sleep(0)

    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Counting, sleep=at_once)
    try:
        await shard.start()
        Counting.journal = journal
        body = payload("issues.opened", installation=NEW, issue__number=1)
        await shard.ingest(encode_batch([inbound(Counting, "issues", body, delivery_id="d1")]))
        async with asyncio.timeout(10):
            await shard.wait_idle()
        assert journal.appends_failed == 1
        assert shard.hosts[NEW].bot.state == 1
        records = await journal.read(stream_name(NEW), shard=NEW % VSHARDS)
        assert [r.type for r in records].count("HandlerSucceeded") == 1
        del shard.hosts[NEW]  # passivated; read from the journal again
        assert (await shard.host(NEW)).bot.state == 1
    finally:
        await shard.close()
        await journal.close()
