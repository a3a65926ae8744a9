"""A writer killed with SIGKILL mid-batch leaves nothing half-written."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from crash_writer import EVENTS_PER_STREAM, STREAMS

from ghbot.journal import DUPLICATE, Journal, NewEvent

if TYPE_CHECKING:
    from conftest import Backend

WRITER = Path(__file__).with_name("crash_writer.py")


async def run_and_kill(url: str, round_: int, batches: int) -> set[str]:
    """Start a writer, SIGKILL it after `batches` commits; return the batches it saw durable."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(WRITER), url, str(round_), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    acknowledged: set[str] = set()
    try:
        async with asyncio.timeout(30):
            while len(acknowledged) < batches:
                line = await proc.stdout.readline()
                assert line, "the writer exited early"
                acknowledged.add(line.decode().strip())
        await asyncio.sleep(random.uniform(0, 0.02))  # land somewhere inside a batch
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    rest = await proc.stdout.read()
    acknowledged.update(rest.decode().split())
    return acknowledged


async def check_all_or_nothing(journal: Journal, acknowledged: set[str]) -> set[str]:
    """Assert every stream is gap-free and every batch whole or absent; return batches."""
    counts: dict[str, int] = defaultdict(int)
    heads = set()
    for j in range(STREAMS):
        records = await journal.read(f"s{j}", shard=0)
        assert [e.seq for e in records] == list(range(1, len(records) + 1))
        heads.add(len(records))
        for start in range(0, len(records), EVENTS_PER_STREAM):
            chunk = {e.data for e in records[start : start + EVENTS_PER_STREAM]}
            assert len(chunk) == 1, "a batch's events are contiguous in each stream"
            counts[chunk.pop().decode()] += 1
    assert len(heads) == 1, "every batch wrote to every stream or to none"
    assert set(counts.values()) <= {STREAMS}
    assert acknowledged <= counts.keys(), "an acknowledged batch was lost"
    by_writer: dict[str, list[int]] = defaultdict(list)
    for batch in counts:
        writer, number = batch.split("-")
        by_writer[writer].append(int(number))
    for numbers in by_writer.values():  # each writer's batches are a prefix: none skipped
        assert sorted(numbers) == list(range(len(numbers)))
    return set(counts)


async def test_killed_writer_leaves_whole_batches_only(durable: Backend) -> None:
    acknowledged = await run_and_kill(durable.url, 1, batches=12)
    journal = await durable.open()
    batches = await check_all_or_nothing(journal, acknowledged)
    await journal.close()

    acknowledged |= await run_and_kill(durable.url, 2, batches=6)  # recovers, then dies again
    journal = await durable.open()
    batches = await check_all_or_nothing(journal, acknowledged)
    assert any(b.startswith("r2") for b in batches)
    redelivered = await journal.append("s0", [NewEvent("e", b"x")], delivery_guid="r1w0-0", shard=0)
    assert redelivered.status == DUPLICATE
    head = await journal.last_seq("s0", shard=0)
    fresh = await journal.append("s0", [NewEvent("e", b"x")], expected_seq=head, shard=0)
    assert fresh.first_seq == head + 1
