"""Mutating requests are paced per installation (GitHub asks for ≥ 1 s between writes).

The first tests run on a fake clock; the rest against a FakeGitHub on the real clock
that enforces GitHub's rule (`write_interval`): there, what counts is the gap between
two writes' arrivals at the fake, whatever delayed them on the way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from ghbot.auth import AppAuth
from ghbot.client import ClientOptions, GitHub, GitHubApp, close_pool
from ghbot.errors import RateLimited
from ghbot.retry import RetryPolicy
from ghbot.testing import FakeClock, FakeGitHub
from tests.runtime.conftest import until
from tests.watching import watching

from .conftest import REPO

COMMENTS = f"/repos/{REPO}/issues/1/comments"
WIDGETS = "acme/widgets"
#: The spacing the strict fake enforces and the clients keep, in real seconds.
INTERVAL = 0.2


@pytest.fixture
def paced(options: ClientOptions) -> ClientOptions:
    return options.replace(pace_writes=1.0)


async def test_writes_of_one_installation_are_a_second_apart(
    fake: FakeGitHub, clock: FakeClock, paced: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client(options=paced)
    for n in range(3):
        await gh.request("POST", COMMENTS, json={"body": f"comment {n}"})
    assert clock.sleeps == [1.0, 1.0]
    started = clock()
    await asyncio.gather(*(gh.request("POST", COMMENTS, json={"body": "x"}) for _ in range(3)))
    assert clock() - started == pytest.approx(3.0), "concurrent writes also wait their turn"


async def test_content_creating_writes_keep_within_githubs_numbers(
    fake: FakeGitHub, clock: FakeClock, paced: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    """80 content-creating requests a minute and 500 an hour: the 81st waits for the
    first's minute to end; the 501st, an hour's wait away, is refused as GitHub would
    refuse it, and the client is not settled meanwhile (it would forget the count)."""
    gh = token_client(options=paced.replace(pace_writes=0.01))
    started = clock()
    for n in range(80):
        await gh.request("POST", COMMENTS, json={"body": str(n)})
    assert clock() - started < 1
    await gh.request("PATCH", f"/repos/{REPO}/issues/1", json={"title": "t"})  # creates nothing
    assert clock() - started < 1
    await gh.request("POST", COMMENTS, json={"body": "81st"})
    assert clock() - started >= 60
    for n in range(500 - 81):
        await gh.request("POST", COMMENTS, json={"body": str(n)})
    assert clock() - started < 3600
    with pytest.raises(RateLimited, match="content-creating") as caught:
        await gh.request("POST", COMMENTS, json={"body": "501st"})
    assert caught.value.kind == "secondary"
    assert caught.value.retry_after == pytest.approx(started + 3600 - clock(), abs=0.1)
    assert not gh.settled
    assert len(fake.requests_to(COMMENTS, "POST")) == 500
    clock.advance(caught.value.retry_after + 0.001)
    assert gh.settled  # the first write's hour is over


async def test_a_content_creating_write_counts_from_when_its_exchange_ended(
    fake: FakeGitHub, clock: FakeClock, paced: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    """A write may reach GitHub as late as its answer comes back: a first write whose
    exchange took 10 s holds the 81st until a minute after it ended, not after it
    was sent."""
    gh = token_client(options=paced.replace(pace_writes=0.01))
    fake.faults.add("/comments$", "slow", delay=0.2, count=1)
    sent = clock()
    first = asyncio.create_task(gh.request("POST", COMMENTS, json={"body": "slow"}))
    await until(lambda: bool(fake.requests_to(COMMENTS, "POST")))
    clock.advance(10)  # the exchange still going
    await first
    for n in range(80):
        await gh.request("POST", COMMENTS, json={"body": str(n)})
    assert clock() - sent >= 70


async def test_turns_granted_to_a_leases_writes_count_as_content_creating(
    clock: FakeClock, paced: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client(options=paced)
    started = clock()
    for _ in range(80):
        await gh.grant_write(0.01)
    assert clock() - started < 1
    await gh.grant_write(0.01)
    assert clock() - started >= 60


async def test_a_pause_that_begins_while_a_turn_waits_for_the_content_window_holds_it(
    clock: FakeClock, paced: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    """A secondary-limit pause drawn (by a read, say) while a lease's write waits for
    the minute's content-creating writes to pass is looked at again: no turn in it."""
    gh: GitHub | None = None
    paused_until: list[float] = []

    async def sleep(seconds: float) -> None:
        if seconds > 30 and gh is not None and not paused_until:  # the content wait
            paused_until.append(clock() + seconds + 20)  # past the wait
            gh.hold(paused_until=paused_until[0])
        clock.advance(seconds)

    gh = token_client(options=paced.replace(sleep=sleep))
    for _ in range(80):
        await gh.grant_write(0.01)
    await gh.grant_write(0.01)
    assert paused_until and clock() >= paused_until[0]


async def test_a_client_with_a_write_in_flight_or_a_pause_is_not_settled(
    fake: FakeGitHub, clock: FakeClock, paced: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    """`settled` and `holds` tell a runtime whether forgetting the client loses a wait."""
    gh = token_client(options=paced)
    assert gh.settled and gh.holds() == (0.0, 0.0, 0.0)
    fake.faults.add("/comments$", "slow", delay=0.2)
    writing = asyncio.create_task(gh.request("POST", COMMENTS, json={"body": "slow"}))
    await until(lambda: bool(fake.requests_to(COMMENTS, "POST")))
    assert not gh.settled  # the write's interval starts at its answer, not yet come
    assert gh.holds().writes_after == clock() + 1.0  # counted as ending now
    await writing
    assert not gh.settled and gh.holds().writes_after == clock() + 1.0
    clock.advance(1.0)
    assert gh.settled
    gh.hold(paused_until=clock() + 10, writes_after=clock() + 20)
    gh.hold(paused_until=clock() + 5, writes_after=clock() + 3)  # never shortens a wait
    assert gh.holds()[:2] == (clock() + 20, clock() + 10) and not gh.settled
    clock.advance(10)
    assert gh.holds().paused_until == clock() and not gh.settled  # writes still wait
    clock.advance(10)  # the writes' wait ends exactly now
    assert gh.settled
    gh.hold(paused_until=clock())  # a pause ending exactly now holds nothing
    assert gh.settled


async def test_a_timer_that_fires_early_does_not_let_a_write_go_early(
    clock: FakeClock, paced: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    async def early(seconds: float) -> None:  # the loop's timer ends 0.1 s short
        clock.advance(seconds - 0.1 if seconds > 0.1 else seconds)

    gh = token_client(options=paced.replace(sleep=early))
    await gh.request("POST", COMMENTS, json={"body": "one"})
    answered = clock()
    await gh.request("POST", COMMENTS, json={"body": "two"})
    assert clock() - answered >= 1.0


async def test_a_turn_is_not_granted_through_a_pause_longer_than_the_in_line_wait(
    clock: FakeClock, paced: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client(options=paced)
    gh.hold(paused_until=clock() + 61)  # `max_rate_limit_wait` is 60 s
    with pytest.raises(RateLimited, match="paused"):
        await gh.grant_write(2.5)
    assert clock.sleeps == []


async def test_a_wait_cut_short_is_told_as_ended(
    clock: FakeClock, paced: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    """A runner watching the client (`call_watcher`) hears that a wait ended, also when
    the request waiting is cancelled."""

    async def forever(seconds: float) -> None:
        await asyncio.Event().wait()

    gh = token_client(options=paced.replace(sleep=forever))
    gh.hold(paused_until=clock() + 5)
    with watching() as heard:  # the task takes the watcher with its context
        request = asyncio.create_task(gh.request("GET", f"/repos/{REPO}"))
    await until(lambda: heard.waits == [True])
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
    assert heard.waits == [True, False]


async def test_reads_are_not_paced(
    clock: FakeClock, paced: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client(options=paced)
    await gh.request("POST", COMMENTS, json={"body": "x"})
    for _ in range(3):
        await gh.request("GET", COMMENTS)
    assert clock.sleeps == []


async def test_installations_are_paced_independently(
    fake: FakeGitHub, clock: FakeClock, paced: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    fake.add_issue("acme/widgets", "Widget bug")
    first, second = token_client(1, options=paced), token_client(2, options=paced)
    await asyncio.gather(
        first.request("POST", COMMENTS, json={"body": "a"}),
        second.request("POST", "/repos/acme/widgets/issues/1/comments", json={"body": "b"}),
    )
    assert clock.sleeps == []


async def test_pacing_can_be_turned_off(
    clock: FakeClock, options: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client(options=options.replace(pace_writes=None))
    for _ in range(3):
        await gh.request("POST", COMMENTS, json={"body": "x"})
    await gh.request("POST", COMMENTS, json={"body": "x"}, pace=False)
    assert clock.sleeps == []


async def test_token_exchanges_are_not_paced(
    clock: FakeClock, app: GitHubApp, paced: ClientOptions
) -> None:
    paced_app = GitHubApp(app.auth, options=paced)
    for installation_id in (1, 2, 1):
        await paced_app.create_installation_token(installation_id)
    assert clock.sleeps == []


async def test_redelivery_requests_are_paced_like_writes(
    fake: FakeGitHub, clock: FakeClock, app: GitHubApp, paced: ClientOptions
) -> None:
    # The redelivery sweep's `POST …/attempts` are writes of the app: a second apart.
    ids = [fake.add_delivery("issues", {"action": "opened"}, status_code=503)["id"] for _ in "ab"]
    paced_app = GitHubApp(app.auth, options=paced)
    await asyncio.gather(*(paced_app.redeliver(i) for i in ids))
    assert clock.sleeps == [1.0]
    assert len(fake.redeliveries) == 2


# --- against a fake that enforces the spacing, on the real clock -----------------------


@pytest.fixture
async def strict(public_pem: bytes) -> AsyncIterator[FakeGitHub]:
    """A fake refusing an installation's write under INTERVAL after its previous one.

    A refusal says `retry-after: 1`, and the installation's writes in that second are
    refused too; `secondary_limits` counts every refusal.
    """
    async with FakeGitHub(
        app_id=1, public_key_pem=public_pem, write_interval=INTERVAL, write_retry_after=1
    ) as server:
        server.add_installation(1, "octo-org", ["hello-world"])
        server.add_installation(2, "acme", ["widgets"])
        server.add_issue(REPO, "Found a bug")
        server.add_issue(WIDGETS, "Widget bug")
        yield server
    await close_pool()


@pytest.fixture
def strict_app(strict: FakeGitHub, pem_pkcs8: bytes) -> GitHubApp:
    """An app on the real clock whose installations write INTERVAL apart."""
    options = ClientOptions(
        base_url=strict.url,
        pace_writes=INTERVAL,
        etags=None,
        timeout=5.0,
        max_rate_limit_wait=3.0,
        retry=RetryPolicy(base=0.01),
    )
    return GitHubApp(AppAuth(1, pem_pkcs8), options=options)


async def _comment(gh: GitHub, n: int, repo: str = REPO) -> None:
    await gh.request("POST", f"/repos/{repo}/issues/1/comments", json={"body": f"comment {n}"})


async def test_a_write_held_up_on_its_way_does_not_let_the_next_one_catch_up(
    strict: FakeGitHub, strict_app: GitHubApp
) -> None:
    # The first write mints the installation's token, slowly: a write scheduled an
    # interval after it must still reach GitHub an interval after it does.
    strict.faults.add(r"/access_tokens$", "slow", delay=3 * INTERVAL)
    gh = strict_app.installation(1)
    await asyncio.gather(*(_comment(gh, n) for n in range(4)))
    assert strict.secondary_limits == 0
    assert len(strict.comments(REPO, 1)) == 4


async def test_retries_and_redirect_hops_of_a_write_are_paced_too(
    strict: FakeGitHub, strict_app: GitHubApp
) -> None:
    gh = strict_app.installation(1)
    # A 502 retried after 10 ms: the retry reaches GitHub again, so it waits its turn.
    strict.faults.add(r"/comments$", "server_error", method="POST")
    await _comment(gh, 1)
    # A write to a renamed repository is answered 307 and sent again to the new name.
    strict.rename_repository(REPO, "octo-org/renamed")
    await _comment(gh, 2)
    assert strict.secondary_limits == 0
    assert len(strict.comments("octo-org/renamed", 1)) == 2


async def test_writes_queued_behind_a_secondary_limit_go_one_at_a_time_after_it(
    strict: FakeGitHub, strict_app: GitHubApp
) -> None:
    strict.faults.add(r"/comments$", "secondary", retry_after=1)
    gh = strict_app.installation(1)
    await asyncio.gather(*(_comment(gh, n) for n in range(4)))
    assert strict.secondary_limits == 1, "only the injected one: the pause is not a burst"
    assert len(strict.comments(REPO, 1)) == 4


async def test_a_secondary_limit_pauses_its_installation_and_no_other(
    strict: FakeGitHub, strict_app: GitHubApp
) -> None:
    strict.faults.add(r"/hello-world/issues/1/comments$", "secondary", retry_after=2)
    paused = asyncio.create_task(_comment(strict_app.installation(1), 0))
    other = strict_app.installation(2)
    for n in range(3):
        await _comment(other, n, WIDGETS)
    assert not paused.done(), "the other installation wrote while this one sat out"
    await paused
    assert strict.secondary_limits == 1
    assert len(strict.comments(REPO, 1)) == 1


async def test_a_graphql_mutation_is_paced_after_a_comment_and_a_query_is_not(
    clock: FakeClock, paced: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client(options=paced)
    for _ in range(2):
        await gh.graphql("# says why\nmutation { viewer { login } }")
    assert clock.sleeps == [1.0]
    for _ in range(2):
        await gh.graphql("# no mutation here\nquery { viewer { login } }")
    assert clock.sleeps == [1.0]
