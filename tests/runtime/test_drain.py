"""A draining shard stops what only waits and leaves it to its successor, repeating nothing.

`ShardCore.drain` (an upgrade, a reshard, `ghbot stop`, SIGTERM) used to wait for every
delivery it had queued: with writes paced (a second apart per installation), a backlog
made the drain outlast the ingress's hold, and deliveries were answered 503. Now a
delivery not started, or one that only waits (its turn in the write lane before it
wrote, a retry's backoff), stays pending in the journal; a handler running its own code
or writing runs on. Against a real FakeGitHub, without Ray; the drain on a real Ray is
tests/cluster/test_upgrade.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import pickle
import re
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from actors.bot import InstallationActor, on
from actors.codecs import runtime_event
from actors.installation_stream import MAX_HELD, MAX_SKEW
from actors.mailbox import KeyedMailbox
from actors.quota import QuotaLease
from actors.runtime_events import (
    ClientHeld,
    HandlerFailed,
    HandlerSucceeded,
    stream_name,
)
from actors.shard import ShardCore
from ghbot.breaker import CircuitBreaker
from ghbot.errors import JournalUnavailable, ShardDraining
from ghbot.events import Event
from ghbot.journal import FaultyJournal, Journal
from ghbot.retry import RetryPolicy
from ghbot.testing import FakeGitHub
from tests.runtime.conftest import COMMENTER_INSTALLATION as INSTALLATION
from tests.runtime.conftest import (
    COMMENTER_REPO,
    VSHARDS,
    AlwaysFails,
    Commenter,
    HeldReads,
    Stuck,
    batch,
    commenter_outcomes,
    commenter_records,
    commenter_shard,
    inbound,
    payload,
    until,
)

COMMENTS = f"/repos/{COMMENTER_REPO}/issues/1/comments"


def _opened(bot: type[InstallationActor], number: int, delivery_id: str) -> Any:
    body = payload("issues.opened", installation=INSTALLATION, issue__number=number)
    return inbound(bot, "issues", body, delivery_id=delivery_id)


async def _completed(journal: Journal) -> list[str]:
    return sorted(
        getattr(e, "delivery_id", "")
        for e in await commenter_outcomes(journal)
        if type(e).__name__ == "DeliveryCompleted"
    )


async def _successor_runs_the_rest(journal: Journal, fake: FakeGitHub, bot: Any) -> int:
    """Start the next shard (writes not paced), let it resume; return what it resumed."""
    successor = commenter_shard(journal, fake, bot, pace_writes=None)
    try:
        resumed = await successor.start()
        await successor.wait_idle()
        return resumed
    finally:
        await successor.close()


async def test_a_drain_leaves_what_waits_to_write_to_the_successor_which_runs_it_once(
    journal: Journal, fake: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ghbot.shard")
    shard = commenter_shard(journal, fake, Commenter, pace_writes=60.0)  # one write a minute
    await shard.start()
    # Issues 1 to 3 run at once (one key each); the second delivery of issue 1 queues.
    taken = [_opened(Commenter, n, f"d{n}") for n in (1, 2, 3)]
    taken.append(_opened(Commenter, 1, "d1-again"))
    assert await shard.ingest(batch(*taken)) == ["accepted"] * 4
    await until(lambda: len(fake.requests_to(COMMENTS, "POST")) == 1)

    async with asyncio.timeout(10):  # the two waiting in the lane would take 2 minutes
        assert await shard.drain() == 3
    # The line docs/operations.md points at to tell when a drain ended.
    [drained] = [r for r in caplog.records if r.getMessage().startswith("drained:")]
    assert (drained.name, drained.levelno) == ("ghbot.shard", logging.INFO)
    # Issue 1's second delivery waited in the lane too, or had not started yet.
    assert re.fullmatch(
        r"drained: no delivery running; 3 left pending for the next shard \([23] of them "
        r"stopped while they waited\)",
        drained.getMessage(),
    )
    await shard.close()
    assert len(fake.requests_to(COMMENTS, "POST")) == 1
    [first] = await _completed(journal)
    assert not any(isinstance(e, HandlerFailed) for e in await commenter_outcomes(journal))

    assert await _successor_runs_the_rest(journal, fake, Commenter) == 3
    assert len(fake.requests_to(COMMENTS, "POST")) == 4  # one comment per delivery
    assert await _completed(journal) == ["d1", "d1-again", "d2", "d3"]
    assert first in {"d1", "d2", "d3"}


async def test_a_drain_says_when_it_began_and_a_second_keeps_it(journal: Journal) -> None:
    """`/readyz` bounds how long a shard may drain (`ShardActor.ready`), from the first
    drain's start: `ghbot stop` after an upgrade's drain does not start it again."""
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Stuck)
    await shard.start()
    try:
        before = time.monotonic()
        await shard.drain()
        began = shard.draining_since
        assert before <= began <= time.monotonic()
        await shard.drain(finish=True)
        assert shard.draining and shard.draining_since == began
    finally:
        await shard.close()


async def test_a_draining_shard_passivates_no_host_it_stopped(journal: Journal) -> None:
    """What a drain left pending stays in view (`pending`, the drain's count): an idle
    host it stopped is not dropped, however long idle."""
    Stuck.release = asyncio.Event()
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Stuck)
    await shard.start()
    try:
        body = payload("issues.opened", installation=41)  # one issue: one after the other
        taken = [inbound(Stuck, "issues", body, delivery_id=d) for d in ("first", "second")]
        assert await shard.ingest(batch(*taken)) == ["accepted"] * 2
        await until(lambda: shard.hosts[41].busy == 2)
        draining = asyncio.create_task(shard.drain())
        await asyncio.sleep(0)  # the drain stops the host: the second will not start
        Stuck.release.set()  # the first runs to its end
        assert await draining == 1
        assert shard.passivate(force_idle=True) == 0
        assert list(shard.hosts) == [41] and shard.pending() == 1
    finally:
        Stuck.release.set()
        await shard.close()


class TwoComments(InstallationActor):
    """Comment twice per new issue: the second write waits for its turn in the lane."""

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        for text in ("one", "two"):
            await self.github.request("POST", COMMENTS, json={"body": text})


async def test_a_handler_that_wrote_is_not_cut_while_it_waits_to_write_again(
    journal: Journal, fake: FakeGitHub
) -> None:
    shard = commenter_shard(journal, fake, TwoComments, pace_writes=2.0)
    await shard.start()
    assert await shard.ingest(batch(_opened(TwoComments, 1, "d1"))) == ["accepted"]
    await until(lambda: len(fake.requests_to(COMMENTS, "POST")) == 1)
    assert len(fake.requests_to(COMMENTS, "POST")) == 1  # the second waits its turn

    async with asyncio.timeout(10):
        assert await shard.drain() == 0  # it waited for the second write, then ended
    await shard.close()
    assert len(fake.requests_to(COMMENTS, "POST")) == 2
    assert await _completed(journal) == ["d1"]
    # Cut short after its first write, it would have been run again: four comments.
    assert await _successor_runs_the_rest(journal, fake, TwoComments) == 0
    assert len(fake.requests_to(COMMENTS, "POST")) == 2


class WritesWaitsWrites(InstallationActor):
    """Comment, wait for `go_on`, then comment again (waiting for its turn to)."""

    go_on: ClassVar[asyncio.Event]

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        await self.github.request("POST", COMMENTS, json={"body": "one"})
        await type(self).go_on.wait()
        await self.github.request("POST", COMMENTS, json={"body": "two"})


async def test_a_handler_that_wrote_is_not_cut_when_it_waits_to_write_after_the_drain_began(
    journal: Journal, fake: FakeGitHub
) -> None:
    """The wait for its turn starts once the host is stopping: it has written, so it
    is not refused there either."""
    WritesWaitsWrites.go_on = asyncio.Event()
    shard = commenter_shard(journal, fake, WritesWaitsWrites, pace_writes=2.0)
    await shard.start()
    assert await shard.ingest(batch(_opened(WritesWaitsWrites, 1, "d1"))) == ["accepted"]
    await until(lambda: len(fake.requests_to(COMMENTS, "POST")) == 1)
    draining = asyncio.create_task(shard.drain())
    await asyncio.sleep(0)  # the host is stopping from here on
    WritesWaitsWrites.go_on.set()  # its second write waits for its turn now
    async with asyncio.timeout(10):
        assert await draining == 0
    await shard.close()
    assert len(fake.requests_to(COMMENTS, "POST")) == 2
    assert await _completed(journal) == ["d1"]
    assert await _successor_runs_the_rest(journal, fake, WritesWaitsWrites) == 0
    assert len(fake.requests_to(COMMENTS, "POST")) == 2


class LeasesThenReads(InstallationActor):
    """Lease two requests for tasks elsewhere (none made), then read issue 1."""

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        async with self.quota.lease(2) as lease:
            lease.report(0)
        await self.github.request("GET", f"/repos/{COMMENTER_REPO}/issues/1")


async def test_a_handler_that_leased_is_not_cut_while_its_client_waits(
    journal: Journal, fake: FakeGitHub
) -> None:
    """What a lease's tasks did elsewhere is not followed, so a lease counts as a
    write: the handler's later wait (here a secondary limit's pause) is waited out,
    where a handler that only read would be left to the successor."""
    issue = f"/repos/{COMMENTER_REPO}/issues/1"
    fake.faults.add("/issues/1$", "secondary", retry_after=1)
    shard = commenter_shard(journal, fake, LeasesThenReads, pace_writes=None)
    await shard.start()
    assert await shard.ingest(batch(_opened(LeasesThenReads, 1, "d1"))) == ["accepted"]
    await until(lambda: len(fake.requests_to(issue)) == 1)  # paused for 1 s from here
    async with asyncio.timeout(10):
        assert await shard.drain() == 0
    await shard.close()
    assert len(fake.requests_to(issue)) == 2
    assert await _completed(journal) == ["d1"]
    assert await _successor_runs_the_rest(journal, fake, LeasesThenReads) == 0


class FailsOnce(InstallationActor):
    """Fail the first attempt of each delivery, then comment."""

    attempts: list[tuple[str, float]] = []

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        type(self).attempts.append((event.delivery_id or "", time.time()))
        if len(type(self).attempts) == 1:
            raise RuntimeError("the first attempt fails")
        await self.github.request("POST", COMMENTS, json={"body": "at last"})


async def test_a_retry_waiting_out_its_backoff_is_left_to_the_successor_which_waits_the_rest(
    journal: Journal, fake: FakeGitHub
) -> None:
    FailsOnce.attempts = []
    backoff = RetryPolicy(base=4.0)  # the first retry waits 2 to 4 s
    shard = commenter_shard(journal, fake, FailsOnce, retry=backoff, pace_writes=None)
    await shard.start()
    assert await shard.ingest(batch(_opened(FailsOnce, 1, "d1"))) == ["accepted"]
    await until(lambda: len(FailsOnce.attempts) == 1)

    async with asyncio.timeout(10):
        assert await shard.drain() == 1
    drained_at = time.time()
    await shard.close()
    [*_, failed] = await commenter_outcomes(journal)
    assert isinstance(failed, HandlerFailed)
    assert drained_at < failed.retry_at  # it did not wait out the backoff
    assert failed.retry_at == pytest.approx(FailsOnce.attempts[0][1] + failed.retry_in, abs=0.1)

    successor = commenter_shard(journal, fake, FailsOnce, retry=backoff, pace_writes=None)
    try:
        assert await successor.start() == 1
        assert not fake.requests_to(COMMENTS, "POST")  # the backoff is not over yet
        await successor.wait_idle()
    finally:
        await successor.close()
    [(_, first), (_, second)] = FailsOnce.attempts
    # The successor waited out the rest of the backoff, not a new one nor none at all.
    assert second >= failed.retry_at - 0.01
    assert second - first < failed.retry_in + 1.0
    assert len(fake.requests_to(COMMENTS, "POST")) == 1
    [succeeded] = await commenter_records(journal, HandlerSucceeded)
    assert succeeded.attempt == 2  # the attempt the first shard journaled counts


async def test_a_stopped_mailbox_lets_running_jobs_end_and_starts_no_other() -> None:
    mailbox = KeyedMailbox(limit=1)
    release, ran = asyncio.Event(), []

    def job(name: str, gate: asyncio.Event | None = None) -> Callable[[], Any]:
        async def run() -> None:
            if gate is not None:
                await gate.wait()
            ran.append(name)

        return run

    mailbox.put("a", job("a1", release))
    mailbox.put("a", job("a2"))  # behind a1, same key
    mailbox.put("b", job("b1"))  # waits for the one slot
    await asyncio.sleep(0)
    mailbox.stop()
    mailbox.put("c", job("c1"))  # put after the stop
    release.set()
    async with asyncio.timeout(5):
        await mailbox.wait_idle()
    assert ran == ["a1"] and len(mailbox) == 0


async def test_a_job_that_raises_is_logged_and_the_next_of_its_key_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mailbox, ran = KeyedMailbox(limit=1), []

    async def fails() -> None:
        raise RuntimeError("handler bug")

    async def runs() -> None:
        ran.append("next")

    mailbox.put("inst-5", fails)
    mailbox.put("inst-5", runs)
    async with asyncio.timeout(5):
        await mailbox.wait_idle()
    assert ran == ["next"]
    [record] = [r for r in caplog.records if r.name == "ghbot.mailbox"]
    assert record.getMessage() == "a mailbox job for key 'inst-5' raised"
    assert record.exc_info is not None and str(record.exc_info[1]) == "handler bug"


async def test_a_closed_mailbox_starts_no_job_put_later() -> None:
    mailbox, ran = KeyedMailbox(limit=1), []

    async def job() -> None:
        ran.append("late")

    await mailbox.close()
    mailbox.put("a", job)
    async with asyncio.timeout(5):
        await mailbox.wait_idle()
    assert ran == [] and len(mailbox) == 0


async def test_a_job_put_while_the_mailbox_closes_is_dropped_without_an_error() -> None:
    # An ingest under way puts a job of a new key while `close` waits for the running
    # ones: its task failed with a `KeyError` nobody retrieved.
    mailbox, ran, errors = KeyedMailbox(limit=2), [], []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    started = asyncio.Event()

    async def running() -> None:
        started.set()
        await asyncio.sleep(10)

    async def late() -> None:
        ran.append("late")

    try:
        mailbox.put("a", running)
        await started.wait()
        [task] = mailbox._tasks
        closing = asyncio.create_task(mailbox.close())
        await asyncio.sleep(0)  # `close` has cancelled "a" and waits for it
        # Put in the step after the one that wakes `close`, as an ingest's can be: its
        # task's first step comes after `close` cleared the queues.
        task.add_done_callback(lambda _task: mailbox.put("b", late))
        await closing
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()  # a task's unretrieved exception is reported when it is collected
        assert ran == [] and errors == [] and len(mailbox) == 0
    finally:
        loop.set_exception_handler(None)


async def test_a_drain_asked_to_finish_runs_every_delivery_taken_first(
    journal: Journal, fake: FakeGitHub
) -> None:
    # `ghbot stop`: no shard takes over, so what was taken runs here first.
    shard = commenter_shard(journal, fake, Commenter, pace_writes=0.2)
    await shard.start()
    taken = [_opened(Commenter, n, f"d{n}") for n in (1, 2, 3)]
    assert await shard.ingest(batch(*taken)) == ["accepted"] * 3
    async with asyncio.timeout(10):
        assert await shard.drain(finish=True) == 0
    await shard.close()
    assert len(fake.requests_to(COMMENTS, "POST")) == 3
    assert await _completed(journal) == ["d1", "d2", "d3"]


async def test_a_drain_asked_to_finish_runs_what_recovery_activates_after_it_began(
    journal: Journal, fake: FakeGitHub
) -> None:
    # `ghbot stop` while a restarted shard is still going through its streams: an
    # installation recovery activates after the drain began runs what it took too.
    first = commenter_shard(journal, fake, Commenter, pace_writes=0.2)
    await first.start()
    taken = [_opened(Commenter, n, f"d{n}") for n in (1, 2, 3)]
    assert await first.ingest(batch(*taken)) == ["accepted"] * 3
    assert await first.drain() >= 1  # left pending, for the next start
    await first.close()
    second = commenter_shard(journal, fake, Commenter, pace_writes=None)
    await second.open()  # recovery starts in the background, after the drain begins
    async with asyncio.timeout(10):
        assert await second.drain(finish=True) == 0
    await second.close()
    assert len(fake.requests_to(COMMENTS, "POST")) == 3
    assert await _completed(journal) == ["d1", "d2", "d3"]


class FanOut(InstallationActor):
    """Wait for `gate` (its own code), then write twice from tasks of its own."""

    gate: asyncio.Event = asyncio.Event()
    at_gate: asyncio.Event = asyncio.Event()

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        type(self).at_gate.set()
        await type(self).gate.wait()
        async with asyncio.TaskGroup() as group:
            for text in ("one", "two"):
                group.create_task(self.github.request("POST", COMMENTS, json={"body": text}))


async def test_a_handler_whose_own_tasks_call_github_is_not_stopped_by_them(
    journal: Journal, fake: FakeGitHub
) -> None:
    FanOut.gate, FanOut.at_gate = asyncio.Event(), asyncio.Event()
    shard = commenter_shard(journal, fake, FanOut, pace_writes=0.3)
    await shard.start()
    assert await shard.ingest(batch(_opened(FanOut, 1, "d1"))) == ["accepted"]
    await FanOut.at_gate.wait()
    draining = asyncio.create_task(shard.drain())  # it runs its own code: not stopped
    await asyncio.sleep(0.05)
    FanOut.gate.set()
    async with asyncio.timeout(10):
        # Its tasks' calls are not followed: stopped there, a write would be lost
        # while the handler, unaware, returned as if done.
        assert await draining == 0
    await shard.close()
    assert len(fake.requests_to(COMMENTS, "POST")) == 2
    assert await _completed(journal) == ["d1"]
    assert await _successor_runs_the_rest(journal, fake, FanOut) == 0


async def test_a_paused_installation_is_handed_over_with_its_pause(
    journal: Journal, fake: FakeGitHub
) -> None:
    # A secondary limit asks for 2 s; the client does not wait that long in-line, so
    # the runtime waits between attempts. The drain does not wait the pause out: it
    # journals it (`ClientHeld`), and the successor's client waits the rest of it.
    fake.faults.add(r"/comments$", "secondary", retry_after=2, count=1)
    shard = commenter_shard(journal, fake, Commenter, pace_writes=None, max_rate_limit_wait=0.5)
    await shard.start()
    assert await shard.ingest(batch(_opened(Commenter, 1, "d1"))) == ["accepted"]
    await until(lambda: len(fake.requests_to(COMMENTS, "POST")) == 1)
    github = shard.hosts[INSTALLATION].bot.github
    await until(lambda: github.paused)
    paused_until = github.holds().paused_until

    async with asyncio.timeout(10):
        assert await shard.drain() == 1
    assert github.paused  # it did not wait the pause out
    await shard.close()
    [held] = await commenter_records(journal, ClientHeld)
    assert (held.writes_after, held.paused_until) == (0.0, paused_until)

    successor = commenter_shard(journal, fake, Commenter, pace_writes=None)
    try:
        assert await successor.start() == 1
        assert successor.hosts[INSTALLATION].bot.github.paused  # it took the pause over
        await successor.wait_idle()
    finally:
        await successor.close()
    assert time.time() >= paused_until  # its comment went once the pause had ended
    assert len(fake.requests_to(COMMENTS, "POST")) == 2  # the refused one, then the comment
    assert await _completed(journal) == ["d1"]


async def test_an_installation_being_read_again_is_handed_over_with_its_pause(
    journal: Journal, fake: FakeGitHub
) -> None:
    # An append of the installation failed while a delivery of it waits out a pause:
    # it is to be read again once idle. The drain makes it idle; the host that holds
    # the pause must stay for the hand-over, not be swapped for a fresh one (which
    # knew no pause, so none was journaled).
    fake.faults.add(r"/comments$", "secondary", retry_after=2, count=1)
    faulty = FaultyJournal(journal)
    shard = commenter_shard(faulty, fake, Commenter, pace_writes=None, max_rate_limit_wait=0.5)
    await shard.start()
    assert await shard.ingest(batch(_opened(Commenter, 1, "d1"))) == ["accepted"]
    github = shard.hosts[INSTALLATION].bot.github
    await until(lambda: github.paused)
    paused_until = github.holds().paused_until
    faulty.fail_appends(1)
    with pytest.raises(JournalUnavailable):  # the ingress answers 503
        await shard.ingest(batch(_opened(Commenter, 2, "d2")))
    assert INSTALLATION in shard._reactivating
    async with asyncio.timeout(10):
        left = await shard.drain()
    assert shard.hosts[INSTALLATION].bot.github is github
    assert github.paused  # it did not wait the pause out
    await shard.close()
    [held] = await commenter_records(journal, ClientHeld)
    assert held.paused_until == paused_until
    assert left == 1  # d1, for the successor


async def test_an_installation_read_again_as_the_drain_begins_is_handed_over_with_its_turn(
    journal: Journal, fake: FakeGitHub
) -> None:
    # An append of the installation failed: its host, idle, is dropped to be read again
    # (`_reload_later`), and the read is under way when the drain begins. The host read
    # takes the dropped one's client, and the drain waits for it to journal that
    # client's turn: a write a minute, the last one a moment ago.
    held_reads = HeldReads(journal)
    shard = commenter_shard(held_reads, fake, Commenter, pace_writes=60.0)
    await shard.start()
    assert await shard.ingest(batch(_opened(Commenter, 1, "d1"))) == ["accepted"]
    await shard.wait_idle()
    writes_after = shard.hosts[INSTALLATION].bot.github.holds().writes_after
    assert writes_after > time.time() + 50
    hold = held_reads.hold = asyncio.Event()
    held_reads.fail_appends(1)
    with pytest.raises(JournalUnavailable):  # the ingress answers 503
        await shard.ingest(batch(_opened(Commenter, 2, "d2")))
    async with asyncio.timeout(10):
        await held_reads.entered.wait()  # the host is dropped, the read held
    assert INSTALLATION not in shard.hosts
    drain = asyncio.create_task(shard.drain())
    await asyncio.sleep(0.1)
    hold.set()
    async with asyncio.timeout(10):
        assert await drain == 0
    await shard.close()
    [held] = await commenter_records(journal, ClientHeld)
    assert held.writes_after == writes_after
    assert len(fake.requests_to(COMMENTS, "POST")) == 1


async def _reading_again_after_a_failed_read(
    journal: Journal, fake: FakeGitHub
) -> tuple[ShardCore, float]:
    """A shard (a write a minute) whose installation wrote once, then had an append
    fail and the read of its reading again fail too: that reading now waits out its
    backoff (15 to 30 s here), the host dropped and its client kept. Return the shard
    and when that client's next write may go."""
    faulty = FaultyJournal(journal)
    shard = commenter_shard(faulty, fake, Commenter, pace_writes=60.0)
    await shard.start()
    assert await shard.ingest(batch(_opened(Commenter, 1, "d1"))) == ["accepted"]
    await shard.wait_idle()
    writes_after: float = shard.hosts[INSTALLATION].bot.github.holds().writes_after
    faulty.fail_appends(1)
    faulty.fail_reads(1)
    with pytest.raises(JournalUnavailable):
        await shard.ingest(batch(_opened(Commenter, 2, "d2")))
    await until(lambda: faulty.reads_failed == 1 and not shard._activating)
    return shard, writes_after


async def test_an_installation_whose_reading_again_failed_is_read_for_the_hand_over(
    journal: Journal, fake: FakeGitHub
) -> None:
    # As above, but the read fails too: the reading again waits to try once more (its
    # backoff: 15 to 30 s here) when the drain begins. The drain reads the installation
    # itself to hand over the kept client's turn.
    shard, writes_after = await _reading_again_after_a_failed_read(journal, fake)
    assert INSTALLATION not in shard.hosts
    async with asyncio.timeout(10):
        assert await shard.drain() == 0
    await shard.close()
    [held] = await commenter_records(journal, ClientHeld)
    assert held.writes_after == writes_after


async def test_a_finishing_drain_does_not_wait_out_a_reading_again_s_backoff(
    journal: Journal, fake: FakeGitHub
) -> None:
    # `ghbot stop` (`finish`) waits for every delivery taken; it waited too for an
    # installation's reading again after a failed append and a failed read, through its
    # backoff (15 to 30 s here; up to 30 s in production), past the drain's time. It
    # stops that reading, and hands over the kept client's turn.
    shard, writes_after = await _reading_again_after_a_failed_read(journal, fake)
    assert INSTALLATION in shard._reactivating  # waiting out its backoff
    async with asyncio.timeout(5):
        assert await shard.drain(finish=True) == 0
    assert not shard._reactivating
    await shard.close()
    [held] = await commenter_records(journal, ClientHeld)
    assert held.writes_after == writes_after


async def test_a_closed_host_runs_no_delivery_handed_to_it_later(
    journal: Journal, fake: FakeGitHub
) -> None:
    # The shard's `close()` after a drain cut short closes its hosts while an ingest
    # under way may still hand one a delivery: its handler ran after the close (after
    # what the clients hold was handed over), and was cut at the process's exit.
    shard = commenter_shard(journal, fake, Commenter, pace_writes=None)
    await shard.start()
    host = await shard.host(INSTALLATION)
    await host.close()
    host.accept(_opened(Commenter, 1, "d1").received, 1)
    await asyncio.sleep(0.2)
    assert host.busy == 0
    assert fake.requests_to(COMMENTS, "POST") == []
    await shard.close()


async def test_an_installation_with_its_breaker_open_is_handed_over_with_it(
    journal: Journal, fake: FakeGitHub
) -> None:
    # A 502 opens the breaker (one failure is enough here) for 5 s; the delivery
    # waits for it without spending an attempt. The drain does not wait: the
    # successor's breaker starts open until the same time.
    fake.faults.add(r"/comments$", "server_error", count=1)

    def breaker() -> CircuitBreaker:
        return CircuitBreaker(min_calls=1, open_for=5.0)

    shard = commenter_shard(journal, fake, Commenter, pace_writes=None, breaker=breaker)
    await shard.start()
    assert await shard.ingest(batch(_opened(Commenter, 1, "d1"))) == ["accepted"]
    github = shard.hosts[INSTALLATION].bot.github
    await until(lambda: github.holds().breaker_until > 0)
    breaker_until = github.holds().breaker_until
    async with asyncio.timeout(10):
        assert await shard.drain() == 1
    assert time.time() < breaker_until  # it did not wait for the breaker to close
    await shard.close()
    [held] = await commenter_records(journal, ClientHeld)
    assert held.breaker_until == breaker_until

    successor = commenter_shard(journal, fake, Commenter, pace_writes=None, breaker=breaker)
    try:
        assert await successor.start() == 1
        taken = successor.hosts[INSTALLATION].bot.github.breaker
        assert taken is not None
        assert taken.retry_after(time.time()) > 2  # open, until the same time
        await successor.wait_idle()
    finally:
        await successor.close()
    assert time.time() >= breaker_until
    assert len(fake.requests_to(COMMENTS, "POST")) == 2  # the 502, then the comment
    assert await _completed(journal) == ["d1"]
    assert not any(isinstance(e, HandlerFailed) for e in await commenter_outcomes(journal))


async def test_a_draining_shard_does_not_take_a_dead_letter_replay(
    journal: Journal, fake: FakeGitHub
) -> None:
    shard = commenter_shard(journal, fake, AlwaysFails, pace_writes=None)
    await shard.start()
    assert await shard.ingest(batch(_opened(AlwaysFails, 1, "d1"))) == ["accepted"]
    await shard.wait_idle()
    assert len(await shard.dead_letters()) == 1
    await shard.drain()
    # Queued into a stopped host, it would be dropped after being reported queued.
    with pytest.raises(ShardDraining, match=r"draining .*: delivery d1 was not replayed"):
        await shard.replay(INSTALLATION, "d1", None)
    assert await shard.replay(INSTALLATION, "d1", "no-such-handler") == 0  # none to replay
    assert len(await shard.dead_letters()) == 1  # still there, to replay on the successor
    await shard.close()


class Swallows(InstallationActor):
    """Comment, and go on as if done when the comment is cancelled (a bad habit)."""

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.github.request("POST", COMMENTS, json={"body": "hi"})


async def test_a_handler_that_swallows_the_stop_is_left_pending_all_the_same(
    journal: Journal, fake: FakeGitHub
) -> None:
    shard = commenter_shard(journal, fake, Swallows, pace_writes=60.0)
    await shard.start()
    taken = [_opened(Swallows, n, f"d{n}") for n in (1, 2)]
    assert await shard.ingest(batch(*taken)) == ["accepted"] * 2
    await until(lambda: len(fake.requests_to(COMMENTS, "POST")) == 1)
    async with asyncio.timeout(10):
        assert await shard.drain() == 1  # not journaled as done: its comment was not sent
    await shard.close()
    assert await _successor_runs_the_rest(journal, fake, Swallows) == 1
    assert len(fake.requests_to(COMMENTS, "POST")) == 2


class Spawns(InstallationActor):
    """Start a task that reads, then writes; write itself meanwhile (a fan-out)."""

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        async def child() -> None:
            await self.github.request("GET", f"/repos/{COMMENTER_REPO}")
            await self.github.request("POST", COMMENTS, json={"body": "from the task"})

        task = asyncio.create_task(child())
        await asyncio.sleep(0)  # the task sends its read
        await self.github.request("POST", COMMENTS, json={"body": "from the handler"})
        await task


async def test_a_handler_whose_own_task_called_github_is_not_handed_over(
    journal: Journal, fake: FakeGitHub
) -> None:
    # d0 writes first, so d1's own write waits its turn while d1's task reads (slowly).
    fake.faults.add(rf"^/repos/{COMMENTER_REPO}$", "slow", None, method="GET", delay=0.5)
    shard = commenter_shard(journal, fake, Spawns, pace_writes=1.0)
    await shard.start()
    assert await shard.ingest(batch(_opened(Spawns, 9, "d0"))) == ["accepted"]
    await until(lambda: len(fake.requests_to(COMMENTS, "POST")) == 1)
    assert await shard.ingest(batch(_opened(Spawns, 1, "d1"))) == ["accepted"]
    await until(lambda: len(fake.requests_to(f"/repos/{COMMENTER_REPO}", "GET")) == 2)

    async with asyncio.timeout(10):
        # Handed over, d1 would leave its task running: its write, then d1 run again
        # by the successor, task and all: the task's comment twice.
        assert await shard.drain() == 0
    await shard.close()
    assert await _successor_runs_the_rest(journal, fake, Spawns) == 0
    bodies = [r.json["body"] for r in fake.requests_to(COMMENTS, "POST")]
    assert sorted(bodies) == ["from the handler"] * 2 + ["from the task"] * 2  # d0's, d1's


async def test_a_replay_queued_before_the_drain_is_reported_as_not_run(
    journal: Journal, fake: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    shard = commenter_shard(journal, fake, AlwaysFails, pace_writes=None)
    await shard.start()
    assert await shard.ingest(batch(_opened(AlwaysFails, 1, "d1"))) == ["accepted"]
    await shard.wait_idle()
    host = shard.hosts[INSTALLATION]
    # Queued behind a job of the same key that runs until the drain has begun.
    release = asyncio.Event()

    async def hold() -> None:
        await release.wait()

    host._put(_opened(AlwaysFails, 1, "x").received.key, hold)
    assert await shard.replay(INSTALLATION, "d1", None) == 1
    draining = asyncio.create_task(shard.drain())
    await asyncio.sleep(0)
    release.set()
    async with asyncio.timeout(10):
        await draining
    assert "the replay of opened of d1 queued before the drain will not run" in caplog.text
    assert len(await shard.dead_letters()) == 1  # still dead-lettered: replay it later
    await shard.close()


class CurrentShardTurns:
    """A `TurnSource` for tests: the turn from the shard that holds the installation
    now (`current`), asked again while one drains, as `ShardTurns` does on Ray."""

    current: ClassVar[ShardCore | None] = None

    async def __call__(self, installation_id: int) -> None:
        while True:
            assert self.current is not None
            try:
                await self.current.grant_write(installation_id)
                return
            except ShardDraining:
                await asyncio.sleep(0.02)


class Leases(InstallationActor):
    """Issue 1: lease two writes and hand the lease to a task that writes them, a
    moment apart, without waiting for it (as a Ray task would get it: pickled). Any
    other issue: comment."""

    tasks: ClassVar[list[asyncio.Task[None]]] = []
    first_sent: ClassVar[asyncio.Event] = asyncio.Event()
    go_on: ClassVar[asyncio.Event] = asyncio.Event()

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        if event.payload.issue.number != 1:
            await self.github.request("POST", COMMENTS, json={"body": "own"})
            return
        async with self.quota.lease(4, writes=2) as lease:
            sent = pickle.loads(pickle.dumps(lease))  # noqa: S301 - our own bytes
            type(self).tasks.append(asyncio.create_task(self._task(sent)))
            lease.report(2)

    @classmethod
    async def _task(cls, lease: QuotaLease) -> None:
        client = lease.client()
        await client.request("POST", COMMENTS, json={"body": "task one"})
        cls.first_sent.set()
        await cls.go_on.wait()
        await client.request("POST", COMMENTS, json={"body": "task two"})


async def test_a_turn_given_to_a_lease_s_task_is_handed_over_and_its_next_asked_of_the_successor(
    journal: Journal, fake: FakeGitHub
) -> None:
    # The installation runs nothing when the drain comes, but its lane gave a task a
    # turn a moment ago: a successor's new client, not knowing it, would write too
    # soon after it (GitHub's secondary limit; the fake keeps its spacing rule). The
    # task's next write asks for its turn again, and gets it from the successor.
    Leases.tasks, Leases.first_sent, Leases.go_on = [], asyncio.Event(), asyncio.Event()
    fake.write_interval = 1.0
    turns = CurrentShardTurns()
    shard = commenter_shard(journal, fake, Leases, pace_writes=1.0, write_turns=turns)
    CurrentShardTurns.current = shard
    await shard.start()
    assert await shard.ingest(batch(_opened(Leases, 1, "d1"))) == ["accepted"]
    await Leases.first_sent.wait()
    await shard.wait_idle()
    github = shard.hosts[INSTALLATION].bot.github
    async with asyncio.timeout(10):
        assert await shard.drain() == 0
    await shard.close()
    [held] = await commenter_records(journal, ClientHeld)
    assert held.writes_after == github.holds().writes_after > time.time()
    with pytest.raises(ShardDraining):  # a turn now would not reach the successor
        await shard.grant_write(INSTALLATION)

    successor = commenter_shard(journal, fake, Leases, pace_writes=1.0, write_turns=turns)
    CurrentShardTurns.current = successor
    try:
        await successor.start()
        assert await successor.ingest(batch(_opened(Leases, 2, "d2"))) == ["accepted"]
        Leases.go_on.set()
        await successor.wait_idle()
        await asyncio.gather(*Leases.tasks)
    finally:
        await successor.close()
    bodies = [r.json["body"] for r in fake.requests_to(COMMENTS, "POST")]
    assert bodies[0] == "task one" and sorted(bodies[1:]) == ["own", "task two"]
    assert fake.secondary_limits == 0
    assert await _completed(journal) == ["d1", "d2"]


async def _held_then_taken_over(journal: Journal, fake: FakeGitHub, held: ClientHeld) -> Any:
    """Journal `held` for the installation; return its client in a shard that takes it."""
    await journal.append(
        stream_name(INSTALLATION), [runtime_event(held)], shard=INSTALLATION % VSHARDS
    )
    shard = commenter_shard(journal, fake, Commenter, pace_writes=1.0)
    await shard.start()
    try:
        return (await shard.host(INSTALLATION)).bot.github
    finally:
        await shard.close()


async def test_a_held_wait_is_taken_over_for_an_hour_at_most(
    journal: Journal, fake: FakeGitHub
) -> None:
    now = time.time()
    far = now + 10 * 86400
    github = await _held_then_taken_over(
        journal, fake, ClientHeld(writes_after=far, paused_until=far, at=now)
    )
    writes_after, paused_until, _ = github.holds()
    assert now + 3000 < paused_until <= time.time() + MAX_HELD
    assert now + 3000 < writes_after <= time.time() + MAX_HELD


async def test_a_held_wait_written_by_a_clock_far_ahead_is_not_taken_over(
    journal: Journal, fake: FakeGitHub
) -> None:
    # Taken over, it would stop the installation at each activation until this
    # clock reached the other's.
    ahead = time.time() + 86400
    github = await _held_then_taken_over(
        journal, fake, ClientHeld(writes_after=ahead + 5, paused_until=ahead + 5, at=ahead)
    )
    assert github.holds() == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("ahead", [MAX_SKEW - 5, MAX_SKEW + 5], ids=["within", "past"])
async def test_a_held_wait_is_taken_over_up_to_five_minutes_ahead_of_this_clock(
    journal: Journal, fake: FakeGitHub, caplog: pytest.LogCaptureFixture, ahead: float
) -> None:
    assert MAX_SKEW == 300  # the operations guide's "more than 5 minutes ahead"
    at = time.time() + ahead
    github = await _held_then_taken_over(
        journal, fake, ClientHeld(writes_after=at + 5, paused_until=at + 5, at=at)
    )
    warned = "not taken over (are the nodes' clocks in sync?)" in caplog.text
    if ahead < MAX_SKEW:
        assert github.holds()[:2] == (at + 5, at + 5) and not warned
    else:
        assert github.holds() == (0.0, 0.0, 0.0) and warned


async def test_a_drain_cut_short_hands_over_once_its_runs_are_stopped(
    journal: Journal, fake: FakeGitHub
) -> None:
    # The handler wrote, and waits a minute for its second write: the drain cannot
    # end in time; what still runs is stopped, and the lane's turn handed over.
    shard = commenter_shard(journal, fake, TwoComments, pace_writes=60.0)
    await shard.start()
    assert await shard.ingest(batch(_opened(TwoComments, 1, "d1"))) == ["accepted"]
    await until(lambda: len(fake.requests_to(COMMENTS, "POST")) == 1)
    github = shard.hosts[INSTALLATION].bot.github
    writes_after = github.holds().writes_after
    with pytest.raises(TimeoutError):  # as the Ray actor's `drain` runs it
        async with asyncio.timeout(0.3):
            await shard.drain()
    assert not await commenter_records(journal, ClientHeld)
    await shard.close()
    [held] = await commenter_records(journal, ClientHeld)
    assert held.writes_after == pytest.approx(writes_after, abs=0.5)
    assert held.writes_after > time.time() + 50


class _SlowToHandOver:
    """A host whose hand-over never ends (its journal read or write hangs)."""

    busy = 0
    cancelled = False

    async def hand_over_client(self) -> bool:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return True

    async def close(self) -> None:
        return None


async def test_one_slow_hand_over_costs_the_others_nothing(
    journal: Journal, fake: FakeGitHub
) -> None:
    # The hand-over has one deadline; an installation whose hand-over outlasts it is
    # cut at it, and the others, journaled by then, count as handed over.
    shard = commenter_shard(journal, fake, Commenter, pace_writes=60.0)
    await shard.start()
    assert await shard.ingest(batch(_opened(Commenter, 1, "d1"))) == ["accepted"]
    await shard.wait_idle()
    writes_after = shard.hosts[INSTALLATION].bot.github.holds().writes_after
    slow = _SlowToHandOver()
    shard.hosts[INSTALLATION + VSHARDS] = slow  # type: ignore[assignment]
    async with asyncio.timeout(5):
        assert await shard._hand_over_clients(within=0.3) == 1
    assert slow.cancelled
    [held] = await commenter_records(journal, ClientHeld)
    assert held.writes_after == writes_after
    del shard.hosts[INSTALLATION + VSHARDS]
    await shard.close()
