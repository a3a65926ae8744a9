"""The redelivery sweeper against the fake's delivery log, over real HTTP."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from ghbot import redelivery
from ghbot.client import GitHubApp
from ghbot.errors import GitHubError
from ghbot.redelivery import (
    GITHUB_WINDOW,
    Attempt,
    Failed,
    RedeliverySweeper,
    failed_deliveries,
)
from ghbot.testing import FakeClock, FakeGitHub


def attempt(id: int, guid: str, status: str = "OK", **kw: object) -> Attempt:
    at = kw.pop("delivered_at", "2026-11-27T10:00:00Z")
    return Attempt(id=id, guid=guid, status=status, delivered_at=str(at), **kw)  # type: ignore[arg-type]


def test_a_guid_failed_only_when_none_of_its_attempts_was_ok() -> None:
    attempts = [
        attempt(5, "b", "Invalid HTTP Response: 503", delivered_at="2026-11-27T10:05:00Z"),
        attempt(4, "a", "OK", redelivery=True),
        attempt(3, "b", "failed to connect to host", installation_id=7, event="issues"),
        attempt(2, "a", "Invalid HTTP Response: 500"),
        attempt(1, "c", "OK"),
    ]
    [failed] = failed_deliveries(attempts)
    assert failed.guid == "b" and failed.attempt_id == 5 and failed.attempts == 2
    assert failed.first_at == attempt(0, "x").at  # the older of its two attempts
    assert failed_deliveries([]) == []
    listed = [  # GitHub lists the newest first; failures come back oldest first
        attempt(9, "new", "Invalid HTTP Response: 503", delivered_at="2026-11-27T11:00:00Z"),
        attempt(8, "old", "Invalid HTTP Response: 503", delivered_at="2026-11-27T09:00:00Z"),
    ]
    assert [f.guid for f in failed_deliveries(listed)] == ["old", "new"]


@pytest.fixture
async def refusing() -> AsyncIterator[str]:
    """A webhook endpoint that is down: it answers every delivery with 503."""

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/webhook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"
    await runner.cleanup()


class Journal:
    """Stands in for the shards: which GUIDs are journaled, and what was asked."""

    def __init__(self, *guids: str) -> None:
        self.guids = set(guids)
        self.asked: list[list[str]] = []

    async def held(self, failed: list[Failed]) -> set[str]:
        self.asked.append([f.guid for f in failed])
        return {f.guid for f in failed} & self.guids


async def test_sweep_redelivers_what_failed_and_is_not_journaled(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock
) -> None:
    fake.add_delivery("issues", {"action": "opened"}, guid="fine")
    fake.add_delivery("issues", {"action": "opened"}, guid="lost", status_code=502)
    # Journaled, but the answer came too late for GitHub: not asked for again.
    fake.add_delivery("issues", {"action": "opened"}, guid="late", status_code=0)
    journal = Journal("late")
    sweeper = RedeliverySweeper(app, journal.held, clock=clock)

    result = await sweeper.sweep()
    assert (result.listed, result.failed, result.held) == (3, 2, 1)
    assert result.redelivered == ["lost"] and result.gave_up == []
    assert [sorted(guids) for guids in journal.asked] == [["late", "lost"]]
    assert [d["guid"] for d in fake.redeliveries] == ["lost"]

    clock.advance(600)
    again = await sweeper.sweep()  # "lost" was redelivered OK: nothing left to do
    assert again.failed == 1 and again.redelivered == []
    assert sweeper.stats()["redelivered"] == 1 and sweeper.stats()["sweeps"] == 2


async def test_a_delivery_that_keeps_failing_is_asked_for_a_bounded_number_of_times(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock, refusing: str
) -> None:
    fake.deliveries.webhook_url = refusing
    fake.add_delivery("issues", {"action": "opened"}, guid="down", status_code=503)
    sweeper = RedeliverySweeper(app, Journal().held, max_requests=2, spacing=60, clock=clock)

    assert (await sweeper.sweep()).redelivered == ["down"]
    assert (await sweeper.sweep()).redelivered == []  # within `spacing`: GitHub may be busy
    clock.advance(60)  # `spacing` later: asked again
    assert (await sweeper.sweep()).redelivered == ["down"]
    clock.advance(61)
    assert (await sweeper.sweep()).gave_up == ["down"]
    clock.advance(61)
    last = await sweeper.sweep()
    assert last.redelivered == [] and last.gave_up == []
    assert len(fake.redeliveries) == 2
    assert all(d["status_code"] == 503 for d in fake.redeliveries)
    assert sweeper.stats()["remembered"] == 1
    clock.advance(GITHUB_WINDOW)  # past GitHub's window: the GUID is forgotten
    await sweeper.sweep()
    assert sweeper.stats()["remembered"] == 0


async def test_sweeps_look_back_only_as_far_as_they_need(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock
) -> None:
    fake.add_delivery("issues", {}, guid="ancient", status_code=500)
    clock.advance(3700)
    fake.add_delivery("issues", {}, guid="recent", status_code=500)
    sweeper = RedeliverySweeper(app, Journal().held, lookback=3600, overlap=60, clock=clock)
    first = await sweeper.sweep()
    assert first.listed == 1 and first.redelivered == ["recent"]

    clock.advance(1000)
    fake.add_delivery("issues", {}, guid="newer", status_code=500)
    second = await sweeper.sweep()  # from the first sweep, less the overlap
    # "recent" and its redelivery (at the first sweep), and "newer"; not "ancient".
    assert second.listed == 3 and second.failed == 1 and second.redelivered == ["newer"]
    assert not second.truncated


async def test_a_guid_asked_for_is_remembered_for_github_s_three_days_and_no_longer(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock, refusing: str
) -> None:
    fake.deliveries.webhook_url = refusing
    fake.add_delivery("issues", {"action": "opened"}, guid="down", status_code=503)
    journal = Journal()
    sweeper = RedeliverySweeper(app, journal.held, clock=clock)
    assert (await sweeper.sweep()).redelivered == ["down"]
    journal.guids.add("down")  # the redelivery came: no later sweep asks for it again
    clock.advance(GITHUB_WINDOW)
    await sweeper.sweep()
    assert sweeper.stats()["remembered"] == 1  # asked exactly three days ago: kept
    clock.advance(1)
    await sweeper.sweep()
    assert sweeper.stats()["remembered"] == 0


async def test_a_sweep_long_after_the_last_looks_back_only_its_lookback(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock
) -> None:
    sweeper = RedeliverySweeper(app, Journal().held, lookback=3600, overlap=60, clock=clock)
    await sweeper.sweep()
    fake.add_delivery("issues", {}, guid="old", status_code=500)
    clock.advance(7200)
    fake.add_delivery("issues", {}, guid="new", status_code=500)
    result = await sweeper.sweep()
    assert result.listed == 1 and result.redelivered == ["new"]
    # GitHub keeps deliveries three days: no sweep looks back further.
    assert RedeliverySweeper(app, Journal().held, lookback=10 * 86400).lookback == GITHUB_WINDOW


async def test_a_sweep_that_finds_no_failure_asks_no_shard(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock
) -> None:
    fake.add_delivery("issues", {}, guid="fine")
    journal = Journal()
    result = await RedeliverySweeper(app, journal.held, max_pages=0, clock=clock).sweep()
    assert (result.listed, result.failed, result.truncated) == (1, 0, False)  # a page at least
    assert journal.asked == []


async def test_a_sweep_reads_a_bounded_number_of_pages(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock
) -> None:
    for n in range(150):
        fake.add_delivery("issues", {}, guid=f"g{n}", status_code=200 if n else 500)
    sweeper = RedeliverySweeper(app, Journal().held, max_pages=1, clock=clock)
    result = await sweeper.sweep()
    assert result.truncated and result.listed == 100
    assert len(fake.requests_to("/app/hook/deliveries", "GET")) == 1  # not a page more
    assert result.redelivered == []  # the failed one, "g0", is past the first page
    # By default 50 pages: the 5,000 most recent attempts a sweep.
    assert RedeliverySweeper(app, Journal().held).max_pages == 50


async def test_the_next_sweep_goes_on_where_a_truncated_one_stopped(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock
) -> None:
    clock.now = 1_800_000_000.0
    for n in range(250):  # the oldest failed; 250 attempts, 10 s apart
        fake.add_delivery("issues", {}, guid=f"g{n}", status_code=200 if n else 500)
        clock.advance(10)
    sweeper = RedeliverySweeper(app, Journal().held, lookback=3600, max_pages=1, clock=clock)
    first = await sweeper.sweep()
    assert first.truncated and first.listed == 100 and first.redelivered == []
    clock.advance(200)
    fake.add_delivery("issues", {}, guid="new", status_code=502)
    # Its newest page (back to 600 s before the last sweep: "new" and 60 more), then a
    # page of the older ones, from where the first stopped.
    second = await sweeper.sweep()
    assert second.truncated and second.listed == 61 + 100 and second.redelivered == ["new"]
    clock.advance(200)
    # Then the rest of the older ones, back to the first sweep's start (the newest
    # part: "new", GitHub's attempt to redeliver it, and 40 more).
    third = await sweeper.sweep()
    assert not third.truncated and third.listed == 42 + 50 and third.redelivered == ["g0"]
    listings = fake.requests_to("/app/hook/deliveries", "GET")
    assert len(listings) == 5 and listings[-1].query.startswith("per_page=100&cursor=")
    clock.advance(200)
    assert not (await sweeper.sweep()).truncated
    assert len(fake.requests_to("/app/hook/deliveries", "GET")) == 6  # nothing left over


async def test_sweeps_cut_short_every_time_still_reach_back_to_an_old_failure(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock
) -> None:
    # An app busier than a sweep's pages, for good: every sweep's own listing is cut
    # short, and each still goes a page further into what the earlier ones left.
    clock.now = 1_800_000_000.0
    fake.add_delivery("issues", {}, guid="old", status_code=500)
    sweeper = RedeliverySweeper(app, Journal().held, lookback=3600, max_pages=1, clock=clock)
    asked: list[str] = []
    for n in range(6):
        for m in range(120):  # 120 a sweep, a second apart: more than a page
            clock.advance(1)
            fake.add_delivery("issues", {}, guid=f"g{n}-{m}")
        result = await sweeper.sweep()
        assert result.truncated
        asked += result.redelivered
    assert asked == ["old"]
    assert len(fake.requests_to("/app/hook/deliveries", "GET")) == 1 + 5 * 2  # 2 pages a sweep


async def test_past_max_behind_listings_cut_short_the_oldest_are_given_up(
    fake: FakeGitHub,
    app: GitHubApp,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redelivery, "MAX_BEHIND", 2)
    clock.now = 1_800_000_000.0
    sweeper = RedeliverySweeper(app, Journal().held, lookback=3600, max_pages=1, clock=clock)
    with caplog.at_level(logging.WARNING, logger="ghbot.redelivery"):
        for n in range(6):
            for m in range(250):  # more a sweep than its own page and the one it goes on with
                clock.advance(1)
                fake.add_delivery("issues", {}, guid=f"g{n}-{m}")
            assert (await sweeper.sweep()).truncated
    given_up = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert given_up and "given up on (the app gets more delivery attempts" in (
        given_up[0].getMessage()
    )
    assert len(sweeper._behind) <= 2 + 1  # the kept ones and this sweep's own


async def test_a_listing_github_will_not_go_on_with_is_given_up_and_sweeps_go_on(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A listing cut short, gone on with after GitHub stopped keeping the attempt its
    cursor names (3 days): GitHub refuses the cursor; the sweep gives that listing up
    and goes on with the rest."""
    clock.now = 1_800_000_000.0
    for n in range(150):
        fake.add_delivery("issues", {}, guid=f"g{n}")
        clock.advance(10)
    sweeper = RedeliverySweeper(app, Journal().held, lookback=3600, max_pages=1, clock=clock)
    assert (await sweeper.sweep()).truncated
    clock.advance(3 * 86400)  # the attempt the cursor names is no longer kept
    fake.add_delivery("issues", {}, guid="new", status_code=502)
    with caplog.at_level(logging.WARNING, logger="ghbot.redelivery"):
        second = await sweeper.sweep()
    assert second.redelivered == ["new"] and not second.truncated
    assert "could not go on with a listing cut short (ValidationFailed)" in caplog.text
    assert sweeper._behind == []


async def test_by_default_a_delivery_is_asked_for_three_times_five_minutes_apart(
    fake: FakeGitHub,
    app: GitHubApp,
    clock: FakeClock,
    refusing: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.deliveries.webhook_url = refusing
    fake.add_delivery("issues", {"action": "opened"}, guid="down", status_code=503)
    sweeper = RedeliverySweeper(app, Journal().held, clock=clock)
    with caplog.at_level(logging.WARNING, logger="ghbot.redelivery"):
        for _ in range(3):
            assert (await sweeper.sweep()).redelivered == ["down"]
            clock.advance(299)
            assert (await sweeper.sweep()).redelivered == []
            clock.advance(1)
        assert (await sweeper.sweep()).gave_up == ["down"]
        clock.advance(300)
        assert (await sweeper.sweep()).gave_up == []
    assert len(fake.redeliveries) == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "ghbot.redelivery"]
    assert lines == ["redelivery: asked GitHub for 1 failed deliveries, gave up on 0"] * 3 + [
        "redelivery: down (issues) still failed after 3 asks; giving up",
        "redelivery: asked GitHub for 0 failed deliveries, gave up on 1",
    ]
    assert sweeper.stats() == {
        "sweeps": 8,
        "redelivered": 3,
        "gave_up": 1,  # counted over every sweep, not the last one's
        "errors": 0,
        "last_sweep": clock.now,
        "remembered": 1,
    }


async def test_a_sweep_asked_for_again_after_a_long_outage_brings_back_what_was_given_up(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock, refusing: str
) -> None:
    """The receiver stays down past three asks five minutes apart: the scheduled sweeps
    give up, and the ones after it no longer list what failed early. `ghbot redeliver`
    (a sweep `again`) looks back the whole lookback and asks for it anyway."""
    fake.deliveries.webhook_url = refusing
    fake.add_delivery("issues", {"action": "opened"}, guid="early", status_code=503)
    sweeper = RedeliverySweeper(app, Journal().held, clock=clock)
    assert sweeper.lookback == 6 * 3600  # as deployed: what `ghbot redeliver` looks back
    for _ in range(20):  # every 2 minutes for 40 minutes, as deployed
        await sweeper.sweep()
        clock.advance(120)
    assert sweeper.totals["gave_up"] == 1 and len(fake.redeliveries) == 3
    assert (await sweeper.sweep()).failed == 0  # "early" is older than a sweep looks
    fake.add_delivery("issues", {"action": "opened"}, guid="late", status_code=503)

    fake.deliveries.webhook_url = None  # the outage is over
    swept = await sweeper.sweep(again=True)
    assert swept.redelivered == ["early", "late"] and swept.gave_up == []
    assert [d["guid"] for d in fake.redeliveries[3:]] == ["early", "late"]
    clock.advance(120)
    assert (await sweeper.sweep()).redelivered == []  # both came back


async def test_a_sweep_asked_for_again_looks_back_as_far_as_it_is_told(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock
) -> None:
    """`ghbot redeliver --since 2d`: an outage longer than the 6 hours it looks back by
    default; never past GHES's 7 days."""
    # The fake keeps every attempt: the sweep's own cap is what is tested (GHES's 7 days).
    fake.deliveries.kept_for = 30 * 86400
    fake.add_delivery("issues", {"action": "opened"}, guid="old", status_code=503)
    clock.advance(26 * 3600)
    sweeper = RedeliverySweeper(app, Journal().held, clock=clock)
    assert (await sweeper.sweep(again=True)).failed == 0  # 26 hours back: past 6
    assert (await sweeper.sweep(again=True, lookback=2 * 86400)).redelivered == ["old"]
    # 7 days and an hour after "old" was sent, 6 days after its redelivery: asked to
    # look back 30 days, the sweep looks back 7 and lists the redelivery alone.
    clock.advance(7 * 86400 + 3600 - 26 * 3600)
    assert (await sweeper.sweep(again=True, lookback=30 * 86400)).listed == 1


async def test_a_redelivery_github_refuses_is_counted_logged_and_asked_for_again(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add_delivery("issues", {"action": "opened"}, guid="lost", status_code=502)
    fake.faults.add("/attempts$", "status", method="POST", status=422)
    sweeper = RedeliverySweeper(app, Journal().held, clock=clock)
    assert sweeper.stats()["errors"] == 0 and sweeper.stats()["gave_up"] == 0
    with caplog.at_level(logging.WARNING, logger="ghbot.redelivery"):
        first = await sweeper.sweep()
    assert (first.errors, first.redelivered) == (1, [])
    [record] = [r for r in caplog.records if r.name == "ghbot.redelivery"]
    assert record.getMessage() == "redelivery of lost failed: ValidationFailed"
    fields = (record.event_id, record.operation, record.error_type)  # type: ignore[attr-defined]
    assert fields == ("lost", "redeliver", "ValidationFailed")
    second = await sweeper.sweep()  # at once: a refused ask does not count as asked
    assert (second.errors, second.redelivered) == (0, ["lost"])
    assert sweeper.stats()["errors"] == 1  # counted over every sweep


async def test_a_rate_limit_ends_a_sweeps_asks_and_later_sweeps_ask_for_the_rest(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """After an outage, GitHub (or the app's client) may refuse asks with a rate limit.
    The sweep stops asking, with one warning, and later sweeps ask for what it left,
    even once their listings no longer reach those deliveries' attempts."""
    for guid in ("a", "b", "c"):
        fake.add_delivery("issues", {"action": "opened"}, guid=guid, status_code=503)
    limit = fake.faults.add("/attempts$", "secondary", None, method="POST", retry_after=30)
    sweeper = RedeliverySweeper(app, Journal().held, clock=clock)
    with caplog.at_level(logging.WARNING, logger="ghbot.redelivery"):
        first = await sweeper.sweep()  # the client waits out three limits, then gives up
        clock.advance(700)
        second = await sweeper.sweep()  # still limited: its listing is the last to reach them
    assert (first.failed, first.redelivered, first.deferred, first.errors) == (3, [], 3, 0)
    assert (second.failed, second.redelivered, second.deferred) == (3, [], 3)
    lines = [r.getMessage() for r in caplog.records if r.name == "ghbot.redelivery"]
    stopped = "asks stopped (secondary rate limit); 3 failed deliveries left for the next sweep"
    assert lines == [f"redelivery: {stopped}"] * 2
    fake.faults.discard(limit)
    clock.advance(700)
    third = await sweeper.sweep()
    assert third.listed == 0  # a, b and c are older than its listing reaches
    assert (third.failed, sorted(third.redelivered), third.deferred) == (3, ["a", "b", "c"], 0)
    assert sorted(d["guid"] for d in fake.redeliveries) == ["a", "b", "c"]
    clock.advance(700)
    assert (await sweeper.sweep()).failed == 0  # asked for: not kept any longer


async def test_a_refused_ask_counts_towards_giving_up_after_its_listing_is_past(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock
) -> None:
    """A delivery GitHub refuses to redeliver (422) is asked for again by later sweeps,
    past their listings' reach, and given up on after `max_requests` asks."""
    fake.add_delivery("issues", {"action": "opened"}, guid="lost", status_code=502)
    fake.faults.add("/attempts$", "status", None, method="POST", status=422)
    sweeper = RedeliverySweeper(app, Journal().held, clock=clock)
    results = []
    for _ in range(5):
        results.append(await sweeper.sweep())
        clock.advance(700)
    assert [r.errors for r in results] == [1, 1, 1, 0, 0]
    assert [r.gave_up for r in results] == [[], [], [], ["lost"], []]
    assert results[-1].failed == 0  # given up on: not kept


async def test_each_refused_redelivery_of_a_sweep_is_counted(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock
) -> None:
    fake.add_delivery("issues", {}, guid="one", status_code=502)
    fake.add_delivery("issues", {}, guid="two", status_code=502)
    fake.faults.add("/attempts$", "status", count=2, method="POST", status=422)
    result = await RedeliverySweeper(app, Journal().held, clock=clock).sweep()
    assert (result.errors, result.redelivered) == (2, [])


async def test_a_later_sweep_starts_at_the_last_less_ten_minutes(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock
) -> None:
    clock.now = 1_800_000_000.0  # whole seconds, as GitHub's `delivered_at`
    fake.add_delivery("issues", {}, guid="before")
    clock.advance(399)
    fake.add_delivery("issues", {}, guid="just-before")
    clock.advance(1)
    fake.add_delivery("issues", {}, guid="at-the-start")
    sweeper = RedeliverySweeper(app, Journal().held, clock=clock)
    clock.advance(600)
    assert (await sweeper.sweep()).listed == 3
    clock.advance(1000)
    assert (await sweeper.sweep()).listed == 1  # from 600 s before the last sweep on


async def test_a_truncated_listing_says_how_far_back_it_got(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    clock.now = 1_800_000_000.0
    for n in range(101):
        fake.add_delivery("issues", {}, guid=f"g{n}")
        clock.advance(10)
    sweeper = RedeliverySweeper(app, Journal().held, lookback=3600, max_pages=1, clock=clock)
    with caplog.at_level(logging.WARNING, logger="ghbot.redelivery"):
        assert (await sweeper.sweep()).truncated
    [record] = [r for r in caplog.records if r.name == "ghbot.redelivery"]
    # The 100th newest attempt was made 1,000 s before the sweep, of a 3,600 s lookback.
    assert record.getMessage() == (
        "redelivery: stopped after 100 delivery attempts, 1000 s back of 3600"
    )


def test_a_failure_names_its_newest_attempt_s_event_and_installation() -> None:
    attempts = [
        attempt(2, "b", "Invalid HTTP Response: 503", event="pull_request", installation_id=8),
        attempt(1, "b", "failed to connect to host", event="issues", installation_id=7),
    ]
    [failed] = failed_deliveries(attempts)
    assert (failed.event, failed.installation_id) == ("pull_request", 8)


@pytest.mark.parametrize(
    ("kind", "error"), [("server_error", "ServerError"), ("drop", "ConnectionFailed")]
)
async def test_a_5xx_or_no_answer_ends_a_sweeps_asks_uncounted(
    fake: FakeGitHub,
    app: GitHubApp,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    error: str,
) -> None:
    """GitHub's API failing (5xx, or no answer, after the client's retries) is when
    deliveries fail too: those asks are not counted towards giving up, however many
    sweeps it lasts, and what they leave is kept past the 6 hours sweeps look back."""
    fake.add_delivery("issues", {"action": "opened"}, guid="a", status_code=503)
    fake.add_delivery("issues", {"action": "opened"}, guid="b", status_code=503)
    failing = fake.faults.add("/attempts$", kind, None, method="POST", status=502)
    sweeper = RedeliverySweeper(app, Journal().held, clock=clock)
    with caplog.at_level(logging.WARNING, logger="ghbot.redelivery"):
        swept = []
        for _ in range(5):  # more sweeps than `max_requests`
            swept.append(await sweeper.sweep())
            clock.advance(700)
        clock.advance(7 * 3600)  # an outage of 8 hours
        swept.append(await sweeper.sweep())
    assert [(s.deferred, s.errors, s.gave_up) for s in swept] == [(2, 0, [])] * 6
    lines = {r.getMessage() for r in caplog.records if r.name == "ghbot.redelivery"}
    assert lines == {
        f"redelivery: asks stopped ({error}); 2 failed deliveries left for the next sweep"
    }
    fake.faults.discard(failing)
    last = await sweeper.sweep()
    assert sorted(last.redelivered) == ["a", "b"] and last.listed == 0


async def test_what_is_kept_is_dropped_seven_days_after_its_first_attempt(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add_delivery("issues", {"action": "opened"}, guid="a", status_code=503)
    fake.faults.add("/attempts$", "server_error", None, method="POST", status=502)
    sweeper = RedeliverySweeper(app, Journal().held, clock=clock)
    assert (await sweeper.sweep()).deferred == 1
    clock.advance(7 * 86400 + 1)
    with caplog.at_level(logging.WARNING, logger="ghbot.redelivery"):
        assert (await sweeper.sweep()).failed == 0
    assert (
        "redelivery: dropped 1 failed deliveries GitHub never took an ask for, 7 days "
        "after their first attempt"
    ) in [r.getMessage() for r in caplog.records]


async def test_what_a_sweep_asked_for_by_hand_keeps_outlives_the_scheduled_look_back(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock
) -> None:
    """`ghbot redeliver --since 2d` stopped by a rate limit: what it left is asked for by
    the next scheduled sweep, though older than the 6 hours those look back."""
    fake.add_delivery("issues", {"action": "opened"}, guid="old", status_code=503)
    clock.advance(7 * 3600)
    sweeper = RedeliverySweeper(app, Journal().held, clock=clock)
    limit = fake.faults.add("/attempts$", "secondary", None, method="POST", retry_after=30)
    by_hand = await sweeper.sweep(again=True, lookback=2 * 86400)
    assert (by_hand.failed, by_hand.deferred, by_hand.redelivered) == (1, 1, [])
    fake.faults.discard(limit)
    clock.advance(120)
    assert (await sweeper.sweep()).redelivered == ["old"]


async def test_only_what_is_due_is_left_for_the_next_sweep(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock, refusing: str
) -> None:
    """A delivery asked for within `spacing` is not asked for, so not left either,
    though it comes after the ask a rate limit stopped."""
    fake.deliveries.webhook_url = refusing  # the receiver is still down
    fake.add_delivery("issues", {"action": "opened"}, guid="refused", status_code=503)
    clock.advance(1)
    fake.add_delivery("issues", {"action": "opened"}, guid="asked", status_code=503)
    fake.faults.add("/attempts$", "status", method="POST", status=422)  # the first ask
    sweeper = RedeliverySweeper(app, Journal().held, clock=clock)
    first = await sweeper.sweep()
    assert (first.errors, first.redelivered) == (1, ["asked"])
    clock.advance(60)
    fake.faults.add("/attempts$", "secondary", None, method="POST", retry_after=30)
    swept = await sweeper.sweep()  # "refused" may be asked at once, "asked" not yet
    assert (swept.deferred, swept.redelivered) == (1, [])


async def test_the_fakes_delivery_list_reads_per_page_as_digits_or_not_at_all(
    fake: FakeGitHub, app: GitHubApp
) -> None:
    """A `per_page` that is not ASCII digits is the default, 30 (it was a 500); a
    number out of 1–100 is refused."""
    for n in range(40):
        fake.add_delivery("issues", {}, guid=f"g{n}")
    for odd in ("many", "+5", "\u0665"):
        page = await app.gh.request("GET", "/app/hook/deliveries", params={"per_page": odd})
        assert len(page.data) == 30, odd
    with pytest.raises(GitHubError) as refused:
        await app.gh.request("GET", "/app/hook/deliveries", params={"per_page": "101"})
    assert refused.value.status == 422
