"""`ShardCore.check_journal`, what each shard answers `/readyz` with: not ready while
the journal's appends fail (a disk full, though reads answer), ready again after one
succeeds, or once the failure is older than `recent` (docs/reliability.md; the disk-full
fault test, which needs a tmpfs, shows it on a real full disk)."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors.bot import InstallationActor, on
from actors.shard import ShardCore
from ghbot.errors import JournalUnavailable
from ghbot.events import Event
from ghbot.journal import FaultyJournal, Journal
from tests.metering import metered
from tests.runtime.conftest import VSHARDS, batch, inbound, payload


class Quiet(InstallationActor):
    @on("issues.opened")
    async def note(self, event: Event) -> None:
        return None


def opened(guid: str) -> bytes:
    return batch(inbound(Quiet, "issues", payload("issues.opened"), delivery_id=guid))


async def test_not_ready_while_appends_fail_and_ready_after_one_succeeds(
    journal: Journal,
) -> None:
    faulty = FaultyJournal(journal)
    shard = ShardCore(range(VSHARDS), VSHARDS, faulty, Quiet)
    await shard.start()
    try:
        assert await shard.check_journal() is None
        m = metered()
        faulty.fail_appends(1)
        with pytest.raises(JournalUnavailable):
            await shard.ingest(opened("d1"))
        assert m.count("ghbot_journal_append_duration_seconds", outcome="error") == 1
        why = await shard.check_journal()
        assert why is not None and why.startswith("the journal's last appends failed: ")
        assert await shard.check_journal(recent=0.0) is None  # the failure is old now
        assert await shard.ingest(opened("d2")) == ["accepted"]
        assert await shard.check_journal() is None  # an append succeeded since
        faulty.fail_reads(1)
        assert await shard.check_journal() == "the journal did not answer: JournalUnavailable"
    finally:
        await shard.close()


class Hanging(FaultyJournal):
    """Reads of the last seq that never answer once `hang` is set (a journal whose
    server takes the connection and says nothing)."""

    hang = False

    async def last_seq(self, stream: str, *, shard: int | None = None) -> int:
        if self.hang:
            await asyncio.Event().wait()
        return await super().last_seq(stream, shard=shard)


async def test_not_ready_when_the_journal_does_not_answer_a_read_within_2_s(
    journal: Journal,
) -> None:
    hanging = Hanging(journal)
    shard = ShardCore(range(VSHARDS), VSHARDS, hanging, Quiet)
    await shard.start()
    try:
        hanging.hang = True
        started = time.monotonic()
        assert await shard.check_journal() == "the journal did not answer: TimeoutError"
        assert time.monotonic() - started > 1.9  # its default wait of 2 s, not at once
    finally:
        hanging.hang = False
        await shard.close()
