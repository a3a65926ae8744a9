"""A PostgreSQL `COMMIT` whose connection is lost while the server still commits.

The journal reaches a private server through a TCP relay of the test's. The server
waits at every commit for a synchronous standby that does not exist
(`synchronous_standby_names`), so a `COMMIT` is still running there when the relay
cuts the journal's connections: the append fails (`JournalUnavailable`: the ingress
answers 503). 0.3 s later the standby setting is dropped, the waiting commit goes
through, and the delivery is journaled all the same. The shard reads the
installation again once the append has raised (`ShardCore._reload_later`): that read
must see what landed, or the delivery, a duplicate when GitHub sends it again, waits
unrun until its installation is next read.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import pytest

from ghbot.errors import JournalUnavailable
from ghbot.journal import NewEvent
from ghbot.journal.postgres import PostgresJournal
from tests.faults.support import PrivatePostgres
from tests.net import free_port

pytestmark = pytest.mark.faults


class Relay:
    """A TCP relay on 127.0.0.1 to `port`, whose connections `cut` closes."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.port = free_port()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


async def test_a_commit_whose_connection_was_lost_is_seen_by_the_next_read(
    private_postgres: PrivatePostgres,
) -> None:
    relay = Relay(private_postgres.port)
    await relay.start()
    admin = await asyncpg.connect(private_postgres.url)
    url = private_postgres.url.replace(str(private_postgres.port), str(relay.port))
    journal = await PostgresJournal.connect(url)
    try:
        await admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'ghost'")
        await admin.execute("SELECT pg_reload_conf()")
        appending = asyncio.ensure_future(
            journal.append(
                "installation-1", [NewEvent("DeliveryReceived", b"{}")], delivery_guid="g-1"
            )
        )
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'COMMIT;'"
        )
        async with asyncio.timeout(10):
            while not await admin.fetchval(waiting):  # noqa: ASYNC110 - polls the server
                await asyncio.sleep(0.02)
        relay.cut()  # the journal's side is gone; the server's commit still waits

        async def standby_dropped() -> None:
            await asyncio.sleep(0.3)
            await admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
            await admin.execute("SELECT pg_reload_conf()")

        dropping = asyncio.ensure_future(standby_dropped())
        with pytest.raises(JournalUnavailable):
            await appending
        # As the shard does once the append has raised: read what the journal holds, as
        # soon as it answers (the pool's connections were cut too: each read that fails
        # drops one).
        records: list[Any] = []
        for _ in range(50):
            try:
                records = await journal.read("installation-1")
                break
            except (JournalUnavailable, asyncpg.InterfaceError):
                await asyncio.sleep(0.01)
        assert [r.type for r in records] == ["DeliveryReceived"]
        await dropping
    finally:
        await admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()
        await journal.close()
        await relay.close()
