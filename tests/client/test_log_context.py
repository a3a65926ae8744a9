"""The client's lines carry the delivery's fields (`log_context`) at the documented levels."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from ghbot import logs
from ghbot.breaker import CircuitBreaker
from ghbot.client import ClientOptions, GitHub
from ghbot.errors import CircuitOpen, Unauthorized
from ghbot.testing import FakeGitHub

from .conftest import REPO

ISSUE = f"/repos/{REPO}/issues/1"
DELIVERY = {
    "event_id": "guid-7",
    "installation_id": 1,
    "repository": REPO,
    "operation": "welcome",
}


class Lines:
    """JSON lines of the ``ghbot`` loggers, at a level a test chooses."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self.handler = logging.StreamHandler(self.out)
        self.handler.setFormatter(logs.JsonFormatter())

    def all(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]

    def matching(self, text: str) -> list[dict[str, object]]:
        return [line for line in self.all() if text in str(line["message"])]


@pytest.fixture
def lines() -> Iterator[Lines]:
    ghbot = logging.getLogger("ghbot")
    level, propagate = ghbot.level, ghbot.propagate
    captured = Lines()
    ghbot.addHandler(captured.handler)
    ghbot.setLevel(logging.INFO)
    yield captured
    ghbot.removeHandler(captured.handler)
    ghbot.setLevel(level)
    ghbot.propagate = propagate


async def test_a_retry_line_carries_the_delivery_fields_at_warning(
    fake: FakeGitHub, token_client: Callable[..., GitHub], lines: Lines
) -> None:
    fake.faults.add("/issues/1$", "server_error", count=1)
    with logs.log_context(**DELIVERY):
        assert (await token_client().request("GET", ISSUE)).status == 200
    [line] = lines.matching("retrying")
    assert line["level"] == "warning" and line["error_type"] == "ServerError"
    assert {k: line[k] for k in DELIVERY} == DELIVERY


async def test_a_rate_limit_line_carries_the_delivery_fields(
    fake: FakeGitHub, token_client: Callable[..., GitHub], lines: Lines
) -> None:
    fake.faults.add("/issues/1$", "secondary", count=1, retry_after=1)
    with logs.log_context(**DELIVERY):
        await token_client().request("GET", ISSUE, params={"client_secret": "s3cr3t"})
    [line] = lines.matching("rate limit")
    assert line["level"] == "warning" and line["event_id"] == "guid-7"
    assert line["operation"] == "welcome"
    # The path only, as the request lines: a query can carry what must not be logged.
    assert line["message"] == f"secondary rate limit on GET {ISSUE}; waiting 1 s"
    assert (line["error_type"], line["http_status"]) == ("RateLimited", 403)
    assert "s3cr3t" not in lines.out.getvalue()


async def test_lines_outside_a_context_carry_none_of_its_fields(
    fake: FakeGitHub, token_client: Callable[..., GitHub], lines: Lines
) -> None:
    fake.faults.add("/issues/1$", "server_error", count=1)
    with logs.log_context(**DELIVERY):
        pass
    await token_client().request("GET", ISSUE)
    [line] = lines.matching("retrying")
    assert "event_id" not in line and "operation" not in line


async def test_requests_are_logged_at_debug_only_when_debug_is_enabled(
    token_client: Callable[..., GitHub], lines: Lines
) -> None:
    gh = token_client()
    await gh.request("GET", ISSUE, params={"client_secret": "s3cr3t"})
    assert lines.matching("GET") == []
    logging.getLogger("ghbot").setLevel(logging.DEBUG)
    with logs.log_context(**DELIVERY):
        await gh.request("GET", ISSUE, params={"client_secret": "s3cr3t"})
    [line] = lines.matching(f"GET {ISSUE}")
    assert line["level"] == "debug" and line["http_status"] == 304  # the ETag's
    assert isinstance(line["duration_ms"], float) and line["event_id"] == "guid-7"
    assert "s3cr3t" not in lines.out.getvalue()


async def test_token_cache_hits_and_misses_are_logged_at_debug(
    installation: GitHub, lines: Lines
) -> None:
    await installation.request("GET", ISSUE)
    assert lines.matching("token cache") == []
    logging.getLogger("ghbot").setLevel(logging.DEBUG)
    await installation.request("GET", ISSUE)
    [line] = lines.matching("token cache")
    assert line["message"] == "installation token cache hit" and line["level"] == "debug"
    assert line["installation_id"] == 1


async def test_a_refused_token_is_logged_at_error(
    fake: FakeGitHub, options: ClientOptions, lines: Lines
) -> None:
    with pytest.raises(Unauthorized):
        await GitHub(token="ghs_revoked", options=options).request("GET", f"/repos/{REPO}")
    [line] = lines.matching("refused")
    assert line["level"] == "error" and line["error_type"] == "Unauthorized"
    assert line["http_status"] == 401


async def test_the_context_reaches_tasks_created_inside_it(lines: Lines) -> None:
    import asyncio

    async def deep() -> None:
        logging.getLogger("ghbot.deep").warning("from a task")

    with logs.log_context(**DELIVERY):
        await asyncio.create_task(deep())
    [line] = lines.matching("from a task")
    assert line["repository"] == REPO


async def test_a_breaker_line_carries_the_delivery_fields(
    fake: FakeGitHub, token_client: Callable[..., GitHub], lines: Lines
) -> None:
    from actors.github import InstallationClients

    on_change = InstallationClients._logger("inst-1")
    gh = token_client(breaker=CircuitBreaker(min_calls=2, open_for=30, on_change=on_change))
    fake.faults.add("/issues/1$", "server_error", count=None)
    with logs.log_context(**DELIVERY), pytest.raises(CircuitOpen):
        await gh.request("GET", ISSUE)
    [line] = lines.matching("circuit")
    assert line["level"] == "warning" and line["message"] == "inst-1: circuit closed -> open"
    assert {k: line[k] for k in DELIVERY} == DELIVERY
