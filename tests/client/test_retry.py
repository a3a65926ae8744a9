"""Retries of 5xx answers, timeouts and dropped connections, with backoff and jitter."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import pytest

from ghbot.client import ClientOptions, GitHub
from ghbot.errors import ConnectionFailed, ServerError, Timeout
from ghbot.retry import RetryPolicy
from ghbot.testing import FakeClock, FakeGitHub

from .conftest import REPO

ISSUE = f"/repos/{REPO}/issues/1"


@pytest.mark.parametrize("status", [500, 502])
async def test_server_errors_are_retried_with_growing_jittered_backoff(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub], status: int
) -> None:
    fake.faults.add("/issues/1$", "server_error", count=2, status=status)
    answer = await token_client().request("GET", ISSUE)
    assert answer.status == 200
    assert len(fake.requests_to(ISSUE)) == 3
    first, second = clock.sleeps
    assert 0.25 <= first <= 0.5 and 0.5 <= second <= 1.0


async def test_server_errors_raise_after_max_retries(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    fake.faults.add("/comments$", "server_error", count=None, status=503)
    with pytest.raises(ServerError) as caught:
        await token_client().request("POST", f"{ISSUE}/comments", json={"body": "x"})
    assert caught.value.status == 503 and caught.value.method == "POST"
    assert len(clock.sleeps) == 3
    assert len(fake.requests_to(f"{ISSUE}/comments")) == 4
    assert fake.comments(REPO, 1) == []


async def test_max_retries_comes_from_the_policy(
    fake: FakeGitHub, options: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    fake.faults.add("/issues/1$", "server_error", count=None)
    gh = token_client(options=options.replace(retry=RetryPolicy(max_retries=1)))
    with pytest.raises(ServerError):
        await gh.request("GET", ISSUE)
    assert len(fake.requests_to(ISSUE)) == 2


async def test_timeouts_are_retried(
    fake: FakeGitHub, options: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    fake.faults.add("/issues/1$", "slow", delay=0.3)
    gh = token_client(options=options.replace(timeout=0.05))
    answer = await gh.request("GET", ISSUE)
    # Two requests: the first, cut by the timeout, was tried again (had it waited for
    # the slow answer, that answer would have been the only request).
    assert answer.status == 200 and len(fake.requests_to(ISSUE)) == 2


async def test_persistent_timeouts_raise_timeout(
    fake: FakeGitHub,
    options: ClientOptions,
    token_client: Callable[..., GitHub],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.faults.add("/issues/1$", "slow", delay=0.2, count=None)
    gh = token_client(options=options.replace(timeout=0.05, retry=RetryPolicy(max_retries=1)))
    with caplog.at_level(logging.WARNING, logger="ghbot.client"), pytest.raises(Timeout) as caught:
        await gh.request("GET", ISSUE)
    assert caught.value.method == "GET" and caught.value.url.endswith(ISSUE)
    assert "no answer within 0.05 s" in str(caught.value)
    # The retry's line says which (docs/operations.md's GhbotApiErrorRateHigh runbook
    # tells a timeout from a connection that could not be made by it).
    [retried] = [r for r in caplog.records if r.getMessage().startswith("retrying")]
    assert retried.getMessage().startswith(f"retrying GET {ISSUE} after no answer within 0.05 s")
    assert retried.error_type == "Timeout"  # type: ignore[attr-defined]


async def test_dropped_connections_are_retried(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    fake.faults.add("/issues/1$", "drop", count=2)
    answer = await token_client().request("GET", ISSUE)
    assert answer.status == 200
    # aiohttp itself resends once when a reused keep-alive connection was closed.
    assert len(fake.requests_to(ISSUE)) == 3 and len(clock.sleeps) <= 2


async def test_persistent_drops_raise_connection_failed(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    fake.faults.add("/issues/1$", "drop", count=None)
    with pytest.raises(ConnectionFailed) as caught:
        await token_client().request("GET", ISSUE)
    assert caught.value.url.endswith(ISSUE)
    assert len(clock.sleeps) == 3


async def test_refused_connections_raise_connection_failed(options: ClientOptions) -> None:
    gh = GitHub(token="ghs_x", options=options.replace(base_url="http://127.0.0.1:9"))
    with pytest.raises(ConnectionFailed, match=re.escape("GET http://127.0.0.1:9/")):
        await gh.request("GET", "/")
