"""The shard's channel (`actors.ray.channel`): real TCP on 127.0.0.1, the real batcher,
and a stand-in for the shard actor's Ray handle (no Ray)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from typing import Any, ClassVar

import pytest

from actors import InstallationActor, on
from actors.ray import channel
from actors.ray.batcher import ShardBatcher, ShardUnavailable
from actors.ray.channel import ChannelAddress, ChannelServer, _frame, _read_frame
from actors.shard import Answer, ShardCore
from actors.wire import Status, decode_batch, encode_parts
from ghbot.errors import JournalUnavailable
from ghbot.events import Event
from ghbot.journal import Journal
from tests.net import free_port
from tests.runtime.conftest import VSHARDS, inbound, item, payload


class Shard:
    """What the channel server calls: records each batch, answers, or raises."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.status = Status.ACCEPTED
        #: Deliveries refused whatever `status` says.
        self.refuse: set[str] = set()
        self.error: Exception | None = None
        self.hold: asyncio.Event | None = None
        self.arrived = asyncio.Event()

    async def ingest(self, parts: list[bytes], answer: Any) -> list[Status]:
        items = [i for part in parts for i in decode_batch(part)]
        self.batches.append([i.received.delivery_id for i in items])
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.error is not None:
            raise self.error
        ids = [i.received.delivery_id for i in items]
        return [Status.REFUSED if d in self.refuse else self.status for d in ids]


class _Method:
    def __init__(self, fn: Any) -> None:
        self.remote = fn


class Handle:
    """Stands in for the shard actor's Ray handle: `channel.remote()` says where the
    channel is (None: none), `ingest.remote(*parts)` is the Ray-call path."""

    def __init__(self, address: ChannelAddress | None) -> None:
        self.address = address
        self.ray_batches: list[int] = []
        self.asked = 0
        self.channel = _Method(self._channel)
        self.ingest = _Method(self._ingest)

    async def _channel(self) -> ChannelAddress | None:
        self.asked += 1
        return self.address

    async def _ingest(self, *parts: bytes) -> list[Status]:
        n = sum(len(decode_batch(part)) for part in parts)
        self.ray_batches.append(n)
        return [Status.DUPLICATE] * n


async def test_batches_go_over_the_channel_and_not_as_ray_calls() -> None:
    shard = Shard()
    server = await ChannelServer.start(shard.ingest, "127.0.0.1")
    handle = Handle(server.address)
    batcher = ShardBatcher(handle, limit=4, max_inflight=2, direct=True)
    try:
        futures = [batcher.submit(item(n, b"x" * 12_000)) for n in range(10)]
        assert await asyncio.gather(*futures) == [Status.ACCEPTED] * 10
        assert [d for batch in shard.batches for d in batch] == [f"d{n}" for n in range(10)]
        assert handle.ray_batches == [] and server.batches == len(shard.batches) >= 3
        assert handle.asked == 1  # one connection, kept
    finally:
        batcher.channel.close()
        server.close()


async def test_what_the_shard_raised_fails_its_batch_with_the_error_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shard = Shard()
    shard.error = JournalUnavailable("disk full")
    server = await ChannelServer.start(shard.ingest, "127.0.0.1")
    batcher = ShardBatcher(Handle(server.address), limit=8, direct=True)
    try:
        with caplog.at_level(logging.WARNING, logger="ghbot.channel"):
            with pytest.raises(ShardUnavailable, match=r"^JournalUnavailable$"):
                await batcher.submit(item(1))
            shard.error = RuntimeError("not ghbot's")
            with pytest.raises(ShardUnavailable, match=r"^RuntimeError$"):
                await batcher.submit(item(2))
        # The shard's log says what failed; where, when it is not one of ghbot's errors.
        said = [r for r in caplog.records if r.name == "ghbot.channel"]
        assert [r.getMessage() for r in said] == [
            "a batch failed in the shard: JournalUnavailable",
            "a batch failed in the shard: RuntimeError",
        ]
        assert [bool(r.exc_info) for r in said] == [False, True]
        shard.error = None  # the connection outlives a failed batch
        assert await batcher.submit(item(3)) == Status.ACCEPTED
    finally:
        batcher.channel.close()
        server.close()


async def test_a_shard_that_refuses_everything_is_asked_for_anew_where_it_is() -> None:
    """A shard fenced by its own successor (its node cut off from Ray, not from the
    ingress, and Ray restarted it elsewhere) refuses every delivery: the next batch
    asks Ray where the shard is now, rather than going on to the old process for as
    long as its connection lasts. A batch in flight on that connection meanwhile still
    gets its answer."""
    zombie, successor = Shard(), Shard()
    zombie.status = Status.REFUSED
    old = await ChannelServer.start(zombie.ingest, "127.0.0.1")
    new = await ChannelServer.start(successor.ingest, "127.0.0.1")
    handle = Handle(old.address)
    batcher = ShardBatcher(handle, limit=1, max_inflight=2, direct=True)
    try:
        zombie.hold = asyncio.Event()
        first, second = batcher.submit(item(1)), batcher.submit(item(2))
        async with asyncio.timeout(10):
            while len(zombie.batches) < 2:  # both in flight on the one connection
                zombie.arrived.clear()
                await zombie.arrived.wait()
        zombie.hold.set()
        assert list(await asyncio.gather(first, second)) == [Status.REFUSED] * 2
        handle.address = new.address  # where the restarted shard listens
        assert await batcher.submit(item(3)) == Status.ACCEPTED
        assert (successor.batches, handle.asked) == ([["d3"]], 2)
    finally:
        batcher.channel.close()
        old.close()
        new.close()


async def test_a_batch_the_shard_takes_in_part_keeps_the_connection() -> None:
    """Some of a batch refused (sent an installation the shard does not hold) and the
    rest taken: the shard is alive and owns its streams, the connection is kept."""
    shard = Shard()
    server = await ChannelServer.start(shard.ingest, "127.0.0.1")
    handle = Handle(server.address)
    batcher = ShardBatcher(handle, limit=4, direct=True)
    try:
        shard.refuse = {"d1"}
        statuses = await batcher.channel.ingest(encode_parts([item(1), item(2)]))
        assert statuses == [Status.REFUSED, Status.ACCEPTED]
        assert await batcher.channel.ingest(encode_parts([item(3)])) == [Status.ACCEPTED]
        assert handle.asked == 1 and len(shard.batches) == 2
    finally:
        batcher.channel.close()
        server.close()


@pytest.mark.timeout(60)
async def test_a_connection_without_the_token_is_refused_and_nothing_is_ingested(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = Shard()
    server = await ChannelServer.start(shard.ingest, "127.0.0.1")
    address = server.address
    try:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(_frame(b"not the token"))
        writer.write(_frame(b"\x92\x01\x91\xc4\x00"))  # [1, [b""]]: a request
        await writer.drain()
        assert await reader.read() == b""  # closed without an answer
        writer.close()
        assert shard.batches == [] and server.refused == 1
        assert "wrong token" in caplog.text
        # Nor is a long frame read before the token: the length alone ends it, not the
        # wait for the token (made endless here; a hang fails at the test's limit).
        monkeypatch.setattr(channel, "CONNECT_TIMEOUT", 3600.0)
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write((2**30).to_bytes(4, "big"))
        await writer.drain()
        assert await reader.read() == b""
        writer.close()
    finally:
        server.close()


async def test_a_lost_connection_fails_the_batches_on_it_and_the_next_asks_again() -> None:
    shard = Shard()
    shard.hold = asyncio.Event()
    first = await ChannelServer.start(shard.ingest, "127.0.0.1")
    handle = Handle(first.address)
    batcher = ShardBatcher(handle, limit=8, direct=True)
    try:
        pending = batcher.submit(item(1))
        await shard.arrived.wait()
        first.close()  # as the shard's process dying does
        with pytest.raises(ShardUnavailable, match="ChannelClosed"):
            await pending
        # A restarted shard listens elsewhere, with another token.
        shard.hold = None
        second = await ChannelServer.start(shard.ingest, "127.0.0.1")
        assert second.address.port != first.address.port
        assert second.address.token != first.address.token
        handle.address = second.address
        assert await batcher.submit(item(2)) == Status.ACCEPTED
        assert handle.asked == 2 and second.batches == 1
        second.close()
    finally:
        batcher.channel.close()


async def test_the_successor_found_by_name_gets_the_next_batch_on_a_connection_of_its_own() -> None:
    old_shard, new_shard = Shard(), Shard()
    old = await ChannelServer.start(old_shard.ingest, "127.0.0.1")
    new = await ChannelServer.start(new_shard.ingest, "127.0.0.1")
    successor = Handle(new.address)

    async def resolve() -> Handle:
        return successor

    batcher = ShardBatcher(Handle(old.address), limit=8, direct=True, resolve=resolve)
    try:
        assert await batcher.submit(item(1)) == Status.ACCEPTED
        assert await batcher.find() is successor  # as a held batch's next try does
        assert await batcher.submit(item(2)) == Status.ACCEPTED
        # Not on the old shard's connection, still open: the old one is draining.
        assert old_shard.batches == [["d1"]] and new_shard.batches == [["d2"]]
        assert successor.asked == 1 and successor.ray_batches == []
    finally:
        batcher.channel.close()
        old.close()
        new.close()


async def test_a_successor_with_a_channel_is_used_at_once_after_one_without() -> None:
    """The predecessor had none (Ray calls for a minute): its successor's is tried
    at once, not when that minute ends."""
    shard = Shard()
    server = await ChannelServer.start(shard.ingest, "127.0.0.1")
    successor = Handle(server.address)

    async def resolve() -> Handle:
        return successor

    batcher = ShardBatcher(Handle(None), limit=8, direct=True, resolve=resolve)
    try:
        assert await batcher.submit(item(1)) == Status.DUPLICATE  # over Ray
        await batcher.find()
        assert await batcher.submit(item(2)) == Status.ACCEPTED
        assert shard.batches == [["d2"]] and successor.ray_batches == []
    finally:
        batcher.channel.close()
        server.close()


async def test_an_address_asked_of_a_shard_replaced_meanwhile_is_not_used() -> None:
    old_shard, new_shard = Shard(), Shard()
    old = await ChannelServer.start(old_shard.ingest, "127.0.0.1")
    new = await ChannelServer.start(new_shard.ingest, "127.0.0.1")
    asked, answer = asyncio.Event(), asyncio.Event()

    class Slow(Handle):
        async def _channel(self) -> ChannelAddress | None:
            asked.set()
            await answer.wait()  # its answer comes after the successor is named
            return await super()._channel()

    batcher = ShardBatcher(Slow(old.address), limit=8, direct=True)
    try:
        first = batcher.submit(item(1))
        await asked.wait()
        batcher.channel.use(Handle(new.address))
        answer.set()
        with pytest.raises(ShardUnavailable, match="ChannelClosed"):
            await first  # (with `resolve`, the ingress holds it for the successor)
        assert await batcher.submit(item(2)) == Status.ACCEPTED
        assert old_shard.batches == [] and new_shard.batches == [["d2"]]
    finally:
        batcher.channel.close()
        old.close()
        new.close()


async def test_an_unreachable_channel_falls_back_to_ray_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = b"T" * 32
    handle = Handle(ChannelAddress("127.0.0.1", free_port(), token))
    batcher = ShardBatcher(handle, limit=8, direct=True)
    with caplog.at_level(logging.WARNING, logger="ghbot.channel"):
        assert await batcher.submit(item(1)) == Status.DUPLICATE
        assert await batcher.submit(item(2)) == Status.DUPLICATE
    assert handle.ray_batches == [1, 1] and handle.asked == 1  # not asked again at once
    assert "using Ray calls for 60 s" in caplog.text
    assert 59 < batcher.channel._ray_until - time.monotonic() <= 60  # for a minute
    batcher.channel._ray_until = time.monotonic() - 1  # as a minute later
    assert await batcher.submit(item(3)) == Status.DUPLICATE
    assert handle.asked == 2 and handle.ray_batches == [1, 1, 1]
    assert "TTTT" not in caplog.text and "TTTT" not in repr(handle.address)


async def test_a_connect_that_hangs_is_tried_once_though_its_batch_gave_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A port that drops packets: the connect waits its whole timeout. A batch whose
    hold runs out first is cancelled; the attempt goes on, ends, and sends the channel
    to Ray calls for a minute. It used to be cancelled with the batch, so the next held
    batch waited out another connect, and so on, each ending in a 503."""
    tries: list[ChannelAddress] = []

    async def hangs(address: ChannelAddress) -> Any:
        tries.append(address)
        await asyncio.sleep(3600)

    monkeypatch.setattr(channel._Connection, "open", staticmethod(hangs))
    monkeypatch.setattr(channel, "CONNECT_TIMEOUT", 0.2)
    handle = Handle(ChannelAddress("127.0.0.1", free_port(), b"T" * 32))
    to_shard = channel.ShardChannel(handle)
    parts = encode_parts([item(1)])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(to_shard.ingest(parts), 0.05)  # the hold ran out
    await asyncio.sleep(0.3)  # the attempt's own timeout passes
    assert await to_shard.ingest(parts) == [Status.DUPLICATE]  # Ray calls, at once
    assert len(tries) == 1 and handle.ray_batches == [1]
    assert 59 < to_shard._ray_until - time.monotonic() <= 60


async def test_a_shard_without_a_channel_is_sent_ray_calls() -> None:
    handle = Handle(None)
    batcher = ShardBatcher(handle, limit=8, direct=True)
    assert await batcher.submit(item(1)) == Status.DUPLICATE
    assert await batcher.submit(item(3)) == Status.DUPLICATE
    assert handle.ray_batches == [1, 1] and handle.asked == 1  # not asked on every batch
    handle.asked = 0
    ray_only = ShardBatcher(handle, limit=8)  # GHBOT_SHARD_CHANNEL=ray
    assert await ray_only.submit(item(2)) == Status.DUPLICATE
    assert handle.asked == 0


async def test_a_batch_answered_as_soon_as_it_is_journaled_is_answered_once() -> None:
    """The shard answers a batch early (`answer`) and then returns the same statuses:
    one answer goes back per batch, not two."""

    async def ingest(parts: list[bytes], answer: Answer) -> list[Status]:
        statuses = [Status.ACCEPTED] * sum(len(decode_batch(part)) for part in parts)
        answer(statuses)
        return statuses

    server = await ChannelServer.start(ingest, "127.0.0.1")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.address.port)
    try:
        writer.write(_frame(server.address.token))
        for request_id in (1, 2):
            request = (request_id, encode_parts([item(request_id)]))
            writer.write(_frame(channel._encode(request)))
            frame = await asyncio.wait_for(_read_frame(reader), 10)
            assert channel._decode_answer(frame) == (request_id, [Status.ACCEPTED], None)
    finally:
        writer.close()
        server.close()


async def test_both_ends_of_a_channel_connection_keep_it_alive() -> None:
    """TCP keepalive on both ends: a peer whose node was lost without a word is
    noticed in about 25 s (10 s idle, then three probes 5 s apart), as Ray notices a
    lost node; without it, an idle connection to a vanished peer is never noticed."""
    server = await ChannelServer.start(Shard().ingest, "127.0.0.1")
    batcher = ShardBatcher(Handle(server.address), limit=8, direct=True)
    try:
        assert await batcher.submit(item(1)) == Status.ACCEPTED
        client = batcher.channel._connection
        assert client is not None
        [served] = server._writers
        for writer in (client._writer, served):
            sock = writer.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
            if hasattr(socket, "TCP_KEEPIDLE"):  # Linux
                idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
                assert idle == channel.KEEPALIVE_IDLE
    finally:
        batcher.channel.close()
        server.close()


async def test_a_frame_is_read_whole_and_an_oversized_length_is_refused() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(_frame(b"abc") + (2**31 + 1).to_bytes(4, "big"))
    assert await _read_frame(reader) == b"abc"
    with pytest.raises(ConnectionError, match="past the channel's limit"):
        await _read_frame(reader)


class Recorder(InstallationActor):
    """Notes when its handler starts, so the test can tell it from the answer."""

    log: ClassVar[list[str]] = []

    @on("issues.opened")
    async def opened(self, event: Event[Any]) -> None:
        Recorder.log.append("handler")


async def test_the_shard_answers_once_journaled_before_its_handlers_run(
    journal: Journal,
) -> None:
    core = ShardCore(range(VSHARDS), VSHARDS, journal, Recorder)
    await core.start()
    Recorder.log.clear()

    async def ingest(parts: list[bytes], answer: Answer) -> list[Status]:
        return await core.ingest(*parts, answer=answer)

    server = await ChannelServer.start(ingest, "127.0.0.1")
    batcher = ShardBatcher(Handle(server.address), limit=8, direct=True)
    try:
        items = [inbound(Recorder, "issues", payload("issues.opened")) for _ in range(3)]
        futures = [batcher.submit(i) for i in items]
        for future in futures:
            future.add_done_callback(lambda _: Recorder.log.append("answered"))
        assert await asyncio.gather(*futures) == [Status.ACCEPTED] * 3
        await asyncio.wait_for(core.wait_idle(), 10)
        # Each answer reached the ingress before the handler its hand-over woke ran.
        assert Recorder.log.index("answered") < Recorder.log.index("handler")
        assert Recorder.log.count("handler") == 3
        # A duplicate is answered as such, and runs nothing again.
        again = await batcher.submit(items[0])
        assert again == Status.DUPLICATE and Recorder.log.count("handler") == 3
    finally:
        batcher.channel.close()
        server.close()
        await core.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_batch_sent_as_the_connection_is_torn_down_goes_on_a_new_one(loop: str) -> None:
    """A reset from the shard's end closes the ingress's transport a turn of the loop
    before the connection's reader is woken to say so; a batch sent in between went on
    the closed transport, where uvloop (Serve's loop) raised `RuntimeError` and the
    ingress answered 503 at once (a user-style `make test` saw it in an upgrade). The
    reset here is a real one, from the kernel: the shard's end closes its socket with
    a zero linger, as a process that exits with a batch unread does."""

    async def main() -> list[Status]:
        shard = Shard()
        server = await ChannelServer.start(shard.ingest, "127.0.0.1")
        handle = Handle(server.address)

        async def resolve() -> Handle:
            return handle

        batcher = ShardBatcher(handle, limit=8, direct=True, resolve=resolve)
        try:
            first = await batcher.submit(item(1))
            connection = batcher.channel._connection
            assert connection is not None
            (shard_end,) = server._writers
            shard_end.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            shard_end.transport.abort()  # an RST, not a FIN
            for _ in range(1000):  # turn by turn, until the reset reaches the ingress
                if connection._writer.transport.is_closing():
                    break
                await asyncio.sleep(0)
            else:
                pytest.fail("the reset did not reach the ingress's end in 1,000 turns")
            assert not connection._lost  # its reader not woken yet: the window
            second = await batcher.submit(item(2))  # sent before the reader knows
            assert batcher.channel._connection is not connection
            assert handle.asked == 2 and batcher.retries == 0  # no hold: a new connection
            return [first, second]
        finally:
            batcher.channel.close()
            server.close()

    factory = pytest.importorskip("uvloop").new_event_loop if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(asyncio.wait_for(main(), 10)) == [Status.ACCEPTED] * 2
