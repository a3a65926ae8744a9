"""The SQLite journal's files: one append across several of them."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from ghbot.errors import JournalUnavailable
from ghbot.journal import AppendRequest, NewEvent
from ghbot.journal.sqlite import SqliteJournal


async def test_an_append_failing_in_one_file_answers_once_the_others_have_settled(
    tmp_path: Path,
) -> None:
    """One file fails at once while another's commit is still on its way: the error
    is raised after that commit, so a caller reading its installations again (as the
    shard does after a failed ingest) finds what the append wrote."""
    journal = SqliteJournal(tmp_path, shard_count=2)
    slow = journal._file(1)
    commit = slow.submit_appends

    def failing(requests: Any, shard: int, future: asyncio.Future[Any]) -> None:
        future.set_exception(JournalUnavailable("disk full"))

    def late(requests: Any, shard: int, future: asyncio.Future[Any]) -> None:
        threading.Timer(0.3, commit, (requests, shard, future)).start()

    journal._file(0).submit_appends = failing  # type: ignore[method-assign]
    slow.submit_appends = late  # type: ignore[method-assign]
    event = (NewEvent("DeliveryReceived", b"x"),)
    try:
        with pytest.raises(JournalUnavailable, match="disk full"):
            await journal.append_many(
                [
                    AppendRequest("a", event, delivery_guid="g1", shard=0),
                    AppendRequest("b", event, delivery_guid="g2", shard=1),
                ]
            )
        assert [e.type for e in await journal.read("b", shard=1)] == ["DeliveryReceived"]
    finally:
        await journal.close()
