"""The ingress's per-shard batcher, with a stand-in for the shard actor (no Ray)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.ray.ingress import ShardBatcher, ShardUnavailable
from actors.records import DeliveryReceived
from actors.wire import Inbound, decode_batch


class FakeShard:
    """Answers `ingest.remote(batch)` like a shard actor, when the test releases it."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail = fail
        self.ingest = self

    def remote(self, batch: bytes) -> Any:
        items = decode_batch(batch)
        self.batches.append([i.received.delivery_id for i in items])
        return self._answer(len(items))

    async def _answer(self, n: int) -> list[str]:
        await self.release.wait()
        if self.fail:
            raise RuntimeError("RayActorError")
        return ["accepted"] * n


def item(n: int) -> Inbound:
    received = DeliveryReceived(delivery_id=f"d{n}", event="issues", body=b"{}", received_at=0.0)
    return Inbound(installation_id=1, vshard=0, received=received)


async def test_deliveries_gather_while_calls_are_in_flight() -> None:
    shard = FakeShard()
    batcher = ShardBatcher(shard, limit=4, max_inflight=1)
    futures = [batcher.submit(item(n)) for n in range(7)]
    await asyncio.sleep(0)
    assert shard.batches == [["d0"]]  # sent at once: nothing was in flight
    shard.release.set()
    assert await asyncio.gather(*futures) == ["accepted"] * 7
    # The rest went in calls of at most `limit`, in order.
    assert shard.batches == [["d0"], ["d1", "d2", "d3", "d4"], ["d5", "d6"]]


async def test_a_failed_call_fails_each_of_its_deliveries_and_nothing_else() -> None:
    shard = FakeShard(fail=True)
    batcher = ShardBatcher(shard, limit=8, max_inflight=2)
    futures = [batcher.submit(item(n)) for n in range(3)]
    shard.release.set()
    for future in futures:
        with pytest.raises(ShardUnavailable):
            await future
    assert sum(len(b) for b in shard.batches) == 3
