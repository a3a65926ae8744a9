"""FaultyJournal injects failures, lost acknowledgements and delays on demand."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ghbot.errors import JournalUnavailable
from ghbot.journal import DUPLICATE, FaultyJournal, NewEvent
from ghbot.journal.sqlite import SqliteJournal

EVENT = [NewEvent("t", b"x")]


@pytest.fixture
async def faulty(tmp_path: Path) -> AsyncIterator[FaultyJournal]:
    journal = FaultyJournal(SqliteJournal(tmp_path))
    yield journal
    await journal.close()


async def test_failed_appends_write_nothing_then_recover(faulty: FaultyJournal) -> None:
    faulty.fail_appends(2)
    for _ in range(2):
        with pytest.raises(JournalUnavailable):
            await faulty.append("s", EVENT, delivery_guid="g")
    assert faulty.appends_failed == 2
    assert await faulty.read("s") == []
    assert (await faulty.append("s", EVENT, delivery_guid="g")).ok


async def test_a_lost_ack_was_written_and_the_retry_is_a_duplicate(faulty: FaultyJournal) -> None:
    faulty.lose_acks()
    with pytest.raises(JournalUnavailable):
        await faulty.append("s", EVENT, delivery_guid="g")
    assert len(await faulty.read("s")) == 1
    assert (await faulty.append("s", EVENT, delivery_guid="g")).status == DUPLICATE


async def test_failed_reads_and_heal(faulty: FaultyJournal) -> None:
    await faulty.append("s", EVENT)
    faulty.fail_reads(4)
    for call in (faulty.read("s"), faulty.last_seq("s"), faulty.load_snapshot("s")):
        with pytest.raises(JournalUnavailable):
            await call
    assert faulty.reads_failed == 3
    faulty.heal()
    assert await faulty.list_streams() == ["s"]
    assert await faulty.last_seq("s") == 1


async def test_delays_slow_appends_and_reads(faulty: FaultyJournal) -> None:
    faulty.append_delay = faulty.read_delay = 0.05
    start = time.monotonic()
    await faulty.append("s", EVENT)
    await faulty.read("s")
    assert time.monotonic() - start >= 0.1


async def test_other_calls_pass_through(faulty: FaultyJournal) -> None:
    faulty.fail_appends(5)
    faulty.fail_reads(5)
    assert await faulty.acquire_epoch(1) == 1
    assert await faulty.prune_deliveries() == 0
    assert faulty.shard_count == faulty.inner.shard_count
    await faulty.close()
    assert faulty.closed and faulty.inner.closed
