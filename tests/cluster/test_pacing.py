"""Write pacing through the real runtime, against a fake enforcing GitHub's spacing rule."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.cluster.conftest import comments, eventually, install, on_fake, payload, send

INSTALLATIONS = 10
ISSUES = 10
INTERVAL = 0.25
#: Each installation's token exchange answers this late, as GitHub's can: under the
#: old pacing, the writes scheduled after an installation's first went out with it.
MINT_DELAY = 0.6


@pytest.fixture
def strict_fake(fake: Any) -> Iterator[Any]:
    """The session's fake, refusing an installation's writes under INTERVAL apart."""
    on_fake(fake, setattr, fake.fake, "write_interval", INTERVAL)
    faults = fake.fake.faults
    slow_mint = on_fake(fake, faults.add, r"/access_tokens$", "slow", None, delay=MINT_DELAY)
    try:
        yield fake
    finally:
        on_fake(fake, setattr, fake.fake, "write_interval", None)
        on_fake(fake, faults.discard, slow_mint)


async def test_a_burst_over_many_installations_lands_whole_without_a_secondary_limit(
    deploy: Any, strict_fake: Any
) -> None:
    repos = [f"paced{n}/repo" for n in range(INSTALLATIONS)]
    for n, repo in enumerate(repos):
        install(strict_fake, 9100 + n, repo, issues=ISSUES)
    app = deploy("tests.cluster.bots:Greeter", pace_writes=INTERVAL)
    before = strict_fake.fake.secondary_limits
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(
            *(
                send(
                    app.url,
                    "issues",
                    payload("issues.opened", installation=9100 + n, repo=repo, issue__number=i),
                    guid=str(uuid.uuid4()),
                    session=session,
                )
                # One delivery per issue: an installation's handlers run side by side.
                for i in range(1, ISSUES + 1)
                for n, repo in enumerate(repos)
            )
        )
    assert {status for status, _ in answers} == {202}

    def landed() -> bool:
        return all(len(comments(strict_fake, repo)) >= ISSUES for repo in repos)

    # Ten writes an installation, a quarter second apart, after a slow token: a few
    # seconds. One secondary limit would cost its installation retry-after (60 s).
    await eventually(landed, within=30.0, every=0.25)
    took = time.monotonic() - started
    assert strict_fake.fake.secondary_limits == before
    assert all(len(comments(strict_fake, repo)) == ISSUES for repo in repos)
    assert took < ISSUES * INTERVAL + MINT_DELAY + 15.0


async def test_a_lease_s_ray_tasks_write_in_their_turns_beside_the_handler(
    deploy: Any, strict_fake: Any
) -> None:
    # Two issues of one installation at once: each handler leases two writes, gives
    # one to each of two Ray tasks (pickled to worker processes, new ones taking
    # seconds to start), waits for them, then writes itself. Each task asks the shard
    # for its write's turn. Six writes of one installation from three processes, none
    # closer than the fake allows.
    interval = 0.4
    on_fake(strict_fake, setattr, strict_fake.fake, "write_interval", interval)
    repo = "fanned/repo"
    install(strict_fake, 9200, repo, issues=2)
    app = deploy("tests.cluster.bots:FansOut", pace_writes=interval)
    before = strict_fake.fake.secondary_limits
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(
            *(
                send(
                    app.url,
                    "issues",
                    payload("issues.opened", installation=9200, repo=repo, issue__number=i),
                    guid=f"fan-{i}-{uuid.uuid4()}",
                    session=session,
                )
                for i in (1, 2)
            )
        )
    assert {status for status, _ in answers} == {202}
    await eventually(lambda: len(comments(strict_fake, repo)) >= 6, within=60.0, every=0.25)
    await asyncio.sleep(2 * interval)  # nothing more comes
    bodies = [c["body"] for c in comments(strict_fake, repo)]
    assert strict_fake.fake.secondary_limits == before
    for guid in {body.split()[-1] for body in bodies}:
        mine = [body.split()[0] for body in bodies if body.endswith(guid)]
        assert mine == ["task", "task", "own"]  # each task once, then the handler
    assert len(bodies) == 6
