"""Append big batches to a journal until killed; print each batch id once durable.

Run as ``python crash_writer.py URL ROUND`` by test_journal_crash.py. Four writers
run concurrently, so batches are also group-committed together.
"""

from __future__ import annotations

import asyncio
import sys

from ghbot.journal import AppendRequest, Journal, NewEvent, open_journal

STREAMS = 200
EVENTS_PER_STREAM = 5
WRITERS = 4


async def write(journal: Journal, name: str) -> None:
    for n in range(10**9):
        batch = f"{name}-{n}"
        events = tuple(NewEvent("e", batch.encode()) for _ in range(EVENTS_PER_STREAM))
        requests = [
            AppendRequest(f"s{j}", events, delivery_guid=batch, shard=0) for j in range(STREAMS)
        ]
        results = await journal.append_many(requests)
        assert all(r.ok for r in results), results
        print(batch, flush=True)


async def main(url: str, round_: str) -> None:
    journal = await open_journal(url)
    await asyncio.gather(*(write(journal, f"r{round_}w{w}") for w in range(WRITERS)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
