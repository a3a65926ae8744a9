"""`GET /readyz` is the journal now: PostgreSQL stopped turns it 503 within seconds (and
the refused commit is counted for `GhbotJournalFailing` and the failed shard call for
`GhbotShardCallsFailing`), and started again, 200;
deliveries are taken again without a restart."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import pytest

from tests.cluster.conftest import eventually, increase, install, payload, scrape_metrics, send
from tests.faults.conftest import private_postgres  # noqa: F401 - the fixture
from tests.faults.support import PrivatePostgres

pytestmark = pytest.mark.cluster


async def _ready_within(url: str, wanted: int, within: float) -> float:
    """Poll `/readyz` every 0.2 s until it answers `wanted`; return the seconds it took."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{url}/readyz") as answer:
                if answer.status == wanted:
                    return time.monotonic() - started
            if time.monotonic() - started > within:
                raise AssertionError(f"/readyz did not answer {wanted} within {within} s")
            await asyncio.sleep(0.2)


async def test_readyz_follows_the_journal(
    deploy: Any,
    fake: Any,
    private_postgres: PrivatePostgres,  # noqa: F811 - the fixture
) -> None:
    install(fake, 1500, "ready/repo")
    app = deploy("tests.cluster.bots:Greeter", journal_url=private_postgres.url)
    await _ready_within(app.url, 200, 30)

    before = await asyncio.to_thread(scrape_metrics)
    await asyncio.to_thread(private_postgres.stop)
    assert await _ready_within(app.url, 503, 15) < 15
    data = payload("issues.opened", installation=1500, repo="ready/repo", issue__number=1)
    assert (await send(app.url, "issues", data))[0] == 503  # not journaled: not taken
    # The refused commit is counted where GhbotJournalFailing looks (Ray's export), and
    # the ingress's call that it failed where GhbotShardCallsFailing does.
    failed = (
        "ghbot_journal_append_duration_seconds_count",
        "ghbot_shard_call_duration_seconds_count",
    )
    await eventually(
        lambda: all(
            increase(before, metrics, name, outcome="error") >= 1
            for metrics in [scrape_metrics()]
            for name in failed
        ),
        within=60,
        every=2,
    )

    await asyncio.to_thread(private_postgres.start)
    await _ready_within(app.url, 200, 60)
    guid = str(uuid.uuid4())
    assert (await send(app.url, "issues", data, guid=guid))[0] == 202
