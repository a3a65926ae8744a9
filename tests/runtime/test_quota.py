"""Quota leases against a real FakeGitHub: fan-out bounded by the installation's budget."""

from __future__ import annotations

import asyncio
import itertools
import pickle
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from actors.bot import InstallationActor, Ordering, on, ordering_key
from actors.quota import WRITE_SPACING, Quota, QuotaLease
from ghbot.auth import AppAuth
from ghbot.client import ClientOptions, GitHubApp
from ghbot.errors import LeaseExhausted, RateLimited, UsageError
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


@asynccontextmanager
async def _octo(public_pem: bytes, **options: Any) -> AsyncIterator[FakeGitHub]:
    """A FakeGitHub with installation 7 on octo/repo and its issue 1."""
    async with FakeGitHub(app_id=1, public_key_pem=public_pem, **options) as fake:
        fake.add_installation(7, "octo", ["repo"])
        fake.add_issue("octo/repo", "one")
        yield fake


async def test_leases_bound_fanned_out_work_and_return_what_was_not_used(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    async with _octo(public_pem, rate_limit=100) as fake:
        options = ClientOptions(base_url=fake.url, pace_writes=None)
        gh = GitHubApp(AppAuth(1, pem_pkcs8), options=options).installation(7)
        await gh.request("GET", "/repos/octo/repo")  # learn the budget: 99 of 100 left
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
                client = part.client(pace_writes=None)
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


def test_a_report_beyond_the_grant_is_refused() -> None:
    lease = QuotaLease(installation_id=1, granted=5, base_url="http://x", token="t" * 40)
    with pytest.raises(UsageError):
        lease.report(6)
    with pytest.raises(UsageError):
        lease.split(0)


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


async def test_a_leases_writes_go_in_the_installations_write_lane_spaced_at_github(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    # GitHub's rule, as the fake keeps it: an installation's writes 0.2 s apart, by arrival.
    async with _octo(public_pem, write_interval=0.2) as fake:
        options = ClientOptions(base_url=fake.url, pace_writes=0.2)
        gh = GitHubApp(AppAuth(1, pem_pkcs8), options=options).installation(7)
        await gh.request("POST", COMMENTS, json={"body": "handler 1"})

        async def task(part: QuotaLease) -> int:
            part = pickle.loads(pickle.dumps(part))  # noqa: S301 - our own bytes
            client = part.client()  # paced as the installation is
            for n in range(2):
                await client.request("POST", COMMENTS, json={"body": f"task {n}"})
            return 2

        async with Quota(gh).lease(20, writes=4) as lease:
            assert lease.write_slots is not None and len(lease.write_slots) == 4
            gaps = [b - a for a, b in itertools.pairwise(lease.write_slots)]
            assert gaps == pytest.approx([0.2 * WRITE_SPACING] * 3)
            # A new client (a successor's) would not know of them: not settled.
            assert gh.writes_reserved and not gh.settled
            parts = lease.split(2)
            assert [p.write_slots for p in parts] == [
                lease.write_slots[0::2],
                lease.write_slots[1::2],
            ]
            # The tasks write at once, and the handler too, meanwhile.
            own = asyncio.create_task(gh.request("POST", COMMENTS, json={"body": "handler 2"}))
            lease.report(sum(await asyncio.gather(*(task(p) for p in parts))))
            await own
        assert fake.secondary_limits == 0  # no two writes came too close
        bodies = [r.json["body"] for r in fake.requests_to(COMMENTS, "POST")]
        # The handler's second write waited for the slots set aside before it.
        assert bodies[0] == "handler 1" and bodies[-1] == "handler 2"
        assert sorted(bodies[1:-1]) == ["task 0", "task 0", "task 1", "task 1"]


async def test_a_task_writing_beyond_its_slots_is_refused_and_may_still_read(
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
            await client.request("POST", COMMENTS, json={"body": "the one"})
            with pytest.raises(LeaseExhausted, match="no write slot left"):
                await client.request("POST", COMMENTS, json={"body": "one too many"})
            await client.request("GET", "/repos/octo/repo")  # reads take no slot
        async with quota.lease(5) as lease:  # no writes asked for: none allowed
            with pytest.raises(LeaseExhausted, match="no write slot left"):
                await lease.client().request("POST", COMMENTS, json={"body": "no"})
        assert [r.json["body"] for r in fake.requests_to(COMMENTS, "POST")] == ["the one"]


async def test_a_slot_passed_by_more_than_half_an_interval_is_skipped(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    async with _octo(public_pem) as fake:
        token = fake.create_token(7)
        now = time.time()
        late = QuotaLease(
            installation_id=7,
            granted=5,
            base_url=fake.url,
            token=token,
            write_slots=[now - 10.0, now + 0.3],
            pace_writes=1.0,
        )
        client = late.client()
        await client.request("POST", COMMENTS, json={"body": "at the second slot"})
        assert time.time() >= now + 0.3  # it waited for the slot it could still take
        with pytest.raises(LeaseExhausted, match="no write slot left"):
            await client.request("POST", COMMENTS, json={"body": "none left"})


async def test_a_lease_keeps_the_installations_clock_in_process_and_wall_time_elsewhere(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    async with _octo(public_pem) as fake:
        clock = FakeClock(start=time.time() + 1000.0)  # a test's clock, far ahead
        options = ClientOptions(base_url=fake.url, pace_writes=1.0, clock=clock, sleep=clock.sleep)
        gh = GitHubApp(AppAuth(1, pem_pkcs8), options=options).installation(7)
        async with Quota(gh).lease(5, writes=2) as lease:
            spacing = 1.0 * WRITE_SPACING  # the first a spacing ahead: time for tasks to start
            assert lease.write_slots == [clock.now + spacing, clock.now + 2 * spacing]
            # In the same process (a BotHarness test), on the test's clock: no real wait.
            client = lease.client()
            for n in range(2):
                await client.request("POST", COMMENTS, json={"body": str(n)})
            assert clock.now >= lease.write_slots[1]
            # Sent to a Ray task, the lease keeps wall-clock time.
            elsewhere = pickle.loads(pickle.dumps(lease))  # noqa: S301 - our own bytes
            assert elsewhere.local is None and elsewhere.client().options.clock is time.time
            assert elsewhere.write_slots == lease.write_slots and elsewhere.token == lease.token
        assert len(fake.requests_to(COMMENTS, "POST")) == 2


class OverLeases(InstallationActor):
    """Lease one write slot, then write twice from it: the second has no slot."""

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
