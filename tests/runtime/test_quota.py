"""Quota leases against a real FakeGitHub: fan-out bounded by the installation's budget."""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from actors.bot import InstallationActor, Ordering, on, ordering_key
from actors.quota import WRITE_SPACING, Quota, QuotaLease
from ghbot.auth import AppAuth, InstallationToken
from ghbot.breaker import CircuitBreaker, State
from ghbot.client import ClientOptions, GitHub, GitHubApp
from ghbot.errors import CircuitOpen, LeaseExhausted, RateLimited, ServerError, UsageError
from ghbot.events import Event, decode_envelope
from ghbot.journal import Journal
from ghbot.retry import RetryPolicy
from ghbot.testing import FakeClock, FakeGitHub
from tests.runtime.conftest import (
    COMMENTER_INSTALLATION,
    COMMENTER_REPO,
    batch,
    commenter_shard,
    inbound,
    payload,
)
from tests.watching import watching


@asynccontextmanager
async def _octo(public_pem: bytes, **options: Any) -> AsyncIterator[FakeGitHub]:
    """A FakeGitHub with installation 7 on octo/repo and its issue 1."""
    async with FakeGitHub(app_id=1, public_key_pem=public_pem, **options) as fake:
        fake.add_installation(7, "octo", ["repo"])
        fake.add_issue("octo/repo", "one")
        yield fake


async def _budget_learned(fake: FakeGitHub, pem_pkcs8: bytes) -> GitHub:
    """Installation 7's client, writes not paced, after one request taught it the budget."""
    options = ClientOptions(base_url=fake.url, pace_writes=None)
    gh = GitHubApp(AppAuth(1, pem_pkcs8), options=options).installation(7)
    await gh.request("GET", "/repos/octo/repo")
    return gh


async def test_leases_bound_fanned_out_work_and_return_what_was_not_used(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    async with _octo(public_pem, rate_limit=100) as fake:
        gh = await _budget_learned(fake, pem_pkcs8)  # 99 of 100 left
        budget = gh.budgets.core
        usable = budget.usable(time.time())
        assert usable == 89  # 99 less the 10 % margin, rounded down

        quota = Quota(gh)
        async with quota.lease(30) as lease:
            assert budget.reserved == 30
            with pytest.raises(RateLimited):
                async with quota.lease(usable - 30 + 1):
                    pass
            assert lease.token not in repr(lease)

            async def task(part: QuotaLease, calls: int) -> int:
                # What a Ray task on another node does with its part (it arrives pickled).
                part = pickle.loads(pickle.dumps(part))  # noqa: S301 - our own bytes
                client = part.client()
                assert client.options.pace_writes is None  # the installation's: off
                for n in range(calls):
                    # Writes: a conditional GET answered 304 would cost nothing.
                    await client.request(
                        "POST", "/repos/octo/repo/issues/1/comments", json={"body": str(n)}
                    )
                return calls

            parts = lease.split(3)
            assert [p.granted for p in parts] == [10, 10, 10]
            used = sum(await asyncio.gather(*(task(p, 4) for p in parts)))
            with pytest.raises(LeaseExhausted, match="used up"):
                await task(parts[0], 11)
            lease.report(used)
        assert budget.reserved == 0
        # The 12 requests the tasks made count; the 18 they did not came back.
        assert budget.remaining == 99 - 12


async def test_a_lease_without_a_report_counts_whole_even_when_its_block_raises(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    async with _octo(public_pem, rate_limit=100) as fake:
        gh = await _budget_learned(fake, pem_pkcs8)  # 99 of 100 left
        budget, quota = gh.budgets.core, Quota(gh)
        async with quota.lease(5):
            pass  # no report: its tasks may have made all five
        assert (budget.remaining, budget.reserved) == (94, 0)
        with pytest.raises(RuntimeError):
            async with quota.lease(5):
                raise RuntimeError("a task failed; the others' requests were made")
        assert (budget.remaining, budget.reserved) == (89, 0)
        with pytest.raises(RuntimeError):
            async with quota.lease(5) as lease:
                lease.report(2)
                raise RuntimeError("failed after its tasks reported")
        assert (budget.remaining, budget.reserved) == (87, 0)


async def test_a_leases_requests_already_seen_in_the_installations_answers_count_once(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    """GitHub counts the installation's requests together, so an answer to its own
    client in the middle of a lease shows the requests the lease's tasks made so far:
    at the lease's close they are not taken from the budget a second time."""
    async with _octo(public_pem, rate_limit=100) as fake:
        gh = await _budget_learned(fake, pem_pkcs8)  # 99 of 100 left
        budget, quota = gh.budgets.core, Quota(gh)
        async with quota.lease(10) as lease:
            client = lease.client()
            comment = ("POST", "/repos/octo/repo/issues/1/comments")
            for n in range(4):
                await client.request(*comment, json={"body": str(n)})
            await gh.request(*comment, json={"body": "own"})  # shows 99 - 4 - 1
            assert budget.remaining == 94
            for n in range(4):
                await client.request(*comment, json={"body": str(n)})
            lease.report(8)
        truth = fake.quotas.get("installation:7", "core").remaining
        assert truth == 99 - 1 - 8
        assert (budget.remaining, budget.reserved) == (truth, 0)


async def test_a_lease_whose_tasks_may_have_written_tells_the_handlers_watcher(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    """A handler's attempt that held a lease its tasks used may have written through
    them: a rate limit after it spends the attempt. One whose tasks made no request,
    or may make no write, did not."""
    async with _octo(public_pem, rate_limit=100) as fake:
        gh = await _budget_learned(fake, pem_pkcs8)
        paced = GitHubApp(
            AppAuth(1, pem_pkcs8), options=ClientOptions(base_url=fake.url, pace_writes=1.0)
        ).installation(7)
        with watching() as heard:
            async with Quota(gh).lease(5) as lease:
                lease.report(0)
            async with Quota(paced).lease(5, writes=0) as lease:
                lease.report(3)  # reads only: its tasks' clients refuse any write
            assert heard.writes == 0
            async with Quota(gh).lease(5) as lease:
                lease.report(1)
            assert heard.writes == 1
            async with Quota(gh).lease(5):
                pass  # no report: all five may have been made, writes among them
            assert heard.writes == 2


async def test_a_lease_over_the_assumed_limit_before_any_request_asks_github(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    """A handler leases 6,000 before any request told its installation's limit
    (10,000 here; 5,000 assumed): the lease asks GitHub (`GET /rate_limit`, free) and
    is granted. It was refused for a minute "waiting for GitHub's answers", which no
    request of the handler's, leasing first, would ever bring: every minute, for good."""
    async with _octo(public_pem, rate_limit=10_000) as fake:
        options = ClientOptions(base_url=fake.url, pace_writes=None)
        gh = GitHubApp(AppAuth(1, pem_pkcs8), options=options).installation(7)
        async with Quota(gh).lease(6000) as lease:
            assert lease.granted == 6000
            lease.report(0)
        assert [r.path for r in fake.requests][-1] == "/rate_limit"
        assert gh.budgets.core.limit == 10_000 and fake.rate_limit(7) == 10_000
        with pytest.raises(UsageError, match="never fits"):  # told: 9,000 at most
            async with Quota(gh).lease(9001):
                pass


async def test_a_lease_settled_where_github_meters_nothing_refuses_no_later_request(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    """GitHub Enterprise Server with rate limits off answers without `x-ratelimit-*`
    headers (and `GET /rate_limit` 404): a lease its tasks used whole takes nothing
    from the installation's budget, and the handler's requests after it go; a lease
    larger than any window fits. The settled lease spent the assumed 5,000 down to the
    margin, and every request after it was refused a minute at a time, for good: no
    answer would ever tell the budget a reset."""
    async with _octo(public_pem, rate_limiting=False) as fake:
        gh = await _budget_learned(fake, pem_pkcs8)  # a success without the headers
        async with Quota(gh).lease(4500) as lease:
            await lease.client().request("GET", "/repos/octo/repo/issues/1")
            lease.report(4500)
        for _ in range(3):
            assert (await gh.request("GET", "/repos/octo/repo/issues/1")).status == 200
        async with Quota(gh).lease(10_000) as lease:
            lease.report(10_000)
        assert (await gh.request("GET", "/repos/octo/repo")).status == 200
        assert "/rate_limit" not in [r.path for r in fake.requests]
        assert gh.budgets.core.reserved == 0


async def test_a_lease_before_any_request_fits_where_github_says_it_meters_nothing(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    """A handler leases 6,000 first on GitHub Enterprise Server with rate limiting
    off: `GET /rate_limit`, asked, answers 404 "Rate limiting is not enabled.", and
    the lease is granted. It was refused a minute at a time for good (5,000 assumed,
    and no answer would ever tell the limit)."""
    async with _octo(public_pem, rate_limiting=False) as fake:
        options = ClientOptions(base_url=fake.url, pace_writes=None)
        gh = GitHubApp(AppAuth(1, pem_pkcs8), options=options).installation(7)
        async with Quota(gh).lease(6000) as lease:
            lease.report(6000)
        assert (await gh.request("GET", "/repos/octo/repo")).status == 200
        assert [r.path for r in fake.requests][-2:] == ["/rate_limit", "/repos/octo/repo"]


class _FailingTokens:
    """A token source whose exchange GitHub answers 502, its retries spent."""

    async def get(self, installation_id: int, *, force: bool = False) -> InstallationToken:
        url = f"/app/installations/{installation_id}/access_tokens"
        raise ServerError(502, "Bad Gateway", method="POST", url=url)


async def test_a_lease_whose_token_github_fails_to_exchange_opens_the_breaker(
    public_pem: bytes,
) -> None:
    """A handler that leases first, its installation's token not to be had (GitHub
    fails the exchange): the lease raises `CircuitOpen` and the installation's breaker
    opens, so the delivery waits as in an outage, as a request's would. It raised the
    `ServerError`, an attempt spent each time, dead-lettered within seconds."""
    async with _octo(public_pem) as fake:
        options = ClientOptions(base_url=fake.url, pace_writes=None)
        breaker = CircuitBreaker(name="installation 7")
        gh = GitHub(tokens=_FailingTokens(), installation_id=7, options=options, breaker=breaker)
        with pytest.raises(CircuitOpen, match="installation 7: no token"):
            async with Quota(gh).lease(10):
                pass
        assert breaker.state(options.clock()) is State.OPEN
        assert gh.budgets.core.reserved == 0  # the lease given back


def test_a_report_beyond_the_grant_is_refused() -> None:
    lease = QuotaLease(installation_id=1, granted=5, base_url="http://x", token="t" * 40)
    with pytest.raises(UsageError):
        lease.report(6)
    with pytest.raises(UsageError):
        lease.report(-1)
    with pytest.raises(UsageError):
        lease.report(2.5)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        lease.split(0)


async def test_a_lease_of_a_part_of_a_request_is_refused_before_it_holds_any(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    """`lease(2.5)` was granted, then its close raised `TypeError` and never gave the
    grant back: every later lease of the installation had less room."""
    async with _octo(public_pem, rate_limit=100) as fake:
        gh = await _budget_learned(fake, pem_pkcs8)  # 99 of 100 left
        budget, quota = gh.budgets.core, Quota(gh)
        for n, writes in ((2.5, 0), ("3", 0), (3, 1.5)):
            with pytest.raises(UsageError, match="whole requests and writes"):
                async with quota.lease(n, writes=writes):  # type: ignore[arg-type]
                    pass
        assert (budget.remaining, budget.reserved) == (99, 0)


def test_a_split_gives_the_remainders_to_the_first_part() -> None:
    lease = QuotaLease(installation_id=1, granted=10, base_url="http://x", token="t" * 40, writes=5)
    parts = lease.split(3)
    assert [p.granted for p in parts] == [4, 3, 3]
    assert [p.writes for p in parts] == [3, 1, 1]


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        ("issue", "186853002#1"),
        ("repository", "186853002"),
        ("installation", ""),
        (lambda name, envelope: f"{name}:{envelope.sender.login}", "issues:Codertocat"),
    ],
)
def test_ordering_keys(ordering: Ordering, expected: str) -> None:
    envelope = decode_envelope(payload("issues.opened", issue__number=1))
    assert ordering_key(ordering, "issues", envelope) == expected


COMMENTS = "/repos/octo/repo/issues/1/comments"


class InProcessTurns:
    """A `TurnSource` for tests: the turn from the installation's client in this
    process, as a shard's `grant_write` gives it. Picklable (by reference), as a
    lease's turn source must be to travel to a task."""

    clients: ClassVar[dict[int, GitHub]] = {}
    asked: ClassVar[int] = 0

    async def __call__(self, installation_id: int) -> None:
        type(self).asked += 1
        github = self.clients[installation_id]
        await github.grant_write((github.options.pace_writes or 0.0) * WRITE_SPACING)


async def test_a_leases_writes_take_turns_in_the_installations_write_lane_spaced_at_github(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    # GitHub's rule, as the fake keeps it: an installation's writes 0.2 s apart, by arrival.
    async with _octo(public_pem, write_interval=0.2) as fake:
        options = ClientOptions(base_url=fake.url, pace_writes=0.2)
        gh = GitHubApp(AppAuth(1, pem_pkcs8), options=options).installation(7)
        InProcessTurns.clients[7], InProcessTurns.asked = gh, 0
        await gh.request("POST", COMMENTS, json={"body": "handler 1"})

        async def task(part: QuotaLease, late: float) -> int:
            part = pickle.loads(pickle.dumps(part))  # noqa: S301 - our own bytes
            assert part.local is None  # no shortcut: the turns are asked for
            await asyncio.sleep(late)  # a task starting late loses nothing
            client = part.client()  # paced as the installation is
            for n in range(2):
                await client.request("POST", COMMENTS, json={"body": f"task {n}"})
            return 2

        async with Quota(gh, turns=InProcessTurns()).lease(20, writes=4) as lease:
            assert lease.writes == 4
            parts = lease.split(2)
            assert [p.writes for p in parts] == [2, 2]
            # The tasks write at once, one of them a second late, and the handler too.
            own = asyncio.create_task(gh.request("POST", COMMENTS, json={"body": "handler 2"}))
            tasks = (task(part, late) for part, late in zip(parts, (0.0, 1.0), strict=True))
            lease.report(sum(await asyncio.gather(*tasks)))
            await own
        assert fake.secondary_limits == 0  # no two writes came too close
        assert InProcessTurns.asked == 4  # one turn a write
        bodies = [r.json["body"] for r in fake.requests_to(COMMENTS, "POST")]
        assert bodies[0] == "handler 1"
        assert sorted(bodies[1:]) == ["handler 2", "task 0", "task 0", "task 1", "task 1"]


async def test_a_task_writing_beyond_its_writes_is_refused_and_may_still_read(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    async with _octo(public_pem) as fake:
        options = ClientOptions(base_url=fake.url, pace_writes=0.05)
        gh = GitHubApp(AppAuth(1, pem_pkcs8), options=options).installation(7)
        quota = Quota(gh)
        with pytest.raises(UsageError, match="cannot hold 3 writes"):
            async with quota.lease(2, writes=3):
                pass
        async with quota.lease(5, writes=1) as lease:
            client = lease.client()
            assert client.options.pace_writes == 0.05  # the installation's interval
            await client.request("POST", COMMENTS, json={"body": "the one"})
            with pytest.raises(LeaseExhausted, match="no write left"):
                await client.request("POST", COMMENTS, json={"body": "one too many"})
            await client.request("GET", "/repos/octo/repo")  # reads take none
            # The refused write was never sent: its unit of the lease came back.
            assert client._lease is not None and client._lease.used == 2
        async with quota.lease(5) as lease:  # no writes asked for: none allowed
            with pytest.raises(LeaseExhausted, match="no write left"):
                await lease.client().request("POST", COMMENTS, json={"body": "no"})
        async with quota.lease(5, writes=1) as lease:
            # Sent to a task with nowhere to ask for turns (no shard): no write.
            elsewhere = pickle.loads(pickle.dumps(lease))  # noqa: S301 - our own bytes
            with pytest.raises(LeaseExhausted, match="nowhere to ask"):
                await elsewhere.client().request("POST", COMMENTS, json={"body": "no"})
        assert [r.json["body"] for r in fake.requests_to(COMMENTS, "POST")] == ["the one"]
        # Every attempt counts: the retry of a write GitHub failed (a 502) is a second
        # write, which a lease of one refuses.
        fake.faults.add(COMMENTS, "server_error", 1, method="POST")
        async with quota.lease(5, writes=1) as lease:
            with pytest.raises(LeaseExhausted, match="no write left"):
                await lease.client().request("POST", COMMENTS, json={"body": "failed once"})
        posts = [r.json["body"] for r in fake.requests_to(COMMENTS, "POST")]
        assert posts == ["the one", "failed once"]  # sent once, not retried


async def test_a_lease_keeps_the_installations_clock_in_process_and_wall_time_elsewhere(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    async with _octo(public_pem) as fake:
        clock = FakeClock(start=time.time() + 1000.0)  # a test's clock, far ahead
        options = ClientOptions(base_url=fake.url, pace_writes=1.0, clock=clock, sleep=clock.sleep)
        gh = GitHubApp(AppAuth(1, pem_pkcs8), options=options).installation(7)
        async with Quota(gh, turns=InProcessTurns()).lease(5, writes=2) as lease:
            # In the same process (a BotHarness test), on the test's clock: no real wait.
            started = clock.now
            client = lease.client()
            for n in range(2):
                await client.request("POST", COMMENTS, json={"body": str(n)})
            assert clock.now >= started + 1.0 * WRITE_SPACING  # the second turn waited
            assert lease.split(2)[1].client().options.clock is clock  # its parts too
            # Sent to a Ray task, the lease keeps wall-clock time and its turn source.
            elsewhere = pickle.loads(pickle.dumps(lease))  # noqa: S301 - our own bytes
            assert elsewhere.local is None and elsewhere.client().options.clock is time.time
            assert isinstance(elsewhere.turns, InProcessTurns)
            assert elsewhere.writes == lease.writes and elsewhere.token == lease.token
        assert len(fake.requests_to(COMMENTS, "POST")) == 2


#: The apps whose token caches `AppTokens` reads, by name (a stand-in for the app-auth
#: actor a lease's Ray task asks).
_APPS: dict[str, GitHubApp] = {}


@dataclass(frozen=True)
class AppTokens:
    """A picklable `LeaseTokens` over an app of `_APPS`."""

    name: str

    async def __call__(self, installation_id: int, force: bool) -> InstallationToken:
        return await _APPS[self.name].tokens.get(installation_id, force=force)


async def test_a_leases_task_gets_the_next_token_once_the_leases_is_near_expiry(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    # Tokens live 5 minutes and 2 s: the lease's is usable for 2 s (GitHub's live an
    # hour, and a lease's has at least 5 minutes left: a task of over 5 minutes).
    async with _octo(public_pem, token_lifetime=302) as fake:
        app = GitHubApp(AppAuth(1, pem_pkcs8), options=ClientOptions(base_url=fake.url))
        _APPS["octo"] = app
        async with Quota(app.installation(7), tokens=AppTokens("octo")).lease(5) as lease:
            assert lease.expires_at is not None and lease.token not in repr(lease)
            elsewhere = pickle.loads(pickle.dumps(lease))  # noqa: S301 - our own bytes
            client = elsewhere.client()
            await client.request("GET", "/repos/octo/repo")
            await asyncio.sleep(2.1)
            await client.request("GET", "/repos/octo/repo")
            lease.report(2)
        first, second = [r.headers["Authorization"] for r in fake.requests_to("/repos/octo/repo")]
        assert first == f"token {lease.token}" and second != first
        assert second == f"token {(await app.tokens.get(7)).token}"  # the app's current one


@dataclass(frozen=True)
class CountedTokens:
    """`AppTokens` that lists each call's `force`."""

    name: str
    forced: ClassVar[list[bool]] = []

    async def __call__(self, installation_id: int, force: bool) -> InstallationToken:
        self.forced.append(force)
        return await _APPS[self.name].tokens.get(installation_id, force=force)


async def test_a_401_on_a_leases_token_minted_seconds_ago_is_propagation_in_its_task(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    """The lease's token reached its task without `minted_at`, so it never counted as
    fresh there: GitHub's 401 while a just-minted token propagates was taken for bad
    credentials, and a token other than it was asked for at once."""
    async with _octo(public_pem) as fake:
        app = GitHubApp(AppAuth(1, pem_pkcs8), options=ClientOptions(base_url=fake.url))
        _APPS["counted"] = app
        CountedTokens.forced.clear()
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        async with Quota(app.installation(7), tokens=CountedTokens("counted")).lease(5) as lease:
            elsewhere = pickle.loads(pickle.dumps(lease))  # noqa: S301 - our own bytes
            client = elsewhere.split(1)[0].client(sleep=sleep)
            fake.faults.add("/repos/octo/repo$", "unauthorized")
            assert (await client.request("GET", "/repos/octo/repo")).status == 200
            lease.report(2)
        assert slept == [0.5] and CountedTokens.forced == []  # waited, asked for none


@dataclass(frozen=True)
class NoTokens:
    """A `LeaseTokens` that cannot answer (the app-auth actor being replaced)."""

    async def __call__(self, installation_id: int, force: bool) -> InstallationToken:
        raise ConnectionError("the app-auth actor is not there")


async def test_a_leases_task_keeps_its_token_while_no_next_one_can_be_had(
    public_pem: bytes, pem_pkcs8: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with _octo(public_pem, token_lifetime=302) as fake:
        app = GitHubApp(AppAuth(1, pem_pkcs8), options=ClientOptions(base_url=fake.url))
        async with Quota(app.installation(7), tokens=NoTokens()).lease(5) as lease:
            client = pickle.loads(pickle.dumps(lease)).client()  # noqa: S301 - our own bytes
            await asyncio.sleep(2.1)  # under 5 minutes left: it asks, and is not answered
            with caplog.at_level(logging.WARNING, logger="ghbot.quota"):
                assert (await client.request("GET", "/repos/octo/repo")).status == 200
            lease.report(1)
        [sent] = fake.requests_to("/repos/octo/repo")
        assert sent.headers["Authorization"] == f"token {lease.token}"
        assert "no new token for a quota lease's task yet (ConnectionError)" in caplog.text


class OverLeases(InstallationActor):
    """Lease one write, then write twice from it: the second has none left."""

    max_attempts = 2
    runs = 0

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        type(self).runs += 1
        async with self.quota.lease(4, writes=1) as lease:
            client = lease.client()
            for text in ("one", "two"):
                await client.request("POST", SHARD_COMMENTS, json={"body": text})


SHARD_COMMENTS = f"/repos/{COMMENTER_REPO}/issues/1/comments"


async def test_a_handler_beyond_its_lease_fails_its_attempts_and_is_dead_lettered(
    journal: Journal, fake: FakeGitHub
) -> None:
    # Taken for GitHub's rate limit, the refusal was waited out and the handler run
    # again, without end (each run leasing again and writing again).
    OverLeases.runs = 0
    retry = RetryPolicy(base=0.01, cap=0.01)
    shard = commenter_shard(journal, fake, OverLeases, retry=retry, pace_writes=0.05)
    await shard.start()
    body = payload("issues.opened", installation=COMMENTER_INSTALLATION, issue__number=1)
    assert await shard.ingest(batch(inbound(OverLeases, "issues", body))) == ["accepted"]
    async with asyncio.timeout(20):
        await shard.wait_idle()
    [dead] = await shard.dead_letters()
    await shard.close()
    assert OverLeases.runs == 2 and dead["attempts"] == 2
    assert dead["error_type"] == "LeaseExhausted"
    assert [r.json["body"] for r in fake.requests_to(SHARD_COMMENTS, "POST")] == ["one", "one"]
