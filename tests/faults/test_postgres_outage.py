"""PostgreSQL stopped for a while, and restarted, under a steady stream of deliveries.

A `ShardCore` (no Ray) over the PostgreSQL journal of a private server takes batches
as the ingress sends them, from three installations, every few milliseconds. The
server is stopped (``pg_ctl stop -m immediate``: its processes killed, as a crash)
for `OUTAGE` seconds, then started again; or restarted (``-m fast``). Every batch
sent while it is down must fail with `JournalUnavailable` (the ingress's 503, not
acknowledged); those are sent again afterwards, as GitHub's redelivery would. Then the
history is checked (`tests.history`).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.support import PrivatePostgres, run_shard, seconds, settle, stream
from tests.history import History, Sender

pytestmark = pytest.mark.faults

OUTAGE = seconds(5, 30)
STEADY = seconds(1.5, 10)  # the stream before and after the fault


async def test_postgres_stopped_mid_stream_then_started(
    private_postgres: PrivatePostgres, history: History
) -> None:
    shard, journal = await run_shard(private_postgres.url)
    sender = Sender(shard, history)
    try:
        before, _ = await stream(sender, time.monotonic() + STEADY)
        await asyncio.to_thread(private_postgres.stop, "immediate")
        down_at = time.monotonic()
        during, failed = await stream(sender, down_at + OUTAGE, every=0.05)
        # Every batch while the server was down was answered 503, none acknowledged.
        assert failed == during, f"{during - failed} batches acknowledged while it was down"
        await asyncio.to_thread(private_postgres.start)
        after, _ = await stream(sender, time.monotonic() + STEADY)
        figures = await settle(shard, sender, history, journal)
    finally:
        await shard.close()
        await journal.close()
    print(f"\npostgres stopped {OUTAGE:g} s: batches {before}/{during}/{after}", figures)
    print("why:", dict(sender.errors))
    assert figures["answered unavailable"] >= during
    assert figures["acknowledged"] == figures["sent"]


async def test_postgres_restarted_mid_stream(
    private_postgres: PrivatePostgres, history: History
) -> None:
    shard, journal = await run_shard(private_postgres.url)
    sender = Sender(shard, history)
    try:
        await stream(sender, time.monotonic() + STEADY)
        restart = asyncio.create_task(asyncio.to_thread(private_postgres.restart, "fast"))
        while not restart.done():  # the stream goes on while the server restarts
            await stream(sender, time.monotonic() + 0.05)
        await restart
        await stream(sender, time.monotonic() + STEADY)
        figures = await settle(shard, sender, history, journal)
    finally:
        await shard.close()
        await journal.close()
    print("\npostgres restarted:", figures)
    assert figures["acknowledged"] == figures["sent"]
