"""Quota leases against a real FakeGitHub: fan-out bounded by the installation's budget."""

from __future__ import annotations

import asyncio
import pickle
import time

import pytest

from actors.bot import Ordering, ordering_key
from actors.quota import Quota, QuotaLease
from ghbot.auth import AppAuth
from ghbot.client import ClientOptions, GitHubApp
from ghbot.errors import RateLimited, UsageError
from ghbot.events import decode_envelope
from ghbot.testing import FakeGitHub
from tests.runtime.conftest import payload


async def test_leases_bound_fanned_out_work_and_return_what_was_not_used(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    async with FakeGitHub(app_id=1, public_key_pem=public_pem, rate_limit=100) as fake:
        fake.add_installation(7, "octo", ["repo"])
        fake.add_issue("octo/repo", "one")
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
            with pytest.raises(RateLimited, match="used up"):
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
