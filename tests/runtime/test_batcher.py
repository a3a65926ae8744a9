"""The ingress's per-shard batcher, with a stand-in for the shard actor (no Ray).

The tests run on looptime's event loop clock: a sleep or timeout takes no wall time and
the clock moves only by them, so each hold's length is checked exactly, never against
how fast the machine is. The holds and tries are powers of two (0.5 s, 0.125 s): their
sums are exact in floating point.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ray.exceptions import RayActorError, RayTaskError

import actors.ray.batcher as batcher_module
from actors.bot import InstallationActor, on
from actors.ray.batcher import ShardBatcher, ShardUnavailable
from actors.ray.channel import RemoteError
from actors.wire import decode_batch, encode_parts
from ghbot.events import Event
from ghbot.logs import LogLimiter
from ghbot.webhooks import RETRY_AFTER
from tests.metering import metered
from tests.runtime.conftest import bare_ingress, item, payload, webhook_request

pytestmark = pytest.mark.looptime

HOLD, TRY = 0.5, 0.125


def now() -> float:
    """The event loop's (looptime's) clock, the one the batcher counts holds in."""
    return asyncio.get_running_loop().time()


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


class Succession:
    """What each look for the shard by name finds, in turn (the last one from then on);
    None: no actor has the name (between a shard and its successor)."""

    def __init__(self, *found: Any) -> None:
        self.found = list(found)
        self.resolved = 0

    async def resolve(self) -> Any:
        shard = self.found[min(self.resolved, len(self.found) - 1)]
        self.resolved += 1
        if shard is None:
            raise ValueError("no actor of that name")  # as `ray.get_actor` while none is
        return shard


class Draining(FakeShard):
    """A shard being replaced: it answers every delivery `draining`."""

    async def _answer(self, n: int) -> list[str]:
        return ["draining"] * n


class Gone(FakeShard):
    """A shard whose process is gone: each call raises what Ray raises for it."""

    async def _answer(self, n: int) -> list[str]:
        raise RayActorError()


async def test_a_batch_the_draining_shard_refuses_is_held_and_taken_by_its_successor(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    deployed = batcher_module._HOLDS_LOGGED  # its settings, with none of its state
    monkeypatch.setattr(batcher_module, "_HOLDS_LOGGED", LogLimiter(deployed.burst, deployed.per))
    m = metered()
    old, new = Draining(), FakeShard()
    new.release.set()
    names = Succession(old, None, new)  # draining, then gone, then its successor
    batcher = ShardBatcher(old, limit=8, resolve=names.resolve, hold_for=5.0, retry_every=0.01)
    statuses = await asyncio.gather(*(batcher.submit(item(n)) for n in range(2)))
    assert statuses == ["accepted"] * 2
    # The first was refused by the old shard (maybe more than once), and the second
    # too or it waited behind the first; the new took each once, in order.
    assert old.batches[0] == ["d0"] and {g for b in old.batches for g in b} <= {"d0", "d1"}
    assert new.batches == [["d0"], ["d1"]]
    assert batcher.actor is new and batcher.retries >= 2
    # One line for the hold, however many tries (at most one each 10 s per replica).
    held = [r for r in caplog.records if r.getMessage().startswith("holding deliveries")]
    assert len(held) == 1 and held[0].levelname == "WARNING"
    refused = len({guid for b in old.batches for guid in b})  # d1 may have only waited
    assert m.delta("ghbot_held_deliveries_total") == {frozenset({("outcome", "taken")}): refused}
    # Once none is held, a batch goes to the shard at once, not held.
    assert await batcher.submit(item(2)) == "accepted"
    assert new.batches[-1] == ["d2"]
    assert m.delta("ghbot_held_deliveries_total") == {frozenset({("outcome", "taken")}): refused}


async def test_held_batches_reach_the_successor_in_the_order_they_were_sent() -> None:
    old, new = Draining(), FakeShard()
    new.release.set()
    # The first batch's next look finds the old shard still; the second's, the new one.
    names = Succession(old, new)
    batcher = ShardBatcher(
        old, limit=1, max_inflight=2, resolve=names.resolve, hold_for=5.0, retry_every=0.01
    )
    first, second = batcher.submit(item(0)), batcher.submit(item(1))
    assert [*await asyncio.gather(first, second)] == ["accepted"] * 2
    # The second found the successor first, yet waited for the first (an opened
    # issue then its edit: the handlers see them in that order).
    assert new.batches == [["d0"], ["d1"]]


class Steady(FakeShard):
    """A successor that answers each call after 5 ms, noting how many were in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.inflight = self.most = 0

    async def _answer(self, n: int) -> list[str]:
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        await asyncio.sleep(0.005)
        self.inflight -= 1
        return ["accepted"] * n


async def test_once_the_held_batches_are_taken_the_batcher_sends_as_before() -> None:
    m = metered()
    old, new = Draining(), Steady()
    names = Succession(old, new)
    batcher = ShardBatcher(
        old, limit=4, max_inflight=2, resolve=names.resolve, hold_for=5.0, retry_every=0.01
    )
    # A steady stream from before the hand-over to well after it.
    futures = []
    for n in range(200):
        futures.append(batcher.submit(item(n)))
        await asyncio.sleep(0.001)
    assert await asyncio.gather(*futures) == ["accepted"] * 200
    refused = {guid for b in old.batches for guid in b}
    # Held: only what the old shard refused; the rest went as usual, two calls at a
    # time (waiting behind the held ones did not make them held in turn).
    assert m.delta("ghbot_held_deliveries_total") == {
        frozenset({("outcome", "taken")}): len(refused)
    }
    assert len(refused) < 20 and new.most == 2 and not batcher._holding
    assert [g for b in new.batches for g in b] == [f"d{n}" for n in range(200)]


async def test_batches_held_behind_one_another_each_end_with_their_own_hold() -> None:
    shard = Draining()
    names = Succession(shard)  # no successor comes
    batcher = ShardBatcher(
        shard, limit=1, max_inflight=3, resolve=names.resolve, hold_for=HOLD, retry_every=TRY
    )
    started = now()
    futures = [batcher.submit(item(n)) for n in range(3)]
    assert await asyncio.gather(*futures) == ["draining"] * 3
    # All three arrived together: each is answered at its own hold's last try, not
    # one hold after another.
    assert now() - started == HOLD - TRY
    assert batcher.expired == 3 and not batcher._holding
    # Only the oldest held batch is tried again (at 0, 1/8, 2/8 and 3/8 s): the others,
    # sent while it was held, waited behind it and went once, when its hold ended.
    sent = [guid for b in shard.batches for guid in b]
    assert (sent.count("d0"), sent.count("d1"), sent.count("d2")) == (4, 1, 1)


async def test_a_batch_to_a_shard_that_is_gone_is_sent_again_to_the_one_named_now() -> None:
    gone, new = Gone(), FakeShard()
    new.release.set()
    names = Succession(new)
    batcher = ShardBatcher(gone, limit=8, resolve=names.resolve, retry_every=0.01)
    assert await batcher.submit(item(0)) == "accepted"
    assert gone.batches == [["d0"]] and new.batches == [["d0"]]


async def test_the_hold_ends_and_the_deliveries_are_answered_draining() -> None:
    m = metered()
    shard = Draining()
    names = Succession(shard)  # no successor comes
    batcher = ShardBatcher(shard, limit=8, resolve=names.resolve, hold_for=HOLD, retry_every=TRY)
    started = now()
    assert await batcher.submit(item(0)) == "draining"  # the ingress answers 503
    assert m.delta("ghbot_held_deliveries_total") == {frozenset({("outcome", "expired")}): 1}
    # Tried at 0, 1/8, 2/8 and 3/8 s: one more wait would have passed the hold's end.
    assert now() - started == HOLD - TRY and len(shard.batches) == 4


class Raising(FakeShard):
    """A shard that answers each call with an error it raised."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    async def _answer(self, n: int) -> list[str]:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        RemoteError("JournalUnavailable"),  # over the channel: its journal failed
        # Over Ray, what it raised comes as a RayTaskError that is also of its type:
        # here its PostgreSQL journal refusing the connection.
        RayTaskError(  # type: ignore[no-untyped-call]
            "ingest", "...", ConnectionRefusedError("journal")
        ).as_instanceof_cause(),
    ],
    ids=["channel", "ray"],
)
async def test_an_error_the_shard_answered_with_is_not_held(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    assert not isinstance(error, RayTaskError) or isinstance(error, ConnectionError)
    names = Succession(FakeShard())
    batcher = ShardBatcher(Raising(error), limit=8, resolve=names.resolve, retry_every=0.01)
    m = metered()
    with pytest.raises(ShardUnavailable):
        await batcher.submit(item(0))
    assert names.resolved == 0 and batcher.retries == 0
    assert m.delta("ghbot_held_deliveries_total") == {}  # never held
    # The operator's line: the batch's size and what the shard answered, at WARNING.
    name = str(error) if isinstance(error, RemoteError) else type(error).__name__
    refused = [r for r in caplog.records if r.getMessage().startswith("shard refused")]
    assert [(r.levelname, r.getMessage()) for r in refused] == [
        ("WARNING", f"shard refused a batch of 1: {name}")
    ]


async def test_deliveries_queued_behind_held_batches_are_answered_within_their_own_hold(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shard = Draining()
    names = Succession(shard)  # no successor comes
    batcher = ShardBatcher(
        shard, limit=8, max_inflight=1, resolve=names.resolve, hold_for=HOLD, retry_every=TRY
    )
    first = batcher.submit(item(0))
    await asyncio.sleep(HOLD / 2)
    arrived = now()
    second = batcher.submit(item(1))  # waits for the first's call to end
    assert await first == "draining"
    assert now() - arrived == HOLD / 2 - TRY  # the first's hold ended (3/8 s)
    assert await second == "draining"
    # Held for its own hold from its arrival, not also for the first's.
    assert now() - arrived == HOLD - TRY
    assert batcher.expired == 2
    refused = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert refused.count("shard refused a batch of 1: draining for all of the 0.5 s hold") == 2


class DrainingTogether(FakeShard):
    """Draining, answering only once `calls` calls are in: all are refused at once."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls
        self.all_in = asyncio.Event()

    async def _answer(self, n: int) -> list[str]:
        if len(self.batches) >= self.calls:
            self.all_in.set()
        await self.all_in.wait()
        return ["draining"] * n


class RefusesFirst(FakeShard):
    """A successor still starting for its first call (draining), taking all after."""

    async def _answer(self, n: int) -> list[str]:
        return ["draining" if len(self.batches) == 1 else "accepted"] * n


async def test_batches_held_together_reach_the_successor_oldest_first() -> None:
    """The successor refuses the oldest once more: the others wait for it, not to be
    journaled before it."""
    old, new = DrainingTogether(3), RefusesFirst()
    names = Succession(new)
    batcher = ShardBatcher(
        old, limit=1, max_inflight=3, resolve=names.resolve, hold_for=5.0, retry_every=0.02
    )
    futures = [batcher.submit(item(n)) for n in range(3)]
    assert await asyncio.gather(*futures) == ["accepted"] * 3
    assert old.batches == [["d0"], ["d1"], ["d2"]]  # each refused once, all in flight
    assert new.batches == [["d0"], ["d0"], ["d1"], ["d2"]]


async def test_a_batch_is_held_from_its_first_arrival_not_from_when_it_is_sent() -> None:
    """GitHub's 10 s run from a delivery's arrival: one that waited for another call
    to end has its hold counted from its arrival, not from when it went."""
    shard = Draining()
    names = Succession(shard)  # no successor comes
    batcher = ShardBatcher(
        shard, limit=8, max_inflight=1, resolve=names.resolve, hold_for=HOLD, retry_every=TRY
    )
    first = batcher.submit(item(0))  # goes now, and is held
    second = batcher.submit(item(1))  # arrives now, goes once the first's hold has ended
    assert await first == "draining" and await second == "draining"
    sent = [guid for b in shard.batches for guid in b]
    assert sent.count("d0") == 4  # held: tried again until its hold ended
    assert sent.count("d1") == 1  # its own hold, from the same arrival, was over too


class TakesFirstOnly(FakeShard):
    """Takes its first call once released; refuses every later one (draining)."""

    async def _answer(self, n: int) -> list[str]:
        if len(self.batches) > 1:
            return ["draining"] * n
        return await super()._answer(n)


async def test_each_batch_gathered_behind_a_call_is_held_from_its_own_first_arrival() -> None:
    """Deliveries that gathered while a call was out go in batches of `limit`: each
    batch's hold counts from its own first delivery, not from one sent before it."""
    shard = TakesFirstOnly()
    batcher = ShardBatcher(
        shard,
        limit=2,
        max_inflight=1,
        resolve=Succession(shard).resolve,
        hold_for=HOLD,
        retry_every=TRY,
    )
    started = now()
    first = batcher.submit(item(0))  # goes at once; answered when released
    second = [batcher.submit(item(1))]
    await asyncio.sleep(2 * TRY)
    second.append(batcher.submit(item(2)))  # with d1, once d0's call ends
    await asyncio.sleep(TRY)
    third = batcher.submit(item(3))  # arrives 3/8 s in: a batch of its own
    shard.release.set()
    assert await first == "accepted"
    # Held from d1's arrival: at 3/8 s no try is left within its hold.
    assert await asyncio.gather(*second) == ["draining"] * 2
    assert now() - started == 3 * TRY
    # Held from d3's arrival at 3/8 s: tried until its last try, 6/8 s.
    assert await third == "draining"
    assert now() - started == 3 * TRY + HOLD - TRY
    assert shard.batches == [["d0"], ["d1", "d2"], ["d3"], ["d3"], ["d3"], ["d3"]]


async def test_a_request_that_went_away_leaves_the_rest_of_its_batch_answered() -> None:
    """A request cancelled while its delivery waits for the shard (the sender hung up)
    cancels that delivery's future; the others in its batch still get their answer."""
    shard = FakeShard()
    batcher = ShardBatcher(shard, limit=8, max_inflight=1)
    replica = bare_ingress(Greeter, batcher)  # type: ignore[arg-type]
    body = payload("issues.opened")
    first = asyncio.create_task(replica.webhook(webhook_request(body)))
    await asyncio.sleep(TRY)  # its call is out
    gone = asyncio.create_task(replica.webhook(webhook_request(body)))
    kept = asyncio.create_task(replica.webhook(webhook_request(body)))
    await asyncio.sleep(TRY)  # both wait for the next call, together
    gone.cancel()
    shard.release.set()
    assert (await first).status_code == 202
    assert (await kept).status_code == 202
    assert gone.cancelled()
    assert [len(batch) for batch in shard.batches] == [1, 2]


async def test_a_try_of_a_held_batch_that_hangs_ends_with_the_hold() -> None:
    class Hanging(FakeShard):
        async def _answer(self, n: int) -> list[str]:
            await asyncio.Event().wait()  # a restarting actor's call that never returns
            return []

    m = metered()
    hanging = Hanging()
    names = Succession(hanging)
    batcher = ShardBatcher(Gone(), limit=8, resolve=names.resolve, hold_for=HOLD, retry_every=TRY)
    started = now()
    with pytest.raises(ShardUnavailable, match="TimeoutError"):
        await batcher.submit(item(0))
    assert now() - started == HOLD  # cut off at the hold's end
    assert hanging.batches == [["d0"]]
    assert m.count("ghbot_held_deliveries_total", outcome="expired") == 1


async def test_without_resolve_a_draining_shard_is_answered_at_once() -> None:
    shard = Draining()
    batcher = ShardBatcher(shard, limit=8)
    assert await batcher.submit(item(0)) == "draining"
    assert shard.batches == [["d0"]]


async def test_the_ingress_answers_503_with_retry_after_once_a_hold_ends() -> None:
    shard = Draining()
    batcher = ShardBatcher(
        shard, limit=8, resolve=Succession(shard).resolve, hold_for=HOLD, retry_every=TRY
    )
    replica = bare_ingress(Greeter, batcher)  # type: ignore[arg-type]
    body = payload("issues.opened")
    answer = await replica.webhook(webhook_request(body))
    assert answer.status_code == 503 and answer.headers["Retry-After"] == str(RETRY_AFTER)
    assert b"draining" in answer.body and len(shard.batches) == 4 and batcher.expired == 1
    # Its successor named: the next delivery is held, then taken (202).
    successor = FakeShard()
    successor.release.set()
    batcher.resolve = Succession(successor).resolve
    assert (await replica.webhook(webhook_request(body))).status_code == 202
    assert batcher.actor is successor and len(successor.batches) == 1


class Greeter(InstallationActor):
    @on("issues.opened")
    async def hello(self, event: Event) -> None:
        raise AssertionError("the ingress runs no handler")
