"""The ingress's direct connection to a shard: batches over TCP, not Ray actor calls.

A Ray actor call into a shard crosses threads twice at each end: Ray's core worker
threads hand the call to the actor's event loop and take its result back, and each
hand-off waits for the GIL, which the shard's event loop holds while it runs handlers
(up to the interpreter's 5 ms switch interval a time). Over this channel a batch goes
from the ingress's event loop to the shard's and back with no other thread in between:
in `bench_e2e.py` the ingress's mean wait for a batch fell from 18 to 14 ms
(`benchmarks/RESULTS.md`).

Ray still places, restarts and fences the shards; the channel is only the data path.
The shard opens it on demand (`ChannelServer`): a TCP port on its node's address, and
a random token of this process's life that a client must send first. Its address and
token go to the ingress in a Ray call (`ShardActor.channel`), so the channel is as
private as Ray's own calls. A client (`ShardChannel`) keeps one connection per shard,
with several batches in flight on it. When the connection breaks the batches on it
fail (the ingress tries them again for a few seconds, `actors.ray.batcher.ShardBatcher`,
then answers 503 and GitHub sends them again: a delivery that was journaled all the
same is then a duplicate), and the next batch asks the shard, through Ray, where it is
now: a restarted shard has a new port and a new token, a replaced one is another actor
(`use`). Where the shard's port cannot be reached (a firewall between nodes that lets
only Ray's ports through) the client falls back to Ray calls; `GHBOT_SHARD_CHANNEL=ray`
makes that the only path.

Frames: a 4-byte big-endian length, then MessagePack. The client's first frame is the
token; then requests `[id, parts]` (the parts of `actors.wire.encode_parts`) and
answers `[id, statuses, error]`: the statuses, or the name of the error's type.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import msgspec

from actors.wire import Status
from ghbot.errors import GhBotError

__all__ = ["ChannelAddress", "ChannelClosed", "ChannelServer", "RemoteError", "ShardChannel"]

log = logging.getLogger("ghbot.channel")

_LENGTH: Final = struct.Struct(">I")
#: The largest frame either side reads; a length past it is taken for a broken peer.
#: Batches are not cut by size, so a batch past it (`batch_max` deliveries near
#: GitHub's 25 MB cap each: gigabytes) cannot go over the channel.
MAX_FRAME: Final = 1 << 31
TOKEN_BYTES: Final = 32
#: Seconds a client waits to connect before it falls back to Ray calls.
CONNECT_TIMEOUT: Final = 5.0
#: Seconds a client that could not connect uses Ray calls before it tries again.
FALLBACK_FOR: Final = 60.0
#: TCP keepalive: a peer gone without a word (its node lost) is noticed in about
#: IDLE + INTERVAL * COUNT seconds, as Ray notices a lost node.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 10, 5, 3

_encode = msgspec.msgpack.Encoder().encode
_decode_request = msgspec.msgpack.Decoder(tuple[int, list[bytes]]).decode
_decode_answer = msgspec.msgpack.Decoder(tuple[int, list[Status] | None, str | None]).decode


class ChannelAddress(msgspec.Struct, frozen=True):
    """Where a shard's channel listens, and the token it wants first."""

    host: str
    port: int
    token: bytes

    def __repr__(self) -> str:  # the token is a credential: never in a log
        return f"ChannelAddress(host={self.host!r}, port={self.port})"


class ChannelClosed(ConnectionError):
    """The connection to the shard closed with the batch on it unanswered."""


def _frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


async def _read_frame(reader: asyncio.StreamReader, limit: int = MAX_FRAME) -> bytes:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > limit:
        raise ConnectionError(f"a frame of {length} bytes is past the channel's limit")
    return await reader.readexactly(length)


def _keepalive(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; macOS keeps its defaults
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


#: What the channel calls for a batch: journal `parts`, call `answer` with the
#: statuses as soon as they are known (or leave it to the return value).
Ingest = Callable[[list[bytes], Callable[[list[Status]], None]], Awaitable[list[Status]]]


class ChannelServer:
    """A shard's end: takes batches from authenticated connections, answers each."""

    def __init__(self, ingest: Ingest, host: str) -> None:
        self._ingest = ingest
        self._server: asyncio.Server | None = None
        self._token = secrets.token_bytes(TOKEN_BYTES)
        self._port = 0
        self.host = host
        #: Connections refused for a wrong token, and batches taken: for tests and stats.
        self.refused = 0
        self.batches = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    async def start(cls, ingest: Ingest, host: str) -> ChannelServer:
        """Listen on `host` (a free port); `ingest(parts, answer)` journals each batch."""
        channel = cls(ingest, host)
        channel._server = await asyncio.start_server(channel._serve, host, 0)
        channel._port = channel._server.sockets[0].getsockname()[1]
        return channel

    @property
    def address(self) -> ChannelAddress:
        return ChannelAddress(self.host, self._port, self._token)

    def close(self) -> None:
        """Stop listening and drop the connections; batches under way run on."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            # Before the token, a peer gets no more than the token's length read.
            token = await asyncio.wait_for(_read_frame(reader, TOKEN_BYTES), CONNECT_TIMEOUT)
            if not hmac.compare_digest(token, self._token):
                self.refused += 1
                log.warning(
                    "refused a channel connection from %s: wrong token",
                    writer.get_extra_info("peername"),
                )
                return
            _keepalive(writer)
            while True:
                request_id, parts = _decode_request(await _read_frame(reader))
                self.batches += 1
                task = asyncio.get_running_loop().create_task(
                    self._answer(writer, request_id, parts)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            return  # the client went away (or never spoke): nothing is owed to it
        except msgspec.DecodeError:
            log.warning("closed a channel connection that sent a malformed frame")
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(
        self, writer: asyncio.StreamWriter, request_id: int, parts: list[bytes]
    ) -> None:
        answered = False

        def answer(statuses: list[Status] | None, error: str | None = None) -> None:
            nonlocal answered
            if answered or writer.is_closing():
                return
            answered = True
            writer.write(_frame(_encode((request_id, statuses, error))))

        try:
            answer(await self._ingest(parts, answer))
        except Exception as exc:  # the ingress answers 503 and names the type
            # The ingress sees only the name: the shard's log says it too, with where it
            # was raised when it is not one of ghbot's own errors (whose names say what).
            log.warning(
                "a batch failed in the shard: %s",
                type(exc).__name__,
                exc_info=not isinstance(exc, GhBotError),
                extra={"error_type": type(exc).__name__},
            )
            answer(None, type(exc).__name__)
        try:
            await writer.drain()
        except ConnectionError:
            return


class _Connection:
    """One client connection: batches in flight, matched to answers by id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: dict[int, asyncio.Future[list[Status]]] = {}
        self._next_id = 0
        self._lost = False
        #: No new batch is sent on it; closed once the batches in flight are answered.
        self._retired = False
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, address: ChannelAddress) -> _Connection:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        _keepalive(writer)
        writer.write(_frame(address.token))
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        """The connection broke, or its transport is closing: a batch sent on it now
        would never be answered. When the shard's end resets the connection, the loop
        closes the transport a turn before `_read` is woken to say so, and uvloop
        (Serve's loop) raises `RuntimeError` for a write to a closed transport, which
        the ingress would answer 503 at once as an error of the shard's: a closing
        connection is not written to, and the next batch connects again."""
        return self._lost or self._retired or self._writer.is_closing()

    async def call(self, parts: Sequence[bytes]) -> list[Status]:
        if self.closed:
            raise ChannelClosed("the connection to the shard is closed")
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[list[Status]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._writer.write(_frame(_encode((request_id, list(parts)))))
            await self._writer.drain()
            return await future
        finally:
            self._pending.pop(request_id, None)
            if self._retired and not self._pending:
                self._writer.close()

    def retire(self) -> None:
        """Send nothing more on it; close it once the batches in flight are answered."""
        self._retired = True
        if not self._pending:
            self._writer.close()

    def close(self) -> None:
        self._writer.close()

    async def _read(self) -> None:
        reason: BaseException = ChannelClosed("the shard closed the connection")
        try:
            while True:
                request_id, statuses, error = _decode_answer(await _read_frame(self._reader))
                future = self._pending.get(request_id)
                if future is None or future.done():
                    continue
                if error is not None or statuses is None:
                    future.set_exception(RemoteError(error or "no answer"))
                else:
                    future.set_result(statuses)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            reason = ChannelClosed(f"the connection to the shard broke ({type(exc).__name__})")
        except msgspec.DecodeError:
            reason = ChannelClosed("the shard sent a malformed frame")
        finally:
            self._lost = True
            self._writer.close()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(reason)


class RemoteError(Exception):
    """The shard's `ingest` raised; the message is the type of what it raised."""


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark an attempt's outcome seen: every batch that waited on it may be gone."""
    if not future.cancelled():
        future.exception()


class ShardChannel:
    """The ingress's end for one shard actor: `ingest(parts)` over the channel."""

    def __init__(self, actor: Any, *, direct: bool = True) -> None:
        self.actor = actor
        self.direct = direct
        self._connection: _Connection | None = None
        #: The one attempt to connect in progress, which every batch waits on.
        self._connecting: asyncio.Future[_Connection | None] | None = None
        self._ray_until = 0.0

    async def ingest(self, parts: Sequence[bytes]) -> list[Status]:
        """Journal a batch through the shard; raise when it did not answer."""
        connection = await self._connect() if self.direct else None
        if connection is None:
            statuses: list[Status] = await self.actor.ingest.remote(*parts)
            return statuses
        statuses = await connection.call(parts)
        if statuses and all(status == Status.REFUSED for status in statuses):
            # Fenced (cut off from Ray, the shard was restarted elsewhere and its
            # successor took its streams) or sent installations it does not hold: the
            # next batch asks Ray where the shard is now, not this process again.
            self._retire(connection)
        return statuses

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _retire(self, connection: _Connection) -> None:
        if self._connection is connection:
            self._connection = None
        connection.retire()

    def use(self, actor: Any) -> None:
        """Send to `actor` from now on (the shard's successor): a new connection."""
        self.actor = actor
        self.close()
        self._connecting = None  # an attempt for the old shard ends on its own
        self._ray_until = 0.0

    async def _connect(self) -> _Connection | None:
        if self._connection is not None and not self._connection.closed:
            return self._connection
        if time.monotonic() < self._ray_until:
            return None
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open(self.actor))
            self._connecting.add_done_callback(_retrieved)
        # Shielded: a batch whose hold ran out (its wait cancelled) leaves the attempt to
        # end, so that one unreachable port costs one CONNECT_TIMEOUT a minute, not one
        # per held batch.
        return await asyncio.shield(self._connecting)

    async def _open(self, actor: Any) -> _Connection | None:
        """Ask `actor` where its channel is and connect; None: use Ray calls for now."""
        # Where the shard is now (it may have restarted); raises as a Ray call to a
        # lost shard does.
        address: ChannelAddress | None = await actor.channel.remote()
        if actor is not self.actor:  # replaced meanwhile (`use`): ask the new one
            raise ChannelClosed("the shard was replaced while its address was asked")
        if address is None:  # the shard runs without a channel
            self._ray_until = time.monotonic() + FALLBACK_FOR
            return None
        try:
            connection = await asyncio.wait_for(_Connection.open(address), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            log.warning(
                "cannot reach the shard's channel at %s:%d (%s): using Ray calls for %g s",
                address.host,
                address.port,
                type(exc).__name__,
                FALLBACK_FOR,
            )
            self._ray_until = time.monotonic() + FALLBACK_FOR
            return None
        if actor is not self.actor:  # replaced while connecting: not to the old one
            connection.close()
            raise ChannelClosed("the shard was replaced while its channel was connected")
        self._connection = connection
        return connection
