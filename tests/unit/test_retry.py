"""Which failures are retried, and how long the backoff is."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghbot.errors import (
    BadRequest,
    ConnectionFailed,
    Gone,
    NotFound,
    RateLimited,
    ServerError,
    Timeout,
    Unauthorized,
    ValidationFailed,
)
from ghbot.retry import RetryPolicy, describe, is_retryable


@pytest.mark.parametrize(
    "error",
    [ServerError(502, "Bad Gateway"), Timeout("timed out"), ConnectionFailed("reset")],
)
def test_server_and_network_failures_are_retryable(error: Exception) -> None:
    assert is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        BadRequest(400, "Problems parsing JSON"),
        Unauthorized(401, "Bad credentials"),
        NotFound(404, "Not Found"),
        Gone(410, "Gone"),
        ValidationFailed(422, "Validation Failed"),
        ValueError("a bug"),
    ],
)
def test_client_errors_are_not_retried(error: Exception) -> None:
    assert not is_retryable(error)
    assert not RetryPolicy().should_retry(error, 0)


def test_three_retries_by_default() -> None:
    policy = RetryPolicy()
    error = ServerError(500, "boom")
    assert [policy.should_retry(error, n) for n in range(5)] == [True, True, True, False, False]


def test_rate_limits_wait_as_long_as_github_asked_and_up_to_a_tenth_more() -> None:
    error = RateLimited(403, "secondary", kind="secondary", retry_after=42)
    assert RetryPolicy(rng=Edge(upper=False)).delay_for(error, 0) == 42
    assert RetryPolicy(rng=Edge(upper=True)).delay_for(error, 0) == pytest.approx(46.2)


@given(wait=st.floats(0, 7200), seed=st.integers())
def test_a_named_wait_is_spread_over_a_tenth_of_it_at_most_5_s(wait: float, seed: int) -> None:
    """What a pause or a reset held does not all go at the instant it ends."""
    spread = RetryPolicy(rng=random.Random(seed)).spread(wait)
    assert wait <= spread <= wait + min(wait / 10, 5.0)


def test_waits_github_named_end_at_different_instants() -> None:
    policy = RetryPolicy(rng=random.Random(3))
    assert len({policy.spread(60.0) for _ in range(20)}) == 20
    assert RetryPolicy(rng=Edge(upper=True)).spread(3600.0) == 3605.0


@given(attempt=st.integers(0, 20), seed=st.integers())
def test_backoff_grows_with_jitter_and_stays_capped(attempt: int, seed: int) -> None:
    policy = RetryPolicy(base=0.5, cap=30.0, rng=random.Random(seed))
    ceiling = min(30.0, 0.5 * 2**attempt)
    assert ceiling / 2 <= policy.backoff(attempt) <= ceiling


def test_describe_names_the_failure() -> None:
    assert describe(ServerError(500, "x")) == "server_error"
    assert describe(Timeout("x")) == "timeout"
    assert describe(KeyError("x")) == "unexpected"


def test_a_wait_github_names_is_taken_and_never_negative() -> None:
    policy = RetryPolicy()
    limited = RateLimited(429, "slow down", kind="secondary", retry_after=-3.0)
    assert is_retryable(limited) and policy.should_retry(limited, 0)
    assert policy.delay_for(limited, 0) == 0.0
    assert policy.delay_for(RateLimited(429, "x", kind="secondary", retry_after=42.0), 5) >= 42


def test_a_negative_attempt_backs_off_as_the_first() -> None:
    first, negative = RetryPolicy(rng=random.Random(7)), RetryPolicy(rng=random.Random(7))
    assert negative.backoff(-2) == first.backoff(0)


class Edge(random.Random):
    """Draws the lower or the upper end of every range."""

    def __init__(self, upper: bool) -> None:
        super().__init__(0)
        self.upper = upper

    def uniform(self, a: float, b: float) -> float:
        return b if self.upper else a


def test_the_jitter_spans_half_of_the_delay_to_all_of_it() -> None:
    for attempt, ceiling in [(0, 0.5), (3, 4.0), (10, 30.0)]:
        assert RetryPolicy(rng=Edge(upper=False)).backoff(attempt) == ceiling / 2
        assert RetryPolicy(rng=Edge(upper=True)).backoff(attempt) == ceiling


def test_a_failure_without_a_named_wait_backs_off_by_its_attempt() -> None:
    policy = RetryPolicy(rng=Edge(upper=True))
    assert policy.delay_for(ServerError(502, "bad gateway"), 0) == 0.5
    assert policy.delay_for(Timeout("read"), 4) == 8.0
