"""Deliveries run in journal order: handed over by concurrent `ingest` calls, and
resumed after a restart.

Found by the process-kill suite (tests/faults/test_process_kills.py): after Serve's
proxy was killed, the deliveries sent again all at once went to the shard in two
concurrent calls, and two of one issue ran in the opposite order to the journal's.
SQLite commits each shard file apart: a batch over two files comes back after a later
batch over one, and its delivery, journaled first, was handed over second. And a
restarted shard resumed pending deliveries by the ingress's `received_at`, not in
journal order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec

from actors.shard import ShardCore
from actors.turns import Turns
from actors.wire import Inbound, encode_batch
from ghbot.journal import open_journal
from tests.faults.support import Effects
from tests.history import History, check, journaled
from tests.runtime.conftest import VSHARDS, Stuck, inbound, payload


def _delivery(installation: int, guid: str) -> Inbound:
    body = payload("issues.opened", installation=installation, issue__number=1)
    return inbound(Effects, "issues", body, delivery_id=guid)


def _slow_file(journal: Any, shard: int, delay: float) -> None:
    """Make the commits of one SQLite shard file start `delay` s late."""
    file = journal._file(shard)
    submit = file.submit_appends

    def late(requests: Any, on: int, future: asyncio.Future[Any]) -> None:
        asyncio.get_running_loop().call_later(delay, submit, requests, on, future)

    file.submit_appends = late


async def test_a_later_batch_committed_first_runs_after_the_earlier_one(tmp_path: Path) -> None:
    history = Effects.history = History()
    journal = await open_journal(f"sqlite://{tmp_path}/journal", shard_count=VSHARDS)
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Effects)
    await shard.start()
    try:
        # Installation 4 is in shard file 0, installation 6 in file 2; both active.
        warm = [_delivery(4, "warm-4"), _delivery(6, "warm-6")]
        history.sending([("warm-4", "4"), ("warm-6", "6")])
        history.answered(
            ["warm-4", "warm-6"], [str(s) for s in await shard.ingest(encode_batch(warm))]
        )
        await shard.wait_idle()
        _slow_file(journal, 0, 0.2)
        first = [_delivery(4, "first-4"), _delivery(6, "first-6")]  # files 0 and 2
        second = [_delivery(6, "second-6")]  # file 2 only: committed before `first`
        history.sending([("first-4", "4"), ("first-6", "6")])
        earlier = asyncio.create_task(shard.ingest(encode_batch(first)))
        await asyncio.sleep(0.02)  # its appends are sent: the next call is another group
        history.sending([("second-6", "6")])
        history.answered(["second-6"], [str(s) for s in await shard.ingest(encode_batch(second))])
        history.answered(["first-4", "first-6"], [str(s) for s in await earlier])
        await shard.wait_idle()
        found = await journaled(journal, [4, 6], vshards=VSHARDS)
    finally:
        await shard.close()
        await journal.close()
    assert found.received["first-6"][0][1] < found.received["second-6"][0][1]
    assert history.effects.index("first-6") < history.effects.index("second-6"), history.effects
    figures = check(history, found)
    assert figures["acknowledged"] == figures["journaled"] == 5
    assert len(shard.turns) == 0  # every turn released


async def test_a_turn_not_waited_for_still_follows_the_one_before() -> None:
    turns = Turns()
    first, second, third = turns.take([1]), turns.take([1]), turns.take([1])
    second.release()  # handed nothing over: released without waiting for `first`
    waiting = asyncio.create_task(third.wait(1))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # `second` ends only after `first`
    first.release()
    await asyncio.wait_for(waiting, 1)
    third.release()
    await asyncio.sleep(0)
    assert len(turns) == 0


async def test_a_cancelled_wait_leaves_the_order_of_the_turns_after_it() -> None:
    """A call cancelled while it waits for the one before (its request went away)
    does not cancel that one's turn: the call after it still waits for both."""
    turns = Turns()
    first, second, third = turns.take([1]), turns.take([1]), turns.take([1])
    cancelled = asyncio.create_task(second.wait(1))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    second.release()
    waiting = asyncio.create_task(third.wait(1))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # `first` is still running: `second` ends after it
    first.release()
    await asyncio.wait_for(waiting, 1)
    third.release()


async def test_a_turn_that_ends_forgets_only_itself() -> None:
    """The first turn ending leaves the second as the latest: a turn taken now follows it."""
    turns = Turns()
    first, second = turns.take([1]), turns.take([1])
    first.release()
    await asyncio.sleep(0)  # the first's future is done, its callbacks run
    third = turns.take([1])
    waiting = asyncio.create_task(third.wait(1))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    second.release()
    await asyncio.wait_for(waiting, 1)
    third.release()


async def test_a_restarted_shard_resumes_in_journal_order_not_by_arrival_time(
    tmp_path: Path,
) -> None:
    Stuck.release = asyncio.Event()
    history = Effects.history = History()
    url = f"sqlite://{tmp_path}/journal"
    # Journaled in this order, though the ingress stamped the first one later (two
    # replicas' clocks, or a slow one): journal order is the order to run them in.
    first, second = _delivery(4, "journaled-first"), _delivery(4, "journaled-second")
    first = msgspec.structs.replace(
        first, received=msgspec.structs.replace(first.received, received_at=2e9)
    )
    journal = await open_journal(url, shard_count=VSHARDS)
    crashed = ShardCore(range(VSHARDS), VSHARDS, journal, Stuck)
    await crashed.start()
    history.sending([("journaled-first", "4"), ("journaled-second", "4")])
    statuses = await crashed.ingest(encode_batch([first, second]))
    history.answered(["journaled-first", "journaled-second"], [str(s) for s in statuses])
    await crashed.close()  # its handlers cut short: both pending
    await journal.close()

    journal = await open_journal(url, shard_count=VSHARDS)
    restarted = ShardCore(range(VSHARDS), VSHARDS, journal, Effects)
    try:
        await restarted.start()
        await restarted.wait_idle()
        found = await journaled(journal, [4], vshards=VSHARDS)
    finally:
        await restarted.close()
        await journal.close()
    assert history.effects == ["journaled-first", "journaled-second"]
    check(history, found)
