"""`actors.appends.AppendGroup`: appends made together travel in one journal call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from actors.appends import AppendGroup
from ghbot.errors import Fenced, JournalUnavailable
from ghbot.journal import Journal, open_journal
from ghbot.journal.records import AppendRequest, AppendResult, NewEvent

EVENT = (NewEvent("Noted", b"\x80"),)


class Counting:
    """Wraps a journal's `append_many`: counts the calls, can fail the next one."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.calls: list[int] = []
        self.fail_next = False

    async def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        self.calls.append(len(requests))
        if self.fail_next:
            self.fail_next = False
            raise JournalUnavailable("the journal is away")
        return await self.journal.append_many(requests)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    opened = await open_journal(f"sqlite://{tmp_path}/j", shard_count=2)
    yield opened
    await opened.close()


async def test_appends_made_together_go_in_one_call_and_each_gets_its_results(
    journal: Journal,
) -> None:
    counting = Counting(journal)
    group = AppendGroup(counting, max_inflight=1)  # type: ignore[arg-type]
    epoch = await journal.acquire_epoch(0)
    results: list[Any] = await asyncio.gather(
        *(group.append(f"s{n % 3}", EVENT, shard=0, epoch=epoch) for n in range(9)),
        group.append_many([AppendRequest("s9", EVENT * 2, shard=1)]),
    )
    assert counting.calls == [10]  # one call carried all ten
    assert [r.last_seq for r in results[:9]] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    [pair] = results[9]
    assert (pair.first_seq, pair.last_seq) == (1, 2)
    assert (group.calls, group.requests) == (1, 10)
    assert await group.append_many([]) == []


async def test_appends_made_while_a_call_is_out_go_together_in_the_next(
    journal: Journal,
) -> None:
    counting = Counting(journal)
    group = AppendGroup(counting, max_inflight=1)  # type: ignore[arg-type]
    first = asyncio.ensure_future(group.append("a", EVENT, shard=0, epoch=None))
    await asyncio.sleep(0)  # the first call is out
    rest = [asyncio.ensure_future(group.append("b", EVENT, shard=0, epoch=None)) for _ in range(5)]
    await asyncio.gather(first, *rest)
    assert counting.calls == [1, 5]


async def test_a_fenced_append_raises_and_a_failed_call_fails_each_of_its_appends(
    journal: Journal,
) -> None:
    counting = Counting(journal)
    group = AppendGroup(counting)  # type: ignore[arg-type]
    old = await journal.acquire_epoch(0)
    await journal.acquire_epoch(0)  # a newer shard took over
    ok, fenced = await asyncio.gather(
        group.append("a", EVENT, shard=1, epoch=None),
        group.append("b", EVENT, shard=0, epoch=old),
        return_exceptions=True,
    )
    assert isinstance(ok, AppendResult) and isinstance(fenced, Fenced)

    counting.fail_next = True
    failed = await asyncio.gather(
        *(group.append("c", EVENT, shard=1, epoch=None) for _ in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(f, JournalUnavailable) for f in failed)
    assert group.failing == "JournalUnavailable"  # what makes the shard not ready
    assert await journal.last_seq("c", shard=1) == 0  # nothing of the failed call written
    assert (await group.append("c", EVENT, shard=1, epoch=None)).last_seq == 1
    assert group.failing is None


async def test_a_cancelled_caller_leaves_the_others_their_results(journal: Journal) -> None:
    group = AppendGroup(journal)
    gone = asyncio.ensure_future(group.append("a", EVENT, shard=0, epoch=None))
    kept = asyncio.ensure_future(group.append("b", EVENT, shard=0, epoch=None))
    await asyncio.sleep(0)
    gone.cancel()
    assert (await kept).last_seq == 1
    # Cancelling does not withdraw what was sent (as `Journal` says of its appends).
    assert await journal.last_seq("a", shard=0) == 1


async def test_a_shards_stats_count_its_journal_calls_and_appends() -> None:
    from actors.testing import BotHarness
    from examples.greeter import Greeter

    async with BotHarness(Greeter) as bot:
        await bot.deliver("issues.opened")
        stats = bot.shard.stats()
        # Received, then the handler's outcome: two appends, each in its own call here
        # (one delivery at a time); under load, calls carry many.
        assert (stats["journal_calls"], stats["journal_appends"]) == (2, 2)
