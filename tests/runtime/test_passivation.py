"""Passivation never forgets what GitHub asked of an installation: write spacing, pauses."""

from __future__ import annotations

from typing import Any

from actors.shard import ShardCore
from ghbot.client import ClientOptions, GitHub
from ghbot.journal import Journal
from ghbot.testing import FakeClock, FakeGitHub
from tests.runtime.conftest import COMMENTER_INSTALLATION as INSTALLATION
from tests.runtime.conftest import VSHARDS, Commenter, batch, inbound, payload


async def _shard_after_one_write(
    journal: Journal, fake: FakeGitHub, clock: FakeClock, **options: Any
) -> ShardCore:
    opts = ClientOptions(base_url=fake.url, clock=clock, sleep=clock.sleep, **options)
    token = fake.create_token(INSTALLATION)
    shard = ShardCore(
        range(VSHARDS),
        VSHARDS,
        journal,
        Commenter,
        github_for=lambda _id: GitHub(token=token, options=opts),
        clock=clock,
    )
    await shard.start()
    body = payload("issues.opened", installation=INSTALLATION)
    await shard.ingest(batch(inbound(Commenter, "issues", body)))
    await shard.wait_idle()
    return shard


async def test_a_host_that_just_wrote_is_kept_until_its_write_interval_passed(
    journal: Journal, fake: FakeGitHub
) -> None:
    clock = FakeClock()
    shard = await _shard_after_one_write(journal, fake, clock, pace_writes=5.0)
    try:
        assert shard.passivate(force_idle=True) == 0  # its next write must still wait
        clock.advance(5.1)
        assert shard.passivate(force_idle=True) == 1
    finally:
        await shard.close()


async def test_a_paused_installation_is_not_passivated_during_its_pause(
    journal: Journal, fake: FakeGitHub
) -> None:
    clock = FakeClock()
    shard = await _shard_after_one_write(journal, fake, clock, pace_writes=None)
    try:
        assert shard.hosts[INSTALLATION].bot.github.settled
        # What a secondary-limit answer does to the installation's client.
        shard.hosts[INSTALLATION].bot.github._state.paused_until = clock() + 60
        assert shard.passivate(force_idle=True) == 0
        clock.advance(61)
        assert shard.passivate(force_idle=True) == 1
    finally:
        await shard.close()
