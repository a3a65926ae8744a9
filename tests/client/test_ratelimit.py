"""Rate limits: waits GitHub asks for, the in-line cap, budgets, leases, free 304s."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable

import pytest

from ghbot.auth import AppAuth, InstallationToken
from ghbot.budget import Budget, holding_lease
from ghbot.client import ClientOptions, GitHub, GitHubApp, Pool
from ghbot.client import retrying as retrying_module
from ghbot.client.call import meters_nothing
from ghbot.client.response import Response
from ghbot.errors import (
    ConnectionFailed,
    LeaseExhausted,
    RateLimited,
    ServerError,
    Timeout,
    Unauthorized,
)
from ghbot.logs import LogLimiter
from ghbot.ratelimit import RateLimit
from ghbot.retry import RetryPolicy
from ghbot.testing import FakeClock, FakeGitHub

from .conftest import REPO, in_flight

ISSUE = f"/repos/{REPO}/issues/1"


@pytest.mark.parametrize("status", [403, 429])
async def test_secondary_limit_with_retry_after_is_waited_out(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub], status: int
) -> None:
    fake.faults.add("/issues/1$", "secondary", status=status, retry_after=3)
    answer = await token_client().request("GET", ISSUE)
    assert answer.status == 200
    assert clock.sleeps == [3.0]


async def test_secondary_limit_without_retry_after_waits_a_minute_then_doubles(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    fake.faults.add("/issues/1$", "secondary")
    assert (await token_client().request("GET", ISSUE)).status == 200
    assert clock.sleeps == [60.0]
    fake.faults.add("/issues/1$", "secondary", count=2)
    with pytest.raises(RateLimited) as caught:
        await token_client().request("GET", ISSUE)
    assert caught.value.kind == "secondary" and caught.value.retry_after == 120.0


async def test_secondary_limits_in_a_row_double_the_wait_across_requests(
    fake: FakeGitHub, clock: FakeClock, options: ClientOptions
) -> None:
    """A handler that met a secondary limit runs again later and meets another: the
    wait doubles (60, 120, 240 s) until a request of that kind succeeds; it used to
    start at 60 s on every request, so GitHub was asked again every minute or two."""
    gh = GitHub(token=fake.create_token(1), options=options.replace(max_rate_limit_waits=0))
    fake.faults.add("/issues/1$", "secondary", count=3)
    waits = []
    for _ in range(3):
        with pytest.raises(RateLimited) as caught:
            await gh.request("GET", ISSUE)
        waits.append(caught.value.retry_after)
        clock.advance(caught.value.retry_after)
    assert waits == [60.0, 120.0, 240.0]
    assert (await gh.request("GET", ISSUE)).status == 200
    fake.faults.add("/issues/1$", "secondary")
    with pytest.raises(RateLimited) as caught:
        await gh.request("GET", ISSUE)
    assert caught.value.retry_after == 60.0  # a success ended the row


async def test_secondary_limits_answered_together_are_one_not_a_row(
    fake: FakeGitHub, clock: FakeClock, options: ClientOptions
) -> None:
    """Seven reads in flight together all meet the secondary limit: one burst, which
    pauses the installation 60 s (GitHub's "at least one minute"). Counted as seven in
    a row, it paused it 3,600 s (60 doubled six times)."""
    gh = GitHub(token=fake.create_token(1), options=options.replace(max_rate_limit_waits=0))
    fake.faults.add("/issues/1$", "secondary", count=7)
    started = clock()
    tried = await asyncio.gather(
        *(gh.request("GET", ISSUE) for _ in range(7)), return_exceptions=True
    )
    assert all(isinstance(t, RateLimited) for t in tried)
    assert [t.retry_after for t in tried if isinstance(t, RateLimited)] == [60.0] * 7
    assert gh._state.paused_until == started + 60
    clock.advance(61)
    fake.faults.add("/issues/1$", "secondary")  # a limit met after the pause: next in the row
    with pytest.raises(RateLimited) as caught:
        await gh.request("GET", ISSUE)
    assert caught.value.retry_after == 120.0


async def _limited_beside_a_queued_read(
    fake: FakeGitHub, options: ClientOptions, pause: float, max_wait: float
) -> tuple[Response | BaseException, Response | BaseException]:
    """Over one connection, a read that draws a secondary limit of `pause` seconds and
    a read queued behind it for the connection; return what each gave or raised."""
    pool = Pool(max_concurrency=1)
    gh = GitHub(
        token=fake.create_token(1),
        options=options.replace(pool=pool, max_rate_limit_waits=0, max_rate_limit_wait=max_wait),
    )
    fake.faults.add("/issues/1$", "secondary", retry_after=pause)
    try:
        first, second = await asyncio.gather(
            gh.request("GET", ISSUE), gh.request("GET", f"/repos/{REPO}"), return_exceptions=True
        )
    finally:
        await pool.close()
    return first, second


async def test_a_request_waiting_for_a_connection_is_not_sent_into_a_pause(
    fake: FakeGitHub, clock: FakeClock, options: ClientOptions
) -> None:
    """The pool has one connection: a second read waits for it while the first draws a
    secondary limit. It used to be sent as the connection came free, into the pause."""
    first, second = await _limited_beside_a_queued_read(fake, options, 120, 30)
    assert isinstance(first, RateLimited) and first.retry_after == 120.0
    assert isinstance(second, RateLimited) and "paused" in str(second)
    assert [r.path for r in fake.requests] == [ISSUE]  # the second never went


async def test_a_request_held_by_a_short_pause_goes_once_it_is_over(
    fake: FakeGitHub, clock: FakeClock, options: ClientOptions
) -> None:
    """A pause short enough to wait out in-line (30 s, under `max_rate_limit_wait`):
    the read that waited for the connection meanwhile waits the pause out, then goes."""
    first, second = await _limited_beside_a_queued_read(fake, options, 30, 60)
    assert isinstance(first, RateLimited) and first.retry_after == 30.0
    assert not isinstance(second, BaseException) and second.status == 200
    assert clock.sleeps == [30.0]  # sent after the pause, not into it


async def test_a_success_sent_before_a_limit_does_not_end_the_row(
    fake: FakeGitHub, clock: FakeClock, options: ClientOptions
) -> None:
    """A read sent with the one that met the limit, and answered with success after it,
    said nothing of GitHub after the limit: the next limit still waits twice as long
    (it ended the row, and every burst waited the first minute again)."""
    gh = GitHub(token=fake.create_token(1), options=options.replace(max_rate_limit_waits=0))
    fake.faults.add("/issues/1$", "secondary")
    fake.faults.add(f"/repos/{REPO}$", "slow", delay=0.2)
    limited, late = await asyncio.gather(
        gh.request("GET", ISSUE), gh.request("GET", f"/repos/{REPO}"), return_exceptions=True
    )
    assert isinstance(limited, RateLimited) and limited.retry_after == 60.0
    assert not isinstance(late, BaseException) and late.status == 200
    clock.advance(61)
    fake.faults.add("/issues/1$", "secondary")
    with pytest.raises(RateLimited) as caught:
        await gh.request("GET", ISSUE)
    assert caught.value.retry_after == 120.0


async def test_a_long_wait_raises_at_once_and_pauses_the_installation(
    fake: FakeGitHub,
    clock: FakeClock,
    token_client: Callable[..., GitHub],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A secondary limit longer than `max_rate_limit_wait` raises at once and pauses
    the installation; a request refused by the pause is not sent, and a WARNING names
    it (a few a minute)."""
    monkeypatch.setattr(retrying_module, "_REFUSED_LOGGED", LogLimiter(burst=5, per=60.0))
    gh = token_client()
    fake.faults.add("/issues/1$", "secondary", status=429, retry_after=120)
    with pytest.raises(RateLimited) as caught:
        await gh.request("GET", ISSUE)
    assert (caught.value.kind, caught.value.retry_after, caught.value.status) == (
        "secondary",
        120.0,
        429,
    )
    assert clock.sleeps == []
    sent = len(fake.requests)
    with (
        caplog.at_level(logging.WARNING, logger="ghbot.client"),
        pytest.raises(RateLimited, match="paused"),
    ):
        await gh.request("GET", f"/repos/{REPO}")
    assert len(fake.requests) == sent, "a paused installation sends nothing"
    refused = [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()]
    assert refused and refused[-1].startswith(f"secondary rate limit on GET /repos/{REPO}:")
    clock.advance(121)
    assert (await gh.request("GET", f"/repos/{REPO}")).status == 200


async def test_a_shorter_secondary_limit_answered_later_never_shortens_the_pause(
    fake: FakeGitHub, clock: FakeClock, options: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    """Two of one installation's requests in flight draw secondary limits: the one
    answered last asks for less, and the pause keeps the longer."""
    gh = token_client(options=options.replace(max_rate_limit_wait=30))
    fake.faults.add("/hello-world$", "secondary", retry_after=60, delay=0.2)
    fake.faults.add("/other$", "secondary", retry_after=600)
    late = await in_flight(fake, gh.request("GET", f"/repos/{REPO}"), f"/repos/{REPO}")
    with pytest.raises(RateLimited) as first:
        await gh.request("GET", "/repos/octo-org/other")
    assert not late.done()  # its 60 s limit comes after the 600 s one
    with pytest.raises(RateLimited) as second:
        await late
    assert (first.value.retry_after, second.value.retry_after) == (600, 60)
    clock.advance(120)
    sent = len(fake.requests)
    with pytest.raises(RateLimited, match="paused"):
        await gh.request("GET", f"/repos/{REPO}")
    assert len(fake.requests) == sent and gh.paused
    clock.advance(481)
    assert (await gh.request("GET", f"/repos/{REPO}")).status == 200


async def test_a_pause_lengthened_while_a_request_waits_it_out_is_waited_out_too(
    fake: FakeGitHub, clock: FakeClock, options: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    """A request waits out the installation's 10 s pause; meanwhile another draws a
    `retry-after: 30`. It used to go at the end of the 10 s, inside the new pause."""
    lengthened: list[float] = []

    async def sleep(seconds: float) -> None:
        await clock.sleep(seconds)
        if not lengthened:  # another request's answer, during this wait
            lengthened.append(clock.now + 30)
            gh._state.paused_until = lengthened[0]

    gh = token_client(options=options.replace(max_rate_limit_wait=60, sleep=sleep))
    gh._state.paused_until = clock.now + 10
    sent = len(fake.requests)
    assert (await gh.request("GET", f"/repos/{REPO}")).status == 200
    assert clock.sleeps == [10.0, 30.0] and len(fake.requests) == sent + 1
    assert fake.requests[-1].path == f"/repos/{REPO}"


async def test_one_request_sits_through_at_most_max_rate_limit_waits(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    fake.faults.add("/issues/1$", "secondary", retry_after=3, count=10)
    with pytest.raises(RateLimited) as caught:
        await token_client().request("GET", ISSUE)  # max_rate_limit_waits: 3
    assert caught.value.kind == "secondary" and clock.sleeps == [3.0, 3.0, 3.0]
    assert len(fake.requests_to(ISSUE)) == 4


async def test_max_rate_limit_wait_is_configurable(
    fake: FakeGitHub, options: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    fake.faults.add("/issues/1$", "secondary", retry_after=3)
    gh = token_client(options=options.replace(max_rate_limit_wait=0))
    with pytest.raises(RateLimited):
        await gh.request("GET", ISSUE)


async def test_primary_limit_raises_with_the_reset_and_spends_the_budget(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    fake.set_rate_limit(1, 0)
    with pytest.raises(RateLimited) as caught:
        await gh.request("GET", ISSUE)
    error = caught.value
    assert error.kind == "primary" and error.status == 403
    assert error.reset is not None and error.reset > clock()
    assert error.retry_after == pytest.approx(error.reset - clock() + 1, abs=1)
    assert gh.budgets.core.remaining == 0
    sent = len(fake.requests)
    with pytest.raises(RateLimited, match="budget is spent"):
        await gh.request("GET", f"/repos/{REPO}")
    assert len(fake.requests) == sent


async def test_primary_limit_resetting_soon_is_waited_out(
    fake: FakeGitHub, clock: FakeClock, installation: GitHub
) -> None:
    gh = installation  # its tokens are refreshed across the hour this test skips
    await gh.request("GET", f"/repos/{REPO}")
    quota = fake.quotas.get("installation:1", "core")
    clock.advance(quota.reset - clock() - 30)  # the window resets in 30 s
    quota.remaining = 0
    assert (await gh.request("GET", ISSUE)).status == 200
    assert clock.sleeps == [pytest.approx(31, abs=1)]
    assert len(fake.requests_to("/app/installations/1/access_tokens")) == 2


@pytest.mark.parametrize("ahead", [40.0, 40.7])
async def test_a_primary_limit_is_waited_out_by_githubs_clock_not_a_fast_local_one(
    fake: FakeGitHub, clock: FakeClock, auth: AppAuth, options: ClientOptions, ahead: float
) -> None:
    """The local clock 40 s ahead of GitHub's, whose window resets in 30 s: the reset
    looks 10 s past here. The wait is counted on GitHub's clock (learned from answers'
    `Date`: about 31 s, then one retry that succeeds); it was counted on the local
    clock: 1 s, and GitHub was asked again every second until it gave up. With a part
    of a second more, the budget and the wait still agree (the retry is not refused
    by the client's own budget as spent)."""
    app = GitHubApp(auth, options=options.replace(clock=lambda: clock() + ahead))
    gh = app.installation(1)  # its tokens are refreshed across the hour this test skips
    await gh.request("GET", f"/repos/{REPO}")
    quota = fake.quotas.get("installation:1", "core")
    clock.advance(quota.reset - clock() - 30)  # GitHub's window resets in 30 s
    quota.remaining = 0
    assert (await gh.request("GET", ISSUE)).status == 200
    assert clock.sleeps == [pytest.approx(31.5, abs=1.5)]
    assert len(fake.requests_to(ISSUE)) == 2  # refused once, then answered


async def test_a_spent_budget_reopens_at_githubs_reset_not_at_a_fast_local_clocks(
    fake: FakeGitHub, clock: FakeClock, auth: AppAuth, options: ClientOptions
) -> None:
    """With the local clock 40 s ahead, a budget the client counts as spent stays shut
    until GitHub's window resets (the offset learned from answers' `Date`): it used
    to reopen 40 s early and send requests GitHub refused."""
    app = GitHubApp(auth, options=options.replace(clock=lambda: clock() + 40, etags=None))
    gh = app.installation(1)
    fake.set_rate_limit(1, 2)
    await gh.request("GET", f"/repos/{REPO}")  # the budget learned: 1 left, kept back
    with pytest.raises(RateLimited) as first:
        await gh.request("GET", f"/repos/{REPO}")
    reset = fake.quotas.get("installation:1", "core").reset
    assert first.value.retry_after == pytest.approx(reset - clock(), abs=1)
    clock.advance(reset - clock() - 20)  # 20 s before GitHub's reset, 20 s past it here
    # Near enough to wait in-line: it waits the 20 s to GitHub's reset, then goes.
    assert (await gh.request("GET", f"/repos/{REPO}")).status == 200
    assert len(clock.sleeps) == 1 and 20 <= clock.sleeps[0] <= 22.01
    assert clock() >= reset


async def test_budget_refuses_before_the_margin_is_spent(
    fake: FakeGitHub, options: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client(options=options.replace(etags=None))
    fake.set_rate_limit(1, 520)
    sent = 0
    with pytest.raises(RateLimited) as caught:
        for _ in range(30):
            await gh.request("GET", f"/repos/{REPO}")
            sent += 1
    assert caught.value.kind == "primary" and caught.value.reset is not None
    # The margin is 10 % of the window's limit, 500 of 5,000, never spent: with 520
    # left it stops at 500. (It was 10 % of what was left, worked out again after
    # each request: one request's worth at the end.) The first answer tells the
    # client what is left, so the first request goes on the assumed full budget.
    assert sent == 20 and fake.rate_limit(1) == 500


async def test_a_budget_the_client_counts_as_spent_is_waited_out_when_its_reset_is_near(
    fake: FakeGitHub,
    clock: FakeClock,
    options: ClientOptions,
    token_client: Callable[..., GitHub],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`ClientOptions.max_rate_limit_wait` holds for a budget the client itself counts
    as spent as for a limit GitHub answered: its reset an hour off, the request raises
    at once, and says so in a WARNING; 10 s before it, the request waits, then goes. (It
    raised however near the reset: a handler that had written, then searched, ran
    again from the start, its write repeated.)"""
    monkeypatch.setattr(retrying_module, "_REFUSED_LOGGED", LogLimiter(burst=5, per=60.0))
    gh = token_client(options=options.replace(etags=None))
    fake.set_rate_limit(1, 2)
    await gh.request("GET", f"/repos/{REPO}")  # the budget learned: 1 left, kept back
    with (
        caplog.at_level(logging.WARNING, logger="ghbot.client"),
        pytest.raises(RateLimited) as first,
    ):
        await gh.request("GET", f"/repos/{REPO}")
    assert first.value.reset is not None and clock.sleeps == []
    assert any("not sent, the handler waits" in r.getMessage() for r in caplog.records)
    clock.advance(first.value.reset - clock() - 10)  # 10 s before the reset
    sent = len(fake.requests_to(f"/repos/{REPO}"))
    await gh.request("GET", f"/repos/{REPO}")
    assert len(clock.sleeps) == 1 and 10 <= clock.sleeps[0] <= 11.01
    assert len(fake.requests_to(f"/repos/{REPO}")) == sent + 1


async def test_a_request_refused_only_by_open_leases_waits_unless_its_task_holds_one(
    fake: FakeGitHub, clock: FakeClock, options: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    """Open leases hold all the budget has. A request of another handler's waits for
    them in-line, 10 s at a time, up to `max_rate_limit_waits`, then raises (they did
    not settle here); one of a task that holds a lease itself (`holding_lease`, set by
    `Quota.lease`) raises at once, as it would wait on its own lease."""
    gh = token_client(options=options.replace(etags=None))
    await gh.request("GET", f"/repos/{REPO}")  # the budget told by GitHub's answer
    budget = gh.budgets.core
    budget.lease(budget.available(clock()), clock())
    with pytest.raises(RateLimited, match="open leases"):
        await gh.request("GET", f"/repos/{REPO}")
    assert len(clock.sleeps) == 3 and all(10 <= s <= 11.01 for s in clock.sleeps)
    clock.sleeps.clear()
    held = holding_lease.set(True)
    try:
        with pytest.raises(RateLimited, match="open leases"):
            await gh.request("GET", f"/repos/{REPO}")
    finally:
        holding_lease.reset(held)
    assert clock.sleeps == []


async def test_budget_follows_every_answer(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    answer = await gh.request("GET", f"/repos/{REPO}")
    limit = RateLimit.from_headers(answer.headers)
    assert limit is not None and gh.budgets.core.remaining == limit.remaining == 4999
    assert gh.budgets.core.reset == limit.reset


async def test_a_304_is_served_from_cache_and_costs_nothing(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    first = await gh.request("GET", ISSUE)
    budget_after_first, quota_after_first = gh.budgets.core.remaining, fake.rate_limit(1)
    second = await gh.request("GET", ISSUE)
    assert (first.cached, second.cached) == (False, True)
    assert second.status == 200 and second.data == first.data
    assert second.data is not first.data, "each hit decodes a fresh object"
    assert fake.requests_to(ISSUE)[1].headers["If-None-Match"] == first.headers["ETag"]
    assert fake.rate_limit(1) == quota_after_first
    assert gh.budgets.core.remaining == budget_after_first


async def test_etags_are_kept_per_identity(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    await token_client().request("GET", ISSUE)
    other = await token_client().request("GET", ISSUE)  # a new token: a new identity
    assert not other.cached
    assert "If-None-Match" not in fake.requests_to(ISSUE)[1].headers


async def test_changed_resources_are_fetched_again(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    await gh.request("GET", ISSUE)
    fake.issue(REPO, 1)["title"] = "Renamed"
    again = await gh.request("GET", ISSUE)
    assert not again.cached and again.data["title"] == "Renamed"


async def test_requests_under_a_lease_spend_the_lease(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    await gh.request("GET", f"/repos/{REPO}")
    budget = gh.budgets.core
    lease = budget.lease(2, clock())
    leased = gh.with_lease(lease)
    await leased.request("GET", ISSUE)
    await leased.request("GET", f"/repos/{REPO}/issues")
    assert lease.used == 2 and budget.reserved == 0
    with pytest.raises(LeaseExhausted, match="lease is used up"):
        await leased.request("GET", f"/repos/{REPO}")
    assert budget.release(lease) == 0


async def test_a_304_under_a_lease_gives_the_unit_back(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    await gh.request("GET", ISSUE)
    lease = gh.budgets.core.lease(1, clock())
    leased = gh.with_lease(lease)
    for _ in range(3):
        assert (await leased.request("GET", ISSUE)).cached
    assert lease.used == 0 and gh.budgets.core.release(lease) == 1


async def test_each_resource_has_its_own_budget(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    await gh.request("GET", "/search/issues", params={"q": "bug"})
    await gh.graphql("query { viewer { login } }")
    assert gh.budgets.get("search").remaining == 29
    assert gh.budgets.get("graphql").remaining == 4999
    assert gh.budgets.core.remaining == 5000  # untouched


async def test_rate_limit_endpoint_is_free(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    answer = await gh.request("GET", "/rate_limit")
    assert answer.data["resources"]["core"]["remaining"] == 5000
    assert gh.budgets.core.remaining == 5000 and fake.rate_limit(1) == 5000


async def test_a_request_that_never_connected_gives_its_unit_back(
    options: ClientOptions,
) -> None:
    with socket.socket() as sock:  # a port nothing listens on any more
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gh = GitHub(token="ghs_x", options=options.replace(base_url=f"http://127.0.0.1:{port}"))
    with pytest.raises(ConnectionFailed):
        await gh.request("GET", ISSUE)
    assert gh.budgets.core.remaining == 5000, "GitHub never saw it: nothing counted"


async def test_a_request_whose_connection_timed_out_gives_its_unit_back(
    options: ClientOptions,
) -> None:
    """A host that drops the connection's SYNs: here a listening socket whose queue is
    full (Linux drops the SYNs then). The connection times out, the request was never
    sent, nothing is counted. (With only a total timeout, aiohttp raised a plain
    timeout there, and the unit stayed spent: a stand-in session raising aiohttp's
    connect timeout hid that.)"""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):  # its one place
            # 2 s to connect, 4 for it all: a stalled event loop does not make the
            # whole timeout fire first.
            once = options.replace(
                base_url=f"http://127.0.0.1:{port}", timeout=4.0, retry=RetryPolicy(max_retries=0)
            )
            gh = GitHub(token="ghs_x", options=once)
            with pytest.raises(Timeout, match="no connection within 2 s"):
                await gh.request("GET", ISSUE)
    assert gh.budgets.core.remaining == 5000, "never sent: nothing counted"


class _NoToken:
    """A token source that fails (the app-auth actor away, a key GitHub refuses)."""

    async def get(self, installation_id: int, *, force: bool = False) -> InstallationToken:
        raise Unauthorized(401, "A JSON web token could not be decoded")


async def test_a_request_whose_token_could_not_be_had_gives_its_unit_back(
    options: ClientOptions,
) -> None:
    gh = GitHub(tokens=_NoToken(), installation_id=1, options=options)
    with pytest.raises(Unauthorized):
        await gh.request("GET", ISSUE)
    assert gh.budgets.core.remaining == 5000, "never sent: nothing counted"


def test_refund_gives_a_unit_back_to_the_budget_and_its_lease() -> None:
    budget = Budget(margin=0.0)
    budget.acquire(0.0)
    budget.refund()
    assert budget.remaining == 5000
    budget.refund()  # one more than was taken (a 304 counted nowhere)
    assert budget.remaining == 5000, "never above the limit"
    lease = budget.lease(2, 0.0)
    budget.spend(lease)
    budget.refund(lease)
    assert (lease.used, budget.reserved, budget.remaining) == (0, 2, 5000)
    assert budget.release(lease) == 2 and budget.reserved == 0


async def test_requests_held_by_a_pause_do_not_all_go_at_its_end(
    fake: FakeGitHub, clock: FakeClock, options: ClientOptions
) -> None:
    """Five reads wait out a 30 s secondary-limit pause together: each waits up to 3 s
    more, drawn apart, so GitHub does not get them in one burst the instant it ends
    (they all went at its end, the burst that draws the next limit)."""
    slept: list[float] = []
    started = clock()

    async def sleep(seconds: float) -> None:  # the five sleep at once, on one clock
        slept.append(seconds)
        await asyncio.sleep(0)
        clock.now = max(clock.now, started + seconds)

    spread = RetryPolicy(base=0.5, rng=random.Random(1))
    gh = GitHub(
        token=fake.create_token(1),
        options=options.replace(max_rate_limit_waits=0, retry=spread, sleep=sleep),
    )
    fake.faults.add("/issues/1$", "secondary", retry_after=30)
    with pytest.raises(RateLimited):
        await gh.request("GET", ISSUE)
    answers = await asyncio.gather(*(gh.request("GET", f"/repos/{REPO}") for _ in range(5)))
    assert [a.status for a in answers] == [200] * 5
    assert len(slept) == 5 and all(30 <= s <= 33 for s in slept)
    assert len(set(slept)) == 5


async def test_a_budget_spent_before_any_answer_asks_github_for_its_numbers(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    """A lease's tasks used the whole assumed budget before any answer told it the
    reset: the next request asks GitHub (`GET /rate_limit`, free), which says what is
    left and when it resets, and goes. It was refused for 0 s, and a handler ran
    again 20 times a second for good, no request ever going to tell the budget."""
    gh = token_client()
    budget = gh.budgets.core
    lease = budget.lease(4500, clock())
    budget.settle(lease, 4500, clock())
    assert (await gh.request("GET", ISSUE)).status == 200
    assert [r.path for r in fake.requests] == ["/rate_limit", ISSUE]
    quota = fake.quotas.get("installation:1", "core")
    assert budget.told and budget.reset == quota.reset and budget.remaining == 4999
    assert fake.rate_limit(1) == 4999  # the question counted against nothing


async def test_a_budget_whose_reset_github_does_not_say_raises_without_waiting_on_a_guess(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    """The same, but GitHub answers `GET /rate_limit` 404 without saying rate limiting
    is off (a server without the endpoint): the refusal, whose minute is a guess, is
    raised at once, not slept on in-line, and says when to try again."""
    fake.faults.add("^/rate_limit$", "status", None, status=404)
    gh = token_client()
    budget = gh.budgets.core
    budget.settle(budget.lease(4500, clock()), 4500, clock())
    with pytest.raises(RateLimited, match="budget is spent") as caught:
        await gh.request("GET", ISSUE)
    assert caught.value.retry_after == 60.0 and caught.value.reset_after is None
    assert clock.sleeps == [] and [r.path for r in fake.requests] == ["/rate_limit"]


async def test_only_a_success_without_rate_limit_headers_stops_the_budget_counting(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    """GitHub Enterprise Server with rate limits off: its errors without the headers
    (a proxy's 502 looks the same) say nothing, a success says GitHub meters nothing,
    and once limits are on again the budget counts from GitHub's numbers."""
    fake.rate_limiting = False
    gh = token_client()
    budget = gh.budgets.core
    fake.faults.add("/issues/1$", "server_error", count=None)
    with pytest.raises(ServerError):
        await gh.request("GET", ISSUE)
    assert budget.metered and budget.remaining == 5000
    fake.faults.clear()
    assert (await gh.request("GET", ISSUE)).status == 200
    assert not budget.metered
    fake.rate_limiting = True
    await gh.request("GET", f"/repos/{REPO}")
    assert budget.metered and budget.remaining == fake.rate_limit(1)
    assert budget.reset == fake.quotas.get("installation:1", "core").reset


async def test_a_budget_spent_before_any_answer_goes_on_where_github_says_it_meters_nothing(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    """GitHub Enterprise Server with rate limiting off answers `GET /rate_limit` 404
    "Rate limiting is not enabled.": a budget spent by a lease before any answer
    stops counting, and the request goes. It was refused a minute at a time for
    good: no request went to bring the success without headers that would say so."""
    fake.rate_limiting = False
    gh = token_client()
    budget = gh.budgets.core
    budget.settle(budget.lease(4500, clock()), 4500, clock())
    assert (await gh.request("GET", ISSUE)).status == 200
    assert not budget.metered and [r.path for r in fake.requests] == ["/rate_limit", ISSUE]


async def test_a_budget_github_says_is_spent_waits_for_the_reset_it_gives(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    """GitHub's numbers agree the budget is spent: the refusal waits for their reset,
    and the next refusal asks no more (the budget knows when it reopens)."""
    gh = token_client()
    budget = gh.budgets.core
    fake.set_rate_limit(1, 400)
    budget.settle(budget.lease(4500, clock()), 4500, clock())
    with pytest.raises(RateLimited, match="budget is spent") as caught:
        await gh.request("GET", ISSUE)
    reset = fake.quotas.get("installation:1", "core").reset
    assert caught.value.retry_after == pytest.approx(reset - clock(), abs=1)
    with pytest.raises(RateLimited):
        await gh.request("GET", ISSUE)
    assert [r.path for r in fake.requests] == ["/rate_limit"]


async def test_a_request_cancelled_while_it_waits_for_a_connection_gives_its_unit_back(
    fake: FakeGitHub, clock: FakeClock, options: ClientOptions
) -> None:
    """The pool's one connection is taken: a request cancelled while it waits for it
    was never sent, and gives its unit back, to the budget and to its lease. It kept
    it: each such cancellation (a shard stopping a handler) spent a unit for good."""
    pool = Pool(max_concurrency=1)
    gh = GitHub(token=fake.create_token(1), options=options.replace(pool=pool))
    budget = gh.budgets.core
    lease = budget.lease(2, clock())
    await pool.semaphore.acquire()  # the connection is busy
    try:
        for client in (gh, gh.with_lease(lease)):
            waiting = asyncio.ensure_future(client.request("GET", ISSUE))
            for _ in range(100):
                await asyncio.sleep(0)
            assert budget.remaining == 4999 and not waiting.done()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert budget.remaining == 5000
    finally:
        pool.semaphore.release()
        await pool.close()
    assert (lease.used, budget.reserved) == (0, 2) and not fake.requests


@pytest.mark.parametrize(
    ("status", "headers", "path", "base_url", "says"),
    [
        (200, {}, "/api/v3/repos/o/r", "https://ghes.example/api/v3", True),
        (200, {}, "/api/graphql", "https://ghes.example/api/v3", True),
        (204, {}, "/issues/1", "http://127.0.0.1:9", True),  # no API prefix: every path
        # github.com meters every API answer, whatever one lacks.
        (200, {}, "/repos/o/r", "https://api.github.com", False),
        # A raw file or an upload on the GHES host is not the API's answer.
        (200, {}, "/raw/o/r/main/a.txt", "https://ghes.example/api/v3", False),
        (201, {}, "/api/uploads/repos/o/r/releases/1/assets", "https://ghes.example/api/v3", False),
        # One rate-limit header, however incomplete, says the server meters.
        (200, {"X-RateLimit-Resource": "core"}, "/api/v3/x", "https://ghes.example/api/v3", False),
        (502, {}, "/api/v3/repos/o/r", "https://ghes.example/api/v3", False),
        (304, {}, "/api/v3/repos/o/r", "https://ghes.example/api/v3", False),
    ],
)
def test_only_a_bare_success_from_a_ghes_api_says_it_meters_nothing(
    status: int, headers: dict[str, str], path: str, base_url: str, says: bool
) -> None:
    assert meters_nothing(status, headers, path, base_url) is says
