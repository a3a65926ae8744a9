"""Mutating requests are paced per installation (GitHub asks for ≥ 1 s between writes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ghbot.client import ClientOptions, GitHub, GitHubApp
from ghbot.testing import FakeClock, FakeGitHub

from .conftest import REPO

COMMENTS = f"/repos/{REPO}/issues/1/comments"


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
