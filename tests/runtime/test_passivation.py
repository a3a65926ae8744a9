"""Passivation never forgets what GitHub asked of an installation: write spacing, pauses;
nor does reading an installation again from the journal."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any, ClassVar

import msgspec
import pytest

from actors.bot import InstallationActor, on
from actors.shard import ShardCore
from actors.wire import Status
from ghbot.client import ClientOptions, GitHub
from ghbot.errors import JournalUnavailable
from ghbot.events import Event
from ghbot.journal import FaultyJournal, Journal
from ghbot.retry import RetryPolicy
from ghbot.testing import FakeClock, FakeGitHub
from tests.runtime.conftest import COMMENTER_INSTALLATION as INSTALLATION
from tests.runtime.conftest import (
    COMMENTER_REPO,
    VSHARDS,
    Commenter,
    Stuck,
    batch,
    inbound,
    payload,
)


async def _shard_after_one_write(
    journal: Journal,
    fake: FakeGitHub,
    clock: FakeClock,
    bot: type[InstallationActor] = Commenter,
    **options: Any,
) -> ShardCore:
    opts = ClientOptions(base_url=fake.url, clock=clock, sleep=clock.sleep, **options)
    token = fake.create_token(INSTALLATION)
    shard = ShardCore(
        range(VSHARDS),
        VSHARDS,
        journal,
        bot,
        github_for=lambda _id: GitHub(token=token, options=opts),
        clock=clock,
    )
    await shard.start()
    body = payload("issues.opened", installation=INSTALLATION)
    await shard.ingest(batch(inbound(bot, "issues", body)))
    await shard.wait_idle()
    return shard


async def test_a_host_that_just_wrote_is_kept_until_its_write_interval_passed(
    journal: Journal, fake: FakeGitHub
) -> None:
    clock = FakeClock()
    shard = await _shard_after_one_write(journal, fake, clock, pace_writes=5.0)
    try:
        assert shard.passivate(force_idle=True) == 0  # its next write must still wait
        clock.advance(5.1)
        assert shard.passivate(force_idle=True) == 1
    finally:
        await shard.close()


async def test_a_paused_installation_is_not_passivated_during_its_pause(
    journal: Journal, fake: FakeGitHub
) -> None:
    clock = FakeClock()
    shard = await _shard_after_one_write(journal, fake, clock, pace_writes=None)
    try:
        assert shard.hosts[INSTALLATION].bot.github.settled
        # What a secondary-limit answer does to the installation's client.
        shard.hosts[INSTALLATION].bot.github._state.paused_until = clock() + 60
        assert shard.passivate(force_idle=True) == 0
        clock.advance(61)
        assert shard.passivate(force_idle=True) == 1
    finally:
        await shard.close()


async def test_an_installation_activated_over_the_cap_is_kept_for_those_waiting_for_it(
    journal: Journal,
) -> None:
    """With the shard over `max_active` and the other installation busy, the one just
    activated is idle, the first to drop: callers waiting for its activation (a batch
    journaled meanwhile) got a dropped host, or, looking again, each activated it once
    more."""
    Stuck.release = asyncio.Event()
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Stuck, max_active=1)
    await shard.start()
    try:
        body = payload("issues.opened", installation=41)
        await shard.ingest(batch(inbound(Stuck, "issues", body)))  # 41 busy from now
        activations = shard.counters["activations"]
        first, second = await asyncio.wait_for(
            asyncio.gather(shard.host(42), shard.host(42)), timeout=5
        )
        assert first is second is shard.hosts[42]
        assert shard.counters["activations"] == activations + 1
    finally:
        Stuck.release.set()
        await shard.close()


async def test_an_installation_read_again_keeps_its_client(
    journal: Journal, fake: FakeGitHub
) -> None:
    """An append failed: the installation is read again from the journal, its host
    dropped once idle (`_reload_later`). The host read after it takes the dropped one's
    client: a new one would not know the last write was a moment ago, and would write
    at once."""
    clock = FakeClock()
    faulty = FaultyJournal(journal)
    shard = await _shard_after_one_write(faulty, fake, clock, pace_writes=5.0)
    try:
        github = shard.hosts[INSTALLATION].bot.github
        body = payload("issues.opened", installation=INSTALLATION)
        second = inbound(Commenter, "issues", body)
        faulty.fail_appends(1)
        with pytest.raises(JournalUnavailable):  # the ingress answers 503
            await shard.ingest(batch(second))
        async with asyncio.timeout(10):
            await shard.wait_idle()  # it is read again
        assert shard.counters["activations"] == 2
        assert shard.hosts[INSTALLATION].bot.github is github
        slept = len(clock.sleeps)
        assert await shard.ingest(batch(second)) == ["accepted"]  # GitHub's redelivery
        async with asyncio.timeout(10):
            await shard.wait_idle()
        assert sum(clock.sleeps[slept:]) == pytest.approx(5.0)  # its turn in the lane
        assert len([r for r in fake.requests if r.method == "POST"]) == 2
    finally:
        await shard.close()


class Noted(msgspec.Struct):
    number: int


class NotingCommenter(InstallationActor):
    """Comment, and note the issue (a domain event); while `broken`, its state does
    not restore from the journal."""

    domain_events = (Noted,)
    broken: ClassVar[bool] = False

    def evolve(self, state: Any, event: msgspec.Struct) -> Any:
        if NotingCommenter.broken:
            raise RuntimeError("this evolve cannot read what it wrote")
        return state

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        await self.github.request(
            "POST", f"/repos/{COMMENTER_REPO}/issues/1/comments", json={"body": "thanks"}
        )
        self.emit(Noted(number=event.payload.issue.number))


async def test_a_client_kept_for_an_installation_read_again_outlives_a_failed_restore(
    journal: Journal, fake: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    """The installation's state does not restore the first time it is read again: the
    dropped host's client stays kept for the host read after that."""
    clock = FakeClock()
    faulty = FaultyJournal(journal)
    shard = await _shard_after_one_write(faulty, fake, clock, NotingCommenter, pace_writes=5.0)
    try:
        github = shard.hosts[INSTALLATION].bot.github
        body = payload("issues.opened", installation=INSTALLATION)
        second = inbound(NotingCommenter, "issues", body)
        NotingCommenter.broken = True
        faulty.fail_appends(1)
        with pytest.raises(JournalUnavailable):
            await shard.ingest(batch(second))
        if (reading := shard._reactivating.get(INSTALLATION)) is not None:
            await asyncio.wait([reading], timeout=10)  # it fails to restore
            assert isinstance(reading.exception(), RuntimeError)
            await asyncio.sleep(0)
            assert "not read again (RuntimeError: this evolve cannot read" in caplog.text
        assert INSTALLATION not in shard.hosts
        assert shard._clients_kept[INSTALLATION] is github
        NotingCommenter.broken = False
        slept = len(clock.sleeps)
        assert await shard.ingest(batch(second)) == ["accepted"]  # GitHub's redelivery
        async with asyncio.timeout(10):
            await shard.wait_idle()
        assert shard.hosts[INSTALLATION].bot.github is github
        assert sum(clock.sleeps[slept:]) == pytest.approx(5.0)  # its turn in the lane
    finally:
        NotingCommenter.broken = False
        await shard.close()


class Add(msgspec.Struct):
    n: int


class Adder(InstallationActor):
    """Adds what it emits; `evolve` raises while `failing` is above 0 (counted down)
    or, for the installations in `broken`, always; `gate` holds an installation's
    handler in `held` until set."""

    domain_events = (Add,)
    state_type = int
    snapshot_every = 1
    failing: ClassVar[int] = 0
    broken: ClassVar[set[int]] = set()
    held: ClassVar[set[int]] = set()
    gate: ClassVar[asyncio.Event | None] = None
    seen: ClassVar[list[str]] = []

    def initial_state(self) -> int:
        return 0

    def evolve(self, state: int, event: msgspec.Struct) -> int:
        if self.installation_id in Adder.broken:
            raise RuntimeError("this evolve cannot read what it wrote")
        if Adder.failing > 0:
            Adder.failing -= 1
            raise RuntimeError("a passing fault")
        assert isinstance(event, Add)
        return state + event.n

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        if self.installation_id in Adder.held and Adder.gate is not None:
            await Adder.gate.wait()
        Adder.seen.append(event.delivery_id or "")
        self.emit(Add(n=1))
        self.emit(Add(n=10))


class UnsavedAdder(Adder):
    """An `Adder` that never snapshots: an activation folds every stored event."""

    snapshot_every = 1_000_000


def _adder_shard(journal: Journal, bot: type[Adder] = Adder) -> ShardCore:
    return ShardCore(
        range(VSHARDS), VSHARDS, journal, bot, sleep=_no_wait, retry=RetryPolicy(base=0, cap=0)
    )


async def _no_wait(_: float) -> None:
    await asyncio.sleep(0)


async def test_a_state_evolve_failed_to_fold_is_never_saved_as_a_snapshot(
    journal: Journal,
) -> None:
    """The events were journaled, `evolve` raised on the first: the host's state lacks
    both. Its snapshot used to be saved as the fold to that seq, so every later
    activation started from it and never replayed them."""
    Adder.failing, Adder.broken, Adder.held = 1, set(), set()
    shard = _adder_shard(journal)
    await shard.start()
    try:
        delivery = inbound(Adder, "issues", payload("issues.opened", installation=5))
        assert await shard.ingest(batch(delivery)) == [Status.ACCEPTED]
        await shard.wait_idle()
        assert not shard.hosts[5].exact
    finally:
        await shard.close()
    again = _adder_shard(journal)
    await again.start()
    try:
        assert (await again.host(5)).bot.state == 11  # the journal's fold
    finally:
        await again.close()


async def test_a_host_whose_evolve_raised_starts_no_snapshot_that_would_raise_again(
    journal: Journal,
) -> None:
    """Each later write started a snapshot whose own fold raised the same way, its
    exception never retrieved ("Task exception was never retrieved", with the journal's
    data in the traceback), re-reading more of the stream each time."""
    Adder.failing, Adder.broken, Adder.held = 0, set(), set()
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    shard = _adder_shard(journal)
    await shard.start()
    try:
        first = inbound(Adder, "issues", payload("issues.opened", installation=6))
        assert await shard.ingest(batch(first)) == [Status.ACCEPTED]
        await shard.wait_idle()
        Adder.broken = {6}  # from here on its `evolve` raises, live and in a fold
        for _ in range(3):
            later = inbound(Adder, "issues", payload("issues.opened", installation=6))
            assert await shard.ingest(batch(later)) == [Status.ACCEPTED]
            await shard.wait_idle()
        for _ in range(3):
            await asyncio.sleep(0)
        assert shard.hosts[6].diverged and not shard._snapshotting
    finally:
        await shard.close()
        Adder.broken = set()
        gc.collect()
        loop.set_exception_handler(None)
    assert errors == []


async def test_an_installation_that_will_not_activate_holds_up_no_other(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    """A's state no longer restores (its `evolve` raises on a stored event). A batch of
    A's and B's deliveries, both journaled and answered: B's used to be left unrun
    when A's activation raised, and a restart's recovery stopped at A."""
    Adder.failing, Adder.broken, Adder.held, Adder.seen = 0, set(), set(), []
    a, b = 5, 6
    shard = _adder_shard(journal, UnsavedAdder)
    await shard.start()
    try:
        first = inbound(UnsavedAdder, "issues", payload("issues.opened", installation=a))
        await shard.ingest(batch(first))
        await shard.wait_idle()
        shard.passivate(force_idle=True)
        assert a not in shard.hosts
        Adder.broken.add(a)
        mine = inbound(UnsavedAdder, "issues", payload("issues.opened", installation=a))
        theirs = inbound(UnsavedAdder, "issues", payload("issues.opened", installation=b))
        answered: list[list[Status]] = []
        with caplog.at_level(logging.ERROR, logger="ghbot.shard"):
            statuses = await shard.ingest(batch(mine, theirs), answer=answered.append)
        assert statuses == answered[0] == [Status.ACCEPTED, Status.ACCEPTED]
        await shard.wait_idle()
        assert theirs.received.delivery_id in Adder.seen
        assert mine.received.delivery_id not in Adder.seen  # pending, for A's next try
        assert f"installation {a} could not be activated (RuntimeError)" in caplog.text
        # B's next delivery is held in its handler while the shard stops: pending.
        Adder.held, Adder.gate = {b}, asyncio.Event()
        held = inbound(UnsavedAdder, "issues", payload("issues.opened", installation=b))
        await shard.ingest(batch(held))
        await asyncio.sleep(0)
    finally:
        await shard.close()
    Adder.gate.set()
    again = _adder_shard(journal, UnsavedAdder)
    await again.start()  # recovery: A fails again, B's held delivery is resumed
    try:
        await again.wait_idle()
        assert held.received.delivery_id in Adder.seen
        assert mine.received.delivery_id not in Adder.seen
    finally:
        await again.close()
