"""An `ingest` call whose caller went away still hands what it journaled to the hosts.

One run of the raylet kill (tests/faults/test_process_kills.py) left a delivery in that
state: answered with a connection error, journaled, answered duplicate when sent again,
and never run. The ingress replica died with the worker node while one shard lived on
in the head. Whether Ray cut that shard's call short was not established (a caller's
process killed alone did not cancel its call to an async actor); this is the way to
that state that a cancelled call takes, and what the shard now does about it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

from actors.shard import ShardCore
from actors.wire import encode_batch
from ghbot.journal import open_journal
from tests.faults.support import Effects
from tests.history import History, check, journaled
from tests.runtime.conftest import VSHARDS, inbound, payload


async def test_a_call_cancelled_mid_commit_still_runs_its_delivery(tmp_path: Path) -> None:
    history = Effects.history = History()
    journal = await open_journal(f"sqlite://{tmp_path}/journal", shard_count=VSHARDS)
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Effects)
    await shard.start()
    body = payload("issues.opened", installation=4, issue__number=1)
    item = inbound(Effects, "issues", body, delivery_id="cut-short")
    file: Any = cast(Any, journal)._file(0)  # installation 4's shard file: its commit starts late
    submit = file.submit_appends
    file.submit_appends = lambda *args: asyncio.get_running_loop().call_later(0.2, submit, *args)
    try:
        history.sending([("cut-short", "4")])
        call = asyncio.create_task(shard.ingest(encode_batch([item])))
        await asyncio.sleep(0.05)
        call.cancel()  # the caller goes away while the commit is in flight
        history.answered(["cut-short"], ["connection error"])
        await asyncio.sleep(0.4)
        statuses = await shard.ingest(encode_batch([item]))  # GitHub's redelivery
        history.answered(["cut-short"], [str(s) for s in statuses])
        async with asyncio.timeout(10):
            await shard.wait_idle()
        found = await journaled(journal, [4], vshards=VSHARDS)
    finally:
        await shard.close()
        await journal.close()
    assert statuses == ["duplicate"]
    assert history.effects == ["cut-short"]
    check(history, found)


async def test_waiting_for_idle_waits_for_an_ingest_under_way(tmp_path: Path) -> None:
    """A drain (`wait_idle`) that starts while a batch is being journaled returns only
    after that batch's deliveries were handed over and run: not "drained" with a commit
    still in flight and its deliveries about to start."""
    history = Effects.history = History()
    journal = await open_journal(f"sqlite://{tmp_path}/journal", shard_count=VSHARDS)
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Effects)
    await shard.start()
    body = payload("issues.opened", installation=4, issue__number=1)
    item = inbound(Effects, "issues", body, delivery_id="in-flight")
    file: Any = cast(Any, journal)._file(0)
    submit = file.submit_appends
    file.submit_appends = lambda *args: asyncio.get_running_loop().call_later(0.2, submit, *args)
    try:
        call = asyncio.create_task(shard.ingest(encode_batch([item])))
        await asyncio.sleep(0.05)  # the commit is under way
        async with asyncio.timeout(10):
            await shard.wait_idle()
        ran_before_idle = list(history.effects)
        assert [str(s) for s in await call] == ["accepted"]
    finally:
        await shard.close()
        await journal.close()
    assert ran_before_idle == ["in-flight"]
