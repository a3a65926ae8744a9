"""The circuit breaker, and one installation's trouble never slowing another."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from ghbot.breaker import CircuitBreaker, State
from ghbot.client import GitHub
from ghbot.errors import CircuitOpen, GitHubError, NotFound, RateLimited
from ghbot.ratelimit import RateLimit
from ghbot.testing import FakeClock, FakeGitHub

from .conftest import REPO, in_flight

WIDGETS = "/repos/acme/widgets"


async def test_failures_open_the_breaker_and_it_refuses_before_sending(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    breaker = CircuitBreaker(min_calls=2, open_for=30)
    gh = token_client(breaker=breaker)
    fake.faults.add("/issues/1$", "server_error", count=None)
    with pytest.raises(CircuitOpen):
        await gh.request("GET", f"/repos/{REPO}/issues/1")
    assert len(fake.requests) == 2 and breaker.state(clock()) is State.OPEN
    with pytest.raises(CircuitOpen) as caught:
        await gh.request("GET", f"/repos/{REPO}")
    assert len(fake.requests) == 2 and caught.value.retry_after > 0
    fake.faults.clear()
    clock.advance(31)
    for _ in range(3):
        await gh.request("GET", f"/repos/{REPO}")
    assert breaker.state(clock()) is State.CLOSED


async def test_client_errors_count_as_successes(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    breaker = CircuitBreaker(min_calls=2)
    gh = token_client(breaker=breaker)
    for _ in range(4):
        with pytest.raises(NotFound):
            await gh.request("GET", f"/repos/{REPO}/issues/404")
    assert breaker.state(clock()) is State.CLOSED and breaker.failure_rate(clock()) == 0


async def _timed(coro: object) -> tuple[float, object]:
    started = time.perf_counter()
    try:
        result: object = await coro  # type: ignore[misc]
    except Exception as exc:
        result = exc
    return time.perf_counter() - started, result


async def test_one_installations_open_breaker_does_not_delay_another(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    broken = CircuitBreaker(min_calls=1)
    broken.record_failure(clock())
    first = token_client(1, breaker=broken)
    second = token_client(2, breaker=CircuitBreaker())
    fake.faults.add("/widgets$", "slow", delay=0.2)  # the healthy one's answer takes a while
    healthy = await in_flight(fake, second.request("GET", WIDGETS), WIDGETS)
    with pytest.raises(CircuitOpen):
        await first.request("GET", f"/repos/{REPO}")
    assert not healthy.done()  # refused while the other's request still waits on GitHub
    assert (await healthy).status == 200
    assert [r.path for r in fake.requests] == [WIDGETS]


async def test_one_installations_spent_budget_does_not_delay_another(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    first, second = token_client(1), token_client(2)
    spent = {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": str(int(clock()) + 1800),
        "x-ratelimit-resource": "core",
    }
    first.budgets.core.observe(RateLimit.from_headers(spent), clock())
    fake.faults.add("/widgets$", "slow", delay=0.2)  # the healthy one's answer takes a while
    healthy = await in_flight(fake, second.request("GET", WIDGETS), WIDGETS)
    with pytest.raises(RateLimited) as caught:
        await first.request("GET", f"/repos/{REPO}")
    assert not healthy.done()  # refused while the other's request still waits on GitHub
    refused = caught.value
    assert (await healthy).status == 200
    assert refused.reset == int(clock()) + 1800 and refused.retry_after == pytest.approx(
        1800, abs=1
    )
    assert [r.path for r in fake.requests] == [WIDGETS]


async def test_one_installations_slow_or_limited_calls_do_not_hold_another(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    first, second = token_client(1), token_client(2)
    fake.faults.add("/hello-world$", "slow", delay=0.5)
    fake.faults.add("/other$", "secondary", retry_after=600)
    slow = await in_flight(fake, _timed(first.request("GET", f"/repos/{REPO}")), f"/repos/{REPO}")
    assert not slow.done()  # the first installation's request waits at the fake GitHub
    _, limited = await _timed(first.request("GET", "/repos/octo-org/other"))
    assert isinstance(limited, RateLimited)
    assert not slow.done()  # limited without waiting behind its own slow call
    _, answer = await _timed(second.request("GET", WIDGETS))
    assert getattr(answer, "status", None) == 200
    assert not slow.done()  # answered while the other installation's call still waits
    took_slow, slow_answer = await slow
    assert took_slow >= 0.5 and not isinstance(slow_answer, GitHubError)
