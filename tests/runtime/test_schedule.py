"""`@every`: scheduled handlers, once per installation and slot, spread, journaled."""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

import pytest

from actors import InstallationActor, every, on
from actors.runtime_events import DeliveryReceived
from actors.schedule import SCHEDULE_EVENT, interval_of, slot_of, tick_of
from actors.testing import BotHarness
from actors.wire import Inbound, encode_batch, vshard_of
from ghbot.errors import JournalUnavailable, UsageError
from ghbot.events import Event
from ghbot.journal import FaultyJournal
from ghbot.models import IssuesOpened, UnknownPayload
from ghbot.testing.clock import FakeClock
from tests.metering import metered

ISSUES = "/repos/Codertocat/Hello-World/issues"


class Sweeper(InstallationActor):
    """Opens a tracking issue every hour; also has a catch-all handler."""

    everything: list[str] = []
    payloads: list[tuple[str | None, object, Any]] = []

    @every("1h")
    async def sweep(self, event: Event) -> None:
        assert event.payload is not None and event.installation_id == self.installation_id
        Sweeper.payloads.append((event.action, event.payload, json.loads(event.raw)))
        await self.github.request("POST", ISSUES, json={"title": "hourly sweep"})

    @on("*")
    async def anything(self, event: Event) -> None:
        Sweeper.everything.append(event.name)


def sweeps(done: object) -> int:
    return len(done.requests_to(ISSUES, "POST"))  # type: ignore[attr-defined]


async def test_a_run_per_installation_and_interval_not_sent_to_catch_alls() -> None:
    Sweeper.everything = []
    async with BotHarness(Sweeper) as bot:
        # Scheduled once it has had a delivery, as after `installation.created`.
        await bot.deliver("installation.created")
        assert sweeps(await bot.advance(3600)) == 1
        assert sweeps(await bot.advance(3600)) == 1
        assert sweeps(await bot.advance(3 * 3600)) == 1  # missed slots are not made up
        assert sweeps(await bot.advance(60)) + sweeps(await bot.advance(60)) <= 1
        assert Sweeper.everything == ["installation"]  # "*" never saw a scheduled run
        assert bot.shard.counters["scheduled"] >= 3


async def test_a_scheduled_run_is_not_timed_as_a_webhook() -> None:
    """`ghbot_webhook_processing_seconds` is a webhook's time to its handlers' end: a
    run of `@every`, which may page through an installation for minutes, was recorded
    there too (as `event="other"`), and pushed the processing alert's p95 up."""
    Sweeper.everything = []
    async with BotHarness(Sweeper) as bot:
        await bot.deliver("installation.created")
        m = metered()
        assert sweeps(await bot.advance(3600)) == 1
        await bot.deliver("issues.opened")
    timed = m.delta("ghbot_webhook_processing_seconds")
    assert timed == {frozenset({("event", "issues")}): 1}


async def test_a_run_s_body_names_its_handler_interval_and_slot() -> None:
    """`event.raw` holds the schedule (the README says so); `event.payload`, a model of
    no GitHub event, has only the handler's name as its action and the installation."""
    Sweeper.payloads = []
    async with BotHarness(Sweeper) as bot:
        await bot.deliver("installation.created")
        installation = bot.installation_id
        await bot.advance(3600)
        slot = slot_of(installation, "sweep", 3600, bot.clock.now)
        [(action, payload, raw)] = Sweeper.payloads
        assert raw == {
            "action": "sweep",
            "installation": {"id": installation},
            "schedule": {"handler": "sweep", "every": 3600.0, "slot": slot},
        }
        assert action == "sweep"
        assert isinstance(payload, UnknownPayload) and payload.action == "sweep"
        assert payload.installation is not None and payload.installation.id == installation


async def test_a_slot_runs_once_even_when_looked_at_twice() -> None:
    async with BotHarness(Sweeper) as bot:
        await bot.deliver("installation.created")
        assert sweeps(await bot.advance(3600)) == 1
        # Forget what was scheduled (a restarted shard, a handover): the journal's
        # GUID per slot still keeps it to one run.
        bot.shard._slots = {key: slot - 1 for key, slot in bot.shard._slots.items()}
        assert await bot.shard.schedule_due() == 0
        assert bot.shard.counters["duplicates"] == 1


async def test_a_replaced_shard_skips_the_slot_that_began_before_its_first_look() -> None:
    """The README: a run due while its shard was being replaced is skipped. A new shard
    (a restart, an upgrade) knows no slot: its first look only notes the current one,
    though the old shard never ran it."""
    async with BotHarness(Sweeper) as bot:
        await bot.deliver("installation.created")
        assert sweeps(await bot.advance(3600)) == 1
        bot.shard._slots = {}  # what a new shard knows
        bot.clock.advance(3600)  # a slot began
        assert await bot.shard.schedule_due() == 0  # the first look: noted, not run
        assert sweeps(await bot.advance(3600)) == 1


async def test_a_run_the_journal_did_not_take_is_asked_for_at_the_next_look() -> None:
    # Its slot was noted before the run was journaled: a journal away for one look
    # lost the run (a day's, for "1d").
    async with BotHarness(Sweeper) as bot:
        await bot.deliver("installation.created")
        await bot.shard.schedule_due()  # notes the slot
        bot.clock.advance(3600)
        faulty = FaultyJournal(bot.shard.appends.journal)
        bot.shard.appends.journal = faulty
        faulty.fail_appends(1)
        with pytest.raises(JournalUnavailable):
            await bot.shard.schedule_due()
        assert sweeps(await bot.advance(0)) == 1  # the same slot, at the next look


async def test_a_webhook_claiming_to_be_a_scheduled_run_runs_nothing() -> None:
    Sweeper.everything = []
    async with BotHarness(Sweeper) as bot:
        forged = {"action": "sweep", "installation": {"id": 1}}
        done = await bot.deliver(SCHEDULE_EVENT, forged)
        assert done.status == "accepted" and done.requests == []
        assert Sweeper.everything == []


class Failing(InstallationActor):
    max_attempts = 2

    @every(60)
    async def tick(self, event: Event) -> None:
        raise RuntimeError("down")


def _just_after_a_boundary(clock: FakeClock, installation: int, handler: str, every: int) -> None:
    """Move `clock` on to between 0.5 and 1.5 s past the next slot boundary."""
    slot = slot_of(installation, handler, every, clock.now)
    step = next(
        t for t in range(every + 1) if slot_of(installation, handler, every, clock.now + t) > slot
    )
    clock.advance(step + 0.5)


async def test_a_failing_run_is_retried_and_dead_lettered_like_a_delivery() -> None:
    async with BotHarness(Failing) as bot:
        # The harness's clock starts at the wall clock's time and a retry's backoff
        # moves it on: start just after a slot boundary, so that the backoff (about a
        # second) cannot carry it past the next one and schedule a run more.
        _just_after_a_boundary(bot.clock, 1, "tick", 60)
        await bot.deliver("installation.created")
        done = await bot.advance(60)
        [dead] = done.dead_letters
        assert (dead["handler"], dead["attempts"], dead["event"]) == ("tick", 2, SCHEDULE_EVENT)
        [again] = (await bot.advance(60)).dead_letters  # only this call's
        assert again["delivery_id"] != dead["delivery_id"]


async def test_a_removed_or_suspended_installation_is_not_scheduled() -> None:
    async with BotHarness(Sweeper) as bot:
        await bot.deliver("installation.created")
        assert sweeps(await bot.advance(3600)) == 1
        await bot.deliver("installation.deleted")
        assert sweeps(await bot.advance(3600)) == 0
        await bot.deliver("installation.created")  # installed again
        assert sweeps(await bot.advance(3600)) == 1
        await bot.deliver("installation.suspend")
        assert sweeps(await bot.advance(3600)) == 0
        await bot.deliver("installation.unsuspend")
        assert sweeps(await bot.advance(3600)) == 1


async def test_an_installation_removed_before_the_shard_started_is_dropped_at_its_first_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A shard started after an installation's `installation.deleted` (a restart, an
    upgrade) has not seen it: its first run learns it from GitHub's refusal of the
    token, ends without a dead letter, and the installation is scheduled no more (it
    was dead-lettered every interval, for good)."""
    async with BotHarness(Sweeper) as bot:
        await bot.deliver("installation.created")
        assert sweeps(await bot.advance(3600)) == 1
        await bot.deliver("installation.deleted")
        del bot.fake.store.installations[bot.installation_id]  # GitHub forgets it
        bot.shard._inactive, bot.shard._slots = set(), {}  # what a new shard knows
        with caplog.at_level(logging.INFO, "ghbot.installation"):
            done = await bot.advance(3600)
        assert done.status == "1 run(s)" and sweeps(done) == 0 and done.dead_letters == []
        assert "sweep not run: 404 installation 1 is not installed" in caplog.text
        assert await bot.shard.dead_letters() == []
        host = await bot.shard.host(bot.installation_id)
        assert host.progress.pending == {}  # the run is complete
        assert (await bot.advance(3600)).status == "0 run(s)"
        assert (await bot.advance(3600)).status == "0 run(s)"
        # Installed again: GitHub knows it, and its runs come back.
        bot.fake.add_installation(bot.installation_id, "Codertocat", ["Hello-World"])
        await bot.deliver("installation.created")
        assert sweeps(await bot.advance(3600)) == 1


class Told(Sweeper):
    errors: ClassVar[list[str]] = []

    async def on_error(
        self, event: Event, handler: str, error: BaseException, attempt: int
    ) -> None:
        Told.errors.append(f"{handler}: {type(error).__name__}")


async def test_a_run_refused_so_is_told_to_on_error() -> None:
    Told.errors = []
    async with BotHarness(Told) as bot:
        await bot.deliver("installation.created")
        await bot.advance(3600)
        del bot.fake.store.installations[bot.installation_id]
        assert (await bot.advance(3600)).dead_letters == []
        assert Told.errors == ["sweep: InstallationUnavailable"]


async def test_an_installation_put_back_while_its_run_was_refused_stays_scheduled() -> None:
    """`installation.unsuspend` journaled while a run's token was being refused: the
    refusal, told after it, does not take the installation off the schedule again."""
    async with BotHarness(Sweeper) as bot:
        await bot.deliver("installation.created")
        host = await bot.shard.host(bot.installation_id)
        attempt_began = bot.clock()
        await bot.deliver("installation.unsuspend")
        host._on_unavailable(host, attempt_began)  # the refused run's end, told late
        assert sweeps(await bot.advance(3600)) == 1
        bot.clock.advance(1)
        host._on_unavailable(host, bot.clock())  # a refusal after it does
        assert (await bot.advance(3600)).status == "0 run(s)"


class SweepsOnReplay(InstallationActor):
    max_attempts = 1
    failing: ClassVar[bool] = True

    @every("1h")
    async def sweep(self, event: Event) -> None:
        if SweepsOnReplay.failing:
            raise RuntimeError("down")
        await self.github.request("POST", ISSUES, json={"title": "hourly sweep"})


async def test_a_replayed_scheduled_dead_letter_refused_so_is_a_dead_letter_again() -> None:
    """An operator's replay asked for it: it is not ended quietly as a run is."""
    SweepsOnReplay.failing = True
    async with BotHarness(SweepsOnReplay) as bot:
        await bot.deliver("installation.created")
        [dead] = (await bot.advance(3600)).dead_letters
        del bot.fake.store.installations[bot.installation_id]
        SweepsOnReplay.failing = False
        assert await bot.shard.replay(bot.installation_id, dead["delivery_id"], "sweep") == 1
        await bot.shard.wait_idle()
        [again] = await bot.shard.dead_letters()
        assert (again["delivery_id"], again["error_type"]) == (
            dead["delivery_id"],
            "InstallationUnavailable",
        )


class Commenter(InstallationActor):
    max_attempts = 5

    @on("issues.opened")
    async def comment(self, event: Event) -> None:
        await self.github.request("POST", f"{ISSUES}/1/comments", json={"body": "hi"})


async def test_a_delivery_for_a_suspended_installation_is_dead_lettered_at_once() -> None:
    """A webhook's handler is not skipped as a scheduled run is: its delivery is
    dead-lettered, at its first attempt (it was retried `max_attempts` times)."""
    async with BotHarness(Commenter) as bot:
        suspended = {"message": "This installation has been suspended"}
        tokens = f"/app/installations/{bot.installation_id}/access_tokens"
        bot.fake.stub("POST", tokens, suspended, status=403, auth="jwt")
        done = await bot.deliver("issues.opened")
        [dead] = done.dead_letters
        assert (dead["attempts"], dead["error_type"]) == (1, "InstallationUnavailable")
        assert "installation 1 is suspended" in dead["error"]


class NotSweeping(Sweeper):
    async def sweep(self, event: Event) -> None:  # overridden without @every
        return None


def test_an_override_without_every_is_not_scheduled() -> None:
    assert Sweeper._schedules == {"sweep": 3600.0}
    assert NotSweeping._schedules == {}
    assert NotSweeping.handlers_for(f"{SCHEDULE_EVENT}.sweep", SCHEDULE_EVENT) == ()


def test_runs_are_spread_over_the_interval() -> None:
    # The moment each of 1,000 installations' hourly run falls in a given hour.
    moments = set()
    for installation_id in range(1, 1001):
        for second in range(0, 3600, 10):
            now = 7200.0 + second
            if slot_of(installation_id, "sweep", 3600, now) != slot_of(
                installation_id, "sweep", 3600, now - 10
            ):
                moments.add(second // 60)
                break
    assert len(moments) > 50  # spread over most minutes of the hour, not bunched


def test_slots_are_an_interval_long_and_start_at_the_installation_s_offset() -> None:
    """Slot numbers are part of a run's GUID in the journal: a version that numbered
    them differently would run a slot again, or skip one, when it takes over."""
    for installation_id in (1, 2, 42, 10**9):
        for interval in (1.0, 60.0, 3600.0):
            slots = [
                slot_of(installation_id, "sweep", interval, interval * k / 10) for k in range(10)
            ]
            # The first interval's moments: slot -1 before the offset, 0 from it on.
            assert slots == sorted(slots) and set(slots) <= {-1, 0}
            for k in range(10):
                now = 1.7e9 + interval * k / 10
                assert slot_of(installation_id, "sweep", interval, now) == (
                    slot_of(installation_id, "sweep", interval, now - interval) + 1
                )
                # The same holds around zero, where rounding toward zero would not.
                now = interval * k / 10
                assert slot_of(installation_id, "sweep", interval, now) == (
                    slot_of(installation_id, "sweep", interval, now - interval) + 1
                )
        # One-second slots cannot be spread: they are the seconds themselves.
        assert slot_of(installation_id, "sweep", 1.0, 1.7e9 + 0.5) == 1_700_000_000
    assert slot_of(1, "sweep", 3600, 1.7e9) == 472221  # numbered so since @every came in


class Often(InstallationActor):
    @every(1)
    async def each_second(self, event: Event) -> None: ...

    @every("1h")
    async def hourly(self, event: Event) -> None: ...


class Sometimes(InstallationActor):
    @every("12s")
    async def twelve(self, event: Event) -> None: ...


def test_a_shard_looks_a_quarter_of_the_shortest_interval_from_half_a_second_to_a_minute() -> None:
    """docs/testing.md: "ticks (a quarter of the shortest interval, between half a
    second and a minute)", of the bot's own `@every` handlers."""
    assert tick_of(Often._schedules.values()) == 0.5  # a quarter of 1 s is less
    assert tick_of(Sometimes._schedules.values()) == 3.0
    assert tick_of(Sweeper._schedules.values()) == 60.0  # a quarter of an hour is more


def test_an_interval_in_seconds_or_as_a_duration_of_one_second_or_more() -> None:
    async def handler(self: object, event: Event) -> None:
        return None

    assert interval_of(every(90)(handler)) == 90.0
    assert interval_of(every(1)(handler)) == 1.0
    assert interval_of(every("1s")(handler)) == 1.0
    assert interval_of(every("1h")(handler)) == 3600.0
    assert interval_of(every("1d")(handler)) == 86400.0  # the module's own example


def test_bad_schedules_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="at least 1 s"):
        every("0s")
    with pytest.raises(UsageError, match="expected seconds"):
        every("hourly")
    with pytest.raises(UsageError, match="expected seconds"):
        every(None)  # type: ignore[arg-type]  # a TypeError once
    with pytest.raises(UsageError, match="annotate its event with a bare Event"):

        class Typed(InstallationActor):
            @every("1h")
            @on("issues.opened")
            async def both(self, event: Event[IssuesOpened]) -> None:
                return None


async def test_a_versioned_shard_runs_its_schedules_and_no_forged_run_of_another_version() -> None:
    Sweeper.everything = []
    async with BotHarness(Sweeper) as bot:
        bot.shard.version = "v2"  # a deployment's shard (`RuntimeSettings.version`)
        await bot.deliver("installation.created")
        assert sweeps(await bot.advance(3600)) == 1  # its own runs carry its version
        # A webhook claiming to be a run, from an ingress replica of another version
        # (an upgrade) that did not judge it complete: judged again, it runs nothing.
        forged = Inbound(
            1,
            vshard_of(1, bot.shard.vshard_count),
            DeliveryReceived(
                delivery_id="forged",
                event=SCHEDULE_EVENT,
                body=b'{"action": "sweep", "installation": {"id": 1}}',
                received_at=0.0,
            ),
            completed=False,
            version="v1",
        )
        before = len(bot.fake.requests)
        assert await bot.shard.ingest(encode_batch([forged])) == ["accepted"]
        await bot.shard.wait_idle()
        assert [r for r in list(bot.fake.requests)[before:] if r.path == ISSUES] == []
        assert Sweeper.everything == ["installation"]
