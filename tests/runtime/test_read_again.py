"""An installation read again after an append whose answer was lost keeps per-key order.

The shard cannot tell whether such an append was written; a redelivery of what it
held would be a duplicate and run nothing, so the installation is read again from
the journal (`ShardCore._reload_later`), which runs what was written. Its host used
to run on until idle, starting later deliveries meanwhile: under a steady stream it
was never idle, and the delivery whose answer was lost, found by the read, ran after
later ones of its own issue. Now the host is stopped at once, as a drain stops it,
and the host read after it runs everything pending in journal order. Against a real
FakeGitHub and SQLite journal, without Ray.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from actors.bot import InstallationActor, on
from actors.runtime_events import ClientHeld, decode_runtime, stream_name
from actors.shard import ShardCore
from ghbot.errors import JournalUnavailable
from ghbot.events import Event
from ghbot.journal import AppendRequest, AppendResult, FaultyJournal, Journal
from ghbot.testing import FakeGitHub
from tests.runtime.conftest import COMMENTER_INSTALLATION as INSTALLATION
from tests.runtime.conftest import (
    VSHARDS,
    batch,
    commenter_shard,
    inbound,
    payload,
    until,
)


class InOrder(InstallationActor):
    """Note each delivery of issue 1 as it runs; `d1` waits for `release` first, an
    `s…` one takes 20 ms (its own work)."""

    seen: ClassVar[list[str]] = []
    release: ClassVar[asyncio.Event]

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        if event.delivery_id == "d1":
            await InOrder.release.wait()
        elif (event.delivery_id or "").startswith("s"):
            await asyncio.sleep(0.02)
        InOrder.seen.append(event.delivery_id or "")


def _opened(delivery_id: str, bot: type[InstallationActor] = InOrder) -> Any:
    body = payload("issues.opened", installation=INSTALLATION, issue__number=1)
    return inbound(bot, "issues", body, delivery_id=delivery_id)


async def _d2_lost_while_d1_runs(
    journal: Journal, fake: FakeGitHub, bot: type[InstallationActor] = InOrder, **options: Any
) -> ShardCore:
    """Start a shard (`options` are its client's) whose host runs d1 (which waits for
    its bot's `release`), then take d2 of the same issue: written, its answer lost."""
    faulty = FaultyJournal(journal)
    shard = commenter_shard(faulty, fake, bot, **options)
    await shard.start()
    assert await shard.ingest(batch(_opened("d1", bot))) == ["accepted"]
    await until(lambda: shard.hosts[INSTALLATION].busy == 1)  # d1 runs, and waits
    faulty.lose_acks(1)
    with pytest.raises(JournalUnavailable):  # written, but the shard cannot know
        await shard.ingest(batch(_opened("d2", bot)))
    return shard


@pytest.fixture(autouse=True)
def _fresh() -> None:
    InOrder.seen = []
    InOrder.release = asyncio.Event()


async def test_a_delivery_whose_answer_was_lost_runs_before_later_ones_of_its_issue(
    journal: Journal, fake: FakeGitHub
) -> None:
    shard = await _d2_lost_while_d1_runs(journal, fake, pace_writes=None)
    try:
        # Deliveries keep coming for the same issue while d1 runs.
        for n in (3, 4):
            assert await shard.ingest(batch(_opened(f"d{n}"))) == ["accepted"]
        InOrder.release.set()
        async with asyncio.timeout(10):
            await shard.wait_idle()
        assert InOrder.seen == ["d1", "d2", "d3", "d4"]
        # GitHub's redelivery of d2 is a duplicate: it ran once.
        assert await shard.ingest(batch(_opened("d2"))) == ["duplicate"]
    finally:
        await shard.close()


async def test_a_host_to_be_read_again_is_soon_idle_however_much_keeps_coming(
    journal: Journal, fake: FakeGitHub
) -> None:
    # It used to be dropped only once idle: a steady stream of deliveries for the
    # installation kept it busy, and what the journal held and it did not, unrun.
    faulty = FaultyJournal(journal)
    shard = commenter_shard(faulty, fake, InOrder, pace_writes=None)
    await shard.start()
    try:
        assert await shard.ingest(batch(_opened("s0"))) == ["accepted"]  # active, busy
        faulty.lose_acks(1)
        with pytest.raises(JournalUnavailable):
            await shard.ingest(batch(_opened("d0")))
        sent = 0  # one every 10 ms, each 20 ms of work: a backlog that only grows
        while "d0" not in InOrder.seen:
            assert sent < 100, "d0 did not run while deliveries kept coming"
            sent += 1
            assert await shard.ingest(batch(_opened(f"s{sent}"))) == ["accepted"]
            await asyncio.sleep(0.01)
        async with asyncio.timeout(10):
            await shard.wait_idle()
        assert InOrder.seen[:2] == ["s0", "d0"]  # in journal order
        assert sorted(InOrder.seen) == sorted(["d0", *(f"s{n}" for n in range(sent + 1))])
    finally:
        await shard.close()


class Replayed(InstallationActor):
    """`x…` deliveries fail while `broken` (one attempt: dead-lettered at once); `d1`
    waits for `release`."""

    max_attempts = 1
    broken: ClassVar[bool] = True
    ran: ClassVar[list[str]] = []
    release: ClassVar[asyncio.Event]

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        if event.delivery_id == "d1":
            await Replayed.release.wait()
        elif Replayed.broken:
            raise RuntimeError("broken")
        Replayed.ran.append(event.delivery_id or "")


async def _dead_lettered(shard: ShardCore, *deliveries: str) -> None:
    """Start `shard` (a `Replayed` bot's), have `deliveries` dead-lettered, then mend
    the bot (its later runs succeed)."""
    await shard.start()
    for delivery_id in deliveries:
        assert await shard.ingest(batch(_opened(delivery_id, Replayed))) == ["accepted"]
    await shard.wait_idle()
    assert len(shard.hosts[INSTALLATION].progress.dead) == len(deliveries)
    Replayed.broken = False


async def test_dead_letter_replays_asked_around_a_reading_again_run_in_the_host_read(
    journal: Journal, fake: FakeGitHub
) -> None:
    # One replay queued before the failure (behind d1, on its issue), one asked while
    # the host waits to be dropped: both run, in the host read after it; the asking
    # does not wait for that host.
    Replayed.ran, Replayed.release, Replayed.broken = [], asyncio.Event(), True
    faulty = FaultyJournal(journal)
    shard = commenter_shard(faulty, fake, Replayed, pace_writes=None)
    try:
        await _dead_lettered(shard, "x1", "x2")
        assert await shard.ingest(batch(_opened("d1", Replayed))) == ["accepted"]
        await until(lambda: shard.hosts[INSTALLATION].busy == 1)
        assert await shard.replay(INSTALLATION, "x1", None) == 1  # queued behind d1
        faulty.lose_acks(1)
        with pytest.raises(JournalUnavailable):
            await shard.ingest(batch(_opened("d2", Replayed)))
        # Asked of the stopped host: kept for the host read after it.
        assert await shard.replay(INSTALLATION, "x2", None) == 1
        Replayed.release.set()
        async with asyncio.timeout(10):
            await shard.wait_idle()
        assert sorted(Replayed.ran) == ["d1", "d2", "x1", "x2"]
        assert not shard.hosts[INSTALLATION].progress.dead
    finally:
        Replayed.release.set()
        await shard.close()


async def test_a_caller_s_timeout_on_wait_idle_leaves_the_reading_again_running(
    journal: Journal, fake: FakeGitHub
) -> None:
    # `ShardActor.wait_idle(within)` gives up after `within`: that must not cancel the
    # reading again, or its host would stay stopped, taking deliveries it never runs.
    shard = await _d2_lost_while_d1_runs(journal, fake, pace_writes=None)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await shard.wait_idle()
        assert INSTALLATION in shard._reactivating
        assert await shard.ingest(batch(_opened("d3"))) == ["accepted"]
        InOrder.release.set()
        async with asyncio.timeout(10):
            await shard.wait_idle()
        assert InOrder.seen == ["d1", "d2", "d3"]
        assert shard.pending() == 0
    finally:
        await shard.close()


async def test_a_finishing_drain_runs_what_an_installation_being_read_again_took(
    journal: Journal, fake: FakeGitHub
) -> None:
    # `ghbot stop` finishes what the shard took: the deliveries a host stopped to be
    # read again took run too, in the host read before the drain.
    shard = await _d2_lost_while_d1_runs(journal, fake, pace_writes=None)
    try:
        assert await shard.ingest(batch(_opened("d3"))) == ["accepted"]
        drain = asyncio.create_task(shard.drain(finish=True))
        await asyncio.sleep(0.05)
        InOrder.release.set()
        async with asyncio.timeout(10):
            assert await drain == 0
        assert InOrder.seen == ["d1", "d2", "d3"]
    finally:
        await shard.close()


async def test_a_replay_kept_for_the_host_read_again_runs_in_one_a_delivery_activates(
    journal: Journal, fake: FakeGitHub
) -> None:
    # The reading again's read failed: it waits out its backoff (15 to 30 s here).
    # A delivery activates the installation meanwhile; the replay its dropped host had
    # queued runs there.
    Replayed.ran, Replayed.release, Replayed.broken = [], asyncio.Event(), True
    faulty = FaultyJournal(journal)
    shard = commenter_shard(faulty, fake, Replayed, pace_writes=None)
    try:
        await _dead_lettered(shard, "x1")
        assert await shard.ingest(batch(_opened("d1", Replayed))) == ["accepted"]
        await until(lambda: shard.hosts[INSTALLATION].busy == 1)
        assert await shard.replay(INSTALLATION, "x1", None) == 1  # queued behind d1
        faulty.lose_acks(1)
        faulty.fail_reads(1)
        with pytest.raises(JournalUnavailable):
            await shard.ingest(batch(_opened("d2", Replayed)))
        Replayed.release.set()
        await until(lambda: faulty.reads_failed == 1 and INSTALLATION not in shard.hosts)
        assert await shard.ingest(batch(_opened("d3", Replayed))) == ["accepted"]  # activates it
        async with asyncio.timeout(5):  # not the reading again's backoff
            await until(lambda: "x1" in Replayed.ran and "d3" in Replayed.ran)
        assert sorted(Replayed.ran) == ["d1", "d2", "d3", "x1"]
    finally:
        Replayed.release.set()
        await shard.close()


class ReplayWaits(FaultyJournal):
    """Holds the append of a `DeadLetterReplayed` until `gate` is set."""

    def __init__(self, inner: Journal) -> None:
        super().__init__(inner)
        self.gate = asyncio.Event()
        self.held = 0

    async def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        if any(e.type == "DeadLetterReplayed" for r in requests for e in r.events):
            self.held += 1
            await self.gate.wait()
        return await super().append_many(requests)


async def test_a_replay_asked_while_the_stopped_host_runs_it_runs_once_and_says_so(
    journal: Journal, fake: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    # The replay is under way in the host stopped to be read again (its first write
    # not yet answered) when it is asked again: answered as kept, it finds no dead
    # letter in the host read after (it ran in the one before), and the log says so.
    Replayed.ran, Replayed.release, Replayed.broken = [], asyncio.Event(), True
    gated = ReplayWaits(journal)
    shard = commenter_shard(gated, fake, Replayed, pace_writes=None)
    try:
        await _dead_lettered(shard, "x1")
        assert await shard.replay(INSTALLATION, "x1", None) == 1
        await until(lambda: gated.held == 1)  # the replay's first write is under way
        gated.lose_acks(1)
        with pytest.raises(JournalUnavailable):
            await shard.ingest(batch(_opened("d2", Replayed)))
        assert await shard.replay(INSTALLATION, "x1", None) == 1  # kept: still dead
        with caplog.at_level(logging.INFO, logger="ghbot.shard"):
            gated.gate.set()
            async with asyncio.timeout(10):
                await until(lambda: not shard._reactivating)
                await shard.wait_idle()
        assert sorted(Replayed.ran) == ["d2", "x1"]  # the replay ran once
        assert not shard.hosts[INSTALLATION].progress.dead
        said = [r.getMessage() for r in caplog.records if r.name == "ghbot.shard"]
        assert f"{stream_name(INSTALLATION)}: no dead letter opened of x1 left to replay" in (
            " ".join(said)
        ), said
    finally:
        await shard.close()


class WritesThenWaits(InstallationActor):
    """`d1` comments, sets `wrote` once the answer is in, then waits for `release`;
    the others only comment."""

    wrote: ClassVar[asyncio.Event]
    release: ClassVar[asyncio.Event]

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        await self.github.request(
            "POST", "/repos/octo-org/hello-world/issues/1/comments", json={"body": "hi"}
        )
        if event.delivery_id == "d1":
            WritesThenWaits.wrote.set()
            await WritesThenWaits.release.wait()


async def test_a_finishing_drain_cut_short_while_reading_again_still_hands_over(
    journal: Journal, fake: FakeGitHub
) -> None:
    # `ghbot stop`'s drain runs out of time while it waits for the stopped host's
    # writing handler: the close after it still journals the client's turn (a write a
    # minute) for the next start.
    WritesThenWaits.wrote, WritesThenWaits.release = asyncio.Event(), asyncio.Event()
    shard = await _d2_lost_while_d1_runs(journal, fake, WritesThenWaits, pace_writes=60.0)
    try:
        # d1 wrote, and its client has taken the answer in (the fake seeing the request
        # is too soon: the client sets the next write's turn again from the answer).
        async with asyncio.timeout(10):
            await WritesThenWaits.wrote.wait()
        writes_after = shard.hosts[INSTALLATION].bot.github.holds().writes_after
        with pytest.raises(TimeoutError):  # as the Ray actor's `drain` runs it
            async with asyncio.timeout(0.3):
                await shard.drain(finish=True)
    finally:
        WritesThenWaits.release.set()
        await shard.close()
    records = await journal.read(stream_name(INSTALLATION), shard=INSTALLATION % VSHARDS)
    [held] = [e for r in records if isinstance(e := decode_runtime(r.type, r.data), ClientHeld)]
    assert held.writes_after == writes_after
