"""The ingress's per-shard batcher, with a stand-in for the shard actor (no Ray)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.ray.ingress import ShardBatcher, ShardUnavailable
from actors.wire import decode_batch, encode_parts
from tests.runtime.conftest import item


class FakeShard:
    """Answers `ingest.remote(batch)` like a shard actor, when the test releases it."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.parts: list[int] = []
        self.release = asyncio.Event()
        self.fail = fail
        self.ingest = self

    def remote(self, *parts: bytes) -> Any:
        self.parts.append(len(parts))
        items = [item for part in parts for item in decode_batch(part)]
        self.batches.append([i.received.delivery_id for i in items])
        return self._answer(len(items))

    async def _answer(self, n: int) -> list[str]:
        await self.release.wait()
        if self.fail:
            raise RuntimeError("RayActorError")
        return ["accepted"] * n


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


def test_a_batch_travels_in_parts_small_enough_to_stay_inline_in_a_ray_call() -> None:
    bodies = [item(n, b"x" * 12_000) for n in range(20)] + [item(20, b"y" * 200_000)]
    parts = encode_parts(bodies)
    assert all(len(part) < 100 * 1024 for part in parts[:-1])  # Ray's inline limit
    assert len(parts) == 4  # 7 + 7 + 6 bodies of 12 KB, then the big one alone
    decoded = [i for part in parts for i in decode_batch(part)]
    assert decoded == bodies
    assert encode_parts([]) == []


async def test_the_batcher_sends_the_parts_as_separate_arguments() -> None:
    shard = FakeShard()
    batcher = ShardBatcher(shard, limit=64, max_inflight=1)
    futures = [batcher.submit(item(n, b"x" * 12_000)) for n in range(16)]
    shard.release.set()
    assert await asyncio.gather(*futures) == ["accepted"] * 16
    # The first went alone; the other 15 gathered behind it, in three parts.
    assert shard.batches == [["d0"], [f"d{n}" for n in range(1, 16)]]
    assert shard.parts == [1, 3]
