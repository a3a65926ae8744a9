"""At most 100 requests in flight per process, as GitHub allows; the fake enforces it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp

from ghbot.client import GitHub
from ghbot.testing import FakeGitHub

from .conftest import REPO


async def test_the_client_keeps_within_githubs_concurrency_limit(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    fake.faults.add(".", "slow", delay=0.1, count=None)
    clients = [token_client(1), token_client(2)]
    paths = [f"/repos/{REPO}", "/repos/acme/widgets"]
    answers = await asyncio.gather(
        *(clients[n % 2].request("GET", paths[n % 2]) for n in range(150))
    )
    assert {a.status for a in answers} == {200}
    assert fake.max_inflight == 100


async def test_the_fake_refuses_beyond_100_concurrent_requests(fake: FakeGitHub) -> None:
    fake.faults.add(".", "slow", delay=0.1, count=None)
    headers = {"Authorization": f"token {fake.create_token(1)}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> tuple[int, str]:
            async with session.get(f"{fake.url}/repos/{REPO}", headers=headers) as answer:
                return answer.status, (await answer.json())[
                    "message" if answer.status != 200 else "name"
                ]

        results = await asyncio.gather(*(one() for _ in range(130)))
    refused = [message for status, message in results if status == 403]
    assert 0 < len(refused) <= 30 and fake.max_inflight > 100
    assert all("secondary rate limit" in message for message in refused)
