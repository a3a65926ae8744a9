"""`reshard_journal` under the runtime: a journal written by a shard with 4 virtual
shards, resharded to 8 and back to 2 (SQLite and PostgreSQL), reads back the same
through a shard of the new count: every installation's stream, snapshot, state and
dead letters; a redelivered GUID is still a duplicate, and new deliveries run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.bot import InstallationActor, on
from actors.runtime_events import NO_INSTALLATION, stream_name
from actors.shard import ShardCore
from actors.wire import Inbound, Status, encode_batch, stream_vshard, vshard_of
from ghbot.errors import ConfigError
from ghbot.events import Event
from ghbot.journal import Journal, open_journal, reshard_journal
from ghbot.retry import RetryPolicy
from tests.journal.conftest import postgres_schema
from tests.runtime.conftest import inbound, payload

INSTALLATIONS = [NO_INSTALLATION, 1, 2, 3, 5, 6, 11, 234]
DOOMED = 13  # the issue number whose handler always fails: dead-lettered


class Labeled(msgspec.Struct):
    number: int


class Labeler(InstallationActor):
    """Folds a domain event per issue opened; fails for issue `DOOMED`."""

    domain_events = (Labeled,)
    state_type = dict[str, int]

    def initial_state(self) -> dict[str, int]:
        return {}

    def evolve(self, state: dict[str, int], event: msgspec.Struct) -> dict[str, int]:
        assert isinstance(event, Labeled)
        return {**state, str(event.number): state.get(str(event.number), 0) + 1}

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        if event.payload.issue.number == DOOMED:
            raise RuntimeError("never works")
        if event.installation_id is not None:  # `self.emit` needs an installation
            self.emit(Labeled(number=event.payload.issue.number))


async def _no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


def _delivery(installation_id: int, number: int, vshards: int) -> Inbound:
    installation = installation_id if installation_id != NO_INSTALLATION else None
    body = payload("issues.opened", installation=installation, issue__number=number)
    guid = f"d-{installation_id}-{number}"
    item = inbound(Labeler, "issues", body, delivery_id=guid)
    return msgspec.structs.replace(item, vshard=vshard_of(installation_id, vshards))


async def _shard(url: str, vshards: int) -> tuple[ShardCore, Journal]:
    journal = await open_journal(url, shard_count=vshards)
    core = ShardCore(
        range(vshards),
        vshards,
        journal,
        Labeler,
        sleep=_no_sleep,
        retry=RetryPolicy(base=0.0, cap=0.0),
        schedule=False,
    )
    await core.start()
    return core, journal


async def _seen(core: ShardCore) -> dict[int, Any]:
    """What a shard reads of each installation, through its own read path."""
    journal, seen = core.journal, {}
    for installation_id in INSTALLATIONS:
        stream, vshard = stream_name(installation_id), vshard_of(installation_id, core.vshard_count)
        host = await core.host(installation_id)
        seen[installation_id] = (
            await journal.read(stream, shard=vshard),
            await journal.load_snapshot(stream, shard=vshard),
            await journal.delivered(stream, [f"d-{installation_id}-1"], shard=vshard),
            host.bot.state,
            sorted(host.progress.dead),
        )
    return seen


async def _check_layout(journal: Journal, vshards: int) -> None:
    for vshard in range(vshards):
        for stream in await journal.list_streams(shard=vshard):
            assert stream_vshard(stream, vshards) == vshard


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "postgres":
        async with postgres_schema() as backend:
            yield backend.url
        return
    yield f"sqlite://{tmp_path}/journal"


async def test_a_journal_resharded_to_8_and_back_to_2_reads_back_the_same(url: str) -> None:
    core, journal = await _shard(url, 4)
    numbers = [1, 2, DOOMED]
    await core.ingest(encode_batch([_delivery(i, n, 4) for i in INSTALLATIONS for n in numbers]))
    await core.wait_idle()
    await core.snapshot(234)
    before = await _seen(core)
    dead = sorted((d["installation_id"], d["delivery_id"]) for d in await core.dead_letters())
    assert len(dead) == len(INSTALLATIONS)
    assert before[234][1] is not None, "a snapshot to carry over"
    last_epoch = max(core.epochs.values())
    await core.close()
    await journal.close()

    for vshards in (8, 2):
        moved = await reshard_journal(url, vshards, stream_vshard)
        assert (moved.to_count, moved.streams, moved.epoch > last_epoch) == (
            vshards,
            len(INSTALLATIONS),
            True,
        )
        with pytest.raises(ConfigError, match=f"created with {vshards} virtual shards"):
            await open_journal(url, shard_count=4)
        core, journal = await _shard(url, vshards)
        try:
            assert min(core.epochs.values()) > moved.epoch
            await _check_layout(journal, vshards)
            assert await _seen(core) == before
            assert dead == sorted(
                (d["installation_id"], d["delivery_id"]) for d in await core.dead_letters()
            )
            again = _delivery(234, 1, vshards)  # GitHub redelivers one
            fresh = _delivery(234, 100 + vshards, vshards)
            statuses = await core.ingest(encode_batch([again, fresh]))
            assert statuses == [Status.DUPLICATE, Status.ACCEPTED]
            await core.wait_idle()
            state = (await core.host(234)).bot.state
            assert state == {**before[234][3], str(100 + vshards): 1}
            before = await _seen(core)
            last_epoch = max(core.epochs.values())
        finally:
            await core.close()
            await journal.close()
