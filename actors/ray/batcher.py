"""The ingress's per-shard batcher: deliveries bound for one shard, sent in few calls.

Deliveries for one shard are batched (`ShardBatcher`: while calls to the shard are in
flight, new deliveries gather for the next) so that one call and one journal commit
carry many of them. Batches travel over the shard's channel, a TCP connection
between the two event loops (`actors.ray.channel`), or as Ray calls where it cannot be
reached or `GHBOT_SHARD_CHANNEL=ray`. A shard draining or not reached is waited for
first (`HOLD_FOR`).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from ray.exceptions import RayActorError, RayTaskError

from actors.ray.channel import RemoteError, ShardChannel
from actors.wire import Inbound, Status, encode_parts
from ghbot import metrics
from ghbot.logs import LogLimiter

__all__ = ["HOLD_FOR", "ShardBatcher", "ShardUnavailable"]

log = logging.getLogger("ghbot.ingress")


class ShardUnavailable(Exception):
    """The shard did not answer that it journaled the batch (it failed, restarted, or the
    journal is down); some of it may be journaled all the same, and a redelivery of
    that part is answered as a duplicate."""


#: Seconds from a batch's first arrival during which the ingress may hold it, its
#: shard draining or not reached (its process gone, or replaced in an upgrade), trying
#: it again on the actor named as that shard now (`ShardBatcher`); then it answers 503.
#: A replaced shard whose handlers finish at once was back within it (the slowest 202
#: of an upgrade came after 2.0-2.6 s: `benchmarks/bench_replica_loss.py --event
#: upgrade`); GitHub waits 10 s for an answer.
HOLD_FOR: Final = 6.0
#: Seconds between two tries of a held batch.
RETRY_EVERY: Final = 0.25

#: Why a held batch is tried again: the shard not reached (Ray's errors for an actor
#: gone or restarting; the channel broken or refused). Not an error the shard raised
#: (`RemoteError` over the channel, `RayTaskError` over Ray: its journal could not
#: commit), which is answered 503 at once.
_UNREACHED: Final = (RayActorError, ConnectionError)

#: Holds logged, per replica: one line each 10 s (a shard's replacement).
_HOLDS_LOGGED = LogLimiter(burst=1, per=10.0)


def _now() -> float:
    """The running event loop's clock, the one `asyncio.timeout` and `asyncio.sleep`
    count in: holds are measured in it, so they end when their timeouts do."""
    return asyncio.get_running_loop().time()


def _unreached(exc: BaseException) -> bool:
    return isinstance(exc, _UNREACHED) and not isinstance(exc, RayTaskError)


class ShardBatcher:
    """Gather deliveries bound for one shard actor and send them in few calls.

    Group commit across the process boundary: at most `max_inflight` calls to the
    shard are outstanding; deliveries that arrive meanwhile wait and go together in
    the next call (at most `limit` per call). Under light load a delivery is sent at
    once; under heavy load batches grow, and so one call and one journal commit
    carry many deliveries.

    With `resolve` (which returns the handle of the actor named as the shard now), a
    batch the shard did not take because it is draining (`Status.DRAINING`) or was
    not reached is held and tried again every `retry_every` seconds, each time on the
    actor `resolve` returns, until `hold_for` seconds after its first delivery
    arrived: an upgrade replaces a shard by another of the same name, which takes what
    the old one refused, and Ray restarts one whose process died. What was journaled
    before a connection broke is then answered duplicate (200). Without `resolve`,
    or once the hold is over, the deliveries are answered `DRAINING` or fail
    (`ShardUnavailable`): 503. Held batches are tried in the order they were sent:
    only the oldest is tried, and a batch sent while any is held waits behind them
    (sent as a first try once those before it are through), so the successor journals
    them in the order this replica sent them (unless a batch released from waiting is
    refused while the one released after it is taken).
    """

    def __init__(
        self,
        actor: Any,
        *,
        limit: int,
        max_inflight: int = 2,
        direct: bool = False,
        resolve: Callable[[], Awaitable[Any]] | None = None,
        hold_for: float = HOLD_FOR,
        retry_every: float = RETRY_EVERY,
    ) -> None:
        #: The shard's actor, the one `resolve` last returned.
        self.actor = actor
        #: Batches go over the shard's channel (`actors.ray.channel`) when `direct`,
        #: else as Ray calls.
        self.channel = ShardChannel(actor, direct=direct)
        self.limit = limit
        self.max_inflight = max_inflight
        self.resolve = resolve
        self.hold_for = hold_for
        self.retry_every = retry_every
        #: Tries of held batches, and holds that ended in 503s, for tests; the
        #: deliveries held are counted in `ghbot_held_deliveries_total`.
        self.retries = 0
        self.expired = 0
        self._items: list[Inbound] = []
        self._futures: list[asyncio.Future[Status]] = []
        self._arrived: list[float] = []
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._resolving = asyncio.Lock()
        #: Batches numbered as they are sent; those held now, oldest first (only the
        #: first is tried), and an event set each time one leaves the hold.
        self._sent_count = 0
        self._holding: list[int] = []
        self._hold_moved = asyncio.Event()

    def submit(self, item: Inbound) -> asyncio.Future[Status]:
        """Queue `item`; the future gives the shard's status for it."""
        future: asyncio.Future[Status] = asyncio.get_running_loop().create_future()
        self._items.append(item)
        self._futures.append(future)
        self._arrived.append(_now())
        if self._inflight < self.max_inflight:
            self._flush()
        return future

    def _flush(self) -> None:
        items, futures = self._items[: self.limit], self._futures[: self.limit]
        held_until = self._arrived[0] + self.hold_for  # the batch's first arrival
        del self._items[: self.limit], self._futures[: self.limit], self._arrived[: self.limit]
        self._inflight += 1
        seq = self._sent_count
        self._sent_count += 1
        task = asyncio.get_running_loop().create_task(self._send(items, futures, held_until, seq))
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._inflight -= 1
        if self._items and self._inflight < self.max_inflight:
            self._flush()

    async def _send(
        self,
        items: list[Inbound],
        futures: list[asyncio.Future[Status]],
        held_until: float,
        seq: int,
    ) -> None:
        try:
            await self._deliver(items, futures, held_until, seq)
        except BaseException as exc:  # never leave a request without its answer
            self._fail(futures, exc, len(items))
            raise
        finally:
            if self._holding:
                self._unhold(seq)

    async def _deliver(
        self,
        items: list[Inbound],
        futures: list[asyncio.Future[Status]],
        held_until: float,
        seq: int,
    ) -> None:
        # Held: refused by the shard (or not reached) at least once. Waited: it waited
        # behind held batches first, so a 503 at the end of its hold counts as held.
        held = waited = False
        if self._holding and self.resolve is not None:
            # Batches sent before it are held: it waits behind them, not to reach the
            # successor before them, then goes as a first try.
            bisect.insort(self._holding, seq)
            waited = True
            if not await self._turn(seq, held_until):
                self._answer_draining(futures, True)  # held for all of its hold
                return
            self._unhold(seq)
        while True:
            started = time.perf_counter()
            # A try of a held batch ends with the hold; a first try is not bounded.
            try:
                async with asyncio.timeout_at(held_until if held else None):
                    statuses = await self.channel.ingest(encode_parts(items))
            except Exception as exc:
                if (held or _unreached(exc)) and await self._again(held_until, seq):
                    held = True
                    continue
                metrics.shard_call(False, time.perf_counter() - started)
                self._fail(futures, exc, len(items), held or waited)
                return
            metrics.shard_call(True, time.perf_counter() - started)
            again: list[tuple[Inbound, asyncio.Future[Status]]] = []
            for entry, status in zip(zip(items, futures, strict=True), statuses, strict=True):
                if status == Status.DRAINING:
                    again.append(entry)
                elif not entry[1].done():
                    entry[1].set_result(status)
            if held and len(again) < len(items):
                metrics.held("taken", len(items) - len(again))
            if not again:
                return
            items, futures = [i for i, _ in again], [f for _, f in again]
            if not await self._again(held_until, seq):
                self._answer_draining(futures, held or waited)
                return
            held = True

    async def _again(self, held_until: float, seq: int) -> bool:
        """Wait `retry_every`, find the shard anew, and wait for the batches held before
        this one (`seq`) to leave the hold; False once the hold is over."""
        if self.resolve is None or _now() + self.retry_every >= held_until:
            return False
        if seq not in self._holding:
            bisect.insort(self._holding, seq)
        self.retries += 1
        logged = _HOLDS_LOGGED.allow("hold")
        if logged is not None:
            log.warning(
                "holding deliveries: the shard is draining or not reached; trying again "
                "for up to %g s after a batch arrived%s",
                self.hold_for,
                f" ({logged} more tries were not logged)" if logged else "",
            )
        await asyncio.sleep(self.retry_every)
        try:
            async with asyncio.timeout_at(held_until):
                await self.find()
        except Exception as exc:  # none named yet (its successor is starting)
            log.debug("the shard is not found by name (%s)", type(exc).__name__)
        return await self._turn(seq, held_until)

    async def _turn(self, seq: int, held_until: float) -> bool:
        """Wait until batch `seq` is the oldest held; False if its hold ends first."""
        while self._holding[0] != seq:
            try:
                async with asyncio.timeout_at(held_until):
                    await self._hold_moved.wait()
            except TimeoutError:
                return False
        return True

    def _unhold(self, seq: int) -> None:
        """Batch `seq` left the hold (taken, answered or failed): wake the others."""
        if seq in self._holding:
            self._holding.remove(seq)
            self._hold_moved.set()
            self._hold_moved = asyncio.Event()

    async def find(self) -> Any:
        """Look the shard up by name (`resolve`) and send to what is found from now on;
        return it. Raises what `resolve` raises (none named now)."""
        assert self.resolve is not None
        async with self._resolving:
            actor = await self.resolve()
            if actor != self.actor:
                self.actor = actor
                self.channel.use(actor)
        return actor

    def _answer_draining(self, futures: list[asyncio.Future[Status]], held: bool) -> None:
        if held:
            self.expired += 1
            metrics.held("expired", len(futures))
        log.warning(
            "shard refused a batch of %d: draining%s",
            len(futures),
            f" for all of the {self.hold_for:g} s hold" if held else "",
            extra={"error_type": "draining"},
        )
        for future in futures:
            if not future.done():
                future.set_result(Status.DRAINING)

    def _fail(
        self,
        futures: list[asyncio.Future[Status]],
        exc: BaseException,
        count: int,
        held: bool = False,
    ) -> None:
        if all(future.done() for future in futures):
            return
        if held:
            self.expired += 1
            metrics.held("expired", sum(not future.done() for future in futures))
        # What the shard raised, or what broke on the way.
        error_type = str(exc) if isinstance(exc, RemoteError) else type(exc).__name__
        log.warning(
            "shard refused a batch of %d: %s%s",
            count,
            error_type,
            f" after a {self.hold_for:g} s hold" if held else "",
            extra={"error_type": error_type},
        )
        for future in futures:
            if not future.done():
                future.set_exception(ShardUnavailable(error_type))
