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
import itertools
import time
import uuid
from typing import Any

import pytest

from actors.shard import ShardCore
from actors.wire import Inbound
from ghbot.journal import open_journal
from tests.faults.support import Effects, PrivatePostgres, seconds
from tests.history import History, Sender, check, journaled
from tests.runtime.conftest import VSHARDS, inbound, payload

pytestmark = pytest.mark.faults

INSTALLATIONS = (301, 302, 303)
ISSUES = 4
OUTAGE = seconds(5, 30)
STEADY = seconds(1.5, 10)  # the stream before and after the fault
_counter = itertools.count()


def deliveries(count: int) -> list[Inbound]:
    """The next `count` deliveries, spread over the installations and their issues."""
    items = []
    for _ in range(count):
        n = next(_counter)
        installation = INSTALLATIONS[n % len(INSTALLATIONS)]
        body = payload("issues.opened", installation=installation, issue__number=n % ISSUES + 1)
        items.append(inbound(Effects, "issues", body, delivery_id=f"pg-{n}-{uuid.uuid4().hex[:6]}"))
    return items


async def stream(sender: Sender, until: float, *, every: float = 0.01) -> tuple[int, int]:
    """Send batches of one to four deliveries until `until`; return (batches, 503s)."""
    batches = failed = 0
    sizes = itertools.cycle([1, 3, 2, 4])
    while time.monotonic() < until:
        batches += 1
        if await sender.send(deliveries(next(sizes))) is None:
            failed += 1
        await asyncio.sleep(every)
    return batches, failed


async def settle(
    shard: ShardCore, sender: Sender, history: History, journal: Any
) -> dict[str, int]:
    """Redeliver what was not acknowledged, wait until handled, and check the history."""
    for _ in range(20):
        if await sender.redeliver() == 0:
            break
        await asyncio.sleep(0.5)
    assert sender.undelivered == [], "redeliveries still refused after the server came back"
    async with asyncio.timeout(60):
        await shard.wait_idle()
    assert shard.pending() == 0
    return check(history, await journaled(journal, INSTALLATIONS, vshards=VSHARDS))


async def run_shard(url: str) -> tuple[ShardCore, Any]:
    journal = await open_journal(url, shard_count=VSHARDS)
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Effects)
    await shard.start()
    return shard, journal


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
