"""The durable Serve ceiling split in two processes: ghbot's layout without ghbot.

ghbot's ingress replica verifies a delivery and hands it to a shard, another process,
which journals it before the ingress answers and then runs its handler. This is that
layout with nothing of ghbot in it:

- `SplitIngress`, a Serve deployment on the same ingress as the Serve ceiling
  (`serve_floor.py`), verifies the signature and sends the delivery to the journal
  process over one TCP connection, then answers what that process answers;
- the journal process (`python benchmarks/split_floor.py`, a plain asyncio process, not
  a Ray actor) commits each delivery to SQLite as the durable floor does
  (`floor_bot.Journal`: WAL, `synchronous=FULL`, group commit), answers, and then
  comments through the API (`floor_bot.Bot.comment`).

It keeps no order, retries nothing and passes no token between processes; the
deliveries a replica's event loop sends in one turn go in one write, and every
delivery may be in flight at once. What it reaches is what ghbot's layout (Serve's
HTTP ingress in front, the journal and handlers in a process of their own) does on the
machine it runs on with nothing of ghbot in it, built this one way (a better-built
split bot may do somewhat better): `bench_e2e.py` runs it as the split Serve ceiling.

Frames: a 4-byte big-endian length, then MessagePack: `[id, guid, event, body]` to
the journal process, `[id, status]` back (202 when the delivery is on disk, whether new
or a redelivery; 503 when its commit failed).

    PYTHONPATH=. python benchmarks/split_floor.py --port P --api URL --app-id ID --key PEM \
        --durable PATH
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Mapping
from typing import Any, Final, cast

import aiohttp
import msgspec

from benchmarks.floor_bot import Bot, Journal, bot_arguments, signed

_LENGTH: Final = struct.Struct(">I")
_encode = msgspec.msgpack.Encoder().encode
_decode_delivery = msgspec.msgpack.Decoder(tuple[int, str, str, bytes]).decode
_decode_answer = msgspec.msgpack.Decoder(tuple[int, int]).decode


class _Frames(asyncio.Protocol):
    """Length-prefixed frames both ways: written once a turn of the event loop."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not `isinstance(transport, asyncio.Transport)`: uvloop's (Serve's loop) is not.
        self.transport = cast(asyncio.Transport, transport)

    def write(self, message: Any) -> None:
        if not self.out:
            asyncio.get_running_loop().call_soon(self._flush)
        frame = _encode(message)
        self.out += (_LENGTH.pack(len(frame)), frame)

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        start = 0
        while len(self.buffer) - start >= 4:
            (size,) = _LENGTH.unpack_from(self.buffer, start)
            if len(self.buffer) - start - 4 < size:
                break
            self.frame(bytes(self.buffer[start + 4 : start + 4 + size]))
            start += 4 + size
        del self.buffer[:start]

    def frame(self, data: bytes) -> None:
        raise NotImplementedError


class JournalServer(_Frames):
    """The journal process's side of one connection: commit, answer, then handle."""

    def __init__(self, bot: Bot) -> None:
        super().__init__()
        assert bot.journal is not None
        self.bot = bot
        self.journal: Journal = bot.journal

    def frame(self, data: bytes) -> None:
        task = asyncio.ensure_future(self.handle(*_decode_delivery(data)))
        self.bot.tasks.add(task)
        task.add_done_callback(self.bot.tasks.discard)

    async def handle(self, ident: int, guid: str, event: str, body: bytes) -> None:
        try:
            new = await self.journal.append(guid, body)
        except Exception:
            self.write((ident, 503))
            return
        self.write((ident, 202))
        if new and event == "issues":
            data = json.loads(body)
            if data.get("action") == "opened":
                await self.bot.comment(data, guid)


class _Client(_Frames):
    """The ingress replica's side: a future per delivery sent, its status when answered."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: dict[int, asyncio.Future[int]] = {}
        self.sent = 0

    def send(self, guid: str, event: str, body: bytes) -> asyncio.Future[int]:
        self.sent += 1
        answered = asyncio.get_running_loop().create_future()
        self.waiting[self.sent] = answered
        self.write((self.sent, guid, event, body))
        return answered

    def frame(self, data: bytes) -> None:
        ident, status = _decode_answer(data)
        self.waiting.pop(ident).set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        for answered in self.waiting.values():
            answered.set_exception(ConnectionError("the journal process closed the connection"))
        self.waiting.clear()


class SplitIngress:
    """The Serve deployment: verify, send to the journal process, answer what it says."""

    def __init__(self, secret: str, port: int, host: str = "127.0.0.1") -> None:
        self.secret = secret.encode()
        self.address = (host, port)
        self.connecting: asyncio.Future[tuple[asyncio.Transport, _Client]] | None = None

    async def receive(self, body: bytes, headers: Mapping[str, str]) -> int:
        """Return the status to answer: 401 for a bad signature, else the journal's."""
        if not signed(self.secret, body, headers):
            return 401
        guid, event = headers.get("X-GitHub-Delivery", ""), headers.get("X-GitHub-Event", "")
        try:
            client = await self._connected()
            return await client.send(guid, event, body)
        except OSError:  # the journal process gone or not listening: GitHub sends it again
            return 503

    async def _connected(self) -> _Client:
        """The connection to the journal process: one, opened on first use and again
        after it closed (the deliveries arriving while it opens wait for it)."""
        connecting = self.connecting
        if connecting is None or (connecting.done() and self._broken(connecting)):
            connecting = self.connecting = asyncio.ensure_future(
                asyncio.get_running_loop().create_connection(_Client, *self.address)
            )
        return (await asyncio.shield(connecting))[1]

    @staticmethod
    def _broken(connected: asyncio.Future[tuple[asyncio.Transport, _Client]]) -> bool:
        if connected.cancelled() or connected.exception() is not None:
            return True
        return connected.result()[0].is_closing()

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import Response

        return Response(status_code=await self.receive(await request.body(), request.headers))


async def serve_journal(bot: Bot, port: int, host: str = "127.0.0.1") -> asyncio.Server:
    """Listen for ingress replicas; each connection's deliveries go to `bot`'s journal."""
    return await asyncio.get_running_loop().create_server(lambda: JournalServer(bot), host, port)


async def main() -> None:
    parser = bot_arguments()
    parser.add_argument("--durable", metavar="PATH", required=True)
    args = parser.parse_args()
    with open(args.key, "rb") as f:
        bot = Bot(args.api, args.app_id, f.read(), "", Journal(args.durable))
    bot.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    await serve_journal(bot, args.port)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
